"""Llama 2 Long (Xiong et al., 2023, "Effective Long-Context Scaling of Foundation Models"): the
positional-encoding ablation of §4.1 (Table 5: RoPE, PI, ABF, xPos-ABF) by continual pretraining
at 32K, the length curriculum of §4.4 (Tables 10-11), and instruction tuning with the LM loss on
the long input (§4.3, Table 9); with the paper's numbers the chapter sets its results beside, the
control run that "short quality is kept" is judged against, and the per-seed, per-example tables
the verdict engine judges claims L1-L7 from (``l1_results`` ... ``l7_results``, the parts of
:mod:`lcx.claims`).

Lengths are in units of the base model's native window ``W`` (the paper's 4K), so 32K is ``8 * W``.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from . import budget, evaluate, models, train, verdicts
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
TABLE_5 = {  # validation perplexity at 32,768 tokens: Books, CC (CommonCrawl), Wikipedia
    "RoPE": (6.548, 6.816, 3.802),
    "PI": (6.341, 6.786, 3.775),
    "ABF": (6.323, 6.780, 3.771),
    "xPos-ABF": (6.331, 6.780, 3.771),
}
TABLE_5_BOOKS = {v: ppl[0] for v, ppl in TABLE_5.items()}
TABLE_10_FLOPS = {0.0: 3.783e22, 0.2: 3.405e22, 0.4: 3.026e22, 0.8: 2.270e22}  # by switch point
SWITCHES = tuple(TABLE_10_FLOPS)  # 0.0: 32K from scratch; else 4K first, 32K after that share
SHORT_TASKS = ("doc_qa", "json_kv", "passkey")  # the short instruction data ("RLHF V5" stand-in)
QA_TASKS = ["self_instruct", "doc_qa"]  # the downstream QA of L6 (Qasper, NarrativeQA stand-ins)

# What the registry's floors and gates (lcx.claims, claims L1-L7) compute with, fixed before any
# run; the reasons are the parts' ``why`` there.
FSR_METRIC = "rougeL"  # FIRST-SENTENCE-RETRIEVAL's headline metric (lcx.tasks)
# ROUGE-L at or below which a model retrieves nothing: copying the line after the first sentence
# scores 0.14-0.16 on average (the tiny corpus's held-out code, 150 examples at W and 8W), a line
# from the middle of the text 0.03-0.06 (measured on the corpus, no model involved)
FSR_FLOOR = 0.2
FIT_R2_GATE = 0.5  # a power law to compare: both sizes' fits explain half the loss's variance
FLOPS_TOLERANCE = 0.01  # our FLOPs ratios against Table 10's (relative), and the 80% saving
CONTROL = "continued at W"  # L4's control arm
SETTINGS = {  # Table 9's rows at our scale (L6's arms)
    None: "ABF, not instruction-tuned",
    False: "answers only",
    True: "with LM loss",
}


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
    return train.rehearsed(
        train.Recipe(
            seq_len=L,  # paper: 32,768
            # paper: 400B tokens over 100,000 steps of 4M (2^22: 128 rows of 32K)
            tokens=pick(
                profile, tiny=L * 2 * 4, cpu=400_000, gpu=100_000 * 4 * train.MILLION_TOKENS
            ),
            batch_tokens=pick(profile, tiny=L * 2, cpu=2 * L, gpu=4 * train.MILLION_TOKENS),
            lr=pick(profile, tiny=1e-3, cpu=1e-3, gpu=2e-5),  # paper: 2e-5, cosine, 2000 warm-up
            warmup=pick(profile, tiny=0.1, cpu=0.05, gpu=2000),
            min_lr_ratio=0.1,
            mixture={"books": 1.0, "prose": 1.0, "code": 1.0, "short": 1.0},
            formats={"first_sentence": 0.2, "passkey": 0.1},
            document_masking=True,
            bf16=profile != "tiny",
            save_every=50,
            **train.gpu_layout(profile),
        )
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


def control_recipe(recipe: train.Recipe, W: int) -> train.Recipe:
    """L4's control (issue 18): :func:`recipe` at the native window ``W``, the same tokens, tokens
    per step (so the same steps), learning rate and mix, RoPE unchanged. The long run and the
    control then differ only in sequence length (and RoPE), so "short quality is kept" compares
    long training with as much training at ``W``, not with the base model before more training."""
    return dataclasses.replace(recipe, seq_len=W)


def control(ch, recipe: train.Recipe, b0: float, seed: int):
    """The control run of one seed (its folder): the base model (RoPE base ``b0``) continued at
    ``W`` by :func:`control_recipe`."""
    return train.run(
        models.with_rope(ch.base_net, **variants(b0, ch.W)["RoPE"]),
        ch.tokens,
        ch.tokenizer,
        dataclasses.replace(control_recipe(recipe, ch.W), seed=seed),
        inputs=[ch.tokens.key, ch.tokenizer.key, ch.base_ref.key],
        name=f"l2long-control-{ch.profile}",
    )


def ppl_windows(ch, refs: dict, n_windows: int) -> pd.DataFrame:
    """Table 5's reading, window by window: each model's mean NLL (nats per token) on
    ``n_windows`` held-out windows of ``8 * W`` per domain (books, prose, code where the test
    split has them), the same windows for every model; ``refs``: (variant, seed) -> model. One
    row per variant, seed, domain and window."""
    test_domains = set(ch.tokens["test"]["domain"])
    frames = []
    for (name, seed), ref in refs.items():
        for d in [d for d in ("books", "prose", "code") if d in test_domains]:
            t = evaluate.perplexity_windows(
                ref, ch.tokenizer, ch.tokens, [8 * ch.W], n_windows, domains=[d]
            )
            frames.append(t[["window", "nll"]].assign(variant=name, seed=seed, domain=d))
    return pd.concat(frames, ignore_index=True)[["variant", "seed", "domain", "window", "nll"]]


def fsr_examples(ch, refs: dict, lengths, n: int) -> pd.DataFrame:
    """Fig. 5b's FIRST-SENTENCE-RETRIEVAL by length, example by example: ``refs`` (arm, seed) ->
    model; one row per arm, seed, length, example and metric (ROUGE-L, exact match, ...), the
    same prompts for every model."""
    frames = []
    for (arm, seed), ref in refs.items():
        t = evaluate.suite_examples(ref, ch.tokenizer, ch.tokens, ["first_sentence"], lengths, n)
        t = t[t.metric.notna()]
        frames.append(t[["length", "example", "metric", "score"]].assign(arm=arm, seed=seed))
    return pd.concat(frames, ignore_index=True)[
        ["arm", "seed", "length", "example", "metric", "score"]
    ]


def label(arm: str, seed: int) -> str:
    """A model's name in the chapter's tables and figures."""
    return "base (no extension)" if arm == "base" else f"{arm} (seed {seed})"


def fsr_by_length(examples: pd.DataFrame, metric: str = FSR_METRIC) -> pd.DataFrame:
    """:func:`fsr_examples`' mean ``metric`` per length (rows) and model (columns, :func:`label`)."""
    t = examples[examples.metric == metric]
    means = t.groupby(["arm", "seed", "length"], sort=False).score.mean()
    return pd.DataFrame(
        {label(a, s): means.loc[a, s] for a, s in dict.fromkeys(zip(t.arm, t.seed, strict=True))}
    )


