"""What the gpu profile needs from lcx's trainer and evaluation, checked on a CPU (issue 20): the
keywords of the installed transformers, DeepSpeed-Ulysses' sharded labels, the attention a rank and
a reloaded run train and score with, FlashAttention's document boundaries for packed batches, the
weights ZeRO-3 saves, where evaluation puts its inputs, and each base model's window. Runs on the
project's venv and on the transformers 5.17 venv (make test-transformers-5.17)."""

import dataclasses
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from test_evaluate import small_model  # the tests' small Llama

from lcx import attention, evaluate, models, pretrained, train
from lcx import rows as row_builders


def test_training_arguments_use_the_checkpointing_keyword_this_transformers_has(tmp_path):
    """transformers 5.17 (Unsloth's pin) has gradient_checkpointing only; 5.19+ renamed it
    activation_checkpointing, keeping the old one as a warning alias. Every recipe builds."""
    from transformers import TrainingArguments

    fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    recipe = train.Recipe(
        seq_len=8, tokens=64, batch_tokens=64, lr=1.0, gradient_checkpointing=True
    )
    args = train.training_arguments(recipe, tmp_path)
    assert train.CHECKPOINTING in fields
    assert getattr(args, train.CHECKPOINTING) is True
    assert args.gradient_checkpointing is True  # what the Trainer reads, on either version


def _rows(n_rows=2, length=12, vocab=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n_rows):
        ids = torch.randint(3, vocab, (length,), generator=g)
        labels = ids.clone()
        labels[:3] = row_builders.IGNORE  # a prompt without loss
        weights = torch.ones(length)
        weights[-4:] = 5.0  # an answer weighted up
        pos = torch.cat([torch.arange(5), torch.arange(length - 5)])  # two documents
        rows.append(
            {"input_ids": ids, "labels": labels, "loss_weights": weights, "position_ids": pos}
        )
    return rows


def _ulysses_shards(batch: dict, sp: int) -> list[dict]:
    """DeepSpeed's UlyssesSPDataLoaderAdapter.refill (deepspeed/runtime/sequence_parallel/
    ulysses_sp.py, 0.18.2-0.19.x): labels popped, padded with -100 and shifted into shift_labels,
    then every (B, L) tensor cut into sp contiguous shards, one per rank."""
    batch = dict(batch)
    labels = torch.nn.functional.pad(batch.pop("labels"), (0, 1), value=-100)
    batch["shift_labels"] = labels[..., 1:].contiguous()
    chunk = batch["input_ids"].shape[1] // sp
    return [{k: v[:, chunk * r : chunk * (r + 1)] for k, v in batch.items()} for r in range(sp)]


class _ShardModel:
    """A model whose logits are fixed, full-row logits cut to the shard it is given (what the
    ranks of an Ulysses model produce together: each its own positions' logits)."""

    def __init__(self, logits):
        self.logits, self.start = logits, 0
        self.config = SimpleNamespace(_attn_implementation="sdpa")

    def __call__(self, input_ids, **kw):
        out = self.logits[:, self.start : self.start + input_ids.shape[1]]
        return SimpleNamespace(logits=out)


def test_ulysses_shards_add_up_to_the_whole_rows_token_averaged_loss():
    """Under sequence parallelism each rank sees shift_labels (not labels) for its shard; the
    ranks' weighted losses, each divided by the step's total weight, add up to the loss of the
    whole rows computed position by position here."""
    rows = _rows()
    logits = torch.randn(2, 12, 50, generator=torch.Generator().manual_seed(1))
    total, weight = 0.0, 0.0  # the reference, one position at a time
    for b, row in enumerate(rows):
        for i in range(11):
            label = int(row["labels"][i + 1])
            if label == row_builders.IGNORE:
                continue
            w = float(row["loss_weights"][i + 1])
            total += w * -torch.log_softmax(logits[b, i], -1)[label].item()
            weight += w
    reference = total / weight

    shards = _ulysses_shards(train.collate(rows, shifted=True), sp=3)
    one_rank = SimpleNamespace(args=SimpleNamespace(world_size=1), unsloth_documents=False)
    counted = train.LcxTrainer._get_num_items_in_batch(one_rank, shards, "cpu")
    assert float(counted) == pytest.approx(weight)  # the shards count every weighted target once
    model, losses = _ShardModel(logits), []
    for r, shard in enumerate(shards):
        model.start = 4 * r
        losses.append(
            train.LcxTrainer.compute_loss(one_rank, model, dict(shard), num_items_in_batch=counted)
        )
    assert float(sum(losses)) == pytest.approx(reference, rel=1e-5)
    # and without sequence parallelism the same rows give the same loss in one piece
    model.start = 0
    whole = train.collate(rows)
    assert float(train.LcxTrainer.compute_loss(one_rank, model, whole)) == pytest.approx(
        reference, rel=1e-5
    )


