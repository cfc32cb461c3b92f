"""ProLong (Gao et al., 2024, "How to Train Long-Context Language Models (Effectively)"): continued
training on code repositories and books mixed with short data (§3, Table 4, Fig. 1/3), RoPE base
tuning (Table 18), document masking (Table 20), a second stage longer than the evaluation length
(Table 7), short-only SFT (Table 8), the training-efficiency tricks of App. B (Table 15) and
HELMET's categories (Table 10); with the paper's numbers the chapter sets its results beside.

Lengths are in units of the base model's native window ``W`` (the paper's 8K), so 64K is ``8 * W``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from . import bench, budget, data, evaluate, models, rope, train
from . import rows as row_builders
from .profiles import pick

LONG = {"code": 1.0, "books": 1.0}  # paper: code repositories and books, 1:1 (Table 4)
SHORT = {"short": 1.0}  # paper: ShortMix (FineWeb, Wikipedia, StackExchange, ...); ours: short text
SUITE = ["json_kv", "multidoc_qa", "rerank", "icl", "doc_qa", "summary"]  # HELMET's categories
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
TINY_ABLATIONS = ("ProLong recipe", "long 100%", "no document masking")  # every code path
LONG_SHARES = {"long 40%": 0.4, "ProLong recipe": 0.6, "long 80%": 0.8, "long 100%": 1.0}
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


def recipes(profile: str, W: int, L: int, L2: int, gpus: int = 1):
    """(stage 1, stage 2, SFT) recipes (§3, Table 9): stage 1 at ``L``, stage 2 at ``L2``, SFT at
    ``L``. On gpu every run uses all ``gpus`` (FSDP2 sharding; stage 2 with Ulysses)."""
    sharded = pick(profile, tiny=None, cpu=None, gpu={"processes": gpus, "fsdp": True})
    ulysses = pick(profile, tiny=None, cpu=None, gpu={"processes": gpus, "sp_size": gpus})
    stage1 = train.Recipe(
        seq_len=L,  # paper: 65,536
        tokens=pick(profile, tiny=L * 2 * 3, cpu=100_000, gpu=5_000_000_000),  # paper: 5B
        batch_tokens=pick(profile, tiny=2 * L, cpu=2 * L, gpu=4_000_000),  # paper: 4M
        lr=pick(profile, tiny=1e-3, cpu=1e-3, gpu=1e-5),  # paper: 1e-5
        warmup=0.1,  # paper: 10%
        min_lr_ratio=0.1,  # paper: cosine to 1e-6
        betas=(0.9, 0.95),  # paper: (0.9, 0.95)
        weight_decay=0.1,  # paper: 0.1
        document_masking=True,  # paper: on
        bf16=profile != "tiny",
        save_every=50,
        micro_rows=pick(profile, tiny=None, cpu=None, gpu=1),  # token-averaged accumulation
        parallel=sharded,
    )
    stage2 = dataclasses.replace(
        stage1,
        parallel=ulysses,
        seq_len=L2,  # paper: 524,288
        tokens=pick(profile, tiny=L2 * 2 * 2, cpu=64_000, gpu=4_000_000_000),  # paper: +4B
        batch_tokens=pick(profile, tiny=2 * L2, cpu=2 * L2, gpu=8_000_000),  # paper: 8M
    )
    sft = train.Recipe(
        seq_len=L,
        tokens=pick(profile, tiny=L * 2 * 2, cpu=L * 2 * 8, gpu=1_000_000_000),  # paper: 1B
        batch_tokens=pick(profile, tiny=2 * L, cpu=2 * L, gpu=4_000_000),  # paper: 4M
        lr=pick(profile, tiny=5e-4, cpu=5e-4, gpu=2e-5),  # paper: 2e-5, cosine to 2e-6
        warmup=0.05,  # paper: 5%
        min_lr_ratio=0.1,
        betas=(0.9, 0.95),
        weight_decay=0.1,
        document_masking=True,
        bf16=profile != "tiny",
        save_every=50,
        micro_rows=pick(profile, tiny=None, cpu=None, gpu=1),
        parallel=sharded,
    )
    return stage1, stage2, sft


def long_documents(tokens, L: int) -> pd.DataFrame:
    """Table 3's question for our corpus: which sources have training documents of ``L`` tokens."""
    lengths = pd.DataFrame(
        {"domain": tokens["train"]["domain"], "tokens": map(len, tokens["train"]["input_ids"])}
    )
    return (
        lengths.assign(
            long=lengths.tokens >= L, long_tokens=lengths.tokens.where(lengths.tokens >= L, 0)
        )
        .groupby("domain")[["long", "long_tokens"]]
        .sum()
        .rename(columns={"long": "documents >= 8W", "long_tokens": "tokens in them"})
    )


