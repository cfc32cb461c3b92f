"""Corpora: real long documents found on (or installable to) a machine with no dataset hub.

The papers train on RedPajama, PG19, arXiv and the Stack. The ``tiny`` and ``cpu`` profiles build
stand-ins from text a laptop can get from PyPI and Debian, with provenance (source, package,
version, sha256) recorded:

* code: the Python standard library, one document per top-level package with its files
  concatenated (ProLong §3.1 builds repository-level documents from the Stack the same way);
* books: six Jane Austen novels (Debian ``r-cran-janeaustenr``, read from R's lazy-load database
  without R) and the 66 books of the King James Bible (the PyPI wheel ``bible-cli``);
* prose: the Python reST docs (``python3.11-doc``), Perl's pods (``perl-doc``), the Jargon File
  (``jargon-text``), and the machine's man pages and package READMEs;
* short: paragraphs-sized sections (<= 2 KB) cut from all of the above.

Every document has a stable id, a domain and a source; the held-out split is by document (a short
section follows its parent). The ``gpu``/``paper`` profiles load hub datasets through the same
:func:`load_corpus`.

The downloads are pinned: each package at the version the book was built with, its file checked
against that version's sha256, and from PyPI a wheel only, so no package's build code runs. A
source that cannot be had (offline, a failed download, a file that is not the pinned one) is
reported, with how to get it, and left out: the corpus is keyed by the sources it holds, so a
reduced corpus never stands in for the full one, and a later call that can have the source builds
the full corpus. A profile refuses to build without a domain its chapters need
(:data:`PROFILE_NEEDS`) rather than train on less.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import itertools
import json
import re
import struct
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
import zlib
from pathlib import Path

import datasets

from . import cache, hub
from .profiles import PROFILES, check

SHORT_MAX_BYTES = 2048
TEST_FRACTION = 0.05

# (source, domain) the cpu profile reads; tiny reads only the standard library (present wherever
# Python is, so the notebook tests download nothing).
LOCAL_SOURCES = {
    "stdlib": "code",
    "janeaustenr": "books",
    "bible": "books",
    "python-doc": "prose",
    "perl-doc": "prose",
    "jargon": "prose",
    "man-pages": "prose",
    "debian-readmes": "prose",
}
PROFILE_SOURCES = {
    "tiny": ("stdlib",),
    "cpu": tuple(LOCAL_SOURCES),
    "gpu": ("hub-books", "hub-code", "hub-prose"),
    "paper": ("hub-books", "hub-code", "hub-prose"),
}
# The gpu/paper profiles: hub datasets by domain, streamed with `datasets.load_dataset`.
HUB_SOURCES = {
    "books": ("emozilla/pg19", "text"),
    "code": ("bigcode/the-stack-smol", "content"),
    "prose": ("togethercomputer/RedPajama-Data-1T-Sample", "text"),
}
# Caps (bytes per source) keep the cpu corpus at a size this machine trains on in minutes.
PROFILE_CAPS = {"tiny": 1_500_000, "cpu": 12_000_000, "gpu": None, "paper": None}
# The domains each profile's chapters draw on: pretraining mixes code, books and prose, ProLong's
# long data is code and books, Llama 2 Long reads perplexity per domain. A profile refuses a corpus
# in which none of a needed domain's sources could be had (on cpu the standard library is the only
# code, each hub dataset the only source of its domain); a source missing beside others of its
# domain (one of the two books, one of five prose sources) is reported and keyed out of the corpus.
PROFILE_NEEDS = {
    "tiny": ("code",),
    "cpu": ("code", "books", "prose"),
    "gpu": ("code", "books", "prose"),
    "paper": ("code", "books", "prose"),
}
# The downloaded sources' packages: (version, sha256 of its file), as the book was built with. A
# newer release is another corpus; a Debian point release may drop a version from the mirrors,
# and https://snapshot.debian.org/binary/<package>/ keeps every version.
PYPI_PINS = {
    "bible-cli": ("1.0.3", "ecd64839573337c8dfe4ad00309ae5f323c33f53ee3e69e621694e982af84dcb"),
}
DEBIAN_PINS = {
    "r-cran-janeaustenr": (
        "1.0.0-1",
        "df6bddf211906d1ff404f8ff662c21b34e6660e7f54a311084e749050c019c95",
    ),
    "python3.11-doc": (
        "3.11.2-6+deb12u8",
        "50eb63e7f636c4281e9ce1b8f10386f1def42159eddce34fc1f41c46261df71b",
    ),
    "perl-doc": (
        "5.36.0-7+deb12u3",
        "e9e3564ff5ade27de0585835f2acad769bcc545c0a0045a9f55d5401f27f7591",
    ),
    "jargon-text": (
        "4.4.7-4.1",
        "17d05997e30eb3d5d6713929b8e2f81b63a5f50073858ad2a06701c71f54dcdb",
    ),
}


def _apt_hint(package: str) -> str:
    version = DEBIAN_PINS[package][0]
    return (
        f"apt-get download {package}={version} from a Debian bookworm apt source (every version: "
        f"https://snapshot.debian.org/binary/{package}/)"
    )


# How to get each source, for the message that says it is missing.
HOW_TO_GET = {
    "stdlib": "the Python standard library's .py files (a full CPython installation)",
    "janeaustenr": _apt_hint("r-cran-janeaustenr"),
    "bible": f"pip download --no-deps --only-binary=:all: bible-cli=={PYPI_PINS['bible-cli'][0]}"
    " from PyPI",
    "python-doc": _apt_hint("python3.11-doc"),
    "perl-doc": _apt_hint("perl-doc"),
    "jargon": _apt_hint("jargon-text"),
    "man-pages": "man pages under /usr/share/man (apt-get install man-db manpages; a minimal image "
    "may exclude them in /etc/dpkg/dpkg.cfg.d/)",
    "debian-readmes": "package READMEs under /usr/share/doc",
    **{
        f"hub-{domain}": f"the Hugging Face hub dataset {name} (network access; a login if gated)"
        for domain, (name, _) in HUB_SOURCES.items()
    },
}


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _doc(source: str, domain: str, name: str, text: str) -> dict:
    return {"id": f"{source}:{name}", "source": source, "domain": domain, "text": text}


# --- fetching packages ---------------------------------------------------------------------------


def _pinned(path: Path, sha256: str) -> str:
    """``path``'s sha256, which must be the pinned one (a corrupt or other file is refused)."""
    digest = _sha256_bytes(path.read_bytes())
    if digest != sha256:
        raise RuntimeError(f"{path.name} has sha256 {digest}, not the pinned {sha256}")
    return digest