def test_sequence_parallelism_names_the_models_attention_and_gathers_weights_on_save(tmp_path):
    """accelerate leaves Ulysses' attention at None unless told (DeepSpeed refuses None, and from
    0.19 any name but the model's); ZeRO-3 saves no model.safetensors unless it gathers the
    16-bit weights, which accelerate reads from the DeepSpeed config."""
    from accelerate.utils.deepspeed import HfDeepSpeedConfig

    base = train.Recipe(seq_len=8, tokens=64, batch_tokens=64, lr=1.0, micro_rows=1)
    ulysses = dataclasses.replace(base, parallel={"processes": 8, "sp_size": 8})
    kw = train.parallel_arguments(ulysses, "flash_attention_2")
    assert kw["parallelism_config"].sp_handler.sp_attn_implementation == "flash_attention_2"
    ds = HfDeepSpeedConfig(kw["deepspeed"])
    assert ds.is_zero3() and ds.is_true(
        "zero_optimization.stage3_gather_16bit_weights_on_model_save"
    )
    # the reduce-scatter path averages every rank's gradient over the whole world (ZeRO-3's
    # __avg_scatter_grads), which the loss's world_size factor assumes
    assert ds.is_true("zero_optimization.reduce_scatter")
    # Ulysses drops tensor masks: packed documents stay apart only through FlashAttention's
    # position ids with one row per micro-batch, and it wraps no custom kernel
    with pytest.raises(ValueError, match="document masking under sequence parallelism"):
        train.parallel_arguments(ulysses, "sdpa")
    with pytest.raises(ValueError, match="document masking under sequence parallelism"):
        train.parallel_arguments(dataclasses.replace(ulysses, micro_rows=2), "flash_attention_2")
    with pytest.raises(ValueError, match="wraps one of"):
        train.parallel_arguments(ulysses, attention.VARLEN)
    unmasked = dataclasses.replace(ulysses, document_masking=False, micro_rows=None)
    assert train.parallel_arguments(unmasked, "sdpa")["parallelism_config"].sp_enabled


def _tiny(attn: str):
    config = models.tiny_config("tiny", 64, 32, 100.0)
    config._attn_implementation = attention.implementation(attn)
    return models.new_model(config, seed=0)


def test_a_launched_rank_and_a_reloaded_run_keep_the_attention(tmp_path, monkeypatch):
    """transformers never saves _attn_implementation in config.json, and from_pretrained without
    it picks SDPA: the launched ranks get it beside the start model, a reloaded run this
    machine's choice (lcx.attention.implementation) unless told otherwise."""
    model = _tiny("eager")
    train._save_start(model, tmp_path)
    assert train._load_start(tmp_path).config._attn_implementation == "eager"
    varlen = _tiny(attention.VARLEN)
    train._save_start(varlen, tmp_path / "v")
    assert train._load_start(tmp_path / "v").config._attn_implementation == attention.VARLEN
    run = tmp_path / "run"
    model.save_pretrained(run / "model")
    monkeypatch.setenv("LCX_ATTN", "eager")
    assert train.load_run(run).config._attn_implementation == "eager"
    monkeypatch.delenv("LCX_ATTN")
    assert train.load_run(run).config._attn_implementation == attention.implementation()
    assert train.load_run(run, attn_implementation="eager").config._attn_implementation == "eager"


def test_flash_attention_gets_every_documents_boundaries_in_a_batch_of_rows():
    """For FlashAttention, transformers reads position-id resets as packed documents only in a
    batch of one row; lcx passes the varlen boundaries itself, the ones transformers' own helper
    computes from the same position ids (rows starting at position 0)."""
    from transformers.modeling_flash_attention_utils import prepare_fa_kwargs_from_position_ids

    pos = torch.stack(
        [
            torch.cat([torch.arange(3), torch.arange(5), torch.arange(2)]),
            torch.cat([torch.arange(7), torch.arange(3)]),
        ]
    )
    ids = torch.zeros_like(pos)
    out = attention.packed_inputs(ids, pos, boundaries=True)
    (cu_q, cu_k), (max_q, max_k) = prepare_fa_kwargs_from_position_ids(pos)
    assert out["cu_seq_lens_q"].tolist() == cu_q.tolist() == [0, 3, 8, 10, 17, 20]
    assert out["cu_seq_lens_k"].tolist() == cu_k.tolist()
    assert out["cu_seq_lens_q"].dtype == torch.int32
    assert out["max_length_q"] == out["max_length_k"] == int(max_q) == int(max_k) == 7
    assert "cu_seq_lens_q" not in attention.packed_inputs(ids, pos)  # other kernels: the resets


class _Recorder(torch.nn.Module):
    """A model with its weights on the meta device (a GPU's stand-in here) that records where its
    inputs were and answers on their device; its generate answers with CPU tokens."""

    def __init__(self, vocab=16):
        super().__init__()
        self.w = torch.nn.Parameter(torch.empty(1, device="meta"))
        self.vocab, self.seen = vocab, []
        self.config = SimpleNamespace(  # a causal LM's, as the evaluations read it
            vocab_size=vocab,
            hidden_size=2,
            num_hidden_layers=1,
            num_attention_heads=1,
            num_key_value_heads=1,
            head_dim=2,
        )

    def forward(self, input_ids, **kw):
        self.seen.append(input_ids.device.type)
        return SimpleNamespace(
            logits=torch.zeros(*input_ids.shape, self.vocab, device=input_ids.device)
        )

    def generate(self, input_ids, attention_mask, max_new_tokens, **kw):
        self.seen += [input_ids.device.type, attention_mask.device.type]
        b = input_ids.shape[0]
        return torch.zeros(b, input_ids.shape[1] + max_new_tokens, dtype=torch.long)


def test_evaluation_sends_its_inputs_where_the_model_is():
    """A model on a GPU takes CUDA tensors: the evaluations move their inputs to the model's
    device. On the meta device the scores cannot come back (no data), so each evaluation stops
    there, after its model has seen its inputs on its own device."""
    model = _Recorder()
    with pytest.raises(NotImplementedError, match="meta"):
        evaluate.token_nll(model, torch.randint(0, 16, (3, 6)), batch_size=2)
    assert model.seen == ["meta"]
    tokens = {"input_ids": [list(range(3, 12))] * 2, "domain": ["short", "short"]}
    with pytest.raises((NotImplementedError, RuntimeError), match="meta"):
        evaluate.short_nll_rows(model, tokens, bos_id=1, max_len=16)
    assert model.seen == ["meta"] * 2
    assert evaluate.greedy(model, [[1, 2, 3], [4, 5]], max_new_tokens=2, pad_id=0) == [[0, 0]] * 2
    assert model.seen == ["meta"] * 4


