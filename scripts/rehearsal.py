"""The rehearsal of the gpu profile on this CPU (``make rehearsal``; issue 20, item 5).

Every chapter runs with ``profile="gpu"`` end to end, through the code a GPU machine runs: the
hub's checkpoints and datasets resolved to local stand-ins (:mod:`lcx.standins`, built here from
the tiny corpus) by the same loaders, device placement, attention choice, memory plan, recipes with
their layouts (one row a pass, checkpointing, streamed rows, the loss in pieces) and the launch of
multi-GPU runs (``torchrun`` on :data:`lcx.train.REHEARSAL_RANKS` gloo ranks). At toy size: every
window divided by :data:`lcx.profiles.REHEARSAL_DIVISOR`, every gpu recipe cut to two steps
(:func:`lcx.train.rehearsed`), one seed, a few examples per evaluation. Its cache and results are
its own (``.cache/rehearsal``), never the book's or a real gpu run's.

``python scripts/rehearsal.py [CHAPTER ...]``: the named chapters (default: all), in order; exits
non-zero if any fails, after printing what a CPU cannot show.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / ".cache" / "rehearsal"
# papermill parameters per chapter: one seed, the fewest examples each evaluation accepts
PARAMS = {
    "01_rope": {},
    "02_base_model": {"n_windows": 2, "passkey_n": 1, "suite_n": 1},
    "03_together_pi": {"seeds": [0], "n_windows": 2, "qa_n": 1, "summ_n": 1, "systems_n": 1},
    "04_llama2_long_abf": {"seeds": [0], "n_windows": 2, "fsr_n": 1, "qa_n": 1},
    "05_llama3_80k_qlora": {
        "seeds": [0],
        "niah_n": 1,
        "topic_n": 1,
        "ret_n": 1,
        "cost_repeats": 1,
    },
    "06_prolong": {"seeds": [0], "eval_n": 1, "final_n": 1},
    "99_scorecards": {},
}
N_TEXTS = 400  # documents of the tiny corpus behind every stand-in dataset
# What the rehearsal cannot show on a CPU (the README's GPU section lists them too)
NOT_ON_CPU = [
    "FSDP2 sharding: accelerate runs the launched ranks data-parallel without GPUs",
    "DeepSpeed-Ulysses (chapter 06's stage 2): it wraps FlashAttention under DeepSpeed ZeRO-3; "
    "the rehearsal trains stage 2 sharded like stage 1",
    "FlashAttention-2 (varlen) and bitsandbytes' CUDA kernels: SDPA and bitsandbytes' CPU path",
    "Unsloth (chapter 05): it needs a GPU; the rehearsal trains QLoRA through peft",
    "the memory plan's refusal (lcx.train.memory_check runs only where there is a GPU)",
    "NCCL, bf16 GPU kernels, real sizes: every length is 1/32 of the paper's, 2 steps a run",
]


def build_mirror(root: Path) -> Path:
    """The stand-ins, in a folder of ``root`` named by the code that builds them (built once)."""
    from lcx import data, standins
    from lcx.profiles import REHEARSAL_DIVISOR

    code = Path(standins.__file__).read_bytes() + f"{N_TEXTS} {REHEARSAL_DIVISOR}".encode()
    folder = root / f"hub-{hashlib.sha256(code).hexdigest()[:12]}"
    done = folder / ".built"
    if not done.exists():
        texts = data.load_corpus("tiny")["train"]["text"][:N_TEXTS]
        standins.build(folder, list(texts), REHEARSAL_DIVISOR)
        done.touch()
    return folder


def run_chapter(name: str, env: dict) -> tuple[bool, float, str]:
    """Run chapter ``name`` on the gpu profile under ``env``: (passed, seconds, log tail)."""
    import yaml

    out = OUT / "executed" / f"{name}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    params = yaml.safe_dump({"profile": "gpu", **PARAMS[name]}, default_flow_style=True)
    cmd = [sys.executable, "-m", "papermill", str(ROOT / "notebooks" / f"{name}.ipynb"), str(out)]
    cmd += ["-y", params, "--cwd", str(ROOT / "notebooks"), "--no-progress-bar"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    return proc.returncode == 0, time.perf_counter() - start, (proc.stdout + proc.stderr)[-4000:]


def environment() -> dict:
    """The chapters' environment: the rehearsal switch, the stand-ins, no hub, no GPU, and the
    rehearsal's own cache and results, set in this process too before the stand-ins are built
    (the tiny corpus they come from is cached there, never in the book's ``.cache/lcx``)."""
    os.environ.update({"LCX_CACHE": str(OUT / "cache"), "LCX_RESULTS": str(OUT / "results")})
    return {
        **os.environ,
        "LCX_REHEARSAL": "1",
        "LCX_HUB_MIRROR": str(build_mirror(OUT)),
        "CUDA_VISIBLE_DEVICES": "",  # a CPU rehearsal even on a machine with a GPU
        "HF_HUB_OFFLINE": "1",  # nothing reaches the hub: a name the mirror lacks fails loudly
        "HF_DATASETS_OFFLINE": "1",
    }


def main(chapters: list[str]) -> int:
    unknown = [c for c in chapters if c not in PARAMS]
    if unknown:
        raise SystemExit(f"unknown chapters {unknown}; choose among {list(PARAMS)}")
    env = environment()
    failed = []
    for name in chapters or list(PARAMS):
        ok, seconds, tail = run_chapter(name, env)
        print(f"{name}: {'passed' if ok else 'FAILED'} in {seconds:.0f} s", flush=True)
        if not ok:
            failed.append(name)
            print(tail, flush=True)
    print("\nNot shown on a CPU:\n" + "\n".join(f"- {line}" for line in NOT_ON_CPU))
    if failed:
        print(f"\nrehearsal failed: {', '.join(failed)} (executed notebooks in {OUT / 'executed'})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
