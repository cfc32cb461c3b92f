"""The plan of a profile's runs, fixed before they run (issue 19, item 3).

From a finished build's scorecards, :func:`make` projects every empirical part's detectable effect
to :data:`SEEDS` seeds at the spread that build measured (:func:`lcx.claims.power_table`) and
records whether the effect the part must reach (its minimum effect, or an equivalence part's
margin) is then within reach. The plan is data, committed as ``lcx/plans/<profile>.json`` with the
commit whose results it read (``scripts/make_plan.py`` writes it), so it is fixed before the runs
it plans. A chapter then runs an arm when some part within reach needs it (or a part the plan does
not know: one never measured on two seeds), and skips an arm that only out-of-reach parts use,
with the plan's numbers as the reason (:func:`skipped`). A part whose arms ran anyway is judged as
ever: the plan decides what is run, never a verdict.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from . import claims as registry
from .verdicts import PLAN_SEEDS

PLANS = Path(__file__).with_name("plans")
SEEDS = PLAN_SEEDS[0]  # the seeds per arm a plan projects to (the cpu profile's chapter.SEEDS)


def make(parts, commit: str, seeds: int = SEEDS) -> dict:
    """The plan from :func:`lcx.scorecard.collect_parts`' table of a build at ``commit``: one entry
    per empirical part measured on two seeds or more (claim, part, the effect it must reach, the
    detectable effect measured and projected to ``seeds`` seeds, in reach or not), and one per
    empirical part that build could not measure at all (not testable with no effect, e.g. none of
    its tasks passes the base's gate: out of reach, with that reason)."""
    from .verdicts import NOT_TESTABLE

    table = registry.power_table(parts, (seeds,))
    at = f"at {seeds} seeds"
    unmeasured = parts[
        (parts["kind"] == "empirical") & (parts["verdict"] == NOT_TESTABLE) & parts["effect"].isna()
    ]
    return {
        "commit": commit,
        "seeds": seeds,
        "parts": [
            {
                "claim": r["claim"],
                "part": r["part"],
                "needs": float(r["needs"]),
                "measured_seeds": int(r["seeds"]),
                "detectable": float(r["detectable"]),
                "projected": float(r[at]),
                "in_reach": bool(r[f"in reach {at}"]),
            }
            for r in table.to_dict("records")
        ]
        + [
            {"claim": r["claim"], "part": r["part"], "in_reach": False, "not_testable": r["reason"]}
            for r in unmeasured.to_dict("records")
        ],
    }


def load(profile: str) -> dict | None:
    """The committed plan of ``profile`` (None: the profile has none, and every arm runs)."""
    path = PLANS / f"{profile}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _entries(plan: dict | None, claim: str) -> dict:
    if claim not in registry.CLAIMS:
        raise ValueError(f"claim {claim!r} is not in lcx.claims.CLAIMS")
    return {e["part"]: e for e in (plan or {}).get("parts", []) if e["claim"] == claim}


def reason(plan: dict, entry: dict) -> str:
    """Why a part is out of reach, in the plan's numbers."""
    if "not_testable" in entry:
        return f"not testable in the plan's build ({plan['commit'][:7]}): {entry['not_testable']}"
    return (
        f"out of reach by the plan (lcx/plans, from the results at {plan['commit'][:7]}): "
        f"detectable effect {entry['projected']:.3g} at {plan['seeds']} seeds (measured "
        f"{entry['detectable']:.3g} at {entry['measured_seeds']}), above the {entry['needs']:.3g} "
        "it must reach"
    )


def out_of_reach(plan: dict | None, claim: str) -> dict[str, str]:
    """``claim``'s parts the plan puts out of reach: part name -> :func:`reason`."""
    return {name: reason(plan, e) for name, e in _entries(plan, claim).items() if not e["in_reach"]}


def skipped(plan: dict | None, claims, also=()) -> dict[str, str]:
    """The arms of ``claims``' empirical parts that only out-of-reach parts use: arm -> why it is
    not run. An arm that any other part of these claims names (in reach, or unknown to the plan)
    runs. ``also``: arms the chapter would run that no part names (e.g. an ablation only a figure
    shows), skipped too under a plan. Without a plan, nothing is skipped."""
    if plan is None:
        return {}
    needed, unneeded = set(), {}
    for claim in claims:
        out = out_of_reach(plan, claim)
        for part in registry.CLAIMS[claim].parts:
            if part.kind != "empirical":
                continue
            if part.name in out:
                for arm in part.arms:
                    unneeded.setdefault(arm, []).append(f"{claim} {part.name!r}")
            else:
                needed.update(part.arms)
    out = {
        arm: "not run: only parts out of reach by the plan use it (" + ", ".join(users) + ")"
        for arm, users in unneeded.items()
        if arm not in needed
    }
    for arm in also:
        if arm not in needed and arm not in out:
            out[arm] = f"not run: no part of {', '.join(claims)} in reach by the plan uses it"
    return out


def versus(plan: dict | None, parts) -> pd.DataFrame:
    """The plan beside the build it planned: each planned part's effect to reach, projected
    detectable effect and whether it was in reach, then what this build measured
    (:func:`lcx.scorecard.collect_parts`' table: seeds, detectable effect, verdict). Empty
    without a plan."""
    columns = ["claim", "part", "needs", "projected", "in_reach"]
    planned = pd.DataFrame((plan or {}).get("parts", []), columns=[*columns, "not_testable"])
    measured = parts[["claim", "part", "n_seeds", "detectable_effect", "verdict"]]
    out = planned[columns].merge(measured, on=["claim", "part"], how="left")
    return out.rename(columns={"projected": f"planned at {(plan or {}).get('seeds')} seeds"})
