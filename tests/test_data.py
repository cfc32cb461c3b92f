import struct
from pathlib import Path

import pytest

from lcx import data


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LCX_CACHE", str(tmp_path / "cache"))


def r_character_vector(strings, version=3):
    """An R XDR serialization of a character vector, written from R's serialize.c layout."""
    out = b"X\n" + struct.pack(">iii", version, 0x040201, 0x030500)
    if version == 3:
        out += struct.pack(">i", 5) + b"UTF-8"
    out += struct.pack(">ii", 16, len(strings))  # STRSXP, length
    for s in strings:
        if s is None:
            out += struct.pack(">ii", 9, -1)  # NA_STRING
        else:
            raw = s.encode()
            out += struct.pack(">ii", 0x00040009, len(raw)) + raw  # CHARSXP, UTF-8 flag
    return out


@pytest.mark.parametrize("version", [2, 3])
def test_read_r_strings(version):
    lines = ["EMMA", "", "By Jane Austen", None, "Emma Woodhouse, handsome, clever, and rich — é"]
    assert data._read_r_strings(r_character_vector(lines, version)) == [s or "" for s in lines]
    with pytest.raises(ValueError):
        data._read_r_strings(b"RDX2\n")


def test_troff_to_text():
    src = '.\\" comment\n.TH LS 1\n.SH NAME\nls \\- list directory contents\n.PP\n\\fB\\-a\\fR, \\fB\\-\\-all\\fR\n'
    text = data._troff_to_text(src)
    assert "NAME" in text and "ls - list directory contents" in text and "-a, --all" in text
    assert "\\f" not in text and ".TH" not in text and "comment" not in text


def test_tiny_corpus_is_real_split_by_document_and_stable():
    corpus = data.load_corpus("tiny")
    train, test = corpus["train"].to_dict(), corpus["test"].to_dict()
    assert set(train["domain"]) == {"code", "short"} and len(test["id"]) > 0
    assert corpus.provenance["stdlib"]["status"] == "ok"
    assert not set(train["parent"]) & set(test["parent"]), "a document is in both splits"
    ids = train["id"] + test["id"]
    assert len(ids) == len(set(ids))
    code = [t for t, d in zip(train["text"], train["domain"], strict=True) if d == "code"]
    assert any("def " in t and "# file: " in t for t in code)  # real source files, concatenated
    assert (
        max(len(t) for t, d in zip(train["text"], train["domain"], strict=True) if d == "short")
        <= 2048
    )
    # Rebuilding from scratch gives the same documents and split.
    again = data._cap(data.read_stdlib(None)[0], data.PROFILE_CAPS["tiny"])
    assert {d["id"] for d in again} == set(train["parent"]) | set(test["parent"])


def test_unavailable_source_is_reported_and_skipped(monkeypatch):
    def broken(workdir):
        raise RuntimeError("apt-get download nothing-here failed")

    monkeypatch.setitem(data.READERS, "broken", broken)
    monkeypatch.setitem(data.SOURCE_DOMAINS, "broken", "books")
    corpus = data.load_corpus("tiny", sources=("stdlib", "broken"))
    assert corpus.provenance["broken"]["status"] == "unavailable"
    assert "nothing-here" in corpus.provenance["broken"]["reason"]
    assert corpus["train"].num_rows > 0
    with pytest.raises(RuntimeError, match="too little data"):
        data.load_corpus("tiny", sources=("broken",))


def test_bad_source_name_fails_clearly():
    with pytest.raises(ValueError, match="'sources' = 'pg19'"):
        data.load_corpus("tiny", sources=("pg19",))


def fake_source(source, domain, n=3):
    """A reader of ``n`` documents of ``domain``, for a source that downloads nothing."""

    def read(workdir):
        text = "\n\n".join(f"Paragraph {i} of {source}. " * 20 for i in range(30))
        docs = [data._doc(source, domain, f"doc{i}", text) for i in range(n)]
        return docs, {"package": f"test:{source}", "version": "1"}

    return read


def test_a_corpus_is_keyed_by_the_sources_it_holds(monkeypatch):
    """A source that cannot be had is left out of a corpus keyed by what it holds (the corpus of
    the other sources), not cached under the full corpus's key: a later call that can have the
    source builds the full corpus."""
    available = {"extra": False}
    read = fake_source("extra", "books")

    def flaky(workdir):
        if not available["extra"]:
            raise RuntimeError("pip download extra failed: no network")
        return read(workdir)

    monkeypatch.setitem(data.READERS, "extra", flaky)
    monkeypatch.setitem(data.SOURCE_DOMAINS, "extra", "books")
    reduced = data.load_corpus("tiny", sources=("stdlib", "extra"))
    assert reduced.provenance["extra"]["status"] == "unavailable"
    assert "no network" in reduced.provenance["extra"]["reason"]
    assert "extra" not in set(reduced["train"]["source"])
    assert reduced.key == data.load_corpus("tiny", sources=("stdlib",)).key
    available["extra"] = True
    full = data.load_corpus("tiny", sources=("stdlib", "extra"))
    assert full.key != reduced.key and full.provenance["extra"]["status"] == "ok"
    assert set(full["train"]["source"]) == {"stdlib", "extra"}
    assert (
        full["train"].filter(lambda r: r["source"] == "stdlib").num_rows
        == reduced["train"].num_rows
    )  # the same stdlib documents, read once


