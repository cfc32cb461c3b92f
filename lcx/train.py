"""Training runs built on ``transformers.Trainer``, described by a :class:`Recipe` that reads like a
paper's hyperparameter table, cached by its full config and resumable after a crash.

* Continued pretraining (and pretraining from scratch) on rows packed from a domain mixture, with a
  minimum document length (Together drops short sequences), document masking on or off (ProLong
  §A.3; see :mod:`lcx.attention`) and task-format rows mixed in (:func:`lcx.rows.packed_rows`), or
  on ready-made rows (SFT, chat and mixes: :mod:`lcx.rows`).
* A token-averaged loss (ProLong §A.3): every token in a batch counts the same, whatever its row.

A run's artifact (``lcx.cache``) holds the final model, the recipe and the loss log; checkpoints go
to a work folder keyed the same way, so a run killed mid-way resumes from its last checkpoint.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import (
    LlamaForCausalLM,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    default_data_collator,
    get_scheduler,
)

from . import attention, cache
from . import rows as row_builders  # (run takes an argument called rows)
from .profiles import REHEARSAL_DIVISOR, rehearsal


@dataclass
class Recipe:
    """One training stage, in the terms of the papers' tables."""

    seq_len: int  # tokens per packed sequence
    tokens: int  # training tokens in all
    batch_tokens: int  # tokens per optimizer step
    lr: float
    schedule: str = "cosine"  # "cosine" (to min_lr_ratio), "linear" or "constant"
    warmup: float = 0.0  # fraction of steps
    min_lr_ratio: float = 0.0  # cosine decays to this fraction of the peak (ProLong: 0.1)
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    mixture: dict[str, float] = field(
        default_factory=lambda: {"code": 1.0, "books": 1.0, "prose": 1.0}
    )
    min_doc_tokens: int = 0  # drop documents shorter than this (Together: 2K of 32K)
    document_masking: bool = True
    formats: dict[str, float] = field(default_factory=dict)  # task -> share of rows, e.g. passkey
    answer_weight: float = 5.0  # loss weight of a format row's answer tokens
    # Together phase 2: pack as many task examples as fit into one row (each from its own BOS,
    # positions running on, so earlier examples are in-context demonstrations for later ones)
    pack_formats: bool = False
    bf16: bool = False  # bf16 autocast on CPU (AVX512-BF16) or GPU
    gradient_checkpointing: bool = False
    seed: int = 0
    save_every: int = 50  # steps between checkpoints (resume granularity)
    # A stage of a longer schedule (length curriculum): the LR follows a schedule of
    # `schedule_steps` steps from step `schedule_start` instead of one spanning this stage only.
    schedule_steps: int | None = None
    schedule_start: int = 0
    # LoRA through peft, e.g. {"r": 32, "alpha": 16, "modules_to_save": ["embed_tokens"]} (Llama-3
    # 80K); add "quantize": "nf4" for QLoRA (adapters trained on a 4-bit NF4 copy of the model).
    # The saved model has the adapters merged into the full-precision weights. "backend": "unsloth"
    # trains them through Unsloth instead (gpu; the model must come from models.unsloth_model).
    lora: dict | None = None
    # Rows per forward/backward pass (None: the whole step at once); the rest of a step is gradient
    # accumulation. The loss stays averaged over every answer/target token of the step (ProLong §A.3).
    micro_rows: int | None = None
    # Several processes for one run (gpu/paper): {"processes": 8} trains data-parallel on 8 ranks
    # (a torchrun launch from run(); on GPUs add "fsdp": True to shard the model, FSDP2 per
    # block, and "sp_size": n for DeepSpeed-Ulysses sequence parallelism over n ranks, ProLong's
    # 512K stage). The layout is not part of the run's key: the loss is the same token average.
    parallel: dict | None = None
    # Positions per piece of the loss (None: the logits of the whole micro-batch at once). The LM
    # head and the loss run piece by piece and each piece's logits are recomputed in the backward
    # pass, so a pass holds one piece's logits, not 10 bytes per position and vocabulary entry
    # (Llama 3's 128K vocabulary at 64K positions: 84 GB). Same loss; not part of the run's key.
    loss_chunk: int | None = None
    # Make the rows as the trainer reads them instead of all at once: paper-scale runs, whose rows
    # would not fit in memory (packed rows: lcx.rows.RowStream; the chapters' SFT, mixed and
    # windowed rows: lcx.rows.Stream). Not part of the recipe's key: the rows are.
    stream_rows: bool = False

    @property
    def steps(self) -> int:
        return max(1, self.tokens // self.batch_tokens)

    @property
    def rows_per_step(self) -> int:
        return max(1, self.batch_tokens // self.seq_len)

    def config(self) -> dict:
        config = dataclasses.asdict(self)
        if self.micro_rows is None:  # runs keyed before the field existed keep their keys
            del config["micro_rows"]
        del config["parallel"], config["loss_chunk"], config["stream_rows"]
        return config


def recipe_table(recipes: dict, paper: dict, paper_label: str, keys=None):
    """Our recipes (column label -> :class:`Recipe`) beside the paper's hyperparameters, one row
    per key (default: the paper's keys; a key the paper does not state shows empty)."""
    import pandas as pd

    rows = [
        {
            "hyperparameter": k,
            **{label: str(r.config()[k]) for label, r in recipes.items()},
            paper_label: paper.get(k, ""),
        }
        for k in (list(paper) if keys is None else keys)
    ]
    return pd.DataFrame(rows)


# --- the trainer -----------------------------------------------------------------------------------


# Recipe.schedule -> transformers' lr_scheduler_type
SCHEDULES = {"cosine": "cosine_with_min_lr", "linear": "linear", "constant": "constant_with_warmup"}


def warmup_steps(recipe: Recipe, total: int) -> int:
    """Warm-up steps of a ``total``-step schedule: ``recipe.warmup`` as a fraction of the steps
    (below 1) or as a step count, as ``TrainingArguments.get_warmup_steps`` reads it."""
    return math.ceil(recipe.warmup * total) if recipe.warmup < 1 else int(recipe.warmup)


def lr_schedule(recipe: Recipe) -> Callable[[int], float]:
    """The LR multiplier by step of the recipe's whole schedule (``recipe.schedule_steps`` steps,
    else the recipe's own): linear warm-up from 0, then cosine decay to ``min_lr_ratio``, linear
    decay to 0, or constant. It is transformers' own schedule function for ``recipe.schedule``
    (from ``transformers.get_scheduler``, as ``Trainer`` builds it for a one-stage run), so the
    stages of a curriculum follow the one-stage curve exactly; steps past the end keep its last
    value."""
    if recipe.schedule not in SCHEDULES:
        raise ValueError(f"schedule={recipe.schedule!r} is not one of {tuple(SCHEDULES)}")
    total = recipe.schedule_steps or recipe.steps
    kwargs = {"min_lr_rate": recipe.min_lr_ratio} if recipe.schedule == "cosine" else {}
    # get_scheduler builds a scheduler on an optimizer: a stand-in, only its function is kept
    stand_in = torch.optim.SGD([torch.zeros(1)], lr=1.0)
    factor = get_scheduler(
        SCHEDULES[recipe.schedule],
        stand_in,
        num_warmup_steps=warmup_steps(recipe, total),
        num_training_steps=total,
        scheduler_specific_kwargs=kwargs,
    ).lr_lambdas[0]
    return lambda step: float(factor(min(step, total)))


def _piece_nll(weight, hidden, target, w):
    """The weighted NLL sum of one piece of positions (:class:`ChunkedLoss`)."""
    logits = torch.nn.functional.linear(hidden, weight).float()
    nll = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)), target.reshape(-1).clamp(min=0), reduction="none"
    )
    return (nll * w.reshape(-1)).sum()


