"""Hub ids load at the commits lcx.hub.REVISIONS pins: checked with the hub's loaders replaced by
recorders (this machine cannot reach the hub)."""

import inspect
import re
import warnings

import datasets
import huggingface_hub
import pytest
import transformers

from lcx import data, hub, models, pretrained, rope

LLAMA2 = "meta-llama/Llama-2-7b-hf"
LLAMA2_SHA = "01c7f73d771dfac7d292323805ebc428287df4f9"
UNPINNED = "princeton-nlp/Llama-3-8B-ProLong-64k-Base"


@pytest.fixture
def calls(monkeypatch):
    """Every call of the hub's loaders: (loader, name, keyword arguments)."""
    seen = []

    def recorder(loader, result):
        def record(name, *args, **kwargs):
            seen.append((loader, str(name), kwargs))
            return result(name) if callable(result) else result

        return record

    config = transformers.LlamaConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
    )

    class Tokenizer:
        pad_token, eos_token = None, "</s>"

    class Stream(list):
        def shuffle(self, seed, buffer_size):
            return self

    for cls, result in [
        (transformers.AutoConfig, config),
        (transformers.AutoModelForCausalLM, "model"),
        (transformers.AutoTokenizer, lambda name: Tokenizer()),
    ]:
        monkeypatch.setattr(cls, "from_pretrained", recorder(cls.__name__, result))
    stream = Stream([{"text": "a", "content": "b", "messages": [{"role": "user"}]}])
    monkeypatch.setattr(datasets, "load_dataset", recorder("load_dataset", stream))
    monkeypatch.setattr(data.datasets, "load_dataset", recorder("load_dataset", stream))

    def snapshot(name, **kwargs):
        seen.append(("snapshot_download", name, kwargs))
        raise RuntimeError("stop: no checkpoint to present to Unsloth here")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot)
    return seen


def test_models_and_tokenizers_load_at_the_pinned_revision(calls, tmp_path):
    models.load_pretrained(LLAMA2)
    tok = models.load_tokenizer("gpu", hub_name=LLAMA2)
    with pytest.raises(RuntimeError, match="stop"):
        models.unsloth_model(LLAMA2, 1024, 5e5, fast_language_model=object())
    assert [c[0] for c in calls] == [
        "AutoConfig",
        "AutoModelForCausalLM",
        "AutoTokenizer",
        "snapshot_download",
    ]
    assert all(kwargs["revision"] == LLAMA2_SHA for _, _, kwargs in calls)
    assert tok.key.endswith("@" + LLAMA2_SHA)  # cache keys follow the commit
    # a local folder is loaded as it is
    calls.clear()
    models.load_pretrained(tmp_path)
    assert calls and all("revision" not in kwargs for _, _, kwargs in calls)


def test_an_unpinned_id_loads_main_with_a_warning_and_an_unknown_id_is_refused(calls):
    with pytest.warns(hub.UnpinnedRevision, match=UNPINNED):
        models.load_pretrained(UNPINNED)
    assert all("revision" not in kwargs for _, _, kwargs in calls)
    with pytest.raises(KeyError, match="not in lcx.hub.REVISIONS"):
        models.load_pretrained("someone/unlisted-model")


def test_hub_datasets_and_configs_load_at_the_pinned_revision(calls, tmp_path):
    docs, provenance = data.READERS["hub-books"](tmp_path)
    assert provenance["version"] == hub.REVISIONS["emozilla/pg19"]
    next(data.ultrachat())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", hub.UnpinnedRevision)
        rope.hub_configs()
    assert calls[0] == (
        "load_dataset",
        "emozilla/pg19",
        {"split": "train", "streaming": True, "revision": hub.REVISIONS["emozilla/pg19"]},
    )
    assert calls[1][1:] == (
        "HuggingFaceH4/ultrachat_200k",
        {
            "split": "train_sft",
            "streaming": True,
            "revision": hub.REVISIONS["HuggingFaceH4/ultrachat_200k"],
        },
    )
    configs = calls[2:]
    assert [name for _, name, _ in configs] == [s.hub_id for s in rope.PAPER_SETTINGS if s.hub_id]
    for _, name, kwargs in configs:
        assert kwargs.get("revision") == hub.REVISIONS[name]


def test_every_hub_id_lcx_names_is_in_the_table_and_every_pin_is_a_commit_sha():
    named = {s.hub_id for s in rope.PAPER_SETTINGS if s.hub_id}
    named |= {b.paper_model for b in pretrained.BASES.values()}
    named |= {name for name, _ in data.HUB_SOURCES.values()}
    named.add(inspect.signature(data.ultrachat).parameters["name"].default)
    assert named == set(hub.REVISIONS)
    pins = [sha for sha in hub.REVISIONS.values() if sha is not None]
    assert pins and all(re.fullmatch(r"[0-9a-f]{40}", sha) for sha in pins)


def test_a_script_built_dataset_is_read_from_its_data_files_at_the_pinned_commit(
    tmp_path, monkeypatch
):
    """RedPajama-Data-1T-Sample is built by a loading script, which datasets >= 4 refuses: lcx
    reads its JSONL files with datasets' json builder through an hf:// path at the pinned commit
    (here the hf:// folder is mapped onto local files in the repository's layout)."""
    import json

    import datasets

    name = "togethercomputer/RedPajama-Data-1T-Sample"
    for part in ("arxiv_sample", "book_sample"):
        rows = [{"text": f"{part} {i}", "meta": "{}"} for i in range(3)]
        (tmp_path / f"{part}.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "RedPajama-Data-1T-Sample.py").write_text("raise RuntimeError('a script')\n")
    real, calls = datasets.load_dataset, []

    def load_dataset(path, **kw):
        calls.append((path, kw))
        prefix = f"hf://datasets/{name}@{hub.REVISIONS[name]}/"
        assert kw["data_files"].startswith(prefix)
        return real(path, **{**kw, "data_files": str(tmp_path / kw["data_files"][len(prefix) :])})

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    texts = sorted(row["text"] for row in hub.dataset_stream(name))
    assert texts == sorted(f"{p} {i}" for p in ("arxiv_sample", "book_sample") for i in range(3))
    assert calls[0][0] == "json" and calls[0][1]["streaming"] is True


def test_a_model_snapshot_leaves_metas_own_weight_copy_out():
    """Llama 3's repositories carry original/consolidated.*.pth (16 GB for 8B) beside the
    safetensors; huggingface_hub's own filter, with lcx's patterns, keeps what transformers
    loads and drops the rest."""
    from huggingface_hub.utils import filter_repo_objects

    files = [
        "config.json",
        "generation_config.json",
        "model-00001-of-00004.safetensors",
        "model.safetensors.index.json",
        "original/consolidated.00.pth",
        "original/params.json",
        "original/tokenizer.model",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    kept = list(filter_repo_objects(files, ignore_patterns=hub.SNAPSHOT_IGNORE))
    assert kept == [f for f in files if not f.startswith("original/")]
