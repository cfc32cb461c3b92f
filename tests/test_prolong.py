"""lcx.prolong against ProLong's settings (Tables 4, 7, 8, 9, 18) and naive arithmetic."""

import numpy as np
import pandas as pd
import pytest

from lcx import prolong, rope


def test_rope_bases_at_the_papers_scale_are_table_18s():
    b = prolong.rope_bases(500_000.0, 8192, 65536, 524288, 128)
    assert b["original"] == 500_000
    assert b["ntk"] == pytest.approx(rope.ntk_base(500_000.0, 8, 128))
    assert 3.5e6 < b["ntk"] < 4.5e6  # "~4M", dynamic NTK's suggestion for 8x
    assert b["stage 1"] == 2 * b["ntk"]  # the recipe's 8M: twice the suggestion
    assert 1.0e8 < b["stage 2"] < 1.6e8  # 128M for 512K


def test_recipes_on_gpu_are_the_papers():
    stage1, stage2, sft = prolong.recipes("gpu", 8192, 65536, 524288, gpus=8)
    assert (stage1.seq_len, stage1.lr, stage1.batch_tokens) == (65536, 1e-5, 4_000_000)
    assert stage1.betas == (0.9, 0.95) and stage1.weight_decay == 0.1 and stage1.warmup == 0.1
    assert stage1.document_masking and stage1.parallel == {"processes": 8, "fsdp": True}
    assert (stage2.seq_len, stage2.batch_tokens) == (524288, 8_000_000)
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
