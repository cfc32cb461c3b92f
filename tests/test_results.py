"""The pinned environment: the lock agrees with pyproject.toml, and every chapter's metrics record
the versions that produced them, which the appendix holds against the lock."""

import json
import re

import pytest
import torch
import transformers
from packaging.requirements import Requirement

from lcx import results
from lcx.scorecard import Row, Scorecard, collect

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
    run("01_a", "cpu", metrics={"x": 1.0})
    saved = json.loads((tmp_path / "results/cpu/01_a/metrics.json").read_text())
    assert saved["x"] == 1.0
    # the recorded versions are the imported modules' own
    assert saved["environment"]["transformers"] == transformers.__version__
    assert saved["environment"]["torch"] == torch.__version__
    envs = results.environments("cpu")
    assert list(envs.columns) == ["01_a", "lock", "pinned"] and envs["pinned"].all()
    # a chapter run on another transformers is flagged; torch still agrees
    other = {**saved["environment"], "transformers": "5.17.0"}
    out = results.chapter_dir("02_b", "cpu")
    results.save_json(out / "metrics.json", {"environment": other})
    results.publish(out)
    envs = results.environments("cpu")
    assert not envs.loc["transformers", "pinned"] and envs.loc["torch", "pinned"]
    assert envs.loc["transformers", "02_b"] == "5.17.0"


def run(chapter, profile, figures=(), publish=True, metrics=None):
    """A chapter's run as a notebook makes it: chapter_dir first, figures as it goes, the
    scorecard's save last (``publish=False``: a run that fails before its last step)."""
    out = results.chapter_dir(chapter, profile)
    for name in figures:
        (out / f"{name}.png").write_text(name)
    if publish:
        card = Scorecard(chapter, profile)  # one row, as judge makes them (these chapters are fake)
        card.rows.append(Row("R1", "statement", "paper", "0.9", profile, "reproduced", "rule"))
        card.save(out, {"chapter": chapter} if metrics is None else metrics)
    return out


def states(profile):
    table = results.status(profile).set_index("chapter")
    return {c: (row.state, row.detail) for c, row in table.iterrows()}


def test_a_chapter_replaces_its_results_whole_or_not_at_all(tmp_path, monkeypatch):
    """A chapter writes into a staging folder that its scorecard's save renames into place with a
    marker: a rerun that fails leaves the last complete run as it was (no new figure beside the
    old scorecard), and the next complete run replaces it whole (no old figure beside the new)."""
    monkeypatch.setenv("LCX_RESULTS", str(tmp_path))
    final = tmp_path / "cpu" / "01_a"
    run("01_a", "cpu", ["old"])
    assert sorted(p.name for p in final.iterdir()) == [
        "metrics.json",
        "old.png",
        "run.json",
        "scorecard.json",
    ]
    first = results.read_marker(final)
    assert first["chapter"] == "01_a" and first["commit"] and first["lcx"]
    out = run("01_a", "cpu", ["new"], publish=False)  # fails before its last step
    assert out != final and (out / "new.png").is_file()
    assert not (final / "new.png").exists() and results.read_marker(final) == first
    assert list(collect("cpu").chapter) == ["01_a"]
    assert states("cpu")["01_a"][0] == "current"
    run("01_a", "cpu", ["new"])
    assert (final / "new.png").is_file() and not (final / "old.png").exists()
    assert results.read_marker(final)["run"] != first["run"]
    assert not [p.name for p in (tmp_path / "cpu").iterdir() if p.name != "01_a"]
    # a publish killed between its two renames left the old folder aside: the next run puts it back
    final.rename(tmp_path / "cpu" / ".01_a.old-123")
    results.chapter_dir("01_a", "cpu")
    assert results.read_marker(final) is not None
    assert not (tmp_path / "cpu" / ".01_a.old-123").exists()