def _apt_download(package: str, workdir: Path) -> tuple[Path, dict]:
    """``apt-get download`` a Debian package at its pinned version (:data:`DEBIAN_PINS`), check
    its digest and unpack it (no maintainer script runs); returns (root, provenance)."""
    workdir.mkdir(parents=True, exist_ok=True)
    version, sha256 = DEBIAN_PINS[package]
    cmd = ["apt-get", "download", f"{package}={version}"]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    if proc.returncode != 0 and ("Unable to locate" in proc.stderr or "not found" in proc.stderr):
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True)  # stale package lists
        proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    debs = sorted(workdir.glob(f"{package}_*.deb"))
    if proc.returncode != 0 or not debs:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.strip()[-300:]}")
    deb = debs[-1]
    digest = _pinned(deb, sha256)
    root = workdir / package
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    return root, {"package": f"debian:{package}", "version": version, "sha256": digest}


def _pip_download(package: str, workdir: Path) -> tuple[Path, dict]:
    """``pip download`` a package's wheel at its pinned version (:data:`PYPI_PINS`): wheels only
    (a source distribution would run its build code), no dependencies, digest checked."""
    workdir.mkdir(parents=True, exist_ok=True)
    version, sha256 = PYPI_PINS[package]
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--only-binary=:all:",
        "-d",
        str(workdir),
        f"{package}=={version}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(workdir.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        raise RuntimeError(
            f"pip download {package}=={version} failed: {proc.stderr.strip()[-300:]}"
        )
    whl = wheels[-1]
    digest = _pinned(whl, sha256)
    return whl, {"package": f"pypi:{package}", "version": version, "sha256": digest}


