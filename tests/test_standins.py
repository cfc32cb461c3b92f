"""The hub's checkpoints and datasets stood in for locally (lcx.standins), loaded through lcx's own
loaders as the gpu profile loads them, with LCX_HUB_MIRROR pointing at them: their architectures
and their tokenizers' quirks, and the hub datasets' layouts, splits and columns."""

import itertools

import pytest
import torch

from lcx import data, hub, models, standins

TEXTS = [
    f"Chapter {i}. The keeper of the lighthouse wrote in his log every night. " * 8
    + f"def f{i}(x):\n    return x + {i}\n"
    for i in range(12)
]


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    return standins.build(tmp_path_factory.mktemp("hub"), TEXTS)


def test_checkpoints_load_with_their_architecture_and_tokenizer_quirks(mirror, monkeypatch):
    monkeypatch.setenv("LCX_HUB_MIRROR", str(mirror))
    llama3 = "meta-llama/Meta-Llama-3-8B-Instruct"
    tok = models.load_tokenizer("gpu", hub_name=llama3)
    # Llama 3 ships no pad token: lcx uses EOS (<|eot_id|> for the Instruct model)
    assert tok.pad_token == tok.eos_token == "<|eot_id|>"
    assert tok.bos_token == "<|begin_of_text|>"
    text = tok.apply_chat_template([{"role": "user", "content": " hi "}], tokenize=False)
    assert text == "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
    assert tok("a")["input_ids"][0] == tok.bos_token_id  # BOS prepended, as the real one does
    model = models.load_pretrained(llama3)
    paper = models.paper_config(llama3)
    assert model.config.rope_parameters["rope_theta"] == paper.rope_parameters["rope_theta"]
    assert (
        model.config.num_attention_heads // model.config.num_key_value_heads
        == paper.num_attention_heads // paper.num_key_value_heads
    )
    assert model.config.vocab_size == len(tok) and model.config.max_position_embeddings == 8192
    with torch.no_grad():
        assert model(input_ids=torch.tensor([[1, 2, 3]])).logits.shape[-1] == len(tok)
    llama2 = models.load_tokenizer("gpu", hub_name="meta-llama/Llama-2-7b-hf")
    assert (llama2.bos_token, llama2.eos_token, llama2.pad_token) == ("<s>", "</s>", "</s>")
    assert llama2.chat_template is None  # a base model: no chat template
    together = models.load_pretrained("togethercomputer/LLaMA-2-7B-32K")
    assert together.config.rope_parameters["rope_type"] == "linear"
    assert together.config.rope_parameters["factor"] == 8.0
    assert hub.resolve("not/a-stand-in") == "not/a-stand-in"


def test_hub_datasets_stream_in_their_layouts_and_columns(mirror, monkeypatch):
    monkeypatch.setenv("LCX_HUB_MIRROR", str(mirror))
    pg19 = hub.dataset_stream("emozilla/pg19")
    assert next(iter(pg19))["text"] == TEXTS[0]
    test_split = list(hub.dataset_stream("emozilla/pg19", "test"))
    assert [r["text"] for r in test_split] == TEXTS[-4:]
    assert next(iter(hub.dataset_stream("bigcode/the-stack-smol")))["content"] == TEXTS[0]
    red = list(hub.dataset_stream("togethercomputer/RedPajama-Data-1T-Sample"))
    assert len(red) == 3 * len(TEXTS) and {r["text"] for r in red} == set(TEXTS)
    chats = list(itertools.islice(data.ultrachat(), 3))
    assert all(m[0]["role"] == "user" and m[1]["role"] == "assistant" for m in chats)


def test_chapter_01_reads_the_released_ropes_from_the_stand_ins(mirror, monkeypatch):
    """rope.hub_configs (chapter 01 on gpu) loads each released config through lcx.hub.resolve:
    with LCX_HUB_MIRROR, from the stand-ins (which carry each release's RoPE), never the hub."""
    import transformers

    from lcx import rope

    monkeypatch.setenv("LCX_HUB_MIRROR", str(mirror))
    read, load = [], transformers.AutoConfig.from_pretrained

    def reading(name, **kw):
        read.append(str(name))
        return load(name, **kw)

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", reading)
    table = rope.hub_configs()
    assert len(read) == len(table) > 0 and all(p.startswith(str(mirror)) for p in read)
    assert table["matches"].all(), table  # each stand-in has its release's base and RoPE type
