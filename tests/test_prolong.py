"""lcx.prolong against ProLong's settings (Tables 4, 7, 8, 9, 18) and naive arithmetic."""

import numpy as np
import pandas as pd
import pytest

from lcx import attention, claims, prolong, rope, tasks, train, verdicts
from lcx.scorecard import Scorecard


def test_rope_bases_at_the_papers_scale_are_table_18s():
    b = prolong.rope_bases(500_000.0, 8192, 65536, 524288, 128)
    assert b["original"] == 500_000
    assert b["ntk"] == pytest.approx(rope.ntk_base(500_000.0, 8, 128))
    assert 3.5e6 < b["ntk"] < 4.5e6  # "~4M", dynamic NTK's suggestion for 8x
    assert b["stage 1"] == 2 * b["ntk"]  # the recipe's 8M: twice the suggestion
    assert 1.0e8 < b["stage 2"] < 1.6e8  # 128M for 512K


def test_recipes_on_gpu_are_the_papers():
    stage1, stage2, sft = prolong.recipes("gpu", 8192, 65536, 524288, gpus=8)
    # "4M tokens" per step: 2^22, 64 rows of 64K (4,000,000 would be 61.04 rows)
    assert (stage1.seq_len, stage1.lr, stage1.batch_tokens) == (65536, 1e-5, 4 * 2**20)
    assert stage1.rows_per_step == 64 and sft.rows_per_step == 64
    assert stage1.betas == (0.9, 0.95) and stage1.weight_decay == 0.1 and stage1.warmup == 0.1
    assert stage1.document_masking and stage1.parallel == {"processes": 8, "fsdp": True}
    assert (stage2.seq_len, stage2.batch_tokens, stage2.rows_per_step) == (524288, 8 * 2**20, 16)
    assert stage2.parallel == {"processes": 8, "sp_size": 8}  # Ulysses over the GPUs
    assert (sft.lr, sft.tokens) == (2e-5, 1_000_000_000)


def test_ablations_drop_runs_without_their_long_data():
    ran, missing = prolong.ablations("cpu", {"code", "prose", "short"})
    assert missing == ["books only"] and "code only" in ran and len(ran) == 8
    ran, missing = prolong.ablations("tiny", {"code", "short"})
    assert set(ran) == set(prolong.TINY_ABLATIONS) and missing == []
    assert prolong.run_name("RoPE base = NTK", "cpu") == "prolong-rope-base--ntk-cpu"


def test_simulated_throughput_against_hand_dealt_ranks():
    costs = [4.0, 1.0, 1.0, 4.0]  # two ranks: steps (4, 1) and (1, 4) -> 4 + 4 = 8 s
    assert prolong.simulated_throughput(costs, 800, 2, order=[0, 1, 2, 3]) == 800 / 2 / 8
    # paired slow with slow: (4, 4) and (1, 1) -> 5 s
    assert prolong.simulated_throughput(costs, 800, 2, order=[0, 3, 1, 2]) == 800 / 2 / 5
    rng = np.random.default_rng(0)
    mean = prolong.simulated_throughput(costs, 800, 2, trials=400, rng=rng)
    assert 800 / 2 / 8 < mean < 800 / 2 / 5  # random orders fall in between


def test_macro_averages_categories_over_lengths():
    by_length = pd.DataFrame({512: [0.2, 0.4], 1024: [0.4, 0.8]}, index=["recall", "icl"])
    macro = prolong.macro(by_length)
    assert macro.to_dict() == pytest.approx({"recall": 0.3, "icl": 0.6, "avg": 0.45})


# --- the verdicts' inputs ---------------------------------------------------------------------

W = 128


def examples_frame(scores: dict, metric="answer_acc") -> pd.DataFrame:
    """:func:`lcx.prolong.arm_examples`-like rows from ``{(arm, seed, task, length_in_W, depth):
    [score per example]}``; each row's headline metric is written beside it (score + 1)."""
    rows = []
    for cell, ((arm, seed, task, k, depth), values) in enumerate(scores.items()):
        for i, v in enumerate(values):
            where = {"cell": cell, "arm": arm, "seed": seed, "task": task}
            where |= {"category": tasks.TASKS[task].category}
            where |= {"length": k * W, "depth": depth, "example": i, "tokens": k * W}
            rows.append({**where, "metric": metric, "headline": False, "score": v})
            rows.append({**where, "metric": "subem", "headline": True, "score": v + 1})
    return pd.DataFrame(rows)


