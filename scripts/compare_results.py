"""Compare two results folders leaf by leaf: ``python scripts/compare_results.py A B [SKIP,...]``.

Every ``*.json`` under ``A`` (a chapter's ``metrics.json`` and ``scorecard.json``) is read with
its twin under ``B`` and each leaf compared exactly (bit for bit for floats). Paths containing one
of the comma-separated ``SKIP`` words are left out (e.g. ``environment`` or measured timings such
as ``t6,q6/measured,p8/measured,p8/simulated,seconds``). Prints a line per file and the first
differing leaves; exits with the number of files that differ. Used to show that a refactoring
keeps the book's numbers: run each side from an empty ``LCX_CACHE`` into its own ``LCX_RESULTS``.
"""

import json
import sys
from pathlib import Path


def leaves(x, path=""):
    if isinstance(x, dict):
        for k, v in x.items():
            yield from leaves(v, f"{path}/{k}")
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from leaves(v, f"{path}[{i}]")
    else:
        yield path, x


def main(a: Path, b: Path, skip: set[str]) -> int:
    bad = 0
    for f in sorted(a.rglob("*.json")):
        g = b / f.relative_to(a)
        if not g.exists():
            print("missing", g)
            bad += 1
            continue
        la, lb = dict(leaves(json.loads(f.read_text()))), dict(leaves(json.loads(g.read_text())))
        diffs = sorted(
            k
            for k in set(la) | set(lb)
            if la.get(k, "<none>") != lb.get(k, "<none>") and not any(s in k for s in skip)
        )
        print(f.relative_to(a), "identical" if not diffs else f"{len(diffs)} of {len(la)} differ")
        for k in diffs[:8]:
            print("   ", k, repr(la.get(k, "<none>"))[:80], "->", repr(lb.get(k, "<none>"))[:80])
        bad += bool(diffs)
    return bad


if __name__ == "__main__":
    skip = set(filter(None, sys.argv[3].split(","))) if len(sys.argv) > 3 else set()
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2]), skip))
