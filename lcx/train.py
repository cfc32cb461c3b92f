"""Training runs built on ``transformers.Trainer``, described by a :class:`Recipe` that reads like a
paper's hyperparameter table, cached by its full config and resumable after a crash.

* Continued pretraining (and pretraining from scratch) on sequences packed from a domain mixture,
  with a minimum document length (Together drops short sequences) and document masking on or off
  (ProLong §A.3; see :mod:`lcx.attention`).
* Task-format rows (any task of :mod:`lcx.tasks`, e.g. passkey) mixed in at given shares with their
  answer tokens up-weighted: the tiny models only learn a probe's format when it is in their
  training mix. They are built from training seeds and training documents only.
* A token-averaged loss (ProLong §A.3): every token in a batch counts the same, whatever its row.

A run's artifact (``lcx.cache``) holds the final model, the recipe and the loss log; checkpoints go
to a work folder keyed the same way, so a run killed mid-way resumes from its last checkpoint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import LlamaForCausalLM, Trainer, TrainingArguments

from . import attention, cache, tasks

IGNORE = -100


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
        del config["parallel"]
        return config


# --- data --------------------------------------------------------------------------------------


def _doc_stream(docs: list[list[int]], rng: random.Random, bos: int):
    """Documents of one domain in a shuffled order, forever, each starting with BOS."""
    order = list(range(len(docs)))
    while True:
        rng.shuffle(order)
        for i in order:
            yield [bos, *docs[i]]


def packed_rows(tokens, recipe: Recipe, bos_id: int, n_rows: int, tokenizer=None) -> list[dict]:
    """``n_rows`` training rows of ``recipe.seq_len`` tokens.

    Each LM row draws a domain by ``recipe.mixture`` and fills the row with that domain's documents
    (cut where the row ends; the rest starts the next row of that domain). With document masking the
    position ids restart per document and the first token of each document is not a target. A share
    ``recipe.formats[task]`` of rows are examples of that task (:mod:`lcx.tasks`, training seeds, text
    from the training documents) at random lengths up to ``seq_len`` and random depths.
    """
    bad = [t for t in recipe.formats if t not in tasks.TASKS]
    if bad or sum(recipe.formats.values()) > 1:
        raise ValueError(
            f"formats={recipe.formats}: tasks must be in {tuple(tasks.TASKS)}, shares sum to <= 1"
        )
    rng = random.Random(recipe.seed)
    weights = {d: w for d, w in recipe.mixture.items() if w > 0}
    by_domain = {d: [] for d in weights}
    if hasattr(tokens, "select_columns"):  # a datasets.Dataset: read the two columns at once
        tokens = tokens.select_columns(["input_ids", "domain"]).to_dict()
    for ids, domain in zip(tokens["input_ids"], tokens["domain"], strict=True):
        if domain in by_domain and len(ids) >= recipe.min_doc_tokens:
            by_domain[domain].append(ids)
    missing = [d for d, docs in by_domain.items() if not docs]
    for d in missing:  # a domain this profile does not have (e.g. books on tiny)
        weights.pop(d)
    if not weights:
        raise ValueError(
            f"no training documents for mixture {recipe.mixture} (min_doc_tokens={recipe.min_doc_tokens})"
        )
    streams = {
        d: _doc_stream(by_domain[d], random.Random(f"{recipe.seed}-{d}"), bos_id) for d in weights
    }
    pending = {d: [] for d in weights}
    domains, probs = zip(*weights.items(), strict=True)
    formats = [(t, share) for t, share in recipe.formats.items() if share > 0]
    pool = None
    if any(tasks.TASKS[t].needs_pool for t, _ in formats):
        pool = tasks.Pool(tokenizer, [ids for docs in by_domain.values() for ids in docs])
    rows = []
    for _ in range(n_rows):
        u, task = rng.random(), None
        for t, share in formats:
            if u < share:
                task = t
                break
            u -= share
        if task is not None:
            rows.append(_format_row(task, tokenizer, recipe, rng, pool))
            continue
        d = rng.choices(domains, probs)[0]
        ids, lengths = [], []
        while len(ids) < recipe.seq_len:
            doc = pending[d] or next(streams[d])
            take = doc[: recipe.seq_len - len(ids)]
            pending[d] = doc[len(take) :]
            ids += take
            lengths.append(len(take))
        pos = attention.position_ids(lengths, recipe.document_masking)
        labels = torch.tensor(ids)
        if recipe.document_masking:
            starts = torch.tensor([0, *lengths[:-1]]).cumsum(0)
            labels[starts] = IGNORE
        rows.append(
            {
                "input_ids": torch.tensor(ids),
                "position_ids": pos,
                "labels": labels,
                "loss_weights": torch.ones(len(ids)),
            }
        )
    return rows


def _format_row(task: str, tokenizer, recipe: Recipe, rng: random.Random, pool) -> dict:
    """One training row of ``task`` at a random length in [seq_len / 4, seq_len] (passkey: from
    its shortest prompt), padded to ``seq_len``; with ``recipe.pack_formats``, examples of
    lengths in [seq_len / 8, seq_len / 2] packed until the row is full."""
    if recipe.pack_formats:
        return _packed_format_row(task, tokenizer, recipe, rng, pool)
    low = tasks.passkey_min_length(tokenizer) if task == "passkey" else recipe.seq_len // 4
    if low > recipe.seq_len:
        raise ValueError(
            f"{task} rows need seq_len >= {low} with this tokenizer (got {recipe.seq_len})"
        )
    try:
        ex = tasks.training_example(task, tokenizer, rng.randint(low, recipe.seq_len), rng, pool)
    except ValueError:  # too short for this task's prompt: use the whole row
        ex = tasks.training_example(task, tokenizer, recipe.seq_len, rng, pool)
    ids = ex.prompt_ids + ex.answer_ids
    if len(ids) > recipe.seq_len:
        raise ValueError(f"{task} example of {len(ids)} tokens for a {recipe.seq_len}-token row")
    pad = recipe.seq_len - len(ids)
    weights = [1.0] * len(ex.prompt_ids) + [recipe.answer_weight] * len(ex.answer_ids) + [0.0] * pad
    labels = ids + [IGNORE] * pad
    ids = ids + [tokenizer.pad_token_id] * pad
    return {
        "input_ids": torch.tensor(ids),
        "position_ids": torch.arange(recipe.seq_len),
        "labels": torch.tensor(labels),
        "loss_weights": torch.tensor(weights),
    }


def _packed_format_row(task: str, tokenizer, recipe: Recipe, rng: random.Random, pool) -> dict:
    ids, weights, n = [], [], recipe.seq_len
    while n - len(ids) >= n // 8:
        room = n - len(ids)
        ex = None
        # a random length; if the task's prompt needs more, half a row; then the rest of the row
        for length in (rng.randint(n // 8, min(n // 2, room)), min(n // 2, room), room):
            try:
                ex = tasks.training_example(task, tokenizer, length, rng, pool)
                break
            except ValueError:
                continue
        if ex is None:
            break
        ids += ex.prompt_ids + ex.answer_ids
        weights += [1.0] * len(ex.prompt_ids) + [recipe.answer_weight] * len(ex.answer_ids)
    if not ids:  # the task needs the whole row
        return _format_row(
            task, tokenizer, dataclasses.replace(recipe, pack_formats=False), rng, pool
        )
    pad = n - len(ids)
    return {
        "input_ids": torch.tensor(ids + [tokenizer.pad_token_id] * pad),
        "position_ids": torch.arange(n),
        "labels": torch.tensor(ids + [IGNORE] * pad),
        "loss_weights": torch.tensor(weights + [0.0] * pad),
    }


# --- the trainer -----------------------------------------------------------------------------------


def lr_factor(step: int, recipe: Recipe) -> float:
    """The LR multiplier at ``step`` of the recipe's schedule (warm-up, then cosine/linear/constant)."""
    total = recipe.schedule_steps or recipe.steps
    warm = math.ceil(recipe.warmup * total) if recipe.warmup < 1 else int(recipe.warmup)
    if step < warm:
        return step / warm  # as transformers: 0 at step 0
    progress = min(1.0, (step - warm) / max(1, total - warm))
    if recipe.schedule == "cosine":
        return recipe.min_lr_ratio + (1 - recipe.min_lr_ratio) * 0.5 * (
            1 + math.cos(math.pi * progress)
        )
    if recipe.schedule == "linear":
        return 1 - progress
    return 1.0


