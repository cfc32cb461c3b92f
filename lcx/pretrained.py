"""The short-context base models the extension chapters start from (chapter 02).

On ``tiny``/``cpu`` a base model is a tiny Llama trained from scratch at its native window W on the
local corpus, standing in for a paper model at its native window: ``llama2`` for Llama-2 at 4K with
base 10K, ``llama3`` for Llama-3 at 8K with base 500K. Its RoPE base *mirrors the paper model's
geometry* (:data:`lcx.claims.SCALING`): ``b_W = b_paper * (W / W_paper) ** (d / (d - 2))``, the NTK
formula run backwards, so the rotation angles at kW are those the paper model sees at kW_paper.
``llama2-paperbase`` keeps the paper's base (10K) at W, the contrast chapter 02 shows.
On ``gpu``/``paper`` the base model is the released checkpoint.

Every chapter gets a base model through :func:`base_model`, which loads it from the cache or trains
it once (the recipe below is its single source of truth).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from . import data, evaluate, models, rope, train, verdicts
from .profiles import PROFILES, REHEARSAL_DIVISOR, check, pick, rehearsal


@dataclass(frozen=True)
class StandIn:
    paper_model: str  # hub id of the model it stands for
    paper_window: int
    paper_base: float
    mirror: bool  # scale the base to the window (True) or keep the paper's base


BASES = {
    "llama2": StandIn("meta-llama/Llama-2-7b-hf", 4096, 1e4, mirror=True),
    "llama2-paperbase": StandIn("meta-llama/Llama-2-7b-hf", 4096, 1e4, mirror=False),
    "llama3": StandIn("meta-llama/Meta-Llama-3-8B-Instruct", 8192, 5e5, mirror=True),
}

# Llama 2's pretraining (Touvron et al., 2023, §2.2), the recipe the stand-ins scale down
LLAMA2_PRETRAINING = {
    "seq_len": "4,096",
    "tokens": "2T",
    "batch_tokens": "4M",
    "lr": "3e-4",
    "schedule": "cosine",
    "warmup": "2,000 steps",
    "min_lr_ratio": "0.1",
    "betas": "(0.9, 0.95)",
    "weight_decay": "0.1",
    "grad_clip": "1.0",
    "formats": "none (no format training)",
}

# Per profile: model size, native window W, and the pretraining stages (paper: Llama 2 saw 2T
# tokens at 4K, no task formats). Stage 1 is language modelling with passkey rows as a length
# curriculum: one run per sequence length in ``lengths`` (the last is W), each with ``tokens`` and
# its own warm-up and cosine. Stage 2 adds the formats of every probe task (lcx.tasks) at W with
# its own warm-up and cosine at a lower LR.
SETUP = {
    "tiny": dict(
        size="tiny",
        window=128,
        attempts=1,  # the tiny model never copies across the filler: one attempt
        lengths=(96, 128),  # a passkey prompt needs 95 tokens with the tiny tokenizer
        tokens=128 * 16 * 30,
        format_tokens=128 * 16 * 20,
        batch_tokens=128 * 16,
        lr=3e-3,
        format_lr=1.5e-3,
        bf16=False,
    ),
    "cpu": dict(
        size="small",
        window=256,
        attempts=4,
        # a base's initialisation that copied in the cold build at 7045648 on this machine, tried
        # first (:func:`attempts`; the others try init 0 first, which copied for them there): the
        # runs are bitwise reproducible here (init 0's stage 1 of the mirrored Llama 2 stand-in
        # retrained at a9b16c4: identical losses, exact 0.86 at 128 again), so this skips the
        # try that failed there (~2.9 minutes)
        first_inits={"llama2": 1000},
        lengths=(64, 128, 256),
        tokens=1_000_000,
        format_tokens=1_500_000,
        batch_tokens=2048,
        lr=2e-3,
        format_lr=1e-3,
        bf16=True,
    ),
}
# Stage 1: tiny models learn retrieval only when a copy task is a large share of their rows.
# Measured here (issue 19; `small`, mirrored base 571.5, W = 256, half the rows passkey rows,
# teacher-forced exact match at W): 4M tokens at W, or 2.5M then the formats -> 0 exact (the key is
# copied a few tokens after it is seen, near_copy ~0.98, but not across the filler); short passkey
# examples packed with a growing maximum length -> 0.15; one full-length example per row with the
# key-to-question distance growing -> 0.00; the length curriculum (1M tokens at 64, 128, then 256)
# -> 0.09 and 1.00 on two initialisations, 0.12 after 1M more tokens at 256 for the first; with
# Llama-3's mirrored base (14K) 0.19; with 4 heads instead of 2, 1.00, 1.00 and 0.19. The copy
# across the filler is a threshold event that some initialisations reach and others do not,
# whatever the size, base or tokens tried: hence the attempts (:func:`attempts`). Every format at
# once from the start (4M tokens, 20% passkey) left passkey at chance; hence the formats stage.
STAGE1_FORMATS = {"passkey": 0.5}
STAGE2_FORMATS_TINY = {  # topic, multi-doc QA and re-rank need more than 128 tokens
    "passkey": 0.2,
    "needle": 0.1,
    "first_sentence": 0.1,
    "json_kv": 0.05,
    "icl": 0.1,
    "doc_qa": 0.1,
    "summary": 0.05,
}
STAGE2_FORMATS = {
    "passkey": 0.15,
    "needle": 0.1,
    "first_sentence": 0.05,
    "json_kv": 0.05,
    "topic": 0.1,
    "multidoc_qa": 0.1,
    "rerank": 0.05,
    "icl": 0.1,
    "doc_qa": 0.1,
    "summary": 0.05,
}


# The gate's sample sizes at W: passkey examples per depth, probe-suite examples per task (split
# over the depths of the tasks that have one), held-out windows of the far-context test.
GATE_DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
GATE_PASSKEY_N = {"tiny": 2, "cpu": 20, "gpu": 20}
GATE_SUITE_N = {"tiny": 2, "cpu": 40, "gpu": 40}
GATE_WINDOWS = {"tiny": 8, "cpu": 1024, "gpu": 96}


def gate_n(profile: str, sizes: dict) -> int:
    """A gate sample size of ``profile`` (one of the tables above); the rehearsal's random
    stand-ins take the tiny profile's (``make rehearsal``: the code path, not the numbers)."""
    return pick("tiny" if rehearsal() else profile, **sizes)


