"""lcx.claims: the registry is complete, the notebooks judge only their own claims through it, and
the tables the book renders from it hold what they should (checked against hand-built values)."""

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lcx import claims, rope
from lcx.claims import CLAIMS, Part
from lcx.scorecard import parts_table
from lcx.verdicts import VERDICTS

NOTEBOOKS = Path(__file__).parent.parent / "notebooks"
BOOK_IDS = (
    [f"R{i}" for i in range(1, 5)]
    + ["B1"]
    + [f"T{i}" for i in range(1, 7)]
    + ["L1", "L2", "L3", "L3b", "L4", "L5", "L5b", "L6", "L7"]
    + [f"Q{i}" for i in range(1, 7)]
    + [f"P{i}" for i in range(1, 10)]
)


def test_the_registry_holds_every_claim_of_the_book_and_no_other():
    assert sorted(CLAIMS) == sorted(BOOK_IDS)


@pytest.mark.parametrize("claim", BOOK_IDS)
def test_every_claim_has_a_source_parts_and_pre_registered_thresholds(claim):
    stated = CLAIMS[claim]
    assert stated.source and stated.statement and stated.numbers
    assert stated.chapter in claims.PAPERS
    assert stated.parts, f"{claim} has no parts"
    names = [p.name for p in stated.parts]
    assert len(set(names)) == len(names), f"{claim}: two parts share a name"
    for p in stated.parts:
        assert p.kind in claims.KINDS and p.says
        if p.kind == "empirical":
            # a minimum effect (comparison) or a margin (equivalence), with the reason for it
            assert (p.margin is None and p.min_effect > 0) or (p.margin or 0) > 0, p
            assert p.why and len(p.arms) == 2 and p.metric, p


