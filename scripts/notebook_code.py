"""Write each chapter's code cells as one plain Python file, for tools that do not read notebooks
(a duplicate-code finder, line counts): ``python scripts/notebook_code.py OUT_DIR``. Prints the
non-blank, non-comment lines of code and the functions each chapter defines."""

import json
import re
import sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent
out = Path(sys.argv[1] if len(sys.argv) > 1 else "notebook_code")
out.mkdir(parents=True, exist_ok=True)
total = 0
for path in sorted((root / "notebooks").glob("*.ipynb")):
    cells = json.loads(path.read_text())["cells"]
    code = "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    (out / f"{path.stem}.py").write_text(code + "\n")
    lines = sum(1 for s in code.splitlines() if s.strip() and not s.strip().startswith("#"))
    total += lines
    defs = re.findall(r"^\s*(?:def|class)\s+(\w+)", code, re.M)
    print(f"{path.stem}: {lines} lines of code; defines {', '.join(defs) or 'nothing'}")
print(f"all chapters: {total} lines of code, in {out}/")
