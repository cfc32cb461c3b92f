import builtins
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from lcx import cache


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LCX_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("LCX_VERIFY", raising=False)
    return tmp_path / "cache"


def writer(text, calls):
    def build(folder):
        calls.append(folder)
        (folder / "data.txt").write_text(text)
        (folder / "sub").mkdir()
        (folder / "sub" / "more.bin").write_bytes(b"\x00\x01" * 100)

    return build


def test_built_once_then_reused():
    calls = []
    first = cache.cached("corpus", {"n": 1}, writer("a", calls))
    second = cache.cached("corpus", {"n": 1}, writer("a", calls))
    assert first == second and len(calls) == 1
    assert (first / "data.txt").read_text() == "a"
    assert cache.manifest(first)["config"] == {"n": 1}


def test_changed_config_or_input_gives_a_new_artifact():
    calls = []
    a = cache.cached("model", {"lr": 1e-3}, writer("a", calls), inputs=["tok-1"])
    b = cache.cached("model", {"lr": 2e-3}, writer("b", calls), inputs=["tok-1"])
    c = cache.cached("model", {"lr": 1e-3}, writer("c", calls), inputs=["tok-2"])
    assert len({a, b, c}) == 3 and len(calls) == 3
    # Key order in the config does not matter; values do.
    assert cache.key("k", {"a": 1, "b": 2}) == cache.key("k", {"b": 2, "a": 1})
    assert cache.key("k", {"a": 1}) != cache.key("k", {"a": 1.5})


@pytest.mark.parametrize("damage", ["truncate", "delete", "manifest"])
def test_truncated_or_missing_files_are_caught_on_every_load(damage):
    """The cheap check an ordinary load makes (names and sizes against the manifest) catches a
    truncated file, a missing one and a broken manifest: the artifact is rebuilt, never loaded."""
    calls = []
    folder = cache.cached("ckpt", {"x": 1}, writer("payload", calls))
    target = folder / "sub" / "more.bin"
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[:50])
    elif damage == "delete":
        target.unlink()
    else:
        (folder / cache.MANIFEST).write_text("{not json")
    assert not cache.is_complete(folder)
    again = cache.cached("ckpt", {"x": 1}, writer("payload", calls))
    assert len(calls) == 2 and cache.is_complete(again, verify=True)
    assert (again / "sub" / "more.bin").read_bytes() == b"\x00\x01" * 100


def flip_a_byte(folder):
    target = folder / "sub" / "more.bin"
    data = bytearray(target.read_bytes())
    data[3] ^= 0xFF
    target.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["argument", "env", "function"])
def test_a_byte_changed_in_place_is_caught_by_the_full_check_only(how, monkeypatch):
    """Same size, other content: the cheap check passes it, the full check (digests) does not,
    however it is asked for, and a verifying load rebuilds it."""
    calls = []
    folder = cache.cached("ckpt", {"x": 1}, writer("payload", calls))
    flip_a_byte(folder)
    assert cache.is_complete(folder)  # names and sizes only: the cheap check cannot see it
    assert cache.cached("ckpt", {"x": 1}, writer("payload", calls)) == folder and len(calls) == 1
    if how == "argument":
        assert not cache.is_complete(folder, verify=True)
        again = cache.cached("ckpt", {"x": 1}, writer("payload", calls), verify=True)
    elif how == "env":
        monkeypatch.setenv("LCX_VERIFY", "1")
        assert not cache.is_complete(folder)
        again = cache.cached("ckpt", {"x": 1}, writer("payload", calls))
    else:
        assert not cache.verify("ckpt", folder.name)
        again = cache.cached("ckpt", {"x": 1}, writer("payload", calls), verify=True)
    assert len(calls) == 2 and cache.verify("ckpt", again.name)
    assert (again / "sub" / "more.bin").read_bytes() == b"\x00\x01" * 100


