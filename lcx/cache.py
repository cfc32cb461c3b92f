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
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
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
    ``$LCX_VERIFY``); one that fails is rebuilt.
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
        tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
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


def manifest(folder: Path) -> dict:
    return json.loads((Path(folder) / MANIFEST).read_text())
