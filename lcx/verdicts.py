"""The verdict engine: from per-seed, per-example results of the arms a claim compares to an
effect, its 95% interval, the effect the experiment could detect, and a verdict.

Every chapter hands its results to :func:`judge` with a claim id of :mod:`lcx.claims`; the
registry says what each part of the claim compares (metric, arms, direction), the minimum effect
that counts, the equivalence margin of a "quality is kept" part and the floor of the metric. No
notebook types a threshold or a verdict.

**The interval.** An empirical part compares a treatment arm with a reference arm on the same
seeds (a seed is one training run of each arm) and, where the arms were scored on the same
evaluation examples, example by example. Two sources of noise enter the difference of the means:
the spread between training seeds and the sampling of evaluation examples. For each seed ``s`` the
engine takes the mean difference ``d_s`` (paired by example when the arms share their examples);
their spread gives the between-seed variance ``B = var(d_s) / S``; the examples give the within
variance ``E`` (from the paired differences: over examples of the seed-averaged difference when
every seed used the same examples, else the mean of the per-seed sampling variances over ``S``).
The effect's standard error is ``sqrt(B + E)`` with Welch-Satterthwaite degrees of freedom, and the
95% interval is Student's t. Counting ``E`` beside ``B`` is conservative where the examples differ
between seeds (there ``B`` already holds part of it).

Why not a hierarchical bootstrap (seeds, then examples)? With the book's two or three seeds a
bootstrap over seeds sees at most three values: its variance is ``(S - 1) / S`` of the sample's and
its quantiles are normal: with two seeds, a normal interval from the seeds' spread covers the truth
about 70% of the time instead of 95% (simulated in ``tests/test_verdicts.py``). Student's t with the
seeds' degrees of freedom keeps its 95%, and says plainly how little two seeds can decide.

**The verdict of a part** (its effect is signed so that positive is the paper's side):

- ``not testable at this scale``: the part's gate failed, or every arm sits at the metric's floor
  (the reason is recorded with the numbers);
- when every difference is the same (no spread to form an interval from), the interval is that
  value only if an exact sign test over the examples could tell (``0.5 ** n`` below 2.5%, n >= 6);
  otherwise, and when every difference is zero, ``inconclusive``;
- comparison parts: ``reproduced`` when the interval lies above zero and the effect reaches the
  minimum effect; ``not reproduced`` when the interval lies below the minimum effect (a smaller or
  opposite effect, shown); otherwise ``inconclusive``;
- equivalence parts ("quality is kept", "does not help"): ``reproduced`` when the interval's lower
  end is above ``-margin`` (any loss is within the margin), ``not reproduced`` when its upper end is
  below ``-margin`` (a loss beyond the margin, shown), otherwise ``inconclusive``.

The **detectable effect** is the effect this design would detect with 80% power at the measured
variance, ``(t(0.975) + t(0.80)) * se``: beside the minimum effect and the paper's effect scaled it
shows whether the experiment could have seen what the paper saw.

**A claim's verdict** combines its empirical parts (recipe and arithmetic parts are checks of what
was done or computed, never evidence; :data:`CLAIM_RULE`): every part reproduced -> ``reproduced``;
every part not testable -> ``not testable at this scale``; some reproduced -> ``partly``; else any
inconclusive -> ``inconclusive``; else ``not reproduced``. A claim made only of arithmetic parts
(chapter 01's formulas) is ``reproduced`` when every formula gives the paper's number, and one made
only of recipe parts is ``not testable at this scale`` (a recipe is what was done, not a finding).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

VERDICTS = ("reproduced", "partly", "inconclusive", "not reproduced", "not testable at this scale")
NOT_TESTABLE = "not testable at this scale"
CONFIDENCE = 0.95
POWER = 0.80
# the designs a plan compares with the run it measured (lcx.claims.power_table): seeds per arm
PLAN_SEEDS = (3, 5)
PLAN_EXAMPLES = 4  # and the first of them with this many times the examples per seed
CLAIM_RULE = (
    "A claim is reproduced when every empirical part is; partly when some are; inconclusive when "
    "none is and some could not tell; not reproduced when every testable part is not; not testable "
    "when no part could be tested. Recipe and arithmetic parts are checks, not evidence: a claim of "
    "arithmetic parts only is reproduced when every formula gives the paper's number; one of recipe "
    "parts only is not testable."
)


@dataclass(frozen=True)
class Estimate:
    """A difference of two arms' means (treatment - reference, times the part's direction)."""

    effect: float
    se: float
    df: float
    n_seeds: int
    n_examples: int  # evaluation examples per seed and arm (the smallest)
    means: dict  # arm -> mean over seeds and examples
    # the variance components behind se, for a design with other counts (:meth:`detectable_at`):
    # of one seed's mean difference, of one example's difference, and whether every seed scored
    # the same examples (their noise is then shared by the seeds, not averaged away)
    seed_var: float = math.nan
    example_var: float = math.nan
    crossed: bool = False

    def interval(self, confidence: float = CONFIDENCE) -> tuple[float, float]:
        if self.se == 0:
            return self.effect, self.effect
        q = stats.t.ppf(0.5 + confidence / 2, self.df)
        return self.effect - q * self.se, self.effect + q * self.se

    def detectable(self, confidence: float = CONFIDENCE, power: float = POWER) -> float:
        """The smallest true effect this design detects (interval above zero) with ``power``."""
        q = stats.t.ppf(0.5 + confidence / 2, self.df) + stats.t.ppf(power, self.df)
        return q * self.se

    def detectable_at(self, n_seeds: int, n_examples: int | None = None) -> float:
        """:func:`detectable_at` of this comparison's variance components with ``n_seeds``
        seeds and ``n_examples`` examples per seed (None: as measured)."""
        n = self.n_examples if n_examples is None else n_examples
        return detectable_at(self.seed_var, self.example_var, self.crossed, n_seeds, n)


def detectable_at(
    seed_var: float, example_var: float, crossed: bool, n_seeds: int, n_examples: int
) -> float:
    """The detectable effect (:meth:`Estimate.detectable`) of a comparison run with ``n_seeds``
    seeds and ``n_examples`` examples per seed, at measured variance components: the seeds' part
    ``seed_var / S`` (the variance of one seed's mean difference), the examples' part
    ``example_var / n`` (``/ (n S)`` when each seed scored its own examples, not ``crossed``),
    with Welch-Satterthwaite degrees of freedom. NaN without a seed spread (one measured seed).
    A plan: it assumes the spread measured in one run holds in the next."""
    if n_seeds < 1 or n_examples < 1:
        raise ValueError(f"n_seeds={n_seeds}, n_examples={n_examples}: each must be >= 1")
    between = seed_var / n_seeds if n_seeds > 1 else 0.0
    within = example_var / (n_examples if crossed else n_examples * n_seeds)
    df_within = max(n_examples - 1, 1) if crossed else max(n_seeds * (n_examples - 1), 1)
    terms = (between**2 / (n_seeds - 1) if n_seeds > 1 else 0.0) + within**2 / df_within
    se2 = between + within
    df = se2**2 / terms if terms > 0 else math.inf
    q = stats.t.ppf(0.5 + CONFIDENCE / 2, df) + stats.t.ppf(POWER, df)
    return q * math.sqrt(se2)


def _check_table(data: pd.DataFrame, arms) -> pd.DataFrame:
    missing = {"arm", "seed", "example", "value"} - set(data.columns)
    if missing:
        raise ValueError(
            f"results need columns arm, seed, example, value; missing {sorted(missing)}"
        )
    absent = [a for a in arms if a not in set(data["arm"])]
    if absent:
        raise ValueError(
            f"no results for arm(s) {absent}; the table has {sorted(set(data['arm']))}"
        )
    data = data[data["arm"].isin(arms)].dropna(subset=["value"])
    dup = data.duplicated(["arm", "seed", "example"])
    if dup.any():
        raise ValueError(f"{int(dup.sum())} duplicate (arm, seed, example) rows")
    return data


def estimate(data: pd.DataFrame, treatment: str, reference: str, direction: int = 1) -> Estimate:
    """The effect ``direction * (mean(treatment) - mean(reference))`` and its standard error from
    ``data`` (columns ``arm``, ``seed``, ``example``, ``value``: one row per arm, seed and
    evaluation example). The arms are compared on their common seeds; on a seed where both were
    scored on the same examples the difference is paired by example."""
    if direction not in (1, -1):
        raise ValueError(f"direction is +1 or -1, not {direction!r}")
    data = _check_table(data, [treatment, reference])
    a = data[data.arm == treatment].pivot(index="example", columns="seed", values="value")
    b = data[data.arm == reference].pivot(index="example", columns="seed", values="value")
    seeds = sorted(set(a.columns) & set(b.columns))
    if not seeds:
        raise ValueError(
            f"{treatment!r} (seeds {sorted(a.columns)}) and {reference!r} (seeds "
            f"{sorted(b.columns)}) share no seed"
        )
    d, v, dfs, n, paired = [], [], [], [], []
    for s in seeds:
        x, y = a[s].dropna(), b[s].dropna()
        if len(x) == 0 or len(y) == 0:
            raise ValueError(f"seed {s}: an arm has no examples")
        if set(x.index) == set(y.index) and len(x) > 1:
            diff = x - y.loc[x.index]
            d.append(diff.mean())
            v.append(diff.var(ddof=1) / len(diff))
            dfs.append(len(diff) - 1)
            paired.append(diff)
        else:  # Welch: two samples, each with its own variance
            d.append(x.mean() - y.mean())
            vx = x.var(ddof=1) / len(x) if len(x) > 1 else 0.0
            vy = y.var(ddof=1) / len(y) if len(y) > 1 else 0.0
            v.append(vx + vy)
            den = (vx**2 / (len(x) - 1) if len(x) > 1 else 0) + (
                vy**2 / (len(y) - 1) if len(y) > 1 else 0
            )
            dfs.append((vx + vy) ** 2 / den if den > 0 else math.inf)
        n.append(min(len(x), len(y)))
    d = np.asarray(d, dtype=float)
    S = len(seeds)
    crossed = len(paired) == S and all(set(p.index) == set(paired[0].index) for p in paired)
    if crossed:  # every seed scored the same examples: their noise is shared, not averaged away
        per_example = pd.concat(paired, axis=1).mean(axis=1)
        example_var = per_example.var(ddof=1) if len(per_example) > 1 else 0.0
        within = example_var / len(per_example)
        df_within = max(len(per_example) - 1, 1)
    else:  # each seed's own sampling variance (Satterthwaite over the seeds)
        within = float(np.sum(v)) / S**2
        example_var = float(np.mean([vi * ni for vi, ni in zip(v, n, strict=True)]))
        den = sum(vi**2 / di for vi, di in zip(v, dfs, strict=True) if di > 0)
        df_within = float(np.sum(v)) ** 2 / den if den > 0 else math.inf
    between = d.var(ddof=1) / S if S > 1 else 0.0
    se2 = between + within
    # Welch-Satterthwaite: the degrees of freedom of a sum of two estimated variances
    terms = (between**2 / (S - 1) if S > 1 else 0.0) + within**2 / df_within
    df = se2**2 / terms if terms > 0 else math.inf
    means = {
        treatment: float(a[seeds].stack().mean()),
        reference: float(b[seeds].stack().mean()),
    }
    return Estimate(
        direction * float(d.mean()),
        math.sqrt(se2),
        df,
        S,
        min(n),
        means,
        seed_var=float(d.var(ddof=1)) if S > 1 else math.nan,
        example_var=float(example_var),
        crossed=crossed,
    )


def _sign_test(est: Estimate, confidence: float) -> bool:
    """Differences that are all the same and not zero: the exact sign test's one-sided p-value,
    ``0.5 ** n`` over the ``n`` paired units, is below the interval's tail."""
    return est.effect != 0 and 0.5 ** (est.n_seeds * est.n_examples) < (1 - confidence) / 2


def part_verdict(
    est: Estimate,
    min_effect: float,
    margin: float | None = None,
    floor: float | None = None,
    gate: tuple[bool, str] | None = None,
    confidence: float = CONFIDENCE,
) -> tuple[str, str]:
    """The verdict of one empirical part and its reason (see the module's docstring)."""
    if gate is not None and not gate[0]:
        return NOT_TESTABLE, f"gate failed: {gate[1]}"
    if floor is not None and all(m <= floor for m in est.means.values()):
        shown = ", ".join(f"{k} {m:.3f}" for k, m in est.means.items())
        return NOT_TESTABLE, f"every arm at the metric's floor (<= {floor:g}): {shown}"
    if est.se == 0 and not _sign_test(est, confidence):
        return "inconclusive", (
            f"every difference is {est.effect:+.3g}: no spread to form an interval from, and too "
            f"few examples ({est.n_seeds} x {est.n_examples}) for a sign test"
        )
    lo, hi = est.interval(confidence)
    if margin is not None:
        if lo > -margin:
            return "reproduced", f"interval [{lo:+.3g}, {hi:+.3g}] within the margin -{margin:g}"
        if hi < -margin:
            return (
                "not reproduced",
                f"interval [{lo:+.3g}, {hi:+.3g}] beyond the margin -{margin:g}",
            )
        return "inconclusive", f"interval [{lo:+.3g}, {hi:+.3g}] straddles the margin -{margin:g}"
    if lo > 0 and est.effect >= min_effect:
        return "reproduced", f"interval [{lo:+.3g}, {hi:+.3g}] above 0, effect >= {min_effect:g}"
    if hi < min_effect:
        return "not reproduced", f"interval [{lo:+.3g}, {hi:+.3g}] below the minimum {min_effect:g}"
    return (
        "inconclusive",
        f"interval [{lo:+.3g}, {hi:+.3g}] includes 0 or the minimum {min_effect:g}",
    )


def claim_verdict(empirical: list[str], arithmetic: list[bool], recipe: list[bool]) -> str:
    """One claim's verdict from its parts' (:data:`CLAIM_RULE`)."""
    if empirical:
        if all(v == "reproduced" for v in empirical):
            return "reproduced"
        if all(v == NOT_TESTABLE for v in empirical):
            return NOT_TESTABLE
        if "reproduced" in empirical:
            return "partly"
        if "inconclusive" in empirical:
            return "inconclusive"
        return "not reproduced"
    if arithmetic:
        return "reproduced" if all(arithmetic) else "not reproduced"
    if recipe:
        return NOT_TESTABLE
    raise ValueError("a claim needs at least one part")


def table(values: dict) -> pd.DataFrame:
    """The results table :func:`estimate` reads, from ``{(arm, seed): values}`` where ``values``
    maps an evaluation example's label to its score (a :class:`pandas.Series` or a dict): one row
    per arm, seed and example."""
    frames = []
    for (arm, seed), vals in values.items():
        s = pd.Series(vals, dtype=float)
        frames.append(
            pd.DataFrame({"arm": arm, "seed": seed, "example": s.index, "value": s.to_numpy()})
        )
    if not frames:
        raise ValueError("no results")
    return pd.concat(frames, ignore_index=True)
