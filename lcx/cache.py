"""A content-keyed artifact cache: corpora, tokenizers, checkpoints and evaluations are built once.

An artifact is a folder ``<LCX_CACHE>/<kind>/<key>/`` where the key hashes the artifact's full
config and the keys of the artifacts it was built from, so a changed config or upstream artifact
never reuses a stale result. It is built in a temporary folder and renamed into place (atomic on one
file system), under a file lock so that two chapters running at once never both build it, and it
carries a manifest of its files' sizes and sha256 digests, checked on every load: a truncated or
corrupt artifact is rebuilt, never loaded.
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


def is_complete(folder: Path) -> bool:
    """True when ``folder`` has a manifest and every file in it matches size and digest."""
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return False
    try:
        entries = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError):
        return False
    for rel, meta in entries.items():
        path = folder / rel
        if (
            not path.is_file()
            or path.stat().st_size != meta["size"]
            or _sha256(path) != meta["sha256"]
        ):
            return False
    return True


def cached(
    kind: str,
    config: dict,
    build: Callable[[Path], None],
    inputs: tuple[str, ...] | list[str] = (),
) -> Path:
    """The folder of artifact ``kind`` for ``config``, built by ``build(tmp_folder)`` if missing.

    ``build`` writes files into the folder it is given; whatever it leaves there becomes the
    artifact. ``inputs`` are the keys (folder names) of upstream artifacts.
    """
    folder = cache_root() / kind / key(kind, config, inputs)
    if is_complete(folder):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if is_complete(folder):  # another process built it while we waited
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
