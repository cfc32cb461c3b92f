import json

import pandas as pd
import pytest

from lcx.scorecard import (
    VERDICTS,
    Scorecard,
    beats_in_every_seed,
    collect,
    seed_ranges,
    verdict,
)


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


def test_beats_in_every_seed_compares_seed_by_seed_not_the_means():
    results = pd.DataFrame(
        {
            "model": ["a", "a", "b", "b", "c", "c", "d"],
            "seed": [0, 1, 0, 1, 1, 0, 0],
            "avg": [0.50, 0.40, 0.45, 0.35, 0.30, 0.60, 0.9],  # c: seed 1 then seed 0
            "ppl": [10.0, 12.0, 11.0, 13.0, 9.0, 20.0, 1.0],
            "recall": [0.1, 0.2, 0.3, 0.0, 0.0, 0.0, 0.0],
        }
    )
    assert beats_in_every_seed(results, "a", "b")  # 0.50 > 0.45 and 0.40 > 0.35
    assert not beats_in_every_seed(results, "b", "a")
    # c's mean (0.45) beats a's (0.45)? no; beats b's mean (0.40) but not in seed 1 (0.30 < 0.35)
    assert results[results.model == "c"].avg.mean() > results[results.model == "b"].avg.mean()
    assert not beats_in_every_seed(results, "c", "b")
    assert beats_in_every_seed(results, "a", "b", "ppl", lower=True)  # 10 < 11, 12 < 13
    # a list of columns is averaged per row: a (0.30, 0.30) vs b (0.375, 0.175)
    assert not beats_in_every_seed(results, "a", "b", ["avg", "recall"])
    with pytest.raises(ValueError, match="seeds"):
        beats_in_every_seed(results, "a", "d")


def test_seed_ranges_give_mean_and_range_of_each_model_that_ran():
    results = pd.DataFrame(
        {"model": ["a", "a", "b"], "seed": [0, 1, 0], "avg": [0.1, 0.3, 0.5], "x": [1, 2, 3]}
    )
    assert seed_ranges(results, ["a", "missing", "b"]) == (
        "a 0.200 [0.100, 0.300], b 0.500 [0.500, 0.500]"
    )
    assert seed_ranges(results, ["a"], "x") == "a 1.500 [1.000, 2.000]"
