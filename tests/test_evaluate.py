import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from code_edits import edit_source
from transformers import LlamaConfig, LlamaForCausalLM

from lcx import evaluate, models, tasks


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
        self.config = SimpleNamespace(vocab_size=vocab)  # as a causal LM's (the logits' width)

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


@pytest.mark.parametrize("xpos", [None, {"scale_base": 16.0, "center": 64}], ids=["rope", "xpos"])
def test_greedy_left_padded_batches_match_one_by_one(tiny, xpos):
    """Batched greedy decoding (left padding, KV cache) gives each prompt the continuation it gets
    alone, and the same as a plain argmax loop without cache. With xPos too: the book decodes
    Llama 2 Long's xPos-ABF models this way, and xPos must scale keys before the cache stores them
    (transformers 5.24 renamed the cache argument, and the cached path silently lost the cache)."""
    tok, t = tiny
    model = models.new_model(models.tiny_config("tiny", len(tok), 128, 248.0), seed=0)
    if xpos is not None:
        model = models.with_rope(model, "default", base=2000.0, xpos=xpos)
        assert type(model.model.layers[0].self_attn) is models.XPosLlamaAttention
    model.eval()
    prompts = [t["test"][0]["input_ids"][:n] for n in (5, 17, 40)]
    batched = evaluate.greedy(model, prompts, 6, tok.pad_token_id, batch_size=3)
    for p, out in zip(prompts, batched, strict=True):
        assert out == evaluate.greedy(model, [p], 6, tok.pad_token_id)[0]
        x = torch.tensor([p])
        for _ in range(6):
            nxt = model(input_ids=x, use_cache=False).logits[0, -1].argmax()
            x = torch.cat([x, nxt.view(1, 1)], 1)
        assert out == x[0, len(p) :].tolist()


def test_score_uses_each_tasks_metrics(tiny):
    tok, t = tiny
    pool = tasks.Pool.from_tokens(tok, t["train"])
    ex = tasks.generate("passkey", tok, 200, 0.5, 0)
    assert evaluate.score(ex, ex.answer) == {"per_digit": 1.0, "exact": 1.0, "string_match": 1.0}
    assert evaluate.score(ex, ex.answer[:2])["per_digit"] == 0.4
    ex = tasks.generate("rerank", tok, 1024, None, 0, "test", pool)
    assert evaluate.score(ex, ex.answer)["ndcg@10"] == pytest.approx(1.0)
    assert evaluate.score(ex, "[999]")["ndcg@10"] == 0.0
    ex = tasks.generate("doc_qa", tok, 300, 0.5, 0, "test", pool)
    assert evaluate.score(ex, f"It is {ex.answer}.") == {"f1": pytest.approx(2 / 4), "subem": 1.0}
    # every task's headline metric is among its scores, and the reference answer earns full marks
    for name, spec in tasks.TASKS.items():
        ex = tasks.generate(name, tok, 1024, 0.5, 0, "test", pool)
        assert evaluate.score(ex, ex.answer)[spec.metric] == pytest.approx(1.0), name


