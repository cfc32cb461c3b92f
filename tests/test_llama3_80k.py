"""lcx.llama3_80k against the Llama-3 80K paper's settings (§2) and the data it builds, and the
scorecard's builders (results tables, gates, recipe and arithmetic checks) against hand-made
inputs and independent references (the paper's numbers, transformers' linear schedule, parameter
counts of a real model)."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from lcx import budget, evaluate, llama3_80k, models, tasks, verdicts
from lcx import rows as row_builders
from lcx.claims import CLAIMS


def test_recipe_and_variants_on_gpu_are_the_papers():
    r = llama3_80k.recipe("gpu", 8192)
    assert r.seq_len == 81920 and r.lr == 5e-5 and r.schedule == "linear" and r.warmup == 0.0
    assert r.rows_per_step == 8 and r.gradient_checkpointing  # batch size 8
    assert (r.lora["r"], r.lora["alpha"], r.lora["quantize"]) == (32, 16, "nf4")
    assert r.lora["modules_to_save"] == ["embed_tokens"]
    v = llama3_80k.variants(500_000.0, 8192)
    assert v["ABF x400"]["base"] == 200_000_000  # 500K -> 200M
    assert v["PI x10"]["factor"] * 8192 == 81920
    assert list(llama3_80k.HYPERPARAMETERS) == [
        k for k in llama3_80k.HYPERPARAMETERS if k in r.config()
    ]


def test_topic_lengths_hold_that_many_topics(tiny):
    tok, tokens = tiny
    pool = evaluate.pool(tok, tokens)
    for k, n in zip((2, 5), llama3_80k.topic_lengths((2, 5)), strict=True):
        assert tasks.generate("topic", tok, n, None, 0, "test", pool).meta["topics"] == k


def test_topic_counts_start_inside_the_window_and_reach_10w(tiny):
    """Issue 18, item 5: some topic counts lie inside W. On cpu (W = 256) the sections of 96 tokens
    that fit in W, 2W, 4W, 6W, 8W, 10W (40 tokens of question), by hand: 216 // 96 = 2, ..."""
    counts = llama3_80k.topic_counts("cpu", 256)
    assert counts == [2, 4, 10, 15, 20, 26]
    lengths = llama3_80k.topic_lengths(counts)
    assert lengths[0] <= 256 < lengths[1] and lengths[-1] <= 2560
    tok, tokens = tiny
    llama3_80k.topic_lengths(counts, tok, evaluate.pool(tok, tokens))  # the generator agrees
    # tiny (W = 128): two sections need 232 tokens, so none fits inside W
    assert min(llama3_80k.topic_lengths(llama3_80k.topic_counts("tiny", 128))) > 128


def test_training_rows_mix_long_conversations_with_short_data(tiny):
    tok, tokens = tiny

    class Ch:  # the chapter context training_rows reads
        W, tokenizer = 128, tok

    Ch.tokens = tokens
    qlora = llama3_80k.recipe("tiny", 128)
    rows, convs = llama3_80k.training_rows(Ch, qlora, 0)
    L = llama3_80k.FACTOR * 128
    assert len(rows) == qlora.steps * qlora.rows_per_step == 6
    assert convs and all(0.64 * L - 64 <= c.length <= 0.8 * L for c in convs)
    summary = llama3_80k.composition(rows, convs, L)
    assert summary["long QA conversations"] == len(convs)
    assert 0.5 <= summary["mean conversation length / L"] <= 0.8
    assert summary["turns per conversation"] >= 1
    # 6 rows in the paper's 3.5 : 5 : 12, by hand: 1.02, 1.46, 3.51 -> 1, 1, 4 (largest remainder)
    shares = llama3_80k.mix_shares(rows, convs)
    assert shares[list(tasks.LONG_QA_FAMILIES)].sum() == pytest.approx(1 / 6)
    assert (shares["short LM"], shares["instructions"]) == pytest.approx((1 / 6, 4 / 6))
    checks = llama3_80k.mix_checks(rows, convs)
    assert set(checks) == {p.name for p in CLAIMS["Q5"].parts}
    assert all(checks[f"{k} share"][0] for k in ("long QA", "short LM", "instructions"))
    # one conversation on tiny: the first family only, the other tasks of §1 are missing
    assert checks["single-detail QA"][0] and not checks["multi-detail QA"][0]
    assert not checks["biography summarization"][0]
    assert checks["multi-turn conversations"][0]


