"""Which attention kernel to use, and how packed documents stay apart.

The kernel is picked once: FlashAttention-2 when ``flash_attn`` imports and a GPU is present
(Together's and ProLong's choice), else PyTorch SDPA, else eager. ``LCX_ATTN`` or the ``override``
argument forces one, so tests can run every available path on the same input (as nanochat's
``flash_attention.py`` does).

Document masking (ProLong §A.3, Table 20): several documents packed into one sequence attend only
within themselves when their ``position_ids`` restart at 0 at each document. transformers 5 derives
a block-causal mask (or FlashAttention's varlen boundaries) from those resets, but only when the
forward runs with ``use_cache=False`` and *no* 2D attention mask: with the default cache, or a mask
of ones, documents silently attend across boundaries. :func:`packed_inputs` builds inputs that
avoid both pitfalls.
"""

from __future__ import annotations

import importlib.util
import os

import torch

IMPLEMENTATIONS = ("flash_attention_2", "sdpa", "eager")


def available() -> list[str]:
    """The implementations usable here, fastest first."""
    found = []
    if importlib.util.find_spec("flash_attn") is not None and torch.cuda.is_available():
        found.append("flash_attention_2")
    return [*found, "sdpa", "eager"]


def pick(override: str | None = None) -> str:
    """``override`` or ``$LCX_ATTN`` if set (and usable), else the fastest available."""
    choice = override or os.environ.get("LCX_ATTN")
    if choice is None:
        return available()[0]
    if choice not in IMPLEMENTATIONS:
        raise ValueError(f"attention implementation {choice!r} is not one of {IMPLEMENTATIONS}")
    if choice not in available():
        raise RuntimeError(
            f"attention implementation {choice!r} is not available here (have {available()})"
        )
    return choice


def position_ids(doc_lengths: list[int], document_masking: bool = True) -> torch.Tensor:
    """Position ids for documents packed back to back: restarting per document (masking on), or
    one running count over the whole sequence (masking off: tokens see earlier documents)."""
    if not document_masking:
        return torch.arange(sum(doc_lengths))
    return (
        torch.cat([torch.arange(n) for n in doc_lengths])
        if doc_lengths
        else torch.zeros(0, dtype=torch.long)
    )


def packed_inputs(input_ids: torch.Tensor, pos_ids: torch.Tensor) -> dict:
    """Forward kwargs for a packed batch: position ids, no attention mask, and no KV cache."""
    return {"input_ids": input_ids, "position_ids": pos_ids, "use_cache": False}