def window(profile: str, name: str = "llama2") -> int:
    """The native window W of base model ``name`` on ``profile``: the stand-ins' on tiny and cpu
    (every stand-in is trained at the same W), the released model's on gpu (Llama 2's 4,096,
    Llama 3's 8,192), which the chapters' lengths are multiples of."""
    if profile in ("gpu", "paper"):  # at toy size in the rehearsal on a CPU (lcx.profiles)
        return BASES[name].paper_window // (REHEARSAL_DIVISOR if rehearsal() else 1)
    return pick(profile, tiny=SETUP["tiny"]["window"], cpu=SETUP["cpu"]["window"])


def head_dim(profile: str) -> int:
    return 128 if profile in ("gpu", "paper") else models.SIZES[SETUP[profile]["size"]]["head_dim"]


def rope_base(name: str, profile: str) -> float:
    """The base model's RoPE base on ``profile`` (mirrored to its window, or the paper's)."""
    b = BASES[name]
    if profile in ("gpu", "paper") or not b.mirror:
        return b.paper_base
    return rope.ntk_base(b.paper_base, window(profile) / b.paper_window, head_dim(profile))


def stages(profile: str, seed: int = 0) -> dict[str, train.Recipe]:
    """The base model's pretraining stages in order, name -> recipe: stage 1's length curriculum
    (``"<n> tokens"``: LM + passkey rows at each length of ``SETUP[profile]["lengths"]``), then
    ``"formats"`` (+ every probe task's format, at W). None on gpu/paper: the base model is the
    released checkpoint."""
    if profile in ("gpu", "paper"):
        return {}
    s = SETUP[profile]
    common = dict(
        batch_tokens=s["batch_tokens"],
        schedule="cosine",
        warmup=0.05,
        min_lr_ratio=0.1,
        betas=(0.9, 0.95),
        weight_decay=0.1,
        mixture={"code": 1.0, "books": 1.0, "prose": 1.0, "short": 1.0},
        bf16=s["bf16"],
        seed=seed,
        save_every=100,
    )
    out = {
        f"{n} tokens": train.Recipe(
            seq_len=n, tokens=s["tokens"], lr=s["lr"], formats=STAGE1_FORMATS, **common
        )
        for n in s["lengths"]
    }
    out["formats"] = train.Recipe(
        seq_len=s["window"],
        tokens=s["format_tokens"],
        lr=s["format_lr"],
        formats=STAGE2_FORMATS_TINY if profile == "tiny" else STAGE2_FORMATS,
        **common,
    )
    return out