def judge_cells(path: Path) -> str:
    """The code of a notebook's scorecard cells: those that call ``card.judge``."""
    cells = json.loads(path.read_text())["cells"]
    sources = ("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    return "\n".join(s for s in sources if "card.judge(" in s)


@pytest.mark.parametrize(
    "path", sorted(p for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb") if not p.stem.startswith("99"))
)
def test_a_chapters_scorecard_judges_only_its_own_registry_claims(path):
    code = "\n".join(
        "".join(c["source"])
        for c in json.loads(path.read_text())["cells"]
        if c["cell_type"] == "code"
    )
    assert "card.add(" not in code, f"{path.name} still types its checks (card.add)"
    judged = judge_cells(path)
    assert judged, f"{path.name} judges no claim"
    named = set(re.findall(r'"([A-Z][0-9]+b?)"', judged))  # the claim ids its scorecard names
    assert named, f"{path.name}: no claim id in its scorecard cells"
    for claim in named:
        assert claim in CLAIMS, f"{path.name} judges {claim}, which is not in the registry"
        assert CLAIMS[claim].chapter == path.stem, f"{claim} belongs to {CLAIMS[claim].chapter}"


def test_the_scaling_text_states_what_lcx_computes():
    """SCALING (rendered by the book) against lcx.rope's paper settings and the NTK formula."""
    s = {x.model: x for x in rope.PAPER_SETTINGS}
    assert "×50" in claims.SCALING and s["Llama 2 Long 7B"].base / s["Llama-2-7B"].base == 50
    llama3 = s["Meta-Llama-3-8B-Instruct"].base
    assert "×400" in claims.SCALING and s["Llama-3-8B-Instruct-80K-QLoRA"].base / llama3 == 400
    assert "×16" in claims.SCALING and s["ProLong-8B-64K"].base / llama3 == 16
    # "about 520 for Llama-2's 10K at W = 256 with d = 32": b (W / 4096)^(d / (d - 2)) by hand
    assert "about 520" in claims.SCALING
    assert 1e4 * (256 / 4096) ** (32 / 30) == pytest.approx(520, rel=0.01)
    assert rope.ntk_base(1e4, 256 / 4096, 32) == pytest.approx(1e4 * (256 / 4096) ** (32 / 30))


# --- chapter 01's formulas and chapter 02's gate, as data ------------------------------------------


def test_a_formula_holds_strictly_inside_its_bounds_and_says_them():
    f = claims._formula("x", "a ratio", low=0.9, high=1.1)
    assert f.kind == "arithmetic" and f.says == "a ratio; holds between 0.9 and 1.1"
    assert f.holds(1.0) and f.holds(1.0999) and not f.holds(1.1) and not f.holds(0.9)
    above, below = claims._formula("a", "s", low=1.0), claims._formula("b", "s", high=0.5)
    assert above.says == "s; holds above 1" and above.holds(1e9) and not above.holds(1.0)
    assert below.says == "s; holds below 0.5" and below.holds(-3) and not below.holds(0.5)
    assert claims._formula("m", "s", low=3.8e6, high=4.2e6).says == "s; holds between 3.8M and 4.2M"


def test_chapter_01s_bounds_contain_the_papers_printed_constants():
    # the paper's numbers (Llama 2 Long App. B and Fig. 8, ProLong App. B.1), each inside its part
    printed = {
        ("R2", "PI limit"): 0.027,
        ("R2", "ABF limit"): 0.076,
        ("R3", "8K→64K"): 4e6,
        ("R3", "64K→512K"): 64e6,
        ("R4", "θ1 changes 6%"): 0.06,
    }
    for (claim, name), value in printed.items():
        assert CLAIMS[claim].part(name).holds(value), (claim, name)
    # and the printed precision: 0.027 admits 0.0266 but not 0.028; 6% admits 5.6% but not 7%
    assert CLAIMS["R2"].part("PI limit").holds(0.0266)
    assert not CLAIMS["R2"].part("PI limit").holds(0.028)
    assert not CLAIMS["R4"].part("θ1 changes 6%").holds(0.07)
    assert not CLAIMS["R3"].part("8K→64K").holds(4.3e6)  # more than 5% off ~4M


def test_b1s_passkey_part_has_its_floor_and_the_gate_the_chapter_computes():
    p = CLAIMS["B1"].part("passkey")
    assert (p.floor, p.direction, p.arms) == (0.1, -1, ("8W-16W", "W"))
    assert p.gate == f"passkey per digit >= {claims.B1_PASSKEY_GATE:g} at W"
    assert claims.B1_PASSKEY_GATE == 0.5
    for name in ("nll 8W", "nll 16W"):  # ppl doubles <=> mean NLL grows by ln 2
        assert CLAIMS["B1"].part(name).min_effect == pytest.approx(math.log(2), abs=5e-4)
    assert all("one base seed" in p.why for p in CLAIMS["B1"].parts)


# --- the tables and texts the book renders -----------------------------------------------------------


def test_part_rule_states_the_threshold_and_the_side_in_words():
    up = Part("u", "empirical", "s", "acc", ("new", "old"), 1, 0.05, why="w")
    down = Part("d", "empirical", "s", "nll (nats)", ("new", "old"), -1, 0.1, why="w", floor=0.0)
    kept = Part("k", "empirical", "s", "short nll", ("new", "old"), -1, margin=0.02, why="w")
    gated = Part("g", "empirical", "s", "acc", ("a", "b"), 1, 0.3, why="w", gate="b >= 0.5")
    assert claims.part_rule(up) == (
        "Reproduced when mean(new) − mean(old) ≥ 0.05 with its 95% interval above 0, in acc"
    )
    assert claims.part_rule(down) == (
        "Reproduced when mean(old) − mean(new) ≥ 0.1 with its 95% interval above 0, in nll (nats); "
        "not testable when every arm is at or below 0"
    )
    assert claims.part_rule(kept) == (
        "Reproduced when mean(old) − mean(new) above −0.02 over its whole 95% interval (equivalence margin), "
        "in short nll"
    )
    assert claims.part_rule(gated).endswith("; testable only when b >= 0.5")
    recipe = Part("r", "recipe", "lr is 2e-5")
    assert claims.part_rule(recipe) == "lr is 2e-5"


def test_rule_text_gives_every_part_of_a_claim_with_its_reason():
    text = claims.rule_text("B1")
    lines = text.splitlines()
    assert len(lines) == len(CLAIMS["B1"].parts)
    assert lines[0].startswith("- **B1 nll 8W** (empirical): ")
    assert "mean(8W) − mean(W) ≥ 0.693" in lines[0] and "*Why:* the loss 'explodes'" in lines[0]
    assert (
        "mean(W) − mean(8W-16W) ≥ 0.3" in lines[2]
        and "testable only when passkey per digit >= 0.5" in text
    )
    r3 = claims.rule_text("R3").splitlines()
    assert r3[0] == f"- **R3 8K→64K** (arithmetic): {CLAIMS['R3'].part('8K→64K').says}."


def test_registry_markdown_holds_every_claim():
    md = claims.registry_markdown()
    assert md.startswith(claims.SCALING)
    for cid, c in CLAIMS.items():
        assert f"*{cid}* ({c.source}). {c.statement}." in md
    assert "- **B1 passkey** (empirical)" in md
    assert not claims.registry_markdown(scaling=False).startswith(claims.SCALING)


def _saved_rows():
    """Two claims as Scorecard.judge saves them: B1 with an empirical and a not-run part, R3 with
    an arithmetic part."""
    empirical = {
        "part": "nll 8W",
        "kind": "empirical",
        "says": "s",
        "metric": "nll",
        "effect": 0.8,
        "ci_low": 0.7,
        "ci_high": 0.9,
        "min_effect": 0.693,
        "margin": None,
        "detectable_effect": 0.2,
        "paper_effect": "explodes",
        "n_seeds": 1,
        "n_examples": 4,
        "verdict": "reproduced",
        "reason": "r",
    }
    not_run = {
        "part": "passkey",
        "kind": "empirical",
        "says": "s",
        "metric": "m",
        "verdict": "not testable at this scale",
        "reason": "no passkey",
    }
    arithmetic = {"part": "8K→64K", "kind": "arithmetic", "says": "s", "holds": True, "ours": "4M"}
    return [
        {"claim": "B1", "verdict": "partly", "parts": [empirical, not_run]},
        {"claim": "R3", "verdict": "reproduced", "parts": [arithmetic]},
    ]


def test_evidence_and_checks_tables_split_the_parts_by_kind():
    parts = parts_table(_saved_rows())
    evidence = claims.evidence_table(parts)
    assert list(evidence.columns) == claims.EVIDENCE_COLUMNS
    assert list(evidence.part) == ["nll 8W", "passkey"]
    assert list(evidence.chapter) == ["02_base_model", "02_base_model"]
    first = evidence.iloc[0]
    assert (first.effect, first.ci_low, first.ci_high, first.detectable_effect) == (
        0.8,
        0.7,
        0.9,
        0.2,
    )
    assert (first.n_seeds, first.n_examples, first.verdict) == (1, 4, "reproduced")
    assert pd.isna(evidence.iloc[1].effect) and evidence.iloc[1].reason == "no passkey"
    checks = claims.checks_table(parts)
    assert list(checks.columns) == claims.CHECK_COLUMNS
    assert checks.to_dict("records") == [
        {
            "chapter": "01_rope",
            "claim": "R3",
            "part": "8K→64K",
            "kind": "arithmetic",
            "holds": True,
            "ours": "4M",
            "says": CLAIMS["R3"].part("8K→64K").says,  # from the registry, not the saved row
        }
    ]


def test_verdict_counts_count_claims_and_empirical_parts():
    rows = _saved_rows()
    cards = pd.DataFrame({"claim": [r["claim"] for r in rows], "verdict": ["partly", "partly"]})
    counts = claims.verdict_counts(cards, parts_table(rows))
    assert list(counts.index) == list(VERDICTS)
    assert counts.loc["partly", "claims"] == 2 and counts["claims"].sum() == 2
    # two empirical parts (reproduced, not testable); the arithmetic one is not counted
    assert counts["empirical parts"].to_dict() == {
        "reproduced": 1,
        "partly": 0,
        "inconclusive": 0,
        "not reproduced": 0,
        "not testable at this scale": 1,
    }


def test_power_table_projects_each_parts_measured_spread_to_more_seeds():
    from lcx import verdicts
    from lcx.scorecard import Scorecard

    rng = np.random.default_rng(1)
    card = Scorecard("03_together_pi", "tiny")
    results = {}
    for part in CLAIMS["T2"].parts + CLAIMS["T1"].parts:
        if part.kind != "empirical":
            continue
        treatment, reference = part.arms
        rows = [
            (arm, seed, i, v + rng.normal(0, 0.05) + 0.02 * seed)
            for seed in (0, 1)
            for i, v in enumerate(rng.normal(0, 0.1, 30))
            for arm in (treatment, reference)
        ]
        results[part.name] = pd.DataFrame(rows, columns=["arm", "seed", "example", "value"])
    for claim in ("T1", "T2"):
        card.judge(
            claim, {p.name: results[p.name] for p in CLAIMS[claim].parts if p.name in results}
        )
    parts = card.parts()
    plan = claims.power_table(parts, seeds=(2, 3))
    assert len(plan) == len(results)
    for row in plan.to_dict("records"):
        part = CLAIMS[row["claim"]].part(row["part"])
        # what it must reach: an equivalence part's margin, else the minimum effect
        assert row["needs"] == (part.margin if part.margin is not None else part.min_effect)
        # at the measured design the plan is the engine's own detectable effect; more seeds less
        assert row["at 2 seeds"] == pytest.approx(row["detectable"])
        assert row["at 3 seeds"] < row["at 2 seeds"]
        assert row["in reach at 2 seeds"] == (0 < row["at 2 seeds"] <= row["needs"])
        more = row[f"at 2 seeds, {verdicts.PLAN_EXAMPLES}x examples"]
        assert row[f"in reach at 2 seeds, {verdicts.PLAN_EXAMPLES}x examples"] == (
            0 < more <= row["needs"]
        )
    # without a seed spread the examples are all the noise: k times the examples, se / sqrt(k)
    # (30 examples: the t quantiles' degrees of freedom change little)
    no_seed_spread = claims.power_table(parts.assign(seed_var=0.0), seeds=(2,))
    more = no_seed_spread[f"at 2 seeds, {verdicts.PLAN_EXAMPLES}x examples"]
    ratio = (more / no_seed_spread["at 2 seeds"]).to_numpy()
    assert ratio == pytest.approx(verdicts.PLAN_EXAMPLES**-0.5, rel=0.05)
    # a part with no spread (every value the same) is never in reach
    flat = parts.assign(seed_var=0.0, example_var=0.0)
    assert not claims.power_table(flat, seeds=(3,))["in reach at 3 seeds"].any()
    assert verdicts.PLAN_SEEDS[0] >= 3  # the minimum for every comparison
