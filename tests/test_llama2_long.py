"""lcx.llama2_long against Llama 2 Long's numbers (Table 5's variants, Table 10's FLOPs, §4.1's
recipe, Fig. 1's law), the rows and models it builds, and the results its scorecard judges
(against independent references: naive loops, the power law's formula, textbook jackknife
results, the registry's parts)."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from lcx import evaluate, llama2_long, models, verdicts
from lcx.claims import CLAIMS
from lcx.scorecard import Scorecard


def test_variants_at_the_papers_window_are_table_5s():
    v = llama2_long.variants(10_000.0, 4096)
    assert v["RoPE"] == {"method": "default", "base": 10_000.0}
    assert v["ABF"]["base"] == v["xPos-ABF"]["base"] == 500_000.0  # 10K -> 500K
    assert v["PI"]["method"] == "linear" and v["PI"]["factor"] * 4096 == 32768
    assert v["xPos-ABF"]["xpos"]["scale_base"] == 512  # xPos's default at a 4K window
    assert llama2_long.xpos(256)["scale_base"] == 32 and llama2_long.xpos(256)["center"] == 1024


def test_recipe_on_gpu_is_the_papers_and_flops_follow_table_10():
    r = llama2_long.recipe("gpu", 4096)
    # 100,000 steps of "4M" tokens (2^22, Llama 2's 1,024 rows of 4K): 128 rows of 32K, ~419B
    assert (r.seq_len, r.steps, r.batch_tokens, r.lr) == (32768, 100_000, 4 * 2**20, 2e-5)
    assert r.rows_per_step == 128 and r.tokens == pytest.approx(400e9, rel=0.05)
    flops = llama2_long.flops_table(models.paper_config("meta-llama/Llama-2-7b-hf"))
    ours, paper = flops["ours / from scratch"], flops["paper / from scratch"]
    assert ours.iloc[-1] == pytest.approx(paper.iloc[-1], rel=0.01)  # ~40% fewer at 80%
    assert (ours - paper).abs().max() < 0.01
    assert list(flops["paper FLOPs"]) == list(llama2_long.TABLE_10_FLOPS.values())


def test_far_ref_moves_only_an_xpos_models_centre(tmp_path):
    config = models.tiny_config("tiny", 300, 64, 520.0)
    plain = models.new_model(config, seed=0)
    xpos = models.with_rope(plain, "default", base=26_000.0, xpos=llama2_long.xpos(64))
    for name, net in (("plain", plain), ("xpos", xpos)):
        net.save_pretrained(tmp_path / name / "model")
    plain_ref, xpos_ref = (evaluate.Ref.of(tmp_path / n) for n in ("plain", "xpos"))
    assert llama2_long.far_ref(plain_ref, 512) == plain_ref
    far = llama2_long.far_ref(xpos_ref, 512)
    assert far.xpos_center == 512 and far.key != xpos_ref.key
    loaded = far.load()
    assert loaded.config.xpos["center"] == 512
    assert json.loads((tmp_path / "xpos/model/config.json").read_text())["xpos"]["center"] == 256
    # the centre keeps scores as they were (and finite) at positions the old one could not reach
    x = torch.randint(0, 300, (1, 30))
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.eval()(x).logits, xpos.eval()(x).logits, rtol=1e-4, atol=1e-4
        )


def test_sft_rows_mix_short_instructions_with_long_self_instruct(tiny):
    tok, tokens = tiny

    class Ch:  # the chapter context sft_rows reads
        W, profile, tokenizer = 128, "tiny", tok

    Ch.tokens = tokens
    sft = llama2_long.sft_recipe("tiny", 128)
    answers_only = llama2_long.sft_rows(Ch, sft, 0, lm_loss=False)
    with_lm = llama2_long.sft_rows(Ch, sft, 0, lm_loss=True)
    assert len(answers_only) == len(with_lm) == sft.steps * sft.rows_per_step
    trained = [
        sum(float(r["loss_weights"].sum()) for r in rows) for rows in (answers_only, with_lm)
    ]
    assert trained[1] > 2 * trained[0]  # the LM loss on the long input trains many more tokens


def test_loss_of_first_is_the_mean_nll_of_the_first_c_tokens():
    rng = np.random.default_rng(0)
    nlls = [rng.random((5, 40)), rng.random((5, 40))]
    contexts = np.array([1, 7, 40])
    y, se = llama2_long.loss_of_first(nlls, contexts)
    # by hand: per window, the mean of its first c tokens, averaged over the runs, then windows
    per_window = [[np.mean([n[w, :c].mean() for n in nlls]) for c in contexts] for w in range(5)]
    assert y == pytest.approx(np.mean(per_window, axis=0), rel=1e-12)
    assert se == pytest.approx(np.std(per_window, axis=0, ddof=1) / np.sqrt(5), rel=1e-12)


def test_context_spans_agree_with_the_loss_by_position_curve():
    rng = np.random.default_rng(0)
    W = 8
    nll = rng.random((5, 16 * W - 1)) + np.where(np.arange(16 * W - 1) >= 8 * W, 2.0, 0.0)
    nll[:, 4 * W : 8 * W] -= 0.5
    # the gain from context: (4W, 8W] minus (W/2, W], by hand
    assert llama2_long.context_gain(nll[:, : 8 * W - 1], W) == pytest.approx(
        [row[4 * W : 8 * W - 1].mean() - row[W // 2 : W].mean() for row in nll]
    )
    curve = evaluate.loss_by_position(nll, W // 2)  # buckets of W/2 positions: independent
    for lo, hi in ((W // 2, W), (4 * W, 8 * W), (W, 2 * W)):
        per_window = llama2_long.span_loss(nll, lo, hi)
        assert per_window.shape == (5,)
        assert per_window.mean() == pytest.approx(evaluate.mean_loss_between(curve, lo, hi))
    # the rise at twice a training length T, by hand from the columns: j predicts position j + 1
    rise = llama2_long.rise_past(nll, 4 * W)
    by_hand = [row[4 * W : 8 * W].mean() - row[2 * W : 4 * W].mean() for row in nll]
    assert rise == pytest.approx(by_hand)
    # past 8W the window ends at 16W - 1 positions: the span stops there
    assert llama2_long.rise_past(nll, 8 * W) == pytest.approx(
        [row[8 * W :].mean() - row[4 * W : 8 * W].mean() for row in nll]
    )
    assert llama2_long.rise_past(nll, 8 * W).mean() == pytest.approx(2.5, abs=0.2)
    with pytest.raises(ValueError):
        llama2_long.span_loss(nll, 0, 16 * W)
    table = llama2_long.span_table({("base", 0): nll, ("ABF", 1): nll + 1}, W)
    assert list(table.index) == ["base (no extension)", "ABF (seed 1)"]
    assert table.loc["ABF (seed 1)", "(4W, 8W]"] == pytest.approx(nll[:, 4 * W : 8 * W].mean() + 1)
    assert table.loc["base (no extension)", "(8W, 16W]"] == pytest.approx(nll[:, 8 * W :].mean())


def test_jackknife_pseudovalues_are_tukeys():
    x = np.random.default_rng(1).normal(size=(30, 2))
    # of the mean, the pseudo-values are the data themselves
    assert llama2_long.jackknife(x[:, 0], np.mean) == pytest.approx(x[:, 0])
    # of the plug-in variance (ddof 0), their mean is the unbiased variance (Quenouille's result)
    p = llama2_long.jackknife(x[:, 0], np.var)
    assert p.mean() == pytest.approx(np.var(x[:, 0], ddof=1))
    # and var(pseudo) / n is the textbook jackknife variance (n-1)/n * sum (t_i - t_bar)^2
    corr = lambda v: np.corrcoef(v[:, 0], v[:, 1])[0, 1]  # noqa: E731
    loo = np.array([corr(np.delete(x, i, axis=0)) for i in range(30)])
    textbook = 29 / 30 * ((loo - loo.mean()) ** 2).sum()
    assert llama2_long.jackknife(x, corr).var(ddof=1) / 30 == pytest.approx(textbook)
    with pytest.raises(ValueError):
        llama2_long.jackknife(x[:2], np.mean)


def power_law_windows(alpha, beta, gamma, n, length, noise, seed=0):
    """Windows of token NLLs whose mean NLL of the first c tokens is Fig. 1's law, plus noise:
    token c's loss is c * L(c) - (c - 1) * L(c - 1)."""
    c = np.arange(1, length)
    law = evaluate.power_law(c, alpha, beta, gamma)
    token = c * law - np.concatenate([[0.0], (c[:-1]) * law[:-1]])
    return token + np.random.default_rng(seed).normal(0, noise, (n, len(c)))


