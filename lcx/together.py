"""Together's LLaMA-2-7B-32K (the blog post "Preparing for the era of 32K context", 2023): linear
Position Interpolation x8 and two phases of continued pretraining on a data recipe ("Extending
LLaMA-2 to 32K context"), task fine-tunes for multi-document QA and BookSum ("Building long-context
applications via fine-tuning"), and the post's numbers the chapter sets its results beside.

Lengths are in units of the base model's native window ``W`` (the paper's 4K), so the paper's 32K
is ``8 * W`` (claims.md's scaling rule).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from . import evaluate, models, train
from . import rows as row_builders
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
    )
    finetune = dict(
        tokens=pick(profile, tiny=L * 2 * 2, cpu=200_000, gpu=50_000_000),
        batch_tokens=phase1.batch_tokens,
        lr=phase1.lr / 2,
    )
    return phase1, phase2, finetune


def extend(ch, phase1, phase2, finetune, seed: int) -> dict:
    """One seed's runs (folders): PI x8 on the base model, phase 1, phase 2 ("Extending LLaMA-2
    to 32K context"), then phase 2 fine-tuned on each of :data:`FINETUNE_TASKS` ("Building
    long-context applications via fine-tuning"; loss on the answers, training documents)."""
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
    for task in FINETUNE_TASKS:
        rec = train.Recipe(
            seq_len=L,
            **finetune,
            warmup=0.05,
            min_lr_ratio=0.1,
            bf16=phase1.bf16,
            seed=seed,
            save_every=50,
        )
        rows = row_builders.task_sft_rows(
            task, tokenizer, rec.steps * rec.rows_per_step, L, seed, pool
        )
        runs[task] = train.fine_tune(r2, tokenizer, rec, f"together-ft-{task}-{profile}", rows)
    return runs


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


def contenders(ch, runs: dict, finetune: str) -> dict:
    """The post's comparison on a fine-tuning task: name -> (model, truncate to W?) for the base
    model truncated to its window, and per seed the PI model after phase 2 and its fine-tune on
    ``finetune`` (a key of :func:`extend`'s runs)."""
    models_ = {"base (truncated to W)": (ch.base_ref, True)}
    for seed, r in runs.items():
        models_[f"PI (seed {seed})"] = (evaluate.Ref.of(r["phase2"]), False)
        models_[f"PI fine-tuned (seed {seed})"] = (evaluate.Ref.of(r[finetune]), False)
    return models_


def qa_summary(accuracy: pd.DataFrame, W: int) -> pd.DataFrame:
    """Accuracy by input length (``accuracy``: one column per :func:`contenders` model) as the
    post's table: the truncated base, PI and PI fine-tuned (means over seeds), beside the post's
    numbers."""

    def mean_of(prefix):
        return accuracy[[c for c in accuracy if c.startswith(prefix)]].mean(axis=1)

    table = pd.DataFrame(
        {
            "base (truncated)": accuracy["base (truncated to W)"],
            "PI": mean_of("PI (seed"),
            "PI fine-tuned": mean_of("PI fine-tuned"),
            **QA_ACCURACY,
        }
    )
    table.index = [f"{n} tokens ({n / W:.1f}W)" for n in table.index]
    return table


def qa(ch, ref: evaluate.Ref, n: int, depths, truncate: bool = False) -> pd.DataFrame:
    """Multi-document QA (one gold document among distractors) at :func:`qa_lengths`; the base
    model is truncated to its window as the post truncates LLaMA-2 (``truncate``). "Building
    long-context applications via fine-tuning", multi-document question answering."""
    return evaluate.suite(
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
    """BookSum-format summarization of :func:`summary_length` inputs (ROUGE on title lines).
    "Building long-context applications via fine-tuning", book summarization."""
    return evaluate.suite(
        ref,
        ch.tokenizer,
        ch.tokens,
        ["booksum"],
        [summary_length(ch.W)],
        n,
        max_prompt=ch.W if truncate else None,
    )