def test_paper_scale_rows_stream_the_same_mix_and_q5_reads_a_sample(tiny, monkeypatch):
    """At paper scale (20,000 rows of 80K) the mix is a stream: the same number of rows of each
    kind and the same long-QA conversations as the list; Q5's composition reads a sample made by
    the same code, or the rows themselves when they are in memory."""
    import collections
    import dataclasses

    tok, tokens = tiny
    ch = SimpleNamespace(W=128, tokenizer=tok, tokens=tokens)
    qlora = dataclasses.replace(llama3_80k.recipe("tiny", 128), tokens=1280 * 2 * 10)
    rows, convs = llama3_80k.training_rows(ch, qlora, 0)
    streaming = dataclasses.replace(qlora, stream_rows=True)
    stream, none = llama3_80k.training_rows(ch, streaming, 0)
    assert isinstance(stream, row_builders.Stream) and none is None
    assert len(stream) == len(rows) == 20
    contexts = {tuple(c.context_ids): c.meta["family"] for c in convs}
    streamed = list(stream)

    def kinds(rs):
        return collections.Counter(llama3_80k.row_kind(r, contexts) for r in rs)

    assert kinds(streamed) == kinds(rows) and kinds(rows)["instructions"] > 1
    qa = [r for r in streamed if llama3_80k.row_kind(r, contexts) in tasks.LONG_QA_FAMILIES]
    assert len(qa) == len(convs)  # every streamed conversation is one of the list's
    assert llama3_80k.mix_sample(ch, qlora, 0, rows, convs) == (rows, convs)
    monkeypatch.setattr(llama3_80k, "MIX_SAMPLE", 12)
    sample, sample_convs = llama3_80k.mix_sample(ch, streaming, 0, stream, none)
    assert isinstance(sample, list) and len(sample) == 12 and sample_convs
    summary = llama3_80k.composition(sample, sample_convs, 1280, len(stream))
    assert summary["rows"] == 20
    controls = row_builders.at_window(stream, 128)  # Q4's control reads the stream cut at W
    assert isinstance(controls, row_builders.Stream) and len(controls) == 200


def test_row_kind_reads_each_kind_of_row():
    """Hand-made rows: an LM row (every token a target), a conversation row (its context first),
    instruction rows (prompt and response pairs)."""
    lm = {"input_ids": torch.arange(8), "loss_weights": torch.ones(8)}
    conv = tasks.Conversation([1, 5, 6, 7], [([8], [9, 10]), ([11], [12])], ["a", "b"])
    conv.meta["family"] = "biography"
    (conv_row,) = row_builders.conversation_rows([conv], 16, 0)
    (sft_row,) = row_builders.sft_rows([([1, 20, 21], [22, 23])], 16, 0)
    contexts = {tuple(conv.context_ids): "biography"}
    kinds = [llama3_80k.row_kind(r, contexts) for r in (lm, conv_row, sft_row)]
    assert kinds == ["short LM", "biography", "instructions"]
    assert llama3_80k.answers_per_row(conv_row) == 2
    w = torch.tensor([0, 0, 1, 1, 0, 1, 0, 0, 1.0])
    assert llama3_80k.answers_per_row({"loss_weights": w}) == 3


def test_control_recipe_has_the_recipes_tokens_and_steps_at_w():
    qlora = llama3_80k.recipe("cpu", 256)
    control = llama3_80k.control_recipe(qlora, 256)
    assert control.seq_len == 256 and qlora.seq_len == 2560
    assert (control.tokens, control.batch_tokens, control.steps, control.lr, control.lora) == (
        qlora.tokens,
        qlora.batch_tokens,
        qlora.steps,
        qlora.lr,
        qlora.lora,
    )
    assert control.rows_per_step == 10 * qlora.rows_per_step


