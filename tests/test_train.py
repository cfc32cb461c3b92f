"""Training runs: real learning, bit-for-bit determinism, and resume after kill -9."""

import dataclasses
import json
import math
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from code_edits import edit_source

from lcx import attention, cache, data, models, tasks, train
from lcx import rows as row_builders

RUN = """
import os, sys
from lcx import data, models, train
c = data.load_corpus("tiny"); tok = models.load_tokenizer("tiny", c); t = data.tokenize(c, tok)
m = models.new_model(models.tiny_config("tiny", len(tok), 128, 520.0), seed=0)
r = train.Recipe(seq_len=128, tokens=128 * 4 * STEPS, batch_tokens=128 * 4, lr=3e-3, warmup=0.1,
                 formats={"passkey": 0.2}, save_every=EVERY,
                 stream_rows=os.environ.get("LCX_TEST_STREAM") == "1")
print(train.run(m, t, tok, r, inputs=[t.key, tok.key, "init-0"], name="test"))
"""


def run_script(cache_dir, steps, every, name="test", env=(), prelude=""):
    env = {**os.environ, "LCX_CACHE": str(cache_dir), **dict(env)}
    code = RUN.replace("STEPS", str(steps)).replace("EVERY", str(every))
    code = prelude + code.replace('name="test"', f"name={name!r}")
    return subprocess.Popen(
        [sys.executable, "-c", code],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def final_losses(folder):
    return [e["loss"] for e in json.loads((Path(folder) / "log.json").read_text())]


@pytest.mark.slow  # two training subprocesses
def test_training_learns_and_is_deterministic(tmp_path):
    """Same seed, same machine: identical loss logs and weights, and the loss falls."""
    outs = []
    for name in ("a", "b"):
        proc = run_script(tmp_path / name, steps=60, every=1000)
        outs.append(Path(proc.communicate(timeout=300)[0].strip().splitlines()[-1]))
        assert proc.returncode == 0
    la, lb = final_losses(outs[0]), final_losses(outs[1])
    assert la == lb
    assert sum(la[-5:]) / 5 < la[0] - 0.5
    wa = train.load_run(outs[0]).state_dict()
    wb = train.load_run(outs[1]).state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


# Put before RUN in the resume tests' processes. Every training step appends the step it starts
# from to $LCX_TEST_STEP_LOG (no gradient accumulation here: one call, one step), which shows
# where a restarted process began and how many steps it trained. $LCX_TEST_KILL_AT kills the
# process (SIGKILL, so no cleanup runs) at one point of the run or of its commit to the cache;
# LCX_TEST_NO_RESUME=1 switches resuming off, under which these tests must fail.
INSTRUMENT = """
import json, os, signal
from transformers.trainer_callback import TrainerState
from lcx import cache, train

def die():
    os.kill(os.getpid(), signal.SIGKILL)

STEP_LOG, KILL_AT = os.environ["LCX_TEST_STEP_LOG"], os.environ.get("LCX_TEST_KILL_AT")
KILL_STEP = int(os.environ.get("LCX_TEST_KILL_STEP", "0"))
training_step = train.LcxTrainer.training_step
def logged_step(self, *args, **kwargs):
    with open(STEP_LOG, "a") as f:
        f.write(f"{self.state.global_step}\\n")
    return training_step(self, *args, **kwargs)
train.LcxTrainer.training_step = logged_step
if os.environ.get("LCX_TEST_NO_RESUME") == "1":
    train.last_checkpoint = lambda work: None
if os.environ.get("LCX_TEST_ROW_LOG"):  # every document row made, one line each
    from lcx import rows
    document_row = rows._document_row
    def logged_row(*args, **kwargs):
        with open(os.environ["LCX_TEST_ROW_LOG"], "a") as f:
            f.write("row\\n")
        return document_row(*args, **kwargs)
    rows._document_row = logged_row

if KILL_AT == "save":  # checkpoint KILL_STEP's weights written, its optimizer not
    save = train.LcxTrainer._save_optimizer_and_scheduler
    def half_saved(self, output_dir):
        if self.state.global_step == KILL_STEP:
            die()
        save(self, output_dir)
    train.LcxTrainer._save_optimizer_and_scheduler = half_saved
elif KILL_AT == "state":  # checkpoint KILL_STEP's trainer_state.json cut short (a full disk)
    to_json = TrainerState.save_to_json
    def cut_short(self, path):
        to_json(self, path)
        if self.global_step == KILL_STEP:
            os.truncate(path, os.path.getsize(path) // 2)
            die()
    TrainerState.save_to_json = cut_short
elif KILL_AT == "hash":  # the finished run being hashed into its manifest, before the rename
    sha256 = cache._sha256
    cache._sha256 = lambda path: die() if "/run/." in str(path) else sha256(path)
elif KILL_AT == "renamed":  # the finished run renamed into place, its checkpoints not yet removed
    cached = cache.cached
    def then_die(kind, *args, **kwargs):
        folder = cached(kind, *args, **kwargs)
        if kind == "run":
            die()
        return folder
    cache.cached = then_die
"""

RESUME_STEPS, RESUME_EVERY = 30, 10


@pytest.fixture(scope="module")
def resume_cache(tmp_path_factory):
    """A cache holding the tiny corpus, tokenizer and a reference run that no kill interrupted
    (the resume tests' runs have names of their own, so keys of their own, in the same cache)."""
    root = tmp_path_factory.mktemp("resume")
    proc = run_script(root, RESUME_STEPS, RESUME_EVERY, name="reference")
    out = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0
    return root, Path(out.strip().splitlines()[-1])


def logged_steps(path):
    return [int(s) for s in path.read_text().split()] if path.exists() else []


# where the kill lands -> the step the restarted run must start from (None: nothing to train)
KILLS = {
    "between": RESUME_EVERY,  # past checkpoint 10, short of 20
    "save": RESUME_EVERY,  # during checkpoint 20's save: checkpoint 10 is the last complete one
    "state": RESUME_EVERY,  # checkpoint 20's trainer_state.json cut short: back to 10
    "hash": RESUME_STEPS,  # the run finished: its last checkpoint holds it all
    "renamed": None,  # the run is in the cache: found, nothing trained
    "stream-between": RESUME_EVERY,  # "between", the rows streamed (paper scale)
}


@pytest.mark.slow  # a reference run, then per kill a run killed with SIGKILL and its restart
@pytest.mark.parametrize("kill", KILLS)
def test_a_killed_run_resumes_from_its_last_complete_checkpoint(resume_cache, tmp_path, kill):
    """A run killed anywhere (between checkpoints, while one is saved, while its trainer state is
    written, while the finished run is hashed or just after it is renamed into the cache)
    restarts from its last complete checkpoint, the step asserted: it trains only the steps
    after it (a restart from step 0 would reach the same weights, so the weights alone prove
    nothing), and ends at the reference run's losses and weights, its checkpoints and the
    killed process's temporary folder removed."""
    root, reference = resume_cache
    victim_log, restart_log = tmp_path / "victim.steps", tmp_path / "restart.steps"
    streamed, kill_at = kill.startswith("stream-"), kill.removeprefix("stream-")
    kill_env = {"LCX_TEST_KILL_AT": kill_at, "LCX_TEST_KILL_STEP": str(2 * RESUME_EVERY)}
    stream_env = {"LCX_TEST_STREAM": "1"} if streamed else {}
    victim = run_script(
        root,
        RESUME_STEPS,
        RESUME_EVERY,
        name=kill,
        env={"LCX_TEST_STEP_LOG": str(victim_log), **kill_env, **stream_env},
        prelude=INSTRUMENT,
    )
    if kill_at == "between":  # from outside, once past the first checkpoint
        deadline = time.time() + 300
        while time.time() < deadline and max(logged_steps(victim_log), default=0) < 12:
            time.sleep(0.05)
        victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=300)
    assert victim.returncode == -signal.SIGKILL
    if kill_at == "between":
        assert 12 <= max(logged_steps(victim_log)) < 2 * RESUME_EVERY - 1, "killed too late"

    row_log = tmp_path / "restart.rows"
    restart = run_script(
        root,
        RESUME_STEPS,
        RESUME_EVERY,
        name=kill,
        env={"LCX_TEST_STEP_LOG": str(restart_log), "LCX_TEST_ROW_LOG": str(row_log), **stream_env},
        prelude=INSTRUMENT,
    )
    out = Path(restart.communicate(timeout=600)[0].strip().splitlines()[-1])
    assert restart.returncode == 0
    start = KILLS[kill]
    trained = logged_steps(restart_log)
    assert trained == list(range(start if start is not None else RESUME_STEPS, RESUME_STEPS))
    assert final_losses(out) == final_losses(reference)
    if streamed:  # the stream went on at the checkpoint's row: the rows before were not made
        log = json.loads((out / "log.json").read_text())
        assert log == json.loads((reference / "log.json").read_text())  # epochs included
        made = len(row_log.read_text().split()) if row_log.exists() else 0
        assert 0 < made <= (RESUME_STEPS - start) * 4  # 4 rows a step, 1 in 5 a format row
    wa, wb = train.load_run(out).state_dict(), train.load_run(reference).state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not list((root / "work").glob(f"{kill}-*")), "the checkpoints outlive the run"
    assert not list((root / "run").glob(f".{out.name}.tmp-*")), "the killed build's folder is left"


