"""ProLong (Gao et al., 2024, "How to Train Long-Context Language Models (Effectively)"): continued
training on code repositories and books mixed with short data (§3, Table 4, Fig. 1/3), RoPE base
tuning (Table 18), document masking (Table 20), a second stage longer than the evaluation length
(Table 7), short-only SFT (Table 8), the training-efficiency tricks of App. B (Table 15) and
HELMET's categories (Table 10); with the paper's numbers the chapter sets its results beside.

Lengths are in units of the base model's native window ``W`` (the paper's 8K), so 64K is ``8 * W``.

The claims P1-P9 and their parts (arms, metric, minimum effect, margin, gate) are data in
:mod:`lcx.claims`; this module turns the chapter's evaluations into the per-seed, per-example tables
the verdict engine reads (:func:`part_results`, :data:`PART_DATA`), so the notebook types no rule.
"""

from __future__ import annotations

import dataclasses
import json
from functools import partial
from types import SimpleNamespace

import numpy as np
import pandas as pd
import torch

from . import (
    attention,
    bench,
    budget,
    claims,
    data,
    evaluate,
    hub,
    models,
    pretrained,
    rope,
    tasks,
    train,
)
from . import rows as row_builders
from .profiles import pick, rehearsal
from .results import load_metrics

LONG = {"code": 1.0, "books": 1.0}  # paper: code repositories and books, 1:1 (Table 4)
SHORT = {"short": 1.0}  # paper: ShortMix (FineWeb, Wikipedia, StackExchange, ...); ours: short text
# HELMET's categories: recall has JSON KV and RULER's multi-key needle, as HELMET's does
SUITE = ["json_kv", "needle", "multidoc_qa", "rerank", "icl", "doc_qa", "summary"]
CATEGORIES = ["recall", "rag", "rerank", "icl", "qa", "summ"]
DEFAULT = {"long_share": 0.6, "long_mix": LONG, "masking": True}  # and the base: 2x NTK
ABLATIONS = {  # Fig. 1/3 (long share), Table 4 (sources), Table 18 (base), Table 20 (masks)
    "ProLong recipe": {},
    "long 40%": {"long_share": 0.4},
    "long 80%": {"long_share": 0.8},
    "long 100%": {"long_share": 1.0},
    "code only": {"long_mix": {"code": 1.0}},
    "books only": {"long_mix": {"books": 1.0}},
    "RoPE base unchanged": {"base": "original"},
    "RoPE base = NTK": {"base": "ntk"},
    "no document masking": {"masking": False},
}
# every code path: the tiny profile's ablations, and the rehearsal's (make rehearsal)
TINY_ABLATIONS = ("ProLong recipe", "long 100%", "no document masking")
LONG_SHARES = {"long 40%": 0.4, "ProLong recipe": 0.6, "long 80%": 0.8, "long 100%": 1.0}
# Evaluation lengths in units of W. The ablations average 32K and 64K (§2.1); Table 10 averages
# 32K, 64K and 128K: over Llama-3's 8K window, 4W, 8W and 16W.
EVAL_LENGTHS = (4, 8)
P9_LENGTHS = (4, 8, 16)
JUDGE = "answer_acc"  # the verdicts' reading of the suite: teacher-forced, content tokens only
# Table 7's arms (stage 2 from the recipe's model): the same tokens at 8W again, or at stage 2's
# longer length L2 (16W here, the paper's 512K = 64W on gpu)
CONTINUE, SWITCH = "continue at 8W", "switch to L2"
TABLE_7_CATEGORIES = ("recall", "rag", "rerank", "icl")  # the categories Table 7 reports
SHORT_ONLY = "short-only SFT"  # Table 8's 0%
TIMED = {"sdpa": "full attention", attention.VARLEN: "variable-length attention"}  # Table 15
PAPER_ROWS = ["Recall", "RAG", "Re-rank", "ICL", "QA", "Summ.", "Avg.", "Short avg."]
TABLE_4 = {  # data sources
    "Code Repos": [99.2, 53.8, 29.0, 61.2, 34.7, 36.2, 52.3, 65.9],
    "Books": [94.9, 53.9, 30.7, 72.2, 33.2, 37.7, 53.8, 65.5],
    "Books/Repos 1:1": [96.0, 54.9, 29.4, 73.9, 35.7, 37.9, 54.6, 65.5],
}
TABLE_18 = {  # RoPE base
    "0.5M (original)": [25.8, 37.0, 4.4, 73.8, 17.5, 16.3, 29.1, 65.0],
    "4M (NTK)": [81.3, 47.8, 18.2, 76.5, 31.8, 36.3, 48.7, 65.3],
    "8M (2x NTK)": [96.0, 54.9, 29.4, 73.9, 35.7, 37.9, 54.6, 65.5],
}
TABLE_20 = {  # document masking
    "No doc masks": [97.4, 53.6, 20.4, 76.6, 37.2, 36.3, 53.6, 64.9],
    "Document masks": [96.0, 54.9, 29.4, 73.9, 35.7, 37.9, 54.6, 65.5],
}
TABLE_8 = {"0%": 55.7, "1%": 54.1, "3%": 53.5, "10%": 53.9, "50%": 43.3}  # synthetic SFT share
TABLE_15 = {  # tok/s/GPU on 8 H100s
    "full attention": 2770,
    "variable-length attention": 2780,
    "+ minibatch reordering": 3095,
}
DEVICES = 8  # Table 15: 8 H100s
TABLE_7 = {  # Recall / RAG / Re-rank / ICL at 64K after 4B more tokens at each length
    "at 64K": "95.0 / 56.4 / 28.0 / 78.8",
    "at 512K": "98.5 / 56.9 / 32.9 / 79.2",
}
HYPERPARAMETERS = {  # §3 and Table 9
    "continued training": "8K -> 64K, 20B tokens (ablations 5B), 4M tokens per step",
    "data": "60% long (code repos : books 1:1, each >= 64K), 40% ShortMix",
    "RoPE base": "500K -> 8M (stage 2: 128M)",
    "optimizer": "AdamW (0.9, 0.95), wd 0.1, lr 1e-5, 10% warm-up, cosine to 1e-6",
    "attention": "document masks, variable-length kernel",
    "stage 2": "512K, 20B tokens (Table 7: +4B), 8M tokens per step",
    "SFT": "UltraChat only, 1B tokens, lr 2e-5",
}