def corpus_tokens(profile: str, name: str = "llama2"):
    """(tokenizer, tokenized corpus) for ``profile`` (both cached): the tokenizer trained on the
    corpus (tiny/cpu), or base model ``name``'s checkpoint tokenizer (gpu/paper)."""
    check("base model", name, tuple(BASES))
    corpus = data.load_corpus(profile)
    if profile in ("gpu", "paper"):
        tokenizer = models.load_tokenizer(profile, hub_name=BASES[name].paper_model)
    else:
        tokenizer = models.load_tokenizer(profile, corpus)
    return tokenizer, data.tokenize(corpus, tokenizer)


def _train(profile: str, name: str, init: int, labels, after=()) -> list:
    """The runs of stages ``labels`` (:func:`stages`, in order) of base model ``name`` from
    initialisation and data order ``init`` (or from the last of the runs ``after``), each from the
    one before; trained once and cached. Returns ``after``'s runs and the new ones."""
    tokenizer, tokens = corpus_tokens(profile, name)
    config = models.tiny_config(
        SETUP[profile]["size"], len(tokenizer), window(profile), rope_base(name, profile)
    )
    inputs = [tokens.key, tokenizer.key, f"init-{init}"]
    recipes, runs = stages(profile, init), list(after)
    for label in labels:
        start = models.new_model(config, init) if not runs else train.load_run(runs[-1])
        runs.append(
            train.run(
                start,
                tokens,
                tokenizer,
                recipes[label],
                inputs=[*inputs, *(r.name for r in runs[-1:])],
                name=f"base-{name}-{profile}-{label.replace(' ', '-')}",
            )
        )
    return runs


def attempts(profile: str, name: str = "llama2", seed: int = 0) -> pd.DataFrame:
    """Stage 1 from one initialisation after another (``seed``, ``seed + 1000``, ... up to
    ``SETUP[profile]["attempts"]``) until the model copies the passkey across the filler: exact
    match at W (:func:`passkey_exact`) at least :data:`lcx.claims.GATE_PASSKEY_EXACT`. The copy
    over a few tokens forms every time at this size, the copy across the filler in some runs
    only, a threshold event; the first run that has it goes on to the formats stage.

    Two savings, from what the cpu profile measured on the three bases (two initialisations
    each, issue 19): the copy is checked after every stage whose length holds a passkey prompt,
    and an attempt whose copy has not formed there stops (exact match after the 128-token stage
    was 0.16, 0.16, 0.19 for the attempts that ended at 0.09-0.19 at W and 0.99, 1.00, 1.00 for
    those that ended at 1.00: the W stage of a failed attempt decides nothing); and each base
    tries first the initialisation ``SETUP[profile]["first_inits"]`` names for it (when it is
    one of its attempts), the one that copied for it in a measured build. Which initialisation
    copies is a draw (the cold build at 7045648: init 0 stopped at 128 tokens for the mirrored
    Llama 2 stand-in, exact 0.86, and init 1000 for the paper-base and Llama-3 ones, 0.66 and
    0.35; the other one passed for each), but on one machine a fixed draw: the order saves the
    failed try and picks the same model as trying in order. On another machine the draw may
    differ, and the attempts go on in order after it. (Trying first, for the other bases, the
    initialisation that copied for Llama 2's, as an earlier rule did, cost two failed tries in
    that build.) One
    row per attempt: ``init``, ``length`` (of its last check), ``exact`` (passkey exact match
    there), ``passed`` (at W), ``runs`` (its stage-1 run folders); the runs and evaluations are
    cached, so a rerun reads the table without training."""
    from .claims import GATE_PASSKEY_EXACT
    from .tasks import passkey_min_length

    tokenizer, _ = corpus_tokens(profile, name)
    W, shortest = window(profile, name), passkey_min_length(tokenizer)
    recipes = stages(profile, seed)
    labels = [label for label in recipes if label != "formats"]
    inits = [seed + 1000 * k for k in range(SETUP[profile]["attempts"])]
    first = SETUP[profile].get("first_inits", {}).get(name)
    if first in inits:
        inits = [first, *(i for i in inits if i != first)]
    rows = []
    for init in inits:
        runs, length, exact = [], None, float("nan")
        for label in labels:
            runs = _train(profile, name, init, [label], after=runs)
            if recipes[label].seq_len < shortest:
                continue
            length = recipes[label].seq_len
            exact = passkey_exact(profile, evaluate.Ref.of(runs[-1]), tokenizer, length)
            if exact < GATE_PASSKEY_EXACT:
                break
        passed = length == W and exact >= GATE_PASSKEY_EXACT
        rows.append(
            {"init": init, "length": length, "exact": exact, "passed": passed, "runs": runs}
        )
        if passed:
            break
    return pd.DataFrame(rows)