def test_evaluate_suite_table_and_category_means(tiny):
    tok, t = tiny
    pool = tasks.Pool.from_tokens(tok, t["train"])
    model = models.new_model(models.tiny_config("tiny", len(tok), 128, 248.0), seed=0)
    seen = []
    suite = evaluate.evaluate_suite(
        model,
        tok,
        ["passkey", "topic", "icl"],
        [256, 384],
        4,
        pool=pool,
        depths=(0.0, 1.0),
        examples_out=seen,
    )
    head = suite[suite.headline]
    # passkey has a depth axis (2 depths x 2 lengths), the others one cell per length
    assert sorted(head.groupby("task").size().items()) == [("icl", 2), ("passkey", 4), ("topic", 2)]
    # 4 examples per task x length: 2 per depth for passkey
    assert (head.n == head.task.map({"passkey": 2, "topic": 4, "icl": 4})).all()
    assert ((head.low <= head.score) & (head.score <= head.high)).all()
    assert len(seen) == 2 * 4 + 4 * 2 + 4 * 2 and all(
        abs(e.length - e.meta["length"]) == 0 for e, _ in seen
    )
    means = evaluate.category_means(suite)
    assert list(means.columns) == [256, 384] and set(means.index) == {"recall", "icl"}
    recall = head[head.category == "recall"].groupby(["task", "length"]).score.mean()
    assert means.loc["recall", 384] == pytest.approx(recall.xs(384, level="length").mean())
    tf = suite[suite.metric == "answer_acc"]
    assert not tf.headline.any() and len(tf) == len(head)  # one per cell, never the headline
    tf_means = evaluate.category_means(suite, "answer_acc")
    assert tf_means.loc["icl", 256] == pytest.approx(
        tf[(tf.task == "icl") & (tf.length == 256)].score.item()
    )
    with pytest.raises(ValueError, match="no 'rouge' rows"):
        evaluate.category_means(suite, "rouge")
    with pytest.raises(ValueError, match="unknown tasks"):
        evaluate.evaluate_suite(model, tok, ["nope"], [128], 1)


def test_suite_steps_generate_cells_and_aggregate_hand_scores(tiny):
    """suite_cells: one cell per task x length (x depth), the same seeds at every depth, a refused
    length kept as a skipped cell; suite_table: hand-made scores against published intervals."""
    tok, t = tiny
    pool = tasks.Pool.from_tokens(tok, t["test"])
    cells = evaluate.suite_cells(tok, ["passkey", "icl"], [16, 256], 20, 3, pool, (0.0, 1.0))
    assert [(c.task, c.length, c.depth) for c in cells] == [
        ("passkey", 16, 0.0),
        ("passkey", 16, 1.0),
        ("passkey", 256, 0.0),
        ("passkey", 256, 1.0),
        ("icl", 16, None),
        ("icl", 256, None),
    ]
    assert all("too short" in c.skipped and not c.examples for c in cells if c.length == 16)
    top, bottom, icl = cells[2], cells[3], cells[5]
    assert len(top.examples) == len(bottom.examples) == 10 and len(icl.examples) == 20
    # one key per seed, the same at both depths, placed first or last
    assert [e.answer for e in top.examples] == [e.answer for e in bottom.examples]
    assert len({e.answer for e in top.examples}) == 10
    assert top.examples[0].prompt_ids != bottom.examples[0].prompt_ids
    # Student (1908)'s sleep data, the paired differences / 10: R's t.test gives 0.7001142 to
    # 2.4598858 for the differences; 0 of 20 correct: Newcombe (1998) Table I, 0 to 0.1611
    sleep = [1.2, 2.4, 1.3, 1.3, 0.0, 1.0, 1.8, 0.8, 4.6, 1.4]
    scores = [[], [], [{"per_digit": d / 10, "exact": 0.0} for d in sleep]]
    scores += [[{"per_digit": 1.0, "exact": 1.0}] * 10, [], [{"exact": 0.0}] * 20]
    table = evaluate.suite_table(cells, scores).set_index(["task", "length", "depth", "metric"])
    row = table.loc[("passkey", 256, 0.0, "per_digit")]
    assert (row.score, row.n, row.tokens, row.headline) == (pytest.approx(0.158), 10, 256, True)
    assert (row.low, row.high) == pytest.approx((0.07001142, 0.24598858), abs=5e-9)
    row = table.loc[("icl", 256, None, "exact")]
    assert (row.score, row.low, row.n) == (0.0, 0.0, 20)
    assert row.high == pytest.approx(0.1611, abs=5e-5)
    assert table.loc[("passkey", 256, 1.0, "exact")][["score", "high"]].tolist() == [1.0, 1.0]
    skipped = table[table.n == 0]
    assert len(skipped) == 3 and skipped.skipped.str.contains("too short").all()
    assert not skipped.headline.any() and skipped.score.isna().all()