def test_example_labels_pair_the_same_prompt_and_nothing_else():
    same = prolong.example_label("json_kv", 512, 0.5, 3)
    assert same == prolong.example_label("json_kv", 512.0, 0.50, 3)
    others = {
        prolong.example_label("json_kv", 512, 0.25, 3),
        prolong.example_label("json_kv", 1024, 0.5, 3),
        prolong.example_label("json_kv", 512, 0.5, 4),
        prolong.example_label("doc_qa", 512, 0.5, 3),
        prolong.example_label("json_kv", 512, None, 3),
    }
    assert same not in others and len(others) == 5
    assert prolong.example_label("icl", 512, float("nan"), 0) == prolong.example_label(
        "icl", 512, None, 0
    )


def test_suite_values_mean_is_the_macro_average_over_categories_and_lengths():
    scores = {
        ("a", 0, "json_kv", 4, 0.5): [0.2, 0.4],
        ("a", 0, "json_kv", 8, 0.5): [0.0, 0.2],
        ("a", 0, "icl", 4, None): [1.0, 0.6],
        ("a", 0, "icl", 8, None): [0.4, 0.4],
        ("b", 0, "json_kv", 4, 0.5): [0.1, 0.1],
        ("b", 0, "json_kv", 8, 0.5): [0.1, 0.1],
        ("b", 0, "icl", 4, None): [0.1, 0.1],
        ("b", 0, "icl", 8, None): [0.1, 0.1],
    }
    t = prolong.suite_values(examples_frame(scores), W)
    assert set(t.columns) == {"arm", "seed", "example", "value"} and len(t) == 16
    # by hand: recall (0.3 + 0.1) / 2 = 0.2, ICL (0.8 + 0.4) / 2 = 0.6, macro 0.4
    assert t[t.arm == "a"].value.mean() == pytest.approx(0.4)
    # the same prompt has the same label in both arms, so the engine pairs them
    assert set(t[t.arm == "a"].example) == set(t[t.arm == "b"].example)
    recall_8 = prolong.suite_values(examples_frame(scores), W, categories=["recall"], lengths=[8])
    assert sorted(recall_8[recall_8.arm == "a"].value) == [0.0, 0.2]
    headline = prolong.suite_values(examples_frame(scores), W, metric=None)
    assert headline[headline.arm == "a"].value.mean() == pytest.approx(1.4)


def test_suite_values_average_a_categorys_tasks_example_by_example():
    # recall has two tasks (JSON KV and the needle): by hand, recall's i-th value is the mean of
    # their i-th examples, so the mean over values is recall's mean (0.3 + 0.7) / 2 = 0.5 next to
    # ICL's 0.9, macro 0.7, not the mean over all six examples (0.633)
    scores = {
        ("a", 0, "json_kv", 4, 0.5): [0.2, 0.4],
        ("a", 0, "needle", 4, 0.5): [0.6, 0.8],
        ("a", 0, "icl", 4, None): [1.0, 0.8],
    }
    t = prolong.suite_values(examples_frame(scores), W)
    assert len(t) == 4 and t.value.mean() == pytest.approx(0.7)
    assert sorted(t.value.round(6)) == [0.4, 0.6, 0.8, 1.0]
    # only the needle kept: recall is the needle's examples alone
    kept = prolong.suite_values(examples_frame(scores), W, categories=["recall"], tasks=["needle"])
    assert sorted(kept.value) == [0.6, 0.8]


def test_part_results_average_only_the_tasks_the_base_gate_keeps():
    scores = {
        (arm, seed, task, 4, 0.5): values
        for arm, a in [("code only", 0.0), ("books only", 0.5)]
        for seed in (0, 1)
        for task, values in [
            ("json_kv", [a, a]),
            ("needle", [0.1, 0.3]),
            ("multidoc_qa", [a, a]),
            ("rerank", [a, a]),
            ("icl", [a, a]),
            ("doc_qa", [a, a]),
            ("summary", [a, a]),
        ]
    }
    examples = examples_frame(scores)
    scored = {"score": 0.9, "chance": 0.1, "needs": 0.5}
    gate = {
        "tasks": {
            t: {**scored, "kept": t == "needle"} | ({"score": 0.0} if t != "needle" else {})
            for t in prolong.SUITE
        }
    }
    out = prolong.part_results("P2", {"suite": examples}, W, gate=gate)
    # recall keeps the needle alone: the same scores in both arms, so the difference is 0
    recall = out["recall: code vs books"]
    assert set(recall.value) == {0.1, 0.3}
    assert recall.groupby("arm").value.mean().to_dict() == pytest.approx(
        {"code only": 0.2, "books only": 0.2}
    )
    # no ICL or summarization task passes: not testable, with the task's numbers
    assert isinstance(out["ICL: books vs code"], str)
    assert "icl 0.00 at W (chance 0.10, needs 0.50)" in out["ICL: books vs code"]
    # without a gate every task counts
    every = prolong.part_results("P2", {"suite": examples}, W)
    assert every["ICL: books vs code"].groupby("arm").value.mean().to_dict() == pytest.approx(
        {"code only": 0.0, "books only": 0.5}
    )