def span_loss(nll, lo: int, hi: int) -> np.ndarray:
    """Each window's mean NLL over positions ``(lo, hi]`` (a windows x positions array of
    :func:`lcx.evaluate.nll`, whose column ``j`` predicts token ``j + 1``: position ``j + 1``)."""
    nll = np.asarray(nll, dtype=float)
    if not 0 <= lo < hi <= nll.shape[1]:
        raise ValueError(f"positions ({lo}, {hi}] are not inside windows of {nll.shape[1]}")
    return nll[:, lo:hi].mean(1)


def context_gain(nll, W: int) -> np.ndarray:
    """Per window, the loss over ``(4W, 8W]`` (or to the window's end) minus the loss over
    ``(W/2, W]``: negative when a model predicts better with more context, the premise of Fig. 1's
    law and of Table 11's long-context quality."""
    n = np.shape(nll)[1]
    return span_loss(nll, 4 * W, min(8 * W, n)) - span_loss(nll, W // 2, W)


def rise_past(nll, T: int) -> np.ndarray:
    """App. C per window: the loss over ``(T, 2T]`` (or to the window's end) minus the loss over
    ``(T/2, T]``, for a model trained at length ``T`` (positive: the loss rises past it)."""
    n = np.shape(nll)[1]
    return span_loss(nll, T, min(2 * T, n)) - span_loss(nll, T // 2, T)


SPANS = ((0.5, 1), (1, 2), (4, 8), (8, 16))  # App. C's readings, in units of W


def span_table(nlls: dict, W: int) -> pd.DataFrame:
    """App. C's table: each model's mean loss over the :data:`SPANS` of its windows (``nlls``:
    (arm, seed) -> token NLLs of ``16 * W`` windows; rows named by :func:`label`)."""
    return pd.DataFrame(
        {
            f"({lo:g}W, {hi:g}W]": {
                label(*k): float(span_loss(v, int(lo * W), min(int(hi * W), v.shape[1])).mean())
                for k, v in nlls.items()
            }
            for lo, hi in SPANS
        }
    )


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
    return train.rehearsed(
        train.Recipe(
            seq_len=L,  # paper: 32,768
            tokens=pick(
                profile, tiny=L * 2 * 4, cpu=240_000, gpu=100_000 * 4 * train.MILLION_TOKENS
            ),
            # paper: 4M at both lengths (2^22: 1,024 rows of 4K, 128 of 32K)
            batch_tokens=pick(profile, tiny=L * 2, cpu=2 * L, gpu=4 * train.MILLION_TOKENS),
            lr=pick(profile, tiny=2e-3, cpu=2e-3, gpu=3e-4),  # paper: Llama 2's 3e-4 for 7B
            warmup=pick(profile, tiny=0.1, cpu=0.05, gpu=2000),
            min_lr_ratio=0.1,
            mixture={"books": 1.0, "prose": 1.0, "code": 1.0, "short": 1.0},
            document_masking=True,
            bf16=profile != "tiny",
            save_every=50,
            **train.gpu_layout(profile),
        )
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


def fit_contexts(W: int, n: int = 24) -> np.ndarray:
    """The context lengths Fig. 1's law is fitted on (issue 18): ``n`` log-spaced lengths from
    ``W`` to ``8 * W - 1`` (windows of ``8 * W`` tokens score ``8 * W - 1``), so the fit describes
    the extended range rather than the first few hundred tokens, where the loss falls fastest."""
    return np.unique(np.geomspace(W, 8 * W - 1, n).astype(int))


def beta(nll, contexts) -> float:
    """Fig. 1's ``beta`` of one run: :func:`lcx.evaluate.fit_power_law` of :func:`loss_of_first`
    (weighted by its standard errors) over ``contexts``."""
    from scipy.optimize import OptimizeWarning

    y, sd = loss_of_first([np.asarray(nll, dtype=float)], contexts)
    with warnings.catch_warnings():  # only beta is used, not the covariance it warns about
        warnings.simplefilter("ignore", OptimizeWarning)
        return evaluate.fit_power_law(contexts, y, sigma=sd)["beta"]


def jackknife(values, statistic) -> np.ndarray:
    """Tukey's jackknife pseudo-values of ``statistic`` over the rows of ``values`` (here the
    held-out windows): ``n * stat(all) - (n - 1) * stat(all but row i)``. Their mean is the
    jackknife estimate and their variance over ``n`` its sampling variance, so the verdict engine
    can treat them as one value per window, which is how a fitted parameter (Fig. 1's ``beta``)
    becomes a part with an interval; the same window deleted for two models makes their
    difference's pseudo-values the difference of theirs."""
    values = np.asarray(values)
    n = len(values)
    if n < 3:
        raise ValueError(f"a jackknife needs at least 3 rows, not {n}")
    full = statistic(values)
    loo = np.array([statistic(np.delete(values, i, axis=0)) for i in range(n)])
    return n * full - (n - 1) * loo


def curricula(ch, scratch: train.Recipe, size: str, seeds, b0: float, n_windows: int):
    """§4.4 (Tables 10-11) at our scale: a ``size`` model from scratch at ``8 * W`` and with each
    curriculum of :data:`SWITCHES`, per seed. Returns the runs ((switch, seed) -> folder), a row
    per run (perplexity of held-out ``8 * W`` windows, and the loss over 4W-8W minus the loss over
    W/2-W: more negative, more use of long context) and a row per run and window (its mean NLL,
    the same windows for every run)."""
    W, L = ch.W, 8 * ch.W
    runs = {(x, s): scratch_run(ch, scratch, size, x, s, b0) for s in seeds for x in SWITCHES}
    rows, per_window = [], []
    for (x, s), run in runs.items():
        nll = evaluate.nll(evaluate.Ref.of(run), ch.tokenizer, ch.tokens, L, n_windows, W, 4)
        name = curriculum_name(x)
        rows.append(
            {
                "curriculum": name,
                "switch": x,
                "seed": s,
                "ppl_8w": float(np.exp(nll.mean())),
                "late_minus_early": float(context_gain(nll, W).mean()),
            }
        )
        per_window.append(
            pd.DataFrame(
                {"curriculum": name, "seed": s, "window": range(len(nll)), "nll": nll.mean(1)}
            )
        )
    return runs, pd.DataFrame(rows), pd.concat(per_window, ignore_index=True)


def curriculum_name(switch: float) -> str:
    """Table 10's row names at our scale (L5b's arms)."""
    return "8W from scratch" if switch == 0 else f"W -> 8W at {switch:.0%}"


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


def size_nlls(ch, scratch: train.Recipe, sizes, seeds, b0: float, n_windows: int) -> dict:
    """Fig. 1's runs for each model size trained from scratch at ``8 * W``: (size, seed) -> the
    token NLLs of ``n_windows`` held-out ``8 * W`` windows starting ``W`` into their documents
    (the same windows for every run), and size -> the model's parameter count."""
    nlls, params = {}, {}
    for size in sizes:
        for s in seeds:
            run = scratch_run(ch, scratch, size, 0.0, s, b0)
            nlls[size, s] = evaluate.nll(
                evaluate.Ref.of(run), ch.tokenizer, ch.tokens, 8 * ch.W, n_windows, ch.W, 4
            )
            params.setdefault(size, models.count_parameters(train.load_run(run)))
    return nlls, params


def size_fits(nlls: dict, params: dict, contexts) -> dict:
    """Fig. 1's power law for each size of :func:`size_nlls` (seeds averaged window by window):
    size -> (loss of the first c tokens, its standard error, the fit of
    :func:`lcx.evaluate.fit_power_law` with the model's parameter count)."""
    fits = {}
    for size in params:
        y, sd = loss_of_first([n for (z, _), n in nlls.items() if z == size], contexts)
        fit = evaluate.fit_power_law(contexts, y, sigma=sd)
        fits[size] = (y, sd, {**fit, "params": params[size]})
    return fits


def sft_recipe(profile: str, W: int) -> train.Recipe:
    """Long instruction tuning at ``8 * W`` (§4.3)."""
    L = 8 * W
    return train.rehearsed(
        train.Recipe(
            seq_len=L,  # paper: 32,768
            tokens=pick(profile, tiny=L * 2 * 2, cpu=48 * 2 * L, gpu=200_000_000),
            # the paper gives no batch: 64 rows of 32K on gpu, which 1-64 GPUs divide (one row each)
            batch_tokens=pick(profile, tiny=2 * L, cpu=2 * L, gpu=64 * L),
            lr=pick(profile, tiny=5e-4, cpu=5e-4, gpu=2e-5),  # paper: Llama 2 Chat's fine-tuning lr
            warmup=0.05,
            min_lr_ratio=0.1,
            bf16=profile != "tiny",
            save_every=50,
            **train.gpu_layout(profile),
        )
    )


def gpu_recipes(profile: str, W: int) -> list[train.Recipe]:
    """Every recipe chapter 04 trains on the base model (the extension at ``8 * W``, its control,
    the instruction tuning; the from-scratch curricula train a small model of their own), as it
    builds them: what :func:`lcx.chapter.setup` checks against the GPU's memory first."""
    long = recipe(profile, W)
    return [long, control_recipe(long, W), sft_recipe(profile, W)]


def sft_rows(ch, sft: train.Recipe, seed: int, lm_loss: bool):
    """§4.3's mix (App. D): half short instruction rows (answers only) and half self-instruct
    long QA of ``2W``-``8W`` tokens from training documents, with the LM loss on the long input
    (``lm_loss``) or on the answers only; shuffled (a list), or at paper scale a
    :class:`lcx.rows.Stream` whose parts are interleaved (:func:`lcx.rows.iter_mix`)."""
    W, L, tokenizer = ch.W, 8 * ch.W, ch.tokenizer
    pool = evaluate.pool(tokenizer, ch.tokens, "train")
    short_lengths = pick(ch.profile, tiny=(160, 250), cpu=(W // 2, W), gpu=(W // 4, W))
    n = sft.steps * sft.rows_per_step
    k = n // (2 * len(SHORT_TASKS))
    part = row_builders.task_part
    parts = {  # name -> (rows, maker of that many): the counts are the shares
        task: (k, part(task, tokenizer, L, 100 * seed + i, pool, short_lengths))
        for i, task in enumerate(SHORT_TASKS)
    }
    long = part("self_instruct", tokenizer, L, seed, pool, (2 * W, L - 1), lm_loss)
    parts["long self-instruct"] = (n - k * len(SHORT_TASKS), long)
    spec = [ch.tokens.key, tokenizer.key, seed, lm_loss, short_lengths, 2 * W]
    return row_builders.mixed(parts, n, seed, sft.stream_rows, L, spec)


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
    is, and instruction-tuned on answers only and with the LM loss on the long input (the
    settings of :data:`SETTINGS`); one row per setting, seed and QA example."""
    scores = []
    for seed in seeds:
        abf_run = runs["ABF", seed]
        base = qa(ch, evaluate.Ref.of(abf_run), n)
        scores.append(base.assign(setting=SETTINGS[None], seed=seed))
        for lm_loss in (False, True):
            tuned = evaluate.Ref.of(instruction_tune(ch, abf_run, sft, seed, lm_loss))
            scores.append(qa(ch, tuned, n).assign(setting=SETTINGS[lm_loss], seed=seed))
    return pd.concat(scores, ignore_index=True)


def qa(ch, ref: evaluate.Ref, n: int) -> pd.DataFrame:
    """L6's downstream QA (held-out self-instruct and document QA, token F1) at ``2W``..``8W``,
    example by example: the suite's headline rows (task, length, depth, example, score)."""
    W = ch.W
    lengths = pick(ch.profile, tiny=[8 * W], cpu=[2 * W, 4 * W, 8 * W], gpu=[2 * W, 4 * W, 8 * W])
    t = evaluate.suite_examples(ref, ch.tokenizer, ch.tokens, QA_TASKS, lengths, n)
    return t[t.headline][["task", "length", "depth", "example", "score"]]


def short_docs(ch, refs: dict) -> pd.DataFrame:
    """L4's reading: each model's mean NLL on every held-out short document (up to ``W``
    tokens, :func:`lcx.evaluate.short_nll_docs`); ``refs``: (arm, seed) -> model. One row per
    arm, seed and document."""
    frames = [
        evaluate.short_nll_docs(ref, ch.tokenizer, ch.tokens, ch.W)[["doc", "nll"]].assign(
            arm=arm, seed=seed
        )
        for (arm, seed), ref in refs.items()
    ]
    return pd.concat(frames, ignore_index=True)[["arm", "seed", "doc", "nll"]]


# --- the scorecard's results, claim by claim (the parts of lcx.claims, block 04) ----------------
# Each builder turns the chapter's per-seed, per-example readings into what Scorecard.judge takes:
# part name -> results table (columns arm, seed, example, value; the registry's arm names) or
# (holds, ours) for an arithmetic part, and part name -> (passed, reason) for the gated parts.

NOT_RUN = "not run on this profile (run_scratch=True runs the models trained from scratch)"


def not_run(claim: str, reason: str = NOT_RUN) -> dict:
    """Every part of ``claim`` marked as not run here, with ``reason``."""
    from .claims import CLAIMS

    return {p.name: reason for p in CLAIMS[claim].parts}


def values(frame: pd.DataFrame, arm: str, value: str, example) -> pd.DataFrame:
    """The verdict engine's table (:func:`lcx.verdicts.table`) from a long ``frame`` with a
    ``seed`` column: arm from column ``arm``, value from ``value``, the example's label joined
    from the ``example`` columns (the same label in two arms is the same evaluation example)."""
    out = {}
    for (a, s), g in frame.groupby([arm, "seed"], sort=False):
        labels = g[list(example)].astype(str).agg(":".join, axis=1).to_numpy()
        out[a, s] = pd.Series(g[value].to_numpy(dtype=float), index=labels)
    return verdicts.table(out)


def l1_results(ppl: pd.DataFrame, fsr: pd.DataFrame, W: int) -> dict:
    """L1 (Table 5, Fig. 5b): :func:`ppl_windows`' NLL at ``8 * W`` paired by domain and window,
    and :func:`fsr_examples`' ROUGE-L at ``8 * W`` paired by example."""
    ppl_t = values(ppl, "variant", "nll", ["domain", "window"])
    at_8w = fsr[(fsr.length == 8 * W) & (fsr.metric == FSR_METRIC) & (fsr.arm != "base")]
    fsr_t = values(at_8w, "arm", "score", ["example"])
    return {
        "ppl: PI below RoPE": ppl_t,
        "ppl: ABF below PI": ppl_t,
        "FSR at 8W: ABF above RoPE": fsr_t,
        "FSR at 8W: ABF above PI": fsr_t,
        "FSR at 8W: ABF above xPos-ABF": fsr_t,
    }


def l2_results(fsr: pd.DataFrame, W: int) -> tuple[dict, dict]:
    """L2 (§4.1) on FIRST-SENTENCE-RETRIEVAL by length, the paper's measure: past ``1.5 * W``
    (every length of :func:`fsr_examples` above it) unchanged RoPE against ABF, paired by length
    and example, and against its own examples at ``W``; both gated on RoPE retrieving at ``W``
    (above :data:`FSR_FLOOR`), which makes a loss past ``1.5 * W`` a matter of length."""
    t = fsr[fsr.metric == FSR_METRIC]
    past = t[t.length > 1.5 * W]
    if past.empty or not (t.length == W).any():
        raise ValueError(f"L2 needs FIRST-SENTENCE-RETRIEVAL at W={W} and past 1.5W")
    rope = t[t.arm == "RoPE"]
    own = pd.concat(
        [
            rope[rope.length == W].assign(arm="RoPE at W"),
            rope[rope.length > 1.5 * W].assign(arm="RoPE past 1.5W"),
        ]
    )
    at_w = float(rope[rope.length == W].score.mean())
    gate = (
        at_w > FSR_FLOOR,
        f"unchanged RoPE's FSR ROUGE-L at W: {at_w:.3f} (needs > {FSR_FLOOR:g} to retrieve)",
    )
    results = {
        "FSR past 1.5W: RoPE below ABF": values(
            past[past.arm.isin(["ABF", "RoPE"])], "arm", "score", ["length", "example"]
        ),
        "FSR: RoPE past 1.5W below its own at W": values(
            own, "arm", "score", ["length", "example"]
        ),
    }
    return results, dict.fromkeys(results, gate)


def _beta_pseudovalues(nll, contexts) -> np.ndarray:
    return jackknife(np.asarray(nll, dtype=float), lambda v: beta(v, contexts))


def l3_results(nlls: dict, contexts, W: int) -> tuple[dict, dict]:
    """L3 (Fig. 1): the ABF model's ``beta`` fitted on ``contexts`` (:func:`fit_contexts`), per
    seed (``nlls``: seed -> token NLLs of held-out ``8 * W`` windows starting ``W`` into their
    documents, the same windows for every seed) as jackknife pseudo-values over the windows
    (:func:`jackknife`), against ``beta = 0`` (no gain from context); gated on the model gaining
    from context at all (:func:`context_gain` below 0, averaged over seeds and windows), without
    which a power law in context describes nothing. A fit that fails on a subsample leaves the
    part untested, with the reason."""
    name = "beta above 0"
    gain = float(np.mean([context_gain(nll, W).mean() for nll in nlls.values()]))
    gate = (
        gain < 0,
        f"ABF's loss over 4W-8W minus over W/2-W: {gain:+.3f} nats (needs < 0: gains from context)",
    )
    out = {}
    try:
        for seed, nll in nlls.items():
            p = _beta_pseudovalues(nll, contexts)
            out["ABF", seed] = pd.Series(p)
            out["beta = 0", seed] = pd.Series(np.zeros(len(p)))
    except (RuntimeError, ValueError) as err:
        return {name: f"the power law could not be fitted on a jackknife subsample: {err}"}, {}
    return {name: verdicts.table(out)}, {name: gate}


def l3b_results(nlls: dict, sizes, contexts, fits: dict) -> tuple[dict, dict]:
    """L3b (Fig. 1): ``beta`` of the larger of ``sizes`` (smaller, larger) minus the smaller's,
    per seed, as jackknife pseudo-values over the same windows (``nlls``: (size, seed) -> token
    NLLs of :func:`size_nlls`); gated on both sizes' seed-averaged fits (``fits`` of
    :func:`size_fits`) reaching R^2 >= :data:`FIT_R2_GATE`."""
    smaller, larger = sizes
    name = "beta: larger model above smaller"
    r2 = {size: fits[size][2]["r2"] for size in sizes}
    gate = (
        min(r2.values()) >= FIT_R2_GATE,
        "fits' R^2 "
        + ", ".join(f"{s} {v:.3f}" for s, v in r2.items())
        + f" (needs >= {FIT_R2_GATE:g})",
    )
    arms = {smaller: "smaller model", larger: "larger model"}
    out = {}
    try:
        for (size, seed), nll in nlls.items():
            if size in arms:
                out[arms[size], seed] = pd.Series(_beta_pseudovalues(nll, contexts))
    except (RuntimeError, ValueError) as err:
        return {name: f"the power law could not be fitted on a jackknife subsample: {err}"}, {}
    return {name: verdicts.table(out)}, {name: gate}


def l4_results(docs: pd.DataFrame) -> dict:
    """L4 (Table 6): :func:`short_docs`' NLL of the ABF runs against the control continued at
    ``W`` (:data:`CONTROL`), paired by document."""
    return {"short NLL: ABF kept against the control": values(docs, "arm", "nll", ["doc"])}


def l5_results(flops: pd.DataFrame) -> dict:
    """L5 (Table 10), arithmetic: our FLOPs ratios to from scratch (:func:`flops_table`) against
    the paper's at every switch, and the saving switching at 80% against Table 10's, both within
    :data:`FLOPS_TOLERANCE`."""
    ours, paper = flops["ours / from scratch"], flops["paper / from scratch"]
    saving, paper_saving = 1 - ours.iloc[-1], 1 - paper.iloc[-1]
    return {
        "FLOPs ratios match Table 10": (
            bool(np.allclose(ours, paper, rtol=FLOPS_TOLERANCE, atol=0)),
            "ours "
            + ", ".join(f"{x:.3f}" for x in ours)
            + "; Table 10 "
            + ", ".join(f"{x:.3f}" for x in paper),
        ),
        "switching at 80% saves ~40%": (
            bool(abs(saving - paper_saving) <= FLOPS_TOLERANCE),
            f"{saving:.1%} (Table 10: {paper_saving:.1%})",
        ),
    }


def l5b_results(per_window: pd.DataFrame, per_run: pd.DataFrame) -> tuple[dict, dict]:
    """L5b (Tables 10-11): each curriculum's NLL at ``8 * W`` against from scratch, paired by
    window (:func:`curricula`); gated on the from-scratch model using its long context (its loss
    over 4W-8W below its loss over W/2-W, averaged over seeds), without which there is no
    long-context quality to match."""
    scratch = per_run[per_run.switch == 0]["late_minus_early"].mean()
    gate = (
        bool(scratch < 0),
        f"from scratch, loss over 4W-8W minus over W/2-W: {scratch:+.3f} nats (needs < 0: "
        "uses context)",
    )
    table = values(per_window, "curriculum", "nll", ["window"])
    names = [f"8W NLL: {curriculum_name(x)} matches from scratch" for x in SWITCHES if x > 0]
    return dict.fromkeys(names, table), dict.fromkeys(names, gate)


def l6_results(scores: pd.DataFrame) -> dict:
    """L6 (Table 9): QA F1 of the fine-tune with the LM loss on the long input against answers
    only (:func:`instruction_tuning`), paired by task, length, depth and example."""
    tuned = scores[scores.setting != SETTINGS[None]]
    return {
        "QA F1: with LM loss above answers only": values(
            tuned, "setting", "score", ["task", "length", "depth", "example"]
        )
    }


def l7_results(abf: dict, base, W: int) -> dict:
    """App. C per window (``abf``: seed -> token NLLs of ``16 * W`` windows; ``base``: the base
    model's, the same windows): ABF's loss past ``8 * W`` against its loss over 4W-8W, and the
    rise past the training length at twice it (:func:`rise_past`) of the base (trained at ``W``)
    against ABF's (at ``8 * W``). Every seed's ABF run started from this base, so the base is
    every seed's reference."""
    flat, rise = {}, {}
    for seed, nll in abf.items():
        flat["ABF (8W, 16W]", seed] = span_loss(nll, 8 * W, min(16 * W, nll.shape[1]))
        flat["ABF (4W, 8W]", seed] = span_loss(nll, 4 * W, 8 * W)
        rise["ABF", seed] = rise_past(nll, 8 * W)
        rise["base", seed] = rise_past(base, W)
    return {
        "ABF flat past 8W": verdicts.table({k: pd.Series(v) for k, v in flat.items()}),
        "base rises past its window more than ABF": verdicts.table(
            {k: pd.Series(v) for k, v in rise.items()}
        ),
    }
