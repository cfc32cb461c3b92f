"""Llama-3 8K -> 80K via QLoRA (Zhang et al., 2024, "Extending Llama-3's Context Ten-Fold
Overnight"): the QLoRA recipe with a RoPE base of 200M (§2 "Training"), the synthetic long-QA data
mixed with RedPajama and LongAlpaca (§2 "Data"), and the evaluations of §3 (needle in a haystack,
topic retrieval, short-context retention), with the paper's settings beside ours.

Lengths are in units of the base model's native window ``W`` (the paper's 8K), so 80K is ``10 * W``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import random

import numpy as np
import pandas as pd

from . import bench, budget, evaluate, models, tasks, train
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
TOPIC_SECTION = 96  # tokens per topic section (lcx.tasks.topic)
RETENTION_TASKS = ["passkey", "json_kv", "doc_qa", "icl"]


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
    return train.Recipe(
        seq_len=L,  # paper: 81,920
        tokens=pick(profile, tiny=L * 2 * 3, cpu=L * 8 * 14, gpu=L * 8 * 2500),  # paper: 1 epoch
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
    )


def training_rows(ch, qlora: train.Recipe, seed: int):
    """(rows, long-QA conversations): §2's mix in the paper's proportions (:data:`SHARES`):
    synthetic long-QA conversations of 64-80% of the target length (the four families of
    :func:`lcx.tasks.long_qa`, each from text of its kind), short LM rows (the RedPajama
    stand-in) and short instructions (the LongAlpaca stand-in)."""
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
    rng, convs = random.Random(seed), []

    def long_qa(n):
        for i in range(n):
            family = tasks.LONG_QA_FAMILIES[i % len(tasks.LONG_QA_FAMILIES)]
            length = rng.randint(int(0.64 * L), int(0.8 * L))  # paper: 64-80% of the target
            convs.append(
                tasks.long_qa(
                    tokenizer, length, rng.randrange(10**6), "train", family_pools[family], family
                )
            )
        return row_builders.conversation_rows(convs, L, tokenizer.pad_token_id)

    def short_lm(n):
        lm = dataclasses.replace(qlora, seed=seed, formats={})
        return row_builders.packed_rows(tokens["train"], lm, tokenizer.bos_token_id, n)

    def instructions(n):
        return [
            row
            for i, (task, k) in enumerate((("self_instruct", n // 2), ("doc_qa", n - n // 2)))
            for row in row_builders.task_sft_rows(
                task, tokenizer, k, L, 10 * seed + i, train_pool, (W, 4 * W)
            )
        ]

    parts = {"long QA": long_qa, "short LM": short_lm, "instructions": instructions}
    n = qlora.steps * qlora.rows_per_step
    rows = row_builders.mix_rows({k: (SHARES[k], make) for k, make in parts.items()}, n, seed)
    return rows, convs


def composition(rows, convs, L: int) -> dict:
    """What the mix holds (Q5): rows, conversations, their length and turns, and the families."""
    families = pd.Series([c.meta["family"] for c in convs]).value_counts()
    return {
        "rows": len(rows),
        "long QA conversations": len(convs),
        "mean conversation length / L": float(np.mean([c.length for c in convs]) / L),
        "turns per conversation": float(np.mean([len(c.turns) for c in convs])),
        **{f"family: {k}": int(v) for k, v in families.items()},
    }


def extend(ch, qlora: train.Recipe, name: str, rope_change: dict, seed: int, rows, unsloth=False):
    """One variant's QLoRA run (its folder). With ``unsloth`` (a GPU with Unsloth installed), a
    base change loads through Unsloth at ``10 * W`` (guarded against its silent linear
    interpolation) and Unsloth makes the adapters; otherwise (and for PI) peft + bitsandbytes."""
    L = FACTOR * ch.W
    if unsloth and rope_change["method"] == "default":
        model, _ = models.unsloth_model(ch.base_ref.key, L, rope_change["base"])
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


def extensions(ch, qlora: train.Recipe, variants: dict, seeds, first_rows) -> dict:
    """Every run of the chapter, (variant, seed) -> folder: the recipe (``ABF x400``) on every
    seed, the other RoPE changes on the first; each seed's training rows shared by its variants
    (``first_rows``: the first seed's, already built); Unsloth on gpu/paper when installed."""
    rows = {seeds[0]: first_rows, **{s: training_rows(ch, qlora, s)[0] for s in seeds[1:]}}
    unsloth = ch.profile in ("gpu", "paper") and importlib.util.find_spec("unsloth") is not None
    return {
        (name, seed): extend(ch, qlora, name, change, seed, rows[seed], unsloth)
        for name, change in variants.items()
        for seed in (seeds if name == "ABF x400" else seeds[:1])
    }


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


def topics(ch, ref: evaluate.Ref, counts, n: int, depths) -> pd.DataFrame:
    """Topic retrieval (§3, Fig. 2: "what was the first topic?") by number of topics; the
    headline rows with a ``topics`` column."""
    lengths = topic_lengths(counts)
    t = evaluate.suite(ref, ch.tokenizer, ch.tokens, ["topic"], lengths, n, depths)
    t = t[t.headline].copy()
    t["topics"] = t.length.map(dict(zip(lengths, counts, strict=True)))
    return t


def retention(ch, ref: evaluate.Ref, n: int, depths) -> tuple[float, float]:
    """(short perplexity, mean short-task score at ``W/2`` and ``W``): how much short-context
    ability is kept (§3, Table 3's MMLU stand-in)."""
    W = ch.W
    s = evaluate.suite(ref, ch.tokenizer, ch.tokens, RETENTION_TASKS, [W // 2, W], n, depths)
    return evaluate.short_ppl(ref, ch.tokenizer, ch.tokens, W), float(s[s.headline].score.mean())


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


def measured_costs(ch, qlora: train.Recipe, size: str, steps: int) -> pd.DataFrame:
    """Tokens/s and peak memory growth of a few training steps at ``10 * W`` for full, LoRA
    and QLoRA fine-tuning of a ``size`` model (:func:`lcx.bench.attention_step`)."""
    measured = []
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
            {"method": method, "tokens_per_s": r["tokens_per_s"], "peak_mb": r["peak_mb"]}
        )
    return pd.DataFrame(measured).set_index("method")