class ChunkedLoss(torch.nn.Linear):
    """A model's LM head that, while :attr:`targets` is set (``(target, weight)`` per position and
    the step's ``scale``, :meth:`LcxTrainer.compute_loss`), returns the weighted NLL sum of its
    positions times ``scale`` (the micro-batch's share of the step's loss) instead of their
    logits, computed ``chunk`` positions at a time with each piece's logits recomputed in the
    backward pass (``torch.utils.checkpoint``). It shares the head's weight (the same parameter,
    saved under the same name), and runs inside the model's forward, where FSDP has gathered it.
    Without targets it is the plain head (evaluation, generation).

    The loss leaves the model as what the model's forward makes of logits, and two of them cast
    their logits to bf16: FSDP2's mixed precision (every wrapped module's output, ``output_dtype``)
    and Unsloth's forward (to the config's type). A loss of ~2 nats is a multiple of 2^-7 in bf16;
    so it is returned in two parts that each survive the cast, its bf16 rounding and the remainder
    (shape ``(1, 1, 2)``), which :meth:`LcxTrainer.compute_loss` adds in fp32. The scale is
    applied here, not after the cast, so the gradient that comes back through the cast is the
    exact 1 (or the world size), not a bf16 rounding of 1 / the step's weight."""

    def __init__(self, head: torch.nn.Linear, chunk: int):
        torch.nn.Module.__init__(self)
        self.in_features, self.out_features = head.in_features, head.out_features
        self.weight = head.weight
        self.register_parameter("bias", head.bias)
        self.chunk, self.targets = chunk, None

    def forward(self, hidden):
        if self.targets is None:
            return super().forward(hidden)
        if self.bias is not None:
            raise ValueError("a chunked loss needs an LM head without bias (Llama has none)")
        target, w, scale = self.targets
        total = hidden.new_zeros((), dtype=torch.float32)
        for s in range(0, hidden.shape[1], self.chunk):
            piece = slice(s, s + self.chunk)
            total = total + torch.utils.checkpoint.checkpoint(
                _piece_nll,
                self.weight,
                hidden[:, piece],
                target[:, piece],
                w[:, piece],
                use_reentrant=False,
            )
        loss = total * scale
        rounded = loss.detach().to(torch.bfloat16).float()  # exact in bf16; the gradient flows
        return torch.stack([rounded, loss - rounded]).reshape(1, 1, 2)  # through the remainder


def chunk_loss(net, chunk: int) -> ChunkedLoss:
    """Put a :class:`ChunkedLoss` in place of ``net``'s LM head (through a peft wrapper);
    returns it. The model's state dict and saved checkpoints are unchanged."""
    model = net.get_base_model() if hasattr(net, "get_base_model") else net
    if not isinstance(model.lm_head, ChunkedLoss):
        model.lm_head = ChunkedLoss(model.lm_head, chunk)
    return model.lm_head


class LcxTrainer(Trainer):
    """``Trainer`` with a token-averaged, weighted loss and packed inputs kept apart (no KV cache).

    For a stage of a longer schedule (``recipe.schedule_steps``) the LR follows that schedule from
    ``recipe.schedule_start``, so a length curriculum keeps one LR curve across its stages.
    """

    def __init__(self, *args, recipe: Recipe | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.recipe = recipe
        # the model's ChunkedLoss head, when the recipe computes the loss in pieces (chunk_loss)
        self.chunked = next((m for m in self.model.modules() if isinstance(m, ChunkedLoss)), None)
        self.loss_is_scaled_for_ga = True  # compute_loss divides by the whole step's weight
        # transformers 5.17 reads this flag instead (and sets it False for a model without loss
        # kwargs, or under Ulysses), then divides the loss by the accumulation steps once more
        self.model_accepts_loss_kwargs = True
        # Unsloth's forward ignores position resets: it is told the document lengths instead
        self.unsloth_documents = bool(
            recipe and recipe.document_masking and (recipe.lora or {}).get("backend") == "unsloth"
        )

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """One optimizer step's micro-batches and their total loss weight. Defined here so the
        weight stays :meth:`_get_num_items_in_batch`'s even when Unsloth, on import, patches
        ``Trainer.get_batch_samples`` with its own count (labels only, weights ignored)."""
        batch_samples = []
        for _ in range(num_batches):
            try:
                batch_samples.append(next(epoch_iterator))
            except StopIteration:
                break
        return batch_samples, self._get_num_items_in_batch(batch_samples, device)

    def _get_num_items_in_batch(self, batch_samples, device):
        """The loss weight of the whole optimizer step (every micro-batch, every device): each
        micro-batch's weighted loss sum is divided by it, so the step's loss is the token average
        over the step however it is split (ProLong's token-averaged loss), not a mean of
        micro-batch means. Under sequence parallelism each rank counts its shard
        (:func:`targets`), and the ranks' counts add up to the whole sequences'."""
        total = sum(targets(b)[1].sum() for b in batch_samples).to(device)
        if self.args.world_size > 1:
            total = self.accelerator.gather(total).sum()
        return total

    def create_scheduler(self, num_training_steps, optimizer=None):
        if self.recipe is None or self.recipe.schedule_steps is None:
            return super().create_scheduler(num_training_steps, optimizer)
        if self.lr_scheduler is None:
            start, factor = self.recipe.schedule_start, lr_schedule(self.recipe)
            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer or self.optimizer, lambda step: factor(start + step)
            )
        return self.lr_scheduler

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        target, w = targets(inputs)
        sharded = "shift_labels" in inputs  # DeepSpeed-Ulysses: this rank's shard of each row
        # FlashAttention sees a packed batch of several rows as packed only through explicit
        # boundaries; under Ulysses the shard's boundaries are not the gathered row's, and FA's
        # position-id path (one row per micro-batch, parallel_arguments) keeps documents apart
        # the model itself, not its DDP/DeepSpeed wrapper (which has no config)
        attn = getattr(getattr(model, "module", model), "config", None)
        flash = not sharded and str(getattr(attn, "_attn_implementation", "")).startswith("flash")
        packed = attention.packed_inputs(
            inputs["input_ids"],
            inputs["position_ids"],
            seq_lengths=self.unsloth_documents,
            boundaries=flash,
        )
        head = getattr(self, "chunked", None)
        weight = w.sum() if num_items_in_batch is None else num_items_in_batch
        if head is not None:  # the head returns the loss, computed piece by piece
            pad = 0 if sharded else 1  # the last position of a whole row predicts nothing
            head.targets = (
                torch.nn.functional.pad(target, (0, pad), value=row_builders.IGNORE),
                torch.nn.functional.pad(w, (0, pad)),
                1.0 / weight.clamp(min=1).float(),
            )
            try:
                outputs = model(**packed)
            finally:
                head.targets = None
            loss = outputs.logits.float().sum()  # the head's two parts (ChunkedLoss)
        else:
            outputs = model(**packed)
            logits = outputs.logits.float() if sharded else outputs.logits[:, :-1].float()
            nll = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.size(-1)),
                target.reshape(-1).clamp(min=0),
                reduction="none",
            )
            loss = (nll * w.reshape(-1)).sum() / weight.clamp(min=1)
        if num_items_in_batch is not None and self.args.world_size > 1:
            # DDP, FSDP2 and ZeRO-3 (Ulysses included: every rank in its reduce-scatter group,
            # stage3.py's __avg_scatter_grads) average the gradients over all world ranks
            loss = loss * self.args.world_size
        return (loss, outputs) if return_outputs else loss


