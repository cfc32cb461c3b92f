"""Models: the papers' configs on the meta device against published sizes, the RoPE swap on a
trained model, and the gpu/paper loading path run against a local checkpoint folder."""

import pytest
import torch
from transformers.models.llama import modeling_llama

from lcx import attention, models, rope

# Published parameter counts (model cards / config-derived totals).
LLAMA2_7B = 6_738_415_616
LLAMA3_8B = 8_030_261_248


def test_paper_models_on_meta_device_match_published_sizes():
    l2 = models.meta_model(models.paper_config("meta-llama/Llama-2-7b-hf", "linear", factor=8.0))
    l3 = models.meta_model(
        models.paper_config("meta-llama/Meta-Llama-3-8B-Instruct", "default", base=2e8)
    )
    assert models.count_parameters(l2) == LLAMA2_7B
    assert models.count_parameters(l3) == LLAMA3_8B
    assert next(l3.parameters()).device.type == "meta"
    assert l2.config.rope_parameters == {"rope_type": "linear", "rope_theta": 1e4, "factor": 8.0}
    assert l2.config.max_position_embeddings == 32768
    assert l3.config.rope_parameters["rope_theta"] == 2e8


def test_llama3_80k_qlora_trainable_parameters():
    """LoRA r=32 on q,k,v,o of Llama-3-8B plus trained embeddings (Llama-3 80K §2), counted by hand."""
    m = models.meta_model(models.paper_config("meta-llama/Meta-Llama-3-8B-Instruct", base=2e8))
    peft_model = models.add_lora(m, r=32, alpha=16, modules_to_save=["embed_tokens"])
    h, kv, layers, r, vocab = 4096, 1024, 32, 32, 128256
    lora = layers * (r * (h + h) + r * (h + kv) * 2 + r * (h + h))  # q, k, v, o: r x (in + out)
    assert models.count_parameters(peft_model, trainable_only=True) == lora + vocab * h


@pytest.fixture
def checkpoint(tmp_path):
    config = models.tiny_config("tiny", 300, 64, 520.0)
    model = models.new_model(config, seed=1)
    model.save_pretrained(tmp_path / "ckpt")
    return model, tmp_path / "ckpt"


def test_save_load_roundtrip_identical_logits(checkpoint):
    model, path = checkpoint
    loaded = models.load_pretrained(str(path), attn_implementation="eager")
    x = torch.randint(0, 300, (2, 50))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, model.eval()(x).logits, rtol=1e-5, atol=1e-5)


def test_rope_swap_keeps_weights_and_changes_only_positions(checkpoint):
    model, path = checkpoint
    pi = models.with_rope(model, "linear", factor=8.0)
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), pi.state_dict().values(), strict=True)
    )
    inv = pi.model.rotary_emb.inv_freq
    torch.testing.assert_close(
        inv.double(), rope.inv_freq(32, 520.0, "linear", 8.0), rtol=1e-6, atol=0
    )
    # Loading a checkpoint with a recipe (the gpu path) gives the same model as swapping after loading.
    loaded = models.load_pretrained(
        str(path), method="linear", factor=8.0, attn_implementation="eager"
    )
    x = torch.randint(0, 300, (1, 200))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, pi.eval()(x).logits, rtol=1e-5, atol=1e-5)
        assert (model(x).logits - pi(x).logits).abs().max() > 1e-3  # positions changed


