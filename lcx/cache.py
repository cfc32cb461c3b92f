"""A content-keyed artifact cache: corpora, tokenizers, checkpoints and evaluations are built once.

An artifact is a folder ``<LCX_CACHE>/<kind>/<key>/`` where the key hashes the artifact's full
config and the keys of the artifacts it was built from, so a changed config or upstream artifact
never reuses a stale result. It is built in a temporary folder and renamed into place (atomic on one
file system), under a file lock so that two chapters running at once never both build it, and it
carries a manifest of its files' sizes and sha256 digests, written (every file hashed) when it is
built. An ordinary load checks the manifest cheaply, each file's presence and size without reading
it, so a truncated or half-deleted artifact is rebuilt, never loaded; re-hashing every file (some
16 GB for an 8B checkpoint) happens only when asked: ``verify=True``, ``LCX_VERIFY=1`` or
:func:`verify`, which also catch a byte changed in place.

Keys follow the code. A config also carries :func:`code_fingerprint` of the lcx modules that
produce the artifact: each module's syntax tree with its docstrings (and any other bare string
statement) removed, comments never being in it. A docstring or comment edit keeps every key; any
other edit to a producing module (a loss, a reader, a generator, a metric) gives new keys to what
it produces and, through the ``inputs``, to everything built from that. Each kind names its
modules where it is built:

* a corpus and its sources, and the tokenized corpus: ``data`` (a hub dataset also ``hub``, its
  pinned commit); a tokenizer: ``models`` (:func:`lcx.models.train_tokenizer`);
* a training run (:func:`lcx.train.run`): ``train``, ``rows``, ``models``, ``attention`` and
  ``rope``, the trainer and its loss, the rows it packs, and the model code it trains (xPos, LoRA
  and QLoRA, the per-document attention); plus ``tasks`` when it packs the task formats itself
  (rows handed to a run are hashed by content, so the code that made them needs no fingerprint);
* an evaluation (:func:`lcx.evaluate.memo`): ``evaluate``, ``models``, ``attention`` and
  ``rope`` (the model as loaded and run), plus ``tasks`` and ``metrics`` for the probe suite and
  the passkey grid; a measurement names its own (``bench``).

The grain is the module, not the function. That is conservative: an edit anywhere in a producing
module recomputes, even in a function this artifact never calls (rope's chapter-01 analysis
retrains the runs, since their xPos attention calls rope). It is also practical: there is no call
graph to get wrong, where one missed edge would be a stale number and one extra module costs a
recompute. Modules that produce no artifact (plots, scorecards, claims, the paper modules'
recipes, whose settings reach the configs) recompute nothing. Outside the fingerprint: the
third-party libraries (the lock pins them; every chapter records their versions) and the
machine's own files (the standard library, man pages: the corpus provenance records them).

The fingerprint is of the source as this process loaded it (read when this module is imported,
which every producing module does as it is imported), not as it is on disk later: a chapter's
kernel keeps running the code it imported, so an edit made while it lives must not give that
code the new code's keys. Such an edit is warned about; restart the process to run it.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import inspect
import json
import os
import shutil
import socket
import textwrap
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock

from .results import ROOT, save_json

MANIFEST = "_manifest.json"


def cache_root() -> Path:
    env = os.environ.get("LCX_CACHE")
    return Path(env).expanduser().resolve() if env else ROOT / ".cache" / "lcx"


def check_writable() -> Path:
    """The cache folder, made and written to once up front: a chapter fails at its first cell,
    naming ``LCX_CACHE``, rather than with a bare PermissionError at its first cache miss."""
    root = cache_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise PermissionError(
            f"the cache folder {root} is not writable ({error.strerror}); set LCX_CACHE to a "
            "folder you can write (it holds corpora, models and evaluations)"
        ) from error
    return root


def key(kind: str, config: dict, inputs: tuple[str, ...] | list[str] = ()) -> str:
    """A short stable hash of a config (JSON, sorted keys) and the keys it depends on."""
    payload = json.dumps(
        {"kind": kind, "config": config, "inputs": list(inputs)}, sort_keys=True, default=str
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


_PACKAGE = Path(__file__).resolve().parent


def _snapshot(path: Path) -> tuple[bytes, int, int]:
    stat = path.stat()
    return path.read_bytes(), stat.st_mtime_ns, stat.st_size


# lcx's sources as this process loaded them (see the module docstring)
_LOADED = {p.name: _snapshot(p) for p in _PACKAGE.glob("*.py")}
_WARNED: set[str] = set()


def _source(module) -> bytes:
    """The source of ``module`` that this process runs: lcx's own as loaded, any other module's
    file as it is now (a test's module, reloaded after an edit)."""
    path = Path(module.__file__).resolve()
    if path.parent == _PACKAGE and path.name in _LOADED:
        source, mtime, size = _LOADED[path.name]
        stat = path.stat()
        if (stat.st_mtime_ns, stat.st_size) != (mtime, size) and path.name not in _WARNED:
            _WARNED.add(path.name)
            warnings.warn(
                f"{path} changed after this process loaded it: cache keys name the code this "
                "process runs, the old code; restart it to run the new code",
                stacklevel=3,
            )
        return source
    return path.read_bytes()


def _is_bare_string(statement: ast.stmt) -> bool:
    return (
        isinstance(statement, ast.Expr)
        and isinstance(statement.value, ast.Constant)
        and isinstance(statement.value.value, str)
    )


_FINGERPRINTS: dict[bytes, str] = {}


def _fingerprint(source: bytes) -> str:
    """The hash of ``source``'s syntax tree without docstrings (nor any other bare string
    statement, which does nothing), line numbers or comments."""
    if source not in _FINGERPRINTS:
        tree = ast.parse(source)
        for node in ast.walk(tree):
            for name, value in ast.iter_fields(node):
                if isinstance(value, list) and any(isinstance(v, ast.stmt) for v in value):
                    setattr(node, name, [v for v in value if not _is_bare_string(v)])
        _FINGERPRINTS[source] = hashlib.sha256(ast.dump(tree).encode()).hexdigest()[:16]
    return _FINGERPRINTS[source]


def code_fingerprint(*modules) -> dict[str, str]:
    """``{module name: fingerprint}`` of the code that produces an artifact, for its config: each
    module (an lcx module's short name such as ``"train"``, a dotted name, or the module) hashed
    from its syntax tree, so that a docstring or comment edit keeps the fingerprint and any other
    edit changes it."""
    out = {}
    for module in modules:
        if isinstance(module, str):
            module = importlib.import_module(module if "." in module else f"{__package__}.{module}")
        out[module.__name__] = _fingerprint(_source(module))
    return dict(sorted(out.items()))


def function_fingerprint(function) -> str:
    """:func:`code_fingerprint`'s hash of one function's code (its syntax tree without its
    docstring or comments), for an artifact that depends on a few functions of a module."""
    return _fingerprint(textwrap.dedent(inspect.getsource(function)).encode())


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)


