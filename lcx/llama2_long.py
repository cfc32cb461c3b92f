"""Llama 2 Long (Xiong et al., 2023, "Effective Long-Context Scaling of Foundation Models"): the
positional-encoding ablation of §4.1 (Table 5: RoPE, PI, ABF, xPos-ABF) by continual pretraining
at 32K, the length curriculum of §4.4 (Tables 10-11), and instruction tuning with the LM loss on
the long input (§4.3, Table 9); with the paper's numbers the chapter sets its results beside.

Lengths are in units of the base model's native window ``W`` (the paper's 4K), so 32K is ``8 * W``.
"""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import numpy as np
import pandas as pd

from . import budget, evaluate, models, train
from . import rows as row_builders
from .profiles import GPU_PROFILES, check_flag, pick

ABF_FACTOR = 50  # 10,000 -> 500,000
HYPERPARAMETERS = {  # §4.1 and Table 5's continual pretraining
    "seq_len": "32,768",
    "tokens": "400B",
    "batch_tokens": "4M",
    "lr": "2e-5",
    "warmup": "2,000 steps",
    "formats": "none",
    "mixture": "Llama 2 data, long texts upsampled",
}
TABLE_5_BOOKS = {"RoPE": 6.548, "PI": 6.341, "ABF": 6.323, "xPos-ABF": 6.331}  # perplexity
TABLE_10_FLOPS = {0.0: 3.783e22, 0.2: 3.405e22, 0.4: 3.026e22, 0.8: 2.270e22}  # by switch point
SWITCHES = tuple(TABLE_10_FLOPS)  # 0.0: 32K from scratch; else 4K first, 32K after that share
SHORT_TASKS = ("doc_qa", "json_kv", "passkey")  # the short instruction data ("RLHF V5" stand-in)
QA_TASKS = ["self_instruct", "doc_qa"]  # the downstream QA of L6 (Qasper, NarrativeQA stand-ins)