class LcxTrainer(Trainer):
    """``Trainer`` with a token-averaged, weighted loss and packed inputs kept apart (no KV cache).

    For a stage of a longer schedule (``recipe.schedule_steps``) the LR follows that schedule from
    ``recipe.schedule_start``, so a length curriculum keeps one LR curve across its stages.
    """

    def __init__(self, *args, recipe: Recipe | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.recipe = recipe
        self.loss_is_scaled_for_ga = True  # compute_loss divides by the whole step's weight
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
        micro-batch means."""
        total = sum(
            (b["loss_weights"][:, 1:] * (b["labels"][:, 1:] != IGNORE)).sum() for b in batch_samples
        ).to(device)
        if self.args.world_size > 1:
            total = self.accelerator.gather(total).sum()
        return total

    def create_scheduler(self, num_training_steps, optimizer=None):
        if self.recipe is None or self.recipe.schedule_steps is None:
            return super().create_scheduler(num_training_steps, optimizer)
        if self.lr_scheduler is None:
            start, recipe = self.recipe.schedule_start, self.recipe
            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer or self.optimizer, lambda step: lr_factor(start + step, recipe)
            )
        return self.lr_scheduler

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels, weights = inputs.pop("labels"), inputs.pop("loss_weights")
        outputs = model(
            **attention.packed_inputs(
                inputs["input_ids"], inputs["position_ids"], seq_lengths=self.unsloth_documents
            )
        )
        logits = outputs.logits[:, :-1].float()
        target, w = labels[:, 1:], weights[:, 1:] * (labels[:, 1:] != IGNORE)
        nll = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)), target.reshape(-1).clamp(min=0), reduction="none"
        )
        weight = w.sum() if num_items_in_batch is None else num_items_in_batch
        loss = (nll * w.reshape(-1)).sum() / weight.clamp(min=1)
        if num_items_in_batch is not None and self.args.world_size > 1:
            loss = loss * self.args.world_size  # data parallelism averages the ranks' gradients
        return (loss, outputs) if return_outputs else loss


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


def parallel_arguments(recipe: Recipe) -> dict:
    """``TrainingArguments`` keywords for ``recipe.parallel``: FSDP2 sharding one Llama block per
    unit (activation checkpointing inside FSDP, as transformers advises), and accelerate's
    ``ParallelismConfig`` for DeepSpeed-Ulysses sequence parallelism (with a ZeRO-3 DeepSpeed
    config, which Ulysses runs under)."""
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
        from accelerate.utils import ParallelismConfig

        kw["parallelism_config"] = ParallelismConfig(sp_size=sp, sp_backend="deepspeed")
        kw["deepspeed"] = {
            "zero_optimization": {"stage": 3},
            "bf16": {"enabled": recipe.bf16},
            "train_micro_batch_size_per_gpu": "auto",
            "gradient_accumulation_steps": "auto",
            "gradient_clipping": "auto",
        }
    return kw


def training_arguments(recipe: Recipe, output_dir: Path) -> TrainingArguments:
    """The recipe as ``TrainingArguments`` (the row count per step is ``batch_tokens / seq_len``)."""
    schedule = {
        "cosine": "cosine_with_min_lr",
        "linear": "linear",
        "constant": "constant_with_warmup",
    }
    if recipe.schedule not in schedule:
        raise ValueError(f"schedule={recipe.schedule!r} is not one of {tuple(schedule)}")
    parallel = parallel_arguments(recipe)
    return TrainingArguments(
        output_dir=str(output_dir),
        max_steps=recipe.steps,
        per_device_train_batch_size=recipe.micro_rows or recipe.rows_per_step,
        gradient_accumulation_steps=recipe.rows_per_step
        // ((recipe.micro_rows or recipe.rows_per_step) * data_parallel_size(recipe)),
        learning_rate=recipe.lr,
        lr_scheduler_type=schedule[recipe.schedule],
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
        activation_checkpointing=recipe.gradient_checkpointing and "fsdp" not in parallel,
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


def collate(rows: list[dict]) -> dict:
    """Stack training rows (equal-length tensors) into a batch."""
    return {k: torch.stack([r[k] for r in rows]) for k in rows[0]}


def run(
    model: LlamaForCausalLM,
    tokens,
    tokenizer,
    recipe: Recipe,
    inputs: list[str],
    name: str = "run",
    rows: list[dict] | None = None,
):
    """Train ``model`` by ``recipe`` on ``tokens`` (from :func:`lcx.data.tokenize`), cached.

    ``inputs``: the cache keys this run depends on (tokens, tokenizer, initial model). ``rows``:
    ready-made training rows (e.g. :func:`sft_rows`) used instead of packing ``tokens``; their
    content is part of the cache key. Returns the run folder: ``model/`` (``save_pretrained``, LoRA
    merged), ``recipe.json`` and ``log.json`` (loss per step). A run interrupted at any point
    resumes from its last checkpoint when called again.
    """
    torch.set_flush_denormal(True)  # denormals in AdamW state slow CPU training 3-4x
    per_pass = (recipe.micro_rows or recipe.rows_per_step) * data_parallel_size(recipe)
    if (recipe.micro_rows is not None and recipe.micro_rows < 1) or recipe.rows_per_step % per_pass:
        raise ValueError(
            f"micro_rows={recipe.micro_rows} x {data_parallel_size(recipe)} ranks must divide the "
            f"{recipe.rows_per_step} rows per step"
        )
    parallel_arguments(recipe)  # a bad layout fails here, not in the launched processes
    launch = bool(recipe.parallel) and processes(recipe) > 1
    if launch and recipe.lora:
        raise ValueError("LoRA runs train in one process (QLoRA fits one GPU); drop parallel")
    lora = recipe.lora or {}
    if lora.get("quantize") not in (None, "nf4"):
        raise ValueError(f"lora quantize={lora['quantize']!r}: only 'nf4' (QLoRA) is supported")
    if lora.get("backend", "peft") not in ("peft", "unsloth"):
        raise ValueError(f"lora backend={lora['backend']!r}: 'peft' or 'unsloth'")
    config = {
        "recipe": recipe.config(),
        # not where the model was loaded from: the same model in another cache is the same run
        "model": {k: v for k, v in model.config.to_dict().items() if k != "_name_or_path"},
        "name": name,
        "version": 1,
    }
    if rows is not None:
        config["rows"] = rows_key(rows)
    elif recipe.formats:  # rows made here by the task generators: their version is in the key
        config["tasks"] = tasks.VERSION
    work = cache.cache_root() / "work" / f"{name}-{cache.key('run', config, inputs)}"

    @_quiet_weights
    def build(folder: Path) -> None:
        work.mkdir(parents=True, exist_ok=True)
        n_rows = recipe.steps * recipe.rows_per_step
        data = (
            rows[:n_rows]
            if rows is not None
            else packed_rows(
                tokens["train"] if "train" in tokens else tokens,
                recipe,
                tokenizer.bos_token_id,
                n_rows,
                tokenizer,
            )
        )
        model.config.use_cache = False
        if launch:
            log = _launch(model, data, recipe, work, folder / "model")
        else:
            log = _train_here(model, data, recipe, work, folder / "model", tokenizer)
        (folder / "log.json").write_text(json.dumps(log))
        (folder / "recipe.json").write_text(json.dumps(recipe.config(), indent=2))
        shutil.rmtree(work, ignore_errors=True)

    return cache.cached("run", config, build, inputs=inputs)


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

        net = add_lora(quantize_nf4(model) if quantize else model, **lora)
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


def _loss_history(trainer) -> list[dict]:
    return [e for e in trainer.state.log_history if "loss" in e]


def _fit(net, data, recipe: Recipe, work: Path) -> LcxTrainer:
    """Train ``net`` on the rows ``data`` (resuming from ``work``'s last checkpoint)."""
    trainer = LcxTrainer(
        model=net,
        args=training_arguments(recipe, work),
        train_dataset=data,
        data_collator=collate,
        recipe=recipe,
    )
    trainer.train(resume_from_checkpoint=last_checkpoint(work))
    return trainer


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
    model.save_pretrained(spec / "start")
    torch.save(list(data), spec / "rows.pt")
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
    from .models import install_xpos

    fields = json.loads((spec / "recipe.json").read_text())
    recipe = Recipe(**{**fields, "betas": tuple(fields["betas"])})
    model = install_xpos(LlamaForCausalLM.from_pretrained(spec / "start"))
    model.config.use_cache = False
    torch.set_flush_denormal(True)
    trainer = _fit(model, torch.load(spec / "rows.pt"), recipe, work)
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


def _padded_row(ids, pos, labels, weights, seq_len: int, pad_id: int) -> dict:
    """A training row padded to ``seq_len`` (the padding's positions run on from 0, no loss)."""
    pad = seq_len - len(ids)
    return {
        "input_ids": torch.tensor(ids + [pad_id] * pad),
        "position_ids": torch.tensor(pos + list(range(pad))),
        "labels": torch.tensor(labels + [IGNORE] * pad),
        "loss_weights": torch.tensor(weights + [0.0] * pad),
    }


def sft_rows(examples, seq_len: int, pad_id: int, loss_on_inputs: bool = False) -> list[dict]:
    """Instruction-tuning rows: examples packed into ``seq_len`` rows with document masking. An
    example is a (prompt ids, response ids) pair, or a list of such pairs (the turns of one
    conversation, trained on every response). The loss is on responses only, or on inputs too
    (Llama 2 Long Table 9). Examples longer than ``seq_len`` are dropped."""
    rows, ids, pos, labels, weights = [], [], [], [], []

    def flush():
        rows.append(_padded_row(ids, pos, labels, weights, seq_len, pad_id))

    for example in examples:
        turns = [example] if isinstance(example, tuple) else list(example)
        n = sum(len(p) + len(r) for p, r in turns)
        if n > seq_len:
            continue
        if len(ids) + n > seq_len:
            flush()
            ids, pos, labels, weights = [], [], [], []
        pos += list(range(n))
        for i, (prompt, response) in enumerate(turns):
            ids += [*prompt, *response]
            # a document's first token is never a target
            labels += [IGNORE, *prompt[1:], *response] if i == 0 else [*prompt, *response]
            weights += [1.0 if loss_on_inputs else 0.0] * len(prompt) + [1.0] * len(response)
    if ids:
        flush()
    return rows


def conversation_rows(conversations, seq_len: int, pad_id: int) -> list[dict]:
    """One row per :class:`lcx.tasks.Conversation` (context, then each question and its answer),
    padded to ``seq_len``; the loss is on the answers only, as Llama-3 80K fine-tunes the model to
    answer every question of a context's conversation. Conversations longer than ``seq_len`` are
    dropped."""
    rows = []
    for conv in conversations:
        ids, weights = list(conv.context_ids), [0.0] * len(conv.context_ids)
        for question, answer in conv.turns:
            ids += [*question, *answer]
            weights += [0.0] * len(question) + [1.0] * len(answer)
        if len(ids) > seq_len:
            continue
        labels = [IGNORE if w == 0 else t for t, w in zip(ids, weights, strict=True)]
        rows.append(_padded_row(ids, list(range(len(ids))), labels, weights, seq_len, pad_id))
    return rows


def task_sft_rows(
    task: str,
    tokenizer,
    n_rows: int,
    seq_len: int,
    seed: int,
    pool=None,
    lengths: tuple[int, int] | None = None,
    loss_on_inputs: bool = False,
) -> list[dict]:
    """``n_rows`` fine-tuning rows of ``task`` (:mod:`lcx.tasks` training seeds, example lengths
    drawn uniformly from ``lengths``, by default [seq_len / 4, seq_len)), packed by
    :func:`sft_rows`; the loss is on the answers only unless ``loss_on_inputs``."""
    lo, hi = lengths or (seq_len // 4, seq_len - 1)
    if not 0 < lo <= hi < seq_len:
        raise ValueError(f"lengths={lengths!r} must satisfy 0 < lo <= hi < seq_len={seq_len}")
    rng, examples, total = random.Random(seed), [], 0
    while total < n_rows * seq_len:
        try:
            length = rng.randint(lo, hi)
            ex = tasks.training_example(task, tokenizer, length, rng, pool)
        except ValueError:  # too short for this task's prompt: the longest allowed
            ex = tasks.training_example(task, tokenizer, hi, rng, pool)
        examples.append((ex.prompt_ids, ex.answer_ids))
        total += ex.length
    return sft_rows(examples, seq_len, tokenizer.pad_token_id, loss_on_inputs)[:n_rows]


# ProLong's SFT data is UltraChat: short multi-turn chats (1.2K tokens on average, none over 4.1K).
# Our stand-in: short QA conversations over corpus text and short single-turn instructions in the
# probe tasks' formats, one task per HELMET category where the window fits it.
CHAT_TASKS = ("json_kv", "multidoc_qa", "rerank", "icl", "doc_qa", "summary")
CHAT_FAMILIES = ("single_detail", "multi_detail_homogeneous")


def chat_rows(
    tokenizer,
    n_rows: int,
    seq_len: int,
    seed: int,
    pool,
    lengths: tuple[int, int],
    task_names=CHAT_TASKS,
    turns: int = 3,
) -> list[dict]:
    """ProLong's short-only SFT data in miniature: ``n_rows`` rows of ``seq_len`` packed with short
    examples (lengths from ``lengths``), alternating multi-turn QA conversations
    (:func:`lcx.tasks.long_qa` at short lengths, loss on every answer; a single-turn instruction
    where ``lengths`` leave no room for two turns) and single-turn instructions of ``task_names``;
    the loss is on the responses only."""
    lo, hi = lengths
    if not 0 < lo <= hi < seq_len:
        raise ValueError(f"lengths={lengths!r} must satisfy 0 < lo <= hi < seq_len={seq_len}")
    rng, examples, total, i = random.Random(seed), [], 0, 0
    while total < n_rows * seq_len:
        length = rng.randint(lo, hi)
        conv = None
        if i % 2 == 0:  # a conversation: as many turns (>= 2) as fit this length, or as fit hi
            family = CHAT_FAMILIES[(i // 2) % len(CHAT_FAMILIES)]
            seed_i = rng.randrange(10**6)
            for size, k in [(n, k) for n in (length, hi) for k in range(turns, 1, -1)]:
                try:
                    conv = tasks.long_qa(tokenizer, size, seed_i, "train", pool, family, k)
                    break
                except ValueError:
                    continue
        if conv is not None:
            first_q, first_a = conv.turns[0]
            example = [(list(conv.context_ids) + list(first_q), list(first_a)), *conv.turns[1:]]
        else:
            task = task_names[(i // 2) % len(task_names)]
            try:
                ex = tasks.training_example(task, tokenizer, length, rng, pool)
            except ValueError:  # too short for this task's prompt: the longest allowed
                ex = tasks.training_example(task, tokenizer, hi, rng, pool)
            example = (ex.prompt_ids, ex.answer_ids)
        examples.append(example)
        total += sum(
            len(p) + len(r) for p, r in ([example] if isinstance(example, tuple) else example)
        )
        i += 1
    return sft_rows(examples, seq_len, tokenizer.pad_token_id)[:n_rows]


def chat_template_rows(conversations, tokenizer, n_rows: int, seq_len: int) -> list[dict]:
    """SFT rows from chat conversations (lists of ``{"role", "content"}`` messages, as UltraChat's
    ``messages`` column) rendered by the tokenizer's chat template, packed by :func:`sft_rows`:
    every assistant message is a response with the loss on it; everything before it (system and
    user turns, the template's markup) is prompt. ``conversations`` may be a stream: it is read
    until ``n_rows`` rows are full."""

    def render(messages, generation_prompt=False):
        out = tokenizer.apply_chat_template(
            messages, add_generation_prompt=generation_prompt, tokenize=True
        )
        return list(out["input_ids"] if hasattr(out, "keys") else out)

    examples, total = [], 0
    for messages in conversations:
        turns, done = [], []
        for i, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            prefix = render(messages[:i], generation_prompt=True)
            full = render(messages[: i + 1])
            if prefix[: len(done)] != done or full[: len(prefix)] != prefix:
                raise ValueError(
                    "the chat template does not render a conversation's prefixes stably"
                )
            turns.append((prefix[len(done) :], full[len(prefix) :]))
            done = full
        if turns and len(done) <= seq_len:  # longer ones would be dropped by sft_rows
            examples.append(turns)
            total += len(done)
        if total >= n_rows * seq_len:
            break
    rows = sft_rows(examples, seq_len, tokenizer.pad_token_id)
    if len(rows) < n_rows:
        raise ValueError(f"the conversations filled {len(rows)} rows of {seq_len}, not {n_rows}")
    return rows[:n_rows]


# ProLong §5: its synthetic long instruction data is 40% QA, 30% RAG and 30% summarization.
SYNTHETIC_LONG = {"self_instruct": 0.4, "multidoc_qa": 0.3, "summary": 0.3}


def synthetic_long_rows(
    tokenizer, n_rows: int, seq_len: int, seed: int, pool, lengths: tuple[int, int], shares=None
) -> list[dict]:
    """ProLong's synthetic long instruction data in miniature: QA written from one chunk of a long
    document with the whole document as context (``self_instruct``), the same with retrieved-like
    passages (``multidoc_qa``) and summarization (``summary``), in :data:`SYNTHETIC_LONG`'s shares."""
    shares = SYNTHETIC_LONG if shares is None else shares
    parts = {
        task: (
            share,
            lambda n, task=task, i=i: task_sft_rows(
                task, tokenizer, n, seq_len, 1000 * seed + i, pool, lengths
            ),
        )
        for i, (task, share) in enumerate(shares.items())
    }
    return mix_rows(parts, n_rows, seed)


def long_short_rows(
    tokens,
    recipe: Recipe,
    long_share: float,
    n_rows: int,
    bos_id: int,
    long_mixture,
    short_mixture,
    tokenizer=None,
) -> list[dict]:
    """ProLong §3's continued-training rows: a share ``long_share`` of rows are long documents
    (``long_mixture``'s domains, only documents at least ``recipe.seq_len`` long, so a row is one
    document's chunk), the rest pack short data (``short_mixture``) with ``recipe``'s document
    masking. Format rows (``recipe.formats``) go in the short part."""
    if not 0 <= long_share <= 1:
        raise ValueError(f"long_share={long_share!r} must be in [0, 1]")
    long = dataclasses.replace(
        recipe, mixture=dict(long_mixture), min_doc_tokens=recipe.seq_len, formats={}
    )
    short = dataclasses.replace(recipe, mixture=dict(short_mixture), min_doc_tokens=0)
    parts = {
        "long": (long_share, lambda n: packed_rows(tokens, long, bos_id, n)),
        "short": (1 - long_share, lambda n: packed_rows(tokens, short, bos_id, n, tokenizer)),
    }
    return mix_rows(parts, n_rows, recipe.seed)


def share_counts(shares: dict[str, float], n: int) -> dict[str, int]:
    """Split ``n`` rows by ``shares`` (any positive weights): the counts sum to ``n`` exactly, each
    within one row of ``n * share / total`` (largest remainders get the leftover rows)."""
    if n < 0 or not shares or any(not v >= 0 for v in shares.values()) or not sum(shares.values()):
        raise ValueError(
            f"need n >= 0 and non-negative shares with a positive sum, got {n}, {shares}"
        )
    total = sum(shares.values())
    exact = {k: n * v / total for k, v in shares.items()}
    counts = {k: int(v) for k, v in exact.items()}
    by_remainder = sorted(shares, key=lambda k: exact[k] - counts[k], reverse=True)
    for k in by_remainder[: n - sum(counts.values())]:
        counts[k] += 1
    return counts


def mix_rows(parts: dict, n: int, seed: int) -> list[dict]:
    """A data recipe's ``n`` training rows: ``parts`` maps a name to ``(share, make)``, where
    ``make(count)`` returns ``count`` rows of that kind; the counts follow the shares
    (:func:`share_counts`) and the rows are shuffled together by ``seed``.

    Llama-3 80K's mix is ``{"long QA": (3.5, ...), "short LM": (5, ...), "instructions": (12, ...)}``;
    ProLong's long/short ratio and SFT mixes are the same call with other shares.
    """
    counts = share_counts({k: share for k, (share, _) in parts.items()}, n)
    rows = []
    for name, (_, make) in parts.items():
        if counts[name]:
            made = make(counts[name])
            if len(made) != counts[name]:
                raise ValueError(f"part {name!r} made {len(made)} rows, asked for {counts[name]}")
            rows += made
    random.Random(seed).shuffle(rows)
    return rows


def rows_key(rows: list[dict]) -> str:
    h = hashlib.sha256()
    for row in rows:
        for k in sorted(row):
            h.update(k.encode())
            h.update(row[k].numpy().tobytes())
    return h.hexdigest()[:16]


CHECKPOINT_FILES = ("trainer_state.json", "optimizer.pt", "scheduler.pt")
WEIGHT_FILES = ("model.safetensors", "adapter_model.safetensors")  # full model or LoRA adapters


def last_checkpoint(work: Path) -> str | None:
    """The newest complete checkpoint in ``work``; incomplete ones (a kill mid-save) are removed."""
    for ckpt in sorted(
        work.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]), reverse=True
    ):
        if all((ckpt / f).is_file() for f in CHECKPOINT_FILES) and any(
            (ckpt / f).is_file() for f in WEIGHT_FILES
        ):
            return str(ckpt)
        shutil.rmtree(ckpt, ignore_errors=True)
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


def fine_tune(start: Path, tokenizer, recipe: Recipe, name: str, rows: list[dict]) -> Path:
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
    metrics) in this cache, or None: how a chapter reuses another chapter's models."""
    folder = cache.cache_root() / "run" / name
    return folder if (folder / "model").is_dir() else None


@_quiet_weights
def load_run(folder: Path, **kw) -> LlamaForCausalLM:
    from .models import install_xpos

    return install_xpos(LlamaForCausalLM.from_pretrained(Path(folder) / "model", **kw))


def loss_log(folder: Path) -> list[dict]:
    return json.loads((Path(folder) / "log.json").read_text())


if __name__ == "__main__":  # a rank of a multi-process run (see _launch)
    import sys

    _worker(*map(Path, sys.argv[1:4]))
