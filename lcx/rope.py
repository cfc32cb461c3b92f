"""RoPE and the ways the four papers stretch it.

Rotary position embedding (Su et al., 2021) rotates each pair j of a query/key head by the angle
``t * theta_j`` at position t, with ``theta_j = base ** (-2j / d)``. Every extension method in this
book changes only those frequencies (and, for YaRN, the attention temperature):

* ``default``  plain RoPE; Llama 2 Long's *Adjusted Base Frequency* (ABF) is this with a larger base.
* ``linear``   Position Interpolation (Chen et al., 2023; Together's LLaMA-2-7B-32K): ``theta / factor``.
* ``ntk``      static NTK-aware scaling: ``default`` with base ``b * factor ** (d / (d - 2))``.
* ``dynamic``  dynamic NTK (emozilla, 2023): the NTK base recomputed from the current sequence length.
* ``yarn``     YaRN (Peng et al., 2023): interpolate low frequencies, keep high ones, ramp between,
               and scale attention logits by ``0.1 ln(factor) + 1``.
* ``llama3``   Llama-3.1 scaling: like YaRN's ramp, but set by wavelength bands.

The frequencies are computed here in float64 from the papers' formulas; the tests hold them against
transformers' own ``ROPE_INIT_FUNCTIONS`` (which the models use), so analysis and training agree.
The rest of the module is the analysis the papers draw: the decay of attention with distance
(Llama 2 Long Fig. 4), the granularity of consecutive positions (Llama 2 Long App. B), the NTK
suggested base (ProLong App. B.1) and xPos (Sun et al., 2022).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch

METHODS = ("default", "linear", "ntk", "dynamic", "yarn", "llama3")


def _check(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not one of {', '.join(map(repr, allowed))}")


def _default_inv_freq(head_dim: int, base: float) -> torch.Tensor:
    if head_dim % 2 or head_dim < 4:
        raise ValueError(f"head_dim={head_dim!r} must be an even number >= 4")
    if base <= 1:
        raise ValueError(f"base={base!r} must be > 1")
    return base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)


def ntk_base(base: float, factor: float, head_dim: int) -> float:
    """The NTK-aware base for a context ``factor`` times longer: ``b * t ** (d / (d - 2))``.

    ProLong App. B.1 calls this dynamic NTK's suggestion (emozilla, 2023). It keeps the lowest
    frequency's wavelength growing by ``factor`` while the highest frequency stays put. Run with
    ``factor < 1`` it gives the base that mirrors a paper model's RoPE geometry in a shorter window.
    """
    if factor <= 0:
        raise ValueError(f"factor={factor!r} must be > 0")
    return base * factor ** (head_dim / (head_dim - 2))


def yarn_attention_factor(factor: float, mscale: float = 1.0) -> float:
    """YaRN's attention temperature ``sqrt(1/t) = 0.1 ln(s) + 1`` (YaRN §3.4), applied to cos/sin."""
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


