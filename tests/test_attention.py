"""Packed sequences: each document must see only itself when masking is on (and see its
predecessors when it is off), for every attention implementation available here."""

import subprocess
import sys

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
        attn_implementation=attention.implementation(impl),
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


@pytest.mark.parametrize("impl", [i for i in IMPLS if i != attention.VARLEN])
def test_the_pitfalls_the_helper_avoids(impl):
    """With the default KV cache, or a 2D mask of ones, transformers ignores the position resets
    (per-document attention reads the documents from the position ids whatever is passed)."""
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
    assert attention.implementation() == attention.available()[0]
    assert attention.implementation("eager") == "eager"
    monkeypatch.setenv("LCX_ATTN", "sdpa")
    assert attention.implementation() == "sdpa"
    with pytest.raises(ValueError, match="flash_attention_3"):
        attention.implementation("flash_attention_3")
    if "flash_attention_2" not in attention.available():
        with pytest.raises(RuntimeError, match="not available"):
            attention.implementation("flash_attention_2")


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


@pytest.mark.slow  # a fresh process importing every lcx module (10-30 s)
def test_varlen_is_registered_when_asked_for_not_on_import():
    """Importing lcx (every module) leaves transformers' attention registry as it was; asking
    for the per-document implementation registers it, and a model then runs with it."""
    code = f"""
import importlib, pkgutil
import lcx
for m in pkgutil.iter_modules(lcx.__path__):
    importlib.import_module("lcx." + m.name)
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from lcx import attention
assert {attention.VARLEN!r} not in ALL_ATTENTION_FUNCTIONS, "registered on import"
assert attention.implementation({attention.VARLEN!r}) == {attention.VARLEN!r}
assert ALL_ATTENTION_FUNCTIONS[{attention.VARLEN!r}] is attention.varlen_attention
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_document_spans_follow_position_resets():
    pos = torch.tensor([0, 1, 2, 0, 1, 0, 0, 1, 2, 3])
    assert attention.document_spans(pos) == [(0, 3), (3, 5), (5, 6), (6, 10)]
    assert attention.document_spans(torch.arange(5) + 7) == [(0, 5)]


def test_varlen_attention_trains_like_masked_sdpa_and_refuses_decoding():
    """Per-document attention gives the same loss and gradients as SDPA with transformers' block
    mask on a packed batch (two rows, different document boundaries), and cannot decode."""
    lengths = [[9, 4, 13], [20, 6]]
    ids = torch.randint(0, 101, (2, 26))
    pos = torch.stack([attention.position_ids(n) for n in lengths])
    grads = {}
    for impl in ("sdpa", attention.VARLEN):
        m = model(impl).train()
        loss = m(**attention.packed_inputs(ids, pos), labels=ids).loss
        loss.backward()
        grads[impl] = (loss.detach(), {k: p.grad.clone() for k, p in m.named_parameters()})
    torch.testing.assert_close(grads["sdpa"][0], grads[attention.VARLEN][0])
    for k, g in grads["sdpa"][1].items():
        torch.testing.assert_close(grads[attention.VARLEN][1][k], g, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="KV cache"), torch.no_grad():
        model(attention.VARLEN).generate(ids[:1, :5], max_new_tokens=2, do_sample=False)
