"""Packed sequences: each document must see only itself when masking is on (and see its
predecessors when it is off), for every attention implementation available here."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from lcx import attention

IMPLS = [i for i in attention.available()]


def model(impl):
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=101,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        intermediate_size=128,
        attn_implementation=impl,
    )
    return LlamaForCausalLM(cfg).eval()


@pytest.mark.parametrize("impl", IMPLS)
def test_packed_forward_equals_documents_run_alone(impl):
    m = model(impl)
    lengths = [9, 4, 13]
    docs = [torch.randint(0, 101, (1, n)) for n in lengths]
    packed = torch.cat(docs, 1)
    with torch.no_grad():
        alone = [m(d).logits for d in docs]
        out = m(**attention.packed_inputs(packed, attention.position_ids(lengths)[None])).logits
    start = 0
    for n, ref in zip(lengths, alone, strict=True):
        torch.testing.assert_close(out[:, start : start + n], ref, atol=2e-5, rtol=1e-4)
        start += n


@pytest.mark.parametrize("impl", IMPLS)
def test_without_masking_later_documents_see_earlier_ones(impl):
    m = model(impl)
    lengths = [9, 6]
    docs = [torch.randint(0, 101, (1, n)) for n in lengths]
    packed = torch.cat(docs, 1)
    with torch.no_grad():
        full = m(packed).logits  # an ordinary causal pass over the whole sequence
        out = m(
            **attention.packed_inputs(
                packed, attention.position_ids(lengths, document_masking=False)[None]
            )
        ).logits
        second_alone = m(docs[1]).logits
    torch.testing.assert_close(out, full, atol=2e-5, rtol=1e-4)
    assert (out[:, 9:] - second_alone).abs().max() > 1e-3


@pytest.mark.parametrize("impl", IMPLS)
def test_the_pitfalls_the_helper_avoids(impl):
    """With the default KV cache, or a 2D mask of ones, transformers ignores the position resets."""
    m = model(impl)
    lengths = [7, 5]
    docs = [torch.randint(0, 101, (1, n)) for n in lengths]
    packed, pos = torch.cat(docs, 1), attention.position_ids(lengths)[None]
    with torch.no_grad():
        ref = m(docs[1]).logits
        cached = m(packed, position_ids=pos, use_cache=True).logits[:, 7:]
        masked = m(
            packed, position_ids=pos, use_cache=False, attention_mask=torch.ones_like(packed)
        ).logits[:, 7:]
    assert (cached - ref).abs().max() > 1e-3 and (masked - ref).abs().max() > 1e-3


def test_pick(monkeypatch):
    assert attention.pick() == attention.available()[0]
    assert attention.pick("eager") == "eager"
    monkeypatch.setenv("LCX_ATTN", "sdpa")
    assert attention.pick() == "sdpa"
    with pytest.raises(ValueError, match="flash_attention_3"):
        attention.pick("flash_attention_3")
    if "flash_attention_2" not in attention.available():
        with pytest.raises(RuntimeError, match="not available"):
            attention.pick("flash_attention_2")


@pytest.mark.parametrize("impl", IMPLS)
def test_packed_batch_rows_with_different_boundaries(impl):
    """Training batches hold several packed rows, each with its own document boundaries."""
    m = model(impl)
    rows = [[5, 11], [9, 7]]
    docs = [[torch.randint(0, 101, (n,)) for n in lengths] for lengths in rows]
    x = torch.stack([torch.cat(d) for d in docs])
    pos = torch.stack([attention.position_ids(lengths) for lengths in rows])
    with torch.no_grad():
        out = m(**attention.packed_inputs(x, pos)).logits
        for b, row_docs in enumerate(docs):
            start = 0
            for d in row_docs:
                torch.testing.assert_close(
                    out[b, start : start + len(d)], m(d[None]).logits[0], atol=2e-5, rtol=1e-4
                )
                start += len(d)