def is_complete(folder: Path, verify: bool | None = None) -> bool:
    """True when ``folder`` has a manifest and every file it lists is there at its size; with
    ``verify`` (default: ``$LCX_VERIFY`` set and not 0), also at its sha256 digest, every file
    read. The cheap check catches a missing or truncated file but not a byte changed in place
    (same size): only ``verify`` does."""
    if verify is None:
        verify = os.environ.get("LCX_VERIFY", "") not in ("", "0")
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return False
    try:
        entries = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError, TypeError):
        return False
    for rel, meta in entries.items():
        path = folder / rel
        if not path.is_file() or path.stat().st_size != meta["size"]:
            return False
        if verify and _sha256(path) != meta["sha256"]:
            return False
    return True


def verify(kind: str, key: str) -> bool:
    """Whether artifact ``kind``/``key`` (its folder name) is in the cache with every file at the
    digest it was built with: the full check an ordinary load skips."""
    return is_complete(cache_root() / kind / key, verify=True)


def cached(
    kind: str,
    config: dict,
    build: Callable[[Path], None],
    inputs: tuple[str, ...] | list[str] = (),
    verify: bool | None = None,
) -> Path:
    """The folder of artifact ``kind`` for ``config``, built by ``build(tmp_folder)`` if missing.

    ``build`` writes files into the folder it is given; whatever it leaves there becomes the
    artifact. ``inputs`` are the keys (folder names) of upstream artifacts. An existing artifact
    is checked by :func:`is_complete` (file names and sizes; every digest with ``verify`` or
    ``$LCX_VERIFY``); one that fails is rebuilt. The temporary folders that killed builds of it
    left behind are removed when it is built again (:func:`_remove_orphans`).
    """
    folder = cache_root() / kind / key(kind, config, inputs)
    if is_complete(folder, verify):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if is_complete(folder, verify):  # another process built it while we waited
            return folder
        if folder.exists():  # truncated or corrupt: never load it
            shutil.rmtree(folder)
        _remove_orphans(folder)
        tmp = folder.parent / f".{folder.name}.tmp-{socket.gethostname()}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            build(tmp)
            files = {
                str(p.relative_to(tmp)): {"size": p.stat().st_size, "sha256": _sha256(p)}
                for p in _files(tmp)
            }
            save_json(
                tmp / MANIFEST,
                {
                    "kind": kind,
                    "config": config,
                    "inputs": list(inputs),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                    "files": files,
                },
            )
            os.replace(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


# a temporary folder from another machine (or from lcx before folders named their host) is
# removed only once this old: its owner cannot be asked whether it still runs
ORPHAN_AGE_S = 30 * 24 * 3600


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: nothing is sent, only whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _remove_orphans(folder: Path) -> None:
    """Remove the temporary folders (``.<key>.tmp-<host>-<pid>``) that builds of ``folder`` left
    when they were killed: called under the artifact's lock, when it is about to be built again.

    One named for this machine goes when its process is no longer alive (a live one, such as a
    reused pid, is left). A pid means nothing on another machine sharing the cache (a network file
    system), so a folder named for another host, or without a host (lcx before names carried
    one), goes only when untouched for :data:`ORPHAN_AGE_S`. The lock already keeps two builds of
    one artifact apart wherever it works across machines; these checks are for where it does not.
    """
    host, prefix = socket.gethostname(), f".{folder.name}.tmp-"
    for tmp in folder.parent.glob(prefix + "*"):
        owner, _, pid = tmp.name[len(prefix) :].rpartition("-")
        if not pid.isdigit():
            continue
        if owner == host:
            orphan = not _alive(int(pid))
        else:
            try:
                orphan = time.time() - tmp.stat().st_mtime > ORPHAN_AGE_S
            except FileNotFoundError:
                continue
        if orphan:
            shutil.rmtree(tmp, ignore_errors=True)


def manifest(folder: Path) -> dict:
    return json.loads((Path(folder) / MANIFEST).read_text())