# --- readers, one per source -----------------------------------------------------------------------


def read_stdlib(workdir: Path) -> tuple[list[dict], dict]:
    """One document per top-level package (files concatenated, each with a path header) or module."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "__pycache__"}
    docs = []
    for entry in sorted(root.iterdir()):
        if entry.name in skip or entry.name.startswith("config-"):
            continue
        if entry.is_dir():
            groups = [entry]
            if entry.name == "test":  # the test suite: one "repository" per test package
                groups = sorted(
                    p for p in entry.iterdir() if p.is_dir() and p.name != "__pycache__"
                )
            for group in groups:
                files = sorted(p for p in group.rglob("*.py") if "__pycache__" not in p.parts)
                parts = [
                    f"# file: {p.relative_to(root)}\n{p.read_text(errors='replace')}" for p in files
                ]
                text = "\n\n".join(parts)
                if text.strip():
                    docs.append(_doc("stdlib", "code", str(group.relative_to(root)), text))
        elif entry.suffix == ".py":
            docs.append(
                _doc(
                    "stdlib",
                    "code",
                    entry.name,
                    f"# file: {entry.name}\n{entry.read_text(errors='replace')}",
                )
            )
    version = sysconfig.get_python_version()
    return docs, {
        "package": f"python-stdlib:{sys.version.split()[0]}",
        "version": version,
        "path": str(root),
    }


def _read_r_strings(record: bytes) -> list[str]:
    """The character vector in one R XDR serialization (format 2 or 3): R's ``STRSXP`` of ``CHARSXP``s."""
    if record[:2] != b"X\n":
        raise ValueError("not an R XDR serialization")
    pos = 2
    version = struct.unpack(">i", record[pos : pos + 4])[0]
    pos += 12  # version, writer R version, minimal R version
    if version == 3:
        n = struct.unpack(">i", record[pos : pos + 4])[0]
        pos += 4 + n  # native encoding name
    flags, length = struct.unpack(">ii", record[pos : pos + 8])
    pos += 8
    if flags & 0xFF != 16:  # STRSXP
        raise ValueError(f"expected a character vector, got SEXP type {flags & 0xFF}")
    out = []
    for _ in range(length):
        _, n = struct.unpack(">ii", record[pos : pos + 8])
        pos += 8
        if n == -1:  # NA_character_
            out.append("")
            continue
        out.append(record[pos : pos + n].decode("utf-8", errors="replace"))
        pos += n
    return out


def read_janeaustenr(workdir: Path) -> tuple[list[dict], dict]:
    """Six novels from R's lazy-load database: records of [4-byte big-endian length][zlib stream]."""
    root, prov = _apt_download("r-cran-janeaustenr", workdir)
    rdb = next(root.rglob("janeaustenr/data/Rdata.rdb")).read_bytes()
    docs, pos = [], 0
    while pos < len(rdb):
        inflater = zlib.decompressobj()
        record = inflater.decompress(rdb[pos + 4 :])
        pos += 4 + (len(rdb) - pos - 4 - len(inflater.unused_data))
        lines = _read_r_strings(record)
        title = next(line for line in lines if line.strip()).strip()
        docs.append(
            _doc(
                "janeaustenr",
                "books",
                re.sub(r"\W+", "_", title.lower()).strip("_"),
                "\n".join(lines),
            )
        )
    return docs, prov