def passkey_exact(profile: str, ref: evaluate.Ref, tokenizer, length: int) -> float:
    """Passkey exact match at ``length`` over the gate's depths and examples (at W, the gate's
    own evaluation, :func:`_gate_passkey`; cached)."""
    examples = evaluate.passkey_examples(
        ref, tokenizer, [length], GATE_DEPTHS, gate_n(profile, GATE_PASSKEY_N)
    )
    return float(examples["exact"].mean())


def _gate_passkey(profile: str, ref: evaluate.Ref, tokenizer, name: str = "llama2"):
    """The gate's passkey examples at W (:func:`lcx.evaluate.passkey_examples`, cached)."""
    return evaluate.passkey_examples(
        ref, tokenizer, [window(profile, name)], GATE_DEPTHS, gate_n(profile, GATE_PASSKEY_N)
    )


def base_runs(profile: str, name: str = "llama2", seed: int = 0) -> list:
    """The run folders of base model ``name``'s pretraining stages (:func:`stages`): stage 1 of
    the first of its :func:`attempts` that copies the passkey at W (or of the best one, when
    none does: the one that got furthest, then the best exact match there, its remaining
    stage-1 stages trained; its gate then fails), then the formats stage; trained here once and
    cached. ``[]`` on gpu/paper, where the base model is the released checkpoint."""
    check("profile", profile, PROFILES)
    check("base model", name, tuple(BASES))
    if profile in ("gpu", "paper"):
        return []
    tried = attempts(profile, name, seed).to_dict("records")
    best = next((a for a in tried if a["passed"]), None) or max(
        tried, key=lambda a: (len(a["runs"]), a["exact"])
    )
    rest = list(stages(profile, seed))[len(best["runs"]) :]  # stages it stopped before, formats
    return _train(profile, name, int(best["init"]), rest, after=best["runs"])


def base_model(profile: str, name: str = "llama2", seed: int = 0):
    """``(model, tokenizer, runs)``: the trained (or released) base model ``name`` and the run
    folders of its pretraining stages (:func:`base_runs`; ``[]`` for a released checkpoint)."""
    runs = base_runs(profile, name, seed)
    if not runs:
        hub = BASES[name].paper_model
        return models.load_pretrained(hub), models.load_tokenizer(profile, hub_name=hub), []
    return train.load_run(runs[-1]), corpus_tokens(profile, name)[0], runs


def ref(name: str, runs) -> evaluate.Ref:
    """Base model ``name`` as cached evaluations name it: its last pretraining stage's run, or
    the released checkpoint (``runs`` empty, on gpu/paper)."""
    return evaluate.Ref.of(runs[-1] if runs else BASES[name].paper_model)


