"""The GPU check (issue 20): ``make gpu-check``, or ``python scripts/gpu_check.py [--smoke]``.

One script for a GPU machine with no network, at most ~8 minutes on one GPU, on what is installed
(torch, transformers, accelerate, peft; lcx from this checkout, which needs none of datasets,
pandas, scipy or matplotlib for this): it reports which of torch CUDA, flash-attn, bitsandbytes'
CUDA kernels, unsloth and DeepSpeed are importable; then, for a Llama-3-shaped random model of
about 1.2B parameters (Llama 3.2 1B's shape) trained in fp32 with bf16 autocast and AdamW, as
lcx's trainer does, it measures a forward+backward+step (the second: AdamW makes its states in
the first) at 8K-64K tokens with SDPA and, where
present, FlashAttention-2 (varlen boundaries for packed rows), the loss in 8K pieces; checks that
a packed batch of two rows scores as its documents alone (FlashAttention with lcx's boundaries,
and without them, which is what transformers does for a batch of several rows); runs a QLoRA step
where bitsandbytes has CUDA; and prints each step's measured peak memory beside
``lcx.train.device_memory``'s prediction (``within_plan``: the plan refuses recipes by it, so a
step above it is a finding). A check that fails is reported and the others still run; whatever it
cannot run it says it skipped, and why.

``--smoke``: the same code at toy sizes on whatever device there is (the CPU here), to rehearse
the script itself. Writes ``gpu_check.json`` into ``$OUT`` when that is set.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
import traceback
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from lcx import attention, models, train  # noqa: E402

REPORT: dict = {"packages": {}, "steps": [], "packing": [], "skipped": []}


def say(line: str) -> None:
    print(line, flush=True)


def packages() -> dict:
    """Which GPU packages import, and what they say about CUDA."""
    out = {
        "torch": torch.__version__,
        "cuda": torch.cuda.is_available(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
    }
    for name in ("transformers", "accelerate", "peft", "flash_attn", "bitsandbytes", "unsloth"):
        try:
            module = importlib.import_module(name)
            out[name] = getattr(module, "__version__", "imported")
        except Exception as error:  # noqa: BLE001 - a missing or broken package is a finding
            out[name] = f"no ({type(error).__name__}: {str(error)[:80]})"
    try:
        import deepspeed

        out["deepspeed"] = deepspeed.__version__
    except Exception as error:  # noqa: BLE001
        out["deepspeed"] = f"no ({type(error).__name__})"
    out["bitsandbytes_cuda"] = _bnb_cuda() if torch.cuda.is_available() else False
    return out


def _bnb_cuda() -> bool | str:
    try:
        import bitsandbytes.functional as F

        q, state = F.quantize_4bit(torch.randn(64, 64, device="cuda", dtype=torch.bfloat16))
        back = F.dequantize_4bit(q, state)
        return bool(back.is_cuda)
    except Exception as error:  # noqa: BLE001
        return f"no ({type(error).__name__}: {str(error)[:80]})"


def config(smoke: bool):
    """Llama 3.2 1B's shape (tied embeddings, GQA 32/8, 128K vocabulary), or a toy one."""
    from transformers import LlamaConfig

    shape = (
        dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             head_dim=16, intermediate_size=128, vocab_size=512)
        if smoke
        else dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32,
                  num_key_value_heads=8, head_dim=64, intermediate_size=8192, vocab_size=128256)
    )  # fmt: skip
    return LlamaConfig(
        **shape,
        max_position_embeddings=131072,
        rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
        tie_word_embeddings=True,
        use_cache=False,
    )


def _rows(length: int, doc: int, vocab: int, n_rows: int, device) -> dict:
    """``n_rows`` packed rows of documents of ``doc`` tokens (positions restart at each)."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (n_rows, length), generator=g)
    pos = torch.arange(length) % doc
    return {
        "input_ids": ids.to(device),
        "position_ids": pos.expand(n_rows, length).contiguous().to(device),
        "labels": ids.to(device),
        "loss_weights": torch.ones(n_rows, length, device=device),
    }


def step(cfg, impl: str, length: int, chunk: int, device, method: str = "full") -> dict:
    """A training step of lcx's trainer loss (packed rows, loss in pieces), measured after one
    unmeasured step: AdamW makes its states in its first step (8 bytes a trained parameter, which
    the plan counts), and the first step also pays CUDA's one-time setup."""
    cfg = cfg.__class__(**cfg.to_dict())
    cfg._attn_implementation = attention.implementation(impl)
    model = models.new_model(cfg).to(device).train()
    model.gradient_checkpointing_enable({"use_reentrant": False})
    if method == "qlora":
        model = models.add_lora(
            models.quantize_nf4(model, torch.bfloat16), 32, 16, modules_to_save=["embed_tokens"]
        )
        model.gradient_checkpointing_enable({"use_reentrant": False})
        train.fp32_trainable(model)  # as lcx's trainer keeps what it trains
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    trainer = SimpleNamespace(
        args=SimpleNamespace(world_size=1),
        unsloth_documents=False,
        chunked=train.chunk_loss(model, chunk),
    )
    batch = _rows(length, min(length, 4096), cfg.vocab_size, 1, device)
    cuda = device.type == "cuda"
    for _ in range(2):  # the first step warms up; the second is measured
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = train.LcxTrainer.compute_loss(trainer, model, dict(batch))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    lora = {"r": 32, "quantize": "nf4", "modules_to_save": ["embed_tokens"]}
    recipe = train.Recipe(
        seq_len=length,
        tokens=length,
        batch_tokens=length,
        lr=1e-5,
        micro_rows=1,
        gradient_checkpointing=True,
        loss_chunk=chunk,
        lora=lora if method == "qlora" else None,
    )
    plan = train.device_memory(cfg, recipe)["total"] / 2**30
    del model, optimizer, loss
    if cuda:
        torch.cuda.empty_cache()
    return {
        "impl": impl,
        "method": method,
        "tokens": length,
        "seconds": round(seconds, 3),
        "tokens_per_s": round(length / seconds),
        "peak_gib": round(peak, 2),
        "planned_gib": round(plan, 2),
        # the plan refuses recipes by this number, so it must not be below what a step takes
        "within_plan": bool(peak <= plan) if cuda else None,
    }