def test_suite_values_refuse_a_mean_that_is_not_the_macro_average():
    scores = {("a", 0, "json_kv", 4, 0.5): [0.2, 0.4, 0.6], ("a", 0, "icl", 4, None): [1.0]}
    with pytest.raises(ValueError, match="macro-average"):
        prolong.suite_values(examples_frame(scores), W)
    with pytest.raises(ValueError, match="no answer_acc scores"):
        prolong.suite_values(examples_frame(scores), W, lengths=[16])


def test_every_empirical_part_of_p1_to_p8_has_its_data_and_known_arms():
    empirical = {
        (cid, p.name)
        for cid in [f"P{i}" for i in range(1, 10)]
        for p in claims.CLAIMS[cid].parts
        if p.kind == "empirical"
    }
    assert set(prolong.PART_DATA) == empirical
    arms = {
        *prolong.ABLATIONS,
        prolong.CONTINUE,
        prolong.SWITCH,
        *(prolong.synthetic_arm(s) for s in (0, 0.1, 0.5)),
        *prolong.TIMED.values(),
    }
    for cid, name in empirical:
        assert set(claims.CLAIMS[cid].part(name).arms) <= arms, (cid, name)


def test_minimum_effects_are_the_papers_effects_in_points_over_100():
    """Each threshold against the paper's tables as lcx.prolong quotes them (Tables 4, 7, 18)."""
    t4, t18 = prolong.TABLE_4, prolong.TABLE_18
    col = {c: i for i, c in enumerate(prolong.PAPER_ROWS)}

    def effect(cid, name):
        return claims.CLAIMS[cid].part(name).min_effect

    code, books, mix = t4["Code Repos"], t4["Books"], t4["Books/Repos 1:1"]
    assert effect("P2", "recall: code vs books") == pytest.approx((code[0] - books[0]) / 100)
    assert effect("P2", "recall: code vs 1:1") == pytest.approx((code[0] - mix[0]) / 100)
    assert effect("P2", "ICL: books vs code") == pytest.approx((books[3] - code[3]) / 100)
    assert effect("P2", "summ: books vs code") == pytest.approx((books[5] - code[5]) / 100)
    avg = col["Avg."]
    assert effect("P2", "avg: 1:1 vs code") == pytest.approx((mix[avg] - code[avg]) / 100)
    assert effect("P2", "avg: 1:1 vs books") == pytest.approx((mix[avg] - books[avg]) / 100)
    ntk, orig, twice = t18["4M (NTK)"][avg], t18["0.5M (original)"][avg], t18["8M (2x NTK)"][avg]
    assert effect("P4", "2x NTK vs NTK") == pytest.approx((twice - ntk) / 100)
    assert effect("P4", "NTK vs original") == pytest.approx((ntk - orig) / 100)
    masks = prolong.TABLE_20
    gain = masks["Document masks"][avg] - masks["No doc masks"][avg]
    assert effect("P5", "long") == pytest.approx(gain / 100)
    at_64k, at_512k = (np.array(v.split(" / "), float) for v in prolong.TABLE_7.values())
    assert effect("P6", "at 8W") == pytest.approx((at_512k - at_64k).mean() / 100, abs=1e-4)
    assert effect("P8", "per-document attention") == pytest.approx(np.log(3095 / 2770), abs=1e-3)
    for part in claims.CLAIMS["P7"].parts:  # "does not help": a gain beyond one point is help
        assert part.margin == 0.01 and part.arms[0] == prolong.SHORT_ONLY


def test_p9_lengths_are_table_10s_over_llama_3s_window():
    # Table 10: averaged over 32K, 64K and 128K; Llama-3-8B's native window is 8K
    assert [k * 8192 for k in prolong.P9_LENGTHS] == [32768, 65536, 131072]
    assert [k * 8192 for k in prolong.EVAL_LENGTHS] == [32768, 65536]  # §2.1: 32K and 64K