def ablations(profile: str, domains) -> tuple[dict, list]:
    """(the ablations this profile runs, those skipped for want of their long data)."""
    chosen = {k: v for k, v in ABLATIONS.items() if profile != "tiny" or k in TINY_ABLATIONS}
    missing = sorted(k for k, v in chosen.items() if not set(v.get("long_mix", LONG)) & domains)
    return {k: v for k, v in chosen.items() if k not in missing}, missing


def run_name(name: str, profile: str) -> str:
    return f"prolong-{name.lower().replace(' ', '-').replace('%', '').replace('=', '')}-{profile}"


_DOCS: dict[str, dict] = {}


def training_documents(tokens) -> dict:
    """The training split's documents as plain lists (ids and domain), read once per corpus:
    every run's rows are drawn from them."""
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
    rows = row_builders.long_short_rows(
        training_documents(ch.tokens),
        rec,
        s["long_share"],
        rec.steps * rec.rows_per_step,
        ch.tokenizer.bos_token_id,
        s["long_mix"],
        SHORT,
        ch.tokenizer,
    )
    model = models.with_rope(start, "default", base=base)
    return train.run(
        model, None, ch.tokenizer, rec, inputs=inputs, name=run_name(name, ch.profile), rows=rows
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
    parts = {
        "short chat": (1 - synthetic, lambda k: short_chat(ch, k, seed, task_names)),
        "synthetic long": (
            synthetic,
            lambda k: row_builders.synthetic_long_rows(
                ch.tokenizer, k, L, seed, pool, (2 * W, L - 1)
            ),
        ),
    }
    rows = row_builders.mix_rows(parts, sft.steps * sft.rows_per_step, seed)
    return train.fine_tune(
        run, ch.tokenizer, dataclasses.replace(sft, seed=seed), f"prolong-sft-{ch.profile}", rows
    )


def suite_scores(ch, run, lengths, n: int, depths=(0.5,), metric=None) -> pd.DataFrame:
    """HELMET's categories x ``lengths`` (each category the mean of its tasks) of ``run`` on
    :data:`SUITE`; ``metric`` None reads each task's headline metric."""
    t = evaluate.suite(evaluate.Ref.of(run), ch.tokenizer, ch.tokens, SUITE, lengths, n, depths)
    return evaluate.category_means(t, metric)


def macro(by_length: pd.DataFrame) -> pd.Series:
    """Each category's mean over lengths, and their average (Table 10's macro-average)."""
    cats = by_length.mean(axis=1)
    return pd.Series({**cats.to_dict(), "avg": float(cats.mean())})


def long_ppl(ch, run, n: int) -> float:
    """Perplexity of the second half of ``8 * W`` held-out windows from long code and books
    (Fig. 1's long-data perplexity); NaN when no held-out document is that long."""
    L = 8 * ch.W
    try:
        evaluate.windows(ch.tokens["test"], L, n, ch.tokenizer.bos_token_id, domains=list(LONG))
    except ValueError:  # no held-out long document (the tiny corpus)
        return np.nan
    nll = evaluate.nll(evaluate.Ref.of(run), ch.tokenizer, ch.tokens, L, n, 0, 4, list(LONG))
    return float(np.exp(nll[:, L // 2 :].mean()))


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


def row_times(ch, rows, repeats: int, bf16: bool) -> pd.DataFrame:
    """Seconds per packed row by attention implementation (:func:`lcx.bench.packed_row_times`,
    App. B / Table 15's measurement) on the base model's config, measured once per cache."""
    params = {"rows": row_builders.rows_key(rows), "repeats": repeats, "bf16": bf16}
    return evaluate.memo(
        "packed-row-times",
        params,
        [ch.base_ref.key],
        lambda: bench.packed_row_times(ch.base_net.config, rows, repeats=repeats, bf16=bf16),
    )
