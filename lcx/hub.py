"""Hub ids at pinned revisions: the commit of every checkpoint and dataset the ``gpu``/``paper``
profiles load from the Hugging Face hub.

A hub id names a repository whose ``main`` can change after the book ran (a re-uploaded
checkpoint, an edited config or tokenizer, a re-packaged dataset), so a gpu/paper number is only
reproducible at a commit. :data:`REVISIONS` is the required table of those commits: loading an id
that is not in it raises, and an id mapped to ``None`` loads ``main`` with an
:class:`UnpinnedRevision` warning, because its commit is not known here yet (put the sha in when it
is: ``huggingface_hub.HfApi().model_info(id).sha``). A local folder in place of a hub id (how the
tests load checkpoints) has no revision.

Where the shas come from: this project's machines cannot reach the hub, so each pinned sha is the
name of a snapshot folder (``models--<org>--<name>/snapshots/<sha>``, which the hub client names
by commit) quoted in public code that loaded that repository; none was checked against the hub
here.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

REVISIONS: dict[str, str | None] = {
    # models (lcx.pretrained.BASES, lcx.rope.PAPER_SETTINGS)
    "meta-llama/Llama-2-7b-hf": "01c7f73d771dfac7d292323805ebc428287df4f9",
    "meta-llama/Meta-Llama-3-8B-Instruct": "8afb486c1db24fe5011ec46dfbe5b5dccdb575c2",
    "togethercomputer/LLaMA-2-7B-32K": "46c24bb5aef59722fa7aa6d75e832afd1d64b980",
    "namespace-Pt/Llama-3-8B-Instruct-80K-QLoRA-Merged": None,
    "princeton-nlp/Llama-3-8B-ProLong-64k-Base": None,
    "princeton-nlp/Llama-3-8B-ProLong-512k-Base": None,
    # datasets (lcx.data.HUB_SOURCES, lcx.data.ultrachat)
    "emozilla/pg19": "c021754c8e01c5b1cc83a1f549c1f97fbbb756b8",
    "bigcode/the-stack-smol": None,
    "togethercomputer/RedPajama-Data-1T-Sample": "98f93b765c118b999b1af570c3e399c207d08da7",
    "HuggingFaceH4/ultrachat_200k": "8049631c405ae6576f93f445c6b8166f76f5505a",
}


class UnpinnedRevision(UserWarning):
    """A hub id loaded at ``main``: :data:`REVISIONS` has no commit for it yet."""


def is_local(name_or_path) -> bool:
    """Whether ``name_or_path`` is a folder on this machine rather than a hub id."""
    return Path(str(name_or_path)).expanduser().exists()


def revision(repo_id: str) -> str | None:
    """The commit ``repo_id`` is loaded at: its sha from :data:`REVISIONS`, or None (``main``, with
    an :class:`UnpinnedRevision` warning) where the table has none yet. Raises ``KeyError`` for an
    id the table does not list, so a new hub id cannot enter the book unpinned by accident."""
    if repo_id not in REVISIONS:
        raise KeyError(
            f"hub id {repo_id!r} is not in lcx.hub.REVISIONS: add it with its commit sha (or None "
            "to load main, unpinned)"
        )
    sha = REVISIONS[repo_id]
    if sha is None:
        warnings.warn(
            f"{repo_id} is loaded at main, not at a pinned commit (lcx.hub.REVISIONS has none)",
            UnpinnedRevision,
            stacklevel=2,
        )
    return sha


def pretrained_kwargs(name_or_path) -> dict:
    """``{"revision": sha}`` for a pinned hub id (:func:`revision`), else ``{}`` (a local folder, or
    an id loaded at ``main``): the keyword ``from_pretrained``, ``snapshot_download`` and
    ``load_dataset`` take."""
    sha = None if is_local(name_or_path) else revision(str(name_or_path))
    return {} if sha is None else {"revision": sha}


# Dataset repositories built by a loading script, which datasets >= 4 refuses to run: their data
# files are read directly with the packaged builder, at the pinned commit (an hf:// path)
SCRIPT_DATASETS = {"togethercomputer/RedPajama-Data-1T-Sample": ("json", "*.jsonl")}
# What a model snapshot leaves out: Meta's own copy of the weights (Llama 3's repositories carry
# original/consolidated.*.pth beside the safetensors, 16 GB for 8B) that transformers never reads
SNAPSHOT_IGNORE = ["original/*", "*.pth"]


def dataset_stream(name: str, split: str = "train"):
    """``datasets.load_dataset(name, split=split, streaming=True)`` at the pinned commit; a
    script-built repository of :data:`SCRIPT_DATASETS` is read from its data files instead."""
    from datasets import load_dataset

    local = resolve(name)
    if local != name:  # a stand-in: the repository's files, read by the builder they need
        builder, pattern = SCRIPT_DATASETS.get(name, (local, None))
        files = {"data_files": f"{local}/{pattern}"} if pattern else {}
        return load_dataset(builder, split=split, streaming=True, **files)
    if name in SCRIPT_DATASETS:
        builder, pattern = SCRIPT_DATASETS[name]
        sha = revision(name)
        files = f"hf://datasets/{name}{'@' + sha if sha else ''}/{pattern}"
        return load_dataset(builder, data_files=files, split=split, streaming=True)
    return load_dataset(name, split=split, streaming=True, **pretrained_kwargs(name))


def resolve(name: str) -> str:
    """Where ``name`` loads from: the local stand-in under ``$LCX_HUB_MIRROR`` (a folder laid out
    by hub id, :func:`lcx.standins.build`) when there is one, else ``name`` itself (the hub, or
    a local path)."""
    mirror = os.environ.get("LCX_HUB_MIRROR")
    if mirror and not is_local(name):
        local = Path(mirror).expanduser() / name
        if local.exists():
            return str(local)
    return name