def test_long_windows_are_scored_a_piece_of_positions_at_a_time(monkeypatch):
    """A batch of long windows over a large vocabulary would hold tens of GB of logits at once
    (Llama 2 at 32K, 8 rows: 8.4e9): with the budget lowered to four positions of three rows, the
    LM head never sees more than four positions at a time, and the NLL and the argmax are those of
    the whole logits (transformers' own loss and forward as the references), for a plain model and
    one wrapped by peft (its adapters inside the decoder)."""
    from peft import LoraConfig, get_peft_model

    model, x = small_model(64), torch.randint(0, 64, (3, 20))
    wrapped = get_peft_model(
        small_model(64),
        LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    ).eval()
    seen = []
    for m in (model, wrapped.get_base_model()):
        m.lm_head.register_forward_hook(lambda mod, args, out: seen.append(args[0].shape[1]))
    monkeypatch.setattr(evaluate, "LOGITS_AT_ONCE", 3 * 64 * 4)
    for net in (model, wrapped):
        seen.clear()
        nll = evaluate.token_nll(net, x, batch_size=3)
        argmax = evaluate.per_position(net, x, lambda logits, span: logits.argmax(-1))
        assert seen and max(seen) == 4 and sum(seen) == 2 * 20  # two passes of 20 positions
        assert nll.shape == (3, 19)
        with torch.no_grad():
            for row in range(3):
                one = x[row : row + 1]
                assert torch.allclose(
                    nll[row].mean(), net(input_ids=one, labels=one).loss, atol=1e-5
                )
            assert torch.equal(argmax, net(input_ids=x).logits.argmax(-1))


def test_a_checkpoint_loads_onto_the_device_it_is_given_or_the_default_one(tmp_path, monkeypatch):
    """``load_pretrained`` places the weights by ``device_map``, and without one on
    :func:`lcx.models.device` (the GPU when there is one): shown with the meta device standing in
    for a GPU, which a CPU-only load would never reach."""
    small_model(64).save_pretrained(tmp_path)
    assert next(models.load_pretrained(str(tmp_path)).parameters()).device.type == "cpu"
    placed = models.load_pretrained(str(tmp_path), device_map={"": "meta"})
    assert {p.device.type for p in placed.parameters()} == {"meta"}
    monkeypatch.setattr(models, "device", lambda: torch.device("meta"))
    assert {p.device.type for p in models.load_pretrained(str(tmp_path)).parameters()} == {"meta"}


def test_a_hub_checkpoint_loads_on_the_gpu_in_bf16_as_the_runs_it_is_compared_with(
    tmp_path, monkeypatch
):
    """Llama-2-7b-hf's config says float16, and transformers loads a checkpoint in its own type;
    the book's runs compute and are evaluated in bf16 on a GPU, so a base model must load there in
    bf16 too, or every base-against-run comparison of chapters 03 and 04 mixes two precisions. The
    meta device stands in for a GPU; on the CPU a checkpoint loads in its own type."""
    small_model(64).to(torch.float16).save_pretrained(tmp_path)
    assert {p.dtype for p in models.load_pretrained(str(tmp_path)).parameters()} == {torch.float16}
    monkeypatch.setattr(models, "device", lambda: torch.device("meta"))
    on_gpu = models.load_pretrained(str(tmp_path)).parameters()
    assert {(p.device.type, p.dtype) for p in on_gpu} == {("meta", torch.bfloat16)}


def test_a_4_bit_copy_is_placed_where_its_model_is(monkeypatch):
    """QLoRA's 4-bit copy of a model on a GPU must load onto that GPU: transformers' Trainer never
    moves a bitsandbytes model, so a copy left on the CPU trains there (or fails on inputs sent to
    the GPU). The meta device stands in for a GPU: the copy is asked for the model's device, in
    the recipe's compute type; a CPU model's copy loads as before (no device map)."""
    from transformers import LlamaForCausalLM

    loads = []

    def from_pretrained(path, **kwargs):
        loads.append(kwargs)
        return small_model(64)

    monkeypatch.setattr(LlamaForCausalLM, "from_pretrained", from_pretrained)
    config = small_model(64).config
    with torch.device("meta"):
        on_gpu = LlamaForCausalLM(config)
    monkeypatch.setattr(on_gpu, "save_pretrained", lambda path: None)
    models.quantize_nf4(on_gpu, torch.bfloat16)
    assert loads[-1]["device_map"] == {"": "meta"}
    assert loads[-1]["quantization_config"].bnb_4bit_compute_dtype == torch.bfloat16
    models.quantize_nf4(small_model(64), torch.float32)
    assert "device_map" not in loads[-1]
    # the RoPE change before it (chapter 05's variants) keeps the base model where it is
    assert {p.device.type for p in models.with_rope(on_gpu, "default", base=1e6).parameters()} == {
        "meta"
    }


