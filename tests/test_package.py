"""lcx must import on a CPU-only machine without any GPU-only package."""

import subprocess
import sys
from pathlib import Path

import pytest

import lcx

MODULES = sorted(p.stem for p in Path(lcx.__file__).parent.glob("*.py") if p.stem != "__init__")
# bitsandbytes is not here: it runs on CPU, and transformers imports it whenever it is installed.
GPU_ONLY = ("flash_attn", "unsloth", "triton")


@pytest.mark.slow  # a fresh process importing every lcx module (10-30 s)
def test_importing_lcx_pulls_no_gpu_only_package():
    code = (
        "import sys\n"
        + "".join(f"import lcx.{m}\n" for m in MODULES)
        + f"print(sorted(m for m in {GPU_ONLY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
