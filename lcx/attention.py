"""Which attention kernel to use, and how packed documents stay apart.

The kernel is picked once: FlashAttention-2 when ``flash_attn`` imports and a GPU is present
(Together's and ProLong's choice), else PyTorch SDPA, else eager. ``LCX_ATTN`` or the ``override``
argument forces one, so tests can run every available path on the same input (as nanochat's
``flash_attention.py`` does).

Document masking (ProLong §A.3, Table 20): several documents packed into one sequence attend only
within themselves when their ``position_ids`` restart at 0 at each document. transformers 5 derives
a block-causal mask from those resets (for FlashAttention, varlen boundaries, but only for a batch
of one row), and only when the forward runs with ``use_cache=False`` and *no* 2D attention mask:
with the default cache, or a mask of ones, documents silently attend across boundaries.
:func:`packed_inputs` builds inputs that avoid these pitfalls (for FlashAttention it passes the
boundaries itself).
"""

from __future__ import annotations

import importlib.util
import os

import torch

VARLEN = "lcx_varlen"
IMPLEMENTATIONS = ("flash_attention_2", "sdpa", "eager", VARLEN)


def available() -> list[str]:
    """The implementations usable here, fastest first (per-document :data:`VARLEN` last: it is
    for packed training rows, not decoding)."""
    found = []
    if importlib.util.find_spec("flash_attn") is not None and torch.cuda.is_available():
        found.append("flash_attention_2")
    return [*found, "sdpa", "eager", VARLEN]


def implementation(override: str | None = None) -> str:
    """``override`` or ``$LCX_ATTN`` if set (and usable), else the fastest available. Asking for
    :data:`VARLEN` registers it with transformers, so a model built with the name returned can run
    it (importing ``lcx`` leaves transformers' global registry as it was)."""
    choice = override or os.environ.get("LCX_ATTN")
    if choice is None:
        return available()[0]
    if choice not in IMPLEMENTATIONS:
        raise ValueError(f"attention implementation {choice!r} is not one of {IMPLEMENTATIONS}")
    if choice not in available():
        raise RuntimeError(
            f"attention implementation {choice!r} is not available here (have {available()})"
        )
    if choice == VARLEN:
        _register_varlen()
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


def packed_inputs(
    input_ids: torch.Tensor,
    pos_ids: torch.Tensor,
    seq_lengths: bool = False,
    boundaries: bool = False,
) -> dict:
    """Forward kwargs for a packed batch: position ids, no attention mask, and no KV cache.

    ``seq_lengths``: also ``packed_seq_lengths``, the length of every document of every row in
    order (int32), which is how Unsloth's own forward learns where packed documents end (it builds
    its block-causal mask from them, not from position resets).

    ``boundaries``: also FlashAttention's varlen keywords (``cu_seq_lens_q/k``: where each
    document of every row starts in the flattened batch, int32; ``max_length_q/k``: the longest
    document). transformers reads position-id resets as packed documents for FlashAttention only
    when the batch has one row (``_is_packed_sequence``); with more rows, and without these, the
    documents of a row attend to each other. SDPA, eager and :data:`VARLEN` find the documents from
    the resets at any batch size."""
    out = {"input_ids": input_ids, "position_ids": pos_ids, "use_cache": False}
    spans = [[*document_spans(row)] for row in pos_ids] if seq_lengths or boundaries else []
    if seq_lengths:
        lengths = [e - s for row in spans for s, e in row]
        out["packed_seq_lengths"] = torch.tensor(
            lengths, dtype=torch.int32, device=input_ids.device
        )
    if boundaries:
        width = pos_ids.shape[-1]
        starts = [b * width + s for b, row in enumerate(spans) for s, _ in row]
        cu = torch.tensor([*starts, len(spans) * width], dtype=torch.int32, device=input_ids.device)
        longest = max(e - s for row in spans for s, e in row)
        out |= {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu}
        out |= {"max_length_q": longest, "max_length_k": longest}
    return out


# --- Variable-length (per-document) attention, ProLong §A.3 -----------------------------------------


def document_spans(position_ids: torch.Tensor) -> list[tuple[int, int]]:
    """``(start, end)`` of each document in one row of packed position ids: a document starts
    wherever the position does not continue from the previous token's (a reset to 0)."""
    pos = position_ids.tolist()
    starts = [0] + [i for i in range(1, len(pos)) if pos[i] != pos[i - 1] + 1]
    return list(zip(starts, [*starts[1:], len(pos)], strict=True))


def varlen_attention(
    module, query, key, value, attention_mask, scaling=None, dropout=0.0, position_ids=None, **kw
):
    """Causal attention computed per document of each packed row, as FlashAttention-2's varlen
    kernel does (ProLong trains this way): a document attends only within itself, and its cost is
    its own length squared instead of the row's. Documents come from ``position_ids`` resets
    (:func:`document_spans`); without position ids the row is one document. For training and
    scoring whole rows: a KV cache (queries shorter than keys) is refused."""
    if query.shape[2] != key.shape[2]:
        raise ValueError(
            "per-document attention needs whole rows (no KV cache); use sdpa to decode"
        )
    if attention_mask is not None and not bool(attention_mask.all()):
        raise ValueError("per-document attention takes packed rows without padding masks")
    gqa = key.shape[1] != query.shape[1]
    rows = []
    for b in range(query.shape[0]):
        spans = (
            document_spans(position_ids[b if position_ids.shape[0] > 1 else 0])
            if position_ids is not None
            else [(0, query.shape[2])]
        )
        rows.append(
            torch.cat(
                [
                    torch.nn.functional.scaled_dot_product_attention(
                        query[b : b + 1, :, s:e],
                        key[b : b + 1, :, s:e],
                        value[b : b + 1, :, s:e],
                        is_causal=True,
                        scale=scaling,
                        dropout_p=dropout,
                        enable_gqa=gqa,
                    )
                    for s, e in spans
                ],
                dim=2,
            )
        )
    return torch.cat(rows).transpose(1, 2).contiguous(), None


def _register_varlen() -> None:
    """Make :data:`VARLEN` a name transformers' models accept (``attn_implementation``): done by
    :func:`implementation` when it is asked for, not on import. Registering again is harmless."""
    # an implementation transformers does not know gets no mask built (create_causal_mask returns
    # None for it), so no dense block mask is materialized either
    from transformers import AttentionInterface

    AttentionInterface.register(VARLEN, varlen_attention)
