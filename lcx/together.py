"""Together's LLaMA-2-7B-32K (the blog post "Preparing for the era of 32K context", 2023): linear
Position Interpolation x8 and two phases of continued pretraining on a data recipe ("Extending
LLaMA-2 to 32K context"), task fine-tunes for multi-document QA and BookSum ("Building long-context
applications via fine-tuning"), and the post's numbers the chapter sets its results beside.

Lengths are in units of the base model's native window ``W`` (the paper's 4K), so the paper's 32K
is ``8 * W`` (the scaling rule, :data:`lcx.claims.SCALING`).

The claims T1-T6 and what counts as reproducing them live in :data:`lcx.claims.CLAIMS`; this module
builds the results tables the verdict engine (:mod:`lcx.verdicts`) reads, one row per arm, seed and
evaluation example, with the arms named as the registry names them (:data:`ARMS`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import torch

from . import bench, evaluate, models, train, verdicts
from . import rows as row_builders
from .claims import CLAIMS
from .profiles import pick

FACTOR = 8  # linear PI factor: 4K -> 32K

# The post's numbers, by the chapter's lengths. "Extending LLaMA-2 to 32K context", the
# perplexity-per-byte table:
PPL_PER_BYTE = [1.768, 1.758, 1.750, 1.746, 1.742]  # LLaMA-2-7B-32K on PG-19, 2K..32K
PPL_PER_BYTE_BASE = [1.759, 1.747, np.nan, np.nan, np.nan]  # LLaMA-2: none past 4K
# "Building long-context applications via fine-tuning", the multi-document QA and BookSum tables:
QA_TOKENS = [2.9, 4.4, 7.4, 14.8]  # thousands of tokens: 20, 30, 50 and 100 documents
QA_DOCUMENTS = 20  # at the shortest length
QA_ACCURACY = {  # multi-document QA accuracy at those lengths
    "paper: LLaMA-2": [0.245, 0.238, 0.215, 0.193],
    "paper: 32K": [0.315, 0.293, 0.246, 0.223],
    "paper: 32K fine-tuned": [0.466, 0.453, 0.427, 0.372],
}
BOOKSUM_TOKENS = 4.5  # thousands: BookSum's test inputs on average
ROUGE = pd.DataFrame(
    {
        "rouge1": [0.063, 0.179, 0.355],
        "rouge2": [0.008, 0.032, 0.072],
        "rougeL": [0.042, 0.114, 0.175],
    },
    index=["paper: LLaMA-2 (truncated)", "paper: 32K", "paper: 32K fine-tuned"],
)
HYPERPARAMETERS = {  # what the post states; learning rate and batch are OpenChatKit defaults
    "seq_len": "32,768",
    "tokens": "1.5B (both phases)",
    "batch_tokens": "not stated",
    "lr": "not stated",
    "mixture": "25% Book, 25% ArXiv, 25% other RedPajama",
    "formats": "25% UL2 Oscar (phase 1); 20% NI + 20% P3 (phase 2)",
    "min_doc_tokens": "2,048 (phase 1)",
    "pack_formats": "yes (phase 2)",
}
INSTRUCTION_TASKS = ["needle", "multidoc_qa", "doc_qa", "json_kv"]  # Natural Instructions stand-in
PROMPTED_TASKS = ["first_sentence", "summary", "icl", "topic"]  # P3 stand-in
FINETUNE_TASKS = ("multidoc_qa_k", "booksum")
# The recipe's shares as the post states them (T3): 25% UL2 Oscar in phase 1, 20% NI + 20% P3 in
# phase 2, and phase 1's length filter, 2K of 32K.
RECIPE_SHARES = {"phase 1 fill-in share": 0.25, "phase 2 task share": 0.40}
MIN_DOC_FRACTION = 2048 / 32768

# The arms of the results tables, as lcx.claims names them (T1's arms are lengths, "8W" and "W";
# T4's "falls with k" compares the fine-tuned model's "largest k" with its "smallest k").
PI, FINE_TUNED, BASE, CONTROL = (
    "PI + training",
    "PI fine-tuned",
    "base (truncated to W)",
    "continued at W",
)
ARMS = (PI, FINE_TUNED, BASE, CONTROL)
BASE_FULL, PI_UNTRAINED = "base", "PI, no training"  # T1's other models (whole inputs)
ROUGE_PARTS = {"ROUGE-1": "rouge1", "ROUGE-2": "rouge2", "ROUGE-L": "rougeL"}  # T5: part -> metric
SYSTEMS_IMPLS = ("eager", "sdpa")  # T6: the unfused baseline and the fused kernel on every device


def lengths(W: int) -> list[int]:
    """The perplexity table's lengths: the paper's 2K..32K."""
    return [W // 2, W, 2 * W, 4 * W, 8 * W]


def qa_lengths(W: int) -> list[int]:
    """Multi-document QA input lengths: the paper's average lengths at 20..100 documents / 4K."""
    return [round(k / 4.096 * W) for k in QA_TOKENS]


