"""The chapter notebooks' contract: committed clean, parameterised, failing fast on bad input."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_the_book_lists_every_chapter_in_order_and_nothing_missing():
    """_toc.yml's entries are files here, and its chapters are exactly the notebooks, in order (a
    renamed or deleted chapter fails here rather than in the book build)."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]] + [c["file"] for part in toc["parts"] for c in part["chapters"]]
    missing = [f for f in files if not any((ROOT / f"{f}{s}").exists() for s in (".ipynb", ".md"))]
    assert not missing, f"_toc.yml lists files that do not exist: {missing}"
    chapters = [f for f in files if f.startswith("notebooks/")]
    assert chapters == [f"notebooks/{p.stem}" for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_without_outputs(path):
    nb = json.loads(path.read_text())
    dirty = [i for i, c in enumerate(nb["cells"]) if c.get("outputs") or c.get("execution_count")]
    assert not dirty, f"{path.name}: cells {dirty} have outputs; clear them before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_named_and_parameterised(path):
    assert re.fullmatch(r"\d\d_[a-z0-9_]+\.ipynb", path.name), path.name
    nb = json.loads(path.read_text())
    first_code = next(c for c in nb["cells"] if c["cell_type"] == "code")
    assert "parameters" in first_code.get("metadata", {}).get("tags", []), (
        "first code cell must be tagged 'parameters'"
    )
    assert 'profile = os.environ.get("LCX_PROFILE", "cpu")' in "".join(first_code["source"])


@pytest.mark.slow  # a papermill kernel per chapter, 10-20 s each
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_bad_profile_fails_before_any_work(path, tmp_path):
    """papermill -p profile bogus must stop in the first cells with a message naming the parameter."""
    out = tmp_path / "out.ipynb"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "papermill",
            str(path),
            str(out),
            "-p",
            "profile",
            "bogus",
            "--cwd",
            str(path.parent),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "LCX_RESULTS": str(tmp_path / "results")},
    )
    assert proc.returncode != 0
    assert "parameter 'profile' = 'bogus' is not allowed" in proc.stdout + proc.stderr
    assert "tiny, cpu, gpu, paper" in proc.stdout + proc.stderr
    executed = json.loads(out.read_text())
    code_cells = [c for c in executed["cells"] if c["cell_type"] == "code"]
    failed = next(
        i
        for i, c in enumerate(code_cells)
        if any(o.get("output_type") == "error" for o in c["outputs"])
    )
    assert failed <= 2, f"the bad profile was only caught in code cell {failed}"
    assert not (tmp_path / "results" / "bogus").exists()


@pytest.mark.slow  # chapter 02 run twice from empty caches (minutes)
def test_chapter_metrics_are_reproducible_bit_for_bit(tmp_path):
    """Same seed, same machine: two cold runs of a training chapter give identical metrics."""
    path = ROOT / "notebooks" / "02_base_model.ipynb"
    metrics = []
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        env = {
            **os.environ,
            "LCX_CACHE": str(tmp_path / run / "cache"),
            "LCX_RESULTS": str(tmp_path / run / "res"),
        }
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "papermill",
                str(path),
                str(tmp_path / run / "out.ipynb"),
                "-p",
                "profile",
                "tiny",
                "--cwd",
                str(path.parent),
            ],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        metrics.append(
            json.loads(
                (tmp_path / run / "res" / "tiny" / "02_base_model" / "metrics.json").read_text()
            )
        )
    assert metrics[0] == metrics[1]
    assert metrics[0]["perplexity"]["llama2"]  # real numbers were produced