def rope_bases(b0: float, W: int, L: int, L2: int, head_dim: int) -> dict:
    """Table 18's bases at our window: the original, dynamic NTK's suggestion for ``L / W``, and
    the recipe's twice that (paper: 500K, ~4M, 8M); stage 2 doubles NTK's suggestion again for
    ``L2 / L`` (paper: 128M)."""
    ntk = rope.ntk_base(b0, L / W, head_dim)
    return {
        "original": b0,
        "ntk": ntk,
        "stage 1": 2 * ntk,
        "stage 2": 2 * rope.ntk_base(2 * ntk, L2 / L, head_dim),
    }


def lengths(profile: str, W: int) -> tuple[int, int]:
    """(stage 1's length, stage 2's): paper 65,536 = 8W and 524,288 = 64W (16W on tiny and cpu)."""
    return 8 * W, pick(profile, tiny=16 * W, cpu=16 * W, gpu=64 * W)


def gpu_recipes(profile: str, W: int) -> list[train.Recipe]:
    """Every recipe chapter 06 trains on every GPU here (stage 1, stage 2, SFT; the ablations
    are stage 1's length and layout), as it builds them: what :func:`lcx.chapter.setup` checks
    against the GPU's memory first."""
    return list(recipes(profile, W, *lengths(profile, W), train.gpus()))


def recipes(profile: str, W: int, L: int, L2: int, gpus: int = 1):
    """(stage 1, stage 2, SFT) recipes (§3, Table 9): stage 1 at ``L``, stage 2 at ``L2``, SFT at
    ``L``. On gpu every run uses all ``gpus`` (FSDP2 sharding; stage 2 with Ulysses)."""
    sharded = pick(profile, tiny=None, cpu=None, gpu={"processes": gpus, "fsdp": True})
    # Ulysses wraps FlashAttention (document masking) under DeepSpeed: GPUs only, so the rehearsal
    # on a CPU trains stage 2 as stage 1, sharded (its README lists what it cannot show)
    ulysses = {"processes": gpus, "sp_size": gpus} if not rehearsal() else sharded
    ulysses = pick(profile, tiny=None, cpu=None, gpu=ulysses)
    stage1 = train.Recipe(
        seq_len=L,  # paper: 65,536
        tokens=pick(profile, tiny=L * 2 * 3, cpu=200_000, gpu=5_000_000_000),  # paper: 5B
        # paper: 4M (2^22: 64 rows of 64K)
        batch_tokens=pick(profile, tiny=2 * L, cpu=2 * L, gpu=4 * train.MILLION_TOKENS),
        lr=pick(profile, tiny=1e-3, cpu=1e-3, gpu=1e-5),  # paper: 1e-5
        warmup=0.1,  # paper: 10%
        min_lr_ratio=0.1,  # paper: cosine to 1e-6
        betas=(0.9, 0.95),  # paper: (0.9, 0.95)
        weight_decay=0.1,  # paper: 0.1
        document_masking=True,  # paper: on
        bf16=profile != "tiny",
        save_every=50,
        micro_rows=pick(profile, tiny=None, cpu=None, gpu=1),  # token-averaged accumulation
        gradient_checkpointing=pick(profile, tiny=False, cpu=False, gpu=True),  # 64K rows of 8B
        loss_chunk=pick(profile, tiny=None, cpu=None, gpu=8192),  # 64K x 128K logits: 84 GB
        stream_rows=profile in ("gpu", "paper"),  # 5B tokens at 64K: ~140 GB of rows
        parallel=sharded,
    )
    stage2 = dataclasses.replace(
        stage1,
        parallel=ulysses,
        seq_len=L2,  # paper: 524,288
        tokens=pick(profile, tiny=L2 * 2 * 2, cpu=64_000, gpu=4_000_000_000),  # paper: +4B
        # paper: 8M (2^23: 16 rows of 512K)
        batch_tokens=pick(profile, tiny=2 * L2, cpu=2 * L2, gpu=8 * train.MILLION_TOKENS),
    )
    sft = train.Recipe(
        seq_len=L,
        tokens=pick(profile, tiny=L * 2 * 2, cpu=L * 2 * 8, gpu=1_000_000_000),  # paper: 1B
        batch_tokens=pick(profile, tiny=2 * L, cpu=2 * L, gpu=4 * train.MILLION_TOKENS),  # 4M
        lr=pick(profile, tiny=5e-4, cpu=5e-4, gpu=2e-5),  # paper: 2e-5, cosine to 2e-6
        warmup=0.05,  # paper: 5%
        min_lr_ratio=0.1,
        betas=(0.9, 0.95),
        weight_decay=0.1,
        document_masking=True,
        bf16=profile != "tiny",
        save_every=50,
        micro_rows=pick(profile, tiny=None, cpu=None, gpu=1),
        gradient_checkpointing=stage1.gradient_checkpointing,
        loss_chunk=stage1.loss_chunk,
        parallel=sharded,
        stream_rows=stage1.stream_rows,  # 1B tokens at 64K: ~28 GB of rows
    )
    return train.rehearsed(stage1), train.rehearsed(stage2), train.rehearsed(sft)


def recipe_summary(stage1, stage2, sft, b0: float, bases: dict, W: int) -> dict:
    """Our recipe in the words of the paper's Table 9 (:data:`HYPERPARAMETERS`)."""
    L, L2 = stage1.seq_len, stage2.seq_len
    return {
        "continued training": f"W -> 8W = {L}, {stage1.tokens / 1e3:.0f}K tokens, "
        f"{stage1.batch_tokens} per step",
        "data": "60% long (code packages : books 1:1, each >= 8W), 40% short sections",
        "RoPE base": f"{b0:.0f} -> {bases['stage 1']:.0f} (stage 2: {bases['stage 2']:.0f})",
        "optimizer": f"AdamW {stage1.betas}, wd {stage1.weight_decay}, lr {stage1.lr:g}, "
        "10% warm-up, cosine to 10%",
        "attention": "document masks (per-document kernel measured in P8)",
        "stage 2": f"{L2 // W}W = {L2}, {stage2.tokens / 1e3:.0f}K tokens",
        "SFT": f"short chats and instructions only, {sft.tokens / 1e3:.0f}K tokens, lr {sft.lr:g}",
    }


