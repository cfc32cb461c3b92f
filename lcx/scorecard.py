"""The scorecard every chapter ends with: claim, verdict, the paper's numbers, ours, scale, and
every part of the claim with its effect, interval and verdict.

A verdict is never typed: a row names its claim (:mod:`lcx.claims` holds its statement, the
paper's numbers and its parts with their pre-registered thresholds), the chapter hands over this
run's results part by part (:meth:`Scorecard.judge`), and :mod:`lcx.verdicts` computes each part's
verdict and the claim's.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from . import verdicts
from .results import current, is_staging, publish, save_json, save_metrics

VERDICTS = verdicts.VERDICTS
# the verdict beside its claim, so a page narrower than the table still shows both
COLUMNS = ["claim", "verdict", "statement", "paper", "ours", "scale", "rule", "source"]


@dataclass
class Row:
    claim: str
    statement: str
    paper: str  # the paper's numbers, as the registry quotes them
    ours: str
    scale: str
    verdict: str
    rule: str
    source: str = ""
    parts: list = field(default_factory=list)  # one dict per part (see Scorecard.judge)


def _fmt(x: float) -> str:
    return "nan" if x != x else f"{x + 0.0:+.3g}" if x else "0"  # no "-0"


def judge_part(part, result, gate=None) -> dict:
    """The scorecard entry of one part of a claim (:class:`lcx.claims.Part`): an empirical part's
    ``result`` is its results table (columns ``arm``, ``seed``, ``example``, ``value``; the arms
    named in the registry), judged by :mod:`lcx.verdicts`; a recipe or arithmetic part's is
    ``(holds, ours)``; a string is the reason the part was not run here."""
    entry = {"part": part.name, "kind": part.kind, "says": part.says}
    if isinstance(result, str):
        return entry | {"metric": part.metric, "verdict": verdicts.NOT_TESTABLE, "reason": result}
    if part.kind != "empirical":
        holds, ours = result
        return entry | {"holds": bool(holds), "ours": str(ours)}
    est = verdicts.estimate(result, *part.arms, direction=part.direction)
    lo, hi = est.interval()
    verdict, reason = verdicts.part_verdict(est, part.min_effect, part.margin, part.floor, gate)
    return entry | {
        "metric": part.metric,
        "arms": list(part.arms),
        "means": est.means,
        "effect": est.effect,
        "ci_low": lo,
        "ci_high": hi,
        "min_effect": part.min_effect,
        "margin": part.margin,
        "detectable_effect": est.detectable(),
        "paper_effect": part.paper_effect,
        "n_seeds": est.n_seeds,
        "n_examples": est.n_examples,
        "seed_var": est.seed_var,  # the variance components, for a plan of the next run
        "example_var": est.example_var,
        "crossed": est.crossed,
        "verdict": verdict,
        "reason": reason,
    }


class Scorecard:
    """Rows of one chapter; ``save`` writes ``scorecard.json`` beside the chapter's metrics."""

    def __init__(
        self,
        chapter: str,
        profile: str,
        base_gate: tuple[bool, str] | None = None,
        plan: dict | None = None,
    ):
        """``base_gate``: ``(passed, reason)`` of the base model every run of the chapter starts
        from (:func:`lcx.pretrained.base_gate`); when it failed, every empirical part that
        measures a trained model (``Part.on_base``) is not testable, with its reason. ``plan``:
        the runs' plan (:func:`lcx.plan.load`); a part it put out of reach and that was not run
        says so with the plan's numbers (a part whose arms ran is judged as any other)."""
        self.chapter, self.profile, self.rows = chapter, profile, []
        self.base_gate, self.plan = base_gate, plan

    def _claim(self, claim: str):
        from .claims import CLAIMS  # the registry quotes the paper modules' tables

        if claim not in CLAIMS:
            raise ValueError(f"claim {claim!r} is not in lcx.claims.CLAIMS")
        if CLAIMS[claim].chapter != self.chapter:
            raise ValueError(
                f"claim {claim!r} belongs to {CLAIMS[claim].chapter}, not {self.chapter}"
            )
        if any(r.claim == claim for r in self.rows):
            raise ValueError(f"claim {claim!r} is already on the scorecard")
        return CLAIMS[claim]

    def judge(
        self,
        claim: str,
        results: dict | None = None,
        scale: str = "",
        gates: dict | None = None,
        ours: str | None = None,
    ) -> Row:
        """The row of ``claim`` (an id of :data:`lcx.claims.CLAIMS`), every part judged from this
        run's ``results``: part name -> its results table (empirical), ``(holds, ours)`` (recipe,
        arithmetic) or the reason it was not run on this profile (a string). ``gates``: part name
        -> ``(passed, reason)``. The claim's verdict combines the parts' by
        :data:`lcx.verdicts.CLAIM_RULE`; ``ours`` defaults to each part's effect and interval."""
        stated = self._claim(claim)
        results, gates = results or {}, gates or {}
        names = [p.name for p in stated.parts]
        if not names:
            raise ValueError(f"claim {claim!r} has no parts in lcx.claims")
        missing, extra = set(names) - set(results), set(results) | set(gates)
        extra -= set(names)
        if missing or extra:
            raise ValueError(
                f"{claim}: results for parts {names}; missing {sorted(missing)}, unknown {sorted(extra)}"
            )
        from .plan import out_of_reach  # the plan reads the registry, which the modules fill

        out = out_of_reach(self.plan, claim)
        results = {
            k: f"{out[k]}; {v}" if isinstance(v, str) and k in out and v not in out[k] else v
            for k, v in results.items()
        }
        parts = [judge_part(p, results[p.name], self._gate(p, gates)) for p in stated.parts]
        empirical = [e["verdict"] for e in parts if e["kind"] == "empirical"]
        arithmetic = [e["holds"] for e in parts if e["kind"] == "arithmetic"]
        recipe = [e["holds"] for e in parts if e["kind"] == "recipe"]
        if ours is None:
            ours = "; ".join(
                f"{e['part']}: {e['ours']}"
                if "ours" in e
                else f"{e['part']}: {_fmt(e['effect'])} [{_fmt(e['ci_low'])}, {_fmt(e['ci_high'])}]"
                if "effect" in e
                else f"{e['part']}: not run"
                for e in parts
            )
        row = Row(
            claim,
            stated.statement,
            stated.numbers,
            ours,
            scale,
            verdicts.claim_verdict(empirical, arithmetic, recipe),
            verdicts.CLAIM_RULE,
            stated.source,
            parts,
        )
        self.rows.append(row)
        return row

    def _gate(self, part, gates: dict):
        """The part's own gate, or the base model's when that failed and the part measures a
        model trained from it."""
        base = self.base_gate
        if part.kind == "empirical" and part.on_base and base is not None and not base[0]:
            own = gates.get(part.name)
            if own is None or own[0]:
                return False, f"base model: {base[1]}"
        return gates.get(part.name)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame([asdict(r) for r in self.rows], columns=COLUMNS)

    def parts(self) -> pd.DataFrame:
        """One row per part of every claim judged so far (:func:`parts_table`)."""
        return parts_table([asdict(r) for r in self.rows])

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


