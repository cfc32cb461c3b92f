"""The pip requirements of a conda environment file, for `make lock` to resolve on PyPI.

``python scripts/gpu_requirements.py environment.yml`` prints the file's ``pip:`` list and, in
pip's terms, the conda packages PyPI has under another name (``pytorch-gpu`` is PyPI's ``torch``,
whose Linux wheels are CUDA builds), each with the file's own bounds, so the environment files stay
the one place they are set. Conda packages that PyPI has only as a source build needing a CUDA
compiler (``flash-attn``) or not at all (``cuda-version``) are left out, named on stderr. PyPI's
Linux torch wheels are CUDA builds (CUDA 13 for torch 2.14 and 2.15), so a lock of this output is
also a pip route to a GPU box with a driver for them.
"""

from __future__ import annotations

import re
import sys

import yaml

PYPI_NAMES = {"pytorch-gpu": "torch"}  # conda-forge name -> PyPI name
NOT_ON_PYPI = {"python", "pip", "cuda-version", "flash-attn"}  # (flash-attn: an sdist needing nvcc)


def requirements(env: dict) -> tuple[list[str], list[str]]:
    """``(requirements, left_out)`` of a parsed environment file."""
    reqs, left = [], []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            reqs += dep["pip"]
            continue
        name, bounds = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*(.*)", dep).groups()
        if name in NOT_ON_PYPI:
            left.append(dep)
        else:
            if re.fullmatch(r"=[^=<>!]+", bounds):  # conda's "=3.8": that version, any patch
                bounds = f"={bounds}.*"
            reqs.append(PYPI_NAMES.get(name, name) + bounds)
    return reqs, left


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        reqs, left = requirements(yaml.safe_load(f))
    print("\n".join(reqs))
    print(f"{sys.argv[1]}: not resolved on PyPI: {', '.join(left)}", file=sys.stderr)