def test_answer_accuracy_is_the_share_of_answer_tokens_the_model_predicts(tiny):
    """The model's own greedy continuation scores 1; tokens it never predicts score 0; a mix scores
    the share, checked against argmax over a plain forward of the whole sequence."""
    tok, _ = tiny
    model = models.new_model(models.tiny_config("tiny", len(tok), 128, 248.0), seed=0).eval()
    prompt = tok("The pass key is hidden in the text.")["input_ids"]
    own = evaluate.greedy(model, [prompt], 6, tok.pad_token_id)[0]
    assert evaluate.answer_accuracy(model, prompt, own) == 1.0
    wrong = [(t + 1) % len(tok) for t in own]  # never the argmax at its position
    assert evaluate.answer_accuracy(model, prompt, wrong) == 0.0
    mixed = [*own[:3], *wrong[3:]]
    with torch.no_grad():
        top = model(input_ids=torch.tensor([prompt + mixed])).logits[0].argmax(-1)
    expected = np.mean([top[len(prompt) - 1 + i].item() == mixed[i] for i in range(6)])
    assert evaluate.answer_accuracy(model, prompt, mixed) == pytest.approx(expected)
    with pytest.raises(ValueError, match="no answer"):
        evaluate.answer_accuracy(model, prompt, [])


def test_short_perplexity_matches_a_plain_forward(tiny):
    tok, t = tiny
    model = models.new_model(models.tiny_config("tiny", len(tok), 128, 248.0), seed=0).eval()
    got = evaluate.short_perplexity(model, t["test"], tok.bos_token_id, 64)
    docs = [
        ids
        for ids, d in zip(t["test"]["input_ids"], t["test"]["domain"], strict=True)
        if d == "short"
    ]
    docs = [[tok.bos_token_id, *ids[:63]] for ids in docs if len(ids) >= 8]
    nll = []
    with torch.no_grad():
        for doc in docs:
            logits = model(input_ids=torch.tensor([doc])).logits[0, :-1]
            nll += torch.nn.functional.cross_entropy(
                logits, torch.tensor(doc[1:]), reduction="none"
            ).tolist()
    assert got["docs"] == len(docs) and got["tokens"] == len(nll)
    assert got["nll"] == pytest.approx(float(np.mean(nll)), rel=1e-5)


def test_memo_caches_tables_by_config_and_inputs(tmp_path, monkeypatch):
    monkeypatch.setenv("LCX_CACHE", str(tmp_path))
    calls = []

    def compute():
        calls.append(1)
        return pd.DataFrame({"length": [128, 256], "score": [0.5, 1 / 3]})

    a = evaluate.memo("t", {"n": 1}, ["model-a"], compute)
    b = evaluate.memo("t", {"n": 1}, ["model-a"], compute)
    evaluate.memo("t", {"n": 2}, ["model-a"], compute)
    evaluate.memo("t", {"n": 1}, ["model-b"], compute)
    assert len(calls) == 3 and a.equals(b) and b.score[1] == 1 / 3
    edit_source(monkeypatch, "tasks", "", "CHANGED = 1\n")  # a changed task generator
    evaluate.memo("t", {"n": 1}, ["model-a"], compute)
    assert len(calls) == 4


SUBEM = 'return {"subem": metrics.substring_exact_match(prediction, answers)}'