def summary_length(W: int) -> int:
    return round(BOOKSUM_TOKENS / 4.096 * W)


def recipes(profile: str, W: int) -> tuple[train.Recipe, train.Recipe, dict]:
    """(phase 1, phase 2, fine-tune settings) of the extension to ``8 * W`` ("Extending LLaMA-2
    to 32K context": the data recipe).

    Phase 1 (the post's "first phase of continued pre-training"): 25% each of books, papers and other text, 25%
    UL2-Oscar fill-in-the-missing-chunk data, sequences shorter than 2K of 32K dropped. Phase 2:
    instruction (Natural Instructions) and prompted (P3) data, 20% each, packed as many examples
    to a row as fit, with generic text, books and papers. ``tiny`` trains in fp32."""
    L, bf16 = 8 * W, profile != "tiny"
    phase1 = train.Recipe(
        seq_len=L,  # paper: 32,768
        tokens=pick(profile, tiny=L * 2 * 4, cpu=600_000, gpu=1_000_000_000),  # paper: 1.5B in all
        batch_tokens=pick(profile, tiny=L * 2, cpu=2 * L, gpu=64 * L),
        lr=pick(profile, tiny=1e-3, cpu=1e-3, gpu=2e-5),
        warmup=0.05,
        min_lr_ratio=0.1,
        mixture={"books": 1.0, "prose": 1.0, "code": 1.0},  # paper: RedPajama Book / ArXiv / other
        formats={"missing_chunk": 0.25},  # paper: 25% UL2 Oscar (fill in missing chunks)
        min_doc_tokens=L // 16,  # paper: drop sequences shorter than 2K of 32K
        document_masking=False,
        bf16=bf16,
        save_every=50,
        **train.gpu_layout(profile),
    )
    phase2 = train.Recipe(
        seq_len=L,
        tokens=pick(profile, tiny=L * 2 * 2, cpu=300_000, gpu=500_000_000),
        batch_tokens=phase1.batch_tokens,
        lr=phase1.lr / 2,
        warmup=0.05,
        min_lr_ratio=0.1,
        mixture={"short": 1.0, "books": 1.0, "prose": 1.0},  # paper: 20% Pile, 20% Book, 20% ArXiv
        formats={
            **{t: 0.2 / len(INSTRUCTION_TASKS) for t in INSTRUCTION_TASKS},
            **{t: 0.2 / len(PROMPTED_TASKS) for t in PROMPTED_TASKS},
        },
        pack_formats=True,  # paper: as many in-context examples as fit into one 32K sequence
        document_masking=False,
        bf16=bf16,
        save_every=50,
        **train.gpu_layout(profile),
    )
    finetune = dict(
        tokens=pick(profile, tiny=L * 2 * 2, cpu=200_000, gpu=50_000_000),
        batch_tokens=phase1.batch_tokens,
        lr=phase1.lr / 2,
        **train.gpu_layout(profile),
    )
    return train.rehearsed(phase1), train.rehearsed(phase2), finetune


SKIPPABLE = {  # what the plan can leave out of the chapter (skipped), in words
    "control": "the control runs at W (T2)",
    "qa": "T4's fine-tune on multi-document QA and its evaluation",
}


