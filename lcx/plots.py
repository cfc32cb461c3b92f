"""Small plotting helpers shared by chapters (matplotlib only)."""

from __future__ import annotations

import numpy as np


def log_binned(x, y, n_bins: int = 200):
    """Min, mean and max of ``y`` in log-spaced bins of ``x`` (> 0): the envelope of a curve too
    dense or too oscillating to draw point by point (e.g. RoPE's score at every distance)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = x > 0
    x, y = x[keep], y[keep]
    edges = np.geomspace(x.min(), x.max() * (1 + 1e-9), n_bins + 1)
    idx = np.digitize(x, edges) - 1
    centers, lo, mean, hi = [], [], [], []
    for b in range(n_bins):
        sel = idx == b
        if sel.any():
            centers.append(np.sqrt(edges[b] * edges[b + 1]))
            lo.append(y[sel].min())
            mean.append(y[sel].mean())
            hi.append(y[sel].max())
    return np.array(centers), np.array(lo), np.array(mean), np.array(hi)


def plot_envelope(ax, x, y, label: str, color=None, n_bins: int = 200):
    """Draw ``y`` vs ``x`` on a log x axis as a min-max band with its bin mean."""
    centers, lo, mean, hi = log_binned(x, y, n_bins)
    (line,) = ax.plot(centers, mean, label=label, color=color, lw=1.2)
    ax.fill_between(centers, lo, hi, color=line.get_color(), alpha=0.2, lw=0)
    ax.set_xscale("log")
    return line
