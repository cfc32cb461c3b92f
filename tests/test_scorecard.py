import json

import pytest

from lcx.scorecard import VERDICTS, Scorecard, collect, verdict


def test_verdict_rule():
    assert verdict([True, True]) == "reproduced"
    assert verdict({"a": True, "b": False}) == "partly"
    assert verdict([False, False]) == "not reproduced"
    assert verdict([True], testable=False) == "not testable at this scale"
    with pytest.raises(ValueError):
        verdict([])


def test_scorecard_roundtrip_and_collect(tmp_path):
    for chapter, claims in [("02_b", ["B1"]), ("01_a", ["R1", "R2"])]:
        card = Scorecard(chapter, "cpu")
        for claim in claims:
            card.add(
                claim,
                "statement",
                "1.0",
                "0.9",
                "tiny",
                verdict([True, claim != "R2"]),
                "ours > 0.5",
            )
        directory = tmp_path / "cpu" / chapter
        directory.mkdir(parents=True)
        card.save(directory)
    data = json.loads((tmp_path / "cpu" / "01_a" / "scorecard.json").read_text())
    assert [r["claim"] for r in data["rows"]] == ["R1", "R2"]
    table = collect("cpu", root=tmp_path)
    assert list(table["chapter"]) == ["01_a", "01_a", "02_b"]
    assert list(table["verdict"]) == ["reproduced", "partly", "reproduced"]
    assert collect("gpu", root=tmp_path).empty


def test_scorecard_rejects_typed_or_duplicate_rows():
    card = Scorecard("01_a", "cpu")
    with pytest.raises(ValueError, match="verdict"):
        card.add("R1", "s", "p", "o", "tiny", "mostly", "rule")
    card.add("R1", "s", "p", "o", "tiny", VERDICTS[0], "rule")
    with pytest.raises(ValueError, match="already"):
        card.add("R1", "s", "p", "o", "tiny", VERDICTS[0], "rule")
