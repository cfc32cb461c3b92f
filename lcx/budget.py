"""Training compute as the papers count it (Llama 2 Long Table 10; Kaplan et al. 2020; PaLM App. B).

FLOPs per trained token = 6 N + 12 n_layer d_attn T: 6 N for the forward and backward pass through the
non-embedding parameters N (the input embedding is a lookup; the LM head is left out as in Kaplan et
al.), plus attention scores and values over a context of T tokens, counted without a causal discount.
With N excluding the head this reproduces Table 10's ratio of 32K to 4K training (2.00); the LM head
is real compute, so the throughput benchmark counts it (``include_head=True``).
"""

from __future__ import annotations


def non_embedding_parameters(config, include_head: bool = False) -> int:
    """Parameters in the transformer blocks and final norm (plus the LM head if asked)."""
    from .models import meta_model

    model = meta_model(config)
    n = sum(p.numel() for p in model.model.layers.parameters()) + sum(
        p.numel() for p in model.model.norm.parameters()
    )
    return n + (model.lm_head.weight.numel() if include_head else 0)


def flops_per_token(config, seq_len: int, include_head: bool = False) -> float:
    """6 N + 12 n_layer (n_heads x head_dim) T."""
    attn = 12 * config.num_hidden_layers * config.num_attention_heads * config.head_dim * seq_len
    return 6 * non_embedding_parameters(config, include_head) + attn


def train_flops(config, tokens: float, seq_len: int, include_head: bool = False) -> float:
    """Training FLOPs for ``tokens`` tokens in sequences of ``seq_len``."""
    return tokens * flops_per_token(config, seq_len, include_head)


def curriculum_flops(config, tokens: float, short: int, long: int, switch_at: float) -> float:
    """Llama 2 Long §4.4: the first ``switch_at`` of ``tokens`` at ``short``, the rest at ``long``
    (``switch_at=0``: long from scratch)."""
    if not 0 <= switch_at <= 1:
        raise ValueError(f"switch_at={switch_at!r} must be in [0, 1]")
    return train_flops(config, tokens * switch_at, short) + train_flops(
        config, tokens * (1 - switch_at), long
    )


# --- memory of one training step (Llama-3 80K's Q6: full fine-tuning vs LoRA vs QLoRA) -------------

GB = 1e9
METHODS = ("full", "lora", "qlora")


def lora_parameters(config, r: int, targets=("q_proj", "k_proj", "v_proj", "o_proj")) -> int:
    """LoRA's trainable parameters: r x (in + out) per targeted projection and layer."""
    h, layers = config.hidden_size, config.num_hidden_layers
    q = config.num_attention_heads * config.head_dim
    kv = config.num_key_value_heads * config.head_dim
    shapes = {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h)}
    return layers * sum(r * sum(shapes[t]) for t in targets)


def memory_plan(
    config,
    seq_len: int,
    method: str,
    batch: int = 1,
    r: int = 32,
    train_embeddings: bool = True,
    checkpointing: bool = True,
    chunked_loss: bool = False,
) -> dict:
    """Bytes one training step needs on one device, by part, in the usual accounting (ZeRO paper §3;
    QLoRA §2; Korthikanti et al. 2022 for activations), with bf16 weights and activations:

    - ``weights``: every parameter in bf16 (2 bytes), or NF4 for QLoRA's frozen base (0.5 byte
      plus double-quantized block constants, ~0.127 bit per parameter, QLoRA §2) with the
      embeddings and head kept in bf16;
    - ``trainable``: per trained parameter a bf16 gradient (2), an fp32 master copy (4) and
      AdamW's two fp32 moments (8), i.e. 14 bytes on top of its weight (16 in all, as ZeRO counts);
      full fine-tuning trains everything, (Q)LoRA the adapters and, with ``train_embeddings``, the
      input embeddings (Llama-3 80K trains them);
    - ``activations``: with ``checkpointing`` each layer keeps its input (2 B·T·h bytes) and one
      layer at a time is recomputed (34 B·T·h bytes, attention scores not stored, as with
      FlashAttention/SDPA); without it every layer keeps its 34 B·T·h;
    - ``logits``: the LM head's output in bf16 plus the fp32 copy and gradient the loss makes
      (10 bytes per token and vocabulary entry); ``chunked_loss`` (Unsloth, Liger) computes it in
      pieces and keeps none of it.

    Returns the parts and ``total`` in bytes, plus ``trainable_parameters``. Not counted: CUDA
    context and allocator slack (~1-3 GB), temporary buffers of kernels.
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not one of {METHODS}")
    from .models import meta_model

    model = meta_model(config)
    total_params = sum(p.numel() for p in model.parameters())
    embed = model.model.embed_tokens.weight.numel()
    head = model.lm_head.weight.numel()
    h, layers, tokens = config.hidden_size, config.num_hidden_layers, batch * seq_len
    if method == "qlora":
        body = total_params - embed - head
        weights = body * (0.5 + 0.127 / 8) + (embed + head) * 2
    else:
        weights = total_params * 2
    if method == "full":
        trainable = total_params
    else:
        trainable = lora_parameters(config, r) + (embed if train_embeddings else 0)
    lora_weights = 0 if method == "full" else lora_parameters(config, r) * 2
    per_layer = 34 * tokens * h
    activations = layers * 2 * tokens * h + per_layer if checkpointing else layers * per_layer
    logits = 0 if chunked_loss else 10 * tokens * config.vocab_size
    parts = {
        "weights": float(weights + lora_weights),
        "trainable": float(14 * trainable),
        "activations": float(activations),
        "logits": float(logits),
    }
    return {**parts, "total": sum(parts.values()), "trainable_parameters": int(trainable)}


# --- packed rows on data-parallel devices (ProLong §A.3, Table 15) ---------------------------------


def reorder_minibatches(doc_lengths: list[list[int]]) -> list[int]:
    """ProLong's minibatch reordering: the order of one optimizer step's minibatches by the sum of
    their documents' squared lengths, so the minibatches that run side by side on the devices cost
    about the same. The step's rows, and so its update, are unchanged."""
    return sorted(range(len(doc_lengths)), key=lambda i: sum(n * n for n in doc_lengths[i]))


def step_time(costs: list[float], devices: int) -> float:
    """Time of one optimizer step whose minibatches (``costs``, in order) are dealt to ``devices``
    data-parallel ranks: accumulation step j runs minibatches ``j * devices ... j * devices +
    devices - 1`` side by side, and every rank waits for the slowest (FSDP synchronizes each
    forward and backward)."""
    if devices < 1 or len(costs) % devices:
        raise ValueError(f"{len(costs)} minibatches do not split evenly over {devices} devices")
    return sum(max(costs[j : j + devices]) for j in range(0, len(costs), devices))