def packing(cfg, impl: str, device, length: int) -> dict:
    """A batch of two packed rows against each document scored alone (SDPA, one at a time):
    the largest difference in logits, with lcx's boundaries (``packed_inputs(boundaries=...)``,
    what FlashAttention needs for several rows) and with position ids alone."""
    cfg = cfg.__class__(**cfg.to_dict())
    cfg._attn_implementation = attention.implementation(impl)
    model = models.new_model(cfg).to(device).eval().to(torch.bfloat16)
    batch = _rows(length, length // 4, cfg.vocab_size, 2, device)
    ids, pos = batch["input_ids"], batch["position_ids"]
    out = {"impl": impl, "tokens": length}
    with torch.no_grad():
        alone = []
        for b in range(2):
            for s, e in attention.document_spans(pos[b]):
                model.config._attn_implementation = "sdpa"
                alone.append(model(input_ids=ids[b : b + 1, s:e], use_cache=False).logits[0])
        reference = torch.cat(alone).reshape(2, length, -1).float()
        model.config._attn_implementation = cfg._attn_implementation
        for label, bounds in (("with boundaries", True), ("position ids only", False)):
            logits = model(**attention.packed_inputs(ids, pos, boundaries=bounds)).logits.float()
            out[label] = round(float((logits - reference).abs().max()), 4)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="toy sizes, any device")
    args = parser.parse_args(argv)
    found = packages()
    REPORT["packages"] = found
    for name, value in found.items():
        say(f"{name:18} {value}")
    cuda = torch.cuda.is_available()
    if not cuda and not args.smoke:
        say("no CUDA device: nothing more to check here (--smoke rehearses the script on the CPU)")
        return _write(0)
    device = torch.device("cuda" if cuda else "cpu")
    cfg = config(args.smoke)
    lengths = (256, 512) if args.smoke else (8192, 16384, 32768, 65536)
    chunk = 128 if args.smoke else 8192
    impls = ["sdpa"]
    if cuda and not str(found["flash_attn"]).startswith("no"):
        impls.append("flash_attention_2")
    else:
        REPORT["skipped"].append("FlashAttention-2: flash_attn not importable or no GPU")
    say(f"\nmodel: {sum(p.numel() for p in models.meta_model(cfg).parameters()) / 1e9:.2f}B "
        f"parameters, fp32 weights, bf16 autocast, AdamW, checkpointing, loss in {chunk} pieces")  # fmt: skip
    for impl in impls:
        for length in lengths:
            try:
                row = step(cfg, impl, length, chunk, device)
            except torch.OutOfMemoryError as error:
                row = {"impl": impl, "tokens": length, "error": f"out of memory: {error}"[:200]}
            except Exception as error:  # noqa: BLE001 - a failed cell is a finding, not a crash
                row = {"impl": impl, "tokens": length, "error": traceback.format_exc()[-600:]}
                say(str(error))
            REPORT["steps"].append(row)
            say(json.dumps(row))
    for impl in impls:
        try:
            row = packing(cfg, impl, device, 512 if args.smoke else 8192)
        except Exception:  # noqa: BLE001 - a failed check is a finding; the rest still runs
            row = {"impl": impl, "error": traceback.format_exc()[-600:]}
        REPORT["packing"].append(row)
        say(json.dumps(row))
    bnb_here = not str(found["bitsandbytes"]).startswith("no")
    if found.get("bitsandbytes_cuda") is True or (args.smoke and not cuda and bnb_here):
        try:
            row = step(cfg, "sdpa", lengths[0], chunk, device, method="qlora")
        except Exception:  # noqa: BLE001
            row = {"method": "qlora", "error": traceback.format_exc()[-600:]}
        REPORT["steps"].append(row)
        say(json.dumps(row))
    else:
        REPORT["skipped"].append(
            f"QLoRA: bitsandbytes {found['bitsandbytes']}, CUDA kernels "
            f"{found.get('bitsandbytes_cuda')}"
        )
    for line in REPORT["skipped"]:
        say(f"skipped: {line}")
    failed = any("error" in r for r in REPORT["steps"] + REPORT["packing"])
    return _write(1 if failed else 0)


def _write(code: int) -> int:
    out = os.environ.get("OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "gpu_check.json").write_text(json.dumps(REPORT, indent=1))
    return code


if __name__ == "__main__":
    sys.exit(main())
