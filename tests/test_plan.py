"""lcx.plan: which arms a profile's runs skip, and what the scorecard says of the parts they left."""

import json

import numpy as np
import pandas as pd
import pytest

from lcx import plan, prolong, together
from lcx.claims import CLAIMS
from lcx.scorecard import Scorecard, parts_table
from lcx.verdicts import NOT_TESTABLE


def _entry(claim, part, in_reach, needs=0.01):
    return {
        "claim": claim,
        "part": part,
        "needs": needs,
        "measured_seeds": 2,
        "detectable": 0.2,
        "projected": 0.1 if not in_reach else needs / 2,
        "in_reach": in_reach,
    }


def _plan(reach: dict) -> dict:
    """A plan over every empirical part of the claims in ``reach`` (claim -> parts in reach)."""
    parts = [
        _entry(claim, p.name, p.name in names)
        for claim, names in reach.items()
        for p in CLAIMS[claim].parts
        if p.kind == "empirical"
    ]
    return {"commit": "0123456789abcdef", "seeds": 3, "parts": parts}


def _noisy(parts, seeds=(0, 1), n=30, seed=1):
    rng = np.random.default_rng(seed)
    out = {}
    for part in parts:
        a, b = part.arms
        rows = [
            (arm, s, i, v + rng.normal(0, 0.05) + 0.02 * s)
            for s in seeds
            for i, v in enumerate(rng.normal(0, 0.1, n))
            for arm in (a, b)
        ]
        out[part.name] = pd.DataFrame(rows, columns=["arm", "seed", "example", "value"])
    return out


def test_make_keeps_measured_parts_with_their_projection_and_unmeasured_ones_out_of_reach():
    card = Scorecard("03_together_pi", "tiny")
    t1 = [p for p in CLAIMS["T1"].parts if p.kind == "empirical"]
    card.judge("T1", {**_noisy(t1), **{p.name: "x" for p in CLAIMS["T1"].parts if p not in t1}})
    card.judge("T2", {"kept vs control": "the control was not run"})
    made = plan.make(card.parts(), "abc1234", seeds=3)
    assert made["commit"] == "abc1234" and made["seeds"] == 3
    by = {(e["claim"], e["part"]): e for e in made["parts"]}
    assert set(by) == {("T1", p.name) for p in t1} | {("T2", "kept vs control")}
    for p in t1:
        e = by["T1", p.name]
        assert e["measured_seeds"] == 2 and e["needs"] == p.min_effect
        assert e["projected"] < e["detectable"]  # a third seed narrows it
        assert e["in_reach"] == (0 < e["projected"] <= e["needs"])
    unmeasured = by["T2", "kept vs control"]
    assert unmeasured["in_reach"] is False
    assert "the control was not run" in plan.reason(made, unmeasured)
    json.dumps(made)  # data, as committed


def test_an_arm_is_skipped_only_when_every_part_that_names_it_is_out_of_reach():
    # P4 in reach, every other part of P1-P7 out: the recipe runs (P4 compares with it), the RoPE
    # arms run, and the arms only P1-P3 and P5-P7 name are skipped, with the parts that use them
    p = _plan({c: {"2x NTK vs NTK", "NTK vs original"} for c in [f"P{i}" for i in range(1, 8)]})
    skip = plan.skipped(p, [f"P{i}" for i in range(1, 8)], prolong.ABLATIONS)
    named = {
        a for c in ("P1", "P2", "P3", "P5", "P6", "P7") for q in CLAIMS[c].parts for a in q.arms
    }
    p4 = {a for q in CLAIMS["P4"].parts for a in q.arms}
    assert set(skip) == (named | set(prolong.ABLATIONS)) - p4
    assert "ProLong recipe" in p4 and "long 80%" in skip  # 80%: no part names it, only a figure
    assert "P5 'long'" in skip["no document masking"]
    # one part in reach keeps both its arms, though another part using one of them is out
    p = _plan({"P3": {"short: 40% vs 60% long"}})
    skip = plan.skipped(p, ["P3"])
    assert "long 40%" not in skip and "ProLong recipe" not in skip and "long 100%" in skip
    # no plan: nothing is skipped
    assert plan.skipped(None, ["P1", "P2"], prolong.ABLATIONS) == {}
    with pytest.raises(ValueError, match="not in lcx.claims"):
        plan.out_of_reach(p, "P99")