def test_beta_recovers_the_power_law_and_the_fit_starts_at_w():
    W = 64
    contexts = llama2_long.fit_contexts(W)
    assert contexts[0] == W and contexts[-1] == 8 * W - 1 and len(contexts) > 10
    nll = power_law_windows(30.0, 0.6, 2.0, 12, 8 * W, 0.05)
    assert llama2_long.beta(nll, contexts) == pytest.approx(0.6, abs=0.05)
    # L3: jackknife pseudo-values per seed against beta = 0; the engine's effect is beta
    results, gates = llama2_long.l3_results(
        {0: nll, 1: power_law_windows(30, 0.6, 2, 12, 8 * W, 0.05, 1)}, contexts, W
    )
    assert list(results) == list(gates) == [p.name for p in CLAIMS["L3"].parts]
    assert gates["beta above 0"][0]  # the law's loss falls with context
    table = results["beta above 0"]
    assert set(table.arm) == set(CLAIMS["L3"].parts[0].arms)
    est = verdicts.estimate(table, "ABF", "beta = 0")
    assert est.effect == pytest.approx(0.6, abs=0.05) and est.n_seeds == 2
    assert est.n_examples == 12
    # a model whose loss does not fall with context fails L3's gate
    flat = np.random.default_rng(5).normal(3.0, 0.3, nll.shape)
    _, gates = llama2_long.l3_results({0: flat, 1: flat + 0.01}, contexts, W)
    assert not gates["beta above 0"][0] and "needs < 0" in gates["beta above 0"][1]