def test_part_results_feed_the_engine_and_name_what_did_not_run():
    rng = np.random.default_rng(0)
    scores = {}
    for seed in (0, 1):
        for task in prolong.SUITE:
            for k in prolong.EVAL_LENGTHS:
                depth = 0.5 if task in ("json_kv", "needle", "multidoc_qa", "doc_qa") else None
                base = rng.uniform(0.2, 0.4, 12)
                scores["no document masking", seed, task, k, depth] = base
                scores["ProLong recipe", seed, task, k, depth] = base + 0.1  # masks: +0.1
    short = pd.DataFrame(
        [
            {"arm": arm, "seed": s, "doc": d, "tokens": 10, "nll": 3.0 + 0.01 * d, "nll_sum": 30}
            for arm in ("ProLong recipe", "no document masking")
            for s in (0, 1)
            for d in range(20)
        ]
    )
    sources = {"suite": examples_frame(scores), "short": short, "long": "no long document"}
    reasons = prolong.not_run("tiny", prolong.TINY_ABLATIONS, [], [0.5])
    p5 = prolong.part_results("P5", sources, W, reasons)
    card = Scorecard("06_prolong", "tiny")
    row = card.judge("P5", p5)
    long, short_part = row.parts
    assert long["verdict"] == "reproduced" and long["effect"] == pytest.approx(0.1)
    assert long["n_seeds"] == 2 and long["n_examples"] == 12 * 6 * 2
    # the same short NLL in both arms, document by document: no spread, nothing to read
    assert short_part["effect"] == pytest.approx(0) and short_part["verdict"] == "inconclusive"
    p4 = prolong.part_results("P4", sources, W, reasons)
    assert p4["2x NTK vs NTK"] == "RoPE base = NTK: not among the tiny profile's ablations"
    assert prolong.part_results("P1", sources, W, reasons)["long perplexity"] == "no long document"
    p7 = prolong.part_results("P7", sources, W, reasons)
    assert "10% synthetic: this share is not run on the tiny profile" in p7["10% synthetic"]


def test_timing_values_turn_row_times_into_log_speed_ratios():
    times = pd.DataFrame(
        [
            {"row": r, "impl": impl, "seconds": s * (1 + r)}
            for r in range(4)
            for impl, s in [("sdpa", 2.0), (attention.VARLEN, 1.0)]
        ]
    )
    t = prolong.timing_values(times)
    assert prolong.part_results("P8", {"rows": times}, W)["per-document attention"].equals(t)
    est = verdicts.estimate(t, "variable-length attention", "full attention", direction=-1)
    assert est.effect == pytest.approx(np.log(2)) and est.se == pytest.approx(0)


def test_the_trainers_step_loss_is_token_averaged():
    holds, ours = prolong.token_averaged_loss()
    assert holds and "divided by 8" in ours


def test_synthetic_gates_fail_a_share_that_rounds_to_no_rows():
    def recipe(rows):
        return train.Recipe(seq_len=256, tokens=256 * rows, batch_tokens=256 * rows, lr=1e-3)

    assert prolong.synthetic_rows(recipe(4), 0.1) == 0  # 0.4 of a row: the short-only run
    gates = prolong.synthetic_gates(recipe(4))
    assert gates["10% synthetic"][0] is False and gates["50% synthetic"][0] is True
    assert gates["50% synthetic"][1] == "2 of 4 SFT rows synthetic"
    assert all(ok for ok, _ in prolong.synthetic_gates(recipe(20)).values())


def test_p9_report_checks_the_lengths_and_categories_it_covers():
    def frame(lengths, tasks=prolong.SUITE):
        return examples_frame({("final", 0, t, k, None): [0.5] for t in tasks for k in lengths})

    report = prolong.p9_report(frame(prolong.P9_LENGTHS), W)
    assert report["lengths"][0] and report["categories"][0]
    assert "avg 0.500" in report["categories"][1]
    assert not prolong.p9_report(frame((2, 4, 8)), W)["lengths"][0]
    assert not prolong.p9_report(frame(prolong.P9_LENGTHS, prolong.SUITE[:-1]), W)["categories"][0]


def test_per_seed_short_perplexity_counts_every_token():
    ex = examples_frame({("a", 0, "icl", 4, None): [0.5]})
    short = pd.DataFrame(
        {"arm": "a", "seed": 0, "doc": [0, 1], "tokens": [10, 30], "nll_sum": [10.0, 90.0]}
    )
    row = prolong.per_seed(ex, short).iloc[0]
    assert row["short ppl"] == pytest.approx(np.exp(100 / 40))
    assert np.isnan(row["long ppl"]) and row["avg"] == pytest.approx(0.5)
