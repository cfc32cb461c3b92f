"""Llama-3 8K -> 80K via QLoRA (Zhang et al., 2024, "Extending Llama-3's Context Ten-Fold
Overnight"): the QLoRA recipe with a RoPE base of 200M (§2 "Training"), the synthetic long-QA data
mixed with RedPajama and LongAlpaca (§2 "Data"), and the evaluations of §3 (needle in a haystack,
topic retrieval, short-context retention), with the paper's settings beside ours; and what the
scorecard judges (:mod:`lcx.verdicts`): per-example results tables, the gates that make a part
testable, and the recipe checks read from what was built and trained.

Lengths are in units of the base model's native window ``W`` (the paper's 8K), so 80K is ``10 * W``.
The thresholds the claims registry (:mod:`lcx.claims`, block ``05_llama3_80k_qlora``) fixes for this
chapter come from the paper's numbers and the constants below, set before any run.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import json
import math
import random
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from . import bench, budget, evaluate, models, pretrained, tasks, train, verdicts
from . import rows as row_builders
from .profiles import pick

FACTOR = 10  # 8K -> 80K
BASE_FACTOR = 400  # RoPE base 500K -> 200M
HYPERPARAMETERS = {  # §2 "Training"
    "seq_len": "81,920",
    "tokens": "1 epoch of 3.5K + 5K + 12K samples",
    "batch_tokens": "8 sequences",
    "lr": "5e-5",
    "schedule": "linear",
    "warmup": "0",
    "lora": "r 32, alpha 16, q/k/v/o + embeddings, 4-bit",
    "gradient_checkpointing": "True",
}
SHARES = {"long QA": 3.5, "short LM": 5.0, "instructions": 12.0}  # §2 "Data": thousands of samples
# §1: the synthetic long QA's tasks, as lcx.tasks.long_qa's families make them
QA_TASKS = {
    "single-detail QA": ("single_detail",),
    "multi-detail QA": ("multi_detail_homogeneous", "multi_detail_heterogeneous"),
    "biography summarization": ("biography",),
}
TOPIC_SECTION = 96  # tokens per topic section (lcx.tasks.topic)
# Topic-retrieval inputs as multiples of W: the first inside the window (the gate's), the rest up to
# the training length 10W (paper: 5-70 topics, the base failing past 9K of its 8K window)
TOPIC_MULTIPLES = {"tiny": (1, 2, 10), "cpu": (1, 2, 4, 6, 8, 10), "gpu": (0.5, 1, 2, 4, 6, 8, 10)}
RETENTION_TASKS = ["passkey", "json_kv", "doc_qa", "icl"]
MMLU = {"Llama-3-8B-Instruct": 65.91, "Llama-3-8B-Instruct-80K-QLoRA": 64.44}  # Table 3, zero-shot
GPU_GB = 80  # §2: one 8xA800 (80G) machine, no parallelism needed: a sequence fits one GPU

# Pre-registered before any run (the registry quotes them; the gates below apply them):
NEEDLE_CHANCE = 0.1  # per-digit accuracy of a guessed digit string
NEEDLE_GATE = 0.5  # the base retrieves half the digits at W: the task is within its reach
TOPIC_GATE = 0.75  # the base names the first topic at W, halfway from a coin flip (2 topics) to 1
MEMORY_RESOLUTION_MB = 4.0  # resident memory moves a few MB between runs of one step (lcx.bench)


def variants(b0: float, W: int) -> dict:
    """The recipe (ABF x400) and the two ablations a reader asks for (RoPE unchanged, PI x10)."""
    return {
        "ABF x400": dict(method="default", base=b0 * BASE_FACTOR),  # paper: 500K -> 200M
        "RoPE unchanged": dict(method="default", base=b0),
        "PI x10": dict(method="linear", base=b0, factor=FACTOR),
    }


def recipe(profile: str, W: int) -> train.Recipe:
    """§2's QLoRA run at ``10 * W``: r 32, alpha 16 on q/k/v/o with the embeddings trained in
    full, a 4-bit base, lr 5e-5 decaying linearly without warm-up, batch 8, one epoch."""
    L = FACTOR * W
    return train.rehearsed(
        train.Recipe(
            seq_len=L,  # paper: 81,920
            tokens=pick(
                profile, tiny=L * 2 * 3, cpu=L * 8 * 14, gpu=L * 8 * 2500
            ),  # paper: 1 epoch
            batch_tokens=pick(profile, tiny=L * 2, cpu=L * 8, gpu=L * 8),  # paper: batch size 8
            lr=pick(profile, tiny=1e-3, cpu=1e-3, gpu=5e-5),  # paper: 5e-5
            schedule="linear",  # paper: linear decay
            warmup=0.0,  # paper: no warm-up
            min_lr_ratio=0.0,
            lora={
                "r": pick(profile, tiny=4, cpu=8, gpu=32),  # paper: 32
                "alpha": pick(profile, tiny=2, cpu=4, gpu=16),  # paper: 16
                "modules_to_save": ["embed_tokens"],  # paper: the embedding layer trained in full
                "quantize": "nf4",  # paper: QLoRA (bitsandbytes NF4)
            },
            gradient_checkpointing=True,  # paper: on
            bf16=profile != "tiny",
            save_every=50,
            micro_rows=pick(
                profile, tiny=None, cpu=None, gpu=1
            ),  # 8 x 80K a pass: ~170 GB of logits
            # the loss in pieces of positions: 80K x 128K logits are 105 GB (lcx.train.ChunkedLoss)
            loss_chunk=pick(profile, tiny=L // 4, cpu=None, gpu=8192),
            stream_rows=profile in ("gpu", "paper"),  # 20,000 rows of 80K: ~45 GB a seed
        )
    )


def training_rows(ch, qlora: train.Recipe, seed: int, n: int | None = None):
    """(rows, long-QA conversations): §2's mix in the paper's proportions (:data:`SHARES`):
    synthetic long-QA conversations of 64-80% of the target length (the four families of
    :func:`lcx.tasks.long_qa`, each from text of its kind), short LM rows (the RedPajama
    stand-in) and short instructions (the LongAlpaca stand-in); ``n`` rows, by default the
    recipe's. At paper scale (a streaming recipe: 20,000 rows of 80K, ~45 GB) the rows are a
    :class:`lcx.rows.Stream` and the conversations None; given ``n``, a list of ``n`` rows with
    their conversations, streaming or not (:func:`mix_sample`'s rows to look at)."""
    W, L, tokenizer, tokens = ch.W, FACTOR * ch.W, ch.tokenizer, ch.tokens
    have = set(tokens["train"]["domain"])
    train_pool = evaluate.pool(tokenizer, tokens, "train")
    family_pools = {
        "single_detail": train_pool,
        "multi_detail_homogeneous": train_pool,
        "multi_detail_heterogeneous": tasks.Pool.from_tokens(
            tokenizer, tokens["train"], domains=["code"] if "code" in have else None
        ),
        "biography": tasks.Pool.from_tokens(
            tokenizer, tokens["train"], domains=["books"] if "books" in have else None
        ),
    }
    stream = qlora.stream_rows and n is None
    n = qlora.steps * qlora.rows_per_step if n is None else n
    convs = None if stream else []
    lm = dataclasses.replace(qlora, seed=seed, formats={})
    parts = {
        "long QA": partial(
            _long_qa_rows, tokenizer=tokenizer, L=L, seed=seed, pools=family_pools, convs=convs
        ),
        "short LM": partial(
            _short_lm_rows, split=tokens["train"], recipe=lm, bos=tokenizer.bos_token_id
        ),
        "instructions": partial(
            _instruction_rows, tokenizer=tokenizer, W=W, L=L, seed=seed, pool=train_pool, mix=stream
        ),
    }
    parts = {k: (SHARES[k], make) for k, make in parts.items()}
    spec = [tokens.key, tokenizer.key, qlora.config(), seed]
    return row_builders.mixed(parts, n, seed, stream, L, spec), convs


def _long_qa_rows(count: int, tokenizer, L: int, seed: int, pools: dict, convs: list | None):
    """``count`` rows of long-QA conversations (the families in turn, 64-80% of ``L``), one
    conversation per row; ``convs`` collects the conversations."""
    rng = random.Random(seed)
    for i in range(count):
        family = tasks.LONG_QA_FAMILIES[i % len(tasks.LONG_QA_FAMILIES)]
        length = rng.randint(int(0.64 * L), int(0.8 * L))  # paper: 64-80% of the target
        conv = tasks.long_qa(
            tokenizer, length, rng.randrange(10**6), "train", pools[family], family
        )
        if convs is not None:
            convs.append(conv)
        yield from row_builders.iter_conversation_rows([conv], L, tokenizer.pad_token_id)


def _short_lm_rows(count: int, split, recipe: train.Recipe, bos: int):
    """``count`` packed LM rows of ``recipe`` (no task formats)."""
    return itertools.islice(row_builders.iter_packed_rows(split, recipe, bos), count)


def _instruction_rows(count: int, tokenizer, W: int, L: int, seed: int, pool, mix: bool):
    """``count`` short instruction rows, half self-instruct and half document QA of ``W``-``4W``
    tokens: one kind after the other, or with ``mix`` interleaved (:func:`lcx.rows.iter_mix`, for
    a stream, which is not shuffled again)."""
    kinds = (("self_instruct", count // 2), ("doc_qa", count - count // 2))
    makers = {
        task: (k, row_builders.task_part(task, tokenizer, L, 10 * seed + i, pool, (W, 4 * W)))
        for i, (task, k) in enumerate(kinds)
    }
    if mix:
        return row_builders.iter_mix(makers, count, seed)
    return itertools.chain.from_iterable(make(k) for k, make in makers.values())


MIX_SAMPLE = 400  # rows of the mix that Q5's composition reads when the rows are a stream


def mix_sample(ch, qlora: train.Recipe, seed: int, rows, convs):
    """The rows Q5's composition and checks read, and their conversations: the training rows
    themselves when they are in memory; on a streaming recipe :data:`MIX_SAMPLE` rows made by the
    same code and shares (rounded to whole rows)."""
    if convs is not None:
        return rows, convs
    return training_rows(ch, qlora, seed, n=MIX_SAMPLE)


def row_kind(row: dict, contexts: dict) -> str:
    """What one training row of :func:`training_rows` is, read from the row itself: ``short LM``
    (every token a target, the RedPajama stand-in), a long-QA conversation's family (the row opens
    with that conversation's context; ``contexts`` maps a context's token ids to its family), or
    ``instructions`` (packed instruction examples, the LongAlpaca stand-in)."""
    if bool((row["loss_weights"] == 1).all()):
        return "short LM"
    ids = row["input_ids"].tolist()
    for context, family in contexts.items():
        if tuple(ids[: len(context)]) == context:
            return family
    return "instructions"


def answers_per_row(row: dict) -> int:
    """Stretches of loss-bearing tokens in a row: the answers of a conversation's turns."""
    w = (row["loss_weights"] > 0).int().tolist()
    return sum(1 for i, x in enumerate(w) if x and (i == 0 or not w[i - 1]))


def mix_shares(rows, convs) -> pd.Series:
    """Share of the rows of each kind (:func:`row_kind`): the QA families, short LM and
    instructions."""
    contexts = {tuple(c.context_ids): c.meta["family"] for c in convs}
    kinds = pd.Series([row_kind(r, contexts) for r in rows])
    return kinds.value_counts(normalize=True).reindex(
        [*tasks.LONG_QA_FAMILIES, "short LM", "instructions"], fill_value=0.0
    )


def mix_checks(rows, convs) -> dict:
    """Q5's recipe checks of the rows as built (§2 "Data"), part name -> (holds, ours): the long-QA
    conversations, the short LM rows and the instruction rows in the paper's proportions 3.5K : 5K :
    12K (each share within one row of it: :func:`lcx.rows.share_counts` rounds to whole rows),
    every QA task of §1 among the conversations, and every conversation a multi-turn one."""
    share = mix_shares(rows, convs)
    n, total = len(rows), sum(SHARES.values())
    contexts = {tuple(c.context_ids): c.meta["family"] for c in convs}
    qa_rows = [r for r in rows if row_kind(r, contexts) in tasks.LONG_QA_FAMILIES]
    measured = {
        "long QA": float(share[list(tasks.LONG_QA_FAMILIES)].sum()),
        "short LM": float(share["short LM"]),
        "instructions": float(share["instructions"]),
    }
    checks = {
        f"{name} share": (
            abs(measured[name] - SHARES[name] / total) <= 1 / n,
            f"{measured[name]:.3f} of {n} rows (paper {SHARES[name] / total:.3f})",
        )
        for name in SHARES
    }
    for task, families in QA_TASKS.items():
        got = float(share[list(families)].sum())
        checks[task] = (got > 0, f"{got:.3f} of the rows")
    turns = [answers_per_row(r) for r in qa_rows]
    checks["multi-turn conversations"] = (
        bool(turns) and min(turns) >= 2,
        f"{min(turns) if turns else 0}-{max(turns) if turns else 0} answered turns per conversation",
    )
    return checks


def composition(rows, convs, L: int, n_rows: int | None = None) -> dict:
    """What the mix holds (Q5): rows (``n_rows`` when ``rows`` are a sample of them,
    :func:`mix_sample`), conversations, their length and turns, and the shares of each kind of
    row (:func:`mix_shares`)."""
    sample = {} if n_rows in (None, len(rows)) else {"rows read (a sample)": len(rows)}
    return {
        "rows": len(rows) if n_rows is None else n_rows,
        **sample,
        "long QA conversations": len(convs),
        "mean conversation length / L": float(np.mean([c.length for c in convs]) / L),
        "turns per conversation": float(np.mean([len(c.turns) for c in convs])),
        **{f"share: {k}": float(v) for k, v in mix_shares(rows, convs).items()},
    }


def extend(ch, qlora: train.Recipe, name: str, rope_change: dict, seed: int, rows, unsloth=False):
    """One variant's QLoRA run (its folder). With ``unsloth`` (a GPU with Unsloth installed), a
    base change loads through Unsloth at ``10 * W`` (guarded against its silent linear
    interpolation) and Unsloth makes the adapters; otherwise (and for PI) peft + bitsandbytes."""
    L = FACTOR * ch.W
    if unsloth and rope_change["method"] == "default":
        model, _ = models.unsloth_model(ch.base_ref.source, L, rope_change["base"])
        backend = {"backend": "unsloth"}
    else:
        model, backend = models.with_rope(ch.base_net, **rope_change), {}
    return train.run(
        model,
        None,
        ch.tokenizer,
        dataclasses.replace(qlora, seed=seed, lora={**qlora.lora, **backend}),
        inputs=[ch.tokenizer.key, ch.base_ref.key],
        name=f"llama3-80k-{name.split()[0].lower()}-{ch.profile}",
        rows=rows,
    )


def seed_rows(ch, qlora: train.Recipe, seeds, first_rows) -> dict:
    """Each seed's training rows, seed -> rows (``first_rows``: the first seed's, already built)."""
    return {seeds[0]: first_rows, **{s: training_rows(ch, qlora, s)[0] for s in seeds[1:]}}


def extensions(ch, qlora: train.Recipe, variants: dict, seeds, rows: dict) -> dict:
    """Every run of the chapter, (variant, seed) -> folder: the recipe (``ABF x400``) on every
    seed, the other RoPE changes on the first; each seed's training rows (``rows``, from
    :func:`seed_rows`) shared by its variants; Unsloth on gpu/paper when installed."""
    unsloth = ch.profile in ("gpu", "paper") and importlib.util.find_spec("unsloth") is not None
    return {
        (name, seed): extend(ch, qlora, name, change, seed, rows[seed], unsloth)
        for name, change in variants.items()
        for seed in (seeds if name == "ABF x400" else seeds[:1])
    }


# --- the control run: as much training, at the native length ---------------------------------------

CONTROL = "control at W"


def control_recipe(qlora: train.Recipe, W: int) -> train.Recipe:
    """The recipe's run at the native window ``W`` instead of ``10 * W``: the same tokens, steps,
    tokens per step, learning rate and adapters, ``FACTOR`` times more rows per step. What the
    extension does to short-context ability is the recipe's change beyond this control's, so more
    training (which may help an under-trained base) is not counted as kept ability (Q4)."""
    return dataclasses.replace(qlora, seq_len=W)


def gpu_recipes(profile: str, W: int) -> list[train.Recipe]:
    """Every recipe chapter 05 trains (QLoRA at ``FACTOR * W`` and its control), as it builds
    them: what :func:`lcx.chapter.setup` checks against the GPU's memory first."""
    qlora = recipe(profile, W)
    return [qlora, control_recipe(qlora, W)]


def controls(ch, qlora: train.Recipe, seeds, rows: dict, b0: float) -> dict:
    """The control run of every seed, seed -> folder: the base continued with its own RoPE at
    ``W`` (:func:`control_recipe`) on that seed's rows cut to ``W`` (:func:`lcx.rows.at_window`)."""
    recipe = control_recipe(qlora, ch.W)
    change = {"method": "default", "base": b0}
    return {
        seed: extend(ch, recipe, CONTROL, change, seed, row_builders.at_window(rows[seed], ch.W))
        for seed in seeds
    }


# --- per-example results, gates and checks for the scorecard ---------------------------------------


def topic_counts(profile: str, W: int) -> list[int]:
    """Numbers of topics for topic retrieval: for each of the profile's :data:`TOPIC_MULTIPLES`
    ``m``, the most topic sections that fit in ``m * W`` tokens (:func:`topic_lengths`; a multiple
    too short for two is left out), so the first lie inside the window and the last reach
    ``10 * W``."""
    multiples = pick(profile, **TOPIC_MULTIPLES)
    counts = [(int(m * W) - 40) // TOPIC_SECTION for m in multiples]
    return sorted({k for k in counts if k >= 2})


def topic_lengths(counts, tokenizer=None, pool=None) -> list[int]:
    """Input lengths that hold ``counts`` topic sections (the generator fits k sections in);
    with a tokenizer and a pool, checked against the sections the generator really fits."""
    lengths = [k * TOPIC_SECTION + 40 for k in counts]
    if tokenizer is not None:
        fits = [
            tasks.generate("topic", tokenizer, n, None, 0, "test", pool).meta["topics"]
            for n in lengths
        ]
        if fits != list(counts):
            raise AssertionError(f"lengths {lengths} give {fits} topics, not {list(counts)}")
    return lengths


def example_scores(examples: pd.DataFrame, lengths=None) -> pd.Series:
    """The headline score of every example of an :func:`lcx.evaluate.suite_examples` table (at
    ``lengths`` only, if given), indexed by a label naming its task, length, depth and index: the
    same label is the same prompt for every model, so the verdict engine pairs them."""
    t = examples[examples.headline.astype(bool)]
    if lengths is not None:
        t = t[t.length.isin(list(lengths))]
    labels = [
        f"{task}@{length}/{depth}#{i}"
        for task, length, depth, i in zip(t.task, t.length, t.depth, t.example, strict=True)
    ]
    return pd.Series(t.score.to_numpy(dtype=float), index=labels)


def results(runs: dict, fixed: dict, seeds) -> pd.DataFrame:
    """The verdict engine's table (:func:`lcx.verdicts.table`) from ``runs`` ((arm, seed) ->
    per-example scores, a :class:`pandas.Series`) and ``fixed`` (arm -> scores of a model trained
    once, such as the base every seed's run starts from: the reference of every seed)."""
    return verdicts.table({**runs, **{(arm, s): v for arm, v in fixed.items() for s in seeds}})


def gate(scores: pd.Series, threshold: float, what: str) -> tuple[bool, str]:
    """``(passed, reason)``: whether the mean of ``scores`` reaches ``threshold`` (a part's gate,
    e.g. the base retrieves inside its window), with the measured mean in the reason."""
    if len(scores) == 0:
        return False, f"{what}: no examples on this profile"
    m = float(scores.mean())
    return m >= threshold, f"{what}: {m:.3f} over {len(scores)} examples (gate >= {threshold:g})"


def versus_base(examples: dict, seeds, lengths, arm: str = "ABF x400") -> pd.DataFrame:
    """The results table of ``arm`` against the base on the examples at ``lengths``: ``examples``
    maps ``"base"`` and every ``(arm, seed)`` to its :func:`lcx.evaluate.suite_examples` rows."""
    runs = {(arm, s): example_scores(examples[arm, s], lengths) for s in seeds}
    return results(runs, {"base": example_scores(examples["base"], lengths)}, seeds)


def needle_gate(base_examples: pd.DataFrame, W: int) -> tuple[bool, str]:
    """Q1/Q2's gate: the base retrieves the needle at its window ``W`` (:data:`NEEDLE_GATE`)."""
    return gate(example_scores(base_examples, [W]), NEEDLE_GATE, "base needle per digit at W")


def topic_gate(base_topics: pd.DataFrame, W: int) -> tuple[bool, str]:
    """Q3's gate: the base names the first topic at the topic counts that fit inside its window
    ``W`` (:data:`TOPIC_GATE`); not passed where no count fits (two sections need 232 tokens)."""
    inside = sorted(set(base_topics.length[base_topics.length <= W]))
    return gate(example_scores(base_topics, inside), TOPIC_GATE, "base topic SubEM inside W")


def recipe_checks(run: Path, profile: str, b0: float, rows: int) -> dict:
    """Q1's recipe checks, read from the recipe's trained run (its ``recipe.json``, ``log.json`` and
    model), part name -> (holds, ours): QLoRA on a 4-bit base; the paper's rank and alpha (on the
    scaled profiles the rank is cut with the hidden size and the paper's alpha / r = 1/2 kept);
    adapters on q, k, v, o with the embeddings trained; RoPE base x400 without interpolation; the
    peak learning rate 5e-5; linear decay from the first step (no warm-up), as logged; one epoch
    over the ``rows`` training rows, as logged (§2 "Training")."""
    recipe = json.loads((Path(run) / "recipe.json").read_text())
    log = train.loss_log(run)
    lora = recipe["lora"] or {}
    r, alpha = lora.get("r"), lora.get("alpha")
    paper_scale = profile in ("gpu", "paper")
    rank_ok = (r, alpha) == (32, 16) if paper_scale else (r is not None and 2 * alpha == r)
    problems = models.rope_problems(train.load_run(run), b0 * BASE_FACTOR)
    steps = max(1, recipe["tokens"] // recipe["batch_tokens"])
    rows_per_step = max(1, recipe["batch_tokens"] // recipe["seq_len"])
    peak = recipe["lr"]
    # the learning rate a step ran at, as the Trainer logs it: linear decay without warm-up is
    # peak * (steps - (k - 1)) / steps at step k
    logged = [(e["step"], e["learning_rate"]) for e in log]
    linear = bool(logged) and all(
        math.isclose(lr, peak * (steps - (k - 1)) / steps, rel_tol=1e-6, abs_tol=1e-12)
        for k, lr in logged
    )
    # the epochs the whole run covers, from the last logged step (the Trainer logs every
    # max(1, steps // 100) steps, so the last one need not be the final step)
    epoch = log[-1]["epoch"] * steps / log[-1]["step"] if log else math.nan
    return {
        "4-bit base": (lora.get("quantize") == "nf4", f"quantize={lora.get('quantize')}"),
        "rank and alpha": (rank_ok, f"r {r}, alpha {alpha} (paper 32, 16)"),
        "adapted modules": (
            tuple(models.LORA_TARGETS) == ("q_proj", "k_proj", "v_proj", "o_proj")
            and lora.get("modules_to_save") == ["embed_tokens"],
            f"{', '.join(models.LORA_TARGETS)} + {', '.join(lora.get('modules_to_save') or [])}",
        ),
        "RoPE base x400": (
            not problems,
            f"base {b0 * BASE_FACTOR:.4g}" if not problems else "; ".join(problems),
        ),
        "learning rate 5e-5": (math.isclose(peak, 5e-5), f"{peak:g}"),
        "linear decay, no warm-up": (
            linear and recipe["schedule"] == "linear",
            f"{recipe['schedule']}, logged {logged[0][1]:.3g} at step 1, {logged[-1][1]:.3g} at "
            f"step {logged[-1][0]} of {steps}"
            if logged
            else "no log",
        ),
        "one epoch": (
            math.isclose(epoch, 1.0) and steps * rows_per_step == rows,
            f"{steps} steps x {rows_per_step} rows of {rows}, logged epoch {epoch:.3g}",
        ),
    }


def topics(ch, ref: evaluate.Ref, counts, n: int) -> pd.DataFrame:
    """Topic retrieval (§3, Fig. 2: "what was the first topic?") by number of topics, example by
    example (:func:`lcx.evaluate.suite_examples`), headline rows with a ``topics`` column."""
    lengths = topic_lengths(counts)
    t = evaluate.suite_examples(ref, ch.tokenizer, ch.tokens, ["topic"], lengths, n)
    t = t[t.headline.astype(bool)].copy()
    t["topics"] = t.length.map(dict(zip(lengths, counts, strict=True)))
    return t


def short_nll(ch, ref: evaluate.Ref) -> pd.Series:
    """Held-out short documents' NLL (mean nats per token), one per document, alone up to ``W``
    tokens (:func:`lcx.evaluate.short_nll_docs`): Q4's perplexity stand-in for MMLU."""
    docs = evaluate.short_nll_docs(ref, ch.tokenizer, ch.tokens, ch.W)
    return pd.Series(docs.nll.to_numpy(dtype=float), index=docs.doc.to_numpy())


def short_tasks(ch, ref: evaluate.Ref, n: int, depths) -> pd.Series:
    """The probe tasks of :data:`RETENTION_TASKS` that the base model's gate keeps
    (:func:`lcx.pretrained.kept`; all of them when it keeps none, a base that failed its gate and
    on which the scorecard judges nothing) at ``W / 2`` and ``W``, headline score per example
    (:func:`example_scores`): Q4's task stand-in for MMLU."""
    ex = evaluate.suite_examples(
        ref, ch.tokenizer, ch.tokens, RETENTION_TASKS, [ch.W // 2, ch.W], n, depths=depths
    )
    keep = pretrained.kept(ch.gate, RETENTION_TASKS)[0] or RETENTION_TASKS
    return example_scores(ex[ex.task.isin(keep)])


def memory_plan(length: int = 81920):
    """The memory of one training step of Llama-3-8B (base 200M) at ``length`` for each method of
    :data:`lcx.budget.METHODS`, with and without a chunked loss, in GB (§2: QLoRA on one node)."""
    config = models.paper_config("meta-llama/Meta-Llama-3-8B-Instruct", base=2e8)
    return pd.DataFrame(
        {
            f"{m}{' + chunked loss' if c else ''}": {
                k: v / budget.GB
                for k, v in budget.memory_plan(config, length, m, chunked_loss=c).items()
                if k != "trainable_parameters"
            }
            for m in budget.METHODS
            for c in (False, True)
        }
    ).T


def plan_checks(plan: pd.DataFrame) -> dict:
    """Q6's arithmetic (:func:`memory_plan`, Llama-3-8B at 80K), part name -> (holds, ours): the
    formula puts QLoRA below LoRA below full fine-tuning, with and without a chunked loss; and
    QLoRA with Unsloth's chunked loss fits one 80 GB GPU (§2: one sequence per A800, no
    parallelism), which full fine-tuning does not."""
    total = plan["total"]
    order = all(
        total[f"qlora{c}"] < total[f"lora{c}"] < total[f"full{c}"] for c in ("", " + chunked loss")
    )
    fits = total["qlora + chunked loss"] < GPU_GB < total["full"]
    return {
        "plan: QLoRA < LoRA < full": (
            order,
            f"{total['qlora']:.0f} < {total['lora']:.0f} < {total['full']:.0f} GB",
        ),
        "plan: QLoRA fits one GPU": (
            fits,
            f"QLoRA + chunked loss {total['qlora + chunked loss']:.0f} GB, full "
            f"{total['full']:.0f} GB (one A800: {GPU_GB} GB)",
        ),
    }


def measured_costs(
    ch, qlora: train.Recipe, size: str, steps: int, repeats: int = 1
) -> pd.DataFrame:
    """Tokens/s, peak memory growth and peak memory (``peak_rss_mb``: resident on CPU, allocated
    on CUDA) of a few training steps at ``10 * W`` for full, LoRA and QLoRA fine-tuning of a
    ``size`` model (:func:`lcx.bench.attention_step`, each in a fresh process on CPU), ``repeats``
    times each: one row per method and repeat."""
    measured = []
    for repeat in range(repeats):
        for method in ("full", "lora", "qlora"):
            r = bench.attention_step(
                size,
                FACTOR * ch.W,
                "sdpa",
                steps=steps,
                vocab=len(ch.tokenizer),
                bf16=ch.profile != "tiny",
                method=method,
                checkpointing=True,
                lora_r=qlora.lora["r"],
            )
            measured.append(
                {
                    "method": method,
                    "repeat": repeat,
                    **{k: r[k] for k in ("tokens_per_s", "peak_mb", "peak_rss_mb")},
                }
            )
    return pd.DataFrame(measured)


METHOD_ARMS = {"full": "full fine-tuning", "lora": "LoRA", "qlora": "QLoRA"}


def memory_results(measured: pd.DataFrame) -> pd.DataFrame:
    """The verdict engine's table of :func:`measured_costs`: each method an arm (its
    :data:`METHOD_ARMS` name), each repeat an example, the peak memory (MB) its value."""
    return verdicts.table(
        {
            (METHOD_ARMS[m], 0): g.set_index("repeat").peak_rss_mb
            for m, g in measured.groupby("method")
        }
    )


def memory_gate(ch, qlora: train.Recipe, size: str, other: str) -> tuple[bool, str]:
    """``(passed, reason)``: whether the memory formula (:func:`lcx.budget.memory_plan`, bf16
    accounting) predicts that QLoRA saves at least :data:`MEMORY_RESOLUTION_MB` against
    ``other`` (``"lora"`` or ``"full"``) for the model :func:`measured_costs` measures: below that
    the saving is within what resident memory moves between runs, so a tiny model cannot show it."""
    config = models.tiny_config(size, len(ch.tokenizer), FACTOR * ch.W, bench.ROPE_BASE)
    r = qlora.lora["r"]
    total = {
        m: budget.memory_plan(config, FACTOR * ch.W, m, r=r)["total"] / 2**20
        for m in ("qlora", other)
    }
    saving = total[other] - total["qlora"]
    return (
        saving >= MEMORY_RESOLUTION_MB,
        f"the formula predicts QLoRA saves {saving:.1f} MB against {METHOD_ARMS[other]} for "
        f"the measured model (gate >= {MEMORY_RESOLUTION_MB:g} MB)",
    )
