"""lcx.pretrained: the base models' recipes and the measures of how they use their window."""

import pandas as pd
import pytest

from lcx import pretrained


def test_context_use_reads_b1s_measures_from_the_evaluations():
    W = 4
    ppl = pd.DataFrame({"length": [W, 8 * W, 16 * W], "ppl": [10.0, 30.0, 45.0]})
    passkey = pd.DataFrame(
        {
            "length": [W, W, 8 * W, 16 * W],
            "per_digit": [0.5, 1.0, 0.1, 0.3],
            "near_copy": [1.0, 0.5, 0.0, 0.0],
        }
    )
    by_position = pd.DataFrame({"start": [0, 1, 2, 3], "end": [1, 2, 3, 4], "nll": [5.0, 4, 3, 2]})
    m = pretrained.context_use(ppl, passkey, by_position, W)
    assert m["ppl_ratio_16w_over_w"] == pytest.approx(4.5)
    assert m["passkey_per_digit_at_w"] == pytest.approx(0.75)
    assert m["passkey_per_digit_8w_16w_max"] == pytest.approx(0.3)
    assert m["near_copy_at_w"] == pytest.approx(0.75)
    # first bucket 5 nats; buckets in (W/2, W] start at 3: 2 nats
    assert m["context_gain_nats"] == pytest.approx(3.0)


def _b1_inputs(W=4, at_w=(1.0, 0.8, 0.6, 0.6)):
    # per-window NLL: 3 windows at W, 8W, 16W (window i at 16W is 1 nat above window i at W)
    windows = pd.DataFrame(
        {
            "length": [W] * 3 + [8 * W] * 3 + [16 * W] * 3,
            "window": [0, 1, 2] * 3,
            "nll": [2.0, 2.5, 3.0, 2.2, 3.5, 3.3, 3.0, 3.5, 4.0],
        }
    )
    # passkey: two depths x two examples per length; past 8W = the mean of 8W and 16W per example
    rows = []
    for length, scores in [
        (W, at_w),
        (8 * W, (0.2, 0.0, 0.4, 0.2)),
        (16 * W, (0.0, 0.2, 0.2, 0.0)),
    ]:
        for (depth, example), s in zip(
            [(0.0, 0), (0.0, 1), (0.5, 0), (0.5, 1)], scores, strict=True
        ):
            rows.append({"length": length, "depth": depth, "example": example, "per_digit": s})
    return windows, pd.DataFrame(rows)


def test_b1_results_pair_windows_by_index_and_passkey_examples_by_key_and_depth():
    from lcx import verdicts
    from lcx.claims import CLAIMS

    W = 4
    windows, passkey = _b1_inputs(W)
    out = pretrained.b1_results(windows, passkey, W, seed=3)
    assert sorted(out) == sorted(p.name for p in CLAIMS["B1"].parts)
    t16 = out["nll 16W"]
    assert set(t16.arm) == {"16W", "W"} and set(t16.seed) == {3}
    est = verdicts.estimate(t16, "16W", "W")
    assert est.effect == pytest.approx(1.0)  # every pair differs by 1 nat
    assert est.se == pytest.approx(0.0) and est.n_examples == 3  # paired: no spread left
    est8 = verdicts.estimate(out["nll 8W"], "8W", "W")
    diffs = [0.2, 1.0, 0.3]  # 8W - W window by window
    assert est8.effect == pytest.approx(sum(diffs) / 3)
    assert est8.se == pytest.approx(pd.Series(diffs).std() / 3**0.5)
    pk = out["passkey"]
    past = pk[pk.arm == "8W-16W"].set_index("example")["value"].to_dict()
    assert past == pytest.approx({"0/0": 0.1, "0/1": 0.1, "0.5/0": 0.3, "0.5/1": 0.1})
    at_w = pk[pk.arm == "W"].set_index("example")["value"].to_dict()
    assert at_w == pytest.approx({"0/0": 1.0, "0/1": 0.8, "0.5/0": 0.6, "0.5/1": 0.6})
    # judged as the registry says: passkey falls (direction -1) by 0.75 - 0.15 = 0.6
    est_pk = verdicts.estimate(pk, "8W-16W", "W", direction=-1)
    assert est_pk.effect == pytest.approx(0.6)


def test_b1_without_a_passkey_at_w_says_why_and_the_gate_reads_the_registry():
    W = 4
    windows, passkey = _b1_inputs(W)
    short = passkey[passkey.length != W]
    reason = pretrained.b1_results(windows, short, W)["passkey"]
    assert isinstance(reason, str) and "lengths evaluated: [32, 64]" in reason
    assert isinstance(pretrained.b1_results(windows, None, W)["passkey"], str)
    assert pretrained.b1_gates(short, W) == {}
    passed, why = pretrained.b1_gates(passkey, W)["passkey"]  # mean at W 0.75 >= 0.5
    assert passed and why == "passkey per digit >= 0.5 at W: 0.75 here"
    _, low = _b1_inputs(W, at_w=(0.5, 0.5, 0.5, 0.4))  # 0.475 < 0.5
    assert pretrained.b1_gates(low, W)["passkey"][0] is False
    _, edge = _b1_inputs(W, at_w=(0.5, 0.5, 0.5, 0.5))  # exactly at the gate passes
    assert pretrained.b1_gates(edge, W)["passkey"][0] is True


def test_b1_is_judged_end_to_end_by_the_scorecard():
    from lcx.scorecard import Scorecard

    W = 4
    windows, passkey = _b1_inputs(W)
    card = Scorecard("02_base_model", "tiny")
    row = card.judge(
        "B1", pretrained.b1_results(windows, passkey, W), gates=pretrained.b1_gates(passkey, W)
    )
    by_part = {p["part"]: p for p in row.parts}
    # 16W: exactly +1 nat in each of 3 windows: no spread, and 3 are too few for a sign test
    assert by_part["nll 16W"]["verdict"] == "inconclusive"
    # 8W: +0.5 on 3 windows -> interval wide
    assert by_part["nll 8W"]["verdict"] == "inconclusive"
    _, dead = _b1_inputs(W, at_w=(0.1, 0.0, 0.2, 0.1))
    card = Scorecard("02_base_model", "tiny")
    row = card.judge(
        "B1", pretrained.b1_results(windows, dead, W), gates=pretrained.b1_gates(dead, W)
    )
    gated = {p["part"]: p for p in row.parts}["passkey"]
    assert gated["verdict"] == "not testable at this scale"
    assert gated["reason"].startswith("gate failed: passkey per digit >= 0.5 at W: 0.10 here")