def skipped(plan) -> dict:
    """What the runs' plan (:func:`lcx.plan.skipped`) leaves out of this chapter: ``"control"``
    (T2's control runs, when only out-of-reach parts use its arm) and ``"qa"`` (T4's fine-tune on
    multi-document QA and T4's evaluation, when every arm of T4 is used only by out-of-reach
    parts), each -> the reason. Without a plan, nothing."""
    from . import plan as plans

    out = {}
    t2 = plans.skipped(plan, ["T2"])
    if CONTROL in t2:
        out["control"] = t2[CONTROL]
    t4 = plans.skipped(plan, ["T4"])
    if all(arm in t4 for part in CLAIMS["T4"].parts for arm in part.arms):
        out["qa"] = t4[FINE_TUNED]
    return out


def extend(ch, phase1, phase2, finetune, seed: int, tasks=FINETUNE_TASKS) -> dict:
    """One seed's runs (folders): PI x8 on the base model, phase 1, phase 2 ("Extending LLaMA-2
    to 32K context"), then phase 2 fine-tuned on each of ``tasks`` (of :data:`FINETUNE_TASKS`;
    "Building long-context applications via fine-tuning"; loss on the answers, training
    documents)."""
    L, profile, tokens, tokenizer = 8 * ch.W, ch.profile, ch.tokens, ch.tokenizer
    r1 = train.run(
        models.with_rope(ch.base_net, method="linear", factor=FACTOR),
        tokens,
        tokenizer,
        dataclasses.replace(phase1, seed=seed),
        inputs=[tokens.key, tokenizer.key, ch.base_ref.key],
        name=f"together-phase1-{profile}",
    )
    r2 = train.run(
        train.load_run(r1),
        tokens,
        tokenizer,
        dataclasses.replace(phase2, seed=seed),
        inputs=[tokens.key, tokenizer.key, r1.name],
        name=f"together-phase2-{profile}",
    )
    pool = evaluate.pool(tokenizer, tokens, "train")
    runs = {"phase1": r1, "phase2": r2}
    for task in tasks:
        rec = finetune_recipe(finetune, phase1, L, seed)
        n = rec.steps * rec.rows_per_step
        spec = [tokens.key, tokenizer.key, task, seed]
        make = row_builders.iter_task_sft_rows
        rows = row_builders.Stream(n, L, spec, make, task, tokenizer, n, L, seed, pool)
        rows = rows if rec.stream_rows else list(rows)  # paper scale: made as they are read
        runs[task] = train.fine_tune(r2, tokenizer, rec, f"together-ft-{task}-{profile}", rows)
    return runs


def finetune_recipe(finetune: dict, phase1: train.Recipe, L: int, seed: int = 0) -> train.Recipe:
    """A task fine-tune's recipe at ``L`` from :func:`recipes`' fine-tune settings."""
    return train.rehearsed(
        train.Recipe(
            seq_len=L,
            **finetune,
            warmup=0.05,
            min_lr_ratio=0.1,
            bf16=phase1.bf16,
            seed=seed,
            save_every=50,
        )
    )


def gpu_recipes(profile: str, W: int) -> list[train.Recipe]:
    """Every recipe chapter 03 trains at ``8 * W`` (the phases and a task fine-tune), as it builds
    them: what :func:`lcx.chapter.setup` checks against the GPU's memory first."""
    phase1, phase2, finetune = recipes(profile, W)
    return [phase1, phase2, finetune_recipe(finetune, phase1, phase1.seq_len)]


def composition(recipe: train.Recipe, tokens, tokenizer, n: int = 400) -> dict:
    """What ``n`` rows built by ``recipe`` hold (T3, the data recipe as built): the share of rows with
    a task or fill-in example (loss weight > 1) and the documents started per such row."""
    rows = row_builders.packed_rows(tokens["train"], recipe, tokenizer.bos_token_id, n, tokenizer)
    with_task = [bool((r["loss_weights"] > 1).any()) for r in rows]
    starts = [int((r["input_ids"] == tokenizer.bos_token_id).sum()) for r in rows]
    return {
        "task_share": float(np.mean(with_task)),
        "examples_per_task_row": float(
            np.mean([s for s, t in zip(starts, with_task, strict=True) if t])
        ),
    }


def short_documents(tokens, min_tokens: int) -> int:
    """Training documents (not the short-text domain) the length filter drops."""
    split = tokens["train"]
    return sum(
        len(ids) < min_tokens
        for ids, d in zip(split["input_ids"], split["domain"], strict=True)
        if d != "short"
    )