@pytest.fixture
def tiny_setup(monkeypatch, tmp_path):
    monkeypatch.setenv("LCX_CACHE", str(tmp_path))
    c = data.load_corpus("tiny")
    tok = models.load_tokenizer("tiny", c)
    return tok, data.tokenize(c, tok)


@pytest.mark.slow  # ~30 s on 2 cores
def test_lr_schedule_matches_transformers_and_continues_across_curriculum_stages(tiny_setup):
    from transformers import get_cosine_with_min_lr_schedule_with_warmup

    tok, t = tiny_setup
    recipe = train.Recipe(
        seq_len=128,
        tokens=128 * 4 * 40,
        batch_tokens=128 * 4,
        lr=1e-3,
        warmup=0.1,
        min_lr_ratio=0.1,
        save_every=1000,
    )
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    ref = get_cosine_with_min_lr_schedule_with_warmup(opt, 4, 40, min_lr_rate=0.1)
    expected = []
    for _ in range(40):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        ref.step()
    factor = train.lr_schedule(recipe)
    assert [1e-3 * factor(s) for s in range(40)] == expected  # the same function: bit for bit

    model = models.new_model(models.tiny_config("tiny", len(tok), 128, 248.0), seed=0)
    run = train.curriculum(
        model,
        t,
        tok,
        recipe,
        short_seq_len=64,
        switch_at=0.5,
        rope_change={"method": "default", "base": 248.0 * 50},
        inputs=[t.key, tok.key, "init-0"],
    )
    long_model = train.load_run(run)
    assert long_model.config.rope_parameters["rope_theta"] == pytest.approx(248.0 * 50)
    lrs = {e["step"]: e["learning_rate"] for e in train.loss_log(run)}
    for step, lr in lrs.items():  # stage-2 step k is step 20 + k of the one schedule
        assert lr == pytest.approx(expected[20 + step - 1], rel=1e-6)


def paper_schedule(step: int, total: int, warm: int, kind: str, min_ratio: float) -> float:
    """The LR multiplier as the papers state the schedule, in plain math: linear warm-up from 0
    over ``warm`` steps, then over the remaining steps a cosine from the peak down to
    ``min_ratio`` of it (Llama 2 Long, ProLong), a linear decay to 0, or constant; held after the
    last step."""
    step = min(step, total)
    if step < warm:
        return step / warm
    if kind == "cosine":
        done = (step - warm) / max(1, total - warm)  # the fraction of the decay behind us
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * done))
    if kind == "linear":
        return (total - step) / max(1, total - warm)  # the fraction of the decay still ahead
    return 1.0


