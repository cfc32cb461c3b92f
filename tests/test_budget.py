"""Training FLOPs against Llama 2 Long Table 10 (7B, 400B tokens, 4K -> 32K curricula), and the
memory plan of one training step (Llama-3 80K)."""

import pytest

from lcx import budget, models

# Table 10: FLOPs of 32K from scratch and of switching 4K -> 32K at 20%, 40%, 80% of training
TABLE_10 = {0.0: 3.783e22, 0.2: 3.405e22, 0.4: 3.026e22, 0.8: 2.270e22}


@pytest.fixture(scope="module")
def llama2_7b():
    return models.paper_config("meta-llama/Llama-2-7b-hf")


def test_non_embedding_parameters_of_llama2_7b(llama2_7b):
    # 6,738,415,616 in all minus the 32000 x 4096 input embedding and LM head
    assert budget.non_embedding_parameters(llama2_7b) == 6_738_415_616 - 2 * 32000 * 4096
    assert (
        budget.non_embedding_parameters(llama2_7b, include_head=True)
        == 6_738_415_616 - 32000 * 4096
    )


def test_curricula_match_table_10(llama2_7b):
    ours = {x: budget.curriculum_flops(llama2_7b, 400e9, 4096, 32768, x) for x in TABLE_10}
    # the ratios are what the table is about: each curriculum against 32K from scratch, within 0.5%
    for x, flops in ours.items():
        assert flops / ours[0.0] == pytest.approx(TABLE_10[x] / TABLE_10[0.0], rel=0.005), x
    # and the scale: 400B tokens (the paper's budget) lands within 5% of the table's absolute FLOPs
    assert ours[0.0] == pytest.approx(TABLE_10[0.0], rel=0.05)
    # all at 32K costs twice all at 4K in this accounting (Table 10's numbers extrapolate to 2.00)
    full_short = budget.train_flops(llama2_7b, 400e9, 4096)
    assert ours[0.0] / full_short == pytest.approx(2.0, rel=0.01)


def test_bad_switch_point(llama2_7b):
    with pytest.raises(ValueError, match="switch_at"):
        budget.curriculum_flops(llama2_7b, 1e9, 4096, 32768, 1.5)


# --- memory of one training step, against published numbers ---------------------------------------

LLAMA2_7B_PARAMETERS = 6_738_415_616  # meta-llama/Llama-2-7b-hf, from its config
# QLoRA (Dettmers et al. 2023) §3: NF4 weights (4 bits) with double quantization, 8-bit constants
# per block of 64 weights and an fp32 constant per 256 of those: 4 + 0.127 bits per parameter
NF4_BITS = 4 + 8 / 64 + 32 / (64 * 256)


def test_full_fine_tuning_takes_16_bytes_per_parameter(llama2_7b):
    """ZeRO (Rajbhandari et al. 2020) §3.1: mixed-precision Adam keeps 2 + 2 + 12 = 16 bytes per
    parameter (16-bit weight and gradient; fp32 master weight, momentum and variance)."""
    plan = budget.memory_plan(llama2_7b, 4096, "full")
    assert plan["trainable_parameters"] == LLAMA2_7B_PARAMETERS
    assert plan["weights"] + plan["trainable"] == 16 * LLAMA2_7B_PARAMETERS


def test_qlora_base_weights_take_nf4_bits_and_lora_counts_match_peft(llama2_7b):
    """The frozen body in NF4 at QLoRA's 4.127 bits per parameter; the embeddings and LM head
    (32000 x 4096 each) and the adapters in bf16; the adapters' count is peft's own."""
    lora = models.count_parameters(models.add_lora(models.meta_model(llama2_7b), 32, 16), True)
    assert budget.lora_parameters(llama2_7b, 32) == lora
    plan = budget.memory_plan(llama2_7b, 4096, "qlora", r=32)
    embeddings = 2 * 32000 * 4096
    nf4 = plan["weights"] - 2 * (embeddings + lora)
    assert nf4 * 8 / (LLAMA2_7B_PARAMETERS - embeddings) == pytest.approx(NF4_BITS, rel=1e-4)
    assert plan["trainable_parameters"] == lora + 32000 * 4096  # Llama-3 80K trains the embeddings


def test_qlora_papers_65b_needs_over_780_gb_in_16_bits_and_under_48_gb_in_qlora():
    """QLoRA's abstract: fine-tuning a 65B model takes more than 780 GB of GPU memory in 16 bits
    and less than 48 GB with QLoRA. LLaMA-65B (Touvron et al. 2023, Table 2: d 8192, 64 heads,
    80 layers, 65.2B parameters); adapters of rank 64 as in QLoRA's Guanaco runs."""
    from transformers import LlamaConfig

    config = LlamaConfig(
        hidden_size=8192,
        intermediate_size=22016,  # 2/3 x 4d rounded up to a multiple of 256 (LLaMA's SwiGLU)
        num_hidden_layers=80,
        num_attention_heads=64,
        vocab_size=32000,
        tie_word_embeddings=False,
    )
    assert models.count_parameters(models.meta_model(config)) == pytest.approx(65.2e9, rel=2e-3)
    full = budget.memory_plan(config, 512, "full")
    assert full["weights"] + full["trainable"] > 780e9
    qlora = budget.memory_plan(config, 512, "qlora", r=64, train_embeddings=False)
    assert qlora["total"] < 48e9


def test_llama3_80k_fits_an_80gb_gpu_only_in_qlora_with_a_chunked_loss():
    """Llama-3 80K trains one 80K-token conversation per A800 80 GB GPU (8 GPUs, batch 8) with
    QLoRA: that fits with a chunked loss; the same step with transformers' full-vocabulary fp32
    loss, or full fine-tuning, does not."""
    cfg = models.paper_config("meta-llama/Meta-Llama-3-8B-Instruct", base=2e8)
    T = 81_920
    plan = budget.memory_plan(cfg, T, "full")
    assert plan["trainable_parameters"] == 8_030_261_248  # Llama-3-8B's published count
    assert plan["total"] > 80e9
    qlora = budget.memory_plan(cfg, T, "qlora", chunked_loss=True)
    assert qlora["total"] < 80e9 < budget.memory_plan(cfg, T, "qlora")["total"]
    assert qlora["logits"] == 0
    # activations grow linearly with the tokens in the step (no T x T scores are kept)
    half = budget.memory_plan(cfg, T // 2, "qlora", chunked_loss=True)
    assert qlora["activations"] == 2 * half["activations"]
    with pytest.raises(ValueError, match="method"):
        budget.memory_plan(cfg, T, "adapter")


def test_reordering_minimizes_the_step_time_of_any_order():
    """Sorting by the sum of squared lengths and dealing consecutive minibatches to the devices
    gives the smallest step time over every order (brute force over 8 minibatches, 2 devices)."""
    import itertools
    import random

    rng = random.Random(0)
    rows = [[rng.choice([16, 64, 256, 1024]) for _ in range(rng.randint(1, 4))] for _ in range(8)]
    cost = [sum(n * n for n in r) for r in rows]
    order = budget.reorder_minibatches(rows)
    assert sorted(order) == list(range(8))
    best = min(
        budget.step_time([cost[i] for i in perm], 2) for perm in itertools.permutations(range(8))
    )
    assert budget.step_time([cost[i] for i in order], 2) == best
    assert budget.step_time(cost, 2) >= best
    assert budget.step_time([3, 1, 2, 5], 2) == 3 + 5 and budget.step_time([3, 1, 2, 5], 1) == 11
    with pytest.raises(ValueError, match="evenly"):
        budget.step_time([1, 2, 3], 2)
