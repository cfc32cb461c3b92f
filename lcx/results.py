"""Where a chapter's results go: ``results/<profile>/<chapter>/`` (git ignores ``results/``).

Each chapter writes its executed notebook (papermill), a ``metrics.json``, a ``scorecard.json``
and its figures there. ``LCX_RESULTS`` moves the root, e.g. to keep the notebook tests' results
apart from the book's.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

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


def save_metrics(directory: Path, metrics: dict) -> Path:
    return save_json(Path(directory) / "metrics.json", metrics)


def save_figure(fig, directory: Path, name: str) -> Path:
    path = Path(directory) / f"{name}.png"
    fig.savefig(path, dpi=150, bbox_inches="tight")
    return path


def load_metrics(chapter: str, profile: str) -> dict | None:
    """The ``metrics.json`` another chapter last wrote on ``profile`` (None if it has not run)."""
    path = results_root() / profile / chapter / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else None
