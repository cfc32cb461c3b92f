import json
import subprocess
import sys

import pytest

from lcx import cache


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LCX_CACHE", str(tmp_path / "cache"))
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


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "manifest"])
def test_corrupt_artifact_is_rebuilt_not_loaded(damage):
    calls = []
    folder = cache.cached("ckpt", {"x": 1}, writer("payload", calls))
    target = folder / "sub" / "more.bin"
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[:50])
    elif damage == "flip":
        data = bytearray(target.read_bytes())
        data[3] ^= 0xFF
        target.write_bytes(bytes(data))
    elif damage == "delete":
        target.unlink()
    else:
        (folder / cache.MANIFEST).write_text("{not json")
    assert not cache.is_complete(folder)
    again = cache.cached("ckpt", {"x": 1}, writer("payload", calls))
    assert len(calls) == 2 and cache.is_complete(again)
    assert (again / "sub" / "more.bin").read_bytes() == b"\x00\x01" * 100


def test_failed_build_leaves_nothing_behind(cache_dir):
    def broken(folder):
        (folder / "half.txt").write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        cache.cached("corpus", {"n": 2}, broken)
    leftovers = [p.name for p in (cache_dir / "corpus").iterdir() if not p.name.endswith(".lock")]
    assert leftovers == []


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