def test_a_run_is_evaluated_on_the_gpu_in_bf16(tmp_path, monkeypatch):
    """A run saves its fp32 master weights; evaluated on a GPU (the meta device stands in) it loads
    there in bf16, since FlashAttention takes no fp32 outside autocast; on the CPU as saved."""
    small_model(64).save_pretrained(tmp_path / "model")
    ref = evaluate.Ref.of(tmp_path)
    assert {(p.device.type, p.dtype) for p in ref.load().parameters()} == {("cpu", torch.float32)}
    monkeypatch.setattr(models, "device", lambda: torch.device("meta"))
    assert {(p.device.type, p.dtype) for p in ref.load().parameters()} == {("meta", torch.bfloat16)}


def test_each_base_models_window_on_gpu_is_its_own():
    """Llama 2 was trained at 4,096 tokens, Llama 3 at 8,192 (its paper's 8K): chapter 05's 10x is
    81,920 and chapter 06's stage 2 (64x) 524,288 only from Llama 3's own window."""
    assert pretrained.window("gpu", "llama2") == 4096
    assert pretrained.window("gpu", "llama3") == 8192
    assert 10 * pretrained.window("gpu", "llama3") == 81_920
    assert 64 * pretrained.window("gpu", "llama3") == 524_288
    assert pretrained.window("cpu", "llama3") == pretrained.window("cpu", "llama2")


def _eight_gpus(recipe):
    """The recipe as it is on a machine with eight GPUs (this one has none)."""
    p = dict(recipe.parallel or {})
    if p:
        p["processes"] = 8
        p = {**p, "sp_size": 8} if "sp_size" in p else p
    return dataclasses.replace(recipe, parallel=p or None)


def test_the_memory_plan_divides_what_fsdp_and_ulysses_shard():
    """Per device: FSDP2 and ZeRO-3 hold 1/n of the weights and trainable states; Ulysses gives
    each rank 1/sp of the positions; a micro-batch is micro_rows rows (lcx.budget's plan)."""
    from lcx import budget

    config = models.paper_config("meta-llama/Llama-2-7b-hf")
    one = train.Recipe(seq_len=4096, tokens=8 * 4096, batch_tokens=8 * 4096, lr=1.0)
    whole = budget.memory_plan(config, 4096, "full", batch=8, checkpointing=False)
    assert train.device_memory(config, one)["total"] == pytest.approx(whole["total"])
    fsdp = dataclasses.replace(one, micro_rows=1, parallel={"processes": 8, "fsdp": True})
    plan, per_row = train.device_memory(config, fsdp), budget.memory_plan(config, 4096, "full")
    assert plan["weights"] == pytest.approx(per_row["weights"] / 8)
    assert plan["trainable"] == pytest.approx(per_row["trainable"] / 8)
    assert plan["logits"] == pytest.approx(per_row["logits"]) and plan["rows"] == 1
    sp = dataclasses.replace(
        fsdp, parallel={"processes": 8, "sp_size": 8}, gradient_checkpointing=True
    )
    assert train.device_memory(config, sp)["logits"] == pytest.approx(per_row["logits"] / 8)


def test_a_recipe_that_cannot_fit_is_refused_naming_the_part_and_the_fix():
    config = models.paper_config("meta-llama/Llama-2-7b-hf")
    gib = 2**30
    full = train.Recipe(seq_len=32768, tokens=64 * 32768, batch_tokens=64 * 32768, lr=1.0)
    with pytest.raises(MemoryError, match="activations overflows; try micro_rows=1"):
        train.memory_check(config, full, 80 * gib)
    one_row = dataclasses.replace(full, micro_rows=1)
    with pytest.raises(MemoryError, match="activations overflows; try gradient_checkpointing"):
        train.memory_check(config, one_row, 80 * gib)
    ckpt = dataclasses.replace(one_row, gradient_checkpointing=True)
    with pytest.raises(MemoryError, match="trainable overflows; try LoRA or QLoRA"):
        train.memory_check(config, ckpt, 80 * gib)
    sharded = dataclasses.replace(ckpt, parallel={"processes": 8, "fsdp": True})
    assert train.memory_check(config, sharded, 80 * gib)["total"] < 80 * gib
    assert train.memory_check(config, full) is None or torch.cuda.is_available()  # no GPU here


def test_the_chapters_gpu_recipes_fit_80_gb_gpus():
    """Chapters 03 and 04 fully fine-tune Llama 2 7B at 32K with FSDP2 over eight 80 GB GPUs, one
    row a pass and checkpointing; chapter 05's QLoRA at 80K runs on one; chapter 06's Llama 3 8B at
    64K, and at 512K over eight Ulysses ranks. Llama 3's logits alone (fp32 copy and gradient of a
    128K vocabulary over 64-80K positions) would be 84-105 GB: those recipes compute the loss in
    pieces of positions (loss_chunk), and without it the check refuses them, naming the logits."""
    from lcx import chapter

    gib = 80 * 2**30
    llama2 = models.paper_config("meta-llama/Llama-2-7b-hf")
    llama3 = models.paper_config("meta-llama/Meta-Llama-3-8B-Instruct")
    # every recipe a chapter trains, as chapter.setup checks them before anything loads
    fits = chapter.gpu_recipes("03_together_pi", "gpu") + chapter.gpu_recipes(
        "04_llama2_long_abf", "gpu"
    )
    assert len(fits) == 6
    for recipe in fits:
        plan = train.memory_check(llama2, _eight_gpus(recipe), gib)
        assert plan["total"] < gib and plan["rows"] == 1
    qlora, control = chapter.gpu_recipes("05_llama3_80k_qlora", "gpu", "llama3")
    assert qlora.seq_len == 81_920 and train.memory_check(llama3, control, gib)["total"] < gib
    stage1, stage2, sft = map(_eight_gpus, chapter.gpu_recipes("06_prolong", "gpu", "llama3"))
    assert (stage1.seq_len, stage2.seq_len) == (65_536, 524_288)
    for recipe in (qlora, stage1, stage2, sft):
        assert recipe.loss_chunk and train.memory_check(llama3, recipe, gib)["total"] < gib
        whole = dataclasses.replace(recipe, loss_chunk=None)
        with pytest.raises(MemoryError, match="logits overflows; try loss_chunk"):
            train.memory_check(llama3, whole, gib)