def _examples(scores: dict, task="needle") -> pd.DataFrame:
    """A suite_examples-like table: {(length, example): score}, plus a non-headline metric."""
    rows = []
    for (length, i), s in scores.items():
        common = {"task": task, "length": length, "depth": 0.5, "example": i}
        rows.append({**common, "metric": "per_digit", "headline": True, "score": s})
        rows.append({**common, "metric": "answer_acc", "headline": False, "score": 1 - s})
    return pd.DataFrame(rows)


def test_versus_base_pairs_each_seed_with_the_base_example_by_example():
    base = _examples({(128, 0): 1.0, (128, 1): 0.5, (1280, 0): 0.0, (1280, 1): 0.2})
    abf0 = _examples({(128, 0): 1.0, (128, 1): 1.0, (1280, 0): 0.8, (1280, 1): 0.6})
    abf1 = _examples({(128, 0): 1.0, (128, 1): 1.0, (1280, 0): 1.0, (1280, 1): 0.4})
    examples = {"base": base, ("ABF x400", 0): abf0, ("ABF x400", 1): abf1}
    table = llama3_80k.versus_base(examples, [0, 1], [1280])
    assert sorted(set(zip(table.arm, table.seed, strict=True))) == [
        ("ABF x400", 0),
        ("ABF x400", 1),
        ("base", 0),
        ("base", 1),
    ]
    assert len(table) == 8 and set(table.example) == {"needle@1280/0.5#0", "needle@1280/0.5#1"}
    est = verdicts.estimate(table, "ABF x400", "base")
    # by hand: seed 0 (0.8 - 0 + 0.6 - 0.2) / 2 = 0.6, seed 1 (1.0 + 0.2) / 2 = 0.6
    assert est.effect == pytest.approx(0.6) and est.n_seeds == 2 and est.n_examples == 2
    ok, why = llama3_80k.needle_gate(base, 128)
    assert ok and "0.750" in why  # (1.0 + 0.5) / 2 at W only
    assert not llama3_80k.needle_gate(_examples({(128, 0): 0.4}), 128)[0]


def test_gates_compare_the_mean_with_the_threshold():
    ok, why = llama3_80k.gate(pd.Series([0.4, 0.6]), 0.5, "x")
    assert ok and why == "x: 0.500 over 2 examples (gate >= 0.5)"
    assert not llama3_80k.gate(pd.Series([0.2, 0.7]), 0.5, "x")[0]
    ok, why = llama3_80k.gate(pd.Series([], dtype=float), 0.5, "x")
    assert not ok and "no examples" in why
    topics = _examples({(232, 0): 1.0, (232, 1): 0.0, (424, 0): 0.0}, task="topic")
    ok, why = llama3_80k.topic_gate(topics, 256)  # inside W: 232 only, mean 0.5 < 0.75
    assert not ok and "0.500 over 2" in why
    assert not llama3_80k.topic_gate(topics, 128)[0]  # nothing inside W


def _fake_run(tmp_path, recipe, lrs, epoch, base):
    """A run folder as lcx.train.run writes it: recipe.json, log.json (the steps ``lrs`` names,
    ``epoch`` epochs over the run's steps) and a saved model."""
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "recipe.json").write_text(json.dumps(recipe.config()))
    log = [{"step": k, "learning_rate": lr, "epoch": epoch * k / recipe.steps} for k, lr in lrs]
    (run / "log.json").write_text(json.dumps(log))
    models.new_model(models.tiny_config("tiny", 64, 128, base)).save_pretrained(run / "model")
    return run