def long_documents(tokens, L: int) -> pd.DataFrame:
    """Table 3's question for our corpus: which sources have training documents of ``L`` tokens."""
    lengths = pd.DataFrame(
        {"domain": tokens["train"]["domain"], "tokens": list(tokens["train"]["n_tokens"])}
    )
    return (
        lengths.assign(
            long=lengths.tokens >= L, long_tokens=lengths.tokens.where(lengths.tokens >= L, 0)
        )
        .groupby("domain")[["long", "long_tokens"]]
        .sum()
        .rename(columns={"long": "documents >= 8W", "long_tokens": "tokens in them"})
    )


def ablations(profile: str, domains, skip=()) -> tuple[dict, list]:
    """(the ablations this profile runs, those skipped for want of their long data); an ablation
    in ``skip`` (:func:`lcx.plan.skipped`: only out-of-reach parts use it) is not run."""
    few = profile == "tiny" or rehearsal()
    chosen = {
        k: v for k, v in ABLATIONS.items() if (not few or k in TINY_ABLATIONS) and k not in skip
    }
    missing = sorted(k for k, v in chosen.items() if not set(v.get("long_mix", LONG)) & domains)
    return {k: v for k, v in chosen.items() if k not in missing}, missing


def run_name(name: str, profile: str) -> str:
    return f"prolong-{name.lower().replace(' ', '-').replace('%', '').replace('=', '')}-{profile}"


_DOCS: dict[str, dict] = {}


def training_documents(tokens):
    """The training split's documents as plain lists (ids and domain), read once per corpus:
    every run's rows are drawn from them; a split too large for memory
    (:func:`lcx.tasks.in_memory`) as it is, read a document at a time."""
    if not tasks.in_memory(tokens["train"]):
        return tokens["train"]
    if tokens.key not in _DOCS:
        _DOCS[tokens.key] = tokens["train"].select_columns(["input_ids", "domain"]).to_dict()
    return _DOCS[tokens.key]


def continued_run(ch, start, recipe, settings: dict, bases: dict, seed: int, name: str, inputs):
    """One continued-training run (its folder) of ``start`` on ``settings`` over
    :data:`DEFAULT`: long share, long sources, RoPE base (a key of ``bases`` or a number) and
    document masking."""
    s = {**DEFAULT, "base": "stage 1", **settings}
    base = bases[s["base"]] if isinstance(s["base"], str) else s["base"]
    rec = dataclasses.replace(recipe, seed=seed, document_masking=s["masking"])
    n, parts = rec.steps * rec.rows_per_step, (s["long_share"], s["long_mix"], SHORT)
    if rec.stream_rows:  # paper scale: made as the trainer reads them, from the split on disk
        mix = dict(zip(("long_share", "long_mixture", "short_mixture"), parts, strict=True))
        bos = ch.tokenizer.bos_token_id
        rows = row_builders.RowStream(ch.tokens["train"], rec, bos, n, ch.tokenizer, mix)
    else:
        rows = row_builders.long_short_rows(
            training_documents(ch.tokens),
            rec,
            parts[0],
            n,
            ch.tokenizer.bos_token_id,
            *parts[1:],
            ch.tokenizer,
        )
    model = models.with_rope(start, "default", base=base)
    return train.run(
        model, None, ch.tokenizer, rec, inputs=inputs, name=run_name(name, ch.profile), rows=rows
    )


def chat_tasks(profile: str) -> tuple:
    """The probe tasks whose training formats make the short SFT chats (UltraChat stand-in); on
    tiny the three whose chats fit its window."""
    return pick(
        profile,
        tiny=("json_kv", "icl", "doc_qa"),
        cpu=row_builders.CHAT_TASKS,
        gpu=row_builders.CHAT_TASKS,
    )