def test_lr_schedule_is_the_papers_schedule_bit_for_bit():
    """transformers' schedule functions (which lr_schedule returns) against plain math, exactly
    equal at every step: for every curriculum the book trains (Llama 2 Long's from-scratch
    recipe on each profile, one cosine schedule over both stages) and a grid of lengths,
    warm-ups and floors."""
    from lcx import llama2_long, pretrained

    recipes = []
    for profile in ("tiny", "cpu", "gpu", "paper"):
        scratch = llama2_long.scratch_recipe(profile, pretrained.window(profile))
        recipes.append(dataclasses.replace(scratch, schedule_steps=scratch.steps))
    for total in (1, 2, 3, 7, 40, 58, 250, 1001):
        for warmup in (0.0, 0.05, 0.1, 0.5, 3):
            for kind, floor in (("cosine", 0.0), ("cosine", 0.1), ("linear", 0), ("constant", 0)):
                recipes.append(
                    train.Recipe(
                        seq_len=8,
                        tokens=8 * total,
                        batch_tokens=8,
                        lr=1.0,
                        schedule=kind,
                        warmup=warmup,
                        min_lr_ratio=floor,
                    )
                )
    for r in recipes:
        total = r.schedule_steps or r.steps
        warm = math.ceil(r.warmup * total) if r.warmup < 1 else int(r.warmup)
        factor = train.lr_schedule(r)
        ours = [factor(s) for s in range(total + 3)]
        ref = [paper_schedule(s, total, warm, r.schedule, r.min_lr_ratio) for s in range(total + 3)]
        assert ours == ref, (r.schedule, total, r.warmup, r.min_lr_ratio)
    assert factor(0) == 0.0 and isinstance(factor(total), float)
    with pytest.raises(ValueError, match="schedule"):
        train.lr_schedule(dataclasses.replace(r, schedule="wsd"))


def test_default_data_collator_stacks_rows_unchanged():
    """The Trainer's batches come from transformers' default_data_collator: the rows' tensors
    stacked as they are, keys (``labels`` included) and dtypes kept: int64 ids, positions and
    labels, float32 weights."""
    from transformers import default_data_collator

    docs = {"input_ids": [[7] * 300, [5] * 40, [9] * 20] * 4, "domain": ["code"] * 12}
    recipe = train.Recipe(seq_len=64, tokens=64 * 4, batch_tokens=64 * 4, lr=1e-3)
    packed = row_builders.packed_rows(docs, recipe, 1, 4)
    sft = row_builders.sft_rows([([1, 5, 6, 7], [8, 9]), ([1, 3], [4, 4, 4])] * 9, 16, pad_id=0)
    for rows in (packed, sft):
        batch = default_data_collator(rows)
        assert (
            list(batch) == list(rows[0]) == ["input_ids", "position_ids", "labels", "loss_weights"]
        )
        for k, v in batch.items():
            assert torch.equal(v, torch.stack([r[k] for r in rows]))
            assert v.dtype == (torch.float32 if k == "loss_weights" else torch.int64)
        assert (batch["labels"] == row_builders.IGNORE).any()  # IGNORE labels pass through