def test_an_evaluations_key_follows_the_code_that_computes_it(tmp_path, monkeypatch):
    """A cached evaluation is recomputed after a change to the code that computes it (the
    scoring, a task generator or a metric for the probe suite; the model code for both), and
    reused after a docstring or comment edit or a change elsewhere (the trainer, the plots)."""
    monkeypatch.setenv("LCX_CACHE", str(tmp_path))
    calls = []

    def compute(name):
        def table():
            calls.append(name)
            return pd.DataFrame({"score": [0.5]})

        return table

    def evaluations():
        calls.clear()
        evaluate.memo("suite", {}, ["model"], compute("suite"))  # the default: the probe code
        evaluate.memo("ppl", {}, ["model"], compute("ppl"), evaluate.MODEL_CODE)
        return sorted(calls)

    assert evaluations() == ["ppl", "suite"] and evaluations() == []
    cases = [
        (
            "evaluate",
            SUBEM,
            SUBEM.replace("(prediction,", "(prediction.lower(),"),
            ["ppl", "suite"],
        ),
        ("models", "", "CHANGED = 1\n", ["ppl", "suite"]),
        ("tasks", "", "CHANGED = 1\n", ["suite"]),
        ("metrics", "", "CHANGED = 1\n", ["suite"]),
        ("evaluate", '"""Evaluation by', '"""Evaluations by', []),
        ("evaluate", "# --- the probe suite", "# more words\n# --- the probe suite", []),
        ("train", "", "CHANGED = 1\n", []),
        ("plots", "", "CHANGED = 1\n", []),
    ]
    for module, old, new, recomputed in cases:
        with pytest.MonkeyPatch.context() as mp:
            edit_source(mp, module, old, new)
            assert evaluations() == recomputed, (module, new)


def test_scored_perplexity_scores_the_same_tokens_at_every_length(tiny):
    """scored=S: every length predicts the same final S tokens (same bytes); only the context
    before them differs. Checked by hand at one length."""
    tok, t = tiny
    model = models.new_model(models.tiny_config("tiny", len(tok), 128, 248.0), seed=0).eval()
    table = evaluate.perplexity_by_length(model, tok, t["test"], [64, 128, 256], 3, scored=32)
    assert (table.scored == 32).all() and (table.windows == 3).all()
    # by hand at length 128: the last 127 tokens of each 256-window, after BOS; the last 32 scored
    full = evaluate.windows(t["test"], 256, 3, tok.bos_token_id)
    w = torch.cat([full[:, :1], full[:, -127:]], 1)
    with torch.no_grad():
        logits = model(input_ids=w).logits[:, :-1]
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), w[:, 1:], reduction="none")
    assert table.nll[1] == pytest.approx(nll[:, -32:].mean(1).mean().item(), rel=1e-5)
    with pytest.raises(ValueError, match="scored"):
        evaluate.perplexity_by_length(model, tok, t["test"], [64, 128], 3, scored=64)


def test_windows_offset_skips_document_openings(tiny):
    tok, t = tiny
    plain = evaluate.windows(t["test"], 64, 50, tok.bos_token_id)
    shifted = evaluate.windows(t["test"], 64, 50, tok.bos_token_id, offset=100)
    docs = [
        ids
        for ids, d in zip(t["test"]["input_ids"], t["test"]["domain"], strict=True)
        if d != "short"
    ]
    firsts = {tuple(ids[:63]) for ids in docs if len(ids) >= 63}
    assert any(tuple(w[1:].tolist()) in firsts for w in plain)  # openings are used without offset
    assert not any(tuple(w[1:].tolist()) in firsts for w in shifted)
    assert all(
        any(tuple(w[1:].tolist()) == tuple(ids[100:163]) for ids in docs) for w in shifted[:1]
    )


# --- evaluations that cache themselves -------------------------------------------------------------


@pytest.fixture
def saved_run(tiny, tmp_path):
    """A run folder as lcx.train leaves it (the model under model/), of a random tiny model; its
    name is unique, as a run's hash is (evaluations are cached by it for the whole module)."""
    tok, _ = tiny
    net = models.new_model(models.tiny_config("tiny", len(tok), 128, 248.0), seed=3)
    run = tmp_path / f"run-{tmp_path.name}"
    net.save_pretrained(run / "model")
    return net.eval(), run