def documents_by_domain(tokens, min_tokens: int) -> dict[str, int]:
    """Training documents per domain at least ``min_tokens`` long: what phase 1's mixture can draw
    from after its length filter (T3; :func:`lcx.rows.packed_rows` leaves a domain without any
    out of the mixture)."""
    split = tokens["train"]
    counts: dict[str, int] = {}
    for ids, d in zip(split["input_ids"], split["domain"], strict=True):
        counts[d] = counts.get(d, 0) + (len(ids) >= min_tokens)
    return counts


def recipe_checks(phase1, phase2, tokens, tokenizer, n: int = 400) -> dict:
    """T3's recipe parts (:data:`lcx.claims.CLAIMS`), each ``(holds, ours)``, from the recipes and
    ``n`` rows each builds (:func:`composition`); a share holds within the part's margin of the
    post's (:data:`RECIPE_SHARES`). "Extending LLaMA-2 to 32K context", the data recipe."""
    parts = {p.name: p for p in CLAIMS["T3"].parts}
    L = phase1.seq_len
    rows1 = composition(phase1, tokens, tokenizer, n)
    rows2 = composition(phase2, tokens, tokenizer, n)
    docs = documents_by_domain(tokens, phase1.min_doc_tokens)
    weights = set(phase1.mixture.values())
    mixture = ", ".join(f"{d} {docs.get(d, 0)}" for d in phase1.mixture)
    checks = {
        "phase 1 mixture": (
            set(phase1.mixture) == {"books", "prose", "code"}
            and len(weights) == 1
            and all(docs.get(d, 0) > 0 for d in phase1.mixture),
            f"weights {':'.join(f'{w:g}' for w in phase1.mixture.values())}; training documents "
            f"of >= {phase1.min_doc_tokens} tokens: {mixture}",
        ),
        "length filter": (
            phase1.min_doc_tokens == round(MIN_DOC_FRACTION * L),
            f"drops documents under {phase1.min_doc_tokens} of {L} tokens: "
            f"{short_documents(tokens, phase1.min_doc_tokens)} training documents",
        ),
        "phase 2 packing": (
            rows2["examples_per_task_row"] > 1,
            f"{rows2['examples_per_task_row']:.1f} examples per task row",
        ),
    }
    for name, share in (
        ("phase 1 fill-in share", rows1["task_share"]),
        ("phase 2 task share", rows2["task_share"]),
    ):
        paper, margin = RECIPE_SHARES[name], parts[name].margin
        checks[name] = (
            abs(share - paper) <= margin,
            f"{share:.3f} of {n} rows (paper {paper:g} +- {margin:g})",
        )
    return {name: checks[name] for name in parts}


def control(ch, phase1, phase2, seed: int) -> dict:
    """The control for "short quality is kept" (T2; issue 18): the base model, RoPE unchanged,
    continued at its native window ``W`` on the same tokens, in the same number of steps and with
    the same learning-rate schedules as :func:`extend`'s two phases (their rows, seed ``seed``,
    cut into ``W``-token rows by :func:`lcx.rows.at_window`). Against it, a change in short-context quality
    is the effect of training long, not of training more. Returns ``{"control1", "control2"}``."""
    W, tokenizer = ch.W, ch.tokenizer
    runs, start, key = {}, ch.base_ref.load(), ch.base_ref.key
    for phase, recipe in (("control1", phase1), ("control2", phase2)):
        long = dataclasses.replace(recipe, seed=seed)
        n, bos = long.steps * long.rows_per_step, tokenizer.bos_token_id
        rows = row_builders.RowStream(ch.tokens["train"], long, bos, n, tokenizer)
        rows = rows if long.stream_rows else list(rows)  # paper scale: ~1e9 tokens
        native = dataclasses.replace(long, seq_len=W)  # same tokens and batch tokens: same steps
        run = train.run(
            start,
            None,
            tokenizer,
            native,
            inputs=[ch.tokens.key, tokenizer.key, key],
            name=f"together-{phase}-{ch.profile}",
            rows=row_builders.at_window(rows, W),
        )
        runs[phase] = run
        start, key = train.load_run(run), run.name
    return runs