def test_lora_run_changes_only_adapted_weights(tiny_setup):
    tok, t = tiny_setup
    model = models.new_model(models.tiny_config("tiny", len(tok), 128, 248.0), seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    recipe = train.Recipe(
        seq_len=128,
        tokens=128 * 4 * 10,
        batch_tokens=128 * 4,
        lr=1e-2,
        save_every=1000,
        lora={"r": 4, "alpha": 8, "modules_to_save": ["embed_tokens"]},
    )
    run = train.run(model, t, tok, recipe, inputs=[t.key, tok.key, "init-0"], name="lora")
    after = train.load_run(run).state_dict()
    assert set(after) == set(before)  # merged: a plain Llama checkpoint
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(
        any(p in k for p in ("q_proj", "k_proj", "v_proj", "o_proj", "embed_tokens"))
        for k in changed
    )
    assert any("q_proj" in k for k in changed) and "model.embed_tokens.weight" in changed


@pytest.mark.slow  # ~10 s
def test_qlora_run_trains_on_nf4_and_merges_a_low_rank_update(tiny_setup):
    """QLoRA (Llama-3 80K): adapters trained on a 4-bit NF4 copy, merged into the full-precision
    weights. The update of each adapted matrix then has rank <= r (re-quantizing would add
    full-rank rounding noise), and only adapted modules change."""
    tok, t = tiny_setup
    model = models.new_model(models.tiny_config("tiny", len(tok), 128, 248.0), seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    r = 4
    recipe = train.Recipe(
        seq_len=128,
        tokens=128 * 4 * 8,
        batch_tokens=128 * 4,
        lr=1e-2,
        save_every=1000,
        lora={"r": r, "alpha": 8, "quantize": "nf4"},
    )
    run = train.run(model, t, tok, recipe, inputs=[t.key, tok.key, "init-0"], name="qlora")
    after = train.load_run(run).state_dict()
    assert set(after) == set(before)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(
        any(p in k for p in ("q_proj", "k_proj", "v_proj", "o_proj")) for k in changed
    )
    for k in changed:
        delta = (after[k] - before[k]).double()
        assert 0 < torch.linalg.matrix_rank(delta, rtol=1e-6).item() <= r, k
    log = train.loss_log(run)
    assert log[-1]["loss"] < log[0]["loss"]


def test_a_bf16_models_trained_parameters_are_kept_in_fp32(tiny_setup, monkeypatch):
    """A model loaded on a GPU is bf16 (lcx.models.load_pretrained), and peft copies the modules it
    trains in full (Llama-3 80K's embeddings) in that type: AdamW would step bf16 weights with bf16
    moments, rounding away every update below half a bf16 spacing. What a QLoRA or LoRA run trains
    is fp32 when training starts (under bf16 autocast, as every gpu recipe); what it leaves
    frozen keeps its type."""
    tok, t = tiny_setup
    seen = []
    fit = train._fit

    def record(net, *args):
        seen.append({n: (p.dtype, p.requires_grad) for n, p in net.named_parameters()})
        return fit(net, *args)

    monkeypatch.setattr(train, "_fit", record)
    for quantize in ({"quantize": "nf4"}, {}):
        model = models.new_model(models.tiny_config("tiny", len(tok), 128, 248.0), seed=0)
        recipe = train.Recipe(
            seq_len=128,
            tokens=128 * 4,
            batch_tokens=128 * 4,
            lr=5e-5,
            bf16=True,  # the gpu recipes' autocast
            save_every=1000,
            lora={"r": 4, "alpha": 8, "modules_to_save": ["embed_tokens"], **quantize},
        )
        train.run(model.to(torch.bfloat16), t, tok, recipe, inputs=["bf16", str(quantize)])
        trained = {n: d for n, (d, grad) in seen[-1].items() if grad}
        assert any("embed_tokens" in n for n in trained) and any("lora_" in n for n in trained)
        assert set(trained.values()) == {torch.float32}, trained
        frozen = {d for n, (d, grad) in seen[-1].items() if not grad and "norm" in n}
        assert frozen == {torch.bfloat16}


@pytest.mark.parametrize(
    "bad", [{"quantize": "int3"}, {"backend": "x"}], ids=["quantize", "backend"]
)
def test_lora_rejects_unknown_quantization_or_backend(tiny_setup, bad):
    tok, t = tiny_setup
    model = models.new_model(models.tiny_config("tiny", len(tok), 128, 248.0), seed=0)
    recipe = train.Recipe(
        seq_len=128, tokens=512, batch_tokens=512, lr=1e-2, lora={"r": 2, "alpha": 4, **bad}
    )
    with pytest.raises(ValueError, match=next(iter(bad))):
        train.run(model, t, tok, recipe, inputs=[t.key, tok.key, "x"], name="bad")


class FakeFastLanguageModel:
    """Unsloth's get_peft_model as far as training sees it: peft LoRA adapters with the given
    settings (Unsloth adds fused kernels and offloaded checkpointing, not different maths)."""

    calls: list = []
    forwards: list = []  # (position_ids, packed_seq_lengths) of each training forward

    @classmethod
    def get_peft_model(cls, model, **kw):
        cls.calls.append(kw)
        peft_model = models.add_lora(
            model,
            kw["r"],
            kw["lora_alpha"],
            kw["target_modules"],
            kw["modules_to_save"] or (),
            kw["lora_dropout"],
        )

        def save_pretrained_merged(path, tokenizer, save_method):  # Unsloth's 16-bit merge
            cls.calls.append({"save_method": save_method})
            peft_model.merge_and_unload().save_pretrained(path)

        peft_model.save_pretrained_merged = save_pretrained_merged

        def record(module, args, kwargs):  # Unsloth's forward reads packed_seq_lengths
            cls.forwards.append((kwargs["position_ids"], kwargs.pop("packed_seq_lengths")))
            return args, kwargs

        peft_model.register_forward_pre_hook(record, with_kwargs=True)
        return peft_model


def test_unsloth_backend_trains_adapters_through_get_peft_model_and_saves_them_merged(
    tiny_setup, monkeypatch
):
    """With ``"backend": "unsloth"`` the adapters come from Unsloth's get_peft_model (lazily
    imported, with its long-context checkpointing, told where packed documents end), they train,
    and the run's saved model is the merge LoRA defines: W + (alpha / r) B A (Hu et al. 2021,
    Eq. 3 with peft's alpha / r scaling), computed here from the trained A and B."""
    import types

    tok, t = tiny_setup
    monkeypatch.setitem(
        sys.modules, "unsloth", types.SimpleNamespace(FastLanguageModel=FakeFastLanguageModel)
    )
    model = models.new_model(models.tiny_config("tiny", len(tok), 128, 248.0), seed=0)
    recipe = train.Recipe(
        seq_len=128,
        tokens=512,
        batch_tokens=512,
        lr=1e-2,
        lora={"r": 2, "alpha": 4, "backend": "unsloth"},
    )
    with pytest.raises(ValueError, match="cannot mask packed documents"):  # an Unsloth without it
        train.run(model, t, tok, recipe, inputs=[t.key, tok.key, "u"], name="old-unsloth")
    for name in ("unsloth.utils", "unsloth.utils.packing"):  # a release that reads the lengths
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    FakeFastLanguageModel.calls.clear()
    FakeFastLanguageModel.forwards.clear()
    adapters = {}  # layer -> (its frozen weight when the adapters were made, A, B)
    make = FakeFastLanguageModel.get_peft_model.__func__

    def get_peft_model(cls, model, **kw):
        peft_model = make(cls, model, **kw)
        for name, module in peft_model.named_modules():
            if hasattr(module, "lora_A") and "default" in module.lora_A:
                layer = name.removeprefix("base_model.model.")
                adapters[layer] = (
                    module.base_layer.weight.detach().clone(),
                    module.lora_A["default"].weight,
                    module.lora_B["default"].weight,
                )
        return peft_model

    monkeypatch.setattr(FakeFastLanguageModel, "get_peft_model", classmethod(get_peft_model))
    r, alpha = 4, 8
    model = models.new_model(models.tiny_config("tiny", len(tok), 128, 248.0), seed=0)
    recipe = train.Recipe(
        seq_len=128,
        tokens=128 * 4 * 4,
        batch_tokens=128 * 4,
        lr=1e-2,
        save_every=1000,
        lora={"r": r, "alpha": alpha, "modules_to_save": ["embed_tokens"], "backend": "unsloth"},
        mixture={"short": 1.0},  # short sections: several documents per row
    )
    run = train.run(model, t, tok, recipe, inputs=[t.key, tok.key, "i"], name="unsloth")
    merged = train.load_run(run).state_dict()
    call, saved = FakeFastLanguageModel.calls
    assert saved == {"save_method": "merged_16bit"}  # merged in 16 bits, not into the 4-bit base
    assert call["use_gradient_checkpointing"] == "unsloth"
    assert call["r"] == r and call["lora_alpha"] == alpha
    assert call["modules_to_save"] == ["embed_tokens"]
    assert sorted(call["target_modules"]) == ["k_proj", "o_proj", "q_proj", "v_proj"]
    start = models.new_model(models.tiny_config("tiny", len(tok), 128, 248.0), seed=0).state_dict()
    assert not torch.equal(merged["model.embed_tokens.weight"], start["model.embed_tokens.weight"])
    layers = {k.removesuffix(".weight") for k in merged if k.endswith("_proj.weight")}
    assert set(adapters) == {k for k in layers if k.split(".")[-1] in call["target_modules"]}
    for layer, (w, a, b) in adapters.items():
        assert b.abs().sum() > 0, layer  # B starts at zero: the adapters trained
        torch.testing.assert_close(merged[f"{layer}.weight"], w + (alpha / r) * b @ a, msg=layer)
    # Unsloth is told where each packed document ends: the lengths of the position-id runs
    assert FakeFastLanguageModel.forwards
    for position_ids, lengths in FakeFastLanguageModel.forwards:
        spans = [e - s for row in position_ids for s, e in attention.document_spans(row)]
        assert lengths.dtype == torch.int32 and lengths.tolist() == spans
        assert sum(spans) == position_ids.numel()
    assert any(
        len(lengths) > len(position_ids) for position_ids, lengths in FakeFastLanguageModel.forwards
    )


def write_checkpoint(work, step, files, state=True):
    """A ``checkpoint-<step>`` folder holding ``files`` (paths inside it) and, with ``state``,
    the trainer_state.json the Trainer writes last."""
    ckpt = work / f"checkpoint-{step}"
    for f in files:
        (ckpt / f).parent.mkdir(parents=True, exist_ok=True)
        (ckpt / f).write_text("x")
    if state:
        (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return ckpt


TRAINER_FILES = ["optimizer.pt", "scheduler.pt", "rng_state.pth"]


@pytest.mark.parametrize(
    "weights",
    [
        ["model.safetensors"],
        ["adapter_model.safetensors"],
        ["model.safetensors.index.json", "model-00001-of-00002.safetensors"],
        ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"],  # no index
        [],
    ],
)
def test_last_checkpoint_accepts_full_adapter_or_sharded_weights(tmp_path, weights):
    index = {
        "weight_map": {
            "a": "model-00001-of-00002.safetensors",
            "b": "model-00002-of-00002.safetensors",
        }
    }
    ckpt = write_checkpoint(tmp_path, 10, TRAINER_FILES + weights)
    if "model.safetensors.index.json" in weights:
        (ckpt / "model.safetensors.index.json").write_text(json.dumps(index))
        complete = write_checkpoint(tmp_path, 5, [*TRAINER_FILES, *index["weight_map"].values()])
        (complete / "model.safetensors.index.json").write_text(json.dumps(index))
        # checkpoint-10 lacks a shard its index names: the one before is used
        assert train.last_checkpoint(tmp_path) == str(complete)
    else:
        complete = weights in (["model.safetensors"], ["adapter_model.safetensors"])
        assert train.last_checkpoint(tmp_path) == (str(ckpt) if complete else None)
    assert ckpt.is_dir()  # kept in every case


def test_a_truncated_trainer_state_falls_back_to_the_checkpoint_before_and_is_kept(tmp_path):
    """A trainer_state.json cut short (a full disk, a kill mid-write) is there as a file but is
    not a finished checkpoint: the run resumes from the one before. Nothing is deleted (the
    Trainer rewrites checkpoint-20 when it gets there again)."""
    files = TRAINER_FILES + ["model.safetensors"]
    before = write_checkpoint(tmp_path, 10, files)
    cut = write_checkpoint(tmp_path, 20, files)
    text = (cut / "trainer_state.json").read_text()
    (cut / "trainer_state.json").write_text(text[: len(text) // 2])
    assert train.last_checkpoint(tmp_path) == str(before)
    (cut / "trainer_state.json").write_text(json.dumps({"global_step": 30}))  # another step's
    assert train.last_checkpoint(tmp_path) == str(before)
    (cut / "trainer_state.json").write_text(text)
    assert train.last_checkpoint(tmp_path) == str(cut)
    missing = write_checkpoint(tmp_path, 30, files, state=False)  # a kill before the state
    assert train.last_checkpoint(tmp_path) == str(cut)
    assert before.is_dir() and cut.is_dir() and missing.is_dir()


# The layouts as transformers 5's Trainer and accelerate's save_fsdp_model/save_fsdp_optimizer
# and DeepSpeed's engine.save_checkpoint name their files
LAYOUTS = {
    "fsdp full state dict": [
        "model.safetensors",
        "pytorch_model_fsdp.bin",
        "optimizer.bin",
        "scheduler.pt",
    ],
    "fsdp sharded state dict (DCP)": [
        "pytorch_model_fsdp_0/__0_0.distcp",
        "pytorch_model_fsdp_0/.metadata",
        "optimizer_0/__0_0.distcp",
        "optimizer_0/.metadata",
        "scheduler.pt",
    ],
    "deepspeed zero-3": [
        "global_step30/zero_pp_rank_0_mp_rank_00_model_states.pt",
        "global_step30/bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt",
        "latest",
        "zero_to_fp32.py",
    ],
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_fsdp_and_deepspeed_checkpoints_are_resumed_from_and_never_deleted(tmp_path, layout):
    """A checkpoint written by FSDP or DeepSpeed (no optimizer.pt) is a complete checkpoint: the
    run resumes from it. Cut short (DCP's .metadata, DeepSpeed's latest, a rank's file missing)
    it is passed over for the one before, and kept."""
    before = write_checkpoint(tmp_path, 20, TRAINER_FILES + ["model.safetensors"])
    ckpt = write_checkpoint(tmp_path, 30, LAYOUTS[layout])
    if layout.startswith("deepspeed"):
        (ckpt / "latest").write_text("global_step30")
    assert train.last_checkpoint(tmp_path) == str(ckpt)
    for f in LAYOUTS[layout]:
        # not checked: what no resume reads, and DCP's data files (it writes .metadata after them)
        if f in ("model.safetensors", "zero_to_fp32.py") or f.endswith(".distcp"):
            continue
        path = ckpt / f
        saved = path.read_bytes()
        path.unlink()
        found = train.last_checkpoint(tmp_path)
        path.write_bytes(saved)
        assert found == str(before), f
    assert before.is_dir() and ckpt.is_dir()


def test_checkpoints_in_unknown_layouts_are_kept(tmp_path):
    """A folder that is no checkpoint this code knows (XLA's per-rank optimizer, FSDP's files
    per rank, whose number of ranks the folder does not tell, a name not a step) is neither
    resumed from nor deleted."""
    before = write_checkpoint(tmp_path, 10, TRAINER_FILES + ["model.safetensors"])
    xla = write_checkpoint(tmp_path, 20, ["rank0-of-2-optimizer.pt", "scheduler.pt"])
    per_rank = [
        f"{name}_0_rank{r}.bin" for name in ("pytorch_model_fsdp", "optimizer") for r in (0, 1)
    ]
    fsdp = write_checkpoint(tmp_path, 30, [*per_rank, "scheduler.pt"])
    odd = write_checkpoint(tmp_path, "final", TRAINER_FILES + ["model.safetensors"])
    assert train.last_checkpoint(tmp_path) == str(before)
    assert all(p.is_dir() for p in (before, xla, fsdp, odd))


def test_a_run_stopped_while_it_is_committed_keeps_its_checkpoints(
    tiny_setup, tmp_path, monkeypatch
):
    """Commit, then clean: a run stopped after training, while its finished artifact is hashed
    (before the rename; some 12 s for an 8B checkpoint), keeps its checkpoints, so the next call
    resumes from the last one instead of step 0; they go once the run is in place."""
    tok, t = tiny_setup
    recipe = train.Recipe(
        seq_len=128, tokens=128 * 2 * 4, batch_tokens=128 * 2, lr=1e-3, save_every=2
    )
    real_sha256, real_last = cache._sha256, train.last_checkpoint

    def stopped(path):
        raise KeyboardInterrupt  # where a kill would land; the build stops here

    monkeypatch.setattr(cache, "_sha256", stopped)
    model = models.new_model(models.tiny_config("tiny", len(tok), 128, 248.0), seed=0)
    with pytest.raises(KeyboardInterrupt):
        train.run(model, t, tok, recipe, inputs=[t.key, tok.key, "init-0"], name="stopped")
    (work,) = (tmp_path / "work").glob("stopped-*")
    assert sorted(p.name for p in work.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]

    monkeypatch.setattr(cache, "_sha256", real_sha256)
    resumed_from = []

    def last(work):
        resumed_from.append(real_last(work))
        return resumed_from[-1]

    monkeypatch.setattr(train, "last_checkpoint", last)
    model = models.new_model(models.tiny_config("tiny", len(tok), 128, 248.0), seed=0)
    run = train.run(model, t, tok, recipe, inputs=[t.key, tok.key, "init-0"], name="stopped")
    assert resumed_from == [str(work / "checkpoint-4")]
    assert not work.exists() and cache.is_complete(run, verify=True)


class MakesAFolder:
    """Unpickled, it makes a folder: code that loading a file would run."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def test_a_launched_runs_rows_are_loaded_weights_only(tmp_path, monkeypatch):
    """A rank of a launched run loads its rows with ``weights_only=True`` (tensors, lists, dicts;
    never code), asked for explicitly, so it holds where ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``
    turns torch's default off: a rows file carrying a pickled call fails to load, the call not
    made."""
    spec = tmp_path / "launch"
    train._save_start(models.new_model(models.tiny_config("tiny", 64, 32, 248.0)), spec)
    recipe = train.Recipe(seq_len=32, tokens=64, batch_tokens=64, lr=1e-3)
    (spec / "recipe.json").write_text(json.dumps(dataclasses.asdict(recipe)))
    trace = tmp_path / "the call was made"
    torch.save([MakesAFolder(trace)], spec / "rows.pt")
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(pickle.UnpicklingError):
        train._worker(spec, tmp_path / "work", tmp_path / "out")
    assert not trace.exists()


def test_a_run_from_a_loaded_model_keys_on_the_model_not_its_folder(tiny_setup, tmp_path):
    """The same weights loaded from two places (a moved or copied cache) make the same run."""
    import shutil

    tok, t = tiny_setup
    recipe = train.Recipe(
        seq_len=64, tokens=64 * 2 * 2, batch_tokens=64 * 2, lr=1e-3, save_every=100
    )
    model = models.new_model(models.tiny_config("tiny", len(tok), 64, 248.0), seed=0)
    first = train.run(model, t, tok, recipe, inputs=[t.key, tok.key, "init-0"], name="a")
    copy = tmp_path / "elsewhere" / first.name
    shutil.copytree(first, copy)
    cont = dataclasses.replace(recipe, seed=1)
    a = train.run(train.load_run(first), t, tok, cont, inputs=[t.key, first.name], name="b")
    b = train.run(train.load_run(copy), t, tok, cont, inputs=[t.key, first.name], name="b")
    assert a == b


def run_key(recipe: train.Recipe, rows=None) -> str:
    """The key (folder name) ``train.run`` gives a run, found without training it."""
    keys = []

    def cached(kind, config, build, inputs=(), verify=None):
        keys.append(cache.key(kind, config, inputs))
        return Path(keys[-1])

    model = models.new_model(models.tiny_config("tiny", 100, 64, 248.0), seed=0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cache, "cached", cached)
        train.run(model, None, None, recipe, ["tokens", "tok", "init-0"], name="k", rows=rows)
    return keys[0]


LOSS = "loss = (nll * w.reshape(-1)).sum() / weight.clamp(min=1)"


def test_a_runs_key_follows_the_code_that_trains_it(monkeypatch, tmp_path):
    """A run's key fingerprints the code that produces it: a change to its loss, or to any module
    that trains it, gives a new key (the run is retrained); a docstring or comment edit keeps it,
    and so does a change to a module that does not train it."""
    monkeypatch.setenv("LCX_CACHE", str(tmp_path))
    recipe = train.Recipe(seq_len=64, tokens=64 * 2, batch_tokens=64 * 2, lr=1e-3)
    before = run_key(recipe)
    changes = [
        ("train", LOSS, LOSS.replace("min=1", "min=2")),  # the loss
        *[(m, "", "CHANGED = 1\n") for m in ("train", "rows", "models", "attention", "rope")],
    ]
    for module, old, new in changes:
        with pytest.MonkeyPatch.context() as mp:
            edit_source(mp, module, old, new)
            assert run_key(recipe) != before, (module, new)
    kept = [
        ("train", '"""Training runs built on', '"""Training runs, built on'),  # docstrings
        ("train", '"""Warm-up steps of a', '"""The warm-up steps of a'),
        ("train", "# Recipe.schedule ->", "# more words\n# and lines\n# Recipe.schedule ->"),
        *[(m, "", "CHANGED = 1\n") for m in ("evaluate", "metrics", "data", "plots", "tasks")],
    ]
    for module, old, new in kept:
        with pytest.MonkeyPatch.context() as mp:
            edit_source(mp, module, old, new)
            assert run_key(recipe) == before, (module, new)


def test_runs_packing_task_formats_key_on_the_task_generators_code(monkeypatch, tmp_path):
    """Rows packed here from the task generators are not hashed, so their code is in the key of
    a run with formats, and only of such a run (ready-made rows are hashed whatever made them)."""
    monkeypatch.setenv("LCX_CACHE", str(tmp_path))
    plain = train.Recipe(seq_len=64, tokens=64 * 2, batch_tokens=64 * 2, lr=1e-3)
    with_formats = dataclasses.replace(plain, formats={"passkey": 0.5})
    rows = row_builders.sft_rows([([1, 2, 3], [4, 5])] * 2, 64, 0)
    before = run_key(plain), run_key(with_formats), run_key(with_formats, rows)
    with pytest.MonkeyPatch.context() as mp:
        edit_source(mp, "tasks", "", "CHANGED = 1\n")
        after = run_key(plain), run_key(with_formats), run_key(with_formats, rows)
    assert before[0] == after[0] and before[1] != after[1] and before[2] == after[2]


def test_loading_a_run_prints_no_weight_bars_and_restores_them(tmp_path, capfd):
    from transformers.utils import logging as hf_logging

    model = models.new_model(models.tiny_config("tiny", 100, 64, 248.0), seed=0)
    model.save_pretrained(tmp_path / "model")
    capfd.readouterr()
    assert hf_logging.is_progress_bar_enabled()
    train.load_run(tmp_path)
    assert "Loading weights" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled()  # the user's setting is back
    models.LlamaForCausalLM.from_pretrained(tmp_path / "model")
    assert "Loading weights" in capfd.readouterr().err  # (the bar this hides)


def varied_answer_rows(tok, seed: int) -> list[dict]:
    """8 SFT rows of 128 tokens whose answers run from 2 to 90 tokens."""
    rng = torch.Generator().manual_seed(seed)
    examples = [
        (
            [1, *torch.randint(3, 500, (100 - n,), generator=rng).tolist()],
            torch.randint(3, 500, (n,), generator=rng).tolist(),
        )
        for n in (2, 60, 5, 90, 3, 40, 8, 70)
    ]
    rows = row_builders.sft_rows(examples, 128, tok.pad_token_id)
    assert len(rows) == 8
    return rows


@pytest.mark.parametrize("unsloth_patch", [False, True], ids=["plain", "unsloth-patched"])
def test_gradient_accumulation_keeps_the_loss_token_averaged(
    tiny_setup, monkeypatch, unsloth_patch
):
    """ProLong §A.3: rows with very different numbers of answer tokens, trained as one batch per
    step or as micro-batches of one row with gradient accumulation, give the same model (the loss
    is averaged over the step's answer tokens). Averaging micro-batch means instead would weight a
    short answer's tokens more, and the two runs would part."""
    tok, t = tiny_setup
    rows = varied_answer_rows(tok, seed=0)
    finals, logs = {}, {}
    for micro in (None, 1):  # one batch a step (the reference), then one row per micro-batch
        if micro and unsloth_patch:  # as Unsloth's import does: a count of labels, weights ignored
            from transformers import Trainer

            def counted_by_labels(self, epoch_iterator, num_batches, device):
                batches = [next(epoch_iterator) for _ in range(num_batches)]
                return batches, sum((b["labels"][:, 1:] != -100).sum() for b in batches)

            monkeypatch.setattr(Trainer, "get_batch_samples", counted_by_labels)
        recipe = train.Recipe(
            seq_len=128, tokens=128 * 4 * 2, batch_tokens=128 * 4, lr=1e-2, micro_rows=micro
        )
        model = models.new_model(models.tiny_config("tiny", len(tok), 128, 248.0), seed=0)
        run = train.run(model, None, tok, recipe, inputs=[tok.key, "i"], name="ga", rows=rows)
        finals[micro] = train.load_run(run).state_dict()
        logs[micro] = [e["loss"] for e in train.loss_log(run)]
    for k, v in finals[None].items():
        torch.testing.assert_close(finals[1][k], v, atol=2e-5, rtol=1e-4, msg=k)
    assert logs[1] == pytest.approx(logs[None], rel=1e-4)
    assert "micro_rows" not in train.Recipe(seq_len=8, tokens=8, batch_tokens=8, lr=1.0).config()
    with pytest.raises(ValueError, match="micro_rows"):
        bad = dataclasses.replace(recipe, micro_rows=3)
        train.run(model, None, tok, bad, inputs=["x"], name="bad", rows=rows)
    monkeypatch.setenv("WORLD_SIZE", "3")  # 4 rows a step cannot split over 3 ranks
    with pytest.raises(ValueError, match="3 ranks"):
        train.run(model, None, tok, recipe, inputs=["x"], name="bad", rows=rows)


@pytest.mark.slow  # a two-process torchrun launch
def test_two_processes_train_the_same_model_as_one(tiny_setup):
    """A run launched on 2 ranks (torchrun, gloo on CPU; each rank one row per micro-batch, two
    micro-batches a step) ends at the same model as one process taking each step's 4 rows at
    once: the loss stays averaged over the step's answer tokens across ranks, though the ranks'
    rows hold very different numbers of them. The layout is not in the run's key."""
    tok, t = tiny_setup
    rows = varied_answer_rows(tok, seed=1)
    recipe = train.Recipe(seq_len=128, tokens=128 * 4 * 2, batch_tokens=128 * 4, lr=1e-2)
    two = dataclasses.replace(recipe, micro_rows=1, parallel={"processes": 2})
    assert two.config() == dataclasses.replace(recipe, micro_rows=1).config()
    finals = {}
    for name, rec in (("one", recipe), ("two", two)):
        model = models.new_model(models.tiny_config("tiny", len(tok), 128, 248.0), seed=0)
        run = train.run(model, None, tok, rec, inputs=[tok.key, "i"], name=name, rows=rows)
        finals[name] = train.load_run(run).state_dict()
        assert len(train.loss_log(run)) == 2
    for k, v in finals["one"].items():
        torch.testing.assert_close(finals["two"][k], v, atol=2e-5, rtol=1e-4, msg=k)


def test_parallel_layouts_become_fsdp_or_sequence_parallel_arguments(tmp_path):
    base = train.Recipe(seq_len=8, tokens=64, batch_tokens=64, lr=1.0, gradient_checkpointing=True)
    fsdp = train.parallel_arguments(
        dataclasses.replace(base, parallel={"processes": 8, "fsdp": True})
    )
    assert fsdp["fsdp"] is True and fsdp["fsdp_config"]["version"] == 2
    assert fsdp["fsdp_config"]["transformer_layer_cls_to_wrap"] == ["LlamaDecoderLayer"]
    assert fsdp["fsdp_config"]["activation_checkpointing"] is True
    sp = train.parallel_arguments(
        dataclasses.replace(base, micro_rows=1, parallel={"processes": 8, "sp_size": 8}),
        "flash_attention_2",  # document masking under Ulysses: FlashAttention, one row a pass
    )
    assert (
        sp["parallelism_config"].sp_size == 8 and sp["parallelism_config"].sp_backend == "deepspeed"
    )
    assert sp["deepspeed"]["zero_optimization"]["stage"] == 3
    ulysses = dataclasses.replace(base, parallel={"processes": 8, "sp_size": 4})
    assert train.data_parallel_size(ulysses) == 2  # 4 ranks share each sequence
    for bad, match in (
        ({"processes": 8, "sp_size": 3}, "divide"),
        ({"processes": 8, "fsdp": True, "sp_size": 8}, "ZeRO-3"),
        ({"ranks": 8}, "not among"),
    ):
        with pytest.raises(ValueError, match=match):
            train.parallel_arguments(dataclasses.replace(base, parallel=bad))
    assert train.parallel_arguments(base) == {}
    # transformers takes the FSDP layout as it is (checkpointing moves inside FSDP), and the
    # 8 ranks each take one row of the 8 a step: no accumulation left
    sharded = dataclasses.replace(base, micro_rows=1, parallel={"processes": 8, "fsdp": True})
    args = train.training_arguments(sharded, tmp_path)
    assert args.fsdp and args.fsdp_config["version"] == 2
    assert args.fsdp_config["activation_checkpointing"]
    assert not getattr(args, train.CHECKPOINTING)  # not both: transformers refuses the pair
    assert args.gradient_accumulation_steps == 1 and args.per_device_train_batch_size == 1


def test_find_run_names_finished_runs_in_this_cache_only(tiny_setup, tmp_path):
    """A run is found by its name in this cache, checked as a load checks it: a run whose files
    are not all there at their sizes (a cut copy) is not found."""
    tok, t = tiny_setup
    model = models.new_model(models.tiny_config("tiny", len(tok), 128, 248.0), seed=0)
    recipe = train.Recipe(seq_len=128, tokens=512, batch_tokens=512, lr=1e-3, save_every=1000)
    run = train.run(model, t, tok, recipe, inputs=[t.key, tok.key, "init-0"], name="found")
    assert train.find_run(run.name) == run
    assert train.find_run("0123456789abcdef") is None
    weights = run / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    assert train.find_run(run.name) is None


def test_notebook_progress_keeps_its_bar_but_writes_no_loss_table(tmp_path):
    """In Jupyter the Trainer's bar grows a table row per logged loss (~100 rows a run): lcx swaps
    in a callback whose on_log writes nothing (transformers' own raises without a running bar)."""
    from transformers import Trainer, TrainingArguments
    from transformers.utils.notebook import NotebookProgressCallback

    model = models.new_model(models.tiny_config("tiny", 64, 32, 1e4), 0)
    trainer = Trainer(model=model, args=TrainingArguments(output_dir=tmp_path, report_to=[]))
    trainer.add_callback(NotebookProgressCallback)
    with pytest.raises(RuntimeError):  # on_log before a bar exists: the stock callback fails
        NotebookProgressCallback().on_log(trainer.args, trainer.state, None, logs={"loss": 1.0})
    train._bar_without_loss_table(trainer)
    bars = [
        c for c in trainer.callback_handler.callbacks if isinstance(c, NotebookProgressCallback)
    ]
    assert len(bars) == 1 and type(bars[0]) is not NotebookProgressCallback
    bars[0].on_log(trainer.args, trainer.state, None, logs={"loss": 1.0})  # writes nothing


def test_streamed_rows_train_the_model_the_list_trains(tiny_setup, tmp_path, monkeypatch):
    """stream_rows makes the rows as the trainer reads them: the same rows, so the same model
    (and the same run: the layout is not in its key); a launch hands the stream to its ranks as
    the split's folder on disk, from which every rank makes the same rows."""
    tok, t = tiny_setup
    recipe = train.Recipe(
        seq_len=128, tokens=128 * 4 * 3, batch_tokens=128 * 4, lr=1e-2, formats={"passkey": 0.2}
    )
    streamed = dataclasses.replace(recipe, stream_rows=True)
    assert streamed.config() == recipe.config()
    finals = {}
    for name, rec in (("list", recipe), ("stream", streamed)):
        monkeypatch.setenv("LCX_CACHE", str(tmp_path / name))
        model = models.new_model(models.tiny_config("tiny", len(tok), 128, 248.0), seed=0)
        run = train.run(model, t, tok, rec, inputs=[t.key, tok.key, "i"], name="s")
        finals[name] = train.load_run(run).state_dict()
    for k, v in finals["list"].items():
        torch.testing.assert_close(finals["stream"][k], v, msg=k)
    stream = row_builders.RowStream(t["train"], streamed, tok.bos_token_id, 12, tok)
    spec = tmp_path / "launch"
    spec.mkdir()
    train._save_rows(stream, spec)
    assert not (spec / "rows.pt").exists()  # the rows are not written out
    again = train._load_rows(spec, streamed)
    made, remade = list(stream), list(again)
    assert len(made) == len(remade) == 12
    assert all(torch.equal(a[k], b[k]) for a, b in zip(made, remade, strict=True) for k in a)


def test_a_launch_hands_its_ranks_a_stream_of_sft_rows_not_the_rows(tiny_setup, tmp_path):
    """Paper-scale SFT, mixed and windowed rows (lcx.rows.Stream) go to a launch's ranks as
    their maker, not as rows; every rank makes the same rows. A stream shorter than the run is
    refused before training."""
    tok, t = tiny_setup
    pool = tasks.Pool.from_tokens(tok, t["train"])
    make = row_builders.iter_task_sft_rows
    stream = row_builders.Stream(6, 256, ["s"], make, "doc_qa", tok, 6, 256, 1, pool)
    spec = tmp_path / "launch"
    spec.mkdir()
    train._save_rows(stream, spec)
    assert not (spec / "rows.pt").exists() and (spec / "stream.pkl").stat().st_size < 10**7
    recipe = train.Recipe(seq_len=256, tokens=256 * 6, batch_tokens=256 * 2, lr=1e-3)
    again = train._load_rows(spec, recipe)
    made, remade = list(stream), list(again)
    assert len(made) == len(remade) == 6
    assert all(torch.equal(a[k], b[k]) for a, b in zip(made, remade, strict=True) for k in a)
    model = models.new_model(models.tiny_config("tiny", len(tok), 256, 248.0), seed=0)
    longer = dataclasses.replace(recipe, tokens=256 * 8)
    with pytest.raises(ValueError, match="a stream of 6 rows for a run of 8"):
        train.run(model, None, tok, longer, inputs=["i"], name="s", rows=stream)