def test_ref_loads_the_run_and_applies_its_rope_change(saved_run):
    net, run = saved_run
    x = torch.randint(0, 200, (1, 40))
    plain, pi = evaluate.Ref.of(run), evaluate.Ref.of(run, method="linear", factor=8)
    assert plain.key == run.name  # a run folder's name already hashes its config and inputs
    assert pi.key != plain.key and pi.key == evaluate.Ref.of(run, factor=8, method="linear").key
    assert evaluate.Ref.of(run, method="linear", factor=4).key != pi.key
    with torch.no_grad():
        torch.testing.assert_close(plain.load().eval()(x).logits, net(x).logits)
        reference = models.with_rope(net, "linear", factor=8).eval()(x).logits
        torch.testing.assert_close(pi.load().eval()(x).logits, reference)
        assert (reference - net(x).logits).abs().max() > 1e-3  # PI does change the model


def test_cached_suite_and_perplexity_match_direct_calls_and_load_once(tiny, saved_run, monkeypatch):
    tok, tokens = tiny
    net, run = saved_run
    ref = evaluate.Ref.of(run)
    loads = []
    real_load = evaluate.Ref.load
    monkeypatch.setattr(evaluate.Ref, "load", lambda self: loads.append(1) or real_load(self))
    args = (["passkey", "icl"], [96], 2)
    first = evaluate.suite(ref, tok, tokens, *args, depths=(0.5,), max_prompt=64)
    again = evaluate.suite(ref, tok, tokens, *args, depths=(0.5,), max_prompt=64)
    pool = tasks.Pool.from_tokens(tok, tokens["test"])
    direct = evaluate.evaluate_suite(net, tok, *args, 0, pool, (0.5,), max_prompt=64)
    pd.testing.assert_frame_equal(first, direct)
    pd.testing.assert_frame_equal(again, direct)
    assert len(loads) == 1  # the second call was served from the cache
    other = evaluate.suite(ref, tok, tokens, *args, depths=(0.5,))  # another argument, another key
    assert len(loads) == 2 and set(other.task) == {"passkey", "icl"}

    ppl = evaluate.perplexity(ref, tok, tokens, [32, 64], 3, scored=16)
    direct = evaluate.perplexity_by_length(net, tok, tokens["test"], [32, 64], 3, scored=16)
    pd.testing.assert_frame_equal(ppl, direct)
    assert evaluate.perplexity(ref, tok, tokens, [32, 64], 3, scored=16).equals(ppl)
    assert len(loads) == 3


def test_headline_means_average_the_headline_metric_only():
    suite = pd.DataFrame(
        {
            "length": [64, 64, 64, 128],
            "metric": ["exact", "answer_acc", "exact", "exact"],
            "headline": [True, False, True, True],
            "score": [0.2, 0.9, 0.4, 1.0],
        }
    )
    means = evaluate.headline_means(suite, "length")
    assert means.to_dict() == pytest.approx({64: 0.3, 128: 1.0})


def test_cached_nll_and_short_ppl_match_direct_calls(tiny, saved_run):
    tok, tokens = tiny
    net, run = saved_run
    ref = evaluate.Ref.of(run)
    nll = evaluate.nll(ref, tok, tokens, 64, 3, offset=16, batch_size=2)
    w = evaluate.windows(tokens["test"], 64, 3, tok.bos_token_id, offset=16)
    np.testing.assert_array_equal(nll, evaluate.token_nll(net, w, batch_size=2).numpy())
    assert evaluate.short_ppl(ref, tok, tokens, 64) == pytest.approx(
        evaluate.short_perplexity(net, tokens["test"], tok.bos_token_id, 64)["ppl"], rel=1e-6
    )


def test_loss_by_position_is_the_same_for_any_memory_layout():
    """A cached table comes back column-major; bucket means must not depend on it (bit for bit)."""
    torch.manual_seed(0)
    nll = torch.rand(5, 300) * 6
    fortran = np.asfortranarray(nll.numpy())
    pd.testing.assert_frame_equal(
        evaluate.loss_by_position(fortran, 64), evaluate.loss_by_position(nll, 64), check_exact=True
    )
    curve = evaluate.loss_by_position(nll, 64)
    assert curve.nll.iloc[0] == pytest.approx(float(nll[:, :64].mean()), rel=1e-6)
    # buckets (64, 128] and (128, 192] lie in (64, 192]
    mid = evaluate.mean_loss_between(curve, 64, 192)
    assert mid == pytest.approx((curve.nll.iloc[1] + curve.nll.iloc[2]) / 2)


