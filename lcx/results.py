"""Where a chapter's results go: ``results/<profile>/<chapter>/`` (git ignores ``results/``).

Each chapter writes its executed notebook (papermill), a ``metrics.json``, a ``scorecard.json``
and its figures there. ``LCX_RESULTS`` moves the root, e.g. to keep the notebook tests' results
apart from the book's.
"""

from __future__ import annotations

import json
import math
import os
import platform
from importlib import metadata
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent


def results_root() -> Path:
    env = os.environ.get("LCX_RESULTS")
    if env:
        return Path(env).expanduser().resolve()
    # An editable install keeps the project next to the package; otherwise use the working dir.
    return (ROOT if (ROOT / "pyproject.toml").exists() else Path.cwd()) / "results"


def chapter_dir(chapter: str, profile: str) -> Path:
    path = results_root() / profile / chapter
    path.mkdir(parents=True, exist_ok=True)
    return path


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


def environments(profile: str) -> pd.DataFrame:
    """The versions each chapter's last run on ``profile`` recorded (one column per chapter), beside
    the lock's pins and whether every chapter ran on them (``pinned``)."""
    runs = {}
    for path in sorted((results_root() / profile).glob("*/metrics.json")):
        recorded = json.loads(path.read_text()).get("environment")
        if recorded:
            runs[path.parent.name] = recorded
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
    """The ``metrics.json`` another chapter last wrote on ``profile`` (None if it has not run)."""
    path = results_root() / profile / chapter / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else None
