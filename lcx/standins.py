"""Local stand-ins for the hub's checkpoints and datasets: what the gpu profile loads, at toy size,
built on this machine, so its code path can run where the hub cannot be reached (issue 20, item 5:
the rehearsal of the gpu profile on CPU).

:func:`build` writes them into a folder laid out as the hub ids (``<folder>/<org>/<name>``);
``LCX_HUB_MIRROR=<folder>`` then makes :func:`lcx.hub.resolve` load them in place of the hub.

- **Checkpoints** (:func:`checkpoint`): a random Llama of the hub model's architecture (its RoPE,
  grouped-query ratio, window, tied or untied head), two layers of width 64, with a tokenizer that
  has the real one's quirks: no pad token; Llama 2's ``<s>``/``</s>``/``<unk>``; Llama 3's
  ``<|begin_of_text|>``, header and ``<|eot_id|>`` tokens and the Instruct model's chat template.
- **Datasets** (:func:`datasets`): the files of each hub dataset the gpu profile reads, in its
  splits, layout and columns (PG-19's parquet, the-stack-smol's JSON lines, RedPajama's JSONL
  sample files, UltraChat 200K's ``train_sft`` parquet of ``messages``), with text from ``texts``.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import data, models

# Meta-Llama-3-8B-Instruct's tokenizer_config.json chat_template
LLAMA3_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim "
    "+ '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
LLAMA3_SPECIALS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
]
LLAMA2, LLAMA3 = "meta-llama/Llama-2-7b-hf", "meta-llama/Meta-Llama-3-8B-Instruct"
# hub id -> (tokenizer family, instruct, the released model it extends, its RoPE and window)
CHECKPOINTS = {
    LLAMA2: ("llama2", False, LLAMA2, {}, 4096),
    "togethercomputer/LLaMA-2-7B-32K": (
        "llama2", False, LLAMA2, {"method": "linear", "factor": 8.0}, 32768
    ),
    LLAMA3: ("llama3", True, LLAMA3, {}, 8192),
    "namespace-Pt/Llama-3-8B-Instruct-80K-QLoRA-Merged": (
        "llama3", True, LLAMA3, {"method": "default", "base": 200e6}, 81920
    ),
    "princeton-nlp/Llama-3-8B-ProLong-64k-Base": (
        "llama3", False, LLAMA3, {"method": "default", "base": 8e6}, 65536
    ),
    "princeton-nlp/Llama-3-8B-ProLong-512k-Base": (
        "llama3", False, LLAMA3, {"method": "default", "base": 128e6}, 524288
    ),
}  # fmt: skip
TOY = {"hidden_size": 64, "num_hidden_layers": 2, "head_dim": 16, "intermediate_size": 128}
# Llama 3's vocabulary is larger than Llama 2's (128,256 against 32,000), and lcx tells the two
# families' runs apart by it (chapter 06 fine-tunes only other chapters' runs of its tokenizer)
VOCAB = {"llama2": 384, "llama3": 512}


def tokenizer(family: str, texts: list[str], instruct: bool = False, vocab_size: int = 512):
    """A small byte-level BPE trained on ``texts`` with the special tokens, BOS/EOS and chat
    template of ``family`` ("llama2" or "llama3"), and, as the real ones, no pad token."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers, processors, trainers
    from tokenizers import models as tok_models
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>"] if family == "llama2" else LLAMA3_SPECIALS
    tok = Tokenizer(tok_models.BPE(unk_token="<unk>" if family == "llama2" else None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos = "<s>" if family == "llama2" else "<|begin_of_text|>"
    eos = "</s>" if family == "llama2" else ("<|eot_id|>" if instruct else "<|end_of_text|>")
    # both prepend BOS when asked for special tokens (lcx's data encodes without them)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))]
    )
    kw = {"bos_token": bos, "eos_token": eos}
    if family == "llama2":
        kw["unk_token"] = "<unk>"
    out = PreTrainedTokenizerFast(tokenizer_object=tok, **kw)
    if family == "llama3":
        out.add_special_tokens({"additional_special_tokens": LLAMA3_SPECIALS[2:4]})
        if instruct:
            out.chat_template = LLAMA3_CHAT_TEMPLATE
    return out


def checkpoint(hub_id: str, folder: Path, texts: list[str], divisor: int = 1) -> Path:
    """The stand-in for ``hub_id`` (a key of :data:`CHECKPOINTS`): its tokenizer
    (:func:`tokenizer`) and a random Llama of its architecture at toy width, in bfloat16 as the
    releases are, saved into ``folder``; its window divided by ``divisor`` (the rehearsal's
    :data:`lcx.profiles.REHEARSAL_DIVISOR`)."""
    import torch

    family, instruct, released, rope, window = CHECKPOINTS[hub_id]
    tok = tokenizer(family, texts, instruct, VOCAB[family])
    paper = models.paper_config(released, **rope)
    groups = paper.num_attention_heads // paper.num_key_value_heads  # grouped-query ratio
    config = paper.__class__(
        **{
            **paper.to_dict(),
            **TOY,
            "num_attention_heads": 4,
            "num_key_value_heads": max(1, 4 // groups),
            "vocab_size": len(tok),
            "max_position_embeddings": window // divisor,
            "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id,
            "pad_token_id": None,
        }
    )
    folder = Path(folder)
    models.new_model(config, seed=0).to(torch.bfloat16).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _parquet(path: Path, rows: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def datasets(folder: Path, texts: list[str]) -> Path:
    """The gpu profile's hub datasets as files in their repositories' layouts under ``folder``,
    built from ``texts`` (each a document)."""
    folder = Path(folder)
    third = max(1, len(texts) // 3)
    for split, part in (("train", texts), ("validation", texts[:third]), ("test", texts[-third:])):
        rows = [
            {"short_book_title": f"Book {i}", "publication_date": 1900, "url": "", "text": t}
            for i, t in enumerate(part)
        ]
        _parquet(folder / "emozilla/pg19/data" / f"{split}-00000-of-00001.parquet", rows)
    code = [
        {"content": t, "lang": "Python", "path": f"m{i}.py", "repository_name": f"r/{i}", "size": len(t)}
        for i, t in enumerate(texts)
    ]  # fmt: skip
    _jsonl(folder / "bigcode/the-stack-smol/data/python/data.json", code)
    for part in ("arxiv_sample", "book_sample", "wikipedia_sample"):
        rows = [{"text": t, "meta": json.dumps({"source": part})} for t in texts]
        _jsonl(folder / "togethercomputer/RedPajama-Data-1T-Sample" / f"{part}.jsonl", rows)
    chats = [
        {
            "prompt": t[:80],
            "prompt_id": str(i),
            "messages": [
                {"content": f"What does this say? {t[:200]}", "role": "user"},
                {"content": t[200:400] or t[:100], "role": "assistant"},
            ],
        }
        for i, t in enumerate(texts)
    ]
    for split in ("train_sft", "test_sft"):
        _parquet(folder / data.ULTRACHAT / "data" / f"{split}-00000-of-00001.parquet", chats)
    return folder


def build(folder: Path, texts: list[str], divisor: int = 1) -> Path:
    """Every stand-in the gpu profile loads (:data:`CHECKPOINTS` and :func:`datasets`) under
    ``folder``, laid out by hub id: what ``LCX_HUB_MIRROR`` points at. ``divisor``: the
    checkpoints' windows are divided by it (:func:`checkpoint`)."""
    folder = Path(folder)
    for hub_id in CHECKPOINTS:
        checkpoint(hub_id, folder / hub_id, texts, divisor)
    datasets(folder, texts)
    return folder