def read_bible(workdir: Path) -> tuple[list[dict], dict]:
    """The 66 books of the King James Bible from the ``bible-cli`` wheel, one document each."""
    whl, prov = _pip_download("bible-cli", workdir)
    with zipfile.ZipFile(whl) as z:
        books = json.loads(z.read("bible_cli/dataset.json"))
    docs = []
    for book in books:
        chapters = []
        for i, verses in enumerate(book["chapters"], 1):
            verses = [
                re.sub(r"\{[^{}]*:[^{}]*\}", "", v).replace("{", "").replace("}", "")
                for v in verses
            ]
            chapters.append(f"Chapter {i}\n\n" + "\n".join(" ".join(v.split()) for v in verses))
        docs.append(_doc("bible", "books", book["abbrev"], "\n\n".join(chapters)))
    return docs, prov


def _read_files(source: str, paths, root: Path) -> list[dict]:
    docs, seen = [], set()
    for path in sorted(paths):
        raw = gzip.open(path).read() if str(path).endswith(".gz") else Path(path).read_bytes()
        text = raw.decode("utf-8", errors="replace")
        digest = _sha256_bytes(raw)
        if text.strip() and digest not in seen:  # identical files (licences, copies) once only
            seen.add(digest)
            docs.append(_doc(source, "prose", str(Path(path).relative_to(root)), text))
    return docs


def read_python_doc(workdir: Path) -> tuple[list[dict], dict]:
    root, prov = _apt_download("python3.11-doc", workdir)
    return _read_files("python-doc", root.rglob("_sources/**/*.rst.txt"), root), prov


def read_perl_doc(workdir: Path) -> tuple[list[dict], dict]:
    root, prov = _apt_download("perl-doc", workdir)
    return _read_files("perl-doc", root.rglob("pod/*.pod"), root), prov


def read_jargon(workdir: Path) -> tuple[list[dict], dict]:
    root, prov = _apt_download("jargon-text", workdir)
    return _read_files("jargon", root.rglob("jargon.txt.gz"), root), prov


_TROFF_ESCAPES = re.compile(
    r"\\f[BIRP1-4]|\\f\(..|\\f\[[^\]]*\]|\\s[+-]?\d|\\[&|^%]|\\\*\(..|\\\*."
)


def _troff_to_text(src: str) -> str:
    """Crude man-page formatting: drop requests and font escapes, keep the words."""
    out = []
    for line in src.splitlines():
        if line.startswith(('.\\"', "'\\\"")):
            continue
        if line.startswith((".", "'")):
            words = line.split(None, 1)
            if words[0] in (".SH", ".SS") and len(words) > 1:
                out.append("\n" + words[1].strip('"'))
            elif words[0] in (".B", ".I", ".BR", ".IR", ".RB", ".BI", ".IB") and len(words) > 1:
                out.append(words[1].replace('"', ""))
            elif words[0] in (".PP", ".LP", ".P", ".TP", ".IP"):
                out.append("")
            continue
        out.append(line)
    text = _TROFF_ESCAPES.sub("", "\n".join(out)).replace("\\-", "-").replace("\\e", "\\")
    return re.sub(r"\n{3,}", "\n\n", text)


def read_man_pages(workdir: Path) -> tuple[list[dict], dict]:
    root = Path("/usr/share/man")
    paths = sorted(glob.glob(str(root / "man[1578]" / "*.gz")))
    if not paths:
        raise RuntimeError("no man pages under /usr/share/man")
    docs = []
    for doc in _read_files("man-pages", paths, root):
        doc["text"] = _troff_to_text(doc["text"])
        docs.append(doc)
    return docs, {"package": "local:/usr/share/man", "version": "installed", "n_files": len(paths)}


def read_debian_readmes(workdir: Path) -> tuple[list[dict], dict]:
    root = Path("/usr/share/doc")
    paths = [p for p in root.glob("*/README*") if p.is_file()]
    if not paths:
        raise RuntimeError("no README files under /usr/share/doc")
    return _read_files("debian-readmes", paths, root), {
        "package": "local:/usr/share/doc",
        "version": "installed",
    }