def test_lora_on_local_checkpoint_trains_only_adapters(checkpoint):
    _, path = checkpoint
    m = models.add_lora(
        models.load_pretrained(str(path)), r=4, alpha=8, modules_to_save=["embed_tokens"]
    )
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "embed_tokens" in n for n in trainable)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    x = torch.randint(0, 300, (2, 32))
    for _ in range(3):
        loss = m(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    changed = {n for n, p in m.named_parameters() if not torch.equal(p, before[n])}
    assert changed <= trainable and any("lora_B" in n for n in changed)


def test_tokenizer_splits_digits(tmp_path):
    tok = models.train_tokenizer(
        ["The pass key is 12345. " * 50, "def f(x):\n    return x + 1\n" * 50], 300
    )
    ids = tok("key 98765", add_special_tokens=False)["input_ids"]
    digits = [tok.decode([i]) for i in ids if tok.decode([i]).strip().isdigit()]
    assert digits == list("98765")
    tok.save_pretrained(tmp_path)
    assert type(tok).from_pretrained(tmp_path)("12")["input_ids"] == tok("12")["input_ids"]


def test_qlora_gradients_match_a_dequantized_fp32_reference(checkpoint):
    """QLoRA on CPU: LoRA gradients through 4-bit NF4 weights equal those of an fp32 model whose
    weights are the dequantized NF4 values (bitsandbytes' own dequantize_4bit)."""
    import bitsandbytes as bnb

    _, path = checkpoint
    torch.manual_seed(0)
    q = models.add_lora(
        models.load_pretrained(str(path), load_in_4bit=True, attn_implementation="eager"),
        r=4,
        alpha=8,
    )
    ref = models.add_lora(
        models.load_pretrained(str(path), attn_implementation="eager"), r=4, alpha=8
    )
    q_params, ref_params = dict(q.named_parameters()), dict(ref.named_parameters())
    with torch.no_grad():
        for name, module in q.named_modules():
            if isinstance(module, bnb.nn.Linear4bit):
                deq = bnb.functional.dequantize_4bit(module.weight.data, module.weight.quant_state)
                ref.get_submodule(name).weight.copy_(deq)
        for name, p in q_params.items():
            if "lora_" in name:
                p.copy_(torch.randn_like(p) * 0.1)  # non-zero B so that A gets gradients too
                ref_params[name].copy_(p)
    x = torch.randint(0, 300, (2, 40))
    loss_q, loss_ref = q(input_ids=x, labels=x).loss, ref(input_ids=x, labels=x).loss
    loss_q.backward()
    loss_ref.backward()
    assert loss_q.item() == pytest.approx(loss_ref.item(), rel=1e-5)
    lora = [n for n in q_params if "lora_" in n]
    assert lora
    # The 4-bit kernels reduce in another order: compare at 1% of the gradient's norm (against the
    # original, non-quantized weights the gradients differ by ~19%, so this still tells them apart).
    for n in lora:
        g, g_ref = q_params[n].grad, ref_params[n].grad
        assert (g - g_ref).norm() <= 1e-2 * g_ref.norm(), n


# --- xPos (Llama 2 Long's xPos-ABF) ---------------------------------------------------------------


@pytest.fixture
def xpos_model(checkpoint):
    model, _ = checkpoint
    settings = {"scale_base": 16.0, "center": 100}
    return models.with_rope(model, "default", base=26000.0, xpos=settings).eval()


def test_xpos_scores_match_the_rotate_then_scale_reference(xpos_model):
    """Layer 0's attention scores against lcx.rope.apply_rotary's uncentred xPos (tested against
    torchscale's formula in test_rope): queries and keys captured where attention receives them."""
    seen = {}
    layer = xpos_model.model.layers[0]
    layer.register_forward_pre_hook(lambda mod, args: seen.update(h=args[0]))
    captured = {}

    def capture(module, query, key, value, mask, **kw):
        if module.layer_idx == 0:
            captured.update(q=query, k=key)
        return modeling_llama.eager_attention_forward(module, query, key, value, mask, **kw)

    modeling_llama.ALL_ATTENTION_FUNCTIONS["lcx_capture"] = capture
    try:
        xpos_model.config._attn_implementation = "lcx_capture"
        x = torch.randint(0, 300, (1, 60))
        with torch.no_grad():
            xpos_model(x)
    finally:
        xpos_model.config._attn_implementation = "eager"
        del modeling_llama.ALL_ATTENTION_FUNCTIONS["lcx_capture"]
    attn = layer.self_attn
    with torch.no_grad():
        h = layer.input_layernorm(seen["h"])[0].double()
        q = (h @ attn.q_proj.weight.double().T).view(60, -1, 32).transpose(0, 1)
        k = (h @ attn.k_proj.weight.double().T).view(60, -1, 32).transpose(0, 1)
    theta = rope.inv_freq(32, 26000.0)
    pos = torch.arange(60)
    q_ref = rope.apply_rotary(q, pos, theta, xpos_scale_base=16.0)
    k_ref = rope.apply_rotary(k, pos, theta, xpos_scale_base=16.0, key=True)
    ours = captured["q"][0].double() @ captured["k"][0].double().transpose(-1, -2)
    torch.testing.assert_close(ours, q_ref @ k_ref.transpose(-1, -2), rtol=1e-4, atol=1e-4)
    # and it is not plain RoPE: the decay changes the far scores
    plain = rope.apply_rotary(q, pos, theta) @ rope.apply_rotary(k, pos, theta).transpose(-1, -2)
    assert (ours - plain).abs().max() > 1e-3


def test_xpos_cached_decoding_and_packing_match_one_forward(xpos_model):
    x = torch.randint(0, 300, (1, 48))
    with torch.no_grad():
        full = xpos_model(x, use_cache=False).logits
        first = xpos_model(x[:, :40], use_cache=True)
        cache = first.past_key_values
        steps = [first.logits]
        for t in range(40, 48):
            out = xpos_model(x[:, t : t + 1], past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            steps.append(out.logits)
        torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-4, atol=1e-4)
        # two documents packed with position ids restarting = each document alone
        a, b = torch.randint(0, 300, (1, 20)), torch.randint(0, 300, (1, 28))
        pos = torch.cat([torch.arange(20), torch.arange(28)])[None]
        packed = xpos_model(**attention.packed_inputs(torch.cat([a, b], 1), pos)).logits
        alone = torch.cat([xpos_model(a).logits, xpos_model(b).logits], 1)
    torch.testing.assert_close(packed, alone, rtol=1e-4, atol=1e-4)


def test_xpos_survives_save_and_load_and_refuses_positions_it_cannot_scale(xpos_model, tmp_path):
    from lcx import train

    xpos_model.save_pretrained(tmp_path / "model")
    loaded = train.load_run(tmp_path).eval()
    assert type(loaded.model.layers[0].self_attn) is models.XPosLlamaAttention
    x = torch.randint(0, 300, (1, 30))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, xpos_model(x).logits)
    # the centre only keeps the scales finite: moving it leaves the logits as they were
    centred = models.set_xpos_center(loaded, 15)
    with torch.no_grad():
        torch.testing.assert_close(centred(x).logits, xpos_model(x).logits, rtol=1e-4, atol=1e-4)
    limit = models.xpos_max_distance(xpos_model.config.xpos, 32)
    far = torch.arange(100 + limit + 1, 100 + limit + 11)[None]
    with pytest.raises(ValueError, match="keeps scales finite"), torch.no_grad():
        xpos_model(input_ids=x[:, :10], position_ids=far)
    # a model without xPos settings is left as it is
    plain = models.with_rope(xpos_model, "default", base=520.0)
    assert type(plain.model.layers[0].self_attn) is modeling_llama.LlamaAttention
    assert "xpos" not in plain.config.to_dict()  # a run's cache key hashes the config