def targets(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """``(target, weight)`` of every predicted position of a micro-batch: the next token and its
    loss weight (0 where the label is ignored). A row predicts its own tokens 1.. from positions
    ..L-1; under DeepSpeed-Ulysses the data loader's adapter has replaced ``labels`` by
    ``shift_labels`` (shifted before the row was cut into shards, so a shard's last position
    predicts the next shard's first token), and the collator's ``shift_loss_weights``
    (:func:`collate`) is shifted the same way, so every position of the shard is predicted."""
    if "shift_labels" in batch:
        target = batch["shift_labels"]
        return target, batch["shift_loss_weights"] * (target != row_builders.IGNORE)
    labels = batch["labels"][:, 1:]
    return labels, batch["loss_weights"][:, 1:] * (labels != row_builders.IGNORE)


def collate(rows: list[dict], shifted: bool = False) -> dict:
    """The rows' tensors stacked, keys as they are (``default_data_collator``); ``shifted``
    (sequence parallelism) adds ``shift_loss_weights``: each position's weight for the next token,
    0 at the end, built before the Ulysses adapter shards the rows alongside its
    ``shift_labels``."""
    batch = default_data_collator(rows)
    if shifted:
        w = batch["loss_weights"]
        batch["shift_loss_weights"] = torch.nn.functional.pad(w[:, 1:], (0, 1))
    return batch


def _check_unsloth_packing() -> None:
    """Document masking through Unsloth needs a release whose forward reads
    ``packed_seq_lengths`` (``unsloth.utils.packing``, late 2025); older ones attend across the
    packed documents of a row without a word, so they are refused."""
    import importlib

    try:
        importlib.import_module("unsloth.utils.packing")
    except ImportError as error:
        raise ValueError(
            "this Unsloth cannot mask packed documents (no unsloth.utils.packing): upgrade it, "
            "use the peft backend, or set document_masking=False"
        ) from error


PARALLEL_KEYS = ("processes", "fsdp", "sp_size")


# "4M tokens per step" in the papers is 2^22: Llama 2's 1,024 rows of 4,096 (its 4M-token batch),
# ProLong's 64 rows of 64K. 4,000,000 would be 122.07 rows of 32K and 61.04 of 64K, which no
# number of GPUs above one divides (lcx.train.check_layout)
MILLION_TOKENS = 2**20


def processes(recipe: Recipe | None = None) -> int:
    """Processes training one run: ``recipe.parallel["processes"]``, else ``WORLD_SIZE`` (set by
    torchrun/accelerate), else 1."""
    if recipe is not None and recipe.parallel:
        return int(recipe.parallel.get("processes", 1))
    return int(os.environ.get("WORLD_SIZE", "1"))


def data_parallel_size(recipe: Recipe | None = None) -> int:
    """Ranks that each take their own rows of every step: the processes, over the ranks that
    share one sequence (``sp_size``)."""
    return processes(recipe) // int((recipe.parallel or {}).get("sp_size", 1) if recipe else 1)


# The kernels DeepSpeed-Ulysses wraps (accelerate's DeepSpeedSequenceParallelConfig and DeepSpeed's
# UlyssesSPAttentionHF accept these, and refuse eager, flex and custom names such as lcx_varlen)
SP_ATTENTION = ("flash_attention_2", "flash_attention_3", "sdpa")


def parallel_arguments(recipe: Recipe, attn: str | None = None) -> dict:
    """``TrainingArguments`` keywords for ``recipe.parallel``: FSDP2 sharding one Llama block per
    unit (activation checkpointing inside FSDP, as transformers advises), and accelerate's
    ``ParallelismConfig`` for DeepSpeed-Ulysses sequence parallelism (with a ZeRO-3 DeepSpeed
    config, which Ulysses runs under).

    Under Ulysses, ``attn`` is the model's attention (``config._attn_implementation``): accelerate
    leaves the handler's ``sp_attn_implementation`` at None unless told, which DeepSpeed refuses,
    and DeepSpeed >= 0.19 also refuses one that differs from the model's. Ulysses drops any tensor
    mask and all-gathers the position ids, so packed documents stay apart only through
    FlashAttention's position-id path with one row per micro-batch: document masking under Ulysses
    needs ``flash_attention_2``/``3`` and ``micro_rows=1``. ZeRO-3 gathers the 16-bit weights when
    the model is saved (``stage3_gather_16bit_weights_on_model_save``); without it ``save_model``
    writes no ``model.safetensors`` and the run's model cannot be loaded."""
    p = dict(recipe.parallel or {})
    unknown = set(p) - set(PARALLEL_KEYS)
    if unknown:
        raise ValueError(f"parallel keys {sorted(unknown)} not among {PARALLEL_KEYS}")
    n, sp = int(p.get("processes", 1)), int(p.get("sp_size", 1))
    if n < 1 or sp < 1 or n % sp:
        raise ValueError(f"parallel={p}: sp_size must divide the processes")
    if p.get("fsdp") and sp > 1:
        raise ValueError("sequence parallelism runs under DeepSpeed ZeRO-3 here, not FSDP")
    kw = {}
    if p.get("fsdp"):
        kw["fsdp"] = True
        kw["fsdp_config"] = {
            "version": 2,
            "transformer_layer_cls_to_wrap": ["LlamaDecoderLayer"],
            "activation_checkpointing": recipe.gradient_checkpointing,
            "state_dict_type": "FULL_STATE_DICT",  # save_model writes one HF checkpoint
        }
    if sp > 1:
        from accelerate.utils import DeepSpeedSequenceParallelConfig, ParallelismConfig

        attn = attn or attention.implementation()
        if attn not in SP_ATTENTION:
            raise ValueError(
                f"sequence parallelism (sp_size={sp}) wraps one of {SP_ATTENTION}, not {attn!r}"
            )
        if recipe.document_masking and (attn == "sdpa" or recipe.micro_rows != 1):
            raise ValueError(
                "document masking under sequence parallelism needs FlashAttention and micro_rows=1 "
                f"(got {attn!r}, micro_rows={recipe.micro_rows}): Ulysses drops the block mask"
            )
        handler = DeepSpeedSequenceParallelConfig(sp_attn_implementation=attn)
        kw["parallelism_config"] = ParallelismConfig(
            sp_size=sp, sp_backend="deepspeed", sp_handler=handler
        )
        kw["deepspeed"] = {
            # reduce_scatter: the path that averages gradients over every rank, which the loss's
            # world_size factor assumes (ZeRO < 3 or without it, Ulysses averages over fewer)
            "zero_optimization": {
                "stage": 3,
                "stage3_gather_16bit_weights_on_model_save": True,
                "reduce_scatter": True,
            },
            "bf16": {"enabled": recipe.bf16},
            "train_micro_batch_size_per_gpu": "auto",
            "gradient_accumulation_steps": "auto",
            "gradient_clipping": "auto",
        }
    return kw


def check_layout(recipe: Recipe, attn: str | None = None) -> None:
    """Refuse a recipe whose step cannot be split as its layout says: ``micro_rows`` rows a pass
    on each data-parallel rank must divide the step's rows, and the parallel settings must be
    valid (:func:`parallel_arguments`; ``attn``: the model's attention, default this machine's)."""
    per_pass = (recipe.micro_rows or recipe.rows_per_step) * data_parallel_size(recipe)
    if (recipe.micro_rows is not None and recipe.micro_rows < 1) or recipe.rows_per_step % per_pass:
        raise ValueError(
            f"micro_rows={recipe.micro_rows} x {data_parallel_size(recipe)} ranks must divide the "
            f"{recipe.rows_per_step} rows per step"
        )
    parallel_arguments(recipe, attn)


def rehearsed(recipe: Recipe) -> Recipe:
    """``recipe`` as the rehearsal of the gpu profile on a CPU trains it (:func:`lcx.profiles.
    rehearsal`; unchanged otherwise): its own length, layout and settings, but two steps of two
    passes on every data-parallel rank, a checkpoint after each step, a warm-up of one step, and
    the loss in pieces shrunk with the windows (:data:`lcx.profiles.REHEARSAL_DIVISOR`). The gpu
    recipes pass through it where they are made, so the rows built for them shrink too."""
    if not rehearsal():
        return recipe
    batch = 2 * (recipe.micro_rows or 1) * data_parallel_size(recipe) * recipe.seq_len
    chunk = recipe.loss_chunk and max(1, recipe.loss_chunk // REHEARSAL_DIVISOR)
    warmup = 0.5 if recipe.warmup else 0.0
    return dataclasses.replace(
        recipe, tokens=2 * batch, batch_tokens=batch, warmup=warmup, loss_chunk=chunk, save_every=1
    )


# the rehearsal on a CPU launches its multi-GPU runs on this many gloo ranks (accelerate runs
# them data-parallel: FSDP and DeepSpeed need GPUs)
REHEARSAL_RANKS = 2


def gpus() -> int:
    """The GPUs a gpu run spreads over: every CUDA device here (at least one), or
    :data:`REHEARSAL_RANKS` CPU ranks in the rehearsal (:func:`lcx.profiles.rehearsal`)."""
    return torch.cuda.device_count() or (REHEARSAL_RANKS if rehearsal() else 1)


def gpu_layout(profile: str) -> dict:
    """``Recipe`` fields that fit a full fine-tune of a 7-8B model on gpu: one row per pass (a
    step's rows accumulate, the loss still token-averaged), activation checkpointing, and every
    GPU of the machine with FSDP2 (AdamW's states alone are ~112 GB for 7B, more than one GPU
    holds), rows streamed (:class:`lcx.rows.RowStream`, :class:`lcx.rows.Stream`). On tiny and cpu: one process, the rows
    of a step in one pass, made before training, as before."""
    if profile not in ("gpu", "paper"):
        return {
            "micro_rows": None,
            "gradient_checkpointing": False,
            "parallel": None,
            "stream_rows": False,
        }
    return {
        "micro_rows": 1,
        "gradient_checkpointing": True,
        "parallel": {"processes": gpus(), "fsdp": True},
        "stream_rows": True,  # a billion tokens at 32K: ~28 GB of rows, made as they are read
    }


def device_memory(config, recipe: Recipe) -> dict:
    """Bytes one device needs for one training pass of ``recipe`` on a model of ``config``, by part
    (:func:`lcx.budget.memory_plan`: weights, trainable states, activations, logits, ``total``),
    for the rows of one micro-batch (``micro_rows``, else the device's share of a step) and with
    the recipe's layout: FSDP2 and ZeRO-3 shard the weights and the trainable states over every
    rank; Ulysses gives each rank ``seq_len / sp_size`` positions of every row."""
    from . import budget

    lora, p = recipe.lora or {}, recipe.parallel or {}
    method = "qlora" if lora.get("quantize") else "lora" if lora else "full"
    sp = int(p.get("sp_size", 1))
    rows = recipe.micro_rows or recipe.rows_per_step // data_parallel_size(recipe)
    plan = budget.memory_plan(
        config,
        recipe.seq_len // sp,
        method,
        batch=rows,
        r=lora.get("r", 32),
        train_embeddings="embed_tokens" in lora.get("modules_to_save", ()),
        checkpointing=recipe.gradient_checkpointing,
    )
    shards = processes(recipe) if p.get("fsdp") or sp > 1 else 1
    logits = plan["logits"]
    if recipe.loss_chunk:  # one piece's logits at a time (ChunkedLoss)
        logits *= min(recipe.loss_chunk, recipe.seq_len // sp) / (recipe.seq_len // sp)
    parts = {
        "weights": plan["weights"] / shards,
        "trainable": plan["trainable"] / shards,
        "activations": plan["activations"],
        "logits": logits,
    }
    return {**parts, "total": sum(parts.values()), "rows": rows}


def _memory_fix(part: str, recipe: Recipe, rows: int) -> str:
    """The setting that shrinks ``part`` of :func:`device_memory` for ``recipe``."""
    sharded = bool((recipe.parallel or {}).get("fsdp") or (recipe.parallel or {}).get("sp_size"))
    if rows > 1 and part in ("logits", "activations"):
        return "micro_rows=1 (gradient accumulation, the loss still token-averaged)"
    return {
        "logits": "a smaller loss_chunk"
        if recipe.loss_chunk
        else "loss_chunk (the loss in pieces of positions) or sequence parallelism (sp_size)",
        "activations": "gradient_checkpointing=True"
        if not recipe.gradient_checkpointing
        else "sequence parallelism (parallel sp_size)",
        "trainable": "FSDP over more GPUs (parallel processes)"
        if sharded
        else "LoRA or QLoRA (Recipe.lora), or FSDP (parallel fsdp)",
        "weights": "FSDP over more GPUs (parallel processes)"
        if sharded
        else "FSDP (parallel fsdp) or a 4-bit base (lora quantize nf4)",
    }[part]


def memory_check(config, recipe: Recipe, capacity: int | None = None) -> dict | None:
    """:func:`device_memory` against ``capacity`` bytes (None: this machine's first GPU, and no
    check without one): a recipe that does not fit is refused before anything loads or trains,
    naming its largest part and the setting that shrinks it. Returns the plan (None unchecked)."""
    if capacity is None:
        if not torch.cuda.is_available():
            return None
        capacity = torch.cuda.get_device_properties(0).total_memory
    plan = device_memory(config, recipe)
    if plan["total"] > capacity:
        parts = {k: plan[k] for k in ("weights", "trainable", "activations", "logits")}
        worst = max(parts, key=parts.get)
        sizes = ", ".join(f"{k} {v / 2**30:.1f}" for k, v in parts.items())
        raise MemoryError(
            f"{recipe.seq_len} tokens x {plan['rows']} rows per pass needs "
            f"{plan['total'] / 2**30:.1f} GiB per device ({sizes}) of {capacity / 2**30:.1f}: "
            f"{worst} overflows; try {_memory_fix(worst, recipe, plan['rows'])}"
        )
    return plan


# transformers >= 5.19 names the switch activation_checkpointing (gradient_checkpointing stays as a
# deprecated alias that warns on every run); 5.17 and 5.18, which Unsloth pins, have only
# gradient_checkpointing and refuse the new keyword
CHECKPOINTING = (
    "activation_checkpointing"
    if "activation_checkpointing" in {f.name for f in dataclasses.fields(TrainingArguments)}
    else "gradient_checkpointing"
)


def training_arguments(
    recipe: Recipe, output_dir: Path, attn: str | None = None
) -> TrainingArguments:
    """The recipe as ``TrainingArguments`` (the row count per step is ``batch_tokens / seq_len``);
    ``attn``: the attention the model trains with (:func:`parallel_arguments`)."""
    if recipe.schedule not in SCHEDULES:
        raise ValueError(f"schedule={recipe.schedule!r} is not one of {tuple(SCHEDULES)}")
    parallel = parallel_arguments(recipe, attn)
    return TrainingArguments(
        output_dir=str(output_dir),
        max_steps=recipe.steps,
        per_device_train_batch_size=recipe.micro_rows or recipe.rows_per_step,
        gradient_accumulation_steps=recipe.rows_per_step
        // ((recipe.micro_rows or recipe.rows_per_step) * data_parallel_size(recipe)),
        learning_rate=recipe.lr,
        lr_scheduler_type=SCHEDULES[recipe.schedule],
        lr_scheduler_kwargs={"min_lr_rate": recipe.min_lr_ratio}
        if recipe.schedule == "cosine"
        else {},
        warmup_steps=recipe.warmup,
        adam_beta1=recipe.betas[0],
        adam_beta2=recipe.betas[1],
        weight_decay=recipe.weight_decay,
        max_grad_norm=recipe.grad_clip,
        bf16=recipe.bf16,
        use_cpu=not torch.cuda.is_available(),
        **{CHECKPOINTING: recipe.gradient_checkpointing and "fsdp" not in parallel},
        seed=recipe.seed,
        data_seed=recipe.seed,
        train_sampling_strategy="sequential",  # the rows are already in a seeded order
        logging_steps=max(1, recipe.steps // 100),
        save_strategy="steps",
        save_steps=recipe.save_every,
        save_total_limit=2,  # keep a fallback in case a kill lands mid-checkpoint
        report_to="none",
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=False,
        **parallel,
    )


# The lcx modules whose code a run's key fingerprints (lcx.cache.code_fingerprint): the trainer
# and its loss, the rows it packs, the model code it trains (xPos, LoRA and QLoRA, the
# per-document attention, xPos's rotation in rope); run adds tasks when it packs task formats.
RUN_CODE = ("train", "rows", "models", "attention", "rope")


def run(
    model: LlamaForCausalLM,
    tokens,
    tokenizer,
    recipe: Recipe,
    inputs: list[str],
    name: str = "run",
    rows=None,  # list[dict], lcx.rows.Stream or lcx.rows.RowStream
):
    """Train ``model`` by ``recipe`` on ``tokens`` (from :func:`lcx.data.tokenize`), cached.

    ``inputs``: the cache keys this run depends on (tokens, tokenizer, initial model). ``rows``:
    ready-made training rows (:mod:`lcx.rows`, e.g. :func:`lcx.rows.sft_rows`) used instead of
    packing ``tokens``; their content is part of the cache key (a stream's, :class:`lcx.rows.Stream`
    or :class:`lcx.rows.RowStream`: what makes it). Returns the run folder: ``model/``
    (``save_pretrained``, LoRA merged), ``recipe.json`` and ``log.json`` (loss per step). A run
    interrupted at any point resumes from its last checkpoint when called again.
    """
    torch.set_flush_denormal(True)  # denormals in AdamW state slow CPU training 3-4x
    check_layout(recipe)  # a bad layout fails here, not in the launched processes
    memory_check(model.config, recipe)  # on a GPU: a recipe that cannot fit is refused now
    # several processes, or FSDP on one GPU: transformers' Trainer takes FSDP only in distributed
    # training ("Using fsdp only works in distributed training", Trainer.__init__), which a
    # torchrun launch of one process is
    launch = bool(recipe.parallel) and (processes(recipe) > 1 or bool(recipe.parallel.get("fsdp")))
    if launch and recipe.lora:
        raise ValueError("LoRA runs train in one process (QLoRA fits one GPU); drop parallel")
    lora = recipe.lora or {}
    if lora.get("quantize") not in (None, "nf4"):
        raise ValueError(f"lora quantize={lora['quantize']!r}: only 'nf4' (QLoRA) is supported")
    if lora.get("backend", "peft") not in ("peft", "unsloth"):
        raise ValueError(f"lora backend={lora['backend']!r}: 'peft' or 'unsloth'")
    streamed = isinstance(rows, row_builders.RowStream | row_builders.Stream)
    if streamed and len(rows) < recipe.steps * recipe.rows_per_step:
        raise ValueError(
            f"a stream of {len(rows)} rows for a run of {recipe.steps * recipe.rows_per_step}"
        )
    config = {
        "recipe": recipe.config(),
        # not where the model was loaded from: the same model in another cache is the same run
        "model": {k: v for k, v in model.config.to_dict().items() if k != "_name_or_path"},
        "name": name,
        "version": 1,
    }
    if rows is not None:
        config["rows"] = row_builders.rows_key(rows)
    # the code that trains it, and the task generators when it packs their formats itself
    # (ready-made rows are hashed above, whatever made them)
    formats = ("tasks",) if rows is None and recipe.formats else ()
    config["code"] = cache.code_fingerprint(*RUN_CODE, *formats)
    work = cache.cache_root() / "work" / f"{name}-{cache.key('run', config, inputs)}"

    @_quiet_weights
    def build(folder: Path) -> None:
        work.mkdir(parents=True, exist_ok=True)
        n_rows = recipe.steps * recipe.rows_per_step
        split = None if rows is not None else tokens["train"] if "train" in tokens else tokens
        if isinstance(rows, row_builders.RowStream | row_builders.Stream):
            data = rows
        elif rows is not None:
            data = rows[:n_rows]
        elif recipe.stream_rows:
            data = row_builders.RowStream(split, recipe, tokenizer.bos_token_id, n_rows, tokenizer)
        else:
            data = row_builders.packed_rows(
                split, recipe, tokenizer.bos_token_id, n_rows, tokenizer
            )
        model.config.use_cache = False
        if launch:
            log = _launch(model, data, recipe, work, folder / "model")
        else:
            log = _train_here(model, data, recipe, work, folder / "model", tokenizer)
        (folder / "log.json").write_text(json.dumps(log))
        (folder / "recipe.json").write_text(json.dumps(recipe.config(), indent=2))

    done = cache.cached("run", config, build, inputs=inputs)
    # commit, then clean: the checkpoints go only once the finished run is in place, so a kill
    # while it is hashed or renamed resumes from them (a kill after the rename: the next call
    # finds the run and cleans here)
    shutil.rmtree(work, ignore_errors=True)
    return done


def _train_here(model, data, recipe: Recipe, work: Path, out: Path, tokenizer) -> list[dict]:
    """A run in this process (LoRA/QLoRA through peft or Unsloth, or full fine-tuning): trains,
    saves the model (adapters merged) into ``out`` and returns the loss log."""
    net, lora = model, dict(recipe.lora or {})
    quantize = lora.pop("quantize", None)
    backend = lora.pop("backend", "peft")
    if recipe.lora and backend == "unsloth":
        from .models import unsloth_lora

        if recipe.document_masking:
            _check_unsloth_packing()
        net = unsloth_lora(model, **lora)  # a model from models.unsloth_model, already 4-bit
    elif recipe.lora:
        from .models import add_lora, quantize_nf4

        # QLoRA computes in the recipe's 16-bit type on a GPU (the paper's bf16); bitsandbytes' CPU
        # path keeps float32, with bf16 autocast around it as for every CPU run
        compute = torch.bfloat16 if recipe.bf16 and torch.cuda.is_available() else torch.float32
        net = add_lora(quantize_nf4(model, compute) if quantize else model, **lora)
        if quantize:  # the 4-bit copy trains; the model waits for the merge off the GPU
            _off_the_gpu(model)
    if recipe.bf16 and backend != "unsloth":  # (autocast reconciles fp32 and bf16 weights)
        fp32_trainable(net)
    trainer = _fit(net, data, recipe, work)
    if recipe.lora and backend == "unsloth":
        # Unsloth's base exists only in 4 bits: its 16-bit merge dequantizes the base and adds
        # the update there (merging into the 4-bit weights would round most of it away)
        net.save_pretrained_merged(str(out), tokenizer, save_method="merged_16bit")
    else:
        if recipe.lora and quantize:
            from .models import merge_lora

            net = merge_lora(model, net, lora)
        elif recipe.lora:
            net = net.merge_and_unload()
        net.save_pretrained(out)
    return _loss_history(trainer)


def fp32_trainable(net) -> None:
    """Keep every parameter a run trains in fp32, the master copy the memory plan counts (bf16
    autocast computes with a bf16 copy). A model loaded on a GPU is bf16, and so are the modules
    peft trains in full (``modules_to_save``: Llama-3 80K's embeddings), copied in the model's type
    (peft upcasts only its adapters): AdamW would then step bf16 weights with bf16 moments, and
    an update below half a bf16 spacing (lr 5e-5 on a weight above 2^-6) would round to nothing.
    Frozen weights keep their type; bf16 autocast computes with both. On the CPU the book's models
    are fp32 already."""
    for p in net.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()


def _off_the_gpu(model) -> None:
    """Move a run's start model to the CPU when the run no longer needs it on the GPU (a launched
    run's ranks load it from disk; QLoRA trains a 4-bit copy and merges into it at the end): left
    there it would sit beside the training, unplanned (Llama 3 8B in bf16: 16 GB, so chapter
    06's rank 0 at 49 GB by the plan plus the notebook's base and this copy, 81 GB of an 80 GB
    GPU). Chapters pass runs a copy made for them (:func:`lcx.models.with_rope`, a load), which
    no one reads after; on the CPU this does nothing."""
    if any(p.device.type != "cpu" for p in model.parameters()):
        model.to("cpu")
        torch.cuda.empty_cache()


def _loss_history(trainer) -> list[dict]:
    return [e for e in trainer.state.log_history if "loss" in e]


def _fit(net, data, recipe: Recipe, work: Path) -> LcxTrainer:
    """Train ``net`` on the rows ``data`` (resuming from ``work``'s last checkpoint)."""
    sp = int((recipe.parallel or {}).get("sp_size", 1)) > 1
    if recipe.loss_chunk:  # through Unsloth too: without labels its forward calls the model's
        chunk_loss(net, recipe.loss_chunk)  # lm_head (unsloth/models/llama.py, CausalLM forward)
    args = training_arguments(recipe, work, net.config._attn_implementation)
    checkpoint, callbacks = last_checkpoint(work), []
    if checkpoint and isinstance(data, row_builders.RowStream | row_builders.Stream):
        # a stream resumes where the checkpoint left it, passing over the rows trained on
        # without making them; the Trainer's own skip would make and collate every one
        step = json.loads((Path(checkpoint) / "trainer_state.json").read_text())["global_step"]
        data, args.ignore_data_skip = data.resumed(step * recipe.rows_per_step), True
        callbacks.append(_EpochOfResumedStream())
    trainer = LcxTrainer(
        model=net,
        args=args,
        train_dataset=data,
        data_collator=functools.partial(collate, shifted=sp),
        callbacks=callbacks,
        recipe=recipe,
    )
    _bar_without_loss_table(trainer)
    trainer.train(resume_from_checkpoint=checkpoint)
    return trainer


class _EpochOfResumedStream(TrainerCallback):
    """The epoch a resumed stream's steps log (``ignore_data_skip``: the Trainer counts the
    epoch's batches from 0 again; resumed at step 10 of 30, it would log 0.033 at step 11, not
    0.367). A run is one pass over its rows, so the epoch is the share of the steps done, as the
    Trainer computes it when it skips the batches itself (the same ratio, so the same float)."""

    def on_step_end(self, args, state, control, **kwargs):
        state.epoch = state.global_step / state.max_steps


def _bar_without_loss_table(trainer) -> None:
    """In a notebook, keep the Trainer's progress bar but not the table it grows by one row per
    logged loss (up to ~100 rows a run; the loss curve is in the run's ``log.json``)."""
    from transformers.utils.notebook import NotebookProgressCallback

    class ProgressBarOnly(NotebookProgressCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            pass

    if trainer.pop_callback(NotebookProgressCallback) is not None:
        trainer.add_callback(ProgressBarOnly)


def _launch(model, data, recipe: Recipe, work: Path, out: Path) -> list[dict]:
    """Train on ``processes(recipe)`` ranks: the start model, the rows and the recipe go to
    ``work/launch``, ``torchrun`` starts :func:`_worker` on each rank (gloo on CPU, NCCL on
    GPUs), and the main rank saves the model into ``out``. Returns the loss log. The notebook's
    process stays single, so papermill and the cache work as for any run; a failed rank raises
    here with its exit code, and a rerun resumes from the last checkpoint in ``work``."""
    import subprocess
    import sys

    spec = work / "launch"
    spec.mkdir(parents=True, exist_ok=True)
    _save_start(model, spec)
    _off_the_gpu(model)  # the ranks load it from disk
    _save_rows(data, spec)
    (spec / "recipe.json").write_text(json.dumps(dataclasses.asdict(recipe)))
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(max(1, torch.get_num_threads() // processes(recipe))),
    }
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={processes(recipe)}",
        "-m",
        "lcx.train",
        str(spec),
        str(work),
        str(out),
    ]
    subprocess.run(command, check=True, env=env)
    return json.loads((spec / "log.json").read_text())


def _worker(spec: Path, work: Path, out: Path) -> None:
    """One rank of :func:`_launch`: the same trainer as a one-process run; ``save_model``
    gathers an FSDP model's shards and writes on the main rank only."""
    fields = json.loads((spec / "recipe.json").read_text())
    recipe = Recipe(**{**fields, "betas": tuple(fields["betas"])})
    model = _load_start(spec)
    model.config.use_cache = False
    torch.set_flush_denormal(True)
    trainer = _fit(model, _load_rows(spec, recipe), recipe, work)
    trainer.save_model(str(out))
    if trainer.is_world_process_zero():
        (out / "training_args.bin").unlink(missing_ok=True)
        (spec / "log.json").write_text(json.dumps(_loss_history(trainer)))


def curriculum(
    model,
    tokens,
    tokenizer,
    recipe: Recipe,
    short_seq_len: int,
    switch_at: float,
    rope_change: dict,
    inputs: list[str],
    name: str = "curriculum",
):
    """Llama 2 Long §4.4 (Tables 10/11): train at ``short_seq_len`` for the first ``switch_at`` of
    ``recipe.tokens``, then switch to ``recipe.seq_len`` and the RoPE in ``rope_change`` (kwargs of
    :func:`lcx.models.with_rope`) for the rest, on one LR schedule and the same token budget.
    Returns the run folder of the second stage.
    """
    from .models import with_rope

    if not 0 < switch_at < 1:
        raise ValueError(f"switch_at={switch_at!r} must be in (0, 1)")
    total = recipe.steps
    first_steps = max(1, round(switch_at * total))
    short = dataclasses.replace(
        recipe,
        seq_len=short_seq_len,
        tokens=first_steps * recipe.batch_tokens,
        schedule_steps=total,
        schedule_start=0,
    )
    long = dataclasses.replace(
        recipe,
        tokens=(total - first_steps) * recipe.batch_tokens,
        schedule_steps=total,
        schedule_start=first_steps,
    )
    run1 = run(model, tokens, tokenizer, short, inputs, name=f"{name}-short")
    switched = with_rope(load_run(run1), **rope_change)
    return run(switched, tokens, tokenizer, long, [*inputs, run1.name], name=f"{name}-long")


# The checkpoint layouts the Trainer (transformers 5) resumes from, as it and accelerate name their
# files: the optimizer's file and, for each, the weights that go with it (any one of them; an
# index names shards that must all be there). Not here: accelerate's per-rank FSDP files (FSDP1's
# LOCAL_STATE_DICT, or use_dcp=False, which the Trainer never passes), since how many ranks wrote
# them cannot be told from the folder; DeepSpeed's, checked by its own ``latest`` file.
CHECKPOINT_LAYOUTS = {
    "one process or DDP": (
        "optimizer.pt",
        (
            "model.safetensors",
            "model.safetensors.index.json",
            "adapter_model.safetensors",  # LoRA adapters
            "pytorch_model.bin",
            "pytorch_model.bin.index.json",
            "adapter_model.bin",
        ),
    ),
    # accelerate's save_fsdp_optimizer / save_fsdp_model, FULL_STATE_DICT (lcx's FSDP runs)
    "FSDP": ("optimizer.bin", ("pytorch_model_fsdp.bin",)),
    # SHARDED_STATE_DICT, through torch.distributed.checkpoint, which writes .metadata last
    "FSDP sharded": ("optimizer_0/.metadata", ("pytorch_model_fsdp_0/.metadata",)),
}


def checkpoint_complete(ckpt: Path) -> bool:
    """Whether the Trainer finished writing ``ckpt`` (a ``checkpoint-<step>`` folder) in a layout
    it resumes from. It writes ``trainer_state.json`` last, so that must parse (a kill or a full
    disk can leave it cut short) and name this step; and the files written before it must be
    there: ``scheduler.pt`` and the optimizer and weights of one of :data:`CHECKPOINT_LAYOUTS`.
    A DeepSpeed checkpoint holds its states (the scheduler's possibly among them) in the
    ``global_step<N>/`` folder named by its ``latest`` file, which ``engine.save_checkpoint``
    writes last."""

    def read_json(path: Path):
        try:
            return json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError):
            return None

    def there(name: str) -> bool:
        if not name.endswith(".index.json"):
            return (ckpt / name).is_file()
        index = read_json(ckpt / name)
        shards = index.get("weight_map") if isinstance(index, dict) else None
        return isinstance(shards, dict) and all((ckpt / f).is_file() for f in shards.values())

    state = read_json(ckpt / "trainer_state.json")
    if not isinstance(state, dict) or f"checkpoint-{state.get('global_step')}" != ckpt.name:
        return False
    if (ckpt / "latest").is_file():
        try:
            states = ckpt / (ckpt / "latest").read_text().strip()
        except (OSError, UnicodeDecodeError):
            return False
        return any(states.glob("*model_states.pt")) and any(states.glob("*optim_states.pt"))
    return (ckpt / "scheduler.pt").is_file() and any(
        there(optimizer) and any(there(w) for w in weights)
        for optimizer, weights in CHECKPOINT_LAYOUTS.values()
    )


def last_checkpoint(work: Path) -> str | None:
    """The newest complete checkpoint in ``work`` (:func:`checkpoint_complete`), or None: a
    newer one cut short falls back to the one before. Nothing is deleted: the Trainer rewrites
    an unfinished checkpoint when the resumed run reaches its step again, and a folder in a
    layout not recognised here may be the only copy of a run's progress."""
    steps = {
        int(ckpt.name.removeprefix("checkpoint-")): ckpt
        for ckpt in work.glob("checkpoint-*")
        if ckpt.name.removeprefix("checkpoint-").isdigit() and ckpt.is_dir()
    }
    for step in sorted(steps, reverse=True):
        if checkpoint_complete(steps[step]):
            return str(steps[step])
    return None


def _quiet_weights(fn):
    """Run ``fn`` without transformers' per-checkpoint "Writing model shards" / "Loading weights"
    bars (dozens per chapter in the rendered book); the training progress bar is the Trainer's
    own and stays."""
    import functools

    from transformers.utils import logging as hf_logging

    @functools.wraps(fn)
    def quiet(*args, **kwargs):
        was = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            return fn(*args, **kwargs)
        finally:
            if was:
                hf_logging.enable_progress_bar()

    return quiet


def fine_tune(start: Path, tokenizer, recipe: Recipe, name: str, rows) -> Path:
    """``start``'s model trained further on ``rows`` (instruction or task tuning, no corpus): a run
    of its own, keyed by the tokenizer, the run it starts from, the recipe and the rows."""
    return run(
        load_run(start),
        None,
        tokenizer,
        recipe,
        inputs=[tokenizer.key, start.name],
        name=name,
        rows=rows,
    )


def find_run(name: str) -> Path | None:
    """The finished run folder called ``name`` (a run's ``.name``, as chapters record them in their
    metrics) in this cache, or None: how a chapter reuses another chapter's models. The folder is
    checked as an ordinary load checks it (:func:`lcx.cache.is_complete`: every file of its
    manifest there at its size); a damaged one is not found."""
    folder = cache.cache_root() / "run" / name
    return folder if cache.is_complete(folder) and (folder / "model").is_dir() else None


def _save_rows(data, spec: Path) -> None:
    """The rows for every rank of a launch: a list as ``rows.pt``; a :class:`lcx.rows.RowStream`
    over a tokenized split on disk as where that split is, a :class:`lcx.rows.Stream` pickled
    (its maker and arguments: a memory-mapped split pickles as its files). Every rank makes the
    same rows; accelerate's loader reads them on the main rank."""
    files = getattr(getattr(data, "tokens", None), "cache_files", None)
    if isinstance(data, row_builders.Stream):
        import pickle

        (spec / "stream.pkl").write_bytes(pickle.dumps(data))
    elif isinstance(data, row_builders.RowStream) and files:
        data.tokenizer.save_pretrained(spec / "tokenizer")
        where = {
            "split": str(Path(files[0]["filename"]).parent),
            "bos_id": data.bos_id,
            "n": data.n,
            "long_short": data.long_short,
        }
        (spec / "stream.json").write_text(json.dumps(where))
    else:
        torch.save(list(data), spec / "rows.pt")


def _load_rows(spec: Path, recipe: Recipe):
    """:func:`_save_rows`' rows in a rank: the list (``weights_only``: tensors, never code), or
    the stream rebuilt from the split on disk, or unpickled (this run's own file)."""
    if (spec / "stream.pkl").is_file():
        import pickle

        return pickle.loads((spec / "stream.pkl").read_bytes())
    if not (spec / "stream.json").is_file():
        return torch.load(spec / "rows.pt", weights_only=True)
    import datasets
    from transformers import AutoTokenizer

    where = json.loads((spec / "stream.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(spec / "tokenizer")
    split = datasets.load_from_disk(where["split"])
    return row_builders.RowStream(
        split, recipe, where["bos_id"], where["n"], tokenizer, where["long_short"]
    )


def _save_start(model, spec: Path) -> None:
    """The start model of a launched run, for every rank: its weights and config, and its
    attention beside them (transformers never writes ``_attn_implementation`` into config.json;
    a rank loading without it would train on SDPA with a dense mask)."""
    model.save_pretrained(spec / "start")
    attn = {"attn_implementation": model.config._attn_implementation}
    (spec / "attention.json").write_text(json.dumps(attn))


def _load_start(spec: Path) -> LlamaForCausalLM:
    """:func:`_save_start`'s model in a rank, with the attention it was saved with (lcx's own
    kernel registered in this process first: :func:`lcx.attention.implementation`)."""
    from .models import install_xpos

    name = json.loads((spec / "attention.json").read_text())["attn_implementation"]
    attn = attention.implementation(name) if name in attention.IMPLEMENTATIONS else name
    return install_xpos(LlamaForCausalLM.from_pretrained(spec / "start", attn_implementation=attn))


@_quiet_weights
def load_run(folder: Path, **kw) -> LlamaForCausalLM:
    """A run's model. Its attention is not in its saved config (transformers drops it), so it is
    this machine's choice (:func:`lcx.attention.implementation`) unless ``attn_implementation``
    is given: FlashAttention-2 on a GPU that has it, not transformers' SDPA default."""
    from .models import install_xpos

    kw.setdefault("attn_implementation", attention.implementation())
    return install_xpos(LlamaForCausalLM.from_pretrained(Path(folder) / "model", **kw))


def loss_log(folder: Path) -> list[dict]:
    return json.loads((Path(folder) / "log.json").read_text())


if __name__ == "__main__":  # a rank of a multi-process run (see _launch)
    import sys

    _worker(*map(Path, sys.argv[1:4]))
