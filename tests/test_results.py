"""The pinned environment: the lock agrees with pyproject.toml, and every chapter's metrics record
the versions that produced them, which the appendix holds against the lock."""

import json
import re

import pytest
import torch
import transformers
from packaging.requirements import Requirement

from lcx import results

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
REQUIREMENTS = results.ROOT / "requirements"


def requirements(extra=None):
    project = tomllib.loads((results.ROOT / "pyproject.toml").read_text())["project"]
    deps = project["optional-dependencies"][extra] if extra else project["dependencies"]
    return [Requirement(d) for d in deps]


@pytest.mark.parametrize("lock", ["cpu.txt", "cpu-transformers-5.17.txt"])
def test_each_lock_pins_every_dependency_inside_pyprojects_ranges(lock):
    """A lock made before pyproject.toml changed fails here: `make lock` refreshes it."""
    pins = results.locked_versions(REQUIREMENTS / lock)
    for req in requirements() + requirements("dev"):
        name = req.name.lower()
        assert name in pins, f"{lock} does not pin {name}"
        assert req.specifier.contains(pins[name], prereleases=True), (lock, name, pins[name])
    # the choices that are inputs of `make lock`
    assert f"torch=={pins['torch']}" in (REQUIREMENTS / "torch-cpu.txt").read_text()
    if "5.17" in lock:
        assert f"transformers=={pins['transformers']}" == "transformers==5.17.0"
    assert not [n for n in pins if n.startswith("nvidia-")]  # the CPU build of torch


def test_locked_versions_reads_pins_and_ignores_comments(tmp_path):
    lock = tmp_path / "lock.txt"
    lock.write_text(
        "# made by make lock\nTorch==2.13.0+cpu\n    # via lcx\nPyYAML==6.0.3  # via x\n-e .\n"
    )
    assert results.locked_versions(lock) == {"torch": "2.13.0+cpu", "pyyaml": "6.0.3"}
    assert results.locked_versions(tmp_path / "absent.txt") == {}


def test_metrics_record_the_environment_and_the_appendix_flags_a_chapter_off_the_lock(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("LCX_RESULTS", str(tmp_path / "results"))
    lock = tmp_path / "cpu.txt"
    lock.write_text(f"torch=={torch.__version__}\ntransformers=={transformers.__version__}\n")
    monkeypatch.setattr(results, "LOCK", lock)
    results.save_metrics(results.chapter_dir("01_a", "cpu"), {"x": 1.0})
    saved = json.loads((tmp_path / "results/cpu/01_a/metrics.json").read_text())
    assert saved["x"] == 1.0
    # the recorded versions are the imported modules' own
    assert saved["environment"]["transformers"] == transformers.__version__
    assert saved["environment"]["torch"] == torch.__version__
    envs = results.environments("cpu")
    assert list(envs.columns) == ["01_a", "lock", "pinned"] and envs["pinned"].all()
    # a chapter run on another transformers is flagged; torch still agrees
    other = {**saved["environment"], "transformers": "5.17.0"}
    results.save_json(results.chapter_dir("02_b", "cpu") / "metrics.json", {"environment": other})
    envs = results.environments("cpu")
    assert not envs.loc["transformers", "pinned"] and envs.loc["torch", "pinned"]
    assert envs.loc["transformers", "02_b"] == "5.17.0"


def test_the_readme_quotes_the_locks_versions():
    readme = (results.ROOT / "README.md").read_text()
    quoted = re.search(r"among them\s+(.*?)\)", readme, re.S).group(1)
    pairs = re.findall(r"([a-z]+) (\d[\w.+]*)", quoted)
    pins = results.locked_versions()
    assert len(pairs) >= 5 and all(pins[name] == version for name, version in pairs), pairs
    n = int(re.search(r"\((\d+) packages", readme).group(1))
    assert n == len(pins)
