"""Tokenizers and Llama models: tiny ones trained here, real ones loaded on a GPU box.

The ``tiny`` and ``cpu`` profiles train a byte-level BPE and small ``LlamaForCausalLM`` models from
scratch; the ``gpu``/``paper`` profiles load the papers' checkpoints by hub name through the same
functions (a local checkpoint folder works in place of a hub name, which is how the tests run that
path). RoPE changes go through :mod:`lcx.rope` into ``config.rope_parameters``; since transformers
keeps ``inv_freq`` as a non-persistent buffer, :func:`with_rope` builds a new model from the edited
config and loads the weights strictly.
"""

from __future__ import annotations

import copy
import inspect
import math
from pathlib import Path

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from transformers.models.llama import modeling_llama

from . import attention, cache, hub, rope

SPECIAL_TOKENS = {"bos_token": "<|bos|>", "eos_token": "<|eos|>", "pad_token": "<|pad|>"}
VOCAB_SIZE = {"tiny": 512, "cpu": 4096}
TOKENIZER_SAMPLE_BYTES = {"tiny": 1_000_000, "cpu": 24_000_000}

# Tiny Llamas. `small` (~1.5M parameters with a 4K vocabulary) trains at ~10K tokens/s on 2 cores;
# `base` (~5.5M) at ~3-4K. Head dimension 64 where the budget allows (Llama's is 128).
SIZES = {
    "tiny": dict(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        head_dim=32,
        intermediate_size=192,
    ),
    "small": dict(
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        head_dim=64,
        intermediate_size=384,
    ),
    "base": dict(
        hidden_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        head_dim=64,
        intermediate_size=768,
    ),
}

# The papers' models, written out so they can be instantiated without the hub (on the meta device).
PAPER_CONFIGS = {
    "meta-llama/Llama-2-7b-hf": dict(
        vocab_size=32000,
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    ),
    "meta-llama/Meta-Llama-3-8B-Instruct": dict(
        vocab_size=128256,
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=8192,
        rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
    ),
}


# --- tokenizer -------------------------------------------------------------------------------------


def train_tokenizer(texts, vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE with every digit its own pre-token, so a number is one token per digit
    (retrieval answers are scored per digit)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)


def _tokenizer_sample(corpus, max_bytes: int) -> list[str]:
    """An even sample of training documents across domains, up to ``max_bytes`` in all."""
    train = corpus["train"]
    domains = sorted(set(train["domain"]))
    per_domain = max_bytes // len(domains)
    texts = []
    for domain in domains:
        budget = per_domain
        for text in train.filter(lambda r, d=domain: r["domain"] == d, keep_in_memory=True)["text"]:
            if budget <= 0:
                break
            texts.append(text[:budget])
            budget -= len(texts[-1])
    return texts


def load_tokenizer(
    profile: str, corpus=None, hub_name: str | None = None
) -> PreTrainedTokenizerFast:
    """The profile's tokenizer: trained on ``corpus`` and cached (tiny/cpu), or the checkpoint's
    own (``hub_name``, gpu/paper)."""
    if profile in ("gpu", "paper"):
        from transformers import AutoTokenizer

        if hub_name is None:
            raise ValueError(f"profile {profile!r} loads the checkpoint's tokenizer: pass hub_name")
        source = hub.resolve(hub_name)  # a local stand-in under $LCX_HUB_MIRROR, else the hub
        pinned = hub.pretrained_kwargs(source)  # the commit lcx.hub.REVISIONS pins
        tok = AutoTokenizer.from_pretrained(source, **pinned)
        if tok.pad_token is None:  # Llama 2 and 3 ship none; lcx masks padding by position
            tok.pad_token = tok.eos_token
        tok.key = "hub-" + str(hub_name).strip("/").replace("/", "--")  # for cache keys
        if pinned:
            tok.key += "@" + pinned["revision"]
        return tok
    if corpus is None:
        from .data import load_corpus

        corpus = load_corpus(profile)
    vocab, sample = VOCAB_SIZE[profile], TOKENIZER_SAMPLE_BYTES[profile]

    def build(folder: Path) -> None:
        train_tokenizer(_tokenizer_sample(corpus, sample), vocab).save_pretrained(folder)

    folder = cache.cached(
        "tokenizer",
        {
            "vocab_size": vocab,
            "sample_bytes": sample,
            "version": 1,
            "code": cache.code_fingerprint("models"),  # train_tokenizer, _tokenizer_sample
        },
        build,
        inputs=[corpus.key],
    )
    tok = PreTrainedTokenizerFast.from_pretrained(folder)
    tok.key = folder.name
    return tok


