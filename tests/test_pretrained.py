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


def _gate_inputs(W=8, exact=(1.0,) * 9 + (0.0,), diffs=(0.2, 0.1, 0.3, 0.2, 0.25)):
    passkey = pd.DataFrame(
        {
            "length": [W] * len(exact) + [2 * W] * 2,
            "exact": [*exact, 0.0, 0.0],  # the 2W rows must not count
        }
    )
    true = [3.0, 2.5, 2.0, 3.5, 2.8]
    far = pd.DataFrame(
        {
            "window": range(len(diffs)),
            "true": true,
            "replaced": [t + d for t, d in zip(true, diffs, strict=True)],
        }
    )
    # suite examples at W (headline rows only count): json_kv learned (chance 1/10), icl at
    # chance 1/4 (needs 0.5), topic with 2 candidates (chance 0.5, needs 1.0: never kept)
    rows = []
    for task, metric, scores, chance in [
        ("json_kv", "subem", [1, 1, 0, 1], 0.1),
        ("icl", "exact", [1, 0, 0, 0], 0.25),
        ("topic", "subem", [1, 1, 1, 0], 0.5),
    ]:
        for s in scores:
            rows.append(
                {
                    "task": task,
                    "length": W,
                    "metric": metric,
                    "headline": True,
                    "score": s,
                    "chance": chance,
                }
            )
            rows.append(
                {
                    "task": task,
                    "length": W,
                    "metric": "other",
                    "headline": False,
                    "score": 0.0,
                    "chance": float("nan"),
                }
            )
        rows.append(
            {
                "task": task,
                "length": 2 * W,
                "metric": metric,
                "headline": True,
                "score": 0.0,
                "chance": chance,
            }
        )
    return passkey, far, pd.DataFrame(rows)


def test_gate_reads_exact_match_at_w_a_paired_t_interval_and_each_tasks_chance():
    from scipy import stats

    from lcx.claims import GATE_CHANCE_MULTIPLE, GATE_PASSKEY_EXACT, GATE_TASK_SCORE

    W = 8
    passkey, far, suite = _gate_inputs(W)
    g = pretrained.gate(passkey, far, suite, W)
    assert g["passkey_exact_at_w"] == pytest.approx(0.9)
    d = far["replaced"] - far["true"]
    lo, hi = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    f = g["far_context_gain"]
    assert (f["estimate"], f["ci_low"], f["ci_high"]) == pytest.approx((d.mean(), lo, hi))
    assert f["n"] == len(d)
    assert GATE_PASSKEY_EXACT <= 0.9 and lo > 0 and g["passed"] is True
    t = g["tasks"]
    assert t["json_kv"]["score"] == pytest.approx(0.75)
    assert t["json_kv"]["needs"] == pytest.approx(max(GATE_TASK_SCORE, GATE_CHANCE_MULTIPLE * 0.1))
    assert t["icl"]["needs"] == pytest.approx(max(GATE_TASK_SCORE, GATE_CHANCE_MULTIPLE * 0.25))
    assert t["topic"]["needs"] == pytest.approx(GATE_CHANCE_MULTIPLE * 0.5)
    assert g["kept_tasks"] == ["json_kv"]  # icl 0.25 < 0.5; topic 0.75 < 1.0
    assert "0.90" in pretrained.gate_reason(g)


def test_gate_fails_on_exact_match_or_on_a_far_context_interval_that_reaches_zero():
    W = 8
    passkey, far, suite = _gate_inputs(W, exact=(1.0,) * 8 + (0.0, 0.0))
    assert pretrained.gate(passkey, far, suite, W)["passed"] is False  # 0.8 exact
    passkey, far, suite = _gate_inputs(W, diffs=(0.2, -0.1, 0.3, -0.2, 0.05))
    g = pretrained.gate(passkey, far, suite, W)
    assert g["far_context_gain"]["ci_low"] < 0 and g["passed"] is False