def test_a_chapter_that_does_not_fit_the_gpu_is_refused_before_anything_loads(monkeypatch):
    """chapter.setup checks every recipe the chapter trains against the GPU's memory first: on a
    16 GB GPU, chapter 04's full fine-tune of Llama 2 7B at 32K is refused, naming the part that
    overflows, before the base model, its tokens or its gate are loaded."""
    from lcx import chapter

    def loaded(*args, **kwargs):
        raise AssertionError("the base model was loaded before the memory check")

    monkeypatch.setattr(pretrained, "base_model", loaded)
    # (a chapter's quiet() switches the libraries' progress bars off for the rest of the process)
    monkeypatch.setattr(chapter, "quiet", lambda: None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(
        torch.cuda, "get_device_properties", lambda i: SimpleNamespace(total_memory=16 * 2**30)
    )
    with pytest.raises(MemoryError, match="overflows; try"):
        chapter.setup("04_llama2_long_abf", "gpu")


@pytest.mark.parametrize("gpus", [1, 2, 4, 8])
def test_every_gpu_recipe_splits_its_step_over_the_gpus(gpus, monkeypatch):
    """Every chapter's gpu recipe as it is built on a machine with ``gpus`` GPUs passes the check
    train.run makes before training (one row a pass on each data-parallel rank must divide the
    step's rows). With "4M tokens" read as 4,000,000, chapter 04's step was 122 rows of 32K and
    ProLong's 61 of 64K, refused on any number of GPUs above one (and chapter 04's fine-tune, 2
    rows, on more than two)."""
    from lcx import llama2_long, llama3_80k, prolong, together

    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)  # what gpu_layout reads
    W2, W3 = pretrained.window("gpu", "llama2"), pretrained.window("gpu", "llama3")
    phase1, phase2, finetune = together.recipes("gpu", W2)
    long = llama2_long.recipe("gpu", W2)
    qlora = llama3_80k.recipe("gpu", W3)
    recipes = [phase1, phase2, train.Recipe(seq_len=8 * W2, **finetune), long]
    recipes += [llama2_long.control_recipe(long, W2), llama2_long.sft_recipe("gpu", W2)]
    recipes += [llama2_long.scratch_recipe("gpu", W2), qlora, llama3_80k.control_recipe(qlora, W3)]
    recipes += prolong.recipes("gpu", W3, 8 * W3, 64 * W3, gpus)
    for recipe in recipes:
        assert train.processes(recipe) in (1, gpus)
        train.check_layout(recipe, attn="flash_attention_2")  # the kernel Ulysses needs (GPU)


def _batch(vocab=40, length=16):
    rows = _rows(n_rows=2, length=length, vocab=vocab)
    return train.collate(rows)


