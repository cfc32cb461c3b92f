"""The scorecard every chapter ends with: claim, the paper's number, ours, scale, verdict.

A verdict is never typed: a row names its claim (the statement and the paper's numbers come from
:mod:`lcx.claims`) and the checks the notebook computed from this run; :func:`verdict` turns the
checks into the verdict, and the checks' names are recorded as the row's rule, so the reader sees
both.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from .results import current, is_staging, publish, save_json, save_metrics

VERDICTS = ("reproduced", "partly", "not reproduced", "not testable at this scale")
# the verdict beside its claim, so a page narrower than the table still shows both
COLUMNS = ["claim", "verdict", "statement", "paper", "ours", "scale", "rule"]


def verdict(checks, testable: bool = True) -> str:
    """``reproduced`` if every check holds, ``partly`` if some do, ``not reproduced`` if none.

    ``checks``: booleans (or a mapping name -> boolean) computed from this run's metrics.
    """
    values = list(checks.values()) if isinstance(checks, dict) else list(checks)
    if not testable:
        return "not testable at this scale"
    if not values:
        raise ValueError("verdict needs at least one check")
    passed = sum(bool(v) for v in values)
    return "reproduced" if passed == len(values) else "partly" if passed else "not reproduced"


def beats_in_every_seed(
    results: pd.DataFrame, a: str, b: str, col="avg", lower: bool = False
) -> bool:
    """Whether model ``a`` beats model ``b`` on ``col`` in every seed: ``results`` has one row
    per model and seed (columns ``model``, ``seed``, ``col``); the two are compared seed by seed
    (same seed, same evaluation examples), so an ordering that holds only in the mean over seeds
    does not count. Higher is better, or lower with ``lower``; a list ``col`` is averaged per
    row first. Raises if the two were not run on the same seeds."""

    def per_seed(name):
        rows = results[results["model"] == name].set_index("seed")
        return rows[col].mean(axis=1) if isinstance(col, list) else rows[col]

    x, y = per_seed(a), per_seed(b)
    if x.empty or set(x.index) != set(y.index):
        raise ValueError(f"{a!r} (seeds {sorted(x.index)}) and {b!r} (seeds {sorted(y.index)})")
    d = x - y.loc[x.index]
    return bool(((d < 0) if lower else (d > 0)).all())


@dataclass
class Row:
    claim: str
    statement: str
    paper: str
    ours: str
    scale: str
    verdict: str
    rule: str


class Scorecard:
    """Rows of one chapter; ``save`` writes ``scorecard.json`` beside the chapter's metrics."""

    def __init__(self, chapter: str, profile: str):
        self.chapter, self.profile, self.rows = chapter, profile, []

    def add(
        self,
        claim: str,
        ours,
        scale: str,
        checks: dict,
        testable: bool = True,
        note: str = "",
        rule: str | None = None,
    ) -> Row:
        """The row of ``claim``, an id of :data:`lcx.claims.CLAIMS` (its statement and the paper's
        numbers come from there). ``ours``: this run's numbers; ``checks``: name -> whether it
        holds, computed from this run's metrics. The verdict is :func:`verdict` of the checks and
        ``testable``; the rule shown is the checks' names joined by ``"; "`` and ``note`` (e.g.
        when the claim is testable). With no checks on this profile, pass ``testable=False`` and
        ``rule`` (why nothing was checked)."""
        from .claims import CLAIMS  # the registry quotes the paper modules' tables

        if claim not in CLAIMS:
            raise ValueError(f"claim {claim!r} is not in lcx.claims.CLAIMS")
        if any(r.claim == claim for r in self.rows):
            raise ValueError(f"claim {claim!r} is already on the scorecard")
        stated = CLAIMS[claim]
        rule = "; ".join(checks) + note if checks or rule is None else rule
        row = Row(
            claim,
            stated.statement,
            stated.paper,
            str(ours),
            scale,
            verdict(checks, testable),
            rule,
        )
        self.rows.append(row)
        return row

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame([asdict(r) for r in self.rows], columns=COLUMNS)

    def save(self, directory: Path, metrics: dict | None = None) -> pd.DataFrame:
        """Write ``scorecard.json`` into ``directory`` and, given the chapter's ``metrics``,
        ``metrics.json`` with the environment that produced them (:func:`lcx.results.save_metrics`);
        returns :meth:`frame`, the table a chapter ends with.

        A chapter's last step: when ``directory`` is the chapter's staging folder
        (:func:`lcx.results.chapter_dir`), its results are then published whole
        (:func:`lcx.results.publish`: the marker, and the folder renamed into place)."""
        if not Path(directory).is_dir():
            raise FileNotFoundError(
                f"{directory} does not exist: a chapter saves its scorecard once, and that save "
                "published its results; rerun the chapter from the top to save again"
            )
        staging = is_staging(directory)
        rows = [asdict(r) for r in self.rows]
        data = {"chapter": self.chapter, "profile": self.profile, "rows": rows}
        save_json(Path(directory) / "scorecard.json", data)
        if metrics is not None:
            save_metrics(directory, metrics)
        if staging:
            publish(directory)
        return self.frame()


def collect(profile: str, root: Path | None = None) -> pd.DataFrame:
    """The scorecards of every chapter whose results on ``profile`` are complete and current, as
    one table in chapter order (under ``root``, default :func:`lcx.results.results_root`). The
    others are left out; :func:`lcx.results.status` says which and why."""
    frames = []
    for folder in current(profile, root).values():
        path = folder / "scorecard.json"
        if not path.is_file():
            continue
        data = json.loads(path.read_text())
        frame = pd.DataFrame(data["rows"], columns=COLUMNS)
        frame.insert(0, "chapter", data["chapter"])
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=["chapter", *COLUMNS])
    return pd.concat(frames, ignore_index=True)


def seed_ranges(results: pd.DataFrame, names, col: str = "avg") -> str:
    """``"name mean [min, max]"`` of ``col`` over the seeds of each model in ``names`` that has
    rows in ``results`` (one row per model and seed), for a scorecard's ``ours``."""
    parts = []
    for name in names:
        per_seed = results[results.model == name][col]
        if len(per_seed):
            parts.append(
                f"{name} {per_seed.mean():.3f} [{per_seed.min():.3f}, {per_seed.max():.3f}]"
            )
    return ", ".join(parts)