def test_attempts_stop_at_the_first_initialisation_that_copies_and_base_runs_take_it(monkeypatch):
    from pathlib import Path

    from lcx import tasks
    from lcx.claims import GATE_PASSKEY_EXACT

    # exact match by (init, length): init 0 never copies (stops after 128, its first check),
    # 1000 copies at 128 but not at W, 2000 copies at both
    exact = {(0, 128): 0.1, (1000, 128): 1.0, (1000, 256): 0.3, (2000, 128): 1.0, (2000, 256): 1.0}
    trained, checked = [], []

    def fake_train(profile, name, init, labels, after=()):
        trained.append((init, tuple(labels)))
        return [*after, *(Path(f"/runs/{init}/{label}") for label in labels)]

    def fake_exact(profile, ref, tokenizer, length):
        checked.append((int(Path(ref.source).parent.name), length))
        return exact[checked[-1]]

    monkeypatch.setattr(pretrained, "_train", fake_train)
    fake = type("Keyed", (), {"key": "k"})()  # a tokenizer and tokens as run keys read them
    monkeypatch.setattr(pretrained, "corpus_tokens", lambda profile, name: (fake, fake))
    monkeypatch.setattr(pretrained, "passkey_exact", fake_exact)
    monkeypatch.setattr(tasks, "passkey_min_length", lambda tokenizer: 95)  # 64 holds no prompt
    monkeypatch.setitem(pretrained.SETUP["cpu"], "attempts", 4)
    monkeypatch.setitem(pretrained.SETUP["cpu"], "first_inits", {})
    tried = pretrained.attempts("cpu", "llama2", 0)
    assert tried["init"].tolist() == [0, 1000, 2000]  # stops at the first that passes
    assert tried["passed"].tolist() == [False, False, True] and GATE_PASSKEY_EXACT > 0.3
    assert tried["length"].tolist() == [128, 256, 256] and tried["exact"].tolist() == [
        0.1,
        0.3,
        1.0,
    ]
    # one stage at a time; init 0 stops before W, the others check at 128 and then at W
    stages_of = {i: [labels for j, labels in trained if j == i] for i in (0, 1000, 2000)}
    assert stages_of[0] == [("64 tokens",), ("128 tokens",)]
    assert stages_of[2000] == [("64 tokens",), ("128 tokens",), ("256 tokens",)]
    assert checked == [(0, 128), (1000, 128), (1000, 256), (2000, 128), (2000, 256)]
    runs = pretrained.base_runs("cpu", "llama2", 0)
    assert [str(r) for r in runs[-2:]] == ["/runs/2000/256 tokens", "/runs/2000/formats"]
    # none passes: the attempt that got furthest goes on to the formats stage
    monkeypatch.setitem(pretrained.SETUP["cpu"], "attempts", 2)
    runs = pretrained.base_runs("cpu", "llama2", 0)
    assert [str(r) for r in runs[-2:]] == ["/runs/1000/256 tokens", "/runs/1000/formats"]
    # the only attempt stopped early: its remaining stage-1 stage is trained, then the formats
    monkeypatch.setitem(pretrained.SETUP["cpu"], "attempts", 1)
    runs = pretrained.base_runs("cpu", "llama2", 0)
    assert [str(r) for r in runs] == [f"/runs/0/{s}" for s in pretrained.stages("cpu", 0)]
    # a base with a first initialisation named tries it first, then the others in order
    monkeypatch.setitem(pretrained.SETUP["cpu"], "attempts", 4)
    monkeypatch.setitem(pretrained.SETUP["cpu"], "first_inits", {"llama3": 2000})
    assert pretrained.attempts("cpu", "llama3", 0)["init"].tolist() == [2000]
    monkeypatch.setitem(pretrained.SETUP["cpu"], "first_inits", {"llama3": 1000})
    assert pretrained.attempts("cpu", "llama3", 0)["init"].tolist() == [1000, 0, 2000]
    # one that is not among its attempts changes nothing
    monkeypatch.setitem(pretrained.SETUP["cpu"], "first_inits", {"llama3": 5000})
    assert pretrained.attempts("cpu", "llama3", 0)["init"].tolist() == [0, 1000, 2000]
    monkeypatch.setitem(pretrained.SETUP["cpu"], "first_inits", {"llama3": 1000})
    # the tries table of two bases: one row per base and attempt, the run folders left out
    monkeypatch.setitem(pretrained.SETUP["cpu"], "attempts", 2)
    table = pretrained.tries("cpu", ["llama2", "llama3"], 0)
    assert table.index.names == ["base", "attempt"] and "runs" not in table
    assert table.loc["llama2", "init"].tolist() == [0, 1000]
    assert table.loc["llama3", "init"].tolist() == [1000, 0]
    assert pretrained.tries("gpu", ["llama2"], 0).empty  # a released checkpoint has no tries
