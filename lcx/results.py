"""Where a chapter's results go: ``results/<profile>/<chapter>/`` (git ignores ``results/``), written
whole.

A chapter writes its figures, ``metrics.json`` and ``scorecard.json`` into a staging folder,
``results/<profile>/.<chapter>.partial/`` (:func:`chapter_dir`), and its last step
(:meth:`lcx.scorecard.Scorecard.save`, through :func:`publish`) writes a marker, ``run.json``, and
renames the staging folder into place. So a chapter's folder always holds one whole run: a run
that fails leaves the previous run's folder as it was (and its own partial results in the staging
folder), never a new figure beside an old scorecard. The marker records the commit, the parameters
papermill passed, fingerprints of the notebook and of ``lcx``, and the other chapters' runs this
one read; :func:`status` compares them with the repository now, and the appendix collects only
results that are complete and current (:func:`current`). ``make`` puts the executed notebook
(papermill's output) into the folder after the run.

``LCX_RESULTS`` moves the root, e.g. to keep the notebook tests' results apart from the book's.
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
import os
import platform
import shutil
import subprocess
import uuid
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pandas is imported where a table is made: lcx.train runs without it
    import pandas as pd


ROOT = Path(__file__).resolve().parent.parent
MARKER = "run.json"  # written last, into a complete run's folder
STARTED = ".started.json"  # the staging folder's record of the run's start
# The other chapters' results this process read (load_metrics) since its chapter_dir: chapter ->
# run id. The marker records them, so a chapter that read another chapter's results becomes stale
# when that chapter reruns (chapter 06 reads 03, 04 and 05).
_READS: dict[str, str] = {}


def results_root() -> Path:
    env = os.environ.get("LCX_RESULTS")
    if env:
        return Path(env).expanduser().resolve()
    # An editable install keeps the project next to the package; otherwise use the working dir.
    return (ROOT if (ROOT / "pyproject.toml").exists() else Path.cwd()) / "results"


def staging_dir(chapter: str, profile: str, root: Path | None = None) -> Path:
    return (root or results_root()) / profile / f".{chapter}.partial"


def chapter_dir(chapter: str, profile: str) -> Path:
    """The folder a chapter writes into as it runs: ``results/<profile>/.<chapter>.partial/``,
    emptied. :func:`publish` (called by the chapter's ``Scorecard.save``) renames it to
    ``results/<profile>/<chapter>/``; until then the previous run's folder stays as it was."""
    base = results_root() / profile
    _recover(base, chapter)
    staging = staging_dir(chapter, profile)
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    _READS.clear()
    save_json(
        staging / STARTED,
        {
            "chapter": chapter,
            "profile": profile,
            "started": _now(),
            **_commit(),
            "lcx": lcx_fingerprint(),
            "notebook": notebook_fingerprint(chapter),
        },
    )
    return staging


def is_staging(directory: Path) -> bool:
    directory = Path(directory)
    return directory.name.endswith(".partial") and (directory / STARTED).is_file()


def publish(staging: Path) -> Path:
    """Write the marker into ``staging`` (a :func:`chapter_dir`) and rename it into place as
    ``results/<profile>/<chapter>/``, replacing the previous run's folder; returns the new folder.

    The old folder is renamed aside first and removed after: a kill between the two renames
    leaves it aside, and the next :func:`chapter_dir` of that chapter puts it back."""
    staging = Path(staging)
    if not is_staging(staging):
        raise FileNotFoundError(
            f"{staging} is not a chapter's staging folder (already published? a chapter saves "
            "once: rerun it from the top, whose lcx.results.chapter_dir starts a new run)"
        )
    started = json.loads((staging / STARTED).read_text())
    marker = {
        **started,
        "run": uuid.uuid4().hex,
        "finished": _now(),
        "parameters": injected_parameters(),
        "reads": dict(_READS),
    }
    marker["parameters"].pop("profile", None)  # the folder's profile
    save_json(staging / MARKER, marker)
    (staging / STARTED).unlink()
    final = staging.parent / started["chapter"]
    if final.exists():
        aside = staging.parent / f".{started['chapter']}.old-{os.getpid()}"
        final.rename(aside)
        staging.rename(final)
        shutil.rmtree(aside)
    else:
        staging.rename(final)
    return final


def _recover(base: Path, chapter: str) -> None:
    """Put back a chapter's folder that a killed :func:`publish` left aside, or remove it when a
    newer run is in place."""
    for aside in sorted(base.glob(f".{chapter}.old-*")):
        if (base / chapter).exists():
            shutil.rmtree(aside)
        else:
            aside.rename(base / chapter)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _commit() -> dict:
    """The repository's commit (``"unknown"`` outside a git checkout) and whether ``lcx/`` or
    ``notebooks/`` had uncommitted changes (None when unknown)."""
    try:
        run = dict(cwd=ROOT, capture_output=True, text=True, timeout=10, check=True)
        sha = subprocess.run(["git", "rev-parse", "HEAD"], **run).stdout.strip()
        changes = subprocess.run(
            ["git", "status", "--porcelain", "--", "lcx", "notebooks"], **run
        ).stdout
        return {"commit": sha, "dirty": bool(changes.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}


def _digest(parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def lcx_fingerprint() -> str:
    """A hash of every ``lcx/*.py`` source: the code ``make`` reruns a chapter for."""
    files = sorted(Path(__file__).resolve().parent.glob("*.py"))
    return _digest(part for f in files for part in (f.name, f.read_text()))


def notebook_path(chapter: str) -> Path:
    return ROOT / "notebooks" / f"{chapter}.ipynb"


def notebook_fingerprint(chapter: str) -> str | None:
    """A hash of the chapter notebook's cells (type and source; not outputs or metadata, which an
    interactive session changes), or None when the notebook is not here."""
    path = notebook_path(chapter)
    if not path.is_file():
        return None
    cells = json.loads(path.read_text())["cells"]
    return _digest(part for c in cells for part in (c["cell_type"], "".join(c["source"])))


def _assignments(source: str) -> dict:
    """``name = literal`` statements of a cell (other statements and values are skipped)."""
    values = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name):
                try:
                    values[target.id] = ast.literal_eval(node.value)
                except ValueError:
                    pass
    return values


def injected_parameters() -> dict:
    """The parameters papermill passed to this kernel (``-p``/``-f``), read back from the cell it
    injects (it begins with ``# Parameters``) in IPython's input history; {} for a run without
    papermill (nbmake, JupyterLab) or outside IPython."""
    try:
        from IPython import get_ipython
    except ImportError:
        return {}
    shell = get_ipython()
    if shell is None:
        return {}
    params = {}
    for source in shell.user_ns.get("In", []):
        if source.lstrip().startswith("# Parameters"):
            params.update(_assignments(source))
    return params


def default_parameters(chapter: str) -> dict:
    """The literal values of the chapter notebook's ``parameters`` cell (``profile``, read from the
    environment, is not among them)."""
    path = notebook_path(chapter)
    if not path.is_file():
        return {}
    for cell in json.loads(path.read_text())["cells"]:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            return _assignments("".join(cell["source"]))
    return {}


def _jsonable(value):
    if hasattr(value, "tolist"):  # numpy / torch
        value = value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def save_json(path: Path, data: dict) -> Path:
    """Write ``data`` as JSON atomically (a crash never leaves half a file)."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_jsonable(data), indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


# The packages whose versions decide the book's numbers; every metrics.json records them.
PACKAGES = ("torch", "transformers", "tokenizers", "peft", "accelerate", "datasets", "bitsandbytes")
LOCK = ROOT / "requirements" / "cpu.txt"


def environment() -> dict[str, str | None]:
    """Python's version and each of :data:`PACKAGES`' installed versions (None if absent)."""
    env: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            env[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            env[name] = None
    return env


def locked_versions(path: Path | None = None) -> dict[str, str]:
    """The pins of a lock file written by ``make lock`` (``name==version`` lines; default
    :data:`LOCK`), by lower-case name; empty when the file is absent (``lcx`` installed without
    the repository)."""
    path = LOCK if path is None else path
    if not Path(path).is_file():
        return {}
    pins = {}
    for line in Path(path).read_text().splitlines():
        name, sep, version = line.split("#")[0].strip().partition("==")
        if sep:
            pins[name.strip().lower()] = version.strip()
    return pins


def chapters() -> list[str]:
    """The book's chapters that write results: ``notebooks/NN_*.ipynb`` but the appendix (99)."""
    return [p.stem for p in sorted((ROOT / "notebooks").glob("[0-8][0-9]_*.ipynb"))]


def read_marker(folder: Path) -> dict | None:
    path = Path(folder) / MARKER
    return json.loads(path.read_text()) if path.is_file() else None


def custom_parameters(marker: dict) -> dict:
    """The parameters of a run that differ from its notebook's defaults."""
    defaults = default_parameters(marker["chapter"])
    return {
        k: v
        for k, v in marker.get("parameters", {}).items()
        if k not in defaults or defaults[k] != v
    }


def status(profile: str, root: Path | None = None) -> pd.DataFrame:
    """Each chapter's results on ``profile`` (the book's chapters, then any other folder of results
    or staging folder there): ``state`` and why (``detail``).

    * ``current``: complete, and what produced it is what is here now;
    * ``stale``: complete, but ``lcx`` or the notebook changed since it ran (fingerprints of their
      sources, the inputs ``make`` reruns a chapter for, so a chapter the appendix calls stale is
      one ``make book`` reruns; a commit that changes neither, e.g. to the README, leaves results
      current, and an uncommitted edit makes them stale), it ran with parameters other than the
      notebook's defaults, or it read another chapter's results of a run since replaced;
    * ``incomplete``: a folder without a marker (written before markers, or by hand), or only a
      staging folder (a run that failed or is still running);
    * ``missing``: nothing.
    """
    base = (root or results_root()) / profile
    names = chapters()
    names += sorted(
        {
            d.name[1 : -len(".partial")] if d.name.endswith(".partial") else d.name
            for d in (base.iterdir() if base.is_dir() else [])
            if d.is_dir()
            and (
                d.name.startswith(".")
                and d.name.endswith(".partial")
                or any((d / f).is_file() for f in (MARKER, "scorecard.json", "metrics.json"))
            )
        }
        - set(names)
    )
    markers = {name: read_marker(base / name) for name in names}
    now = {"lcx": lcx_fingerprint()}
    rows = []
    for name in names:
        marker = markers[name]
        if marker is None:
            if (base / name).is_dir():
                state, detail = "incomplete", "no run.json (written by an older lcx, or by hand)"
            elif staging_dir(name, profile, root).is_dir():
                state, detail = (
                    "incomplete",
                    "a run started and did not finish (failed, or running)",
                )
            else:
                state, detail = "missing", "not run on this profile"
            rows.append((name, state, detail))
            continue
        reasons = []
        if marker.get("lcx") != now["lcx"]:
            reasons.append("lcx changed since it ran")
        if marker.get("notebook") != notebook_fingerprint(name):
            reasons.append("its notebook changed since it ran")
        custom = custom_parameters(marker)
        if custom:
            shown = ", ".join(f"{k}={v!r}" for k, v in custom.items())
            reasons.append(f"ran with parameters other than the defaults ({shown})")
        for other, run in marker.get("reads", {}).items():
            if (markers.get(other) or read_marker(base / other) or {}).get("run") != run:
                reasons.append(f"read results of {other} that have been replaced or removed since")
        rows.append((name, "stale" if reasons else "current", "; ".join(reasons)))
    import pandas as pd

    return pd.DataFrame(rows, columns=["chapter", "state", "detail"])


def current(profile: str, root: Path | None = None) -> dict[str, Path]:
    """The folders of the chapters whose results on ``profile`` are complete and current
    (:func:`status`), by chapter, in chapter order."""
    base = (root or results_root()) / profile
    table = status(profile, root)
    return {name: base / name for name in table.chapter[table.state == "current"]}


def environments(profile: str, root: Path | None = None) -> pd.DataFrame:
    """The versions each chapter's current run on ``profile`` recorded (one column per chapter:
    complete and current results only, :func:`current`), beside the lock's pins and whether every
    chapter ran on them (``pinned``)."""
    runs = {}
    for name, folder in current(profile, root).items():
        path = folder / "metrics.json"
        recorded = json.loads(path.read_text()).get("environment") if path.is_file() else None
        if recorded:
            runs[name] = recorded
    import pandas as pd

    table = pd.DataFrame(runs, index=["python", *PACKAGES])
    lock = locked_versions()
    table["lock"] = [lock.get(name) for name in table.index]
    chapters = table.drop(columns="lock")
    table["pinned"] = [
        pd.isna(row["lock"]) or bool((chapters.loc[name] == row["lock"]).all())
        for name, row in table.iterrows()
    ]
    return table


def save_metrics(directory: Path, metrics: dict) -> Path:
    """A chapter's metrics, with the :func:`environment` that produced them."""
    return save_json(Path(directory) / "metrics.json", {**metrics, "environment": environment()})


def save_figure(fig, directory: Path, name: str) -> Path:
    path = Path(directory) / f"{name}.png"
    fig.savefig(path, dpi=150, bbox_inches="tight")
    return path


def load_metrics(chapter: str, profile: str) -> dict | None:
    """The ``metrics.json`` of another chapter's last complete run on ``profile`` (None if it has
    none). The reading chapter's marker records which run it read (:func:`publish`)."""
    folder = results_root() / profile / chapter
    marker = read_marker(folder)
    if marker is None or not (folder / "metrics.json").is_file():
        return None
    _READS[chapter] = marker["run"]
    return json.loads((folder / "metrics.json").read_text())