def _hub_reader(domain: str, max_docs: int = 20_000):
    name, field = HUB_SOURCES[domain]

    def read(workdir: Path) -> tuple[list[dict], dict]:
        pinned = hub.pretrained_kwargs(name)  # the commit lcx.hub.REVISIONS pins
        stream = hub.dataset_stream(name)  # the hub, at that commit
        docs = [
            _doc(f"hub-{domain}", domain, str(i), row[field])
            for i, row in zip(range(max_docs), stream, strict=False)
        ]
        version = pinned.get("revision", "main")
        return docs, {"package": f"hub:{name}", "version": version, "field": field}

    return read


READERS = {
    "stdlib": read_stdlib,
    "janeaustenr": read_janeaustenr,
    "bible": read_bible,
    "python-doc": read_python_doc,
    "perl-doc": read_perl_doc,
    "jargon": read_jargon,
    "man-pages": read_man_pages,
    "debian-readmes": read_debian_readmes,
    **{f"hub-{domain}": _hub_reader(domain) for domain in HUB_SOURCES},
}
SOURCE_DOMAINS = {**LOCAL_SOURCES, **{f"hub-{d}": d for d in HUB_SOURCES}}


# --- splitting and short sections ----------------------------------------------------------------


def held_out(ids: list[str], fraction: float = TEST_FRACTION) -> set[str]:
    """The held-out documents of one source: the ``max(1, fraction * n)`` ids with the smallest
    hash, so the split is stable across builds and every source has held-out documents."""
    ranked = sorted(ids, key=lambda i: hashlib.sha256(i.encode()).hexdigest())
    return set(ranked[: max(1, round(fraction * len(ranked)))])


def short_sections(doc: dict, max_bytes: int = SHORT_MAX_BYTES, every: int = 4) -> list[dict]:
    """Sections of at most ``max_bytes`` characters cut at blank lines from a document (every ``every``-th one,
    so the short domain samples documents rather than duplicating them)."""
    sections, current = [], ""
    for para in re.split(r"\n\s*\n", doc["text"]):
        if len(current) + len(para) + 2 > max_bytes:
            if current.strip():
                sections.append(current)
            current = para[:max_bytes]
        else:
            current = f"{current}\n\n{para}" if current else para
    if current.strip():
        sections.append(current)
    return [
        {
            "id": f"{doc['id']}#{i}",
            "source": doc["source"],
            "domain": "short",
            "text": s,
            "parent": doc["id"],
        }
        for i, s in enumerate(sections)
        if i % every == 0 and len(s) >= 200
    ]


def _cap(docs: list[dict], cap: int | None) -> list[dict]:
    """Keep whole documents in a stable order (by hash of id) until ``cap`` bytes."""
    if cap is None:
        return docs
    kept, total = [], 0
    for doc in sorted(docs, key=lambda d: hashlib.sha256(f"cap:{d['id']}".encode()).hexdigest()):
        if total >= cap:
            break
        kept.append(doc)
        total += len(doc["text"].encode())
    return kept


def _source(source: str, cap: int | None) -> Path:
    """The cached artifact of one source: its documents (``docs.jsonl``, capped) and provenance.
    Raises when the source cannot be had; nothing is cached then, so a later call tries again."""

    def build(folder: Path) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            docs, prov = READERS[source](Path(tmp) / source)
        docs = _cap(docs, cap)
        prov.update(
            status="ok",
            domain=SOURCE_DOMAINS[source],
            n_docs=len(docs),
            n_bytes=sum(len(d["text"].encode()) for d in docs),
        )
        with open(folder / "docs.jsonl", "w") as f:
            f.writelines(json.dumps(doc) + "\n" for doc in docs)
        (folder / "provenance.json").write_text(json.dumps(prov, indent=2, sort_keys=True))

    return cache.cached("source", source_config(source, cap), build)