def context_use(ppl, passkey, by_position, W: int) -> dict:
    """How a base model uses its window and fails past it (claim B1): ppl(16W) / ppl(W) from an
    ``evaluate.perplexity`` table; passkey per digit at W and its best at 8W-16W, and the copy
    inside the needle at W, from an ``evaluate.passkey`` grid; and the context gain, the loss of
    the first position bucket minus the mean loss over W/2-W, from ``evaluate.loss_by_position``."""
    p = ppl.set_index("length")
    by_length = passkey.groupby("length")[["per_digit", "near_copy"]].mean()
    t = by_position
    return {
        "ppl_ratio_16w_over_w": p.loc[16 * W, "ppl"] / p.loc[W, "ppl"],
        "passkey_per_digit_at_w": float(by_length.per_digit.loc[W]),
        "passkey_per_digit_8w_16w_max": float(by_length.per_digit.loc[[8 * W, 16 * W]].max()),
        "context_gain_nats": float(t.nll.iloc[0] - t[(t.start > W // 2) & (t.end <= W)].nll.mean()),
        "near_copy_at_w": float(by_length.near_copy.loc[W]),
    }


def b1_results(windows, passkey, W: int, seed: int = 0) -> dict:
    """Claim B1's results for :meth:`lcx.scorecard.Scorecard.judge` (part -> a
    :func:`lcx.verdicts.table`, or why the part could not run), from one base model's per-window
    NLL (:func:`lcx.evaluate.perplexity_windows`, lengths W, 8W, 16W) and per-example passkey
    (:func:`lcx.evaluate.passkey_examples`, or ``None``): the windows pair by index; a passkey
    example is its key and depth, its score past 8W the mean of its 8W and 16W scores."""
    nll = {n: g.set_index("window")["nll"] for n, g in windows.groupby("length")}
    out = {
        f"nll {k}W": verdicts.table({(f"{k}W", seed): nll[k * W], ("W", seed): nll[W]})
        for k in (8, 16)
    }
    lengths = set() if passkey is None else set(passkey["length"])
    if {W, 8 * W, 16 * W} <= lengths:
        by = passkey.assign(
            example=passkey.depth.map("{:g}".format) + "/" + passkey.example.astype(str)
        )
        at_w = by[by.length == W].set_index("example")["per_digit"]
        past = by[by.length.isin([8 * W, 16 * W])].groupby("example")["per_digit"].mean()
        out["passkey"] = verdicts.table({("8W-16W", seed): past, ("W", seed): at_w})
    else:
        out["passkey"] = (
            f"no passkey at W, 8W and 16W (lengths evaluated: {sorted(lengths)}; a prompt needs "
            "more tokens than W holds)"
        )
    return out


def b1_gates(passkey, W: int) -> dict:
    """B1's gate (:data:`lcx.claims.B1_PASSKEY_GATE`): the base model copies the passkey at W
    (mean per-digit accuracy) well enough for its failure past W to mean something."""
    from .claims import B1_PASSKEY_GATE, CLAIMS

    if passkey is None or W not in set(passkey["length"]):
        return {}
    at_w = float(passkey.loc[passkey.length == W, "per_digit"].mean())
    gate = CLAIMS["B1"].part("passkey").gate
    return {"passkey": (at_w >= B1_PASSKEY_GATE, f"{gate}: {at_w:.2f} here")}


def task_gate(suite_examples, W: int) -> pd.DataFrame:
    """Each probe task's headline score and chance at W from a :func:`lcx.evaluate.suite_examples`
    table, the score it must reach (``max(GATE_TASK_SCORE, GATE_CHANCE_MULTIPLE x chance)``,
    :mod:`lcx.claims`) and whether it does (``kept``): a task below it leaves the suite's
    headline. A threshold above 1 cannot be reached: at W the task offers too few candidates to
    tell learning from guessing."""
    from .claims import GATE_CHANCE_MULTIPLE, GATE_TASK_SCORE

    at_w = suite_examples[(suite_examples.length == W) & suite_examples.headline]
    rows = []
    for task, g in at_w.groupby("task", sort=False):
        chance = float(g["chance"].mean())
        need = max(GATE_TASK_SCORE, GATE_CHANCE_MULTIPLE * chance)
        score = float(g["score"].mean())
        rows.append(
            {
                "task": task,
                "metric": g["metric"].iloc[0],
                "n": len(g),
                "score": score,
                "chance": chance,
                "needs": need,
                "kept": score >= need,
            }
        )
    return pd.DataFrame(rows, columns=["task", "metric", "n", "score", "chance", "needs", "kept"])


def gate(passkey_examples, far_context, suite_examples, W: int) -> dict:
    """The gate of one base model (:data:`lcx.claims.GATE_TEXT`), as chapter 02 records it:
    ``passkey_exact_at_w`` (teacher-forced exact match over every depth at W, from
    :func:`lcx.evaluate.passkey_examples`), ``far_context_gain`` (``estimate``, ``ci_low``,
    ``ci_high``, ``n``: the loss with another document's far context minus with the true one,
    per window of :func:`lcx.evaluate.far_context`, Student's t over windows), ``tasks`` (task ->
    score, chance, needs, kept; :func:`task_gate`), ``kept_tasks`` and ``passed`` (passkey and far
    context; the tasks decide which ones the suite's headline keeps, not whether the gate holds).
    """
    from .claims import GATE_PASSKEY_EXACT

    exact = float(passkey_examples.loc[passkey_examples.length == W, "exact"].mean())
    far = verdicts.estimate(
        verdicts.table(
            {
                ("replaced", 0): far_context.set_index("window")["replaced"],
                ("true", 0): far_context.set_index("window")["true"],
            }
        ),
        "replaced",
        "true",
    )
    lo, hi = far.interval()
    tasks_at_w = task_gate(suite_examples, W)
    passed = exact >= GATE_PASSKEY_EXACT and lo > 0
    return {
        "passkey_exact_at_w": exact,
        "far_context_gain": {
            "estimate": float(far.effect),
            "ci_low": float(lo),
            "ci_high": float(hi),
            "n": int(far.n_examples),
        },
        "tasks": tasks_at_w.set_index("task").to_dict("index"),
        "kept_tasks": tasks_at_w.loc[tasks_at_w.kept, "task"].tolist(),
        "passed": bool(passed),
    }


def gate_reason(g: dict) -> str:
    """A gate's numbers in one line, as a failed gate's reason quotes them."""
    from .claims import GATE_PASSKEY_EXACT

    far = g["far_context_gain"]
    return (
        f"passkey exact {g['passkey_exact_at_w']:.2f} at W (needs >= {GATE_PASSKEY_EXACT:g}); "
        f"far-context gain {far['estimate']:+.3f} nats [{far['ci_low']:+.3f}, {far['ci_high']:+.3f}] "
        "(needs an interval above 0)"
    )


def kept(g: dict | None, task_names) -> tuple[list[str], str]:
    """Which of ``task_names`` the gate ``g`` (:func:`gate`) keeps in the suite's headline (every
    one when ``g`` is None), and the numbers of those it leaves out, for a reason. A task the gate
    could not score at W (no example fits the window) is left out."""
    if g is None:
        return list(task_names), ""
    scored = g["tasks"]
    out = [t for t in task_names if t in scored and scored[t]["kept"]]
    dropped = "; ".join(
        f"{t} {scored[t]['score']:.2f} at W (chance {scored[t]['chance']:.2f}, "
        f"needs {scored[t]['needs']:.2f})"
        if t in scored
        else f"{t} not scored at W"
        for t in task_names
        if t not in out
    )
    return out, dropped


def base_gate(profile: str, ref: evaluate.Ref, tokenizer, tokens, name: str = "llama2") -> dict:
    """:func:`gate` of the base model ``ref`` on ``profile`` from its cached evaluations at W:
    passkey (every depth of :data:`GATE_DEPTHS`), far context and the probe suite, with the
    profile's sample sizes (:data:`GATE_PASSKEY_N`, :data:`GATE_SUITE_N`, :data:`GATE_WINDOWS`).
    Chapter 02 computes it first; every later chapter reads it from the cache
    (:func:`lcx.chapter.setup`)."""
    from . import tasks

    W = window(profile, name)
    passkey = _gate_passkey(profile, ref, tokenizer, name)
    far = evaluate.far_context(ref, tokenizer, tokens, W, gate_n(profile, GATE_WINDOWS))
    suite = evaluate.suite_examples(
        ref, tokenizer, tokens, tasks.PROBES, [W], gate_n(profile, GATE_SUITE_N)
    )
    return gate(passkey, far, suite, W)


def gates(profile: str, names, seed: int = 0) -> dict:
    """Base model name -> its :func:`base_gate` on ``profile``, for each of ``names``: each base
    trained (:func:`base_runs`, cached) on its own tokens and evaluated there. Chapter 02 runs it
    for every base a chapter starts from."""
    out = {}
    for name in names:
        tokenizer, tokens = corpus_tokens(profile, name)
        out[name] = base_gate(
            profile, ref(name, base_runs(profile, name, seed)), tokenizer, tokens, name
        )
    return out


def tries(profile: str, names, seed: int = 0) -> pd.DataFrame:
    """Stage 1's :func:`attempts` of each base model in ``names``, one row per base and attempt
    (index ``base``, ``attempt``): the initialisation, the length of its last passkey check and its
    exact match there, and whether it passed at W.
    Empty on gpu/paper (a released checkpoint has none)."""
    if profile in ("gpu", "paper"):
        return pd.DataFrame(columns=["init", "length", "exact", "passed"])
    return pd.concat(
        {name: attempts(profile, name, seed).drop(columns="runs") for name in names},
        names=["base", "attempt"],
    )


def gate_table(gates: dict) -> pd.DataFrame:
    """One row per base model of :func:`gate` results (name -> gate): passkey exact at W, the
    far-context gain with its interval, the kept tasks and whether the gate passed."""
    return pd.DataFrame(
        {
            name: {
                "passkey exact at W": round(g["passkey_exact_at_w"], 2),
                "far-context gain (nats)": round(g["far_context_gain"]["estimate"], 4),
                "95% interval": "[{ci_low:+.4f}, {ci_high:+.4f}]".format(**g["far_context_gain"]),
                "kept tasks": ", ".join(g["kept_tasks"]) or "none",
                "passed": g["passed"],
            }
            for name, g in gates.items()
        }
    ).T