def test_averages_say_which_suite_cells_were_skipped():
    import pandas as pd

    suite = pd.DataFrame(
        [
            {
                "task": "passkey",
                "category": "recall",
                "length": 64,
                "depth": 0.5,
                "metric": "exact",
                "headline": True,
                "score": 1.0,
                "skipped": None,
            },
            {
                "task": "json_kv",
                "category": "recall",
                "length": 64,
                "depth": 0.5,
                "metric": None,
                "headline": False,
                "score": float("nan"),
                "skipped": "length 64 is too short for json_kv",
            },
        ]
    )
    for average in (
        lambda: evaluate.category_means(suite),
        lambda: evaluate.headline_means(suite, "length"),
        lambda: evaluate.headline_mean(suite, 0, 100),
    ):
        with pytest.warns(evaluate.SkippedCellsWarning, match="json_kv at 64.*too short"):
            average()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        evaluate.headline_mean(suite, 100, 200)  # no skipped cell in that range: no warning


def test_a_hub_models_key_names_the_commit_it_loads_at(monkeypatch, tmp_path):
    from lcx import hub

    repo = "meta-llama/Llama-2-7b-hf"
    pinned = evaluate.Ref.of(repo).key
    pinned_pi = evaluate.Ref.of(repo, method="linear", factor=8).key
    assert pinned == f"{repo}@{hub.REVISIONS[repo]}"
    monkeypatch.setitem(hub.REVISIONS, repo, "0" * 40)  # a new pin: new keys, RoPE change or not
    assert evaluate.Ref.of(repo).key != pinned
    assert evaluate.Ref.of(repo, method="linear", factor=8).key != pinned_pi
    run = tmp_path / "run" / "l2long-ABF-cpu-0123"
    assert evaluate.Ref.of(run).key == "l2long-ABF-cpu-0123"  # a run is keyed by its folder


def test_per_window_nll_is_a_plain_forward_of_each_window_and_aggregates_to_the_table(tiny):
    """window_nll_by_length: each window's mean NLL and nats per byte from a plain forward of that
    window; perplexity_table: ppl = exp(mean of window means), per byte = exp(sum NLL / bytes)."""
    tok, t = tiny
    model = models.new_model(models.tiny_config("tiny", len(tok), 128, 248.0), seed=0).eval()
    rows = evaluate.window_nll_by_length(model, tok, t["test"], [64, 128], 3)
    assert list(rows.length) == [64] * 3 + [128] * 3 and list(rows.window) == [0, 1, 2] * 2
    w = evaluate.windows(t["test"], 128, 3, tok.bos_token_id, None, 127)
    with torch.no_grad():
        logits = model(input_ids=w).logits[:, :-1]
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), w[:, 1:], reduction="none")
    at = rows[rows.length == 128].reset_index()
    for i in range(3):
        assert at.nll[i] == pytest.approx(nll[i].mean().item(), rel=1e-5)
        n_bytes = len(tok.decode(w[i, 1:].tolist()).encode())
        assert at.bytes[i] == n_bytes
        assert at.nats_per_byte[i] == pytest.approx(nll[i].sum().item() / n_bytes, rel=1e-5)
    table = evaluate.perplexity_table(rows).set_index("length")
    assert table.loc[128, "ppl"] == pytest.approx(math.exp(nll.mean(1).mean().item()), rel=1e-5)
    total_bytes = sum(len(tok.decode(s.tolist()).encode()) for s in w[:, 1:])
    assert table.loc[128, "ppl_per_byte"] == pytest.approx(
        math.exp(nll.sum().item() / total_bytes), rel=1e-5
    )
    assert table.loc[128, "nll_se"] == pytest.approx(nll.mean(1).std().item() / math.sqrt(3))


