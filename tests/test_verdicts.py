"""The verdict engine against independent references (scipy's t tests) and against simulated
experiments with a known truth, at the book's seeds and examples."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from lcx import verdicts

RUNS = 2000  # simulated experiments per case (issue 18)


def experiment(rng, effect, seeds, examples, seed_sd, example_sd, base=0.5, shared=True):
    """A results table: two arms on ``seeds`` training seeds, scored on ``examples`` examples.
    Each seed's model differs from the other arm's by ``effect`` plus a seed-level deviation
    (sd ``seed_sd``); each example adds noise (sd ``example_sd``); ``shared``: every seed scored
    the same examples (an example's difficulty is shared by both arms and every seed)."""
    difficulty = rng.normal(0, example_sd, examples)
    rows = []
    for s in range(seeds):
        level = rng.normal(0, seed_sd)
        hard = difficulty if shared else rng.normal(0, example_sd, examples)
        for arm, shift in (("new", effect + level), ("old", 0.0)):
            noise = rng.normal(0, example_sd, examples)
            for e in range(examples):
                rows.append((arm, s, e, base + shift + hard[e] + noise[e]))
    return pd.DataFrame(rows, columns=["arm", "seed", "example", "value"])


def verdict_of(data, min_effect=0.05, margin=None, floor=None):
    est = verdicts.estimate(data, "new", "old")
    return verdicts.part_verdict(est, min_effect, margin, floor)[0], est


def test_one_seed_paired_is_the_paired_t_interval():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.6, 0.2, 30), rng.normal(0.5, 0.2, 30)
    data = verdicts.table({("new", 0): dict(enumerate(a)), ("old", 0): dict(enumerate(b))})
    est = verdicts.estimate(data, "new", "old")
    ref = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert est.effect == pytest.approx(np.mean(a - b))
    assert est.interval() == pytest.approx((ref.low, ref.high))
    assert est.n_seeds == 1 and est.n_examples == 30 and est.df == pytest.approx(29)
    lower = verdicts.estimate(data, "new", "old", direction=-1)  # the paper: new < old
    assert lower.effect == pytest.approx(-est.effect)


def test_one_seed_unpaired_is_welchs_interval():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0.6, 0.3, 20), rng.normal(0.5, 0.1, 35)
    data = verdicts.table(
        {("new", 0): {f"a{i}": v for i, v in enumerate(a)}, ("old", 0): dict(enumerate(b))}
    )
    est = verdicts.estimate(data, "new", "old")
    ref = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert est.interval() == pytest.approx((ref.low, ref.high), rel=1e-6)


def test_seeds_with_one_example_each_are_the_one_sample_t_interval_of_their_differences():
    d = np.array([0.03, -0.01, 0.05, 0.02])
    data = verdicts.table(
        {
            **{("new", s): {"x": 0.5 + v} for s, v in enumerate(d)},
            **{("old", s): {"x": 0.5} for s in range(4)},
        }
    )
    est = verdicts.estimate(data, "new", "old")
    ref = stats.ttest_1samp(d, 0).confidence_interval(0.95)
    assert est.interval() == pytest.approx((ref.low, ref.high))
    # the detectable effect at 80% power: (t.975 + t.80) standard errors, df = 3
    se = d.std(ddof=1) / 2
    assert est.detectable() == pytest.approx((stats.t.ppf(0.975, 3) + stats.t.ppf(0.8, 3)) * se)


@pytest.mark.slow
@pytest.mark.parametrize("seeds,examples", [(2, 24), (3, 40)])
def test_no_true_effect_is_rarely_reproduced_and_the_interval_keeps_its_coverage(seeds, examples):
    """With no true effect but a real spread between seeds (the book's two or three seeds, 24-40
    examples), `reproduced` comes out in at most 5% of experiments, and the 95% interval covers
    the truth in about 95%. A normal interval from the seeds' spread (what a bootstrap over the
    seeds approximates) covers far less at two seeds: about 70%."""
    rng = np.random.default_rng(seeds)
    reproduced = covered = naive_covered = 0
    for _ in range(RUNS):
        data = experiment(rng, 0.0, seeds, examples, seed_sd=0.03, example_sd=0.15)
        verdict, est = verdict_of(data, min_effect=0.02)
        reproduced += verdict == "reproduced"
        lo, hi = est.interval()
        covered += lo <= 0 <= hi
        per_seed = data.groupby(["seed", "arm"]).value.mean().unstack()
        d = per_seed["new"] - per_seed["old"]
        naive_covered += abs(d.mean()) <= 1.96 * d.std(ddof=1) / np.sqrt(seeds)
    assert reproduced / RUNS <= 0.05
    assert covered / RUNS >= 0.93
    if seeds == 2:
        assert naive_covered / RUNS < 0.8


def test_a_true_effect_of_three_times_the_minimum_is_mostly_reproduced():
    rng = np.random.default_rng(7)
    runs = 300
    hits = sum(
        verdict_of(experiment(rng, 0.15, 3, 200, seed_sd=0.005, example_sd=0.15))[0] == "reproduced"
        for _ in range(runs)
    )
    assert hits / runs > 0.8


def test_arms_at_the_floor_are_not_testable():
    rng = np.random.default_rng(3)
    data = experiment(rng, 0.0, 2, 24, 0.0, 0.0, base=0.0)  # both arms score 0 everywhere
    verdict, _ = verdict_of(data, floor=0.05)
    assert verdict == verdicts.NOT_TESTABLE
    est = verdicts.estimate(data, "new", "old")
    v, reason = verdicts.part_verdict(est, 0.05, gate=(False, "base passkey 0.1 at W < 0.5"))
    assert v == verdicts.NOT_TESTABLE and "base passkey" in reason