def test_l3b_compares_betas_of_two_sizes_on_the_same_windows():
    W = 64
    contexts = llama2_long.fit_contexts(W)
    nlls = {("tiny", s): power_law_windows(30.0, 0.4, 2.0, 10, 8 * W, 0.03, s) for s in (0, 1)} | {
        ("small", s): power_law_windows(30.0, 0.7, 2.0, 10, 8 * W, 0.03, 9 + s) for s in (0, 1)
    }
    fits = llama2_long.size_fits(nlls, {"tiny": 1, "small": 2}, contexts)
    assert fits["small"][2]["beta"] == pytest.approx(0.7, abs=0.05)
    results, gates = llama2_long.l3b_results(nlls, ("tiny", "small"), contexts, fits)
    part = CLAIMS["L3b"].parts[0]
    assert list(results) == list(gates) == [part.name] and gates[part.name][0]
    est = verdicts.estimate(results[part.name], *part.arms)
    assert est.effect == pytest.approx(0.3, abs=0.07)
    # a size without a power law (flat loss) fails the gate
    flat = {k: np.random.default_rng(3).normal(3, 0.5, v.shape) for k, v in nlls.items()}
    fits = llama2_long.size_fits(flat, {"tiny": 1, "small": 2}, contexts)
    _, gates = llama2_long.l3b_results(flat, ("tiny", "small"), contexts, fits)
    assert not gates[part.name][0]


def test_control_is_the_long_recipe_at_the_native_window():
    long = llama2_long.recipe("cpu", 256)
    ctl = llama2_long.control_recipe(long, 256)
    assert ctl.seq_len == 256 and long.seq_len == 8 * 256
    # same tokens, tokens per step, steps, schedule, mix and formats
    assert (ctl.tokens, ctl.batch_tokens, ctl.steps, ctl.lr) == (
        long.tokens,
        long.batch_tokens,
        long.steps,
        long.lr,
    )
    assert (ctl.mixture, ctl.formats, ctl.warmup) == (long.mixture, long.formats, long.warmup)
    assert ctl.rows_per_step == 8 * long.rows_per_step


def test_table_5_gaps_are_the_registrys_minimum_effects():
    t5 = llama2_long.TABLE_5
    for part, (a, b) in (
        ("ppl: PI below RoPE", ("PI", "RoPE")),
        ("ppl: ABF below PI", ("ABF", "PI")),
    ):
        p = CLAIMS["L1"].part(part)
        assert p.arms == (a, b) and p.direction == -1
        gaps = [np.log(r / t) for t, r in zip(t5[a], t5[b], strict=True)]
        assert min(gaps) > 0 and p.min_effect == pytest.approx(min(gaps), abs=1e-4)
    assert llama2_long.TABLE_5_BOOKS == {
        "RoPE": 6.548,
        "PI": 6.341,
        "ABF": 6.323,
        "xPos-ABF": 6.331,
    }