def source_config(source: str, cap: int | None) -> dict:
    """What one source's artifact is keyed by: its name, its cap and this module's code; a hub
    source also by what it reads, its dataset id at the commit :data:`lcx.hub.REVISIONS` pins for
    that id (pinning another id keeps it: refetching and retokenizing a corpus is hours) and the
    hub module's readers (:func:`lcx.hub.dataset_stream`, :func:`lcx.hub.resolve`)."""
    config = {"source": source, "cap": cap, "code": cache.code_fingerprint("data")}
    if source.startswith("hub-"):
        name = HUB_SOURCES[SOURCE_DOMAINS[source]][0]
        files = hub.SCRIPT_DATASETS.get(name)
        readers = [cache.function_fingerprint(f) for f in (hub.dataset_stream, hub.resolve)]
        config["hub"] = {
            "id": name,
            "revision": hub.REVISIONS.get(name),
            "files": list(files) if files else None,
            "readers": readers,
        }
    return config


def _build(folder: Path, sources: dict[str, Path]) -> None:
    """The corpus from the artifacts of the sources it holds (name -> :func:`_source` folder):
    the held-out split by document, the short sections, every row sorted by id."""
    rows, provenance = [], {}
    for source, src in sources.items():
        with open(src / "docs.jsonl") as f:
            docs = [json.loads(line) for line in f]
        provenance[source] = json.loads((src / "provenance.json").read_text())
        test_ids = held_out([d["id"] for d in docs])
        for doc in docs:
            doc["parent"] = doc["id"]
            for row in [doc, *short_sections(doc)]:
                row["split"] = "test" if doc["id"] in test_ids else "train"
                rows.append(row)
    if not any(r["domain"] != "short" for r in rows):
        raise RuntimeError(f"too little data: no source could be read: {json.dumps(provenance)}")
    for row in rows:
        row["n_bytes"] = len(row["text"].encode())
    rows.sort(key=lambda r: r["id"])
    datasets.Dataset.from_list(rows).save_to_disk(str(folder / "dataset"))
    (folder / "provenance.json").write_text(json.dumps(provenance, indent=2, sort_keys=True))


def _check_needs(profile: str, sources: tuple[str, ...], provenance: dict) -> None:
    """Refuse a corpus in which no source of a domain the profile needs could be had."""
    for domain in PROFILE_NEEDS[profile]:
        asked = [s for s in sources if SOURCE_DOMAINS[s] == domain]
        if asked and not any(provenance[s].get("n_docs") for s in asked):
            missing = "\n".join(
                f"  {s}: {provenance[s].get('reason', 'no documents')}; to get it: "
                f"{HOW_TO_GET.get(s, 'see lcx.data')}"
                for s in asked
            )
            raise RuntimeError(
                f"the {profile!r} profile needs {domain} documents, and none of its {domain} "
                f"sources could be had (its models would train on less):\n{missing}"
            )


