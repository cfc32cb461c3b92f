import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from lcx import data, evaluate, models


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LCX_CACHE", str(tmp_path_factory.mktemp("cache")))
        c = data.load_corpus("tiny")
        tok = models.load_tokenizer("tiny", c)
        yield tok, data.tokenize(c, tok)


def small_model(vocab):
    torch.manual_seed(0)
    return LlamaForCausalLM(
        LlamaConfig(
            vocab_size=vocab,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            head_dim=16,
            intermediate_size=64,
        )
    ).eval()


def test_token_nll_matches_transformers_loss(tiny):
    tok, tokens = tiny
    w = evaluate.windows(tokens["test"], 64, 5, tok.bos_token_id)
    m = small_model(len(tok))
    nll = evaluate.token_nll(m, w, batch_size=2)
    assert nll.shape == (len(w), 63)
    for i in range(len(w)):
        ref = m(input_ids=w[i : i + 1], labels=w[i : i + 1]).loss
        assert nll[i].mean().item() == pytest.approx(ref.item(), rel=1e-5)


def test_windows_are_disjoint_chunks_of_held_out_documents(tiny):
    tok, tokens = tiny
    w = evaluate.windows(tokens["test"], 100, 1000, tok.bos_token_id)
    assert (w[:, 0] == tok.bos_token_id).all()
    docs = [
        ids
        for ids, d in zip(tokens["test"]["input_ids"], tokens["test"]["domain"], strict=True)
        if d != "short"
    ]
    expected = sum(len(ids) // 99 for ids in docs if len(ids) >= 99)
    assert len(w) == expected
    # Shorter windows from the same (long) documents as the longest length:
    same = evaluate.windows(tokens["test"], 64, 1000, tok.bos_token_id, min_doc_tokens=500)
    assert len(same) == sum(len(ids) // 63 for ids in docs if len(ids) >= 500)
    with pytest.raises(ValueError, match="no held-out document"):
        evaluate.windows(tokens["test"], 10**7, 1, tok.bos_token_id)


def test_power_law_fit_recovers_parameters():
    rng = np.random.default_rng(0)
    c = np.geomspace(16, 4096, 40)
    y = evaluate.power_law(c, 30.0, 0.6, 3.0) + rng.normal(0, 0.002, c.size)
    fit = evaluate.fit_power_law(c, y)
    assert fit["beta"] == pytest.approx(0.6, abs=0.05) and fit["gamma"] == pytest.approx(
        3.0, abs=0.05
    )
    assert fit["beta_ci"][0] < 0.6 < fit["beta_ci"][1] and fit["r2"] > 0.99


class Oracle(torch.nn.Module):
    """Logits that put the next input token first (shift=1: always right) or the current one (wrong)."""

    def __init__(self, vocab, shift):
        super().__init__()
        self.vocab, self.shift = vocab, shift

    def forward(self, input_ids, use_cache=False):
        nxt = torch.roll(input_ids, -self.shift, dims=1)
        return type("Out", (), {"logits": torch.nn.functional.one_hot(nxt, self.vocab).float()})()


def test_passkey_grid_scores_answers(tiny):
    tok, _ = tiny
    right = evaluate.passkey_grid(
        Oracle(len(tok), 1), tok, [150, 300], [0.0, 0.5], n=3, batch_size=2
    )
    wrong = evaluate.passkey_grid(Oracle(len(tok), 0), tok, [150], [0.5], n=3)
    assert (
        (right["exact"] == 1).all()
        and (right["per_digit"] == 1).all()
        and (right["near_copy"] == 1).all()
    )
    assert (wrong["exact"] == 0).all()
    assert list(right["length"]) == [150, 150, 300, 300]
