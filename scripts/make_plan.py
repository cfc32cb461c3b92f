"""Write a profile's plan: ``python scripts/make_plan.py [PROFILE] [RESULTS]``.

Reads every chapter's ``scorecard.json`` under ``RESULTS/PROFILE`` (default ``results/cpu``), which
must all come from one clean commit (their ``run.json``), and writes ``lcx/plans/PROFILE.json``
(:func:`lcx.plan.make`): for each empirical part, the detectable effect projected to
:data:`lcx.plan.SEEDS` seeds and whether the effect it must reach is then within reach. Commit the
file before the runs it plans.
"""

import json
import sys
from pathlib import Path

from lcx import plan
from lcx.scorecard import parts_table

profile = sys.argv[1] if len(sys.argv) > 1 else "cpu"
root = Path(sys.argv[2] if len(sys.argv) > 2 else "results") / profile
rows, commits = [], set()
for card in sorted(root.glob("*/scorecard.json")):
    run = json.loads((card.parent / "run.json").read_text())
    if run.get("dirty") is not False:
        sys.exit(f"{card.parent} ran with uncommitted changes to lcx or notebooks: no plan from it")
    commits.add(run["commit"])
    rows += json.loads(card.read_text())["rows"]
if len(commits) != 1:
    sys.exit(f"the scorecards under {root} come from {len(commits)} commits: {sorted(commits)}")
made = plan.make(parts_table(rows), commits.pop())
out = plan.PLANS / f"{profile}.json"
out.write_text(json.dumps(made, indent=1) + "\n")
reach = sum(e["in_reach"] for e in made["parts"])
print(f"{out}: {reach} of {len(made['parts'])} parts in reach at {made['seeds']} seeds")