def load_corpus(profile: str, sources: tuple[str, ...] | None = None, cap: int | None = -1):
    """The corpus for a profile as a ``datasets.DatasetDict`` with ``train`` and ``test`` splits.

    Columns: ``id``, ``source``, ``domain``, ``text``, ``parent``, ``split``, ``n_bytes``. The
    provenance of each source is the result's ``provenance`` attribute (package, version, sha256,
    counts, or why it was unavailable and how to get it), its cache key ``key``. Each source is
    read once and cached on its own (:mod:`lcx.cache`), and the corpus is keyed by the sources it
    holds: one that cannot be had is left out (a domain of :data:`PROFILE_NEEDS` without any is
    an error) and tried again on the next call.
    ``cap``: bytes per source (default: the profile's), ``None`` for everything.
    """
    check("profile", profile, PROFILES)
    sources = tuple(sources or PROFILE_SOURCES[profile])
    for s in sources:
        check("sources", s, tuple(READERS))
    cap = PROFILE_CAPS[profile] if cap == -1 else cap
    folders, provenance = {}, {}
    for source in sources:
        try:
            folders[source] = _source(source, cap)
        except Exception as exc:  # a missing package or tool: report it and go on with the rest
            how = HOW_TO_GET.get(source, "see lcx.data")
            provenance[source] = {
                "status": "unavailable",
                "domain": SOURCE_DOMAINS[source],
                "reason": f"{type(exc).__name__}: {exc}"[:500],
                "get": how,
            }
            print(
                f"lcx.data: source {source!r} unavailable ({exc}); continuing without it "
                f"(to get it: {how})",
                file=sys.stderr,
            )
            continue
        provenance[source] = json.loads((folders[source] / "provenance.json").read_text())
    _check_needs(profile, sources, provenance)
    if not any(p.get("n_docs") for p in provenance.values()):
        raise RuntimeError(f"too little data: no source could be read: {json.dumps(provenance)}")
    config = {
        "sources": list(folders),  # the sources it holds, not those asked for
        "cap": cap,
        "short_max_bytes": SHORT_MAX_BYTES,
        "test_fraction": TEST_FRACTION,
        "code": cache.code_fingerprint("data"),
    }
    inputs = [f.name for f in folders.values()]
    folder = cache.cached("corpus", config, lambda f: _build(f, folders), inputs=inputs)
    ds = datasets.load_from_disk(str(folder / "dataset"))
    out = datasets.DatasetDict(
        {
            split: ds.filter(lambda r, s=split: r["split"] == s, keep_in_memory=True)
            for split in ("train", "test")
        }
    )
    # Per source: package, version, sha256, counts, or why it was unavailable.
    out.provenance = dict(sorted(provenance.items()))
    out.key = folder.name  # the cache key, for artifacts built from this corpus
    return out


def tokenize(corpus, tokenizer):
    """The corpus as token ids (column ``input_ids``, plus ``n_tokens``), built once and cached.

    Each document is encoded without special tokens; packing adds the separators.
    """

    def build(folder: Path) -> None:
        def encode(batch):
            ids = tokenizer(list(batch["text"]), add_special_tokens=False)["input_ids"]
            return {"input_ids": ids, "n_tokens": [len(x) for x in ids]}

        out = datasets.DatasetDict(
            {
                split: ds.map(
                    encode,
                    batched=True,
                    batch_size=64,
                    remove_columns=["text"],
                    keep_in_memory=True,
                    desc=f"tokenizing {split}",
                )
                for split, ds in corpus.items()
            }
        )
        out.save_to_disk(str(folder / "dataset"))

    config = {"version": 1, "code": cache.code_fingerprint("data")}
    folder = cache.cached("tokens", config, build, inputs=[corpus.key, tokenizer.key])
    out = datasets.load_from_disk(str(folder / "dataset"))
    out.key = folder.name
    return out


def domain_stats(tokens):
    """Documents, bytes and tokens per split and domain (from :func:`tokenize`'s output)."""
    import pandas as pd

    frames = []
    for split, ds in tokens.items():
        frame = ds.select_columns(["domain", "n_bytes", "n_tokens"]).to_pandas()
        g = frame.groupby("domain").agg(
            docs=("n_bytes", "size"),
            bytes=("n_bytes", "sum"),
            tokens=("n_tokens", "sum"),
            longest_tokens=("n_tokens", "max"),
        )
        g["bytes_per_token"] = g["bytes"] / g["tokens"]
        g.insert(0, "split", split)
        frames.append(g.reset_index())
    return pd.concat(frames, ignore_index=True)


ULTRACHAT = "HuggingFaceH4/ultrachat_200k"  # ProLong's SFT data on the hub (lcx.hub pins it)


def ultrachat(seed: int = 0, split: str = "train_sft", name: str = ULTRACHAT):
    """UltraChat's conversations (ProLong's SFT data) as an endless stream of message lists from the
    hub, reshuffled by ``seed`` each epoch (ProLong's 1B SFT tokens are several epochs of it; the
    gpu/paper profiles; the cpu profile writes its chats by program, :func:`lcx.rows.chat_rows`)."""
    stream = hub.dataset_stream(name, split)
    for epoch in itertools.count():
        for row in stream.shuffle(seed=seed + epoch, buffer_size=10_000):
            yield row["messages"]
