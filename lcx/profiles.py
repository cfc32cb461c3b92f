"""Run profiles: one notebook, four scales.

``tiny`` runs every code path in seconds (the notebook tests), ``cpu`` (the default) produces the
book's results on a 2-core laptop, ``gpu`` and ``paper`` run the same code on real checkpoints.
Chapters pick their sizes with :func:`pick` and validate their parameters with :func:`check`
before any heavy work, so a typo fails at once with the allowed values.
"""

from __future__ import annotations

import os

PROFILES = ("tiny", "cpu", "gpu", "paper")
GPU_PROFILES = ("gpu", "paper")


def check(name: str, value, allowed=None, *, low=None, high=None, kind=None):
    """Fail with a message naming the parameter, its bad value and what is allowed.

    ``allowed``: a collection of allowed values; ``low``/``high``: inclusive numeric bounds;
    ``kind``: a type or tuple of types the value must have. Returns ``value`` for chaining.
    """
    kinds = () if kind is None else _as_tuple(kind)
    # a bool is an int to Python, not to a reader: True for a count or a seed is a mistake
    wrong_bool = isinstance(value, bool) and bool not in kinds and int in kinds
    if kind is not None and (not isinstance(value, kind) or wrong_bool):
        names = ", ".join(t.__name__ for t in kinds)
        raise ValueError(
            f"parameter {name!r} = {value!r} has type {type(value).__name__}; expected {names}"
        )
    if allowed is not None and value not in allowed:
        raise ValueError(
            f"parameter {name!r} = {value!r} is not allowed; choose one of: {', '.join(map(str, allowed))}"
        )
    if low is not None and value < low or high is not None and value > high:
        raise ValueError(
            f"parameter {name!r} = {value!r} is out of range; allowed: [{low}, {high}]"
        )
    return value


def check_flag(name: str, value, none: bool = False):
    """A yes/no parameter: True or False (or None, meaning the profile's default, with ``none``);
    1, 0 or "yes" are refused with the parameter's name."""
    return check(name, value, kind=(bool, type(None)) if none else bool)


def check_device(profile: str) -> None:
    """Refuse ``gpu``/``paper`` on a machine without CUDA before anything is downloaded (they
    load 7-8B checkpoints); ``LCX_REHEARSAL=1`` lets the gpu code paths run on the CPU with
    local stand-ins for hub models (the tests' rehearsal)."""
    import torch

    if profile in GPU_PROFILES and not torch.cuda.is_available():
        if os.environ.get("LCX_REHEARSAL") != "1":
            raise RuntimeError(
                f"profile={profile!r} needs a CUDA GPU (it trains and evaluates 7-8B models) and "
                "this machine has none: use profile='cpu' (or 'tiny'); LCX_REHEARSAL=1 runs the "
                "gpu code paths on the CPU with local stand-ins"
            )


# The rehearsal of the gpu profile on a CPU (LCX_REHEARSAL=1 without CUDA; ``make rehearsal``): the
# gpu code paths at toy size, every native window divided by this (Llama 2's 4,096 -> 128, Llama
# 3's 8,192 -> 256) and every gpu recipe cut to a few steps (lcx.train.rehearsed). Every RoPE
# setting of the gpu profile is a ratio of lengths or an absolute base, so they stay the paper's.
REHEARSAL_DIVISOR = 32


def rehearsal() -> bool:
    """Whether this process rehearses the gpu profile on a CPU (``LCX_REHEARSAL=1`` and no CUDA
    GPU): then :func:`check_device` lets gpu/paper run, windows shrink by
    :data:`REHEARSAL_DIVISOR` and recipes by :func:`lcx.train.rehearsed`."""
    import torch

    return os.environ.get("LCX_REHEARSAL") == "1" and not torch.cuda.is_available()


def pick(profile: str, **by_profile):
    """The value for ``profile`` among keyword values, e.g. ``pick(p, tiny=64, cpu=2048, gpu=32768)``.

    ``paper`` falls back to ``gpu`` when not given (the paper scale is the GPU path at full size).
    """
    check("profile", profile, PROFILES)
    if profile == "paper" and "paper" not in by_profile:
        profile = "gpu"
    if profile not in by_profile:
        raise ValueError(f"no value given for profile {profile!r} (have: {', '.join(by_profile)})")
    return by_profile[profile]


def _as_tuple(kind):
    return kind if isinstance(kind, tuple) else (kind,)