def test_short_nll_rows_score_each_document_as_if_alone(tiny):
    """Each held-out short document's NLL equals a plain forward of that document alone, though
    the documents were packed together."""
    tok, t = tiny
    model = models.new_model(models.tiny_config("tiny", len(tok), 128, 248.0), seed=0).eval()
    rows = evaluate.short_nll_rows(model, t["test"], tok.bos_token_id, 64)
    docs = [
        [tok.bos_token_id, *ids[:63]]
        for ids, d in zip(t["test"]["input_ids"], t["test"]["domain"], strict=True)
        if d == "short" and len(ids) >= 8
    ]
    assert len(rows) == len(docs) > 3 and list(rows.doc) == list(range(len(docs)))
    for i in (0, 1, len(docs) - 1):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([docs[i]])).logits[0, :-1]
        alone = torch.nn.functional.cross_entropy(logits, torch.tensor(docs[i][1:]))
        assert rows.nll[i] == pytest.approx(alone.item(), rel=1e-4)
        assert rows.tokens[i] == len(docs[i]) - 1


def test_passkey_rows_are_the_grid_example_by_example(tiny):
    """One row per example (right: every digit; wrong: none), and the grid is their mean."""
    tok, _ = tiny
    rows = evaluate.passkey_rows(Oracle(len(tok), 1), tok, [150, 300], [0.0, 0.5], n=3)
    assert len(rows) == 2 * 2 * 3 and list(rows.example[:3]) == [0, 1, 2]
    assert (rows.exact == 1).all() and (rows.per_digit == 1).all()
    wrong = evaluate.passkey_rows(Oracle(len(tok), 0), tok, [150], [0.5], n=3)
    assert (wrong.exact == 0).all() and (wrong.per_digit < 1).all()  # a repeated digit can hit
    both = pd.concat([rows.iloc[:3].assign(length=150, depth=0.5), wrong])  # one cell, 6 examples
    table = evaluate.passkey_table(both)
    assert table.exact.tolist() == [0.5] and table.n.tolist() == [6]
    digits = [1, 1, 1, *wrong.per_digit]
    assert table.per_digit.item() == pytest.approx(np.mean(digits))
    assert table.per_digit_se.item() == pytest.approx(np.std(digits, ddof=1) / 6**0.5)


def test_answer_accuracy_on_content_tokens_ignores_the_answer_format(tiny):
    """Re-rank's answer '[3] > [1]': only the ids are content; a model that predicts the ids and
    none of the brackets scores 1 on content tokens and less on every token."""
    tok, _ = tiny
    answer = tok(" [3] > [1] > [2]", add_special_tokens=False)["input_ids"]
    content = evaluate.content_positions(tok, answer)
    texts = [tok.decode([answer[i]]) for i in content]
    assert content and all(any(c.isdigit() for c in x) for x in texts)
    assert "".join(c for x in texts for c in x if c.isdigit()) == "312"
    assert evaluate.content_positions(tok, tok(" > [", add_special_tokens=False)["input_ids"])

    class Knows(torch.nn.Module):  # predicts the answer's content tokens, and "x" elsewhere
        def __init__(self, prompt):
            super().__init__()
            self.prompt = len(prompt)
            self.anchor = torch.nn.Parameter(torch.zeros(1))

        def forward(self, input_ids, logits_to_keep=0, use_cache=None):
            target = torch.full_like(input_ids, tok.convert_tokens_to_ids("x"))
            for i in content:
                target[0, self.prompt - 1 + i] = answer[i]
            logits = torch.nn.functional.one_hot(target, len(tok)).float()
            return type("Out", (), {"logits": logits[:, -logits_to_keep:]})()

    prompt = tok("Ranking:")["input_ids"]
    model = Knows(prompt)
    assert evaluate.answer_accuracy(model, prompt, answer, tok) == 1.0
    assert evaluate.answer_accuracy(model, prompt, answer) == pytest.approx(
        len(content) / len(answer)
    )


