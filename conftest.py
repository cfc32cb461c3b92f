"""Every pytest run here (the unit tests in tests/, nbmake's chapters in notebooks/) keeps its own
cache and results under ``.cache/test/`` (or ``$LCX_TEST_DIR``): never the book's ``.cache/lcx``
and ``results/``, nor a folder a user's ``LCX_CACHE``/``LCX_RESULTS`` points to. Set at import,
before any test starts a kernel or a subprocess, so those inherit it; tests that need an empty
cache still set their own temporary one.
"""

import os
from pathlib import Path

TEST_DIR = Path(os.environ.get("LCX_TEST_DIR") or Path(__file__).parent / ".cache" / "test")
os.environ["LCX_CACHE"] = str((TEST_DIR / "cache").resolve())
os.environ["LCX_RESULTS"] = str((TEST_DIR / "results").resolve())