PART_COLUMNS = [
    "claim",
    "part",
    "kind",
    "verdict",
    "metric",
    "effect",
    "ci_low",
    "ci_high",
    "min_effect",
    "margin",
    "detectable_effect",
    "paper_effect",
    "n_seeds",
    "n_examples",
    "seed_var",
    "example_var",
    "crossed",
    "holds",
    "ours",
    "reason",
]


def parts_table(rows: list[dict]) -> pd.DataFrame:
    """Scorecard rows (dicts, as saved) -> one row per part, the columns of :data:`PART_COLUMNS`."""
    flat = [{"claim": r["claim"], **p} for r in rows for p in r.get("parts", [])]
    return pd.DataFrame(flat, columns=PART_COLUMNS)


def _saved(profile: str, root: Path | None):
    for folder in current(profile, root).values():
        path = folder / "scorecard.json"
        if path.is_file():
            yield json.loads(path.read_text())


def collect(profile: str, root: Path | None = None) -> pd.DataFrame:
    """The scorecards of every chapter whose results on ``profile`` are complete and current, as
    one table in chapter order (under ``root``, default :func:`lcx.results.results_root`). The
    others are left out; :func:`lcx.results.status` says which and why."""
    frames = []
    for data in _saved(profile, root):
        frame = pd.DataFrame(data["rows"], columns=COLUMNS)
        frame.insert(0, "chapter", data["chapter"])
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=["chapter", *COLUMNS])
    return pd.concat(frames, ignore_index=True)


def collect_parts(profile: str, root: Path | None = None) -> pd.DataFrame:
    """Every part of every claim in the complete, current scorecards (:func:`parts_table`)."""
    rows = [r for data in _saved(profile, root) for r in data["rows"]]
    return parts_table(rows)