def test_recipe_checks_read_the_run(tmp_path):
    """The linear schedule against transformers' own (get_linear_schedule_with_warmup), the
    paper's values on gpu, and each check failing when the run differs."""
    from transformers import get_linear_schedule_with_warmup

    qlora = llama3_80k.recipe("gpu", 16)  # the paper's values, a small window for a quick run
    steps = qlora.steps

    def logged(warmup):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=qlora.lr)
        sched = get_linear_schedule_with_warmup(opt, warmup, steps)
        lrs = []
        for k in range(1, steps + 1):
            lrs.append((k, opt.param_groups[0]["lr"]))  # the lr step k runs at
            opt.step()
            sched.step()
        return lrs[:: max(1, steps // 50)]

    b0, n_rows = 500.0, steps * qlora.rows_per_step
    run = _fake_run(tmp_path, qlora, logged(0), 1.0, b0 * 400)
    checks = llama3_80k.recipe_checks(run, "gpu", b0, n_rows)
    assert set(checks) | {"needle at 10W"} == {p.name for p in CLAIMS["Q1"].parts}
    assert all(holds for holds, _ in checks.values()), [
        (k, v) for k, v in checks.items() if not v[0]
    ]
    warm = _fake_run(tmp_path / "w", qlora, logged(1), 0.5, b0)
    bad = llama3_80k.recipe_checks(warm, "gpu", b0, n_rows)
    assert not bad["linear decay, no warm-up"][0] and not bad["one epoch"][0]
    assert not bad["RoPE base x400"][0]
    cpu = llama3_80k.recipe_checks(run, "cpu", b0, n_rows + 1)  # r 32, alpha 16: alpha/r kept
    assert cpu["rank and alpha"][0] and not cpu["one epoch"][0]


def test_recipe_checks_flag_the_scaled_learning_rate(tmp_path):
    tiny = llama3_80k.recipe("tiny", 16)
    lrs = [(k, tiny.lr * (tiny.steps - k + 1) / tiny.steps) for k in range(1, tiny.steps + 1)]
    run = _fake_run(tmp_path, tiny, lrs, 1.0, 500.0 * 400)
    checks = llama3_80k.recipe_checks(run, "tiny", 500.0, tiny.steps * tiny.rows_per_step)
    assert not checks["learning rate 5e-5"][0]  # 1e-3: the cut is reported, not passed
    assert checks["rank and alpha"][0] and checks["linear decay, no warm-up"][0]
    assert not llama3_80k.recipe_checks(run, "gpu", 500.0, 6)["rank and alpha"][0]  # r 4


def test_plan_checks_on_the_paper_model_and_a_wrong_plan():
    checks = llama3_80k.plan_checks(llama3_80k.memory_plan(81920))
    assert all(holds for holds, _ in checks.values())
    assert set(checks) < {p.name for p in CLAIMS["Q6"].parts}
    plan = pd.DataFrame(
        {"total": [10, 70, 20, 60, 90, 85]},
        index=[
            "qlora",
            "qlora + chunked loss",
            "lora",
            "lora + chunked loss",
            "full",
            "full + chunked loss",
        ],
    )
    bad = llama3_80k.plan_checks(plan)
    assert not bad["plan: QLoRA < LoRA < full"][0]  # 70 > 60 with a chunked loss
    assert bad["plan: QLoRA fits one GPU"][0]


def test_memory_results_and_the_gate_from_the_formula():
    measured = pd.DataFrame(
        {
            "method": ["full", "lora", "qlora"] * 2,
            "repeat": [0, 0, 0, 1, 1, 1],
            "tokens_per_s": 1.0,
            "peak_mb": 1.0,
            "peak_rss_mb": [900.0, 700.0, 600.0, 910.0, 690.0, 610.0],
        }
    )
    table = llama3_80k.memory_results(measured)
    part = CLAIMS["Q6"].part("measured: QLoRA vs LoRA")
    est = verdicts.estimate(table, *part.arms, direction=part.direction)
    assert est.effect == pytest.approx(90.0)  # LoRA 695 - QLoRA 605 MB

    class Ch:
        W, tokenizer = 128, list(range(4096))  # len() is the vocabulary

    qlora = llama3_80k.recipe("tiny", 128)
    ok, why = llama3_80k.memory_gate(Ch, qlora, "tiny", "lora")
    # QLoRA saves 2 - 0.5 - 0.127 / 8 bytes per parameter outside the embeddings and head
    config = models.tiny_config("tiny", 4096, 1280, 520.0)
    model = models.new_model(config)
    body = sum(p.numel() for p in model.parameters()) - 2 * 4096 * config.hidden_size
    saving = body * (2 - 0.5 - 0.127 / 8) / 2**20
    assert f"{saving:.1f} MB" in why and ok == (saving >= llama3_80k.MEMORY_RESOLUTION_MB)
    assert not ok  # a tiny model's 4-bit saving is far below what resident memory resolves
    full_ok, _ = llama3_80k.memory_gate(Ch, qlora, "tiny", "full")
    full = budget.memory_plan(config, 1280, "full")["total"]
    q = budget.memory_plan(config, 1280, "qlora", r=qlora.lora["r"])["total"]
    assert full_ok == ((full - q) / 2**20 >= llama3_80k.MEMORY_RESOLUTION_MB)


def test_the_registry_scales_the_papers_numbers():
    """The thresholds the registry fixes for chapter 05, from the paper's numbers typed here."""
    q4 = CLAIMS["Q4"]
    assert q4.part("short NLL").margin == pytest.approx(math.log(65.91 / 64.44))
    assert q4.part("short NLL").direction == -1
    assert q4.part("short tasks").margin == pytest.approx(0.0147)
    assert {p.arms for p in q4.parts} == {("ABF x400", llama3_80k.CONTROL)}
    for claim, name in (("Q1", "needle at 10W"), ("Q2", "inside 10W"), ("Q2", "past 10W")):
        assert CLAIMS[claim].part(name).min_effect == pytest.approx(0.45)  # (1 - 0.1) / 2
    assert CLAIMS["Q3"].part("past W").min_effect == 0.5
    arms = {p.arms[1] for p in CLAIMS["Q6"].parts if p.kind == "empirical"}
    assert arms == {"LoRA", "full fine-tuning"} < set(llama3_80k.METHOD_ARMS.values())
    assert np.isclose(sum(llama3_80k.SHARES.values()), 20.5)  # 3.5K + 5K + 12K


def test_short_tasks_score_only_the_tasks_the_base_gate_keeps(monkeypatch):
    # the suite answers every retention task; the gate keeps passkey alone, so Q4's task scores
    # are passkey's examples and nothing else
    rows = [
        {"task": t, "length": n, "depth": 0.5, "example": i, "headline": True, "score": s}
        for t, s in [("passkey", 0.9), ("json_kv", 0.0), ("doc_qa", 0.1), ("icl", 0.2)]
        for n in (4, 8)
        for i in range(3)
    ]
    monkeypatch.setattr(llama3_80k.evaluate, "suite_examples", lambda *a, **k: pd.DataFrame(rows))
    gate = {
        "tasks": {
            t: {"score": s, "chance": 0.1, "needs": 0.5, "kept": s >= 0.5}
            for t, s in [("passkey", 0.9), ("json_kv", 0.0), ("doc_qa", 0.1), ("icl", 0.2)]
        }
    }
    ch = SimpleNamespace(gate=gate, tokenizer=None, tokens=None, W=8)
    scores = llama3_80k.short_tasks(ch, None, 3, (0.5,))
    assert len(scores) == 6 and set(scores) == {0.9}
    assert all(label.startswith("passkey@") for label in scores.index)
    # a gate that keeps none of them (a failed base, judged on nothing): every task is scored
    none = {"tasks": {t: {**g, "kept": False} for t, g in gate["tasks"].items()}}
    assert (
        len(llama3_80k.short_tasks(SimpleNamespace(**{**vars(ch), "gate": none}), None, 3, (0.5,)))
        == 24
    )