# --- results tables for the verdict engine (lcx.verdicts) ----------------------------------------


def _nats_per_byte(windows: pd.DataFrame, length: int) -> pd.Series:
    rows = windows[windows["length"] == length]
    if rows.empty:
        raise ValueError(f"no windows at length {length}; lengths {sorted(set(windows['length']))}")
    return rows.set_index("window")["nats_per_byte"]


def by_length(windows: dict, lengths: dict) -> pd.DataFrame:
    """T1's results table for one model: ``windows`` maps a seed to its
    :func:`lcx.evaluate.perplexity_windows` rows (one per length and window), ``lengths`` an arm
    to its length (``{"8W": 8 * W, "W": W}``). Each row is a window's nats per byte; scored with
    ``scored=``, a window index is the same text at every length, so the lengths pair by window."""
    return verdicts.table(
        {
            (arm, seed): _nats_per_byte(frame, n)
            for arm, n in lengths.items()
            for seed, frame in windows.items()
        }
    )


def at_length(windows: dict, length: int) -> pd.DataFrame:
    """T2's results table: ``windows`` maps (arm, seed) to a model's
    :func:`lcx.evaluate.perplexity_windows` rows; each row is a window's nats per byte at
    ``length`` (a window index is the same text for every model, so the arms pair by window)."""
    return verdicts.table({key: _nats_per_byte(frame, length) for key, frame in windows.items()})


