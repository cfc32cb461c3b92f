"""The GPU environments' bounds against the libraries' own requirements, read from their installed
source (issue 20): no conda solver runs on this machine, so each bound is checked against the line
of code that would refuse a lower version."""

import inspect
import re
from pathlib import Path

import pytest
import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent


def _specs(path: str) -> dict[str, SpecifierSet]:
    """Package name -> its bounds, conda's and pip's entries of an environment file alike."""
    env = yaml.safe_load((ROOT / path).read_text())
    entries = []
    for dep in env["dependencies"]:
        entries += dep["pip"] if isinstance(dep, dict) else [dep]
    out = {}
    for entry in entries:
        m = re.match(r"([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*(.*)", entry.split("#")[0].strip())
        if m and not entry.startswith("-e"):
            spec = m.group(3).strip()
            spec = f"=={spec[1:]}" if re.match(r"=\d", spec) else spec  # conda's python=3.11
            out[m.group(1).lower()] = SpecifierSet(spec)
    return out


def _floor(spec: SpecifierSet) -> Version:
    floors = [Version(s.version) for s in spec if s.operator in (">=", "==")]
    assert floors, f"{spec} has no lower bound"
    return max(floors)


def test_deepspeed_is_at_least_what_accelerate_requires_for_ulysses():
    from accelerate import accelerator

    source = inspect.getsource(accelerator.Accelerator._prepare_deepspeed)
    needed = re.search(r'ver_min_required = "([\d.]+)"\s*\n\s*if not compare_versions\(', source)
    assert needed and "Ulysses" in source[needed.end() : needed.end() + 400]
    assert _floor(_specs("environment.yml")["deepspeed"]) >= Version(needed.group(1))


def test_torch_is_at_least_what_transformers_requires():
    from transformers.utils import import_utils

    needed = re.search(r"PyTorch >= ([\d.]+) is required", inspect.getsource(import_utils))
    assert needed
    for path in ("environment.yml", "environment-unsloth.yml"):
        assert _floor(_specs(path)["pytorch-gpu"]) >= Version(needed.group(1)), path
    pyproject = (ROOT / "pyproject.toml").read_text()
    torch_floor = re.search(r'"torch>=([\d.]+)"', pyproject).group(1)
    assert Version(torch_floor) >= Version(needed.group(1))


def test_unsloth_has_its_own_environment_on_the_transformers_lcx_is_tested_on():
    """A bare `unsloth` installs its command line only, and its extra caps transformers at 5.17:
    it lives in environment-unsloth.yml, whose transformers is the second lock's (the version
    make test-transformers-5.17 runs lcx's transformers-sensitive tests on)."""
    main, unsloth = _specs("environment.yml"), _specs("environment-unsloth.yml")
    assert "unsloth" not in main
    assert "unsloth" in unsloth and "unsloth_zoo" in unsloth
    lock = (ROOT / "requirements" / "transformers-5.17.txt").read_text()
    tested = re.search(r"^transformers==([\d.]+)", lock, re.M).group(1)
    assert unsloth["transformers"] == SpecifierSet(f"=={tested}")
    assert Version(tested) in main["transformers"]  # the main environment allows it too
    # bitsandbytes from PyPI (its wheel has the CUDA kernels), not conda-forge's cpu_* builds
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    assert not any(d.startswith("bitsandbytes") for d in conda)


@pytest.mark.parametrize("path", ["environment.yml", "environment-unsloth.yml"])
def test_environment_files_install_lcx_itself(path):
    env = yaml.safe_load((ROOT / path).read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-e .[dev]" in pip


@pytest.mark.parametrize(
    "path, lock", [("environment.yml", "gpu.txt"), ("environment-unsloth.yml", "gpu-unsloth.txt")]
)
def test_the_gpu_environments_pip_side_resolves_within_their_bounds(path, lock):
    """`make lock` resolves each GPU environment's pip side on PyPI (uv, Linux x86_64, Python
    3.11) into requirements/gpu*.txt: the solver's answer. The committed lock must still answer
    the file: every bound the file sets, on pip's and conda's entries (pytorch-gpu is PyPI's
    torch), holds for the version the lock pins, and the lock installs lcx itself. A file edited
    without rerunning `make lock` fails here."""
    text = (ROOT / "requirements" / lock).read_text()
    pins = {
        m.group(1).lower().replace("_", "-"): Version(m.group(2))
        for m in re.finditer(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)", text, re.M)
    }
    assert re.search(r"^-e \.$", text, re.M)
    pypi = {"pytorch-gpu": "torch"}
    conda_only = {"python", "pip", "cuda-version", "flash-attn"}  # not resolved on PyPI
    checked = 0
    for name, spec in _specs(path).items():
        if name in conda_only:
            continue
        pinned = pins[pypi.get(name, name).replace("_", "-")]
        assert pinned in spec, f"{path}: {name} {spec}, the lock has {pinned}"
        checked += 1
    assert checked >= 10
