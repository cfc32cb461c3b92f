"""lcx.llama3_80k against the Llama-3 80K paper's settings (§2) and the data it builds."""

from lcx import evaluate, llama3_80k, tasks


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


def test_training_rows_mix_long_conversations_with_short_data(tiny):
    tok, tokens = tiny

    class Ch:  # the chapter context training_rows reads
        W, tokenizer = 128, tok

    Ch.tokens = tokens
    qlora = llama3_80k.recipe("tiny", 128)
    rows, convs = llama3_80k.training_rows(Ch, qlora, 0)
    L = llama3_80k.FACTOR * 128
    assert len(rows) == qlora.steps * qlora.rows_per_step
    assert convs and all(0.64 * L - 64 <= c.length <= 0.8 * L for c in convs)
    summary = llama3_80k.composition(rows, convs, L)
    assert summary["long QA conversations"] == len(convs)
    assert 0.5 <= summary["mean conversation length / L"] <= 0.8
    assert sum(v for k, v in summary.items() if k.startswith("family: ")) == len(convs)
    assert summary["turns per conversation"] >= 1
