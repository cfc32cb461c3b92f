"""Training throughput benchmark (``make bench`` / ``python -m lcx.bench``): a command, not a test.

Prints, for the ``cpu`` model sizes, training tokens/s through the real ``lcx.train`` path (packed
rows from the corpus, ``LcxTrainer``, AdamW) at W, 4W and 8W in fp32 and bf16 autocast, and the model
FLOP utilisation against this machine's GEMM peak measured in the same run.

Model FLOPs per token = 6 x (parameters in the blocks and the LM head; the embedding is a lookup)
+ 12 x layers x (heads x head_dim) x T for attention scores and values (PaLM App. B; no causal
discount).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from transformers import TrainerCallback

from . import data, models, train


def gemm_peak(dtype: torch.dtype, n: int = 2048, seconds: float = 2.0) -> float:
    """Sustained GFLOP/s of an n x n matmul."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - start) / 1e9


def model_flops_per_token(config, seq_len: int) -> float:
    embed = config.vocab_size * config.hidden_size
    n = sum(p.numel() for p in models.meta_model(config).parameters()) - embed
    attn = 12 * config.num_hidden_layers * config.num_attention_heads * config.head_dim * seq_len
    return 6 * n + attn


def train_throughput(
    size: str,
    seq_len: int,
    bf16: bool,
    tokens,
    tokenizer,
    steps: int = 12,
    batch_tokens: int = 8192,
) -> float:
    """Tokens/s of ``steps`` optimizer steps after two warm-up steps, through ``LcxTrainer``."""
    torch.set_flush_denormal(True)
    config = models.tiny_config(size, len(tokenizer), 256, 520.0)
    model = models.new_model(config)
    recipe = train.Recipe(
        seq_len=seq_len,
        tokens=batch_tokens * (steps + 2),
        batch_tokens=batch_tokens,
        lr=1e-3,
        bf16=bf16,
        save_every=10**9,
    )
    rows = train.packed_rows(
        tokens["train"], recipe, tokenizer.bos_token_id, recipe.steps * recipe.rows_per_step
    )
    times = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as tmp:
        args = train.training_arguments(recipe, tmp)
        args.disable_tqdm, args.save_strategy, args.logging_strategy = True, "no", "no"
        trainer = train.LcxTrainer(
            model=model,
            args=args,
            train_dataset=rows,
            data_collator=train.collate,
            callbacks=[Clock()],
        )
        trainer.train()
    measured = times[2:]
    return batch_tokens * (len(measured) - 1) / (measured[-1] - measured[0])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["small", "base"])
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--multiples", nargs="+", type=int, default=[1, 4, 8])
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args(argv)
    corpus = data.load_corpus("cpu")
    tokenizer = models.load_tokenizer("cpu", corpus)
    tokens = data.tokenize(corpus, tokenizer)
    peak = {"fp32": gemm_peak(torch.float32), "bf16": gemm_peak(torch.bfloat16)}
    print(
        f"GEMM peak (2048^2, {torch.get_num_threads()} threads): fp32 {peak['fp32']:.0f} GFLOP/s, "
        f"bf16 {peak['bf16']:.0f} GFLOP/s"
    )
    print(f"{'size':6} {'params':>8} {'T':>5} {'dtype':5} {'tok/s':>8} {'GFLOP/s':>8} {'MFU':>6}")
    for size in args.sizes:
        for mult in args.multiples:
            seq_len = args.window * mult
            config = models.tiny_config(size, len(tokenizer), args.window, 520.0)
            params = models.count_parameters(models.meta_model(config))
            for dtype in ("fp32", "bf16"):
                tps = train_throughput(
                    size, seq_len, dtype == "bf16", tokens, tokenizer, args.steps
                )
                gflops = tps * model_flops_per_token(config, seq_len) / 1e9
                print(
                    f"{size:6} {params / 1e6:7.2f}M {seq_len:5d} {dtype:5} {tps:8.0f} {gflops:8.1f} "
                    f"{gflops / peak[dtype]:6.1%}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