def test_an_ordinary_load_reads_no_file_contents(monkeypatch):
    """Loading a built artifact opens its manifest and nothing else, and hashes nothing (an 8B
    checkpoint is some 16 GB to read); a verifying load reads every file."""
    folder = cache.cached("ckpt", {"x": 1}, writer("payload", []))
    opened, hashed = [], []
    real_open, real_sha = builtins.open, cache._sha256

    def spy_open(file, *args, **kwargs):
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    def spy_sha(path):
        hashed.append(path.name)
        return real_sha(path)

    monkeypatch.setattr(builtins, "open", spy_open)
    monkeypatch.setattr(io, "open", spy_open)  # pathlib's read_text/open go through io.open
    monkeypatch.setattr(cache, "_sha256", spy_sha)
    assert cache.cached("ckpt", {"x": 1}, writer("payload", [])) == folder
    assert opened == [str(folder / cache.MANIFEST)] and hashed == []
    assert cache.is_complete(folder, verify=True)
    assert sorted(hashed) == ["data.txt", "more.bin"]


def test_artifacts_built_before_cheap_checks_still_load():
    """A cache written by the earlier lcx (the same manifest: size and sha256 per file, written
    out here by hand) loads as it is, without a rebuild."""
    import hashlib

    config = {"x": 2}
    folder = cache.cache_root() / "ckpt" / cache.key("ckpt", config)
    (folder / "sub").mkdir(parents=True)
    (folder / "data.txt").write_text("old")
    (folder / "sub" / "more.bin").write_bytes(b"\x07" * 9)
    files = {
        rel: {
            "size": (folder / rel).stat().st_size,
            "sha256": hashlib.sha256((folder / rel).read_bytes()).hexdigest(),
        }
        for rel in ("data.txt", "sub/more.bin")
    }
    manifest = {
        "kind": "ckpt",
        "config": config,
        "inputs": [],
        "created": "2026-01-01T00:00:00",
        "files": files,
    }
    (folder / cache.MANIFEST).write_text(json.dumps(manifest, indent=2))
    calls = []
    assert cache.cached("ckpt", config, writer("new", calls)) == folder and calls == []
    assert (folder / "data.txt").read_text() == "old" and cache.verify("ckpt", folder.name)


def test_failed_build_leaves_nothing_behind(cache_dir):
    def broken(folder):
        (folder / "half.txt").write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        cache.cached("corpus", {"n": 2}, broken)
    leftovers = [p.name for p in (cache_dir / "corpus").iterdir() if not p.name.endswith(".lock")]
    assert leftovers == []


def test_a_killed_builds_temporary_folder_goes_at_the_next_build(cache_dir):
    """A build killed outright (SIGKILL: no ``finally`` runs) leaves its temporary folder; the
    next build of that artifact removes it, its process being dead on this machine."""
    script = f"""
import os, signal, sys
sys.path.insert(0, {str(__import__("lcx").__path__[0] + "/..")!r})
os.environ["LCX_CACHE"] = {str(cache_dir)!r}
from lcx import cache
def build(folder):
    (folder / "half.bin").write_bytes(b"x" * 100)
    os.kill(os.getpid(), signal.SIGKILL)
cache.cached("corpus", {{"n": 4}}, build)
"""
    killed = subprocess.run([sys.executable, "-c", script], timeout=60)
    assert killed.returncode == -signal.SIGKILL
    assert [p.name for p in (cache_dir / "corpus").glob(".*.tmp-*")] != []
    folder = cache.cached("corpus", {"n": 4}, writer("whole", []))
    assert cache.is_complete(folder) and list((cache_dir / "corpus").glob(".*.tmp-*")) == []