def test_a_profile_refuses_a_corpus_without_a_domain_it_needs(monkeypatch):
    """The cpu profile's chapters need code, books and prose: without any books source it says
    which sources are missing, why, and how to get them, instead of training on less; one books
    source of two missing leaves a smaller corpus, keyed and reported as such."""

    def broken(workdir):
        raise RuntimeError("offline")

    for source, domain in data.LOCAL_SOURCES.items():
        monkeypatch.setitem(data.READERS, source, fake_source(source, domain))
    monkeypatch.setitem(data.READERS, "janeaustenr", broken)
    monkeypatch.setitem(data.READERS, "bible", broken)
    with pytest.raises(RuntimeError, match="'cpu' profile needs books") as error:
        data.load_corpus("cpu")
    assert "apt-get download r-cran-janeaustenr=1.0.0-1" in str(error.value)
    assert "pip download --no-deps --only-binary=:all: bible-cli==1.0.3" in str(error.value)
    monkeypatch.setitem(data.READERS, "bible", fake_source("bible", "books"))
    with_bible = data.load_corpus("cpu")
    assert with_bible.provenance["janeaustenr"]["status"] == "unavailable"
    assert "r-cran-janeaustenr=1.0.0-1" in with_bible.provenance["janeaustenr"]["get"]
    monkeypatch.setitem(data.READERS, "janeaustenr", fake_source("janeaustenr", "books"))
    assert data.load_corpus("cpu").key != with_bible.key
    monkeypatch.setitem(data.READERS, "stdlib", broken)
    with pytest.raises(RuntimeError, match="(?s)'tiny' profile needs code.*stdlib: RuntimeError"):
        data.load_corpus("tiny")


def test_downloads_are_pinned_to_versions_and_wheels(monkeypatch, tmp_path):
    """pip fetches the pinned version's wheel only (no source distribution, whose build code
    would run) and no dependencies, apt-get the pinned Debian version; a file that is not the
    pinned one (another build, a corrupt download) is refused."""
    import hashlib
    import subprocess

    calls = []

    def run(cmd, cwd=None, **kwargs):
        calls.append(cmd)
        if cmd[1:4] == ["-m", "pip", "download"]:
            folder = Path(cmd[cmd.index("-d") + 1])
            (folder / "bible_cli-1.0.3-py3-none-any.whl").write_bytes(b"wheel")
        elif cmd[:2] == ["apt-get", "download"]:
            (Path(cwd) / "jargon-text_4.4.7-4.1_all.deb").write_bytes(b"deb")
        elif cmd[0] == "dpkg-deb":
            Path(cmd[-1]).mkdir(parents=True)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(data.subprocess, "run", run)
    with pytest.raises(RuntimeError, match="not the pinned"):  # b"wheel" is not bible-cli 1.0.3
        data._pip_download("bible-cli", tmp_path / "pip")
    sha = hashlib.sha256
    monkeypatch.setitem(data.PYPI_PINS, "bible-cli", ("1.0.3", sha(b"wheel").hexdigest()))
    monkeypatch.setitem(data.DEBIAN_PINS, "jargon-text", ("4.4.7-4.1", sha(b"deb").hexdigest()))
    _, prov = data._pip_download("bible-cli", tmp_path / "pip2")
    pip = calls[-1]
    assert "--only-binary=:all:" in pip and "--no-deps" in pip and pip[-1] == "bible-cli==1.0.3"
    assert prov["version"] == "1.0.3" and prov["sha256"] == sha(b"wheel").hexdigest()
    _, prov = data._apt_download("jargon-text", tmp_path / "apt")
    assert ["apt-get", "download", "jargon-text=4.4.7-4.1"] in calls
    assert prov["version"] == "4.4.7-4.1"


def test_a_hub_sources_key_follows_its_own_commit_not_the_others(monkeypatch):
    """A hub corpus source is keyed by its dataset at its pinned commit: pinning another id in
    lcx/hub.py (a checkpoint's sha, which hub.py asks for) keeps it, where keying by all of
    hub.py refetched and retokenized every corpus; its own commit changes it, and so does a
    change to the code that reads it. A local source's key never reads the hub module."""
    from code_edits import edit_source

    from lcx import cache, hub

    def key(source):
        return cache.key("source", data.source_config(source, 100))

    code_id = data.HUB_SOURCES["code"][0]
    model = '"princeton-nlp/Llama-3-8B-ProLong-64k-Base": None'
    before, local = key("hub-code"), key("stdlib")
    with monkeypatch.context() as mp:  # the file as it would be with the checkpoint pinned
        edit_source(mp, "hub", model, model.replace("None", '"' + "0" * 40 + '"'))
        assert key("hub-code") == before and key("stdlib") == local
    with monkeypatch.context() as mp:
        mp.setitem(hub.REVISIONS, code_id, "1" * 40)  # its own commit (what the edit sets)
        assert key("hub-code") != before
    with monkeypatch.context() as mp:
        mp.setattr(hub, "resolve", lambda name: name)  # another reader
        assert key("hub-code") != before and key("stdlib") == local
