import json

import pandas as pd
import pytest

from lcx.results import chapter_dir
from lcx.scorecard import Scorecard, collect, collect_parts


def test_every_claim_of_the_registry_is_on_its_chapters_scorecard():
    import re
    from pathlib import Path

    from lcx.claims import CLAIMS

    for claim, stated in CLAIMS.items():
        notebook = json.loads(
            (Path(__file__).parent.parent / "notebooks" / f"{stated.chapter}.ipynb").read_text()
        )
        sources = ["".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code"]
        # the cells that judge claims name each one (a literal id, or an id in a loop over ids)
        code = "\n".join(s for s in sources if "card.judge(" in s)
        assert re.search(rf'"{claim}"', code), f"{claim} not judged on {stated.chapter}"


def test_judge_writes_the_contract_from_the_registry_and_the_results(tmp_path, monkeypatch):
    """A claim with a comparison, an equivalence and a recipe part: judged from results tables,
    saved in scorecard.json with the contract's fields (issue 18), collected part by part."""
    import numpy as np

    from lcx import claims, verdicts

    z = claims.Claim(
        "01_rope",
        "New beats old, short quality kept",
        "+0.2",
        "Table Z",
        parts=(
            claims.Part(
                "gain", "empirical", "new > old", "accuracy", ("new", "old"), 1, 0.1, why="x"
            ),
            claims.Part(
                "kept", "empirical", "short kept", "-nll", ("new", "old"), 1, margin=0.05, why="y"
            ),
            claims.Part("mix", "recipe", "25% books"),
        ),
    )
    monkeypatch.setattr(claims, "CLAIMS", {**claims.CLAIMS, "Z1": z})
    monkeypatch.setenv("LCX_RESULTS", str(tmp_path))
    rng = np.random.default_rng(0)
    gain = verdicts.table(
        {
            (arm, s): dict(enumerate(rng.normal(mu, 0.05, 40)))
            for arm, mu in (("new", 0.9), ("old", 0.3))
            for s in range(3)
        }
    )
    kept = verdicts.table(
        {
            (arm, s): dict(enumerate(rng.normal(1.0, 0.01, 40)))
            for arm in ("new", "old")
            for s in range(3)
        }
    )
    card = Scorecard("01_rope", "cpu")
    row = card.judge("Z1", {"gain": gain, "kept": kept, "mix": (True, "0.25")}, scale="tiny")
    assert row.verdict == "reproduced" and row.statement == z.statement and row.paper == "+0.2"
    by = {p["part"]: p for p in row.parts}
    assert by["gain"]["effect"] == pytest.approx(0.6, abs=0.03) and by["gain"]["n_seeds"] == 3
    assert by["gain"]["ci_low"] > 0.1 and by["kept"]["verdict"] == "reproduced"
    assert by["mix"] == {
        "part": "mix",
        "kind": "recipe",
        "says": "25% books",
        "holds": True,
        "ours": "0.25",
    }
    with pytest.raises(ValueError, match="missing"):
        card.judge("R2", {})
    card2 = Scorecard("01_rope", "cpu")
    row = card2.judge(
        "Z1", {"gain": "not run: run_systems=False", "kept": kept, "mix": (False, "0.5")}
    )
    assert row.parts[0]["verdict"] == verdicts.NOT_TESTABLE and row.verdict == "partly"
    with pytest.raises(ValueError, match="unknown"):
        Scorecard("01_rope", "cpu").judge(
            "Z1", {"gain": gain, "kept": kept, "mix": (1, ""), "x": 1}
        )
    with pytest.raises(ValueError, match="belongs to"):
        Scorecard("02_base_model", "cpu").judge("Z1", {})
    card.save(chapter_dir("01_rope", "cpu"), {"chapter": "01_rope"})
    saved = json.loads((tmp_path / "cpu" / "01_rope" / "scorecard.json").read_text())
    assert {"chapter", "profile", "rows"} <= set(saved)
    part = saved["rows"][0]["parts"][0]
    contract = ["metric", "effect", "ci_low", "ci_high", "min_effect", "detectable_effect"]
    assert set(contract + ["n_seeds", "n_examples", "verdict"]) <= set(part)
    assert (
        saved["rows"][0]["parts"][2]["kind"] == "recipe" and "holds" in saved["rows"][0]["parts"][2]
    )
    table = collect("cpu", root=tmp_path)
    assert list(table.claim) == ["Z1"] and list(table.verdict) == ["reproduced"]
    assert list(table.chapter) == ["01_rope"] and collect("gpu", root=tmp_path).empty
    parts = collect_parts("cpu", root=tmp_path)
    assert list(parts.part) == ["gain", "kept", "mix"] and list(parts.claim) == ["Z1"] * 3


def test_a_failed_base_gate_makes_every_part_on_the_base_not_testable_and_no_other():
    import numpy as np

    from lcx import verdicts
    from lcx.claims import CLAIMS

    # T6's parts measure the code (memory, speed), not the model: on_base=False
    assert not any(p.on_base for p in CLAIMS["T6"].parts)
    rng = np.random.default_rng(0)

    def results(claim):
        out = {}
        for p in CLAIMS[claim].parts:
            t, r = p.arms
            out[p.name] = verdicts.table(
                {(t, s): pd.Series(rng.normal(5.0, 0.1, 8) * p.direction) for s in (0, 1)}
                | {(r, s): pd.Series(rng.normal(0.0, 0.1, 8)) for s in (0, 1)}
            )
        return out

    failed = Scorecard("03_together_pi", "cpu", base_gate=(False, "passkey exact 0.10 at W"))
    t2, t6 = failed.judge("T2", results("T2")), failed.judge("T6", results("T6"))
    assert all(p["verdict"] == verdicts.NOT_TESTABLE for p in t2.parts)
    assert all("base model: passkey exact 0.10 at W" in p["reason"] for p in t2.parts)
    assert all(p["verdict"] != verdicts.NOT_TESTABLE for p in t6.parts)
    passed = Scorecard("03_together_pi", "cpu", base_gate=(True, "fine"))
    assert all(
        p["verdict"] != verdicts.NOT_TESTABLE for p in passed.judge("T2", results("T2")).parts
    )
