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


@pytest.mark.slow  # a papermill kernel per case, 10-20 s each
@pytest.mark.parametrize(
    "chapter, params, message",
    [
        (
            "01_rope",
            ["-p", "max_distance", str(2**30)],
            "'max_distance' = 1073741824 is out of range",
        ),
        ("03_together_pi", ["-p", "run_systems", "yes"], "'run_systems' = 'yes' has type str"),
        (
            "04_llama2_long_abf",
            ["-p", "run_scratch", "True", "-p", "profile", "gpu"],
            "trains Llama-2-7B from scratch",
        ),
        ("05_llama3_80k_qlora", ["-p", "run_cost", "1"], "'run_cost' = 1 has type int"),
        ("02_base_model", ["-p", "profile", "gpu"], "needs a CUDA GPU"),
    ],
)
def test_bad_parameters_fail_in_the_first_cells(chapter, params, message, tmp_path):
    """Every parameter is checked before any work, naming the parameter, its value and why."""
    import torch

    if "gpu" in params and torch.cuda.is_available():
        pytest.skip("the CUDA check needs a machine without CUDA")
    path = next(p for p in NOTEBOOKS if p.stem == chapter)
    out = tmp_path / "out.ipynb"
    env = {**os.environ, "LCX_RESULTS": str(tmp_path / "results")}
    env.pop("LCX_REHEARSAL", None)
    cmd = [
        sys.executable,
        "-m",
        "papermill",
        str(path),
        str(out),
        *params,
        "--cwd",
        str(path.parent),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode != 0 and message in proc.stdout + proc.stderr
    code_cells = [c for c in json.loads(out.read_text())["cells"] if c["cell_type"] == "code"]
    failed = next(
        i
        for i, c in enumerate(code_cells)
        if any(o.get("output_type") == "error" for o in c["outputs"])
    )
    assert failed <= 2, f"{params} was only caught in code cell {failed}"  # 1: papermill's


# --- results written whole, the Makefile's runs, the tests' own folders ----------------------------


def make_dry_run(*args) -> list[str]:
    """The commands ``make`` would run (``-n``), the venv taken as installed; run from ``make test``
    too, so the outer make's flags and level are dropped (else "make[1]: Entering directory")."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    proc = subprocess.run(
        ["make", "-n", "--no-print-directory", "-o", ".venv/.installed-dev", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def papermill_runs(lines) -> list[str]:
    return [re.search(r"notebooks/(\w+)\.ipynb", x).group(1) for x in lines if "papermill " in x]


def test_make_runs_the_chapters_a_chapter_reads_before_it():
    """Chapter 06's P9 reads chapters 03-05's results, the appendix every chapter's: make runs
    them first, for make book and make chapter alike (a profile with no results yet)."""
    chapters = [p.stem for p in NOTEBOOKS]
    p9 = ["03_together_pi", "04_llama2_long_abf", "05_llama3_80k_qlora", "06_prolong"]
    target = "results/dry-run/06_prolong/executed.ipynb"
    assert papermill_runs(make_dry_run("PROFILE=dry-run", target)) == p9
    assert papermill_runs(make_dry_run("PROFILE=dry-run", "chapter", "NB=06_prolong")) == p9
    runs = papermill_runs(
        make_dry_run("PROFILE=dry-run", "results/dry-run/99_scorecards/executed.ipynb")
    )
    assert runs[-1] == "99_scorecards" and sorted(runs) == chapters


@pytest.mark.parametrize("params", ["", "-p max_distance 65536"])
def test_make_chapter_runs_through_a_temporary_file_and_custom_runs_are_not_the_books(params):
    """papermill writes beside the chapter's folder; the notebook moves in only after a run that
    published its results, as executed.ipynb (what make book renders and counts as done) only
    when the parameters are the defaults."""
    lines = make_dry_run("PROFILE=dry-run", "chapter", "NB=01_rope", f"PARAMS={params}")
    papermill = next(x for x in lines if "papermill " in x)
    assert "results/dry-run/.01_rope.executed.ipynb" in papermill
    assert not re.search(r"results/dry-run/01_rope/\S*\.ipynb", papermill)
    moved = lines[-1].split()
    name = "executed-custom.ipynb" if params else "executed.ipynb"
    assert moved == [
        "mv",
        "results/dry-run/.01_rope.executed.ipynb",
        f"results/dry-run/01_rope/{name}",
    ]
    assert any("test ! -e results/dry-run/.01_rope.partial" in x for x in lines)


def test_make_clean_never_removes_results_or_the_cache():
    removed = " ".join(make_dry_run("clean"))
    assert "results" not in removed and ".cache/lcx" not in removed


def test_the_tests_use_their_own_cache_and_results():
    """Every pytest run (nbmake's chapters included) writes under .cache/test (conftest.py), never
    into the book's results/ or .cache/lcx, whatever LCX_CACHE/LCX_RESULTS the user exported."""
    from lcx import cache, results

    test_dir = Path(os.environ.get("LCX_TEST_DIR") or ROOT / ".cache" / "test").resolve()
    assert results.results_root() == test_dir / "results" != ROOT / "results"
    assert cache.cache_root() == test_dir / "cache" != ROOT / ".cache" / "lcx"


@pytest.mark.slow  # a papermill kernel
def test_a_papermill_run_publishes_its_results_with_the_parameters_it_was_given(tmp_path):
    """A chapter-shaped notebook run by papermill with -p: its folder appears whole at its last
    step, and the marker records the -p values (the profile is the folder's)."""
    import nbformat

    nb = nbformat.v4.new_notebook(
        metadata={
            "kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"}
        }
    )
    params = nbformat.v4.new_code_cell('profile = "cpu"\nknob = 2')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [
        params,
        nbformat.v4.new_code_cell(
            "from lcx.results import chapter_dir\nfrom lcx.scorecard import Scorecard\n"
            'out = chapter_dir("01_fake", profile)\n(out / "figure.png").write_text("x")\n'
            'card = Scorecard("01_fake", profile)\n'
            'card.save(out, {"knob": knob})'
        ),
    ]
    path = tmp_path / "01_fake.ipynb"
    nbformat.write(nb, path)
    env = {**os.environ, "LCX_RESULTS": str(tmp_path / "results")}
    cmd = [sys.executable, "-m", "papermill", str(path), str(tmp_path / "out.ipynb")]
    cmd += ["-p", "profile", "tiny", "-p", "knob", "3", "--cwd", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    folder = tmp_path / "results" / "tiny" / "01_fake"
    assert sorted(p.name for p in folder.iterdir()) == [
        "figure.png",
        "metrics.json",
        "run.json",
        "scorecard.json",
    ]
    marker = json.loads((folder / "run.json").read_text())
    assert marker["parameters"] == {"knob": 3} and marker["profile"] == "tiny"
    assert not list((tmp_path / "results" / "tiny").glob(".*"))


@pytest.mark.slow  # a papermill kernel per chapter, 20-40 s each on tiny
@pytest.mark.parametrize("chapter", ["03_together_pi", "04_llama2_long_abf", "06_prolong"])
def test_a_chapter_under_the_cpu_plan_skips_the_runs_it_leaves_out(chapter, tmp_path):
    """The tiny chapters with cpu's plan (lcx/plans/cpu.json, -p planned cpu): the branches that
    skip runs are run, and every part the plan left without results says so with its numbers."""
    from lcx import plan

    env = {**os.environ, "LCX_RESULTS": str(tmp_path / "results")}
    path = ROOT / "notebooks" / f"{chapter}.ipynb"
    cmd = [sys.executable, "-m", "papermill", str(path), str(tmp_path / "out.ipynb")]
    cmd += ["-p", "profile", "tiny", "-p", "planned", "cpu", "--cwd", str(path.parent)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    card = json.loads((tmp_path / "results" / "tiny" / chapter / "scorecard.json").read_text())
    cpu = plan.load("cpu")
    left = [
        (row["claim"], part["part"])
        for row in card["rows"]
        for part in row["parts"]
        if str(part.get("reason", "")).startswith("out of reach by the plan")
    ]
    expected = {
        (row["claim"], part["part"])
        for row in card["rows"]
        for part in row["parts"]
        if part["part"] in plan.out_of_reach(cpu, row["claim"]) and "effect" not in part
    }
    assert left and set(left) <= expected
    metrics = json.loads((tmp_path / "results" / "tiny" / chapter / "metrics.json").read_text())
    assert metrics["plan"] == {"commit": cpu["commit"], "seeds": cpu["seeds"]}