# --- models ------------------------------------------------------------------------------------------


def tiny_config(
    size: str, vocab_size: int, window: int, rope_base: float, **overrides
) -> LlamaConfig:
    """A tiny Llama: ``size`` from :data:`SIZES`, native window ``window``, plain RoPE at ``rope_base``."""
    if size not in SIZES:
        raise ValueError(f"size={size!r} is not one of {tuple(SIZES)}")
    params = {**SIZES[size], "num_key_value_heads": SIZES[size]["num_attention_heads"], **overrides}
    return LlamaConfig(
        vocab_size=vocab_size,
        max_position_embeddings=window,
        rope_parameters={"rope_type": "default", "rope_theta": float(rope_base)},
        tie_word_embeddings=False,
        use_cache=False,  # packed training: the cache would let documents see each other
        attn_implementation=attention.implementation(),
        **params,
    )


def new_model(config: LlamaConfig, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return install_xpos(LlamaForCausalLM(config))


def with_rope(
    model: LlamaForCausalLM,
    method: str,
    base: float | None = None,
    factor: float = 1.0,
    xpos: dict | None = None,
    **kw,
):
    """A copy of ``model`` using RoPE ``method`` (see :func:`lcx.rope.apply_rope`), weights loaded
    strictly; ``xpos`` (keyword arguments of :func:`xpos_settings`) adds xPos's decay on top. The
    copy is made on ``model``'s device (a base model on a GPU stays there: a CPU copy of it would
    train on the CPU once quantized, :func:`quantize_nf4`)."""
    config = rope.apply_rope(model.config, method, base=base, factor=factor, **kw)
    if xpos is not None:
        config.xpos = xpos_settings(**xpos)
    elif hasattr(config, "xpos"):  # plain RoPE from an xPos model (configs without it keep
        del config.xpos  # their old cache keys)
    with torch.device(next(model.parameters()).device):
        new = install_xpos(LlamaForCausalLM(config))
    # RoPE's frequencies are buffers computed in fp32: a bf16 cast of the model would round them
    # too (turning position 32K's angles by radians), so they keep the values made for the config
    computed = dict(new.named_buffers())
    new.to(dtype=model.dtype)
    for name, buffer in computed.items():
        owner, _, attr = name.rpartition(".")
        new.get_submodule(owner)._buffers[attr] = buffer
    new.load_state_dict(model.state_dict(), strict=True)
    return new


# --- xPos (Sun et al., 2022), as Llama 2 Long's xPos-ABF variant uses it ---------------------------

# exp(82) ~ 4e35: the largest per-dimension scale a query or key may carry. bf16 and fp32 both stop
# at ~3.4e38, which leaves ~1000x for the unscaled values themselves.
XPOS_MAX_LOG_SCALE = 82.0


def xpos_settings(scale_base: float, center: int, gamma: float = 0.4) -> dict:
    """xPos's parameters as they are stored in a model config (``config.xpos``).

    Queries at position n are scaled by ``zeta ** ((n - center) / scale_base)`` per rotation pair
    and keys at m by the inverse (:func:`lcx.rope.xpos_scale`), so their product decays as
    ``zeta ** ((n - m) / scale_base)``; ``center`` only keeps each factor finite (torchscale
    centres on the sequence too) and leaves every score unchanged. xPos's defaults are
    ``scale_base=512, gamma=0.4`` at a ~2-4K window.
    """
    if scale_base <= 0 or not 0 < gamma:
        raise ValueError(f"xPos needs scale_base > 0 and gamma > 0, got {scale_base}, {gamma}")
    return {"scale_base": float(scale_base), "center": int(center), "gamma": float(gamma)}


def xpos_max_distance(settings: dict, head_dim: int) -> int:
    """How far from ``center`` a position may be before a scale would pass
    :data:`XPOS_MAX_LOG_SCALE` (the smallest decay rate sets the limit)."""
    zeta_min = float(rope.xpos_zeta(head_dim, settings["gamma"]).min())
    return int(XPOS_MAX_LOG_SCALE * settings["scale_base"] / -math.log(zeta_min))


class XPosLlamaAttention(modeling_llama.LlamaAttention):
    """transformers' ``LlamaAttention`` with xPos: after RoPE, queries are scaled by
    ``zeta ** ((n - c) / scale_base)`` and keys by the inverse, before the KV cache stores them, so
    cached decoding and packed documents (``position_ids`` restarting at 0) see the same scores as
    one full forward. Everything else is the parent's code path (any attention implementation)."""

    def forward(self, hidden_states, position_embeddings=None, attention_mask=None, **kwargs):
        # The KV cache arrives as ``past_key_values`` up to transformers 5.23 and as ``cache`` from
        # 5.24 on (the decoder layer passes it by that name); either way it must store the keys
        # after xPos's scaling, or cached decoding scores differ from one full forward.
        cache = kwargs.pop("cache", None)
        legacy = kwargs.pop("past_key_values", None)
        cache = legacy if cache is None else cache
        settings = self.config.xpos
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        query = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        key = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        value = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        cos, sin = position_embeddings
        query, key = modeling_llama.apply_rotary_pos_emb(query, key, cos, sin)

        positions = kwargs.get("position_ids")
        if positions is None:
            raise ValueError("xPos needs position_ids (LlamaModel passes them to every layer)")
        offset = positions.to(torch.float32) - settings["center"]
        limit = xpos_max_distance(settings, self.head_dim)
        if offset.abs().max() > limit:
            raise ValueError(
                f"xPos with scale_base={settings['scale_base']} and center={settings['center']} "
                f"keeps scales finite for positions within {limit} of the center; got position "
                f"{int(positions.max())} (raise scale_base or move the center)"
            )
        half = rope.xpos_scale(
            offset.reshape(-1).cpu(), self.head_dim, settings["scale_base"], settings["gamma"]
        ).reshape(*offset.shape, -1)
        scale = torch.cat([half, half], -1)[:, None].to(query.device)  # (batch, 1, seq, head_dim)
        query = query * scale.to(query.dtype)
        key = key / scale.to(key.dtype)

        if cache is not None:
            key, value = cache.update(key, value, self.layer_idx)
        interface = modeling_llama.ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, modeling_llama.eager_attention_forward
        )
        output, weights = interface(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=0.0 if not self.training else self.attention_dropout,
            scaling=self.scaling,
            **kwargs,
        )
        return self.o_proj(output.reshape(*input_shape, -1).contiguous()), weights