def fake_fsr(scores: dict, lengths, n=6):
    """FIRST-SENTENCE-RETRIEVAL rows as fsr_examples returns them: (arm, seed) -> length ->
    ROUGE-L of every example."""
    rows = [
        {"arm": a, "seed": s, "length": L, "example": i, "metric": m, "score": v(L)}
        for (a, s), v in scores.items()
        for L in lengths
        for i in range(n)
        for m in ("rougeL", "exact")
    ]
    return pd.DataFrame(rows)


def test_l1_and_l2_tables_pair_the_same_windows_and_prompts():
    W = 16
    noise = np.random.default_rng(0)
    ppl = pd.DataFrame(
        [
            {
                "variant": v,
                "seed": s,
                "domain": d,
                "window": w,
                "nll": 3 + m + 0.001 * noise.random(),
            }
            for v, m in (("RoPE", 0.1), ("PI", 0.05), ("ABF", 0.0), ("xPos-ABF", 0.0))
            for s in (0, 1)
            for d in ("books", "code")
            for w in range(4)
        ]
    )
    keep = lambda x: lambda L: x  # noqa: E731
    fsr = fake_fsr(
        {
            ("ABF", 0): keep(0.8),
            ("ABF", 1): keep(0.8),
            ("PI", 0): keep(0.3),
            ("PI", 1): keep(0.3),
            ("xPos-ABF", 0): keep(0.5),
            ("xPos-ABF", 1): keep(0.5),
            ("RoPE", 0): lambda L: 0.7 if L <= W else 0.1,
            ("RoPE", 1): lambda L: 0.7 if L <= W else 0.1,
            ("base", 0): keep(0.0),
        },
        [W // 2, W, 2 * W, 8 * W],
    )
    card = Scorecard("04_llama2_long_abf", "tiny")
    l1 = llama2_long.l1_results(ppl, fsr, W)
    assert list(l1) == [p.name for p in CLAIMS["L1"].parts]
    assert set(l1["ppl: PI below RoPE"].example) == {
        f"{d}:{w}" for d in ("books", "code") for w in range(4)
    }
    assert "base" not in set(l1["FSR at 8W: ABF above RoPE"].arm)
    row = card.judge("L1", l1)
    verdict = {p["part"]: p["verdict"] for p in row.parts}
    assert verdict["ppl: PI below RoPE"] == verdict["ppl: ABF below PI"] == "reproduced"
    assert row.parts[0]["effect"] == pytest.approx(0.05, abs=0.001)
    assert row.verdict == "reproduced"
    results, gates = llama2_long.l2_results(fsr, W)
    assert list(results) == [p.name for p in CLAIMS["L2"].parts] == list(gates)
    own = results["FSR: RoPE past 1.5W below its own at W"]
    assert set(own.arm) == {"RoPE at W", "RoPE past 1.5W"}
    # past 1.5W: 2W and 8W; at W the W examples only
    assert set(own[own.arm == "RoPE past 1.5W"].example) == {
        f"{L}:{i}" for L in (2 * W, 8 * W) for i in range(6)
    }
    assert set(own[own.arm == "RoPE at W"].example) == {f"{W}:{i}" for i in range(6)}
    assert all(g[0] for g in gates.values())
    row = card.judge("L2", results, gates=gates)
    assert [p["effect"] for p in row.parts] == pytest.approx([0.7, 0.6])
    assert row.verdict == "reproduced"
    # a RoPE model that does not retrieve at W leaves L2 untestable
    blind = fsr.assign(score=np.where((fsr.arm == "RoPE") & (fsr.length == W), 0.1, fsr.score))
    _, gates = llama2_long.l2_results(blind, W)
    assert not any(g[0] for g in gates.values())
    assert "0.100" in gates["FSR past 1.5W: RoPE below ABF"][1]


def test_l4_l6_l7_builders_name_the_registrys_parts_and_arms():
    rng = np.random.default_rng(2)
    docs = pd.DataFrame(
        [
            {"arm": a, "seed": s, "doc": d, "nll": 3 + rng.normal(0, 0.01)}
            for a in ("ABF", llama2_long.CONTROL)
            for s in (0, 1)
            for d in range(20)
        ]
    )
    card = Scorecard("04_llama2_long_abf", "tiny")
    row = card.judge("L4", llama2_long.l4_results(docs))
    assert row.parts[0]["arms"] == ["ABF", "continued at W"] and row.verdict == "reproduced"
    worse = docs.assign(nll=np.where(docs.arm == "ABF", docs.nll + 0.2, docs.nll))
    row = Scorecard("04_llama2_long_abf", "tiny").judge("L4", llama2_long.l4_results(worse))
    assert row.verdict == "not reproduced"

    qa = pd.DataFrame(
        [
            {
                "setting": st,
                "seed": s,
                "task": t,
                "length": 64,
                "depth": 0.5,
                "example": i,
                "score": v,
            }
            for st, v in zip(llama2_long.SETTINGS.values(), (0.0, 0.2, 0.2), strict=True)
            for s in (0, 1)
            for t in ("doc_qa", "self_instruct")
            for i in range(4)
        ]
    )
    table = llama2_long.l6_results(qa)["QA F1: with LM loss above answers only"]
    assert set(table.arm) == {"answers only", "with LM loss"} and len(table) == 32

    W = 8
    abf = {s: rng.normal(2, 0.05, (6, 16 * W - 1)) for s in (0, 1)}
    base = rng.normal(2, 0.05, (6, 16 * W - 1)) + np.where(np.arange(16 * W - 1) >= W, 1.5, 0)
    row = Scorecard("04_llama2_long_abf", "tiny").judge("L7", llama2_long.l7_results(abf, base, W))
    assert [p["verdict"] for p in row.parts] == ["reproduced", "reproduced"]
    assert row.parts[1]["effect"] == pytest.approx(1.5, abs=0.05)
    assert row.parts[1]["n_seeds"] == 2  # the base is every seed's reference


def test_l5_is_table_10s_arithmetic_and_can_fail():
    flops = llama2_long.flops_table(models.paper_config("meta-llama/Llama-2-7b-hf"))
    parts = llama2_long.l5_results(flops)
    assert list(parts) == [p.name for p in CLAIMS["L5"].parts]
    assert all(holds for holds, _ in parts.values())
    assert "40.0%" in parts["switching at 80% saves ~40%"][1]
    off = flops.assign(**{"ours / from scratch": flops["ours / from scratch"] * [1, 1, 1, 1.05]})
    assert not any(holds for holds, _ in llama2_long.l5_results(off).values())


def test_l5b_gate_needs_a_from_scratch_model_that_uses_context():
    per_window = pd.DataFrame(
        [
            {
                "curriculum": llama2_long.curriculum_name(x),
                "seed": s,
                "window": w,
                "nll": 3.0 + 0.001 * w + 0.002 * ((7 * w + 3 * s + i) % 5 - 2),  # ties apart
            }
            for i, x in enumerate(llama2_long.SWITCHES)
            for s in (0, 1)
            for w in range(5)
        ]
    )
    per_run = pd.DataFrame(
        [
            {"switch": x, "seed": s, "late_minus_early": 0.1}
            for x in llama2_long.SWITCHES
            for s in (0, 1)
        ]
    )
    results, gates = llama2_long.l5b_results(per_window, per_run)
    assert list(results) == [p.name for p in CLAIMS["L5b"].parts] == list(gates)
    assert not any(g[0] for g in gates.values())
    row = Scorecard("04_llama2_long_abf", "tiny").judge("L5b", results, gates=gates)
    assert row.verdict == "not testable at this scale"
    _, gates = llama2_long.l5b_results(per_window, per_run.assign(late_minus_early=-0.2))
    assert all(g[0] for g in gates.values())
    row = Scorecard("04_llama2_long_abf", "tiny").judge("L5b", results, gates=gates)
    assert row.verdict == "reproduced"  # curricula within 0.008 nats: equivalent within 0.02
    skipped = llama2_long.not_run("L5b")
    row = Scorecard("04_llama2_long_abf", "tiny").judge("L5b", skipped)
    assert row.verdict == "not testable at this scale"