# --- the Unsloth guard (Llama-3 80K's recipe is a base change, never interpolation) --------------


class FakeUnsloth:
    """FastLanguageModel.from_pretrained's RoPE logic as Unsloth writes it (models/llama.py): the
    native length comes from the checkpoint's config, and a longer max_seq_length with no
    rope_scaling switches on linear interpolation. ``always`` interpolates regardless."""

    always = False

    @classmethod
    def from_pretrained(cls, model_name, max_seq_length, rope_scaling=None, **kw):
        from transformers import AutoConfig, LlamaForCausalLM

        config = AutoConfig.from_pretrained(model_name)
        native = config.max_position_embeddings
        if cls.always or (rope_scaling is None and max_seq_length > native):
            factor = max_seq_length / native if max_seq_length > native else 2.0
            theta = config.rope_parameters["rope_theta"]
            config.rope_parameters = {"rope_type": "linear", "rope_theta": theta, "factor": factor}
        return LlamaForCausalLM.from_pretrained(model_name, config=config), None


class FakeUnslothAlways(FakeUnsloth):
    always = True


def test_unsloth_guard_detects_and_prevents_silent_interpolation(checkpoint):
    model, path = checkpoint  # native window 64, base 520
    base = 520.0 * 400  # Llama-3 80K: 500K -> 200M
    naive, _ = FakeUnsloth.from_pretrained(str(path), max_seq_length=640)
    problems = models.rope_problems(naive, base)
    assert any("linear" in p for p in problems) and any("inv_freq" in p for p in problems)
    assert models.rope_problems(models.with_rope(model, "default", base=base), base) == []

    guarded, _ = models.unsloth_model(str(path), 640, base, fast_language_model=FakeUnsloth)
    assert models.rope_problems(guarded, base) == []
    assert guarded.config.max_position_embeddings == 640
    torch.testing.assert_close(
        guarded.model.rotary_emb.inv_freq.double(), rope.inv_freq(32, base), rtol=1e-6, atol=0
    )
    for a, b in zip(model.state_dict().values(), guarded.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # the same weights, only the positions changed
    with pytest.raises(RuntimeError, match="plain RoPE"):
        models.unsloth_model(str(path), 640, base, fast_language_model=FakeUnslothAlways)


def test_checkpoint_tokenizer_gets_a_pad_token_and_a_cache_key(tmp_path):
    """Llama 2 and 3 tokenizers have no pad token; the gpu path borrows EOS (padding is masked by
    position) and keys caches on the checkpoint's name. A local folder stands in for the hub."""
    from transformers import PreTrainedTokenizerFast

    tok = models.train_tokenizer(["The pass key is 12345. " * 50], 300)
    hub = PreTrainedTokenizerFast(tokenizer_object=tok.backend_tokenizer, eos_token="<|eos|>")
    assert hub.pad_token is None
    hub.save_pretrained(tmp_path / "org" / "model")
    got = models.load_tokenizer("gpu", hub_name=str(tmp_path / "org" / "model"))
    assert got.pad_token == "<|eos|>" and got.pad_token_id == got.eos_token_id
    assert got.key.startswith("hub-") and "/" not in got.key
    with pytest.raises(ValueError, match="hub_name"):
        models.load_tokenizer("gpu")


def test_corpus_tokens_on_gpu_tokenize_with_the_base_checkpoints_tokenizer(monkeypatch):
    from lcx import data, pretrained

    asked = {}
    monkeypatch.setattr(data, "load_corpus", lambda profile: "corpus")
    monkeypatch.setattr(data, "tokenize", lambda corpus, tok: (corpus, tok))
    monkeypatch.setattr(
        models,
        "load_tokenizer",
        lambda profile, corpus=None, hub_name=None: (
            asked.update(profile=profile, corpus=corpus, hub_name=hub_name) or "tok"
        ),
    )
    assert pretrained.corpus_tokens("gpu", "llama3") == ("tok", ("corpus", "tok"))
    assert asked == {
        "profile": "gpu",
        "corpus": None,
        "hub_name": "meta-llama/Meta-Llama-3-8B-Instruct",
    }
    pretrained.corpus_tokens("cpu")
    assert asked == {"profile": "cpu", "corpus": "corpus", "hub_name": None}
