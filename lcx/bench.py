"""Training throughput benchmark (``make bench`` / ``python -m lcx.bench``): a command, not a test.

Prints, for the ``cpu`` model sizes, training tokens/s through the real ``lcx.train`` path (packed
rows from the corpus, ``LcxTrainer``, AdamW) at W, 4W and 8W in fp32 and bf16 autocast, and the model
FLOP utilisation against this machine's GEMM peak measured in the same run.

Model FLOPs per token = 6 x (parameters in the blocks and the LM head; the embedding is a lookup)
+ 12 x layers x (heads x head_dim) x T for attention scores and values (PaLM App. B; no causal
discount); the one definition is `lcx.budget.flops_per_token` (with the head).

``--attention`` prints instead :func:`attention_table` (T6 of Together's LLaMA-2-7B-32K post:
attention implementation against throughput and peak memory as the context grows).
"""

from __future__ import annotations

import argparse
import gc
import math
import multiprocessing
import resource
import signal
import sys
import tempfile
import time
import traceback

import pandas as pd
import torch

from . import attention, budget, models

# The benchmark models' RoPE base: Llama 2's 10K at its 4K window mirrored to W = 256 with
# head_dim 32, rope.ntk_base(1e4, 256 / 4096, 32) = 519.5, rounded ("about 520", the RoPE chapter's
# mirrored base). A step's cost does not depend on it; it is fixed so that runs compare.
ROPE_BASE = 520.0