def inv_freq(
    head_dim: int,
    base: float = 10000.0,
    method: str = "default",
    factor: float = 1.0,
    original_max_position: int | None = None,
    **kw,
) -> torch.Tensor:
    """Inverse frequencies ``theta_j`` (length ``head_dim // 2``, float64) for a RoPE method.

    Extra keywords by method: ``dynamic`` needs ``seq_len`` (and ``original_max_position``);
    ``yarn`` takes ``beta_fast=32``, ``beta_slow=1`` and ``truncate=True`` and needs
    ``original_max_position``; ``llama3`` takes ``low_freq_factor=1``, ``high_freq_factor=4`` and
    needs ``original_max_position``. Use :func:`attention_scaling` for YaRN's temperature.
    """
    _check("method", method, METHODS)
    if factor <= 0:
        raise ValueError(f"factor={factor!r} must be > 0")
    allowed = {
        "dynamic": {"seq_len"},
        "yarn": {"beta_fast", "beta_slow", "truncate", "mscale"},
        "llama3": {"low_freq_factor", "high_freq_factor"},
    }.get(method, set())
    if unknown := set(kw) - allowed:
        raise TypeError(f"inv_freq(method={method!r}) got unexpected keywords {sorted(unknown)}")
    if method in ("dynamic", "yarn", "llama3") and original_max_position is None:
        raise ValueError(f"method={method!r} needs original_max_position (the native window)")

    theta = _default_inv_freq(head_dim, base)
    d = head_dim
    if method == "default":
        return theta
    if method == "linear":  # PI: positions t -> t / factor, i.e. theta -> theta / factor
        return theta / factor
    if method == "ntk":
        return _default_inv_freq(d, ntk_base(base, factor, d))
    if method == "dynamic":
        # emozilla's dynamic NTK: grow the base with the current length L past the native L0.
        if "seq_len" not in kw:
            raise ValueError("method='dynamic' needs seq_len (the current sequence length)")
        seq_len = max(int(kw["seq_len"]), original_max_position)
        scale = factor * seq_len / original_max_position - (factor - 1)
        return _default_inv_freq(d, base * scale ** (d / (d - 2)))
    if method == "yarn":
        # YaRN §3.2 "NTK-by-parts": pairs that rotate more than beta_fast times inside the native
        # window are kept (extrapolated), those rotating fewer than beta_slow times are
        # interpolated by `factor`, with a linear ramp between.
        beta_fast, beta_slow = kw.get("beta_fast", 32.0), kw.get("beta_slow", 1.0)

        def dim_of(rotations: float) -> float:
            return (
                d
                * math.log(original_max_position / (rotations * 2 * math.pi))
                / (2 * math.log(base))
            )

        low, high = dim_of(beta_fast), dim_of(beta_slow)
        if kw.get("truncate", True):
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, d - 1)
        if low == high:
            high += 0.001  # prevent a zero-width ramp (as transformers does)
        ramp = ((torch.arange(d // 2, dtype=torch.float64) - low) / (high - low)).clamp(0, 1)
        return theta / factor * ramp + theta * (1 - ramp)
    # llama3: wavelengths shorter than L0/high_freq_factor kept, longer than L0/low_freq_factor
    # divided by factor, smooth blend in between (Llama 3 herd paper; transformers' "llama3").
    low_ff, high_ff = kw.get("low_freq_factor", 1.0), kw.get("high_freq_factor", 4.0)
    wavelen = 2 * math.pi / theta
    smooth = ((original_max_position / wavelen - low_ff) / (high_ff - low_ff)).clamp(0, 1)
    return (1 - smooth) * theta / factor + smooth * theta


def attention_scaling(method: str, factor: float = 1.0, **kw) -> float:
    """The factor transformers multiplies cos/sin by: YaRN's temperature, 1 for the others."""
    _check("method", method, METHODS)
    return yarn_attention_factor(factor, kw.get("mscale", 1.0)) if method == "yarn" else 1.0


def rope_parameters(
    method: str,
    base: float = 10000.0,
    factor: float = 1.0,
    original_max_position: int | None = None,
    **kw,
) -> dict:
    """The transformers ``config.rope_parameters`` dict that makes a model use ``method``.

    ``ntk`` needs ``head_dim`` (it is ``default`` with the NTK base). transformers' ``dynamic``
    takes the native window from ``config.max_position_embeddings``; :func:`apply_rope` sets it.
    """
    _check("method", method, METHODS)
    if method == "default":
        return {"rope_type": "default", "rope_theta": float(base)}
    if method == "ntk":
        if "head_dim" not in kw:
            raise ValueError("method='ntk' needs head_dim to compute the NTK base")
        return {"rope_type": "default", "rope_theta": ntk_base(base, factor, kw["head_dim"])}
    params = {"rope_type": method, "rope_theta": float(base), "factor": float(factor)}
    if method in ("yarn", "llama3"):
        if original_max_position is None:
            raise ValueError(f"method={method!r} needs original_max_position")
        params["original_max_position_embeddings"] = int(original_max_position)
    if method == "yarn":
        params.update(
            beta_fast=float(kw.get("beta_fast", 32.0)), beta_slow=float(kw.get("beta_slow", 1.0))
        )
    if method == "llama3":
        params.update(
            low_freq_factor=float(kw.get("low_freq_factor", 1.0)),
            high_freq_factor=float(kw.get("high_freq_factor", 4.0)),
        )
    return params


def apply_rope(config, method: str, base: float | None = None, factor: float = 1.0, **kw):
    """A copy of a transformers config (e.g. ``LlamaConfig``) that uses RoPE ``method``.

    The native window is taken from ``config.max_position_embeddings`` unless
    ``original_max_position`` is given; the copy's ``max_position_embeddings`` becomes
    ``original * factor`` (left at the native window for ``dynamic``, which reads it as such).
    transformers keeps ``inv_freq`` as a non-persistent buffer, so to change a trained model's
    method build a new model from this config and load the old state dict.
    """
    new = copy.deepcopy(config)
    old = config.rope_parameters or {}
    base = float(old.get("rope_theta", 10000.0) if base is None else base)
    original = int(kw.pop("original_max_position", None) or config.max_position_embeddings)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    if method == "ntk":
        kw["head_dim"] = head_dim
    new.rope_parameters = rope_parameters(method, base, factor, original, **kw)
    new.max_position_embeddings = original if method == "dynamic" else int(round(original * factor))
    return new


# --- Llama 2 Long, App. B: granularity of consecutive positions ---------------------------------

GRANULARITY_METHODS = ("default", "linear", "abf")


def _scaled_angles(head_dim: int, base: float, method: str, factor: float) -> torch.Tensor:
    _check("method", method, GRANULARITY_METHODS)
    if method == "linear":  # PI with alpha = 1 / factor
        return inv_freq(head_dim, base, "linear", factor)
    if method == "abf":  # ABF with beta = factor: theta_j = (beta * b) ** (-2j/d)
        return inv_freq(head_dim, base * factor)
    return inv_freq(head_dim, base)


def granularity(
    head_dim: int, base: float = 10000.0, method: str = "linear", factor: float = 1.0
) -> float:
    """Sine similarity of consecutive positions' images, Llama 2 Long App. B, Theorem 1.

    Returns ``C_d / (d/2)``: the paper's exact sum ``C_d = sum_j sin(theta_j)`` (``theta_j`` =
    ``alpha b^(-2j/d)`` for PI, ``(beta b)^(-2j/d)`` for ABF) divided by its number of terms. That
    normalised sum is what the theorem's limit approximates (``C_d`` itself grows linearly with d;
    the proof's geometric-sum step drops the ``d/2``), and for an all-ones vector it equals the
    sine similarity ``sin angle(f(x, n+1), f(x, n))`` exactly. ``method`` is ``linear`` (PI,
    alpha = 1/factor), ``abf`` (beta = factor) or ``default`` (factor ignored).
    """
    theta = _scaled_angles(head_dim, base, method, factor)
    return float(torch.sin(theta).mean())


def _si(x: float) -> float:
    """The sine integral Si(x) = int_0^x sin(v)/v dv, by its power series (|x| <= 4 here)."""
    total, term, n = 0.0, x, 0
    while abs(term) > 1e-17 or n < 3:
        total += term / (2 * n + 1)
        n += 1
        term *= -x * x / ((2 * n) * (2 * n + 1))
    return total


def granularity_limit(
    base: float = 10000.0, method: str = "linear", factor: float = 1.0, exact: bool = False
) -> float:
    """The d -> infinity form of :func:`granularity`.

    By default the paper's approximation (Theorem 1): ``alpha / ln b`` for PI and
    ``1 / (ln b + ln beta)`` for ABF. With ``exact=True`` the true limit of the normalised sum,
    ``(Si(a) - Si(a / B)) / ln B`` (``a`` = the largest angle, ``B`` = the effective base), which the
    approximation overestimates when the angles reach 1 rad (ABF) since it replaces sin(x) by x.
    """
    _check("method", method, GRANULARITY_METHODS)
    if method == "linear":
        a, eff_base = 1.0 / factor, base
    elif method == "abf":
        a, eff_base = 1.0, base * factor
    else:
        a, eff_base = 1.0, base
    if exact:
        return (_si(a) - _si(a / eff_base)) / math.log(eff_base)
    return a / math.log(eff_base)


# --- Llama 2 Long, Fig. 4: decay of the raw attention score with distance ------------------------


def xpos_zeta(head_dim: int, gamma: float = 0.4) -> torch.Tensor:
    """xPos per-pair decay rates ``zeta_j = (2j/d + gamma) / (1 + gamma)`` (Sun et al., 2022, §3.2)."""
    return (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim + gamma) / (1 + gamma)


def xpos_scale(
    positions: torch.Tensor, head_dim: int, scale_base: float = 512.0, gamma: float = 0.4
) -> torch.Tensor:
    """Per-position, per-pair xPos scale ``zeta_j ** (t / scale_base)``, shape ``(len, d/2)``.

    Queries are multiplied by it and keys by its inverse, so a query at n and a key at m see
    ``zeta ** ((n - m) / scale_base)``: a smooth decay that damps RoPE's long-range oscillation.
    """
    t = torch.as_tensor(positions, dtype=torch.float64)[:, None]
    return xpos_zeta(head_dim, gamma)[None, :] ** (t / scale_base)


def apply_rotary(
    x: torch.Tensor,
    positions: torch.Tensor,
    theta: torch.Tensor,
    xpos_scale_base: float | None = None,
    key: bool = False,
) -> torch.Tensor:
    """Rotate ``x`` (``..., seq, head_dim``) by RoPE in Llama's rotate-half layout, optionally xPos.

    Pair j is (x[j], x[j + d/2]) as in transformers' Llama. With ``xpos_scale_base`` the query is
    scaled by :func:`xpos_scale` and the key (``key=True``) by its inverse, as in xPos.
    """
    pos = torch.as_tensor(positions, dtype=torch.float64)
    angles = pos[:, None] * theta.to(torch.float64)[None, :]
    cos, sin = torch.cos(angles), torch.sin(angles)
    if xpos_scale_base is not None:
        s = xpos_scale(pos, 2 * theta.numel(), xpos_scale_base)
        s = 1 / s if key else s
        cos, sin = cos * s, sin * s
    cos, sin = torch.cat([cos, cos], -1).to(x.dtype), torch.cat([sin, sin], -1).to(x.dtype)
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], -1)
    return x * cos + rotated * sin


def attention_decay(
    rel_positions,
    head_dim: int = 128,
    base: float = 10000.0,
    method: str = "default",
    factor: float = 1.0,
    xpos_scale_base: float | None = None,
    normalize: bool = True,
    **kw,
) -> torch.Tensor:
    """Raw attention score ``RoPE(q, m)^T RoPE(k, n)`` for all-ones q and k vs ``|m - n|``.

    Llama 2 Long Fig. 4 (footnote 3): with all-ones vectors every pair contributes
    ``2 cos(delta * theta_j)``, the largest value the pair can take for vectors of that norm, so
    this is the envelope the paper uses to show how fast each variant lets attention decay.
    ``method``/``factor``/``kw`` go to :func:`inv_freq` (ABF is ``default`` with a larger base);
    ``xpos_scale_base`` adds xPos's decay. ``normalize`` divides by the score at distance 0 (= d).
    """
    delta = torch.as_tensor(rel_positions, dtype=torch.float64).reshape(-1)
    theta = inv_freq(head_dim, base, method, factor, **kw)
    score = 2 * torch.cos(delta[:, None] * theta[None, :])
    if xpos_scale_base is not None:
        score = score * xpos_zeta(head_dim)[None, :] ** (delta[:, None] / xpos_scale_base)
    score = score.sum(-1)
    return score / head_dim if normalize else score


def mean_abs_between(score: torch.Tensor, distances: torch.Tensor, lo: float, hi: float) -> float:
    """Mean ``|score|`` over the distances in [lo, hi]: how much of an :func:`attention_decay`
    envelope is left that far away (Llama 2 Long Fig. 4's reading)."""
    sel = (distances >= lo) & (distances <= hi)
    return score[sel].abs().mean().item()


def helix(theta: torch.Tensor, t, pair: int) -> np.ndarray:
    """Points ``(cos theta_0 t, sin theta_0 t, sin theta_pair t)`` at positions ``t``: RoPE's
    fastest rotation against a slower pair, the helix picture of Llama 2 Long §4.1's comparison
    of PI (dots closer along the curve) and ABF (the slow pairs slowed further)."""
    t = np.asarray(t, dtype=float)
    fast, slow = theta[0].item(), theta[pair].item()
    return np.stack([np.cos(fast * t), np.sin(fast * t), np.sin(slow * t)], -1)


# --- The four papers' settings, one source of truth for the chapters ----------------------------


@dataclass(frozen=True)
class RopeSetting:
    """A model's RoPE as a paper reports it."""

    model: str
    paper: str
    window: int  # context length trained for
    method: str  # an entry of METHODS
    base: float
    factor: float = 1.0
    original_window: int | None = None  # the native window it was extended from
    head_dim: int = 128
    source: str = ""
    hub_id: str | None = None  # the released checkpoint, for the gpu/paper profiles

    def inv_freq(self) -> torch.Tensor:
        return inv_freq(self.head_dim, self.base, self.method, self.factor, self.original_window)


PAPER_SETTINGS = (
    RopeSetting(
        "Llama-2-7B",
        "Llama 2",
        4096,
        "default",
        1e4,
        source="Touvron et al. 2023",
        hub_id="meta-llama/Llama-2-7b-hf",
    ),
    RopeSetting(
        "LLaMA-2-7B-32K",
        "Together",
        32768,
        "linear",
        1e4,
        8.0,
        4096,
        source="Together blog: linear Position Interpolation, factor 8",
        hub_id="togethercomputer/LLaMA-2-7B-32K",
    ),
    RopeSetting(
        "Llama 2 Long 7B",
        "Llama 2 Long",
        32768,
        "default",
        5e5,
        original_window=4096,
        source="§4.1: ABF, base 10,000 -> 500,000",
    ),
    RopeSetting(
        "Meta-Llama-3-8B-Instruct",
        "Llama 3",
        8192,
        "default",
        5e5,
        source="Meta 2024",
        hub_id="meta-llama/Meta-Llama-3-8B-Instruct",
    ),
    RopeSetting(
        "Llama-3-8B-Instruct-80K-QLoRA",
        "Llama-3 80K",
        81920,
        "default",
        2e8,
        original_window=8192,
        source="§2: rope_theta 500K -> 200M",
        hub_id="namespace-Pt/Llama-3-8B-Instruct-80K-QLoRA-Merged",
    ),
    RopeSetting(
        "ProLong-8B-64K",
        "ProLong",
        65536,
        "default",
        8e6,
        original_window=8192,
        source="Table 9, stage 1",
        hub_id="princeton-nlp/Llama-3-8B-ProLong-64k-Base",
    ),
    RopeSetting(
        "ProLong-8B-512K",
        "ProLong",
        524288,
        "default",
        1.28e8,
        original_window=65536,
        source="Table 9, stage 2",
        hub_id="princeton-nlp/Llama-3-8B-ProLong-512k-Base",
    ),
)

# (extended model, the model it starts from): the extensions the book's papers made
EXTENSIONS = (
    ("LLaMA-2-7B-32K", "Llama-2-7B"),
    ("Llama 2 Long 7B", "Llama-2-7B"),
    ("Llama-3-8B-Instruct-80K-QLoRA", "Meta-Llama-3-8B-Instruct"),
    ("ProLong-8B-64K", "Meta-Llama-3-8B-Instruct"),
    ("ProLong-8B-512K", "ProLong-8B-64K"),
)


def against_transformers(examples: dict, head_dim: int, window: int):
    """For each example (name -> :func:`inv_freq`'s ``base``, ``method``, ``factor`` and, for
    dynamic NTK, ``seq_len``), our frequencies against those of transformers'
    ``LlamaRotaryEmbedding`` for the config :func:`apply_rope` writes, on a Llama-2-shaped model
    with native window ``window``: the largest relative difference and both attention scalings."""
    import pandas as pd
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    rows = []
    for name, kw in examples.items():
        kw = dict(kw)
        base = kw.pop("base", 1e4)
        seq_len = kw.pop("seq_len", None)
        method, factor = kw.pop("method"), kw.pop("factor", 1.0)
        llama2 = LlamaConfig(
            hidden_size=head_dim * 32,
            num_attention_heads=32,
            head_dim=head_dim,
            max_position_embeddings=window,
            rope_parameters={"rope_type": "default", "rope_theta": base},
        )
        config = apply_rope(llama2, method, factor=factor)
        emb = LlamaRotaryEmbedding(config)
        if seq_len:  # dynamic NTK recomputes its base in the forward pass once the input is longer
            emb(torch.zeros(1, dtype=torch.float32), torch.arange(seq_len)[None])
        ours = inv_freq(
            head_dim, base, method, factor, window, **({"seq_len": seq_len} if seq_len else {})
        )
        rel = ((ours.float() - emb.inv_freq) / emb.inv_freq).abs().max().item()
        scaling = f"{attention_scaling(method, factor):.4f} / {emb.attention_scaling:.4f}"
        rows.append(
            {
                "method": name,
                "config.rope_parameters": config.rope_parameters,
                "max relative difference": rel,
                "attention scaling (ours / transformers)": scaling,
            }
        )
    return pd.DataFrame(rows)


def granularity_table(settings: dict, head_dim: int, base: float = 1e4):
    """Llama 2 Long App. B's granularity for each setting (name -> (method, factor)): exact at
    ``head_dim``, the true limit as d grows, and the paper's limit (``alpha / ln b`` for PI,
    ``1 / (ln b + ln beta)`` for ABF)."""
    import pandas as pd

    rows = [
        {
            "setting": name,
            f"exact, d={head_dim}": granularity(head_dim, base, method, factor),
            "true limit d→∞": granularity_limit(base, method, factor, exact=True),
            "paper's limit": granularity_limit(base, method, factor),
        }
        for name, (method, factor) in settings.items()
    ]
    return pd.DataFrame(rows).set_index("setting")


def extension_table(extensions=EXTENSIONS):
    """For each (extended model, model it starts from) of :data:`PAPER_SETTINGS`: the base it
    uses against the NTK-suggested base for its length factor (ProLong App. B.1), and its slowest
    wavelength in units of its window."""
    import pandas as pd

    by_model = {s.model: s for s in PAPER_SETTINGS}
    rows = []
    for target, source in extensions:
        t, s = by_model[target], by_model[source]
        factor = t.window / s.window
        suggested = ntk_base(s.base, factor, t.head_dim)
        slowest = 2 * math.pi / t.inv_freq().min().item()
        rows.append(
            {
                "model": target,
                "paper": t.paper,
                "from": f"{s.window // 1024}K, base {s.base:,.0f}",
                "to": f"{t.window // 1024}K",
                "t": factor,
                "method": t.method if t.method != "default" else "base change",
                "base used": t.base,
                "NTK suggestion": suggested,
                "used / suggested": t.base / suggested if t.method == "default" else float("nan"),
                "slowest wavelength / window": slowest / t.window,
            }
        )
    return pd.DataFrame(rows).set_index("model")


def helix_spacing(theta: torch.Tensor, pair: int, n: int = 10) -> float:
    """Mean distance between the :func:`helix` points of positions 0..n: how far apart
    consecutive positions sit (PI brings them closer, ABF keeps them; Llama 2 Long Fig. 8)."""
    dots = helix(theta, np.arange(n + 1), pair)
    return float(np.linalg.norm(np.diff(dots, axis=0), axis=1).mean())


def hub_configs(settings=PAPER_SETTINGS):
    """Each released checkpoint's RoPE (``rope_theta``, ``rope_type`` from its hub config) against
    the setting the paper reports: needs the hub, and access to the gated Llama repositories (or
    their local stand-ins, :func:`lcx.hub.resolve`)."""
    import pandas as pd
    from transformers import AutoConfig

    from . import hub  # each config at the commit lcx.hub.REVISIONS pins

    rows = []
    for s in settings:
        if s.hub_id is None:
            continue
        source = hub.resolve(s.hub_id)
        config = AutoConfig.from_pretrained(source, **hub.pretrained_kwargs(source))
        params = getattr(config, "rope_parameters", None) or {}
        theta, rtype = params.get("rope_theta"), params.get("rope_type", "default")
        rows.append(
            {
                "model": s.model,
                "hub": s.hub_id,
                "rope_theta": theta,
                "rope_type": rtype,
                "matches": theta == s.base and rtype == s.method,
            }
        )
    return pd.DataFrame(rows)


def distance_grid(max_distance: int, n: int | None = None) -> torch.Tensor:
    """Relative distances 0..``max_distance`` (float64): every integer (RoPE's score oscillates
    at every scale, so a sampled grid misses its peaks), or 0 and ``n`` log-spaced distances."""
    if n is None:
        return torch.arange(0, max_distance + 1, dtype=torch.float64)
    grid = torch.logspace(0, math.log10(max_distance), n).round()
    return torch.unique(torch.cat([torch.zeros(1), grid]).double())


# --- Claims R1-R4: the chapter's numbers as the registry's arithmetic parts (lcx.claims) --------


def decay_values(near, far, rope: str, pi: str, abf: str) -> dict:
    """R1's numbers (Llama 2 Long Fig. 4) from the mean ``|score|`` levels of
    :func:`mean_abs_between` at short range (``near``) and long range (``far``), each indexed by
    variant name: RoPE's long-range level over its short-range level, and PI's and ABF's
    long-range levels over RoPE's."""
    return {
        "RoPE decays": far[rope] / near[rope],
        "PI decays less": far[pi] / far[rope],
        "ABF decays less": far[abf] / far[rope],
    }


def granularity_values(table, pi: str, abf: str) -> dict:
    """R2's numbers (Llama 2 Long App. B) from a :func:`granularity_table` with rows ``pi``
    (PI, alpha = 1/4) and ``abf`` (ABF, beta = 50): the paper's two limits, ABF's exact
    granularity over PI's, and each exact value over its paper limit."""
    exact = next(c for c in table.columns if c.startswith("exact"))
    limit = table["paper's limit"]
    return {
        "PI limit": limit[pi],
        "ABF limit": limit[abf],
        "ABF finer than PI": table.loc[abf, exact] / table.loc[pi, exact],
        "PI near its limit": table.loc[pi, exact] / limit[pi],
        "ABF near its limit": table.loc[abf, exact] / limit[abf],
    }


def ntk_values(table) -> dict:
    """R3's numbers (ProLong App. B.1) from :func:`extension_table`: the NTK suggestions for
    Llama-3 8K -> 64K and for 64K -> 512K from ProLong's 8M."""
    return {
        "8K→64K": table.loc["ProLong-8B-64K", "NTK suggestion"],
        "64K→512K": table.loc["ProLong-8B-512K", "NTK suggestion"],
    }


def theta1_change(head_dim: int, base: float = 1e4, new_base: float = 5e5) -> float:
    """``1 - theta_1(new_base) / theta_1(base)``, the relative change of pair 1's frequency that
    Llama 2 Long App. B quotes for Fig. 8 (6% at d = 128, 10K -> 500K)."""
    return 1 - (inv_freq(head_dim, new_base)[1] / inv_freq(head_dim, base)[1]).item()


def helix_values(spacing: dict, rope: str, pi: str, abf: str, theta1: float) -> dict:
    """R4's numbers (Llama 2 Long Fig. 8) from :func:`helix_spacing` per variant name: PI's and
    ABF's spacing of consecutive positions over RoPE's, and :func:`theta1_change`."""
    return {
        "PI crowds positions": spacing[pi] / spacing[rope],
        "ABF keeps spacing": spacing[abf] / spacing[rope],
        "θ1 changes 6%": theta1,
    }


def formula_results(claim: str, values: dict) -> dict:
    """``{part: (holds, ours)}`` for the arithmetic parts of ``claim`` (:class:`lcx.claims.Formula`)
    from ``values`` (part name -> the computed number), ready for
    :meth:`lcx.scorecard.Scorecard.judge`. The bounds are the registry's, never the caller's."""
    from .claims import CLAIMS  # the registry imports nothing of lcx.rope

    parts = {p.name: p for p in CLAIMS[claim].parts}
    if set(values) != set(parts):
        raise ValueError(f"{claim}: values for {sorted(parts)}, got {sorted(values)}")
    shown = {n: f"{v / 1e6:.4g}M" if abs(v) >= 1e6 else f"{v:.4g}" for n, v in values.items()}
    return {name: (parts[name].holds(v), shown[name]) for name, v in values.items()}