def set_xpos_center(model, center: int):
    """Move an xPos model's centre (every score stays the same; only which positions keep finite
    scales changes: within :func:`xpos_max_distance` of it). Returns the model."""
    model.config.xpos = {**model.config.xpos, "center": int(center)}
    return model


# The arguments of transformers' LlamaAttention.forward that XPosLlamaAttention.forward handles
# (the cache by either name). A release that adds another fails loudly here instead of silently.
XPOS_KNOWN_ARGS = {
    *("self", "hidden_states", "position_embeddings", "attention_mask", "kwargs"),
    *("past_key_values", "cache"),
}


def install_xpos(model):
    """Turn every attention layer of ``model`` into :class:`XPosLlamaAttention` when its config
    carries ``xpos`` settings (weights untouched); a model without them is returned as it is."""
    if getattr(model.config, "xpos", None):
        unknown = set(inspect.signature(modeling_llama.LlamaAttention.forward).parameters)
        unknown -= XPOS_KNOWN_ARGS
        if unknown:
            raise RuntimeError(
                f"transformers {transformers.__version__}'s LlamaAttention.forward takes "
                f"{sorted(unknown)}, which lcx's xPos attention does not handle"
            )
        for layer in model.model.layers:
            if type(layer.self_attn) is modeling_llama.LlamaAttention:
                layer.self_attn.__class__ = XPosLlamaAttention
    return model


def paper_config(
    name: str, method: str = "default", base: float | None = None, factor: float = 1.0, **kw
) -> LlamaConfig:
    """A paper model's config (no hub needed) with a RoPE recipe applied."""
    if name not in PAPER_CONFIGS:
        raise ValueError(f"unknown paper model {name!r}; have {tuple(PAPER_CONFIGS)}")
    config = LlamaConfig(**copy.deepcopy(PAPER_CONFIGS[name]), tie_word_embeddings=False)
    return rope.apply_rope(config, method, base=base, factor=factor, **kw)


def meta_model(config: LlamaConfig) -> LlamaForCausalLM:
    """The model on the meta device: shapes and parameter counts without allocating weights."""
    with torch.device("meta"):
        return LlamaForCausalLM(config)