@pytest.mark.parametrize("cast", [False, True], ids=["plain", "output-cast-to-bf16"])
def test_the_loss_in_pieces_is_the_loss_and_its_gradient(cast):
    """ChunkedLoss computes the weighted NLL five positions at a time, recomputing each piece's
    logits in the backward pass: the same loss and the same gradients as the whole logits. Also
    when the model's output is cast to bf16, as FSDP2's mixed precision (accelerate's policy,
    output_dtype) and Unsloth's forward (to the config's type) cast it: a bf16 sum would be a
    multiple of 0.5 at ~126 nats here (of 512 at 64K positions); the head's two parts survive."""
    config = models.tiny_config("tiny", 64, 32, 100.0)
    results = {}
    for chunk in (None, 5):
        model = models.new_model(config, seed=0).train()
        one = SimpleNamespace(args=SimpleNamespace(world_size=1), unsloth_documents=False)
        one.chunked = train.chunk_loss(model, chunk) if chunk else None
        if chunk and cast:
            model.lm_head.register_forward_hook(lambda module, args, out: out.to(torch.bfloat16))
        loss = train.LcxTrainer.compute_loss(one, model, dict(_batch(vocab=64)))
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        results[chunk] = (loss.detach(), grads)
    assert results[5][0].dtype == torch.float32
    torch.testing.assert_close(results[5][0], results[None][0], rtol=1e-5, atol=1e-6)
    for name, grad in results[None][1].items():
        torch.testing.assert_close(results[5][1][name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_a_model_with_the_chunked_head_saves_and_scores_as_before(tmp_path):
    """The chunked head shares the head's weight under its name: the checkpoint is a plain Llama
    one, and without targets it returns logits (evaluation, generation)."""
    from transformers import LlamaForCausalLM

    model = models.new_model(models.tiny_config("tiny", 64, 32, 100.0), seed=0).eval()
    ids = torch.randint(0, 64, (1, 12))
    before = model(input_ids=ids).logits
    head = train.chunk_loss(model, 4)
    assert model.lm_head is head and head.weight is model.get_output_embeddings().weight
    torch.testing.assert_close(model(input_ids=ids).logits, before)
    model.save_pretrained(tmp_path)
    loaded = LlamaForCausalLM.from_pretrained(tmp_path).eval()
    assert type(loaded.lm_head) is torch.nn.Linear
    torch.testing.assert_close(loaded(input_ids=ids).logits, before)


def test_a_run_with_the_loss_in_pieces_trains_the_same_model(tmp_path, monkeypatch):
    """loss_chunk is a layout, not a recipe: the same rows give the same model (and the same run,
    its key leaves the layout out)."""
    monkeypatch.setenv("LCX_CACHE", str(tmp_path / "cache"))
    rows = _rows(n_rows=8, length=16, vocab=64)
    config = models.tiny_config("tiny", 64, 16, 100.0)
    base = train.Recipe(seq_len=16, tokens=4 * 16 * 2, batch_tokens=4 * 16, lr=1e-2)
    finals, pieces = {}, []
    piece_nll = train._piece_nll
    monkeypatch.setattr(train, "_piece_nll", lambda *a: pieces.append(1) or piece_nll(*a))
    for chunk in (None, 3):
        recipe = dataclasses.replace(base, loss_chunk=chunk)
        assert recipe.config() == base.config()
        with monkeypatch.context() as m:
            m.setenv("LCX_CACHE", str(tmp_path / f"cache-{chunk}"))
            run = train.run(
                models.new_model(config, seed=0), None, None, recipe, ["t"], "chunk", rows=rows
            )
        finals[chunk] = train.load_run(run).state_dict()
        assert bool(pieces) == bool(chunk)  # the pieces ran (6 a row of 16), and only then
    for name, value in finals[None].items():
        torch.testing.assert_close(finals[3][name], value, rtol=1e-4, atol=1e-6, msg=name)


def test_the_gpu_check_runs_on_what_the_gpu_machine_has(tmp_path):
    """make gpu-check's script, rehearsed at toy sizes (--smoke) in a process where pandas,
    datasets, scipy and matplotlib cannot be imported (the GPU machine has none of them): it
    reports the packages, measures its steps and the packing check, and writes its JSON."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    blocked = "import sys\nfor m in ('pandas', 'datasets', 'scipy', 'matplotlib'):\n    sys.modules[m] = None\n"
    run = f"{blocked}import runpy\nsys.argv = ['gpu_check.py', '--smoke']\nrunpy.run_path('scripts/gpu_check.py', run_name='__main__')\n"
    proc = subprocess.run(
        [sys.executable, "-c", run],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "OUT": str(tmp_path), "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["packages"]["torch"] == torch.__version__
    assert [r["tokens"] for r in report["steps"] if r["method"] == "full"] == [256, 512]
    assert all(r["tokens_per_s"] > 0 for r in report["steps"])
    # SDPA reads position-id resets at any batch size: the packed rows score as their documents
    sdpa = next(r for r in report["packing"] if r["impl"] == "sdpa")
    assert sdpa["with boundaries"] < 0.05 and sdpa["position ids only"] < 0.05


def test_accumulated_micro_batches_stay_token_averaged_on_either_transformers(
    tmp_path, monkeypatch
):
    """Rows with 2 to 90 answer tokens, one row per micro-batch with gradient accumulation, train
    the model one batch a step trains, also where transformers thinks the model takes no loss
    keywords (5.17 then divides the loss by the accumulation steps again, as it does under
    Ulysses, where it forces that flag off)."""
    from transformers import LlamaForCausalLM

    monkeypatch.setenv("LCX_CACHE", str(tmp_path))
    monkeypatch.setattr(LlamaForCausalLM, "accepts_loss_kwargs", False, raising=False)
    g = torch.Generator().manual_seed(0)
    examples = [
        ([1, *torch.randint(3, 60, (24 - n,), generator=g).tolist()],
         torch.randint(3, 60, (n,), generator=g).tolist())
        for n in (2, 20, 3, 16)
    ]  # fmt: skip
    rows = row_builders.sft_rows(examples, 32, 0)
    config = models.tiny_config("tiny", 64, 32, 100.0)
    finals = {}
    for micro in (None, 1):
        recipe = train.Recipe(seq_len=32, tokens=32 * 4, batch_tokens=32 * 4, lr=1e-2)
        recipe = dataclasses.replace(recipe, micro_rows=micro)
        run = train.run(
            models.new_model(config, seed=0), None, None, recipe, ["x"], "ga", rows=rows
        )
        finals[micro] = train.load_run(run).state_dict()
    for name, value in finals[None].items():
        torch.testing.assert_close(finals[1][name], value, atol=2e-5, rtol=1e-4, msg=name)


def test_the_unsloth_run_loads_the_checkpoint_by_its_hub_id(monkeypatch, tmp_path):
    """Chapter 05 on a GPU with Unsloth loads the base through Unsloth by its hub id (or the path
    it resolves to), not by its cache key ("<id>@<commit>", which no loader knows: hub.revision
    and hub.pretrained_kwargs raise KeyError on it)."""
    from types import SimpleNamespace

    from lcx import evaluate, llama3_80k

    hub_id = "meta-llama/Meta-Llama-3-8B-Instruct"
    loaded = []

    def fake_unsloth_model(name_or_path, max_seq_length, rope_theta, **kw):
        loaded.append(name_or_path)
        return object(), None

    monkeypatch.setattr(models, "unsloth_model", fake_unsloth_model)
    monkeypatch.setattr(train, "run", lambda *a, **kw: tmp_path)
    ref = evaluate.Ref.of(hub_id)
    assert "@" in ref.key  # the cache key is not a loadable name
    tokenizer = SimpleNamespace(key="tok")
    ch = SimpleNamespace(W=8192, base_ref=ref, tokenizer=tokenizer, profile="gpu", base_net=None)
    recipe = llama3_80k.recipe("gpu", 8192)
    change = {"method": "default", "base": 2e8}
    assert llama3_80k.extend(ch, recipe, "ABF x400", change, 0, [], unsloth=True) == tmp_path
    assert loaded == [hub_id]


def test_the_rehearsal_runs_gpu_recipes_at_toy_size_and_only_on_a_cpu(monkeypatch):
    """LCX_REHEARSAL=1 without CUDA (make rehearsal): the gpu windows divided by 32 and every gpu
    recipe cut to two steps of two passes a rank, its layout kept (and still valid), the loss
    pieces shrunk with the windows; multi-GPU runs launch on two gloo ranks. Unset, or with a
    GPU, the gpu profile is untouched."""
    from lcx import llama2_long, prolong
    from lcx.profiles import REHEARSAL_DIVISOR, rehearsal

    monkeypatch.delenv("LCX_REHEARSAL", raising=False)
    full = llama2_long.recipe("gpu", 4096)
    assert not rehearsal() and pretrained.window("gpu", "llama3") == 8192
    assert train.rehearsed(full) is full and full.steps == 100_000
    monkeypatch.setenv("LCX_REHEARSAL", "1")
    assert rehearsal() and train.gpus() == train.REHEARSAL_RANKS == 2
    W2, W3 = pretrained.window("gpu", "llama2"), pretrained.window("gpu", "llama3")
    assert (W2, W3) == (4096 // REHEARSAL_DIVISOR, 8192 // REHEARSAL_DIVISOR)
    toy = llama2_long.recipe("gpu", W2)
    assert (toy.seq_len, toy.steps, toy.micro_rows) == (8 * W2, 2, 1)
    assert toy.parallel == {"processes": 2, "fsdp": True} and toy.rows_per_step == 2 * 2
    assert (toy.lr, toy.gradient_checkpointing, toy.stream_rows) == (full.lr, True, True)
    stage1, stage2, sft = prolong.recipes("gpu", W3, 8 * W3, 64 * W3, train.gpus())
    assert stage1.loss_chunk == 8192 // REHEARSAL_DIVISOR and stage2.seq_len == 64 * W3
    assert stage2.parallel == stage1.parallel  # no Ulysses without GPUs
    for recipe in (toy, stage1, stage2, sft):
        train.check_layout(recipe)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU: no rehearsal
    assert not rehearsal() and train.rehearsed(full) is full


def test_the_rehearsals_trims_stay_in_the_rehearsal(monkeypatch):
    """The rehearsal (random stand-ins) takes the tiny gate sizes, ProLong's three tiny ablations
    and the paper-scale path for every split; a real gpu run takes the gpu sizes, every ablation,
    and reads a small split into memory."""
    import datasets

    from lcx import prolong, tasks

    domains = {"code", "books"}
    small = datasets.Dataset.from_dict({"input_ids": [[1, 2]], "n_tokens": [2]})
    monkeypatch.delenv("LCX_REHEARSAL", raising=False)
    assert pretrained.gate_n("gpu", pretrained.GATE_SUITE_N) == 40
    assert list(prolong.ablations("gpu", domains)[0]) == list(prolong.ABLATIONS)
    assert tasks.in_memory(small)
    monkeypatch.setenv("LCX_REHEARSAL", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pretrained.gate_n("gpu", pretrained.GATE_SUITE_N) == pretrained.GATE_SUITE_N["tiny"]
    assert list(prolong.ablations("gpu", domains)[0]) == list(prolong.TINY_ABLATIONS)
    assert not tasks.in_memory(small) and tasks.in_memory({"input_ids": [[1]]})


def test_the_rehearsal_caches_nothing_in_the_books_cache(tmp_path, monkeypatch):
    """make test runs the rehearsal: the tiny corpus its stand-ins are built from is cached in the
    rehearsal's own folder, not in the book's (or a user's) LCX_CACHE."""
    import importlib.util

    from lcx import data, standins

    spec = importlib.util.spec_from_file_location(
        "rehearsal", Path(__file__).resolve().parent.parent / "scripts" / "rehearsal.py"
    )
    rehearsal = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rehearsal)
    monkeypatch.setattr(rehearsal, "OUT", tmp_path / "rehearsal")
    monkeypatch.setenv("LCX_CACHE", str(tmp_path / "books-cache"))
    # environment() sets both in this process: monkeypatch restores them for the tests after this
    # one on the same worker (CI caught the leak: a later test read the rehearsal's results/)
    monkeypatch.setenv("LCX_RESULTS", os.environ["LCX_RESULTS"])  # conftest sets it
    seen = {}

    def corpus(profile):
        seen["cache"] = os.environ["LCX_CACHE"]
        return {"train": {"text": ["a text"]}}

    monkeypatch.setattr(data, "load_corpus", corpus)
    monkeypatch.setattr(
        standins, "build", lambda folder, texts, divisor: folder.mkdir(parents=True)
    )
    env = rehearsal.environment()
    assert seen["cache"] == env["LCX_CACHE"] == str(tmp_path / "rehearsal" / "cache")
    assert env["LCX_REHEARSAL"] == "1" and env["CUDA_VISIBLE_DEVICES"] == ""


def test_p8_times_a_model_one_gpu_holds():
    """Chapter 06's throughput measurement (P8) trains a fresh model on rows of 64K: on gpu the
    base's whole config (Llama 3 8B, fp32) with its 64K x 128K logits needs several hundred GB
    (lcx.budget's accounting), so it times the first blocks without the head, which fit one 80 GB
    GPU even counting an fp32 copy and gradients of every parameter (what `trainable` counts as
    an upper bound). On cpu it times the base model itself."""
    from lcx import budget, prolong

    gib, n = 2**30, 65536
    llama3 = models.paper_config("meta-llama/Meta-Llama-3-8B-Instruct")
    assert prolong.throughput_config(llama3, "cpu") is llama3
    timed = prolong.throughput_config(llama3, "gpu")
    assert timed.num_hidden_layers == prolong.THROUGHPUT_LAYERS < llama3.num_hidden_layers
    plan = budget.memory_plan(timed, n, "full", checkpointing=False)
    assert plan["weights"] + plan["trainable"] + plan["activations"] < 80 * gib
    whole = budget.memory_plan(llama3, n, "full", checkpointing=False)
    assert whole["weights"] + whole["activations"] + whole["logits"] > 80 * gib


def test_fsdp_on_one_gpu_trains_in_a_launched_process(tmp_path, monkeypatch):
    """On a machine with one GPU the gpu layout is FSDP over one process; transformers' Trainer
    refuses FSDP outside distributed training, so such a run is launched (torchrun, one rank)
    like any sharded run; a run data-parallel over one process without FSDP trains here."""
    recipe = train.Recipe(seq_len=16, tokens=16 * 2, batch_tokens=16, lr=1e-3, micro_rows=1)
    one_gpu = dataclasses.replace(recipe, parallel={"processes": 1, "fsdp": True})
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    with pytest.raises(ValueError, match="fsdp only works in distributed training"):
        train.LcxTrainer(
            model=small_model(50),
            args=train.training_arguments(one_gpu, tmp_path / "plain"),
            train_dataset=[],
            recipe=one_gpu,
        )
    where = []
    monkeypatch.setattr(train, "_launch", lambda *a: where.append("launched") or [])
    monkeypatch.setattr(train, "_train_here", lambda *a: where.append("here") or [])
    rows = [
        {
            "input_ids": torch.arange(16),
            "position_ids": torch.arange(16),
            "labels": torch.arange(16),
            "loss_weights": torch.ones(16),
        }
    ] * 2
    for i, r in enumerate((one_gpu, dataclasses.replace(recipe, parallel={"processes": 1}))):
        monkeypatch.setenv("LCX_CACHE", str(tmp_path / f"cache{i}"))
        train.run(small_model(50), None, None, r, inputs=[str(i)], name="one", rows=rows)
    assert where == ["launched", "here"]


def test_teacher_forced_scoring_keeps_no_graph_and_no_cache():
    """answer_accuracy scores an answer from one forward over prompt and answer: with autograd
    on (a loaded model's weights require grad) it kept every activation for a backward that
    never comes, ~190 GB for a 7-8B model at 32K, and a KV cache no one reads."""
    model = small_model(50)
    seen = []
    model.model.layers[0].register_forward_hook(
        lambda module, args, out: seen.append(torch.is_grad_enabled())
    )
    forward = model.forward
    model.forward = lambda *a, **k: seen.append(k.get("use_cache")) or forward(*a, **k)
    evaluate.answer_accuracy(model, [1, 2, 3, 4], [5, 6])
    assert seen == [False, False]  # use_cache=False, then the layer's forward without autograd


def test_a_rope_copy_in_bf16_keeps_its_frequencies_in_fp32():
    """A model on a GPU is bf16 (lcx.models.load_pretrained), and casting a model casts its
    floating buffers: RoPE's inv_freq rounded to bf16 turns position 32K's angles by up to ~5
    radians (transformers upcasts it in the forward only after the rounding). with_rope's copy
    keeps the frequencies transformers computes for its config."""
    from transformers import LlamaForCausalLM

    model = small_model(50).to(torch.bfloat16)
    copy = models.with_rope(model, "linear", factor=8)
    inv_freq = copy.model.rotary_emb.inv_freq
    assert next(copy.parameters()).dtype == torch.bfloat16 and inv_freq.dtype == torch.float32
    reference = LlamaForCausalLM(copy.config).model.rotary_emb.inv_freq  # fp32, as initialised
    torch.testing.assert_close(inv_freq, reference, rtol=0, atol=0)


def test_long_prompts_are_generated_a_few_rows_at_a_time(monkeypatch):
    """greedy decoded 8 prompts at once at every length: Llama 2 7B's KV cache for 8 rows of 32K
    is 128 GiB. A batch now holds at most KV_CACHE_AT_ONCE bytes of cache (its longest prompt's
    length, every row); shorter prompts still share one. The continuations are the same."""
    model = small_model(50)
    per_token = evaluate.kv_bytes_per_token(model)
    assert per_token == 2 * 1 * 2 * 16 * 4  # k and v, 1 layer, 2 KV heads of 16, fp32
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, 50, (n,), generator=g).tolist() for n in (5, 6, 7, 30, 40, 41)]
    alone = [evaluate.greedy(model, [p], 3, 0)[0] for p in prompts]
    sizes = []
    generate = model.generate
    model.generate = lambda **kw: sizes.append(len(kw["input_ids"])) or generate(**kw)
    assert evaluate.greedy(model, prompts, 3, 0) == alone and sizes == [6]
    sizes.clear()
    monkeypatch.setattr(evaluate, "KV_CACHE_AT_ONCE", 3 * 10 * per_token)  # 3 rows of 10 tokens
    assert evaluate.greedy(model, prompts, 3, 0) == alone and sizes == [3, 1, 1, 1]