def test_prolong_runs_what_the_plan_leaves():
    p = _plan({c: {"2x NTK vs NTK", "NTK vs original"} for c in [f"P{i}" for i in range(1, 8)]})
    skip = plan.skipped(p, [f"P{i}" for i in range(1, 8)], prolong.ABLATIONS)
    run, missing = prolong.ablations("cpu", {"code", "books", "short"}, skip)
    assert set(run) == {"ProLong recipe", "RoPE base unchanged", "RoPE base = NTK"}
    stage1, stage2, _ = prolong.recipes("cpu", 256, 2048, 4096)
    assert prolong.stage2_plan(stage1, stage2, 256, skip) == {}
    assert prolong.synthetic_shares("cpu", skip) == []
    runs = {(a, s): None for a in run for s in (0, 1, 2)}
    assert prolong.final_arm(runs)[0] == "ProLong recipe"
    reasons = prolong.not_run("cpu", run, missing, [], skip)
    assert reasons["long 100%"] == skip["long 100%"]  # the plan's reason, not "not among ..."
    # P7 in reach, P6 out: stage 2's run still starts the short-only SFT that P7 compares
    p = _plan({"P6": set(), "P7": {"10% synthetic"}})
    skip = plan.skipped(p, ["P6", "P7"])
    assert set(prolong.stage2_plan(stage1, stage2, 256, skip)) == {prolong.SWITCH}
    assert prolong.synthetic_shares("cpu", skip) == [0.01, 0.1]  # 50%: only its own part
    assert prolong.final_arm({(prolong.SWITCH, 0): None})[0] == prolong.SWITCH
    # without a plan every arm runs, as before
    assert set(prolong.stage2_plan(stage1, stage2, 256)) == {prolong.CONTINUE, prolong.SWITCH}
    assert prolong.synthetic_shares("cpu") == [0.01, 0.1, 0.5]


def test_together_skips_the_control_and_the_qa_fine_tune_only_when_the_plan_says_so():
    out = _plan({"T2": set(), "T4": set()})
    assert set(together.skipped(out)) == {"control", "qa"}
    assert "T2 'kept vs control'" in together.skipped(out)["control"]
    some = _plan({"T2": {"kept vs control"}, "T4": {"PI beats truncated base"}})
    assert together.skipped(some) == {}
    assert together.skipped(None) == {}
    # T2 without the control's windows: its part is the reason
    windows = {
        (arm, s): pd.DataFrame(
            {
                "length": [256, 128, 2048],
                "window": [0, 0, 0],
                "nats_per_byte": [1.0, 1.1, 0.9],
            }
        )
        for arm, s in [(together.PI, 0), (together.BASE_FULL, None)]
    }
    parts = together.perplexity_results(windows, 256, "skipped by the plan")
    assert parts["T2"]["kept vs control"] == "skipped by the plan"


def test_the_scorecard_gives_a_part_left_out_by_the_plan_the_plans_numbers():
    p = _plan({"T1": {"base rises"}, "T2": set()})
    card = Scorecard("03_together_pi", "tiny", plan=p)
    t1 = {q.name: "x" for q in CLAIMS["T1"].parts}
    t1.update(_noisy([q for q in CLAIMS["T1"].parts if q.kind == "empirical"]))
    card.judge("T1", t1)
    card.judge("T2", {"kept vs control": "continued at W: not run"})
    parts = card.parts().set_index("part")
    left = parts.loc["kept vs control"]
    assert left["verdict"] == NOT_TESTABLE
    assert left["reason"].startswith("out of reach by the plan")
    assert "0.1 at 3 seeds" in left["reason"] and "continued at W: not run" in left["reason"]
    # a part out of reach whose arms ran anyway is judged as any other, on its numbers
    ran = parts.loc["PI model falls"]
    assert not str(ran["reason"]).startswith("out of reach") and pd.notna(ran["effect"])


def test_the_committed_cpu_plan_names_real_parts_and_a_clean_commit():
    made = plan.load("cpu")
    assert made is not None and len(made["commit"]) == 40 and made["seeds"] == plan.SEEDS
    for e in made["parts"]:
        assert e["part"] in {p.name for p in CLAIMS[e["claim"]].parts}, e
        if "projected" in e:
            assert e["in_reach"] == (0 < e["projected"] <= e["needs"])
    assert plan.load("no-such-profile") is None


def test_plan_rows_read_back_through_parts_table(tmp_path):
    """make() reads the scorecards' saved rows (scripts/make_plan.py), not only live ones."""
    card = Scorecard("03_together_pi", "tiny")
    t1 = {q.name: "x" for q in CLAIMS["T1"].parts}
    t1.update(_noisy([q for q in CLAIMS["T1"].parts if q.kind == "empirical"]))
    card.judge("T1", t1)
    card.save(tmp_path)
    saved = json.loads((tmp_path / "scorecard.json").read_text())["rows"]
    assert plan.make(card.parts(), "c")["parts"]
    assert plan.make(parts_table(saved), "c")["parts"] == plan.make(card.parts(), "c")["parts"]


def test_versus_puts_the_plan_beside_what_the_build_measured():
    p = _plan({"T1": {"base rises"}, "T2": set()})
    card = Scorecard("03_together_pi", "tiny", plan=p)
    t1 = {q.name: "x" for q in CLAIMS["T1"].parts}
    t1.update(_noisy([q for q in CLAIMS["T1"].parts if q.kind == "empirical"], seeds=(0, 1, 2)))
    card.judge("T1", t1)
    card.judge("T2", {"kept vs control": "continued at W: not run"})
    table = plan.versus(p, card.parts()).set_index("part")
    assert table.loc["base rises", "in_reach"] and not table.loc["kept vs control", "in_reach"]
    assert table.loc["base rises", "n_seeds"] == 3
    assert table.loc["kept vs control", "verdict"] == NOT_TESTABLE
    assert table.loc["base rises", "planned at 3 seeds"] == 0.005
    assert plan.versus(None, card.parts()).empty