def perplexity_results(windows: dict, W: int, no_control: str = "the control was not run") -> dict:
    """T1's and T2's parts from per-window perplexity (``windows``: (arm, seed) -> rows, as
    :func:`perplexity_models` names them): the PI-trained model and the base at ``8W`` against
    ``W``, and the PI-trained model against the control at ``W/2`` (the post's 2K; without a
    control, T2's part is ``no_control``, the reason)."""
    lengths = {"8W": FACTOR * W, "W": W}
    of = lambda arm: {s: f for (a, s), f in windows.items() if a == arm}  # noqa: E731
    base = {0 if s is None else s: f for s, f in of(BASE_FULL).items()}
    short = {k: f for k, f in windows.items() if k[0] in (PI, CONTROL)}
    return {
        "T1": {
            "PI model falls": by_length(of(PI), lengths),
            "base rises": by_length(base, lengths),
        },
        "T2": {
            "kept vs control": at_length(short, W // 2)
            if any(arm == CONTROL for arm, _ in short)
            else no_control
        },
    }


def perplexity_models(ch, runs: dict, controls: dict) -> dict:
    """The models of the perplexity table (T1, T2): (arm, seed) -> model, for the base model and PI
    without training (seed None: one model) and per seed the PI model after phase 2 and the
    control (:func:`control`)."""
    out = {
        (BASE_FULL, None): ch.base_ref,
        (PI_UNTRAINED, None): evaluate.Ref.of(ch.base_ref.source, method="linear", factor=FACTOR),
    }
    for seed, r in runs.items():
        out[PI, seed] = evaluate.Ref.of(r["phase2"])
    for seed, r in controls.items():
        out[CONTROL, seed] = evaluate.Ref.of(r["control2"])
    return out


def examples(results: dict, metric: str, where=None) -> pd.DataFrame:
    """A results table of per-example scores: ``results`` maps (arm, seed) to
    :func:`lcx.evaluate.suite_examples` rows; the value is the example's ``metric`` score, its label
    ``length/depth/index`` (the same label: the same prompt for every model). An arm whose seed is
    None is one model every seed shares (the base model each seed's run started from): its rows
    count for each seed of the other arms. ``where``: a row filter (e.g. one length)."""
    seeds = sorted({s for _, s in results if s is not None}) or [0]
    values = {}
    for (arm, seed), rows in results.items():
        rows = rows[rows["metric"] == metric]
        if where is not None:
            rows = rows[where(rows)]
        labels = [
            f"{n}/{d}/{i}"  # a task without depths has None (not a missing value: pandas 3's str)
            for n, d, i in zip(rows["length"], rows["depth"], rows["example"], strict=True)
        ]
        series = pd.Series(rows["score"].to_numpy(), index=labels)
        for s in seeds if seed is None else [seed]:
            values[arm, s] = series
    return verdicts.table(values)


def qa_results(qa: dict) -> dict:
    """T4's parts from per-example multi-document QA (``qa``: (arm, seed) -> rows of
    :func:`qa`): PI against the truncated base, the fine-tune against PI, and the fine-tuned model
    at its largest against its smallest ``k`` (the longest and shortest input with examples:
    different questions, so those arms are not paired)."""
    metric = "subem"
    both = lambda arms: {k: v for k, v in qa.items() if k[0] in arms}  # noqa: E731
    tuned = both([FINE_TUNED])
    lengths = sorted(
        set.intersection(*(set(r.loc[r.metric == metric, "length"]) for r in tuned.values()))
    )
    if len(lengths) < 2:
        falls = f"examples at {len(lengths)} input length(s): k cannot vary"
    else:
        table = examples(tuned, metric, lambda r: r["length"].isin([lengths[0], lengths[-1]]))
        longest = table["example"].str.startswith(f"{lengths[-1]}/")
        table["arm"] = np.where(longest, "largest k", "smallest k")
        falls = table
    return {
        "PI beats truncated base": examples(both([PI, BASE]), metric),
        "fine-tuning lifts": examples(both([FINE_TUNED, PI]), metric),
        "falls with k": falls,
    }


def summary_results(summ: dict) -> dict:
    """T5's parts: the fine-tuned model against the truncated base on each ROUGE of
    :func:`summaries`' examples (``summ``: (arm, seed) -> rows)."""
    pair = {k: v for k, v in summ.items() if k[0] in (FINE_TUNED, BASE)}
    return {part: examples(pair, metric) for part, metric in ROUGE_PARTS.items()}


def systems_repeats(size: str, W: int, n: int, steps: int) -> pd.DataFrame:
    """T6's repeated measurement at ``8W``: ``n`` times eager then SDPA attention, each a few
    training steps measured in a fresh process (:func:`lcx.bench.attention_step`), so each pair
    is measured back to back and a change in the machine's load reaches both arms of a pair. One
    row per repeat and implementation: ``repeat``, ``impl``, ``tokens_per_s``, ``peak_mb`` and
    ``oom`` (the post's "OOM": the values NaN). The post's FlashAttention-2 section compares the
    kernels at each context length."""
    from tqdm.auto import tqdm

    rows = []
    cells = [(i, impl) for i in range(n) for impl in SYSTEMS_IMPLS]
    for i, impl in tqdm(cells, desc=f"attention at {FACTOR}W, {n} repeats", leave=False):
        try:
            result, oom = bench.attention_step(size, FACTOR * W, impl, steps=steps), False
        except (torch.OutOfMemoryError, MemoryError):
            result, oom = {}, True
        rows.append(
            {
                "repeat": i,
                "impl": impl,
                "tokens_per_s": result.get("tokens_per_s", np.nan),
                "peak_mb": result.get("peak_mb", np.nan),
                "oom": oom,
            }
        )
    return pd.DataFrame(rows)


def systems_results(repeats: pd.DataFrame) -> dict:
    """T6's parts from :func:`systems_repeats`: the natural log of each process's peak memory growth
    and of its tokens per second (so a difference is a log ratio), one seed, the repeats as
    examples paired by repeat (a repeat where either arm has no usable measurement, out of memory
    or a peak that did not grow, is left out). A part without any pair gets the reason instead."""
    out = {}
    for part, column in (("memory", "peak_mb"), ("throughput", "tokens_per_s")):
        ok = repeats[
            repeats["impl"].isin(SYSTEMS_IMPLS)
            & ~repeats["oom"].astype(bool)
            & (repeats[column] > 0)
        ]
        pairs = ok.groupby("repeat")["impl"].nunique()  # repeats with both: the pairs
        ok = ok[ok["repeat"].isin(pairs.index[pairs == len(SYSTEMS_IMPLS)])]
        missing = [i for i in SYSTEMS_IMPLS if i not in set(ok["impl"])]
        if missing:
            out[part] = f"no usable {column} for {missing} at 8W (out of memory or no growth)"
            continue
        out[part] = verdicts.table(
            {(impl, 0): np.log(g.set_index("repeat")[column]) for impl, g in ok.groupby("impl")}
        )
    return out


# --- the post's comparisons on the fine-tuning tasks ----------------------------------------------


def contenders(ch, runs: dict, finetune: str) -> dict:
    """The post's comparison on a fine-tuning task: (arm, seed) -> (model, truncate to W?) for the
    base model truncated to its window (seed None: every seed's run starts from it), and per seed
    the PI model after phase 2 and its fine-tune on ``finetune`` (a key of :func:`extend`'s
    runs)."""
    models_ = {(BASE, None): (ch.base_ref, True)}
    for seed, r in runs.items():
        models_[PI, seed] = (evaluate.Ref.of(r["phase2"]), False)
        models_[FINE_TUNED, seed] = (evaluate.Ref.of(r[finetune]), False)
    return models_


def label(arm: str, seed) -> str:
    """A model's column name in the chapter's tables: its arm, and its seed if it has one."""
    return arm if seed is None else f"{arm} (seed {seed})"


def means(results: dict, by, metric: str | None = None) -> pd.DataFrame:
    """Mean score per ``by`` (e.g. ``"length"``, ``"depth"``) of each model's per-example rows
    (``results``: (arm, seed) -> rows), one column per model (:func:`label`): its headline
    metric, or ``metric``."""
    columns = {}
    for (arm, seed), rows in results.items():
        keep = rows["headline"] if metric is None else rows["metric"] == metric
        columns[label(arm, seed)] = rows[keep.astype(bool)].groupby(by)["score"].mean()
    return pd.DataFrame(columns)


def qa_summary(qa: dict, W: int) -> pd.DataFrame:
    """Accuracy by input length as the post's table: the truncated base, PI and PI fine-tuned
    (means over seeds and examples), beside the post's numbers."""
    acc = {
        arm: pd.concat([r[r.metric == "subem"] for (a, _), r in qa.items() if a == arm])
        .groupby("length")["score"]
        .mean()
        for arm in (BASE, PI, FINE_TUNED)
    }
    table = pd.DataFrame(acc).reindex(qa_lengths(W))  # NaN: a length too short for the task
    for name, values in QA_ACCURACY.items():
        table[name] = values
    table.index = [f"{n} tokens ({n / W:.1f}W)" for n in table.index]
    return table


def rouge_table(summ: dict) -> pd.DataFrame:
    """Mean ROUGE-1/2/L per model (``summ``: (arm, seed) -> :func:`summaries` rows), one row per
    model (:func:`label`), as the post's BookSum table."""
    return pd.DataFrame(
        {
            label(arm, seed): rows[rows.metric.isin(ROUGE_PARTS.values())]
            .groupby("metric")["score"]
            .mean()
            for (arm, seed), rows in summ.items()
        }
    ).T[list(ROUGE_PARTS.values())]


def not_run(claim: str, reason: str) -> dict:
    """Every part of ``claim`` with the reason it was not run here (e.g. a switched-off step)."""
    return {p.name: reason for p in CLAIMS[claim].parts}


def qa(ch, ref: evaluate.Ref, n: int, depths, truncate: bool = False) -> pd.DataFrame:
    """Multi-document QA (one gold document among distractors) at :func:`qa_lengths`, one row per
    example and metric; the base model is truncated to its window as the post truncates LLaMA-2
    (``truncate``). "Building long-context applications via fine-tuning", multi-document question
    answering."""
    return evaluate.suite_examples(
        ref,
        ch.tokenizer,
        ch.tokens,
        ["multidoc_qa_k"],
        qa_lengths(ch.W),
        n,
        depths,
        max_prompt=ch.W if truncate else None,
    )


def summaries(ch, ref: evaluate.Ref, n: int, truncate: bool = False) -> pd.DataFrame:
    """BookSum-format summarization of :func:`summary_length` inputs (ROUGE on title lines), one
    row per example and metric. "Building long-context applications via fine-tuning", book
    summarization."""
    return evaluate.suite_examples(
        ref,
        ch.tokenizer,
        ch.tokens,
        ["booksum"],
        [summary_length(ch.W)],
        n,
        max_prompt=ch.W if truncate else None,
    )