def gemm_peak(dtype: torch.dtype, n: int = 2048, seconds: float = 2.0) -> float:
    """Sustained GFLOP/s of an n x n matmul."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - start) / 1e9


def model_flops_per_token(config, seq_len: int) -> float:
    """Hardware FLOPs per trained token: :func:`lcx.budget.flops_per_token` with the LM head."""
    return budget.flops_per_token(config, seq_len, include_head=True)


def train_throughput(
    size: str,
    seq_len: int,
    bf16: bool,
    tokens,
    tokenizer,
    steps: int = 12,
    batch_tokens: int = 8192,
    **step_options,
) -> float:
    """Tokens/s of ``steps`` optimizer steps after two warm-up steps, through ``LcxTrainer``.
    ``step_options``: ``TrainingArguments`` fields changed for this measurement (e.g.
    ``optim="adamw_torch_fused"``, ``torch_compile=True``: :data:`STEP_VARIANTS`)."""
    import dataclasses

    from transformers import TrainerCallback, default_data_collator

    from . import rows as row_builders
    from . import train  # here: the attention children import this module and never train

    torch.set_flush_denormal(True)
    config = models.tiny_config(size, len(tokenizer), 256, ROPE_BASE)
    model = models.new_model(config)
    recipe = train.Recipe(
        seq_len=seq_len,
        tokens=batch_tokens * (steps + 2),
        batch_tokens=batch_tokens,
        lr=1e-3,
        bf16=bf16,
        save_every=10**9,
    )
    rows = row_builders.packed_rows(
        tokens["train"], recipe, tokenizer.bos_token_id, recipe.steps * recipe.rows_per_step
    )
    times = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as tmp:
        args = train.training_arguments(recipe, tmp)
        args = dataclasses.replace(
            args, disable_tqdm=True, save_strategy="no", logging_strategy="no", **step_options
        )
        trainer = train.LcxTrainer(
            model=model,
            args=args,
            train_dataset=rows,
            data_collator=default_data_collator,
            callbacks=[Clock()],
        )
        trainer.train()
    measured = times[2:]
    return batch_tokens * (len(measured) - 1) / (measured[-1] - measured[0])


# What a faster training step could be (issue 19's item 4): each variant's TrainingArguments
# fields against lcx's own (fused-free AdamW, eager PyTorch), printed by ``--variants``.
STEP_VARIANTS = {
    "lcx (AdamW, eager)": {},
    "fused AdamW": {"optim": "adamw_torch_fused"},
    "torch.compile (inductor)": {"torch_compile": True},
    "fused AdamW + torch.compile": {"optim": "adamw_torch_fused", "torch_compile": True},
}


def variants_table(size: str, seq_len: int, tokens, tokenizer, steps: int = 30) -> pd.DataFrame:
    """Training tokens/s (bf16 autocast, 2,048 tokens per step, as chapter 02's base runs) of each
    of :data:`STEP_VARIANTS`, with the speed-up over lcx's own step. torch.compile's compile
    time is in the two warm-up steps, not in the rate."""
    rows = []
    for name, options in STEP_VARIANTS.items():
        tps = train_throughput(size, seq_len, True, tokens, tokenizer, steps, 2048, **options)
        rows.append({"size": size, "T": seq_len, "variant": name, "tok/s": tps})
    table = pd.DataFrame(rows)
    table["vs lcx"] = table["tok/s"] / table["tok/s"].iloc[0]
    return table


# --- per-document attention on packed rows (ProLong §A.3, Table 15) --------------------------------


def packed_row_times(
    config,
    rows: list[dict],
    impls=("sdpa", attention.VARLEN),
    repeats: int = 2,
    bf16=False,
    head: bool = True,
) -> pd.DataFrame:
    """Seconds of one forward + backward pass per packed training row (one row per micro-batch),
    for each attention implementation, on the same weights: ``sdpa`` computes every pair of the
    row under transformers' document mask, :data:`lcx.attention.VARLEN` each document alone.
    The fastest of ``repeats`` passes after one warm-up. ``head=False`` times the blocks alone
    (what the attention changes; an 8B model's head and logits at 64K do not fit one GPU beside
    them). Columns: row, impl, seconds, tokens, documents, sum_sq (the sum of squared document
    lengths, ProLong's reordering key)."""
    torch.set_flush_denormal(True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    out = []
    for impl in impls:
        attention.implementation(impl)  # a known, usable name (registers lcx_varlen when asked)
        model = models.new_model(
            config.__class__(**{**config.to_dict(), "attn_implementation": impl})
        )
        model.to(device).train()
        for i, row in enumerate([rows[0], *rows]):  # the first pass warms up
            spans = attention.document_spans(row["position_ids"])
            inputs = attention.packed_inputs(
                row["input_ids"][None].to(device), row["position_ids"][None].to(device)
            )
            best = math.inf
            for _ in range(repeats if i else 1):
                sync()
                start = time.perf_counter()
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    y = model(**inputs).logits if head else model.model(**inputs).last_hidden_state
                (y.float().logsumexp(-1) if head else y.float()).mean().backward()
                sync()
                best = min(best, time.perf_counter() - start)
                model.zero_grad(set_to_none=True)
            if i:
                out.append(
                    {
                        "row": i - 1,
                        "impl": impl,
                        "seconds": best,
                        "tokens": len(row["input_ids"]),
                        "documents": len(spans),
                        "sum_sq": sum((e - s) ** 2 for s, e in spans),
                    }
                )
    return pd.DataFrame(out)


# --- attention implementation vs throughput and peak memory (T6) -----------------------------------

ATTENTION_ORDER = ("eager", "sdpa", "flash_attention_2")  # the paper's baseline first
ATTENTION_COLUMNS = (
    "size",
    "impl",
    "seq_len",
    "multiple",
    "tokens_per_s",
    "peak_mb",
    "peak_rss_mb",
    "saved_mb",
    "oom",
)


def _status_kib(field: str) -> int | None:
    """``field`` (``VmRSS``, ``VmHWM``) of ``/proc/self/status`` in KiB; None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset this process's peak RSS (``VmHWM``) to its current RSS (Linux >= 4.0, ``echo 5 >
    /proc/self/clear_refs``).

    ``ru_maxrss`` is no substitute: it cannot be reset, and in a child started by fork + exec
    (``subprocess``, ``spawn``) it starts at the *parent's* peak RSS (the kernel carries the old
    address space's peak over exec), so it measures the notebook, not the cell."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _trim_heap() -> None:
    """Hand the heap's free pages back to the OS (glibc ``malloc_trim``), so the step's tensors
    show up as RSS growth instead of silently reusing memory the process freed before measuring
    (which made the growth vary from run to run). A no-op where there is no glibc."""
    import ctypes
    import ctypes.util

    gc.collect()
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class SavedForBackward(torch.autograd.graph.saved_tensors_hooks):
    """Counts the memory autograd keeps for backward while the context is open: the distinct
    storages of every tensor an operation saves (``saved_tensors_hooks``; a storage saved twice,
    a parameter say, counts once). This is the activation memory that grows with the context, and
    eager attention's B x H x T x T probabilities are in it; unlike resident memory it does not
    depend on what the allocator happens to reuse. Tensors saved inside gradient-checkpointed
    blocks are not kept, and are not counted (checkpointing installs its own hooks there).

    ``.mb`` after the context: the total in MiB."""

    def __init__(self):
        self.storages: dict[tuple, int] = {}

        def pack(tensor):
            storage = tensor.untyped_storage()
            self.storages[(tensor.device.type, storage.data_ptr())] = storage.nbytes()
            return tensor

        super().__init__(pack, lambda tensor: tensor)

    @property
    def mb(self) -> float:
        return sum(self.storages.values()) / 2**20


def _maxrss_kib() -> float:
    """``ru_maxrss`` in KiB (Linux reports KiB, macOS bytes)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024 if sys.platform == "darwin" else float(rss)


def _is_oom(error: BaseException) -> bool:
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(error).lower()
    return "out of memory" in text or "can't allocate memory" in text


def _attention_measure(
    size: str,
    seq_len: int,
    impl: str,
    batch_rows: int,
    steps: int,
    vocab: int,
    bf16: bool,
    device: str,
    threads: int | None = None,
    method: str = "full",
    checkpointing: bool = False,
    lora_r: int = 8,
    loss_chunk: int | None = None,
) -> dict:
    """The measurement itself, in the current process (see :func:`attention_step`)."""
    if threads:
        torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    dev = torch.device(device)
    config = models.tiny_config(size, vocab, seq_len, ROPE_BASE)
    # tiny_config passes attn_implementation=attention.implementation() itself, so it is set here instead;
    # the setter reaches every attention layer, which reads it at each forward.
    config._attn_implementation = attention.implementation(impl)  # (registers lcx_varlen if asked)
    model = models.new_model(config).to(dev).train()
    used = {layer.self_attn.config._attn_implementation for layer in model.model.layers}
    if model.config._attn_implementation != impl or used != {impl}:
        raise RuntimeError(f"asked for {impl!r} attention, the model uses {used}")
    if method != "full":  # Llama-3 80K: adapters on q, k, v, o and the embeddings trained in full
        base = models.quantize_nf4(model) if method == "qlora" else model
        model = models.add_lora(base, lora_r, 2 * lora_r, modules_to_save=["embed_tokens"]).train()
    if checkpointing:  # after quantizing: the 4-bit copy is a new model
        model.gradient_checkpointing_enable({"use_reentrant": False})
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    loss_of = _lcx_loss(model, loss_chunk) if loss_chunk is not None else _hf_loss
    ids = torch.randint(vocab, (batch_rows, seq_len), generator=torch.Generator().manual_seed(0))
    ids = ids.to(dev)
    cuda = dev.type == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize(dev)

    gc.collect()
    if cuda:
        sync()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev) / 2**20
    else:
        _trim_heap()
        reset = _reset_peak_rss()
        base = (_status_kib("VmRSS") or _maxrss_kib()) / 1024
    start = None
    for step in range(steps):
        if step == 1:
            sync()
            start = time.perf_counter()
        saved = SavedForBackward()
        with saved, torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            loss = loss_of(model, ids)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    sync()
    elapsed = time.perf_counter() - start
    if cuda:
        peak = torch.cuda.max_memory_allocated(dev) / 2**20
        source = "cuda max_memory_allocated"
    else:
        hwm = _status_kib("VmHWM")
        peak = (hwm if reset and hwm is not None else _maxrss_kib()) / 1024
        source = "VmHWM after clear_refs" if reset and hwm is not None else "ru_maxrss"
    return {
        "impl": impl,
        "method": method,
        "seq_len": seq_len,
        "tokens_per_s": batch_rows * seq_len * (steps - 1) / elapsed,
        "peak_mb": peak - base,
        "peak_rss_mb": peak,
        "saved_mb": saved.mb,
        "base_mb": base,
        "memory": source,
        "device": str(dev),
    }


def _hf_loss(model, ids):
    return model(input_ids=ids, labels=ids).loss


def _lcx_loss(model, chunk: int):
    """The loss as lcx's trainer computes it (:meth:`lcx.train.LcxTrainer.compute_loss`), over
    the whole logits (``chunk`` 0) or in pieces of ``chunk`` positions (:class:`lcx.train.
    ChunkedLoss`)."""
    from types import SimpleNamespace

    from . import train

    trainer = SimpleNamespace(
        args=SimpleNamespace(world_size=1),
        unsloth_documents=False,
        chunked=train.chunk_loss(model, chunk) if chunk else None,
    )

    def loss_of(model, ids):
        batch = {
            "input_ids": ids,
            "position_ids": torch.arange(ids.shape[1], device=ids.device).expand_as(ids),
            "labels": ids,
            "loss_weights": torch.ones(ids.shape, device=ids.device),
        }
        return train.LcxTrainer.compute_loss(trainer, model, batch)

    return loss_of


def loss_table(size="tiny", seq_len=4096, vocab=32_000, chunks=(0, 1024, 256), steps=3):
    """Peak memory of a training step with lcx's loss over the whole logits (chunk 0) and in
    pieces of positions (:class:`lcx.train.ChunkedLoss`), each measured in a fresh process
    (:func:`attention_step`), beside the logits' share the memory plan counts (10 bytes per
    position and vocabulary entry: bf16 logits, their fp32 copy and its gradient)."""
    rows = []
    for chunk in chunks:
        r = attention_step(
            size, seq_len, "sdpa", steps=steps, vocab=vocab, bf16=True, loss_chunk=chunk
        )
        planned = 10 * min(chunk or seq_len, seq_len) * vocab / 2**20
        rows.append(
            {
                "loss_chunk": chunk or "whole",
                "peak_mb": r["peak_mb"],
                "saved_mb": r["saved_mb"],
                "tokens_per_s": r["tokens_per_s"],
                "logits_planned_mb": planned,
            }
        )
    return pd.DataFrame(rows)


def plan_table(size="base", seq_lens=(2048, 8192), chunks=(0, 1024), vocab=32_000, steps=2):
    """The memory plan (:func:`lcx.budget.memory_plan`, what :func:`lcx.train.memory_check`
    refuses recipes by) against a measured training step of a ``size`` model in bf16 autocast with
    AdamW, one row, with and without checkpointing, the loss whole and in pieces (each cell in a
    fresh process, :func:`attention_step`). The measured peak is above the weights, which are in
    place before it (fp32 here, 4 bytes a parameter): so it is set beside the plan's trainable
    states, activations and logits. A CPU's attention kernels and allocator are not a GPU's: this
    bounds the formula's order, not a GPU's peak (``make gpu-check`` prints that beside the
    plan)."""
    from . import budget

    rows = []
    for checkpointing in (False, True):
        for seq_len in seq_lens:
            for chunk in chunks:
                r = attention_step(
                    size,
                    seq_len,
                    "sdpa",
                    steps=steps,
                    vocab=vocab,
                    bf16=True,
                    checkpointing=checkpointing,
                    loss_chunk=chunk,
                )
                config = models.tiny_config(size, vocab, seq_len, ROPE_BASE)
                plan = budget.memory_plan(config, seq_len, "full", checkpointing=checkpointing)
                logits = plan["logits"] * min(chunk or seq_len, seq_len) / seq_len
                planned = (plan["trainable"] + plan["activations"] + logits) / 2**20
                rows.append(
                    {
                        "checkpointing": checkpointing,
                        "seq_len": seq_len,
                        "loss_chunk": chunk or "whole",
                        "peak_mb": r["peak_mb"],
                        "planned_mb": planned,
                        "peak/plan": r["peak_mb"] / planned,
                        "trainable_mb": plan["trainable"] / 2**20,
                        "activations_mb": plan["activations"] / 2**20,
                        "logits_mb": logits / 2**20,
                        "saved_mb": r["saved_mb"],
                    }
                )
    return pd.DataFrame(rows)


def _attention_child(conn, kwargs: dict) -> None:
    """Entry point of the measuring process: sends ``(status, payload)`` back through ``conn``."""
    import transformers

    transformers.logging.disable_progress_bar()  # a QLoRA model's save and load, not the book's
    try:
        message = ("ok", _attention_measure(**kwargs))
    except BaseException as error:  # noqa: BLE001 - everything goes back to the parent
        message = ("oom" if _is_oom(error) else "error", traceback.format_exc())
    conn.send(message)
    conn.close()


def _measuring_context():
    """Fresh processes forked from a server that has imported this module's dependencies but never
    run a model (one ~10 s import of torch + transformers, not one per cell); ``spawn`` where there
    is no fork server. As with any multiprocessing, a script calling this needs the
    ``if __name__ == "__main__":`` guard."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        # Not lcx.bench itself: under ``python -m lcx.bench`` the server also runs it as __mp_main__.
        ctx.set_forkserver_preload(["pandas", "lcx.attention", "lcx.budget", "lcx.models"])
        return ctx
    return multiprocessing.get_context("spawn")


def start_measuring() -> None:
    """Start the process that measuring children are forked from, without waiting for it.

    Optional: :func:`attention_step` starts it when first needed. Calling this early (say, before
    a chapter trains) lets its few seconds of imports overlap other work."""
    import multiprocessing.forkserver

    if _measuring_context().get_start_method() == "forkserver":
        multiprocessing.forkserver.ensure_running()


def _measure_in_child(kwargs: dict) -> dict:
    import importlib

    target = importlib.import_module("lcx.bench")._attention_child  # not __main__'s under -m
    ctx = _measuring_context()
    receive, send = ctx.Pipe(duplex=False)
    process = ctx.Process(target=target, args=(send, kwargs), daemon=True)
    process.start()
    send.close()
    try:
        status, payload = receive.recv()
    except EOFError:
        status, payload = None, None
    process.join()
    receive.close()
    if status == "ok":
        return payload
    if status == "oom" or (status is None and process.exitcode == -signal.SIGKILL):
        raise torch.OutOfMemoryError(
            f"{kwargs['impl']} at seq_len={kwargs['seq_len']} ran out of memory: "
            + (payload or "the measuring process was killed (SIGKILL, likely the OOM killer)")
        )
    raise RuntimeError(
        f"measuring {kwargs['impl']} at seq_len={kwargs['seq_len']} failed "
        f"(exit code {process.exitcode}):\n{payload or ''}"
    )


def attention_step(
    size: str,
    seq_len: int,
    impl: str,
    batch_rows: int = 1,
    steps: int = 3,
    vocab: int = 4096,
    bf16: bool = False,
    method: str = "full",
    checkpointing: bool = False,
    lora_r: int = 8,
    loss_chunk: int | None = None,
) -> dict:
    """Training throughput and measured peak memory of a tiny Llama with attention ``impl``.

    ``method``: ``full`` fine-tuning, ``lora`` (adapters of rank ``lora_r``, alpha 2r, on q, k, v,
    o, embeddings trained in full) or ``qlora`` (the same on an NF4 copy, :func:`lcx.models.
    quantize_nf4`); ``checkpointing`` turns on gradient checkpointing.

    Builds ``models.tiny_config(size, vocab, seq_len, ROPE_BASE)`` with ``impl`` as its attention
    implementation (checked on every layer), AdamW (lr 1e-3), and ``batch_rows`` rows of
    ``seq_len`` uniformly random token ids (labels = inputs), then runs ``steps`` forward + backward
    + optimizer steps (bf16 autocast if ``bf16``). The first step is a warm-up: ``tokens_per_s`` is
    ``batch_rows * seq_len * (steps - 1)`` over the wall time of the remaining steps.

    Memory, with the baseline taken after model, optimizer and inputs exist (and ``gc.collect()``):

    - on CUDA (in this process): ``peak_mb`` = ``torch.cuda.max_memory_allocated()`` over all
      ``steps`` minus ``memory_allocated()`` at the baseline; ``peak_rss_mb`` = that absolute peak
      (tensors only, not the caching allocator's reserve or the CUDA context);
    - on CPU (in a fresh process, so earlier cells' allocations cannot raise this one's peak): the
      child resets its peak RSS (``/proc/self/clear_refs``), reads ``VmRSS`` at the baseline, and
      after the steps reads the peak RSS since the reset (``VmHWM``; ``ru_maxrss`` only where the
      reset is unsupported, see :func:`_reset_peak_rss`). ``peak_mb`` = peak - baseline: the growth
      from activations kept for backward, attention scores, logits, gradients and AdamW's two
      moment buffers (created lazily at the first step), plus allocator slack. ``peak_rss_mb`` =
      the absolute peak RSS of the child, interpreter and libraries included.

    ``loss_chunk``: None, transformers' loss on ``labels``; else lcx's trainer's loss, whole (0)
    or in pieces of that many positions (:func:`loss_table`).

    ``saved_mb``: what autograd keeps for backward in the last step's forward, counted exactly
    (:class:`SavedForBackward`: parameters included, optimizer state and gradients not). Resident
    memory also moves with what the allocator reuses (a few MB between runs at the tiny sizes);
    this does not, and it is where eager attention's T x T probabilities show.

    Returns ``{"impl", "seq_len", "tokens_per_s", "peak_mb", "peak_rss_mb", "saved_mb"}`` plus ``base_mb``,
    ``memory`` (which counter) and ``device``. Raises ``ValueError`` for an unknown ``impl``,
    ``RuntimeError`` for one not available here (:func:`lcx.attention.implementation`), and
    ``torch.OutOfMemoryError`` when the step runs out of memory (on CPU: an allocation failure in
    the child, or the child killed by SIGKILL, as the kernel's OOM killer does).
    """
    attention.implementation(impl)
    if method not in ("full", "lora", "qlora"):
        raise ValueError(f"method={method!r} is not one of full, lora, qlora")
    if steps < 2:
        raise ValueError(f"steps={steps}: need a warm-up step and at least one timed step")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    kwargs = dict(
        size=size,
        seq_len=seq_len,
        impl=impl,
        batch_rows=batch_rows,
        steps=steps,
        vocab=vocab,
        bf16=bf16,
        device=device,
        threads=torch.get_num_threads(),
        method=method,
        checkpointing=checkpointing,
        lora_r=lora_r,
        loss_chunk=loss_chunk,
    )
    if device == "cpu":
        return _measure_in_child(kwargs)
    try:
        return _attention_measure(**kwargs)
    except RuntimeError as error:
        if _is_oom(error) and not isinstance(error, torch.OutOfMemoryError):
            raise torch.OutOfMemoryError(str(error)) from error
        raise
    finally:
        gc.collect()
        torch.cuda.empty_cache()


def attention_table(
    size: str = "small",
    window: int = 256,
    multiples=(1, 2, 4, 8),
    impls=None,
    **kw,
) -> pd.DataFrame:
    """:func:`attention_step` for each attention implementation at ``window`` x ``multiples``.

    ``impls`` defaults to those of eager, sdpa and flash_attention_2 that
    :func:`lcx.attention.available` lists (flash_attention_2 needs ``flash_attn`` and a GPU); named
    ones that are not available here are skipped with a warning, unknown names raise ValueError.
    ``kw`` goes to :func:`attention_step` (``batch_rows``, ``steps``, ``vocab``, ``bf16``). Each
    cell runs in its own process on CPU. A cell that runs out of memory is the paper's "OOM" entry:
    ``tokens_per_s``, ``peak_mb``, ``peak_rss_mb`` and ``saved_mb`` are NaN and ``oom`` is True.

    One row per (impl, length), impl-major, with columns :data:`ATTENTION_COLUMNS`: ``size``,
    ``impl``, ``seq_len``, ``multiple`` (= seq_len / window), ``tokens_per_s``, ``peak_mb`` (growth
    over the post-setup baseline), ``peak_rss_mb`` (absolute), ``saved_mb`` (kept for backward,
    :class:`SavedForBackward`) and ``oom``.
    """
    import warnings

    from tqdm.auto import tqdm

    have = attention.available()
    if impls is None:
        impls = [impl for impl in ATTENTION_ORDER if impl in have]
    else:
        unknown = [impl for impl in impls if impl not in attention.IMPLEMENTATIONS]
        if unknown:
            raise ValueError(
                f"attention implementation(s) {unknown} not among {attention.IMPLEMENTATIONS}"
            )
        missing = [impl for impl in impls if impl not in have]
        if missing:
            warnings.warn(f"skipping {missing}: not available here (have {have})", stacklevel=2)
        impls = [impl for impl in impls if impl in have]
    cells = [(impl, mult) for impl in impls for mult in multiples]
    rows = []
    for impl, mult in tqdm(cells, desc=f"attention ({size})", leave=False):
        seq_len = window * mult
        try:
            result, oom = attention_step(size, seq_len, impl, **kw), False
        except (torch.OutOfMemoryError, MemoryError):
            result, oom = {}, True
        rows.append(
            {
                "size": size,
                "impl": impl,
                "seq_len": seq_len,
                "multiple": mult,
                "tokens_per_s": result.get("tokens_per_s", math.nan),
                "peak_mb": result.get("peak_mb", math.nan),
                "peak_rss_mb": result.get("peak_rss_mb", math.nan),
                "saved_mb": result.get("saved_mb", math.nan),
                "oom": oom,
            }
        )
    return pd.DataFrame(rows, columns=list(ATTENTION_COLUMNS))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["small", "base"])
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--multiples", nargs="+", type=int, default=None, help="default 1 4 8")
    parser.add_argument("--steps", type=int, default=None, help="default 12")
    parser.add_argument(
        "--attention",
        action="store_true",
        help="instead: tokens/s and peak memory per attention implementation at W..8W "
        "(multiples default 1 2 4 8, steps 3)",
    )
    parser.add_argument("--impls", nargs="+", default=None, help="with --attention")
    parser.add_argument("--batch-rows", type=int, default=1, help="with --attention")
    parser.add_argument("--bf16", action="store_true", help="with --attention")
    parser.add_argument(
        "--variants",
        action="store_true",
        help="then: tokens/s of fused AdamW and torch.compile against lcx's step (bf16, at W)",
    )
    parser.add_argument(
        "--loss",
        action="store_true",
        help="instead: peak memory of a step with the loss over the whole logits and in pieces",
    )
    parser.add_argument(
        "--plan",
        action="store_true",
        help="instead: the memory plan's parts beside measured peaks (one row, bf16, AdamW)",
    )
    args = parser.parse_args(argv)
    if args.plan:
        table = plan_table()
        print(table.to_string(index=False, float_format=lambda x: f"{x:.2f}"), flush=True)
        return
    if args.loss:
        table = loss_table()
        print(table.to_string(index=False, float_format=lambda x: f"{x:.0f}"), flush=True)
        return
    if args.attention:
        for size in args.sizes:
            table = attention_table(
                size,
                args.window,
                tuple(args.multiples or (1, 2, 4, 8)),
                args.impls,
                batch_rows=args.batch_rows,
                steps=args.steps or 3,
                bf16=args.bf16,
            )
            print(table.to_string(index=False, float_format=lambda x: f"{x:.1f}"), flush=True)
        return
    from . import data

    args.multiples = args.multiples or [1, 4, 8]
    args.steps = args.steps or 12
    corpus = data.load_corpus("cpu")
    tokenizer = models.load_tokenizer("cpu", corpus)
    tokens = data.tokenize(corpus, tokenizer)
    peak = {"fp32": gemm_peak(torch.float32), "bf16": gemm_peak(torch.bfloat16)}
    print(
        f"GEMM peak (2048^2, {torch.get_num_threads()} threads): fp32 {peak['fp32']:.0f} GFLOP/s, "
        f"bf16 {peak['bf16']:.0f} GFLOP/s"
    )
    print(f"{'size':6} {'params':>8} {'T':>5} {'dtype':5} {'tok/s':>8} {'GFLOP/s':>8} {'MFU':>6}")
    for size in args.sizes:
        for mult in args.multiples:
            seq_len = args.window * mult
            config = models.tiny_config(size, len(tokenizer), args.window, ROPE_BASE)
            params = models.count_parameters(models.meta_model(config))
            for dtype in ("fp32", "bf16"):
                tps = train_throughput(
                    size, seq_len, dtype == "bf16", tokens, tokenizer, args.steps
                )
                gflops = tps * model_flops_per_token(config, seq_len) / 1e9
                print(
                    f"{size:6} {params / 1e6:7.2f}M {seq_len:5d} {dtype:5} {tps:8.0f} {gflops:8.1f} "
                    f"{gflops / peak[dtype]:6.1%}",
                    flush=True,
                )
    if args.variants:
        for size in args.sizes:
            table = variants_table(size, args.window, tokens, tokenizer)
            print(table.to_string(index=False, float_format=lambda x: f"{x:.2f}"), flush=True)


if __name__ == "__main__":
    main()