def _mean_score_over_guesses(example, guesses):
    """The reference for evaluate.chance: score every candidate answer with evaluate.score and
    average (a uniform guess among them)."""
    metric = tasks.TASKS[example.meta["task"]].metric
    return float(np.mean([evaluate.score(example, " " + g)[metric] for g in guesses]))


def test_chance_is_the_mean_score_of_a_uniform_guess_among_the_candidates(tiny):
    import itertools
    import json

    tok, t = tiny
    pool = tasks.Pool.from_tokens(tok, t["test"])
    # json_kv: every value of the object
    ex = tasks.generate("json_kv", tok, 512, 0.5, 3, "test", pool)
    text = tok.decode(ex.prompt_ids, skip_special_tokens=True)
    obj = json.loads(text.split("JSON data:\n")[1].split("\n\nWhat")[0])
    assert evaluate.chance(ex) == pytest.approx(_mean_score_over_guesses(ex, list(obj.values())))
    # icl: every label shown in the demonstrations
    ex = tasks.generate("icl", tok, 1024, None, 0, "test", tasks.Pool.from_tokens(tok, t["train"]))
    labels = {
        ln.split()[-1] for ln in tok.decode(ex.prompt_ids).splitlines() if ln.startswith("label: ")
    }
    assert evaluate.chance(ex) == pytest.approx(_mean_score_over_guesses(ex, sorted(labels)))
    # rerank: nDCG@10 averaged over every order of the documents (naive enumeration)
    for length in (512, 700):
        ex = tasks.generate("rerank", tok, length, None, 1, "test", pool)
        k = ex.meta["docs"]
        assert k <= 7  # enumerable
        orders = [" > ".join(f"[{i + 1}]" for i in p) for p in itertools.permutations(range(k))]
        assert evaluate.chance(ex) == pytest.approx(_mean_score_over_guesses(ex, orders))
    # passkey and needle: a random digit string matches 1 digit in 10 on average
    ex = tasks.generate("passkey", tok, 200, 0.5, 0, "test", pool)
    assert evaluate.chance(ex) == 0.1
    # free text has no candidate set
    assert evaluate.chance(tasks.generate("doc_qa", tok, 512, 0.5, 0, "test", pool)) == 0.0


class _Recorder(torch.nn.Module):
    """A model that records what it is shown and predicts from the current token alone, so far
    context cannot help it."""

    def __init__(self, vocab):
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, vocab)
        self.seen = []
        self.config = SimpleNamespace(vocab_size=vocab)  # as a causal LM's (the logits' width)

    def forward(self, input_ids, use_cache=False):
        self.seen.append(input_ids.clone())
        return SimpleNamespace(logits=self.emb(input_ids))


def test_far_context_replaces_only_text_before_the_kept_tokens_with_another_window(tiny):
    tok, t = tiny
    W, keep = 64, 8
    model = _Recorder(len(tok))
    rows = evaluate.far_context_rows(model, t["test"], W, 6, tok.bos_token_id, offset=16, keep=keep)
    true, replaced = (
        torch.cat(model.seen[: len(model.seen) // 2]),
        torch.cat(model.seen[len(model.seen) // 2 :]),
    )
    w = evaluate.windows(t["test"], W, 7, tok.bos_token_id, offset=16)
    cut = W // 2 - keep
    assert torch.equal(true, w[:6])
    assert torch.equal(replaced[:, cut:], w[:6, cut:]) and torch.equal(replaced[:, :1], w[:6, :1])
    assert torch.equal(replaced[:, 1:cut], w[1:7, 1:cut])  # the next window's span
    # a model that reads only the current token scores the kept half the same either way
    assert len(rows) == 6 and np.allclose(rows["true"], rows["replaced"])
    with pytest.raises(ValueError, match="no far context"):
        evaluate.far_context_rows(model, t["test"], 32, 6, tok.bos_token_id, keep=16)
