"""lcx.llama2_long against Llama 2 Long's numbers (Table 5's variants, Table 10's FLOPs, §4.1's
recipe) and the rows and models it builds."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from lcx import evaluate, llama2_long, models


def test_variants_at_the_papers_window_are_table_5s():
    v = llama2_long.variants(10_000.0, 4096)
    assert v["RoPE"] == {"method": "default", "base": 10_000.0}
    assert v["ABF"]["base"] == v["xPos-ABF"]["base"] == 500_000.0  # 10K -> 500K
    assert v["PI"]["method"] == "linear" and v["PI"]["factor"] * 4096 == 32768
    assert v["xPos-ABF"]["xpos"]["scale_base"] == 512  # xPos's default at a 4K window
    assert llama2_long.xpos(256)["scale_base"] == 32 and llama2_long.xpos(256)["center"] == 1024


def test_recipe_on_gpu_is_the_papers_and_flops_follow_table_10():
    r = llama2_long.recipe("gpu", 4096)
    assert (r.seq_len, r.tokens, r.batch_tokens, r.lr) == (32768, 400e9, 4_000_000, 2e-5)
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


def test_context_use_reads_gain_and_rise_from_the_loss_by_position():
    W = 8
    # a model whose loss is 3 nats up to W, 2 up to 8W and 5 beyond: gain -1, rise +3
    starts = np.arange(0, 16 * W)  # one-token buckets
    nll = np.where(starts < W, 3.0, np.where(starts < 8 * W, 2.0, 5.0))
    table = pd.DataFrame({"start": starts, "end": starts + 1, "nll": nll})
    between, gain, rise = llama2_long.context_use({"m": table}, W)
    assert gain["m"] == pytest.approx(-1.0) and rise["m"] == pytest.approx(3.0)
    # (W, 16W]: the buckets starting at 9..63 (2 nats) and 64..127 (5 nats)
    assert between["m"][1, 16] == pytest.approx((55 * 2.0 + 64 * 5.0) / 119)