def test_the_appendix_collects_only_complete_current_results_and_names_the_others(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("LCX_RESULTS", str(tmp_path))
    monkeypatch.setattr(results, "default_parameters", lambda chapter: {"knob": 2})
    run("01_a", "cpu")
    (tmp_path / "cpu" / "02_b").mkdir()  # written before markers: scorecard, no run.json
    results.save_json(tmp_path / "cpu" / "02_b" / "scorecard.json", {"chapter": "02_b", "rows": []})
    run("03_c", "cpu", publish=False)  # failed (or still running)
    with monkeypatch.context() as m:  # papermill passed -p knob 3 (and the profile)
        m.setattr(results, "injected_parameters", lambda: {"profile": "cpu", "knob": 3})
        run("04_d", "cpu")
    with monkeypatch.context() as m:  # -p knob 2: the default's own value
        m.setattr(results, "injected_parameters", lambda: {"profile": "cpu", "knob": 2})
        run("05_e", "cpu")
    marker = results.read_marker(tmp_path / "cpu" / "05_e")
    assert marker["parameters"] == {"knob": 2}  # the profile is the folder's
    out = results.chapter_dir("06_f", "cpu")  # reads 01_a's results, as chapter 06 reads 03-05
    assert results.load_metrics("01_a", "cpu")["chapter"] == "01_a"
    assert results.load_metrics("02_b", "cpu") is None  # incomplete results are not read
    card = Scorecard("06_f", "cpu")
    card.rows.append(Row("P9", "statement", "paper", "0.5", "cpu", "reproduced", "rule"))
    card.save(out, {"chapter": "06_f"})
    assert results.read_marker(tmp_path / "cpu" / "06_f")["reads"] == {
        "01_a": results.read_marker(tmp_path / "cpu" / "01_a")["run"]
    }
    got = states("cpu")
    assert got["01_a"] == ("current", "") and got["05_e"][0] == "current"
    assert got["02_b"][0] == got["03_c"][0] == "incomplete"
    assert got["04_d"] == ("stale", "ran with parameters other than the defaults (knob=3)")
    assert got["06_f"][0] == "current"
    assert all(got[c][0] == "missing" for c in results.chapters())  # the book's, not run here
    assert list(collect("cpu").chapter.unique()) == ["01_a", "05_e", "06_f"]
    assert list(results.environments("cpu").columns[:-2]) == ["01_a", "05_e", "06_f"]
    # 01_a reruns: 06_f read results that are gone; lcx changes: every result is stale
    run("01_a", "cpu")
    assert states("cpu")["06_f"] == (
        "stale",
        "read results of 01_a that have been replaced or removed since",
    )
    monkeypatch.setattr(results, "lcx_fingerprint", lambda: "changed")
    assert states("cpu")["01_a"] == ("stale", "lcx changed since it ran")
    assert collect("cpu").empty


def test_the_marker_records_the_parameters_papermill_injected(monkeypatch):
    """papermill injects its -p/-f values as a cell starting '# Parameters'; the kernel's input
    history has it (checked with a real papermill run in test_notebooks)."""
    import IPython

    class Shell:
        user_ns = {"In": ["", "import os\nknob = 2", '# Parameters\nprofile = "cpu"\nknob = 3\n']}

    monkeypatch.setattr(IPython, "get_ipython", lambda: Shell())
    assert results.injected_parameters() == {"profile": "cpu", "knob": 3}
    monkeypatch.setattr(IPython, "get_ipython", lambda: None)
    assert results.injected_parameters() == {}
    defaults = results.default_parameters("01_rope")
    assert "max_distance" in defaults and "profile" not in defaults  # profile: from the env


def test_the_readme_quotes_the_locks_versions():
    readme = (results.ROOT / "README.md").read_text()
    quoted = re.search(r"among them\s+(.*?)\)", readme, re.S).group(1)
    pairs = re.findall(r"([a-z]+) (\d[\w.+]*)", quoted)
    pins = results.locked_versions()
    assert len(pairs) >= 5 and all(pins[name] == version for name, version in pairs), pairs
    n = int(re.search(r"\((\d+) packages", readme).group(1))
    assert n == len(pins)