def test_only_the_temporary_folders_of_dead_builds_are_removed(cache_dir):
    """A temporary folder is named for its host and process. One of a dead process on this
    machine goes; a live one stays (a pid reused, or a build whose lock does not hold across
    machines); one from another machine, or from lcx before names carried a host, whose process
    cannot be asked about, goes only when untouched for ORPHAN_AGE_S."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    key = cache.key("corpus", {"n": 5})
    here = socket.gethostname()
    old = time.time() - cache.ORPHAN_AGE_S - 60
    tmps = {
        f"{here}-{dead.pid}": (None, False),
        f"{here}-{os.getppid()}": (None, True),  # alive: the process that started pytest
        f"elsewhere.example.org-{dead.pid}": (None, True),
        f"elsewhere.example.org-{os.getppid()}": (old, False),
        f"{dead.pid}": (None, True),  # no host
        f"{os.getppid()}": (old, False),
    }
    for owner, (mtime, _) in tmps.items():
        tmp = cache_dir / "corpus" / f".{key}.tmp-{owner}"
        (tmp / "sub").mkdir(parents=True)
        if mtime:
            os.utime(tmp, (mtime, mtime))
    cache.cached("corpus", {"n": 5}, writer("whole", []))
    kept = {p.name.split(".tmp-")[1] for p in (cache_dir / "corpus").glob(".*.tmp-*")}
    assert kept == {owner for owner, (_, stays) in tmps.items() if stays}


def test_two_processes_build_once(cache_dir, tmp_path):
    """Two processes asking for the same artifact at once: one builds, the other waits and reuses."""
    log = tmp_path / "builds.log"
    script = f"""
import os, sys, time
sys.path.insert(0, {str(__import__("lcx").__path__[0] + "/..")!r})
os.environ["LCX_CACHE"] = {str(cache_dir)!r}
from lcx import cache
def build(folder):
    with open({str(log)!r}, "a") as f:
        f.write(str(os.getpid()) + "\\n")
    time.sleep(1.0)
    (folder / "x.txt").write_text("done")
print(cache.cached("shared", {{"v": 1}}, build))
"""
    procs = [
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outs[0] == outs[1]
    assert len(log.read_text().split()) == 1
    manifest = json.loads(
        (cache_dir / "shared" / outs[0].split("/")[-1] / cache.MANIFEST).read_text()
    )
    assert "x.txt" in manifest["files"]


PRODUCER = '''"""A producer of artifacts."""

SCALE = 2


def loss(x):
    """The loss."""
    return SCALE * x * x  # squared
'''


def test_code_fingerprint_follows_the_code_not_its_docstrings_or_comments(tmp_path, monkeypatch):
    """A module's fingerprint is its syntax tree's: a docstring or comment edit (lines shifted
    too) keeps it, a change to a function's body, a constant or a new function does not."""
    import importlib

    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / "producer.py"
    path.write_text(PRODUCER)
    producer = importlib.import_module("producer")
    first = cache.code_fingerprint(producer)
    assert list(first) == ["producer"] and cache.code_fingerprint(producer) == first
    kept = [
        PRODUCER.replace("A producer of artifacts.", "Makes artifacts, one per config."),
        PRODUCER.replace(
            '"""The loss."""', '"""The loss, squared.\n\n    Many more words.\n    """'
        ),
        PRODUCER.replace("# squared", "# the square, scaled"),
        "# a header comment\n\n\n" + PRODUCER.replace("    return", "    # why\n    return"),
    ]
    changed = [
        PRODUCER.replace("x * x", "x * abs(x)"),
        PRODUCER.replace("SCALE = 2", "SCALE = 3"),
        PRODUCER + "\n\ndef other():\n    return 1\n",
    ]
    for text in kept:
        path.write_text(text)
        assert cache.code_fingerprint(producer) == first, text
    for text in changed:
        path.write_text(text)
        assert cache.code_fingerprint(producer) != first, text


def test_lcx_code_is_fingerprinted_as_this_process_loaded_it(monkeypatch):
    """A process keeps running the lcx code it imported: its keys name that code, not a file
    edited since (a chapter's kernel while someone edits lcx), and the edit is warned about."""
    monkeypatch.setitem(cache._LOADED, "plots.py", (b"LOADED = 1\n", 0, 0))  # not the file now
    monkeypatch.setattr(cache, "_WARNED", set())
    with pytest.warns(UserWarning, match="plots.py changed after this process loaded it"):
        got = cache.code_fingerprint("plots")
    assert got == {"lcx.plots": cache._fingerprint(b"LOADED = 1\n")}