def count_parameters(model, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")  # Llama-3 80K's adapted projections


def add_lora(
    model,
    r: int,
    alpha: int,
    targets=LORA_TARGETS,
    modules_to_save=(),
    dropout: float = 0.0,
):
    """Wrap ``model`` with peft LoRA adapters (Llama-3 80K: r=32, alpha=16 on q, k, v, o, plus the
    embeddings trained in full through ``modules_to_save``)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        target_modules=list(targets),
        lora_dropout=dropout,
        modules_to_save=list(modules_to_save) or None,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def quantize_nf4(model, compute_dtype=torch.float32):
    """A 4-bit NF4 copy of ``model`` (QLoRA's frozen base; the original is left untouched).

    The copy goes through ``save_pretrained``/``from_pretrained`` with a ``BitsAndBytesConfig``, as a
    hub checkpoint would load; bitsandbytes quantizes the linear layers (not the embeddings or the
    head) and runs on CPU as well as GPU. The copy is placed where ``model`` is: loaded without a
    ``device_map`` it would stay on the CPU, and the Trainer never moves a bitsandbytes model
    (transformers' ``Trainer.__init__`` skips ``_move_model_to_device`` for one), so a QLoRA run
    on a GPU would train on the CPU, or fail on inputs sent to the GPU.
    """
    import tempfile

    from transformers import BitsAndBytesConfig

    where = next(model.parameters()).device
    placed = {} if where.type == "cpu" else {"device_map": {"": str(where)}}
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        return install_xpos(
            LlamaForCausalLM.from_pretrained(
                tmp,
                attn_implementation=model.config._attn_implementation,
                quantization_config=BitsAndBytesConfig(
                    load_in_4bit=True,
                    bnb_4bit_quant_type="nf4",
                    bnb_4bit_compute_dtype=compute_dtype,
                ),
                **placed,
            )
        )


def merge_lora(model, trained, lora: dict):
    """Merge the adapters (and ``modules_to_save``) of the peft model ``trained`` into ``model``.

    For QLoRA ``trained`` wraps a 4-bit copy of ``model``; merging into the full-precision weights
    (not re-quantizing) keeps the update exactly low-rank, as the Llama-3 80K release does.
    """
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    full = add_lora(model, **lora)
    set_peft_model_state_dict(full, get_peft_model_state_dict(trained))
    return full.merge_and_unload()


def device() -> torch.device:
    """Where models run: the GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_pretrained(
    name_or_path: str,
    method: str | None = None,
    base: float | None = None,
    factor: float = 1.0,
    dtype=None,
    attn_implementation: str | None = None,
    load_in_4bit: bool = False,
    device_map=None,
    **rope_kw,
):
    """A checkpoint by hub name or local folder, with an optional RoPE recipe and 4-bit NF4 weights,
    placed by ``device_map`` (None: all of it on :func:`device`), in ``dtype`` (None: on a GPU
    bf16, the type every run of the book computes and is evaluated in there; Llama-2-7b-hf's
    config says float16, which transformers would load it in; on the CPU the checkpoint's own).

    The RoPE change goes into the config before loading, so the weights load unchanged into a model
    with the new frequencies. ``bitsandbytes`` is imported only when ``load_in_4bit`` is set. A hub
    id loads at the commit :data:`lcx.hub.REVISIONS` pins.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    name_or_path = hub.resolve(name_or_path)  # a local stand-in under $LCX_HUB_MIRROR
    pinned = hub.pretrained_kwargs(name_or_path)
    config = AutoConfig.from_pretrained(name_or_path, **pinned)
    if method is not None:
        config = rope.apply_rope(config, method, base=base, factor=factor, **rope_kw)
    kwargs = {
        "config": config,
        "attn_implementation": attention.implementation(attn_implementation),
        "device_map": {"": str(device())} if device_map is None else device_map,
        **pinned,
    }
    if dtype is None and device().type != "cpu":
        dtype = torch.bfloat16
    if dtype is not None:
        kwargs["dtype"] = dtype
    if load_in_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=dtype or torch.float32,
        )
    return AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs)


# --- Unsloth (gpu profile), without its silent interpolation -----------------------------------------


def rope_problems(model, base: float) -> list[str]:
    """Ways ``model``'s RoPE differs from plain RoPE at ``base`` (an ABF recipe): a scaling entry in
    its config (``rope_parameters``/``rope_scaling`` with a factor or a non-default type), a
    ``scaling_factor`` on its rotary module (Unsloth's linear-scaling class divides positions by
    it), or inverse frequencies that are not ``base ** (-2j/d)``. Empty when the recipe holds."""
    problems = []
    config = model.config
    for field in ("rope_parameters", "rope_scaling"):
        params = getattr(config, field, None) or {}
        kind = params.get("rope_type", params.get("type", "default"))
        if kind != "default" or float(params.get("factor", 1.0) or 1.0) != 1.0:
            problems.append(f"config.{field} = {params} (interpolation, not a base change)")
    rotary = getattr(getattr(model, "model", model), "rotary_emb", None)
    if rotary is None:  # older layouts keep one per attention layer
        layer = model.model.layers[0].self_attn
        rotary = getattr(layer, "rotary_emb", None)
    factor = float(getattr(rotary, "scaling_factor", 1.0) or 1.0)
    if factor != 1.0:
        problems.append(f"{type(rotary).__name__}.scaling_factor = {factor} (positions / {factor})")
    inv = getattr(rotary, "inv_freq", None)
    if inv is not None:
        want = rope.inv_freq(2 * inv.numel(), base)
        if not torch.allclose(inv.double().cpu(), want, rtol=1e-3, atol=0):
            problems.append(
                f"inv_freq is not base {base:g}'s (first {float(inv[1]):.3g} vs {float(want[1]):.3g})"
            )
    return problems


def unsloth_model(
    name_or_path: str,
    max_seq_length: int,
    rope_theta: float,
    load_in_4bit: bool = True,
    dtype=None,
    fast_language_model=None,
    **kw,
):
    """Load a checkpoint through Unsloth at ``max_seq_length`` with RoPE base ``rope_theta`` and no
    interpolation.

    Unsloth compares ``max_seq_length`` with the checkpoint's ``max_position_embeddings`` and, when
    it is longer and no ``rope_scaling`` is passed, silently switches on linear interpolation
    ("kaiokendev's RoPE scaling") on top of whatever base the recipe set: an ABF recipe such as
    Llama-3 80K's (base 500K -> 200M) would train with both. So the checkpoint is presented through
    a folder whose config already says ``max_position_embeddings = max_seq_length`` and
    ``rope_theta = rope_theta`` (every other file a symlink to the original), and the loaded model
    is checked with :func:`rope_problems`; anything left raises ``RuntimeError``.
    ``fast_language_model`` defaults to ``unsloth.FastLanguageModel`` (imported here: it needs a
    GPU); returns Unsloth's ``(model, tokenizer)``.
    """
    import json
    import tempfile

    if fast_language_model is None:
        from unsloth import FastLanguageModel as fast_language_model
    source = Path(hub.resolve(str(name_or_path)))
    if not source.is_dir():
        from huggingface_hub import snapshot_download

        source = Path(
            snapshot_download(
                name_or_path,
                ignore_patterns=hub.SNAPSHOT_IGNORE,
                **hub.pretrained_kwargs(name_or_path),
            )
        )
    folder = Path(tempfile.mkdtemp(prefix="lcx-unsloth-"))
    for item in source.iterdir():
        if item.name != "config.json":
            (folder / item.name).symlink_to(item.resolve())
    config = json.loads((source / "config.json").read_text())
    config["max_position_embeddings"] = int(max_seq_length)
    config.pop("rope_scaling", None)
    config["rope_theta"] = float(rope_theta)
    if "rope_parameters" in config:
        config["rope_parameters"] = {"rope_type": "default", "rope_theta": float(rope_theta)}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    model, tokenizer = fast_language_model.from_pretrained(
        model_name=str(folder),
        max_seq_length=max_seq_length,
        load_in_4bit=load_in_4bit,
        dtype=dtype,
        **kw,
    )
    problems = rope_problems(model, rope_theta)
    if problems:
        raise RuntimeError(
            "the model Unsloth returned does not use plain RoPE at base "
            f"{rope_theta:g}: " + "; ".join(problems)
        )
    return model, tokenizer


def unsloth_lora(
    model,
    r: int,
    alpha: int,
    targets=LORA_TARGETS,
    modules_to_save=(),
    dropout: float = 0.0,
    fast_language_model=None,
):
    """:func:`add_lora` through Unsloth: ``FastLanguageModel.get_peft_model`` on a model from
    :func:`unsloth_model` (already 4-bit), with Unsloth's offloaded gradient checkpointing
    (``use_gradient_checkpointing="unsloth"``, its long-context setting) and the same adapters."""
    if fast_language_model is None:
        from unsloth import FastLanguageModel as fast_language_model
    return fast_language_model.get_peft_model(
        model,
        r=r,
        lora_alpha=alpha,
        target_modules=list(targets),
        lora_dropout=dropout,
        bias="none",
        modules_to_save=list(modules_to_save) or None,
        use_gradient_checkpointing="unsloth",
    )
