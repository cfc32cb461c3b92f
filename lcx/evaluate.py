"""Evaluation by context length: perplexity (per token and per byte), loss per position, the
power law of loss vs context (Llama 2 Long Fig. 1), a teacher-forced passkey grid, and the probe
suite (:mod:`lcx.tasks`, greedy decoding, :mod:`lcx.metrics`) with HELMET's category averages.

Everything runs batched under ``torch.no_grad`` with a progress bar, on windows cut from held-out
documents (split by document in :mod:`lcx.data`).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from . import cache, metrics, tasks


def windows(
    tokens, length: int, n: int, bos_id: int, domains=None, min_doc_tokens: int = 0, offset: int = 0
) -> torch.Tensor:
    """Up to ``n`` windows of ``length`` tokens (BOS + ``length - 1`` document tokens), cut as
    consecutive non-overlapping chunks of held-out documents long enough to fill one, taken
    round-robin over documents so long documents do not crowd out the rest.

    ``min_doc_tokens``: use only documents at least this long, so that windows of different lengths
    come from the same documents (otherwise longer windows come from a different, longer-document
    mix and a change with length confounds context with content). ``offset``: skip each document's
    first ``offset`` tokens (document openings, e.g. license headers, are unusually predictable and
    bias loss-vs-position curves that start there).
    """
    chunks_by_doc = []
    for ids, domain in zip(tokens["input_ids"], tokens["domain"], strict=True):
        if (
            (domains is None or domain in domains)
            and domain != "short"
            and len(ids) >= max(length - 1 + offset, min_doc_tokens)
        ):
            ids = ids[offset:]
            k = len(ids) // (length - 1)
            chunks_by_doc.append([ids[i * (length - 1) : (i + 1) * (length - 1)] for i in range(k)])
    out = []
    for i in range(max((len(c) for c in chunks_by_doc), default=0)):
        for chunks in chunks_by_doc:
            if i < len(chunks) and len(out) < n:
                out.append([bos_id, *chunks[i]])
    if not out:
        raise ValueError(f"no held-out document has {length - 1} tokens (domains={domains})")
    return torch.tensor(out)


# At most this many logits exist at once in an evaluation's forward pass (1 GiB in fp32): a batch
# of long windows over a large vocabulary (Llama 2 at 8 x 4,096 = 32K: 8 rows x 32K x 32,000 =
# 8.4e9 logits, 34 GB in fp32, twice that with the loss's copy) has its LM head applied a piece of
# positions at a time. The cpu profile's largest (8 rows x 4,096 x 4,096) is one piece.
LOGITS_AT_ONCE = 1 << 28
# The most KV-cache bytes one generate batch may hold (:func:`greedy`): 8 rows of 32K for Llama 2
# 7B would be 128 GiB, so long prompts go a few rows, or one, at a time. The cpu profile's models
# never reach it (8 rows of 4,096 tokens: ~0.3 GB).
KV_CACHE_AT_ONCE = 4 << 30


def kv_bytes_per_token(model) -> int:
    """The KV cache one token takes in ``model``: a key and a value per layer and KV head."""
    c = model.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    size = next(model.parameters()).element_size()
    return 2 * c.num_hidden_layers * c.num_key_value_heads * head_dim * size


def per_position(model, x: torch.Tensor, score) -> torch.Tensor:
    """``score(logits, span)`` of ``model``'s logits on ``x`` (rows x positions), one piece of
    positions ``span`` at a time so that at most :data:`LOGITS_AT_ONCE` logits exist at once,
    concatenated along positions. One piece: the model's own forward; more: its decoder's hidden
    states, then its LM head on each piece (the same logits, for a causal LM whose head is a
    linear map of the last hidden state, as Llama's is)."""
    n = x.shape[1]
    piece = max(1, LOGITS_AT_ONCE // (len(x) * model.config.vocab_size))
    if piece >= n:
        return score(model(input_ids=x, use_cache=False).logits, slice(0, n))
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft
    hidden = inner.base_model(input_ids=x, use_cache=False).last_hidden_state
    head = inner.get_output_embeddings()
    hidden = hidden.to(head.weight.device)  # a model split over GPUs: its last one
    return torch.cat(
        [
            score(head(hidden[:, s : s + piece]), slice(s, min(s + piece, n)))
            for s in range(0, n, piece)
        ],
        1,
    )


@torch.no_grad()
def token_nll(
    model, batch: torch.Tensor, batch_size: int = 8, desc: str | None = None
) -> torch.Tensor:
    """Per-position next-token NLL (nats), shape ``(n, length - 1)``; position i predicts token i+1
    (:func:`per_position`: long windows a piece of positions at a time)."""
    model.eval()
    out, where = [], _device(model)
    for i in tqdm(range(0, len(batch), batch_size), desc=desc, leave=False, disable=desc is None):
        x = batch[i : i + batch_size].to(where)
        last = x.shape[1] - 1  # the last position has no next token

        def nll(logits, span, x=x, last=last):
            stop = min(span.stop, last)
            logits = logits[:, : max(stop - span.start, 0)].float()
            # the logits' device: a model split over GPUs returns them from its last one
            target = x[:, span.start + 1 : stop + 1].to(logits.device)
            return torch.nn.functional.cross_entropy(
                logits.transpose(1, 2), target, reduction="none"
            )

        out.append(per_position(model, x, nll).cpu())
    return torch.cat(out)


def _device(model) -> torch.device:
    """Where ``model``'s weights are: its inputs go there (a model on a GPU takes CUDA tensors);
    the CPU for a model without parameters."""
    first = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
    return torch.device("cpu") if first is None else first.device


def window_nll_by_length(
    model,
    tokenizer,
    tokens,
    lengths,
    n_windows: int = 32,
    batch_size: int = 8,
    domains=None,
    scored: int | None = None,
) -> pd.DataFrame:
    """Held-out NLL of every window at each context length: one row per length and window with
    ``nll`` (mean nats per scored token), ``nll_sum``, ``tokens``, ``bytes`` (UTF-8 bytes of the
    scored tokens) and ``nats_per_byte``. The same window index is the same held-out document at
    every length and for every model, so two models (or two lengths, with ``scored``) pair by
    window. :func:`perplexity_by_length` aggregates it.

    Every length is cut from the same held-out documents: those long enough for the longest
    length. ``scored=None``: each window is a chunk of its own length and every token in it is
    scored (the papers' average over the sequence; longer windows then also cover more text).
    ``scored=S``: every length scores the *same* S tokens, the end of one longest-length window per
    document, with the preceding ``length - 1 - S`` tokens as context: only the amount of context
    differs.
    """
    rows, longest = [], max(lengths)
    if scored is not None and not 0 < scored < min(lengths):
        raise ValueError(f"scored={scored} must be in [1, {min(lengths) - 1}]")
    if scored is not None:
        full = windows(tokens, longest, n_windows, tokenizer.bos_token_id, domains)
    for length in lengths:
        if scored is None:
            w = windows(tokens, length, n_windows, tokenizer.bos_token_id, domains, longest - 1)
        else:  # the last length - 1 tokens of each longest window, after BOS
            w = torch.cat([full[:, :1], full[:, full.shape[1] - (length - 1) :]], 1)
        nll = token_nll(model, w, batch_size, desc=f"ppl @ {length}")
        targets = w[:, 1:]
        if scored is not None:
            nll, targets = nll[:, -scored:], targets[:, -scored:]
        for i, (seq_nll, seq) in enumerate(zip(nll, targets.tolist(), strict=True)):
            n_bytes = len(tokenizer.decode(seq).encode())
            total = seq_nll.double().sum().item()
            rows.append(
                {
                    "length": length,
                    "window": i,
                    "nll": seq_nll.mean().item(),
                    "nll_sum": total,
                    "tokens": len(seq),
                    "bytes": n_bytes,
                    "nats_per_byte": total / n_bytes,
                }
            )
    return pd.DataFrame(rows)


def perplexity_table(per_window: pd.DataFrame) -> pd.DataFrame:
    """Perplexity per token and per byte at each length from :func:`window_nll_by_length`'s rows
    (Together's table reports per byte): ``ppl = exp(mean of the windows' mean NLL)`` with its
    standard error ``nll_se``, and ``ppl_per_byte = exp(total NLL / total UTF-8 bytes)``."""
    rows = []
    for length, g in per_window.groupby("length", sort=False):
        mean = g["nll"].mean()
        rows.append(
            {
                "length": length,
                "windows": len(g),
                "scored": int(g["tokens"].iloc[0]),
                "nll": mean,
                "nll_se": g["nll"].std(ddof=1) / math.sqrt(len(g)) if len(g) > 1 else math.nan,
                "ppl": math.exp(mean),
                "ppl_per_byte": math.exp(g["nll_sum"].sum() / g["bytes"].sum()),
            }
        )
    return pd.DataFrame(rows)


def perplexity_by_length(model, tokenizer, tokens, lengths, n_windows: int = 32, **kwargs):
    """Perplexity per token and per byte at each context length (:func:`perplexity_table` of
    :func:`window_nll_by_length`; its keyword arguments: ``batch_size``, ``domains``,
    ``scored``)."""
    return perplexity_table(
        window_nll_by_length(model, tokenizer, tokens, lengths, n_windows, **kwargs)
    )


def loss_by_position(nll, bucket: int) -> pd.DataFrame:
    """Mean NLL (and its standard error over windows) per bucket of ``bucket`` positions, from a
    windows x positions tensor or array (:func:`token_nll`, :func:`nll`)."""
    # a copy: one memory layout, one summation order (and a cached array may be read-only)
    nll = (
        torch.tensor(nll) if isinstance(nll, np.ndarray) else torch.as_tensor(nll).clone()
    ).contiguous()
    n, length = nll.shape
    rows = []
    for start in range(0, length, bucket):
        per_window = nll[:, start : start + bucket].mean(1)
        rows.append(
            {
                "start": start + 1,
                "end": min(start + bucket, length),
                "nll": per_window.mean().item(),
                "se": (per_window.std() / math.sqrt(n)).item() if n > 1 else float("nan"),
            }
        )
    return pd.DataFrame(rows)


def power_law(c, alpha, beta, gamma):
    """Llama 2 Long Eq. (1): L(c) = (alpha / c) ** beta + gamma."""
    return (alpha / np.asarray(c, dtype=float)) ** beta + gamma


def fit_power_law(context, loss, sigma=None) -> dict:
    """Least-squares fit of :func:`power_law` with 95% intervals and R^2 (``scipy.optimize``)."""
    from scipy.optimize import curve_fit

    c, y = np.asarray(context, dtype=float), np.asarray(loss, dtype=float)
    p0 = (float(c.min()), 0.5, float(y.min()) - 0.1)
    params, cov = curve_fit(
        power_law,
        c,
        y,
        p0=p0,
        sigma=sigma,
        bounds=([1e-6, 1e-3, 0], [np.inf, 10, np.inf]),
        maxfev=20000,
    )
    resid = y - power_law(c, *params)
    r2 = 1 - (resid**2).sum() / ((y - y.mean()) ** 2).sum()
    se = np.sqrt(np.diag(cov))
    names = ("alpha", "beta", "gamma")
    out = {k: float(v) for k, v in zip(names, params, strict=True)}
    out.update(
        {
            f"{k}_ci": (float(v - 1.96 * s), float(v + 1.96 * s))
            for k, v, s in zip(names, params, se, strict=True)
        }
    )
    out["r2"] = float(r2)
    return out


@torch.no_grad()
def passkey_rows(
    model, tokenizer, lengths, depths, n: int = 20, batch_size: int = 8, seed: int = 0
) -> pd.DataFrame:
    """Passkey accuracy of every example (one row per length, depth and example index; the same
    index is the same key and filler for every model): exact match and per-digit accuracy,
    teacher-forced. :func:`passkey_grid` averages it per (length, depth).

    Each answer token is correct when it is the model's argmax given the prompt and the answer's
    earlier tokens; an example is an exact match when all are (which is what greedy decoding would
    produce). Chance per digit is 0.1. ``near_copy`` is a diagnostic from the same forward pass:
    per-digit accuracy on the key's second occurrence inside the needle ("... {key}. Remember it.
    {key} is ..."), a copy over a few tokens, against which the answer's long-range copy compares.
    """
    model.eval()
    rows = []
    for length in tqdm(lengths, desc="passkey", leave=False):
        for depth in depths:
            exs = [tasks.passkey(tokenizer, length, depth, seed=seed + i) for i in range(n)]
            correct, near = [], []
            for i in range(0, n, batch_size):
                chunk = exs[i : i + batch_size]
                seqs = [e.prompt_ids + e.answer_ids for e in chunk]
                width = max(map(len, seqs))
                x = torch.tensor([s + [tokenizer.pad_token_id] * (width - len(s)) for s in seqs])
                pred = per_position(model, x.to(_device(model)), lambda lg, _: lg.argmax(-1))
                for row, e in enumerate(chunk):
                    start = len(e.prompt_ids)
                    guess = pred[row, start - 1 : start - 1 + len(e.answer_ids)].tolist()
                    digits = [
                        j
                        for j, t in enumerate(e.answer_ids)
                        if tokenizer.decode([t]).strip().isdigit()
                    ]
                    correct.append([guess[j] == e.answer_ids[j] for j in digits])
                    key = [e.answer_ids[j] for j in digits]
                    hits = [
                        k for k in range(start - len(key)) if e.prompt_ids[k : k + len(key)] == key
                    ]
                    if len(hits) >= 2:  # the copy inside the needle
                        p = pred[row, hits[1] - 1 : hits[1] - 1 + len(key)].tolist()
                        near.append(np.mean([a == b for a, b in zip(p, key, strict=True)]))
                    else:
                        near.append(math.nan)
            for i, (c, copy) in enumerate(zip(correct, near, strict=True)):
                rows.append(
                    {
                        "length": length,
                        "depth": depth,
                        "example": i,
                        "exact": float(all(c)),
                        "per_digit": float(np.mean(c)),
                        "near_copy": float(copy),
                    }
                )
    return pd.DataFrame(rows)


def passkey_table(rows: pd.DataFrame) -> pd.DataFrame:
    """:func:`passkey_rows` averaged per (length, depth): ``n``, ``exact``, ``per_digit`` with its
    standard error ``per_digit_se``, ``near_copy`` (over the examples whose needle has the copy)."""
    out = []
    for (length, depth), g in rows.groupby(["length", "depth"], sort=False):
        out.append(
            {
                "length": length,
                "depth": depth,
                "n": len(g),
                "exact": g["exact"].mean(),
                "per_digit": g["per_digit"].mean(),
                "per_digit_se": g["per_digit"].std(ddof=1) / math.sqrt(len(g)),
                "near_copy": g["near_copy"].mean(),  # NaN-skipping; NaN when no needle had one
            }
        )
    return pd.DataFrame(out)


def passkey_grid(model, tokenizer, lengths, depths, n: int = 20, **kwargs) -> pd.DataFrame:
    """Passkey accuracy per (length, depth) (:func:`passkey_table` of :func:`passkey_rows`)."""
    return passkey_table(passkey_rows(model, tokenizer, lengths, depths, n, **kwargs))


# --- the probe suite ---------------------------------------------------------------------------------


@torch.no_grad()
def greedy(
    model, prompts: list[list[int]], max_new_tokens: int, pad_id: int, batch_size: int = 8
) -> list[list[int]]:
    """Greedy continuations of ``prompts`` (``generate`` with a KV cache), batched by length with
    left padding, up to ``batch_size`` rows and :data:`KV_CACHE_AT_ONCE` bytes of cache a batch;
    returns the new tokens of each prompt, in input order."""
    model.eval()
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[list[int]] = [[] for _ in prompts]
    per_token, i = kv_bytes_per_token(model), 0
    while i < len(order):
        n = 1  # the batch grows while its cache (its longest prompt's, every row) fits
        while n < batch_size and i + n < len(order):
            width = len(prompts[order[i + n]]) + max_new_tokens
            if (n + 1) * width * per_token > KV_CACHE_AT_ONCE:
                break
            n += 1
        idx, i = order[i : i + n], i + n
        width = max(len(prompts[j]) for j in idx)
        ids = torch.full((len(idx), width), pad_id)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, j in enumerate(idx):
            ids[row, width - len(prompts[j]) :] = torch.tensor(prompts[j])
            mask[row, width - len(prompts[j]) :] = 1
        gen = model.generate(
            input_ids=ids.to(_device(model)),
            attention_mask=mask.to(_device(model)),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            use_cache=True,
            pad_token_id=pad_id,
        )
        for row, j in enumerate(idx):
            out[j] = gen[row, width:].tolist()
    return out


def content_positions(tokenizer, answer_ids: list[int]) -> list[int]:
    """The positions of an answer's content tokens: those whose text has a letter or a digit.
    Format tokens (re-rank's ``" > ["`` and ``"]"``, quotes, punctuation) are fixed by the task's
    template, so predicting them says nothing about the context; an answer of format tokens only
    keeps every position."""
    keep = [i for i, t in enumerate(answer_ids) if any(c.isalnum() for c in tokenizer.decode([t]))]
    return keep or list(range(len(answer_ids)))


@torch.no_grad()  # (at 32K, a 7-8B model's graph would be ~190 GB)
def answer_accuracy(model, prompt_ids: list[int], answer_ids: list[int], tokenizer=None) -> float:
    """Teacher-forced accuracy of the gold answer: the share of its tokens that are the model's
    top prediction given the prompt and the answer's earlier tokens. A graded reading of the same
    example, for models whose generated answers are all wrong (a tiny model that gets 7 of 8
    digits scores 0 on exact match and 0.88 here). Logits only for the answer's positions. Given
    the ``tokenizer``, only the answer's content tokens count (:func:`content_positions`)."""
    if not answer_ids:
        raise ValueError("the example has no answer tokens")
    model.eval()
    device = next(model.parameters()).device
    ids = torch.tensor([[*prompt_ids, *answer_ids]], device=device)
    logits = model(input_ids=ids, logits_to_keep=len(answer_ids) + 1, use_cache=False).logits
    logits = logits[0, :-1]
    hits = logits.argmax(-1).cpu() == torch.tensor(answer_ids)
    if tokenizer is not None:
        hits = hits[content_positions(tokenizer, answer_ids)]
    return hits.float().mean().item()


def score(example: tasks.Example, prediction: str) -> dict[str, float]:
    """Every metric that applies to ``example``'s task (:mod:`lcx.metrics`); the task's headline
    metric is ``tasks.TASKS[task].metric``."""
    task, answers = example.meta["task"], example.meta["answers"]
    if task in ("passkey", "needle"):
        return {
            "per_digit": metrics.per_digit_accuracy(prediction, example.answer),
            "exact": metrics.exact_match(prediction, answers),
            "string_match": metrics.ruler_string_match(prediction, answers),  # RULER NIAH
        }
    if task in ("first_sentence", "summary", "missing_chunk"):
        r = metrics.rouge(prediction, example.answer)
        return {**r, "exact": metrics.exact_match(prediction, answers)}
    if task == "rerank":
        ranking = metrics.parse_ranking(prediction)
        return {"ndcg@10": metrics.ndcg_at_k(ranking, example.meta["relevance"], k=10)}
    if task == "icl":
        return {"exact": metrics.exact_match(prediction, answers)}
    if task in ("doc_qa", "self_instruct"):
        return {
            "f1": metrics.token_f1(prediction, answers),
            "subem": metrics.substring_exact_match(prediction, answers),
        }
    return {"subem": metrics.substring_exact_match(prediction, answers)}


def chance(example: tasks.Example) -> float:
    """The expected headline score (:func:`score`) of an answer guessed uniformly among the
    candidates ``example`` offers: 0.1 per digit (passkey, needle); one of the JSON object's keys'
    values, of the topics, of the documents, or of the ICL labels; a re-ranking in a uniformly
    random order, whose expected DCG puts the documents' mean grade at every rank (so its nDCG is
    ``mean(grade) * sum(1 / log2(rank + 1)) / IDCG``). Free-text answers (first sentence, document
    QA, summary) have no candidate set: 0."""
    task, meta = example.meta["task"], example.meta
    if task in ("passkey", "needle"):
        return 0.1
    if task == "json_kv":
        return 1 / meta["pairs"]
    if task == "topic":
        return 1 / meta["topics"]
    if task in ("multidoc_qa", "multidoc_qa_k"):
        return 1 / meta["docs"]
    if task == "icl":
        return 1 / meta["classes"]
    if task == "rerank":
        grades = list(meta["relevance"].values())
        k = meta["docs"]
        ideal = sorted(grades, reverse=True)[:10]
        idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
        mean_grade = sum(grades) / k
        return mean_grade * sum(1 / math.log2(i + 2) for i in range(min(k, 10))) / idcg
    return 0.0


@dataclass
class Cell:
    """One task x length x depth cell of the probe suite: its examples, or why it has none."""

    task: str
    length: int
    depth: float | None
    examples: list[tasks.Example] = field(default_factory=list)
    skipped: str | None = None  # the generator's refusal (e.g. a length too short for the task)


def suite_cells(
    tokenizer,
    task_names,
    lengths,
    n_per_cell: int,
    seed: int = 0,
    pool: tasks.Pool | None = None,
    depths=(0.0, 0.25, 0.5, 0.75, 1.0),
) -> list[Cell]:
    """The probe suite's examples (the first of :func:`evaluate_suite`'s three steps):
    ``n_per_cell`` per task x length, split evenly over ``depths`` for tasks with a depth axis
    (the same seeds at every depth, so a seed's haystack is reused across depths), from
    ``pool``'s held-out text."""
    unknown = [t for t in task_names if t not in tasks.TASKS]
    if unknown:
        raise ValueError(f"unknown tasks {unknown}; choose from {tuple(tasks.TASKS)}")
    cells = []
    for t in task_names:
        spec = tasks.TASKS[t]
        n = math.ceil(n_per_cell / len(depths)) if spec.uses_depth else n_per_cell
        for length in lengths:
            for depth in depths if spec.uses_depth else [None]:
                try:
                    exs = [
                        tasks.generate(t, tokenizer, length, depth, seed + i, "test", pool)
                        for i in range(n)
                    ]
                except ValueError as err:  # e.g. a length too short for the task's prompt
                    cells.append(Cell(t, length, depth, skipped=str(err)))
                    continue
                cells.append(Cell(t, length, depth, exs))
    return cells


def score_cell(
    model, tokenizer, cell: Cell, batch_size: int = 8, max_prompt: int | None = None
) -> tuple[list[str], list[dict[str, float]]]:
    """The model's answers to a cell's examples and their scores against the references (the
    second step): greedy predictions (first line, stripped) and per example every metric of
    :func:`score` plus ``answer_acc`` (:func:`answer_accuracy` on the answer's content tokens).
    ``max_prompt``: keep only BOS and the last ``max_prompt - 1`` prompt tokens (the question
    end), as Together evaluates "LLaMA-2 truncated" on inputs longer than its window."""
    spec = tasks.TASKS[cell.task]
    prompts = [e.prompt_ids for e in cell.examples]
    if max_prompt is not None:
        prompts = [p if len(p) <= max_prompt else [p[0], *p[1 - max_prompt :]] for p in prompts]
    new = greedy(model, prompts, spec.max_new_tokens, tokenizer.pad_token_id, batch_size)
    preds = [tokenizer.decode(ids, skip_special_tokens=True).split("\n")[0].strip() for ids in new]
    scores = [
        {**score(e, p), "answer_acc": answer_accuracy(model, prompt, e.answer_ids, tokenizer)}
        for e, p, prompt in zip(cell.examples, preds, prompts, strict=True)
    ]
    return preds, scores


def example_table(cells: list[Cell], scores: list[list[dict[str, float]]]) -> pd.DataFrame:
    """The suite's scores example by example (the third step): one row per cell, example and
    metric: ``cell`` (the cell's index), task, category, length, depth, ``example`` (its index in
    the cell: with the same seed, the same prompt for every model), metric, headline (the task's
    main metric), score, chance (the headline's, :func:`chance`; NaN for the other metrics) and
    tokens (the example's length); a skipped cell is one row with
    ``skipped``. :func:`suite_table` aggregates it per cell."""
    rows = []
    for i, (cell, per_example) in enumerate(zip(cells, scores, strict=True)):
        spec = tasks.TASKS[cell.task]
        where = {"cell": i, "task": cell.task, "category": spec.category, "length": cell.length}
        if cell.skipped is not None:
            rows.append(
                {
                    **where,
                    "depth": cell.depth,
                    "example": -1,
                    "metric": None,
                    "headline": False,
                    "score": math.nan,
                    "skipped": cell.skipped,
                }
            )
            continue
        for name in per_example[0]:
            for j, (example, s) in enumerate(zip(cell.examples, per_example, strict=True)):
                rows.append(
                    {
                        **where,
                        "depth": cell.depth,
                        "example": j,
                        "metric": name,
                        "headline": name == spec.metric,
                        "score": s[name],
                        "chance": chance(example) if name == spec.metric else math.nan,
                        "tokens": example.length,
                    }
                )
    return pd.DataFrame(rows)


def aggregate(examples: pd.DataFrame) -> pd.DataFrame:
    """:func:`example_table`'s rows per cell and metric, in their order: score (mean), low/high
    (95% interval, :func:`lcx.metrics.mean_ci`: Wilson for 0/1 scores, t otherwise), n, chance
    and tokens (means over the examples); a skipped cell stays one row with ``skipped``."""
    rows = []
    for _, g in examples.groupby(["cell", "metric"], sort=False, dropna=False):
        first = g.iloc[0]
        where = {k: first[k] for k in ("task", "category", "length", "depth")}
        if "skipped" in g and isinstance(first.get("skipped"), str):
            rows.append(
                {
                    **where,
                    "metric": None,
                    "headline": False,
                    "score": math.nan,
                    "n": 0,
                    "skipped": first["skipped"],
                }
            )
            continue
        ci = metrics.mean_ci(g["score"].tolist())
        rows.append(
            {
                **where,
                "metric": first["metric"],
                "headline": bool(first["headline"]),
                "score": ci["mean"],
                "low": ci["low"],
                "high": ci["high"],
                "n": ci["n"],
                "tokens": float(g["tokens"].mean()),
                **({"chance": float(g["chance"].mean())} if "chance" in g else {}),
                **({"seconds": first["seconds"]} if "seconds" in g else {}),
            }
        )
    return pd.DataFrame(rows)


def suite_table(cells: list[Cell], scores: list[list[dict[str, float]]]) -> pd.DataFrame:
    """The suite's tidy table from its cells and their examples' scores: one row per cell and
    metric (:func:`aggregate` of :func:`example_table`)."""
    return aggregate(example_table(cells, scores))


def evaluate_suite(
    model,
    tokenizer,
    task_names,
    lengths,
    n_per_cell: int,
    seed: int = 0,
    pool: tasks.Pool | None = None,
    depths=(0.0, 0.25, 0.5, 0.75, 1.0),
    batch_size: int = 8,
    examples_out: list | None = None,
    max_prompt: int | None = None,
    per_example: bool = False,
) -> pd.DataFrame:
    """The probe suite in three steps: generate the examples (:func:`suite_cells`), score the
    model's answers against the references (:func:`score_cell`), tabulate the scores
    (:func:`suite_table`, or with ``per_example`` :func:`example_table`). ``examples_out``
    collects (example, prediction) pairs."""
    cells = suite_cells(tokenizer, task_names, lengths, n_per_cell, seed, pool, depths)
    scores = []
    for cell in tqdm(cells, desc="probe suite", leave=False):
        if cell.skipped is not None:
            scores.append([])
            continue
        preds, cell_scores = score_cell(model, tokenizer, cell, batch_size, max_prompt)
        scores.append(cell_scores)
        if examples_out is not None:
            examples_out.extend(zip(cell.examples, preds, strict=True))
    return (example_table if per_example else suite_table)(cells, scores)


class SkippedCellsWarning(UserWarning):
    """A suite table had cells its generator refused (e.g. a length too short for the task's
    prompt): averages over the table leave them out."""


def warn_skipped(suite: pd.DataFrame, lo: float = -math.inf, hi: float = math.inf) -> None:
    """Say which cells with ``lo <= length <= hi`` were skipped, and why, before an average
    leaves them out (a NaN row dropped silently would make a mean over fewer tasks look whole)."""
    if "skipped" not in suite:
        return
    gone = suite[suite["skipped"].notna() & (suite.length >= lo) & (suite.length <= hi)]
    if len(gone):
        cells = ", ".join(
            sorted({f"{t} at {n}" for t, n in zip(gone.task, gone.length, strict=True)})
        )
        warnings.warn(
            f"{len(gone)} suite cells skipped and left out of the average: {cells} "
            f"({gone.skipped.iloc[0]})",
            SkippedCellsWarning,
            stacklevel=3,
        )


def headline_means(suite: pd.DataFrame, by) -> pd.Series:
    """Mean headline score of a suite table (:func:`evaluate_suite`) grouped by ``by`` (e.g.
    ``"length"``, ``"depth"``, ``["task", "length"]``); warns of skipped cells."""
    warn_skipped(suite)
    return suite[suite.headline].groupby(by).score.mean()


def headline_mean(suite: pd.DataFrame, lo: float = -math.inf, hi: float = math.inf) -> float:
    """Mean headline score over a suite table's cells with ``lo <= length <= hi`` (NaN if none);
    warns of skipped cells in that range."""
    warn_skipped(suite, lo, hi)
    return float(suite[suite.headline & (suite.length >= lo) & (suite.length <= hi)].score.mean())


def category_means(suite: pd.DataFrame, metric: str | None = None) -> pd.DataFrame:
    """HELMET's macro-average (ProLong Table 10): headline scores averaged over depths per task,
    then over the tasks of each category, per length. ``metric`` (e.g. ``"answer_acc"``): that
    metric of every task instead of the headlines. Warns of skipped cells."""
    warn_skipped(suite)
    if metric is None:
        head = suite[suite["headline"].astype(bool)]
    else:
        head = suite[suite["metric"] == metric]
        if head.empty:
            raise ValueError(
                f"no {metric!r} rows; metrics here: {sorted(suite.metric.dropna().unique())}"
            )
    per_task = head.groupby(["category", "task", "length"], as_index=False)["score"].mean()
    return per_task.groupby(["category", "length"])["score"].mean().unstack("length")


def short_nll_rows(model, tokens, bos_id: int, max_len: int, pack: int = 8) -> pd.DataFrame:
    """Held-out NLL on the short domain (sections of <= 2 KB), each document alone up to
    ``max_len`` tokens: one row per document (``doc``, its index among the held-out short
    documents, the same for every model; ``tokens`` scored; ``nll_sum``; ``nll``, mean nats per
    token). Documents are packed up to ``pack * max_len`` tokens per forward pass with their
    position ids restarting, so each still attends only to itself (:mod:`lcx.attention`), as if
    run alone. :func:`short_perplexity` aggregates it."""
    from .attention import packed_inputs, position_ids

    docs = [
        [bos_id, *ids[: max_len - 1]]
        for ids, d in zip(tokens["input_ids"], tokens["domain"], strict=True)
        if d == "short" and len(ids) >= 8
    ]
    if not docs:
        raise ValueError("no held-out short documents")
    # at most ~64M logits per pass (256 MB in fp32): a large vocabulary packs fewer documents
    budget = max(max_len, min(pack * max_len, (1 << 26) // model.config.vocab_size))
    rows, row = [], []
    for doc in docs:
        if row and sum(map(len, row)) + len(doc) > budget:
            rows.append(row)
            row = []
        row.append(doc)
    rows.append(row)
    model.eval()
    out = []
    with torch.no_grad():
        for row in tqdm(rows, desc="short ppl", leave=False):
            ids = torch.tensor([[t for doc in row for t in doc]], device=_device(model))
            lengths = [len(doc) for doc in row]
            pos = position_ids(lengths)[None].to(ids.device)
            logits = model(**packed_inputs(ids, pos)).logits[0, :-1]
            target = ids[0, 1:].to(logits.device)
            nll = torch.nn.functional.cross_entropy(logits.float(), target, reduction="none")
            start = 0  # a document's targets: its own next tokens, not the next document's first
            for n in lengths:
                doc_nll = nll[start : start + n - 1]
                out.append(
                    {
                        "doc": len(out),
                        "tokens": n - 1,
                        "nll_sum": doc_nll.double().sum().item(),
                        "nll": doc_nll.mean().item(),
                    }
                )
                start += n
    return pd.DataFrame(out)


def short_perplexity(model, tokens, bos_id: int, max_len: int, pack: int = 8) -> dict:
    """Held-out NLL and perplexity on the short domain, over every token of
    :func:`short_nll_rows`' documents: the short-text skill an extension must keep."""
    rows = short_nll_rows(model, tokens, bos_id, max_len, pack)
    total, count = rows["nll_sum"].sum(), int(rows["tokens"].sum())
    return {
        "docs": len(rows),
        "tokens": count,
        "nll": total / count,
        "ppl": math.exp(total / count),
    }


# The lcx modules whose code an evaluation's key fingerprints (lcx.cache.code_fingerprint): the
# model as loaded and run, and for the probe suite and the passkey grid (memo's default) the task
# generators and the metrics too.
MODEL_CODE = ("evaluate", "models", "attention", "rope")
PROBE_CODE = (*MODEL_CODE, "tasks", "metrics")


def memo(kind: str, config: dict, inputs: list[str], compute, code=PROBE_CODE) -> pd.DataFrame:
    """An evaluation table cached like any artifact (:func:`lcx.cache.cached`): keyed by ``kind``,
    its parameters ``config``, the keys of what it evaluates (``inputs``, e.g. the model's run
    folder name) and the fingerprint of the lcx modules ``code`` that compute it, so a warm
    chapter rerun skips the evaluation and gets the same table, and a changed evaluation,
    generator or metric does not."""
    config = {**config, "code": cache.code_fingerprint(*code)}

    def build(folder):
        compute().to_parquet(folder / "table.parquet")  # exact floats and dtypes

    folder = cache.cached(f"eval-{kind}", config, build, inputs=inputs)
    return pd.read_parquet(folder / "table.parquet")


# --- evaluations that cache themselves ------------------------------------------------------------


@dataclass(frozen=True)
class Ref:
    """A model by reference, which is what a cached evaluation is called with: a trained run's
    folder (:func:`lcx.train.run`) or a hub checkpoint, plus an optional RoPE change applied at
    load time (keyword arguments of :func:`lcx.models.with_rope`; e.g. PI without training).
    ``key`` names it in cache keys (a run folder's name already hashes its config and inputs), and
    ``load()`` builds the model only when an evaluation is not cached yet."""

    source: str
    rope: tuple = ()
    xpos_center: int | None = None  # an xPos model's centre (lcx.models.set_xpos_center)

    @classmethod
    def of(cls, source, xpos_center: int | None = None, **rope) -> Ref:
        """``Ref.of(run)``, ``Ref.of("meta-llama/Llama-2-7b-hf")``,
        ``Ref.of(run, method="linear", factor=8)``, ``Ref.of(xpos_run, xpos_center=2048)``."""
        return cls(str(source), tuple(sorted(rope.items())), xpos_center)

    @property
    def key(self) -> str:
        from . import cache

        # a run folder is an absolute path (its name is its key); a hub id ("org/name") is keyed
        # with the commit it loads at (lcx.hub.REVISIONS), so a new pin recomputes what used it
        if Path(self.source).is_absolute():
            name = Path(self.source).name
        else:
            from .hub import REVISIONS

            name = f"{self.source}@{REVISIONS.get(self.source) or 'main'}"
        if not self.rope and self.xpos_center is None:
            return name
        change = {"source": name, "rope": dict(self.rope)}
        if self.xpos_center is not None:
            change["xpos_center"] = self.xpos_center
        return cache.key("ref", change)

    def load(self):
        """The model, on :func:`lcx.models.device`. A run's on a GPU in bf16: runs save their fp32
        master weights, and FlashAttention (the GPU's default attention) takes no fp32 outside
        autocast (transformers' ``get_target_dtype`` casts to the linear layers' type, fp32).
        A hub checkpoint loads there in bf16 too (:func:`lcx.models.load_pretrained`; Llama 2's
        own type is float16), so a base and its runs are compared in one precision."""
        from . import models, train

        source, where = Path(self.source), models.device()
        on_gpu = {} if where.type == "cpu" else {"dtype": torch.bfloat16}
        model = (
            train.load_run(source, device_map={"": str(where)}, **on_gpu)
            if source.is_absolute()
            else models.load_pretrained(self.source)
        )
        if self.rope:
            model = models.with_rope(model, **dict(self.rope))
        if self.xpos_center is not None:
            model = models.set_xpos_center(model, self.xpos_center)
        return model


_POOLS: dict[tuple[str, str], tasks.Pool] = {}


def pool(tokenizer, tokens, split: str = "test") -> tasks.Pool:
    """The pool of real text the probe tasks draw from (``split``: held-out ``test`` for
    evaluation, ``train`` for training rows), built once per tokenized corpus."""
    if (tokens.key, split) not in _POOLS:
        _POOLS[tokens.key, split] = tasks.Pool.from_tokens(tokenizer, tokens[split])
    return _POOLS[tokens.key, split]


def suite_examples(
    ref: Ref,
    tokenizer,
    tokens,
    task_names,
    lengths,
    n_per_cell: int,
    depths=(0.0, 0.25, 0.5, 0.75, 1.0),
    seed: int = 0,
    max_prompt: int | None = None,
    timed: bool = False,
) -> pd.DataFrame:
    """:func:`evaluate_suite` of ``ref`` on the held-out pool of ``tokens``, example by example
    (:func:`example_table`), cached under a key of every argument (:func:`memo`). ``timed`` adds
    a ``seconds`` column: how long the suite took when it ran (a warm rerun shows that time, not
    the load's)."""
    params = {
        "tasks": list(task_names),
        "lengths": list(lengths),
        "n": n_per_cell,
        "depths": list(depths),
        "seed": seed,
        "max_prompt": max_prompt,
    }

    def compute():
        start = time.time()
        table = evaluate_suite(
            ref.load(),
            tokenizer,
            task_names,
            lengths,
            n_per_cell,
            seed,
            pool(tokenizer, tokens),
            depths,
            max_prompt=max_prompt,
            per_example=True,
        )
        if timed:
            table["seconds"] = time.time() - start
        return table

    return memo("suite-examples-of", {**params, "timed": timed}, [ref.key, tokens.key], compute)


def suite(ref: Ref, tokenizer, tokens, task_names, lengths, n_per_cell: int, **kwargs):
    """The probe suite's cell means (:func:`aggregate`) of :func:`suite_examples`, which caches it
    (keyword arguments: ``depths``, ``seed``, ``max_prompt``, ``timed``)."""
    return aggregate(
        suite_examples(ref, tokenizer, tokens, task_names, lengths, n_per_cell, **kwargs)
    )


def perplexity_windows(
    ref: Ref, tokenizer, tokens, lengths, n_windows: int, domains=None, scored: int | None = None
) -> pd.DataFrame:
    """:func:`window_nll_by_length` of ``ref`` on the held-out split of ``tokens`` (one row per
    length and window), cached under a key of every argument (:func:`memo`)."""
    params = {"lengths": list(lengths), "n": n_windows, "domains": domains, "scored": scored}
    return memo(
        "perplexity-windows-of",
        params,
        [ref.key, tokens.key],
        lambda: window_nll_by_length(
            ref.load(),
            tokenizer,
            tokens["test"],
            lengths,
            n_windows,
            domains=domains,
            scored=scored,
        ),
        code=MODEL_CODE,
    )


def perplexity(ref: Ref, tokenizer, tokens, lengths, n_windows: int, **kwargs) -> pd.DataFrame:
    """Perplexity per token and per byte at each length (:func:`perplexity_table`) of
    :func:`perplexity_windows`, which caches it (keyword arguments: ``domains``, ``scored``)."""
    return perplexity_table(
        perplexity_windows(ref, tokenizer, tokens, lengths, n_windows, **kwargs)
    )


def nll(
    ref: Ref,
    tokenizer,
    tokens,
    length: int,
    n_windows: int,
    offset: int = 0,
    batch_size: int = 8,
    domains=None,
) -> np.ndarray:
    """Per-token NLL (:func:`token_nll`, windows x positions) of ``n_windows`` held-out windows of
    ``length`` tokens starting ``offset`` tokens into their documents (:func:`windows`; from
    ``domains`` only, if given), cached under a key of every argument (:func:`memo`)."""
    params = {"length": length, "n": n_windows, "offset": offset, "batch_size": batch_size}
    if domains is not None:
        params["domains"] = list(domains)

    def compute():
        bos = tokenizer.bos_token_id
        w = windows(tokens["test"], length, n_windows, bos, domains, offset=offset)
        return pd.DataFrame(token_nll(ref.load(), w, batch_size=batch_size).numpy())

    return memo("nll-of", params, [ref.key, tokens.key], compute, MODEL_CODE).to_numpy()


def far_context_rows(
    model, tokens, window: int, n_windows: int, bos_id: int, offset: int = 64, keep: int = 32
) -> pd.DataFrame:
    """Does the model read further back than a sentence? One row per held-out window of
    ``window`` tokens (:func:`windows`, ``offset`` tokens into its document, past its opening):
    ``true``, the mean NLL of the tokens at positions ``window // 2`` to the end given the true
    text before them, and ``replaced``, the same with every token before ``window // 2 - keep``
    (after BOS) replaced by the same span of the next window, cut from another document. The
    last ``keep`` tokens of context stay true in both, so only the far context differs."""
    w = windows(tokens, window, n_windows + 1, bos_id, offset=offset)
    if len(w) < 3:
        raise ValueError(f"far context needs 3+ held-out windows of {window} tokens")
    cut, scored = window // 2 - keep, window // 2
    if cut < 2:
        raise ValueError(f"window={window} leaves no far context before the last {keep} tokens")
    other = torch.roll(w, -1, 0)  # window i + 1: round-robin over documents, so another one
    replaced = w.clone()
    replaced[:, 1:cut] = other[:, 1:cut]
    w, replaced = w[:-1], replaced[:-1]  # the last window's replacement would wrap around
    true_nll = token_nll(model, w)[:, scored - 1 :].mean(1)
    replaced_nll = token_nll(model, replaced)[:, scored - 1 :].mean(1)
    return pd.DataFrame(
        {
            "window": range(len(w)),
            "true": true_nll.double().numpy(),
            "replaced": replaced_nll.double().numpy(),
        }
    )


def far_context(ref: Ref, tokenizer, tokens, window: int, n_windows: int) -> pd.DataFrame:
    """:func:`far_context_rows` of ``ref`` on the held-out split, cached (:func:`memo`)."""
    return memo(
        "far-context-of",
        {"window": window, "n": n_windows},
        [ref.key, tokens.key],
        lambda: far_context_rows(
            ref.load(), tokens["test"], window, n_windows, tokenizer.bos_token_id
        ),
        code=MODEL_CODE,
    )


def short_nll_docs(ref: Ref, tokenizer, tokens, max_len: int) -> pd.DataFrame:
    """:func:`short_nll_rows` of ``ref`` on the held-out split (one row per short document),
    cached (:func:`memo`)."""
    return memo(
        "short-nll-of",
        {"max_len": max_len},
        [ref.key, tokens.key],
        lambda: short_nll_rows(ref.load(), tokens["test"], tokenizer.bos_token_id, max_len),
        code=MODEL_CODE,
    )


def short_ppl(ref: Ref, tokenizer, tokens, max_len: int) -> float:
    """Short-domain perplexity over every token of :func:`short_nll_docs` (which caches it)."""
    rows = short_nll_docs(ref, tokenizer, tokens, max_len)
    return math.exp(rows["nll_sum"].sum() / rows["tokens"].sum())


def mean_loss_between(curve: pd.DataFrame, start: float, end: float) -> float:
    """Mean NLL of the buckets of a :func:`loss_by_position` curve that lie in (start, end]."""
    return float(curve[(curve.start > start) & (curve.end <= end)].nll.mean())


def passkey_examples(ref: Ref, tokenizer, lengths, depths, n: int, seed: int = 0) -> pd.DataFrame:
    """:func:`passkey_rows` of ``ref`` (one row per example), cached under a key of every
    argument (:func:`memo`)."""
    params = {"lengths": list(lengths), "depths": list(depths), "n": n, "seed": seed}
    return memo(
        "passkey-examples-of",
        params,
        [ref.key, tokenizer.key],
        lambda: passkey_rows(ref.load(), tokenizer, lengths, depths, n=n, seed=seed),
    )


def passkey(ref: Ref, tokenizer, lengths, depths, n: int, seed: int = 0) -> pd.DataFrame:
    """Passkey accuracy per (length, depth) (:func:`passkey_table`) of :func:`passkey_examples`,
    which caches it."""
    return passkey_table(passkey_examples(ref, tokenizer, lengths, depths, n, seed))