def xpos(W: int) -> dict:
    """xPos's defaults (scale base 512 at a 4K window) mirrored to ``W``: the same decay per
    window, centred on the training length so every scale stays finite."""
    return {"scale_base": 512 * W / 4096, "center": 8 * W // 2}


def variants(b0: float, W: int) -> dict:
    """Table 5's rows as RoPE changes of the base model (:func:`lcx.models.with_rope`); PI at 8x
    (the paper's ablation used 4x, 4K -> 16K) so that every variant reaches ``8 * W``."""
    return {
        "RoPE": dict(method="default", base=b0),
        "PI": dict(method="linear", base=b0, factor=8),
        "ABF": dict(method="default", base=b0 * ABF_FACTOR),
        "xPos-ABF": dict(method="default", base=b0 * ABF_FACTOR, xpos=xpos(W)),
    }


def recipe(profile: str, W: int) -> train.Recipe:
    """Continual pretraining at ``8 * W`` (§4.1), the same for every variant; FIRST-SENTENCE-
    RETRIEVAL and passkey rows in the mix (tiny models learn a task's format only by seeing it)."""
    L = 8 * W
    return train.Recipe(
        seq_len=L,  # paper: 32,768
        tokens=pick(profile, tiny=L * 2 * 4, cpu=400_000, gpu=400_000_000_000),  # paper: 400B
        batch_tokens=pick(profile, tiny=L * 2, cpu=2 * L, gpu=4_000_000),  # paper: 4M per step
        lr=pick(profile, tiny=1e-3, cpu=1e-3, gpu=2e-5),  # paper: 2e-5, cosine, 2000 warm-up
        warmup=pick(profile, tiny=0.1, cpu=0.05, gpu=2000),
        min_lr_ratio=0.1,
        mixture={"books": 1.0, "prose": 1.0, "code": 1.0, "short": 1.0},
        formats={"first_sentence": 0.2, "passkey": 0.1},
        document_masking=True,
        bf16=profile != "tiny",
        save_every=50,
    )


def extend(ch, recipe: train.Recipe, variant: str, rope_change: dict, seed: int):
    """One variant's continual-pretraining run (its folder) from the chapter's base model."""
    return train.run(
        models.with_rope(ch.base_net, **rope_change),
        ch.tokens,
        ch.tokenizer,
        dataclasses.replace(recipe, seed=seed),
        inputs=[ch.tokens.key, ch.tokenizer.key, ch.base_ref.key],
        name=f"l2long-{variant}-{ch.profile}",
    )


def far_ref(ref: evaluate.Ref, xpos_center: int) -> evaluate.Ref:
    """``ref`` for evaluations out to ``2 * xpos_center`` tokens: an xPos run's centre moved
    there, so every scale stays finite; any other model as it is."""
    config = Path(ref.source) / "model" / "config.json"
    if config.is_file() and "xpos" in json.loads(config.read_text()):
        return dataclasses.replace(ref, xpos_center=xpos_center)
    return ref


def ppl_by_domain(ch, refs: dict, n_windows: int) -> pd.DataFrame:
    """Table 5's reading: each model's perplexity on ``n_windows`` held-out windows of ``8 * W``
    per domain (books, prose, code where the test split has them); ``refs``: (variant, seed) ->
    model."""
    test_domains = set(ch.tokens["test"]["domain"])
    rows = []
    for (name, seed), ref in refs.items():
        for d in [d for d in ("books", "prose", "code") if d in test_domains]:
            t = evaluate.perplexity(
                ref, ch.tokenizer, ch.tokens, [8 * ch.W], n_windows, domains=[d]
            )
            rows.append(
                {"variant": name, "seed": seed, "domain": d, "ppl": float(t["ppl"].iloc[0])}
            )
    return pd.DataFrame(rows)


def fsr(ch, refs: dict, lengths, n: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fig. 5's FIRST-SENTENCE-RETRIEVAL by length for each model (label -> model): the exact
    match and ROUGE-L tables, one column per model."""
    tables = {
        label: evaluate.suite(ref, ch.tokenizer, ch.tokens, ["first_sentence"], lengths, n)
        for label, ref in refs.items()
    }
    return tuple(
        pd.DataFrame({k: t[t.metric == m].set_index("length").score for k, t in tables.items()})
        for m in ("exact", "rougeL")
    )


SPANS = ((0.5, 1), (1, 16), (4, 8), (8, 16))  # in units of W


def context_use(curves: dict, W: int) -> tuple[dict, dict, dict]:
    """§4.1 and App. C read from the loss by position (name -> ``evaluate.loss_by_position``
    table): each model's mean loss over :data:`SPANS`; its gain from context inside the training
    window (loss over 4W-8W minus over W/2-W; negative: it uses the longer context); and its rise
    past the training length (loss over 8W-16W minus over 4W-8W)."""
    between = {
        name: {(lo, hi): evaluate.mean_loss_between(t, lo * W, hi * W) for lo, hi in SPANS}
        for name, t in curves.items()
    }
    gain = {name: b[4, 8] - b[0.5, 1] for name, b in between.items()}
    rise = {name: b[8, 16] - b[4, 8] for name, b in between.items()}
    return between, gain, rise


def flops_table(config) -> pd.DataFrame:
    """Table 10's training FLOPs of Llama-2-7B for 400B tokens, from scratch at 32K or switching
    from 4K at each share, beside ours (:func:`lcx.budget.curriculum_flops`)."""
    flops = pd.DataFrame(
        [
            {
                "curriculum": "32K from scratch" if x == 0 else f"4K -> 32K at {x:.0%}",
                "paper FLOPs": f,
                "ours (lcx.budget)": budget.curriculum_flops(config, 400e9, 4096, 32768, x),
            }
            for x, f in TABLE_10_FLOPS.items()
        ]
    )
    flops["ours / from scratch"] = flops["ours (lcx.budget)"] / flops["ours (lcx.budget)"].iloc[0]
    flops["paper / from scratch"] = flops["paper FLOPs"] / flops["paper FLOPs"].iloc[0]
    return flops


def check_run_scratch(run_scratch, profile: str) -> bool:
    """The chapter's ``run_scratch`` parameter: True, False or None (the profile's default: on
    tiny only); refused on gpu/paper, where it would train Llama-2-7B from scratch on 400B tokens
    (a cluster's job, not a notebook's)."""
    check_flag("run_scratch", run_scratch, none=True)
    if run_scratch and profile in GPU_PROFILES:
        raise ValueError(
            f"run_scratch=True on profile={profile!r} trains Llama-2-7B from scratch (400B tokens "
            "per curriculum, Table 10): not a notebook's job; leave run_scratch=None or False"
        )
    return profile == "tiny" if run_scratch is None else run_scratch


def scratch_recipe(profile: str, W: int) -> train.Recipe:
    """§4.4's from-scratch training at ``8 * W`` (the curricula switch lengths inside it)."""
    L = 8 * W
    return train.Recipe(
        seq_len=L,  # paper: 32,768
        tokens=pick(profile, tiny=L * 2 * 4, cpu=240_000, gpu=400_000_000_000),  # paper: 400B
        batch_tokens=pick(profile, tiny=L * 2, cpu=2 * L, gpu=4_000_000),  # paper: 4M, both lengths
        lr=pick(profile, tiny=2e-3, cpu=2e-3, gpu=3e-4),  # paper: Llama 2's 3e-4 for 7B
        warmup=pick(profile, tiny=0.1, cpu=0.05, gpu=2000),
        min_lr_ratio=0.1,
        mixture={"books": 1.0, "prose": 1.0, "code": 1.0, "short": 1.0},
        document_masking=True,
        bf16=profile != "tiny",
        save_every=50,
    )


def scratch_run(ch, scratch: train.Recipe, size: str, switch: float, seed: int, b0: float):
    """A ``size`` model trained from scratch (Table 10): at ``8 * W`` with ABF's base throughout
    (``switch`` 0), or at ``W`` with the base RoPE first and at ``8 * W`` with ABF's base after
    ``switch`` of the tokens (:func:`lcx.train.curriculum`)."""
    W, profile, tokens, tokenizer = ch.W, ch.profile, ch.tokens, ch.tokenizer
    if profile in ("gpu", "paper"):  # the paper's 7B from scratch: a cluster job
        config = models.paper_config("meta-llama/Llama-2-7b-hf")
    else:
        config = models.tiny_config(size, len(tokenizer), W, b0)
    init = models.new_model(config, seed)
    rec = dataclasses.replace(scratch, seed=seed)
    inputs = [tokens.key, tokenizer.key, f"init-{seed}"]
    abf = {"method": "default", "base": b0 * ABF_FACTOR}
    if switch == 0:
        return train.run(
            models.with_rope(init, **abf),
            tokens,
            tokenizer,
            rec,
            inputs=inputs,
            name=f"l2long-scratch-{size}-{profile}",
        )
    return train.curriculum(
        init, tokens, tokenizer, rec, W, switch, abf, inputs, f"l2long-curr-{size}-{profile}"
    )


def loss_of_first(nlls: list, contexts) -> tuple:
    """Fig. 1's y-axis: the mean NLL of the first ``c`` tokens for each ``c`` in ``contexts``
    (windows x positions arrays of token NLLs, one per run, averaged window by window), and its
    standard error over the windows."""
    cum = np.mean([n.cumsum(1) / np.arange(1, n.shape[1] + 1) for n in nlls], axis=0)
    at = cum[:, np.asarray(contexts) - 1]
    return at.mean(0), at.std(0, ddof=1) / np.sqrt(len(cum))


def curricula(ch, scratch: train.Recipe, size: str, seeds, b0: float, n_windows: int):
    """§4.4 (Tables 10-11) at our scale: a ``size`` model from scratch at ``8 * W`` and with each
    curriculum of :data:`SWITCHES`, per seed. Returns the runs ((switch, seed) -> folder) and a
    row per run: perplexity of held-out ``8 * W`` windows, and the loss over 4W-8W minus the loss
    over W/2-W (more negative: more use of long context)."""
    W, L = ch.W, 8 * ch.W
    runs = {(x, s): scratch_run(ch, scratch, size, x, s, b0) for s in seeds for x in SWITCHES}
    rows = []
    for (x, s), run in runs.items():
        nll = evaluate.nll(evaluate.Ref.of(run), ch.tokenizer, ch.tokens, L, n_windows, W, 4)
        rows.append(
            {
                "curriculum": "8W from scratch" if x == 0 else f"W -> 8W at {x:.0%}",
                "switch": x,
                "seed": s,
                "ppl_8w": float(np.exp(nll.mean())),
                "late_minus_early": float(nll[:, 4 * W :].mean() - nll[:, W // 2 : W].mean()),
            }
        )
    return runs, pd.DataFrame(rows)


def curricula_summary(per_run: pd.DataFrame, config, scratch: train.Recipe, W: int):
    """:func:`curricula`'s rows averaged over seeds, with each curriculum's training FLOPs
    (:func:`lcx.budget.curriculum_flops` for ``config``) and their ratio to from scratch."""
    summary = per_run.groupby(["switch", "curriculum"])[["ppl_8w", "late_minus_early"]].mean()
    summary["FLOPs (lcx.budget)"] = [
        budget.curriculum_flops(config, scratch.tokens, W, 8 * W, x)
        for x in summary.index.get_level_values("switch")
    ]
    flops = summary["FLOPs (lcx.budget)"]
    summary["FLOPs / from scratch"] = flops / flops.iloc[0]
    return summary


def size_fits(ch, scratch: train.Recipe, sizes, seeds, b0: float, n_windows: int, contexts):
    """Fig. 1's power law for each model size trained from scratch at ``8 * W`` (seeds averaged
    window by window): size -> (loss of the first c tokens, its standard error, the fit of
    :func:`lcx.evaluate.fit_power_law` with the model's parameter count)."""
    fits = {}
    for size in sizes:
        runs = [scratch_run(ch, scratch, size, 0.0, s, b0) for s in seeds]
        nlls = [
            evaluate.nll(evaluate.Ref.of(r), ch.tokenizer, ch.tokens, 8 * ch.W, n_windows, ch.W, 4)
            for r in runs
        ]
        y, sd = loss_of_first(nlls, contexts)
        fit = evaluate.fit_power_law(contexts, y, sigma=sd)
        fits[size] = (y, sd, {**fit, "params": models.count_parameters(train.load_run(runs[0]))})
    return fits


def sft_recipe(profile: str, W: int) -> train.Recipe:
    """Long instruction tuning at ``8 * W`` (§4.3)."""
    L = 8 * W
    return train.Recipe(
        seq_len=L,  # paper: 32,768
        tokens=pick(profile, tiny=L * 2 * 2, cpu=48 * 2 * L, gpu=200_000_000),
        batch_tokens=2 * L,
        lr=pick(profile, tiny=5e-4, cpu=5e-4, gpu=2e-5),  # paper: Llama 2 Chat's fine-tuning lr
        warmup=0.05,
        min_lr_ratio=0.1,
        bf16=profile != "tiny",
        save_every=50,
    )


def sft_rows(ch, sft: train.Recipe, seed: int, lm_loss: bool) -> list[dict]:
    """§4.3's mix (App. D): half short instruction rows (answers only) and half self-instruct
    long QA of ``2W``-``8W`` tokens from training documents, with the LM loss on the long input
    (``lm_loss``) or on the answers only; shuffled."""
    W, L, tokenizer = ch.W, 8 * ch.W, ch.tokenizer
    pool = evaluate.pool(tokenizer, ch.tokens, "train")
    short_lengths = pick(ch.profile, tiny=(160, 250), cpu=(W // 2, W), gpu=(W // 4, W))
    n = sft.steps * sft.rows_per_step
    short_rows = [
        row
        for i, task in enumerate(SHORT_TASKS)
        for row in row_builders.task_sft_rows(
            task, tokenizer, n // (2 * len(SHORT_TASKS)), L, 100 * seed + i, pool, short_lengths
        )
    ]
    long_rows = row_builders.task_sft_rows(
        "self_instruct", tokenizer, n - len(short_rows), L, seed, pool, (2 * W, L - 1), lm_loss
    )
    rows = short_rows + long_rows
    random.Random(seed).shuffle(rows)
    return rows


def instruction_tune(ch, abf_run, sft: train.Recipe, seed: int, lm_loss: bool):
    """An ABF run fine-tuned on :func:`sft_rows` (its folder)."""
    return train.fine_tune(
        abf_run,
        ch.tokenizer,
        dataclasses.replace(sft, seed=seed),
        f"l2long-sft-{'lm' if lm_loss else 'answers'}-{ch.profile}",
        sft_rows(ch, sft, seed, lm_loss),
    )


def instruction_tuning(ch, runs: dict, sft: train.Recipe, seeds, n: int) -> pd.DataFrame:
    """Table 9 at our scale: per seed, :func:`qa` of the ABF run (``runs[("ABF", seed)]``) as it
    is, and instruction-tuned on answers only and with the LM loss on the long input; one row per
    (setting, seed, task, length)."""
    scores = []
    for seed in seeds:
        abf_run = runs["ABF", seed]
        base = qa(ch, evaluate.Ref.of(abf_run), n)
        scores.append(base.assign(setting="ABF, not instruction-tuned", seed=seed))
        for lm_loss in (False, True):
            tuned = evaluate.Ref.of(instruction_tune(ch, abf_run, sft, seed, lm_loss))
            setting = "with LM loss on the input" if lm_loss else "answers only (w/o LM loss)"
            scores.append(qa(ch, tuned, n).assign(setting=setting, seed=seed))
    return pd.concat(scores, ignore_index=True)


def qa(ch, ref: evaluate.Ref, n: int) -> pd.DataFrame:
    """L6's downstream QA (held-out self-instruct and document QA, token F1) at ``2W``..``8W``;
    the headline rows of the suite."""
    W = ch.W
    lengths = pick(ch.profile, tiny=[8 * W], cpu=[2 * W, 4 * W, 8 * W], gpu=[2 * W, 4 * W, 8 * W])
    t = evaluate.suite(ref, ch.tokenizer, ch.tokens, QA_TASKS, lengths, n)
    return t[t.headline]
