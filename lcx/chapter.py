"""What every chapter does before its story: check its parameters, freeze the imports' objects,
make its results folder, set the plot style, and get its base model and tokens, in one call.

A chapter's first cells are then its parameters (papermill's ``parameters`` cell), one call to
:func:`setup`, and one :func:`count` per sample-size parameter.
"""

from __future__ import annotations

import gc
import importlib
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt

from . import cache, evaluate, plan, pretrained
from .profiles import GPU_PROFILES, PROFILES, check, check_device, pick
from .results import chapter_dir

PLOT_STYLE = {"figure.dpi": 110, "axes.grid": True, "grid.alpha": 0.3}


@dataclass
class Chapter:
    """A chapter's context: where its results go, its window ``W`` and seeds, and its base model
    (``base_ref`` for cached evaluations, ``base_net`` to train from)."""

    name: str
    profile: str
    seeds: list[int]
    out: Path
    W: int
    tokenizer: object
    tokens: object
    base_net: object
    base_ref: evaluate.Ref
    base_runs: list  # its pretraining stages' run folders (none for a released checkpoint)
    gate: dict  # the base model's gate (lcx.pretrained.base_gate), computed by chapter 02
    plan: dict | None = None  # the runs' plan (lcx.plan.load), None: every arm runs
    metrics: dict = field(default_factory=dict)

    @property
    def base_gate(self) -> tuple[bool, str]:
        """``(passed, reason)`` of the base model's gate, as :class:`lcx.scorecard.Scorecard`
        takes it."""
        return self.gate["passed"], pretrained.gate_reason(self.gate)


# every verdict from at least two seeds, three where the plan (lcx.plan.SEEDS) projects to them;
# one on tiny, which only exercises the code paths
SEEDS = {"tiny": [0], "cpu": [0, 1, 2], "gpu": [0, 1]}


def check_seeds(seeds) -> list[int]:
    check("seeds", seeds, kind=list)
    for s in seeds:
        check("seeds' element", s, kind=int, low=0)  # -1 fails deep inside the Trainer
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds={seeds!r} must be distinct integers >= 0 (at least one)")
    return seeds


def count(profile: str, name: str, value: int | None, low: int = 1, **by_profile) -> int:
    """A sample-size parameter: ``value`` if the reader set it, else the profile's default
    (:func:`lcx.profiles.pick`), checked to be an integer >= ``low``."""
    value = pick(profile, **by_profile) if value is None else value
    return check(name, value, kind=int, low=low)


# the paper module whose gpu_recipes() are the recipes a chapter trains (the others train none)
TRAINS = {
    "03_together_pi": "together",
    "04_llama2_long_abf": "llama2_long",
    "05_llama3_80k_qlora": "llama3_80k",
    "06_prolong": "prolong",
}


def gpu_recipes(name: str, profile: str, base_name: str = "llama2") -> list:
    """The recipes chapter ``name`` trains on ``profile`` (gpu/paper), as it builds them: its paper
    module's ``gpu_recipes`` at the base model's window; none for a chapter that trains nothing."""
    if name not in TRAINS:
        return []
    module = importlib.import_module(f"lcx.{TRAINS[name]}")
    return module.gpu_recipes(profile, pretrained.window(profile, base_name))


def check_memory(name: str, profile: str, base_name: str = "llama2") -> None:
    """On a GPU, refuse a chapter whose recipes do not fit the device before anything loads
    (:func:`lcx.train.memory_check`: the part that overflows and the setting that shrinks it),
    in seconds rather than after the base model and its gate are loaded. Nothing to check on a
    CPU (the tiny and cpu profiles, and the rehearsal)."""
    import torch

    from . import models, train

    if profile not in GPU_PROFILES or not torch.cuda.is_available():
        return
    config = models.paper_config(pretrained.BASES[base_name].paper_model)
    for recipe in gpu_recipes(name, profile, base_name):
        train.memory_check(config, recipe)


def quiet() -> None:
    """Keep the libraries' chatter out of a chapter's outputs (the rendered book showed hundreds of
    lines of it): ``datasets``' bars for every map, filter and save ("Saving the dataset",
    "Filter", "tokenizing train": short steps, mostly cached), transformers' bars for saving and
    loading weights (a QLoRA model is quantized through a save and a load), and its logged
    warnings (its generation "friendly reminder" when a probe runs past the model's window, which
    is the point of the probe). Errors still show, and so do the long loops' bars, the Trainer's
    and lcx's evaluations': live in Jupyter, and in their last state in the book (``make book``
    runs ``scripts/collapse_streams.py`` on the executed notebooks). The few warnings that every
    run raises are filtered, by message, where lcx is imported (``lcx/__init__.py``)."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.logging.disable_progress_bar()
    transformers.logging.set_verbosity_error()


def setup(
    name: str, profile: str, seeds=None, base_name: str = "llama2", planned: bool | str = True
) -> Chapter:
    """Check ``profile`` and ``seeds`` (None: :data:`SEEDS` of the profile), freeze the objects
    the imports made (every Trainer run's ``gc.collect()`` then skips them: 0.4 s per run), make
    ``results/<profile>/<name>/``, set the plot style, keep library chatter out of the outputs
    (:func:`quiet`), refuse on a GPU a chapter whose recipes do not fit it (:func:`check_memory`),
    and load base model ``base_name`` (chapter 02's, cached) with its tokens and
    its gate (:func:`lcx.pretrained.base_gate`; a failed gate is printed, and the chapter's
    scorecard marks the claims it would decide not testable), and, when ``planned``, the
    profile's plan (:func:`lcx.plan.load`: the arms only out-of-reach parts use are skipped; a
    profile's name instead of True: that profile's plan)."""
    gc.freeze()
    quiet()
    check("profile", profile, PROFILES)
    check_device(profile)
    cache.check_writable()
    check("base_name", base_name, tuple(pretrained.BASES))
    check_memory(name, profile, base_name)
    seeds = pick(profile, **SEEDS) if seeds is None else seeds
    check_seeds(seeds)
    if not isinstance(planned, bool):  # another profile's plan, e.g. cpu's on tiny (the tests)
        check("planned", planned, PROFILES)
    runs_plan = plan.load(profile if planned is True else planned) if planned else None
    plt.rcParams.update(PLOT_STYLE)
    base_net, _, base_runs = pretrained.base_model(profile, base_name, 0)
    tokenizer, tokens = pretrained.corpus_tokens(profile, base_name)
    ref = pretrained.ref(base_name, base_runs)
    gate = pretrained.base_gate(profile, ref, tokenizer, tokens, base_name)
    if not gate["passed"]:
        print(f"base model {base_name!r} failed its gate: {pretrained.gate_reason(gate)}")
    return Chapter(
        name=name,
        profile=profile,
        seeds=seeds,
        out=chapter_dir(name, profile),
        W=pretrained.window(profile, base_name),
        tokenizer=tokenizer,
        tokens=tokens,
        base_net=base_net,
        base_ref=ref,
        base_runs=base_runs,
        gate=gate,
        plan=runs_plan,
        metrics={
            "profile": profile,
            "seeds": seeds,
            "base_gate": gate,
            "plan": runs_plan and {"commit": runs_plan["commit"], "seeds": runs_plan["seeds"]},
        },
    )