@pytest.mark.slow
def test_an_equivalence_part_with_a_loss_beyond_the_margin_is_not_reproduced():
    """'Quality is kept' with a margin of 0.05: a true loss of 0.10 is (almost) never reproduced
    and mostly shown as not reproduced; no loss at all is mostly reproduced."""
    rng = np.random.default_rng(11)
    lossy = [
        verdict_of(experiment(rng, -0.10, 3, 60, 0.01, 0.1), margin=0.05)[0] for _ in range(RUNS)
    ]
    assert lossy.count("reproduced") / RUNS <= 0.05
    assert lossy.count("not reproduced") / RUNS > 0.5
    kept = [
        verdict_of(experiment(rng, 0.0, 3, 200, 0.002, 0.1), margin=0.05)[0] for _ in range(300)
    ]
    assert kept.count("reproduced") / 300 > 0.8


def test_a_significant_effect_below_the_minimum_is_not_reproduced():
    rng = np.random.default_rng(5)
    data = experiment(rng, 0.01, 3, 2000, 0.0005, 0.05)  # real, but a tenth of the minimum
    verdict, est = verdict_of(data, min_effect=0.1)
    assert est.interval()[0] > 0 and verdict == "not reproduced"


def test_claim_verdict_combines_the_empirical_parts_only():
    cv = verdicts.claim_verdict
    nt = verdicts.NOT_TESTABLE
    assert cv(["reproduced", "reproduced"], [True], [False]) == "reproduced"
    assert cv(["reproduced", "inconclusive"], [], []) == "partly"
    assert cv(["reproduced", nt], [], []) == "partly"
    assert cv(["inconclusive", "not reproduced"], [], [True]) == "inconclusive"
    assert cv(["not reproduced", nt], [], []) == "not reproduced"
    assert cv([nt, nt], [True], [True]) == nt  # recipe and arithmetic parts are no evidence
    assert cv([], [True, True], []) == "reproduced"  # a claim about formulas
    assert cv([], [True, False], [True]) == "not reproduced"
    assert cv([], [], [True]) == nt  # a recipe is what was done, not a finding
    with pytest.raises(ValueError):
        cv([], [], [])


def test_estimate_refuses_tables_it_cannot_read():
    data = verdicts.table({("new", 0): {"a": 1.0}, ("old", 1): {"a": 0.0}})
    with pytest.raises(ValueError, match="share no seed"):
        verdicts.estimate(data, "new", "old")
    with pytest.raises(ValueError, match="no results for arm"):
        verdicts.estimate(data, "new", "gone")
    with pytest.raises(ValueError, match="duplicate"):
        verdicts.estimate(pd.concat([data, data]), "new", "old")
    with pytest.raises(ValueError, match="columns"):
        verdicts.estimate(data.drop(columns="seed"), "new", "old")


def test_differences_without_any_spread_are_inconclusive_not_a_confident_zero():
    """Four paired examples that tie exactly: the standard error is 0 and the interval [0, 0]
    would read as a confident 'not reproduced'; with no spread to estimate one, it is inconclusive.
    The same nonzero difference everywhere counts once a sign test could tell."""
    data = verdicts.table(
        {("new", 0): dict.fromkeys(range(4), 0.5), ("old", 0): dict.fromkeys(range(4), 0.5)}
    )
    verdict, est = verdict_of(data)
    assert est.se == 0 and verdict == "inconclusive"
    # the same gain on every example: an exact sign test decides from six examples (p = 1/64)
    for n, expected in ((5, "inconclusive"), (6, "reproduced")):
        data = verdicts.table(
            {("new", 0): dict.fromkeys(range(n), 1.0), ("old", 0): dict.fromkeys(range(n), 0.0)}
        )
        assert verdict_of(data)[0] == expected


def test_detectable_at_projects_the_measured_variance_components_to_another_design():
    # crossed design, difference = 0.05 + a_seed + e_example, sd 0.1 and 0.4 by construction: the
    # detectable effect of S seeds and n examples is (t(.975) + t(.8)) * sqrt(0.01 / S + 0.16 / n)
    rng = np.random.default_rng(0)
    S, n = 200, 400
    e, a = rng.normal(0, 0.4, n), rng.normal(0, 0.1, S)
    seed, example = np.repeat(np.arange(S), n), np.tile(np.arange(n), S)
    treated = pd.DataFrame(
        {"arm": "t", "seed": seed, "example": example, "value": 0.05 + a[seed] + e[example]}
    )
    data = pd.concat([treated, treated.assign(arm="r", value=0.0)], ignore_index=True)
    est = verdicts.estimate(data, "t", "r")
    assert est.crossed
    assert est.seed_var == pytest.approx(0.01, rel=0.25)
    assert est.example_var == pytest.approx(0.16, rel=0.15)
    # at the measured design it is the engine's own detectable effect
    assert est.detectable_at(S, n) == pytest.approx(est.detectable())
    for s2, n2 in [(3, 100), (10, 1000)]:
        se = math.sqrt(0.01 / s2 + 0.16 / n2)
        between, within = 0.01 / s2, 0.16 / n2
        df = (between + within) ** 2 / (between**2 / (s2 - 1) + within**2 / (n2 - 1))
        truth = (stats.t.ppf(0.975, df) + stats.t.ppf(0.8, df)) * se
        assert est.detectable_at(s2, n2) == pytest.approx(truth, rel=0.15)
    # more seeds never detect less; one seed has no seed spread to count
    assert est.detectable_at(5) < est.detectable_at(3) < est.detectable_at(2)
    with pytest.raises(ValueError, match="must be >= 1"):
        est.detectable_at(0)