def short_chat(ch, k: int, seed: int, task_names) -> list[dict]:
    """``k`` short SFT rows (§5, Table 8's 0%): UltraChat through the model's chat template on
    gpu/paper; here short chats of the probe tasks' training formats."""
    L, W = 8 * ch.W, ch.W
    if ch.profile in ("gpu", "paper"):
        return row_builders.chat_template_rows(data.ultrachat(), ch.tokenizer, k, L)
    pool = evaluate.pool(ch.tokenizer, ch.tokens, "train")
    return row_builders.chat_rows(
        ch.tokenizer, k, L, seed, pool, (W // 2, W), task_names=task_names
    )


def sft_run(ch, sft: train.Recipe, run, seed: int, task_names, synthetic: float = 0.0):
    """``run`` fine-tuned on short chats with a ``synthetic`` share of synthetic long
    instruction rows (Table 8), its folder."""
    L, W = 8 * ch.W, ch.W
    pool = evaluate.pool(ch.tokenizer, ch.tokens, "train")
    # paper scale (1B tokens at 64K): made as the trainer reads them
    stream = sft.stream_rows and ch.profile in ("gpu", "paper")
    if stream:
        chat = partial(
            row_builders.iter_chat_template_rows, data.ultrachat, ch.tokenizer, seq_len=L
        )
    else:
        chat = partial(short_chat, ch, seed=seed, task_names=task_names)
    make = row_builders.iter_synthetic_long_rows if stream else row_builders.synthetic_long_rows
    synth = partial(make, ch.tokenizer, seq_len=L, seed=seed, pool=pool, lengths=(2 * W, L - 1))
    parts = {"short chat": (1 - synthetic, chat), "synthetic long": (synthetic, synth)}
    spec = [
        ch.tokens.key,
        ch.tokenizer.key,
        seed,
        list(task_names),
        synthetic,
        hub.revision(data.ULTRACHAT),  # lcx.data.ultrachat's, at its pinned commit
    ]
    rows = row_builders.mixed(parts, sft.steps * sft.rows_per_step, seed, stream, L, spec)
    return train.fine_tune(
        run, ch.tokenizer, dataclasses.replace(sft, seed=seed), f"prolong-sft-{ch.profile}", rows
    )


def suite_examples(ch, run, lengths, n: int, depths=(0.5,)) -> pd.DataFrame:
    """:data:`SUITE` of ``run`` example by example (:func:`lcx.evaluate.suite_examples`, cached):
    with the same evaluation seed every model answers the same prompts."""
    ref = evaluate.Ref.of(run)
    return evaluate.suite_examples(ref, ch.tokenizer, ch.tokens, SUITE, lengths, n, depths=depths)


def suite_scores(ch, run, lengths, n: int, depths=(0.5,), metric=None) -> pd.DataFrame:
    """HELMET's categories x ``lengths`` (each category the mean of its tasks) of ``run`` on
    :data:`SUITE`; ``metric`` None reads each task's headline metric."""
    t = evaluate.aggregate(suite_examples(ch, run, lengths, n, depths))
    return evaluate.category_means(t, metric)


def macro(by_length: pd.DataFrame) -> pd.Series:
    """Each category's mean over lengths, and their average (Table 10's macro-average)."""
    cats = by_length.mean(axis=1)
    return pd.Series({**cats.to_dict(), "avg": float(cats.mean())})


def long_windows(ch, runs: dict, n: int) -> pd.DataFrame | str:
    """Fig. 1's long-data perplexity, window by window: for each ``(arm, seed) -> run``, the NLL
    of the last half of ``n`` held-out ``8 * W`` windows of long code and books (the paper takes
    the last 32K of 64K PG19 windows); one row per arm, seed and window (the same window index is
    the same text for every model). The reason, when no held-out document is that long."""
    L = 8 * ch.W
    try:
        evaluate.windows(ch.tokens["test"], L, n, ch.tokenizer.bos_token_id, domains=list(LONG))
    except ValueError as err:  # no held-out long document (the tiny corpus)
        return f"no held-out long document: {err}"
    frames = [
        evaluate.perplexity_windows(
            evaluate.Ref.of(run), ch.tokenizer, ch.tokens, [L], n, list(LONG), L // 2
        ).assign(arm=arm, seed=seed)
        for (arm, seed), run in runs.items()
    ]
    return pd.concat(frames, ignore_index=True)


def short_docs(ch, runs: dict) -> pd.DataFrame:
    """Short-text quality before SFT, document by document: for each ``(arm, seed) -> run``, the
    NLL of every held-out short document (:func:`lcx.evaluate.short_nll_docs`, at most ``W``
    tokens; the paper runs its short tasks on the model before SFT too)."""
    frames = [
        evaluate.short_nll_docs(evaluate.Ref.of(run), ch.tokenizer, ch.tokens, ch.W).assign(
            arm=arm, seed=seed
        )
        for (arm, seed), run in runs.items()
    ]
    return pd.concat(frames, ignore_index=True)


def arm_examples(ch, runs: dict, lengths, n: int, depths=(0.5,)) -> pd.DataFrame:
    """The suite example by example for each ``(arm, seed) -> run`` (after SFT), in one table
    with ``arm`` and ``seed`` columns."""
    frames = [
        suite_examples(ch, run, lengths, n, depths).assign(arm=arm, seed=seed)
        for (arm, seed), run in runs.items()
    ]
    return pd.concat(frames, ignore_index=True)


def per_seed(examples: pd.DataFrame, short=None, long=None, judge: str = JUDGE) -> pd.DataFrame:
    """One row per arm and seed: the categories read with ``judge`` and macro-averaged over
    lengths (:func:`macro`), their average, the average of HELMET's headline metrics, and, where
    given, the short and long perplexity (``exp`` of the mean NLL over every short document's
    tokens; over the long windows' mean NLL)."""
    rows = []
    for (arm, seed), ex in examples.groupby(["arm", "seed"], sort=False):
        cells = evaluate.aggregate(ex)
        m = macro(evaluate.category_means(cells, judge))
        rows.append(
            {
                "model": arm,
                "seed": seed,
                **m.to_dict(),
                "HELMET avg": macro(evaluate.category_means(cells))["avg"],
            }
        )
    out = pd.DataFrame(rows)
    if short is not None:
        g = short.groupby(["arm", "seed"])
        ppl = np.exp(g.nll_sum.sum() / g.tokens.sum()).rename("short ppl")
        out = out.join(ppl, on=["model", "seed"])
    if isinstance(long, pd.DataFrame):
        ppl = np.exp(long.groupby(["arm", "seed"]).nll.mean()).rename("long ppl")
        out = out.join(ppl, on=["model", "seed"])
    else:
        out["long ppl"] = np.nan
    return out


def ablation_table(summary: pd.DataFrame, names, paper: dict):
    """(ours, the paper's) for the ablation rows ``names`` that ran: categories, averages, short
    perplexity; the paper's Recall..Short avg. columns."""
    cats = [c for c in CATEGORIES if c in summary.columns]
    ours = summary.loc[
        [n for n in names if n in summary.index], [*cats, "avg", "HELMET avg", "short ppl"]
    ]
    return ours.round(3), pd.DataFrame(paper, index=PAPER_ROWS).T


def simulated_throughput(costs, tokens: int, devices: int, order=None, trials=200, rng=None):
    """Tokens per second per device of one step whose rows take ``costs`` seconds, dealt to
    ``devices`` ranks (:func:`lcx.budget.step_time`) in ``order`` (App. B's minibatch reordering),
    or averaged over ``trials`` random orders."""
    costs = np.asarray(costs)
    if order is not None:
        t = budget.step_time(list(costs[order]), devices)
    else:
        t = np.mean(
            [budget.step_time(list(rng.permutation(costs)), devices) for _ in range(trials)]
        )
    return tokens / devices / t


# On gpu, P8 times this many of the base model's blocks without its head: the attention's share
# of a block's time is the same in each block, and the whole 8B model's fp32 copy, gradients
# and 64K x 128K logits do not fit one 80 GB GPU (lcx.budget: ~470 GB; two blocks with the
# embeddings and head, counting an fp32 copy and gradients of every parameter: under 40 GB).
THROUGHPUT_LAYERS = 2


def throughput_config(config, profile: str):
    """The model P8 times (:func:`row_times`): the base model's on tiny and cpu; on gpu/paper its
    first :data:`THROUGHPUT_LAYERS` blocks, timed without the head."""
    if profile not in ("gpu", "paper"):
        return config
    layers = min(THROUGHPUT_LAYERS, config.num_hidden_layers)
    return config.__class__(**{**config.to_dict(), "num_hidden_layers": layers})


def row_times(ch, rows, repeats: int, bf16: bool) -> pd.DataFrame:
    """Seconds per packed row by attention implementation (:func:`lcx.bench.packed_row_times`,
    App. B / Table 15's measurement) on :func:`throughput_config`, measured once per cache."""
    params = {"rows": row_builders.rows_key(rows), "repeats": repeats, "bf16": bf16}
    config = throughput_config(ch.base_net.config, ch.profile)
    head = ch.profile not in ("gpu", "paper")
    if not head:
        params |= {"layers": config.num_hidden_layers, "head": False}
    return evaluate.memo(
        "packed-row-times",
        params,
        [ch.base_ref.key],
        lambda: bench.packed_row_times(config, rows, repeats=repeats, bf16=bf16, head=head),
        code=("bench", "models", "attention", "rope"),  # the measurement's code
    )


def stage2_plan(stage1: train.Recipe, stage2: train.Recipe, W: int, skip=()) -> dict:
    """Table 7's two arms from the recipe's model: arm -> (recipe, RoPE base key of
    :func:`rope_bases`, run name): the same tokens at 8W again, or at stage 2's length with the
    base raised again (the run names keep the length, e.g. "switch to 16W"). An arm in ``skip``
    (:func:`lcx.plan.skipped`) is left out; stage 2's run also starts Table 8's short-only SFT,
    so it is left out only when that is skipped too."""
    arms = {
        CONTINUE: (dataclasses.replace(stage1, tokens=stage2.tokens), "stage 1", CONTINUE),
        SWITCH: (stage2, "stage 2", f"switch to {stage2.seq_len // W}W"),
    }
    needed = {CONTINUE: CONTINUE not in skip, SWITCH: SWITCH not in skip or SHORT_ONLY not in skip}
    return {arm: v for arm, v in arms.items() if needed[arm]}


def final_arm(runs: dict) -> tuple[str, str]:
    """(arm, label after SFT) of ProLong's final model among ``runs`` ((arm, seed) -> run):
    stage 2's run, or the recipe's stage 1 when stage 2 was not run."""
    if any(arm == SWITCH for arm, _ in runs):
        return SWITCH, "ProLong recipe (final), + SFT"
    return "ProLong recipe", "ProLong recipe (stage 1; stage 2 not run), + SFT"


def stage2_run(ch, start, recipe: train.Recipe, rope_base: str, bases: dict, seed: int, name: str):
    """§3.2 / Table 7: the recipe's run ``start`` trained further with ``recipe`` and RoPE base
    ``rope_base`` (a key of ``bases``), on fresh rows (seed ``1000 + seed``: stage 1's seed would
    replay its first rows); ``name`` names the run."""
    inputs = [ch.tokenizer.key, ch.tokens.key, start.name]
    model = train.load_run(start)
    return continued_run(ch, model, recipe, {"base": rope_base}, bases, 1000 + seed, name, inputs)


def summary_targets(ch, length: int, n: int) -> list[str]:
    """The references of ``n`` held-out summarization examples at ``length`` (documents' title
    lines): how much one guess could earn."""
    pool = evaluate.pool(ch.tokenizer, ch.tokens)
    return [
        tasks.generate("summary", ch.tokenizer, length, None, i, "test", pool).answer
        for i in range(n)
    ]


def synthetic_sft(ch, sft: train.Recipe, starts: dict, shares, task_names, short_only: list):
    """Table 8's runs: for each synthetic share, each seed's ``starts[seed]`` fine-tuned on short
    chats with that share of synthetic long rows; share 0 is ``short_only`` (already run)."""
    runs = {0.0: short_only}
    for share in shares:
        runs[share] = [sft_run(ch, sft, start, s, task_names, share) for s, start in starts.items()]
    return runs


def synthetic_shares(profile: str, skip=()) -> list:
    """Table 8's synthetic shares run on ``profile``: none when the plan skips the short-only SFT
    arm they are compared with (:func:`lcx.plan.skipped`), else each share whose arm is not in
    ``skip``."""
    shares = pick(profile, tiny=[0.5], cpu=[0.01, 0.1, 0.5], gpu=[0.01, 0.03, 0.1, 0.5])
    if SHORT_ONLY in skip:
        return []
    return [s for s in shares if synthetic_arm(s) not in skip]


def synthetic_arm(share: float) -> str:
    """Table 8's arm of a synthetic share: ``"10% synthetic"``, or short-only SFT for 0."""
    return SHORT_ONLY if share == 0 else f"{share:.0%} synthetic"


def synthetic_rows(sft: train.Recipe, share: float) -> int:
    """How many rows of an SFT run are synthetic at ``share`` (a share too small for the run's
    rows rounds to none)."""
    n = sft.steps * sft.rows_per_step
    return row_builders.share_counts({"short chat": 1 - share, "synthetic long": share}, n)[
        "synthetic long"
    ]


def synthetic_gates(sft: train.Recipe) -> dict:
    """P7's gates, ``{part name: (passed, reason)}``: a part's synthetic share (its arm, e.g.
    "10% synthetic") is testable when its SFT run has at least one synthetic row; a share that
    rounds to none would make it the short-only run itself."""
    gates = {}
    for part in claims.CLAIMS["P7"].parts:
        share = float(part.arms[1].split("%")[0]) / 100
        k = synthetic_rows(sft, share)
        gates[part.name] = (k > 0, f"{k} of {sft.steps * sft.rows_per_step} SFT rows synthetic")
    return gates


def synthetic_table(results: pd.DataFrame, sft: train.Recipe, shares) -> pd.DataFrame:
    """Table 8 beside ours: per synthetic share (0 and ``shares``), the suite average over seeds
    (and its range) from :func:`per_seed`'s ``results``, the HELMET-metric average, and how many
    rows of each SFT run are synthetic."""
    table = {}
    for share in [0.0, *shares]:
        r = results[results.model == synthetic_arm(share)]
        table[f"{share:.0%}"] = {
            "ours (avg)": r["avg"].mean(),
            "min": r["avg"].min(),
            "max": r["avg"].max(),
            "HELMET avg": r["HELMET avg"].mean(),
            "synthetic rows": synthetic_rows(sft, share),
        }
    table = pd.DataFrame(table).T
    table["paper (Avg.)"] = pd.Series(TABLE_8)
    return table


def throughput(ch, stage1: train.Recipe, n_rows: int, repeats: int, bf16: bool) -> dict:
    """App. B / Table 15 at our scale: ``n_rows`` rows of the recipe timed one by one with full
    and variable-length attention (measured once per cache), then dealt to :data:`DEVICES`
    simulated ranks at random or in App. B's reordered minibatches. Returns the table beside
    Table 15, the measured and simulated tokens/s, the gain of reordering on 2 ranks, and the
    per-row times."""
    varlen = attention.VARLEN
    rows = row_builders.long_short_rows(
        training_documents(ch.tokens),
        stage1,
        0.6,
        n_rows,
        ch.tokenizer.bos_token_id,
        LONG,
        SHORT,
        ch.tokenizer,
    )
    times = row_times(ch, rows, repeats, bf16)
    per_impl = times.pivot(index="row", columns="impl", values="seconds")
    tokens = times.groupby("row").tokens.first().sum()
    measured = {impl: tokens / per_impl[impl].sum() for impl in per_impl}
    rng = np.random.default_rng(0)

    def simulated(costs, order=None, devices=DEVICES):
        return simulated_throughput(costs, tokens=tokens, devices=devices, order=order, rng=rng)

    docs = [[e - s for s, e in attention.document_spans(r["position_ids"])] for r in rows]
    order = budget.reorder_minibatches(docs)
    sim = {
        "full attention": simulated(per_impl["sdpa"]),
        "variable-length attention": simulated(per_impl[varlen]),
        "+ minibatch reordering": simulated(per_impl[varlen], order=order),
    }
    table = pd.DataFrame(
        {
            "one device, measured (tok/s)": {
                "full attention": measured["sdpa"],
                "variable-length attention": measured[varlen],
                "+ minibatch reordering": np.nan,
            },
            f"{DEVICES} devices, simulated (tok/s/device)": sim,
            "paper (tok/s/GPU, Table 15)": TABLE_15,
        }
    )
    table["gain over full (simulated)"] = table.iloc[:, 1] / table.iloc[0, 1] - 1
    gain_2 = simulated(per_impl[varlen], order, 2) / simulated(per_impl[varlen], devices=2) - 1
    return {
        "table": table,
        "measured": measured,
        "simulated": sim,
        "gain_2": gain_2,
        "times": times,
    }


def loss_shares(ch, task_names, k: int = 8) -> pd.DataFrame:
    """App. B's loss rule: how much of a step's loss ``k`` short chat rows and ``k`` synthetic
    long rows carry when the loss is averaged over tokens (ours, ProLong's) or over sequences."""
    L, W = 8 * ch.W, ch.W
    chat = short_chat(ch, k, 0, task_names)
    pool = evaluate.pool(ch.tokenizer, ch.tokens, "train")
    synth = row_builders.synthetic_long_rows(ch.tokenizer, k, L, 0, pool, (2 * W, L - 1))
    answer_tokens = {
        "short chat rows": [float(r["loss_weights"][1:].sum()) for r in chat],
        "synthetic long rows": [float(r["loss_weights"][1:].sum()) for r in synth],
    }
    total = sum(map(sum, answer_tokens.values()))
    n_step = sum(map(len, answer_tokens.values()))
    return pd.DataFrame(
        {
            "answer tokens per row": {k: np.mean(v) for k, v in answer_tokens.items()},
            "share of the step's loss, token-averaged": {
                k: sum(v) / total for k, v in answer_tokens.items()
            },
            "share of the step's loss, sequence-averaged": {
                k: len(v) / n_step for k, v in answer_tokens.items()
            },
        }
    )


# The other chapters' extended models, as their metrics record them (chapter: label, run name)
OTHER_CHAPTERS = {
    "03_together_pi": ("Together PI (chapter 03)", lambda m: m["runs"]["0"]["phase2"]),
    "04_llama2_long_abf": ("Llama 2 Long ABF (chapter 04)", lambda m: m["runs"]["ABF seed 0"]),
    "05_llama3_80k_qlora": (
        "Llama-3 80K QLoRA (chapter 05)",
        lambda m: m["runs"]["ABF x400 seed 0"],
    ),
}


def other_chapters(ch) -> tuple[dict, list]:
    """The seed-0 extended model of each chapter in :data:`OTHER_CHAPTERS` that ran on this
    profile into this cache with this chapter's tokenizer: (label -> run folder, labels not
    found)."""
    found, not_found = {}, []
    for other, (label, run_of) in OTHER_CHAPTERS.items():
        m = load_metrics(other, ch.profile)
        try:
            run = train.find_run(run_of(m)) if m else None
        except KeyError:  # that chapter ran without seed 0
            run = None
        config = json.loads((run / "model" / "config.json").read_text()) if run else {}
        if run is None or config["vocab_size"] != len(ch.tokenizer):  # e.g. Llama-2 on gpu
            not_found.append(label)
        else:
            found[label] = run
    return found, not_found


def final_table(ch, contenders: dict, lengths, n: int, depths, judge) -> pd.DataFrame:
    """Table 10 at our scale: for each contender (label -> its runs, one per seed) and length,
    the categories with the ``judge`` metric (mean over seeds), their average and the average
    with HELMET's metrics; indexed by (label, length in W)."""
    table = {}
    for label, runs in contenders.items():
        t = sum(suite_scores(ch, r, lengths, n, depths, judge) for r in runs) / len(runs)
        helmet = sum(suite_scores(ch, r, lengths, n, depths) for r in runs) / len(runs)
        for length in lengths:
            table[label, f"{length // ch.W}W"] = {
                **t[length].to_dict(),
                "avg": float(t[length].mean()),
                "HELMET avg": float(helmet[length].mean()),
            }
    return pd.DataFrame(table).T


# --- the verdicts' inputs: per-seed, per-example tables of the registry's arms ---------------------

# What each empirical part of lcx.claims reads: (source, selection). A source is a table of the
# chapter's results (see part_results); a suite selection keeps the categories and the lengths (in
# W) the paper's comparison averages. The arms, the metric's words, the direction and the
# thresholds are the registry's.
_TABLE_4 = {"categories": None, "lengths": EVAL_LENGTHS}
PART_DATA = {
    ("P1", "long perplexity"): ("long", {}),
    ("P1", "suite: 60% vs 100% long"): ("suite", _TABLE_4),
    ("P2", "recall: code vs books"): ("suite", {**_TABLE_4, "categories": ("recall",)}),
    ("P2", "recall: code vs 1:1"): ("suite", {**_TABLE_4, "categories": ("recall",)}),
    ("P2", "ICL: books vs code"): ("suite", {**_TABLE_4, "categories": ("icl",)}),
    ("P2", "summ: books vs code"): ("suite", {**_TABLE_4, "categories": ("summ",)}),
    ("P2", "avg: 1:1 vs code"): ("suite", _TABLE_4),
    ("P2", "avg: 1:1 vs books"): ("suite", _TABLE_4),
    ("P3", "suite: 60% vs 100% long"): ("suite", _TABLE_4),
    ("P3", "short: 60% vs 100% long"): ("short", {}),
    ("P3", "short: 40% vs 60% long"): ("short", {}),
    ("P4", "2x NTK vs NTK"): ("suite", _TABLE_4),
    ("P4", "NTK vs original"): ("suite", _TABLE_4),
    ("P5", "long"): ("suite", _TABLE_4),
    ("P5", "short"): ("short", {}),
    ("P6", "at 8W"): ("suite", {"categories": TABLE_7_CATEGORIES, "lengths": (8,)}),
    ("P7", "10% synthetic"): ("suite", _TABLE_4),
    ("P7", "50% synthetic"): ("suite", _TABLE_4),
    ("P8", "per-document attention"): ("rows", {}),
}


def example_label(task: str, length: int, depth, example: int) -> str:
    """One evaluation example's label, the same for every model that answered the same prompt:
    task (or the category whose tasks' i-th examples it averages, :func:`suite_values`), length,
    depth (``-`` for a task without one) and its index in the cell."""
    where = "-" if depth is None or depth == "-" or depth != depth else f"{float(depth):g}"
    return f"{task}@{int(length)}@{where}#{int(example)}"


def suite_values(
    examples: pd.DataFrame, W: int, metric=JUDGE, categories=None, lengths=None, tasks=None
) -> pd.DataFrame:
    """The verdict engine's table (columns ``arm``, ``seed``, ``example``, ``value``) from
    :func:`arm_examples`' rows: each example's ``metric`` (None: its task's headline metric), in
    ``categories``, at ``lengths`` (multiples of ``W``) and of ``tasks`` when given; skipped cells
    left out. A category's tasks are averaged example by example (the i-th example of each at the
    same length and depth makes one value), so with the same number of examples in every task and
    length the mean over values is the macro-average over categories and lengths (Table 10's): a
    table where they differ is refused."""
    t = examples[examples.score.notna()]
    t = t[t.headline.astype(bool)] if metric is None else t[t.metric == metric]
    if categories is not None:
        t = t[t.category.isin(categories)]
    if lengths is not None:
        t = t[t.length.isin([k * W for k in lengths])]
    if tasks is not None:
        t = t[t.task.isin(tasks)]
    if t.empty:
        raise ValueError(
            f"no {metric or 'headline'} scores of {tasks} in {categories} at {lengths} x W"
        )
    counts = t.groupby(["arm", "seed", "task", "length"]).size()
    if counts.nunique() > 1:
        raise ValueError(
            "examples per task and length differ, so their mean is not the macro-average: "
            f"{counts.to_dict()} (n per cell must be a multiple of the number of depths)"
        )
    t = t.assign(depth=t.depth.astype(object).where(t.depth.notna(), "-"))
    t = t.groupby(
        ["arm", "seed", "category", "length", "depth", "example"], as_index=False, sort=False
    )["score"].mean()
    labels = [example_label(*k) for k in zip(t.category, t.length, t.depth, t.example, strict=True)]
    return pd.DataFrame(
        {"arm": t.arm.values, "seed": t.seed.values, "example": labels, "value": t.score.values}
    )


def nll_values(rows: pd.DataFrame, unit: str) -> pd.DataFrame:
    """The engine's table from :func:`short_docs` (``unit="doc"``) or :func:`long_windows`
    (``unit="window"``) rows: each document's or window's mean NLL per token."""
    return pd.DataFrame(
        {
            "arm": rows.arm.values,
            "seed": rows.seed.values,
            "example": rows[unit].astype(int).values,
            "value": rows.nll.values,
        }
    )


def timing_values(times: pd.DataFrame) -> pd.DataFrame:
    """The engine's table from :func:`row_times`: the log seconds of each packed row's pass per
    attention implementation (:data:`TIMED`'s arms), paired by row; one measurement (seed 0).
    A difference of logs is the log of the speed ratio."""
    t = times[times.impl.isin(list(TIMED))]
    return pd.DataFrame(
        {
            "arm": t.impl.map(TIMED).values,
            "seed": 0,
            "example": t.row.astype(int).values,
            "value": np.log(t.seconds.astype(float).values),
        }
    )


def part_results(
    claim_id: str, sources: dict, W: int, not_run: dict | None = None, gate: dict | None = None
) -> dict:
    """The results of ``claim_id``'s empirical parts for :meth:`lcx.scorecard.Scorecard.judge`:
    part name -> the engine's table, built from ``sources`` (``"suite"``: :func:`arm_examples`'
    rows of every arm; ``"short"``: :func:`short_docs`; ``"long"``: :func:`long_windows`, or the
    reason it has none; ``"rows"``: :func:`row_times`) as :data:`PART_DATA` says, or the reason
    the part was not run: its source or an arm is missing (``not_run``: arm -> why), or none of
    its tasks is in the suite's headline by the base model's ``gate``
    (:func:`lcx.pretrained.kept`: a suite part averages only the tasks the gate keeps)."""
    not_run = not_run or {}
    out = {}
    for part in claims.CLAIMS[claim_id].parts:
        if part.kind != "empirical":
            continue
        source, select = PART_DATA[claim_id, part.name]
        rows = sources.get(source, f"{source} not measured on this profile")
        if isinstance(rows, str):
            out[part.name] = rows
            continue
        if source == "rows":
            rows = timing_values(rows)
        missing = [a for a in part.arms if a not in set(rows.arm)]
        if source == "suite":
            cats = select["categories"] or CATEGORIES
            keep, dropped = pretrained.kept(
                gate, [t for t in SUITE if tasks.TASKS[t].category in cats]
            )
        if source == "suite" and not keep:  # whatever ran: the base decides it first
            out[part.name] = f"no task of {', '.join(cats)} passes the base's gate: {dropped}"
        elif missing:
            out[part.name] = "; ".join(
                f"{a}: {not_run.get(a, 'not run on this profile')}" for a in missing
            )
        elif source == "suite":
            out[part.name] = suite_values(rows, W, JUDGE, **select, tasks=keep)
        elif source == "rows":
            out[part.name] = rows
        else:
            out[part.name] = nll_values(rows, "doc" if source == "short" else "window")
    return out


def token_averaged_loss() -> tuple[bool, str]:
    """§A.3's loss rule as :mod:`lcx.train`'s trainer applies it: two micro-batches with 2 and 6
    answer tokens make a step whose loss is divided by 8, every answer token of the step (a mean
    of micro-batch means would weigh the 2 tokens three times as much). (holds, ours)."""

    def micro_batch(answers: int, length: int = 10) -> dict:
        labels = torch.full((1, length), row_builders.IGNORE)
        labels[0, -answers:] = 1
        return {"labels": labels, "loss_weights": torch.ones(1, length)}

    one_rank = SimpleNamespace(args=SimpleNamespace(world_size=1))
    weight = train.LcxTrainer._get_num_items_in_batch(
        one_rank, [micro_batch(2), micro_batch(6)], "cpu"
    )
    return (
        int(weight) == 8,
        f"a step of 2 + 6 answer tokens is divided by {int(weight)} (lcx.train's trainer)",
    )


def reordering(simulated: dict) -> tuple[bool, str]:
    """P8's simulation as an arithmetic check: (reordered beats random orders, ours)."""
    base, ordered = simulated["variable-length attention"], simulated["+ minibatch reordering"]
    return (
        bool(ordered > base),
        f"simulated on {DEVICES} ranks: {base:.0f} -> {ordered:.0f} tok/s/device "
        f"({ordered / base - 1:+.1%}) from the measured row times",
    )


def p9_report(examples: pd.DataFrame, W: int, judge: str = JUDGE) -> dict:
    """P9's checks of what the report covers, from the final model's :func:`arm_examples` rows:
    ``lengths``: scored at :data:`P9_LENGTHS`; ``categories``: every category of
    :data:`CATEGORIES` scored at every length. (holds, ours) each, ``ours`` the per-category
    macro-averages (mean over seeds)."""
    t = examples[examples.score.notna() & (examples.metric == judge)]
    scored = {int(n) // W for n in t.length.unique()}
    per_length = t.groupby("length").category.agg(set)
    every = all(set(CATEGORIES) <= cats for cats in per_length)
    m = per_seed(examples, judge=judge).mean(numeric_only=True)
    numbers = ", ".join(f"{c} {m[c]:.3f}" for c in CATEGORIES if c in m)
    return {
        "lengths": (
            scored == set(P9_LENGTHS),
            "scored at " + ", ".join(f"{k}W" for k in sorted(scored)),
        ),
        "categories": (
            bool(every) and len(per_length) == len(P9_LENGTHS),
            f"{numbers}; avg {m['avg']:.3f} (HELMET metric {m['HELMET avg']:.3f})",
        ),
    }


def not_run(profile: str, ran, missing, shares, skip=None) -> dict:
    """Why an arm of the registry has no results on ``profile`` (arm -> reason): an ablation
    skipped for want of its long data (``missing``) or not in the profile's set (``ran``), a
    synthetic share not in ``shares``, or an arm the plan skipped (``skip``, its reasons)."""
    reasons = dict(skip or {})
    for name in ABLATIONS:
        if name in reasons:
            continue
        if name in missing:
            reasons[name] = "its long data is not in this profile's corpus"
        elif name not in ran:
            reasons[name] = f"not among the {profile} profile's ablations"
    for part in claims.CLAIMS["P7"].parts:
        arm = part.arms[1]
        if arm not in {synthetic_arm(s) for s in shares} and arm not in reasons:
            reasons[arm] = f"this share is not run on the {profile} profile"
    return reasons


def p6_table(examples: pd.DataFrame, W: int) -> pd.DataFrame:
    """Table 7 beside ours: Table 7's categories at 8W after SFT, per arm (mean over seeds and
    examples), read with :data:`JUDGE` and with HELMET's metrics."""
    select = {"categories": TABLE_7_CATEGORIES, "lengths": (8,)}
    t = examples[examples.arm.isin([CONTINUE, SWITCH])]
    if t.empty:  # stage 2 not run (the plan): the paper's column alone
        ours = {}
    else:
        ours = {
            column: suite_values(t, W, metric, **select).groupby("arm", sort=False).value.mean()
            for column, metric in [
                ("answer accuracy at 8W", JUDGE),
                ("HELMET metric at 8W", None),
            ]
        }
    table = pd.DataFrame(ours, index=[CONTINUE, SWITCH] if t.empty else None)
    paper = dict(zip([CONTINUE, SWITCH], TABLE_7.values(), strict=True))
    table["paper (Recall/RAG/Re-rank/ICL at 64K)"] = pd.Series(paper)
    return table
