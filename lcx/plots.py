"""The chapters' figures (matplotlib): each function draws one kind of figure from numbers the
chapter computed and returns it; :func:`publish` saves it beside the chapter's metrics and hands
it to the text (``{glue:figure}``)."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np

from .results import save_figure


def publish(fig, out, name: str, label: str) -> None:
    """Save ``fig`` as ``out/name.png``, glue it under ``label`` for the chapter's text, close it."""
    from myst_nb import glue

    save_figure(fig, out, name)
    glue(label, fig, display=False)
    plt.close(fig)


def marks(ax, positions: dict, y=None, axis: str = "x") -> None:
    """Dotted reference lines at ``positions`` (label -> value), labelled at height ``y`` if given."""
    for text, v in positions.items():
        if axis == "x":
            ax.axvline(v, color="k", ls=":", lw=0.8)
            if y is not None:
                ax.text(v * 1.05, y, text, fontsize=8)
        else:
            ax.axhline(v, color="k", ls=":", lw=0.8)
            ax.text(1, v * 1.15, text, fontsize=8)


def wavelengths(freqs: dict, lines: dict, title: str):
    """RoPE's wavelength ``2 pi / theta_j`` per pair for each method (name -> inverse
    frequencies), with reference lengths ``lines`` (label -> tokens)."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for name, th in freqs.items():
        ax.plot(np.arange(len(th)), 2 * math.pi / th.numpy(), label=name, lw=1.4)
    marks(ax, lines, axis="y")
    ax.set(yscale="log", xlabel="pair j", ylabel="wavelength 2π/θ_j (tokens)", title=title)
    ax.legend(fontsize=8, ncol=2)
    return fig


def attention_decay(distances, scores: dict, lines: dict, title: str):
    """Llama 2 Long Fig. 4: each variant's attention-score envelope vs relative distance."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, s in scores.items():
        plot_envelope(ax, distances.numpy(), s.numpy(), name)
    marks(ax, lines, y=0.92)
    ax.set(
        xlabel="relative distance |m − n| (tokens)",
        ylabel="score / score at 0",
        title=title,
        ylim=(-0.35, 1.02),
    )
    ax.legend(fontsize=8)
    return fig


def granularity(settings: dict, dims, head_dim: int, base: float = 1e4):
    """Llama 2 Long App. B: the exact granularity against the head dimension for each setting
    (name -> (method, factor)), with its true limit (dotted) and the paper's (dashed)."""
    from . import rope

    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for name, (method, factor) in settings.items():
        exact = [rope.granularity(int(d), base, method, factor) for d in dims]
        (line,) = ax.plot(dims, exact, marker=".", label=f"{name}: exact at d")
        for ls, limit in (
            ("--", rope.granularity_limit(base, method, factor)),
            (":", rope.granularity_limit(base, method, factor, exact=True)),
        ):
            ax.axhline(limit, color=line.get_color(), ls=ls, lw=1)
    marks(ax, {"": head_dim})
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="head dimension d",
        ylabel="sine similarity of consecutive positions",
        title=f"Granularity, base {base:,.0f}: exact (dots), true limit (dotted), "
        "paper's limit (dashed)",
    )
    ax.legend(fontsize=8)
    return fig


def helices(helices: dict, pair: int, title: str):
    """Llama 2 Long Fig. 8: RoPE as a helix (pairs 0 and ``pair``) for each method (name ->
    inverse frequencies), positions 0-10 as dots."""
    from . import rope

    t_dots, t_line = np.arange(11), np.linspace(0, 10, 600)
    fig = plt.figure(figsize=(10, 3.6))
    for i, (name, th) in enumerate(helices.items()):
        ax = fig.add_subplot(1, len(helices), i + 1, projection="3d")
        ax.plot(*rope.helix(th, t_line, pair).T, color="k", lw=0.8)
        ax.scatter(*rope.helix(th, t_dots, pair).T, color="tab:red", s=14)
        ax.set_title(f"{name}\nz = sin({th[pair].item():.3f} t)", fontsize=9)
        ax.set_zlim(-1, 1)
        ax.tick_params(labelsize=6)
    fig.suptitle(title, fontsize=10)
    return fig


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


def suite_heatmap(ax, suite, task: str, window: int | None = None, vmin=0.0, vmax=1.0):
    """Length x depth heatmap of ``task``'s headline score from an ``evaluate_suite`` table (the
    Llama-3 80K Fig. 1 picture); lengths are shown in units of ``window`` when given."""
    t = suite[(suite.task == task) & suite.headline]
    grid = t.pivot_table(index="depth", columns="length", values="score").sort_index(
        ascending=False
    )
    im = ax.imshow(grid.values, vmin=vmin, vmax=vmax, cmap="RdYlGn", aspect="auto")
    cols = [f"{c / window:g}W" if window else str(c) for c in grid.columns]
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(grid.index)), [f"{d:.0%}" for d in grid.index])
    for (i, j), v in np.ndenumerate(grid.values):
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7)
    ax.set(xlabel="context length", ylabel="depth", title=f"{task} ({t.metric.iloc[0]})")
    ax.grid(False)
    return im


def suite_lines(ax, suites: dict, task: str, window: int | None = None):
    """Headline score vs length (averaged over depths, with the cells' mean 95% interval) for
    each model's ``evaluate_suite`` table in ``suites`` (name -> table)."""
    for name, suite in suites.items():
        t = suite[(suite.task == task) & suite.headline].groupby("length")
        m, lo, hi = t.score.mean(), t.low.mean(), t.high.mean()
        x = m.index / window if window else m.index
        (line,) = ax.plot(x, m.values, marker="o", ms=3, label=name)
        ax.fill_between(x, lo.values, hi.values, color=line.get_color(), alpha=0.15, lw=0)
    metric = next(iter(suites.values())).query("task == @task and headline").metric.iloc[0]
    ax.set(xscale="log", xlabel="context length" + (" / W" if window else ""), title=task)
    ax.set_ylabel(metric)
    ax.set_ylim(-0.02, 1.02)


def envelopes(x, curves: dict, xlabel: str, title: str, n_bins: int = 120):
    """Several :func:`plot_envelope` curves (label -> y) on one log axis, a dotted line at 1."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for label, y in curves.items():
        plot_envelope(ax, x, y, label, n_bins=n_bins)
    marks(ax, {"": 1})
    ax.set(xlabel=xlabel, ylabel="score / score at 0", title=title)
    ax.legend(fontsize=8)
    return fig


def training_loss(runs: dict, title: str, ylabel: str = "training loss (nats/token)"):
    """Training loss against tokens seen. ``runs``: label -> [(stage, run folder, recipe), ...],
    stages trained one after another, each drawn from where the previous one ended (one colour
    per label; solid, dashed, dotted per stage)."""
    import pandas as pd

    from .train import loss_log

    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    for i, (label, stages) in enumerate(runs.items()):
        offset = 0
        for j, (stage, run, recipe) in enumerate(stages):
            log = pd.DataFrame(loss_log(run))
            x = (offset + log["step"] * recipe.batch_tokens) / 1e6
            style = dict(color=f"C{i}", ls=("-", "--", ":")[j % 3])
            ax.plot(x, log["loss"], label=f"{label} {stage}".strip(), **style)
            offset += recipe.tokens
    ax.set(xlabel="training tokens (M)", ylabel=ylabel, title=title)
    ax.legend(fontsize=8)
    return fig


def loss_by_position(curves: dict, window: int, title: str, lines=(1,), dashed=()):
    """Mean NLL per position bucket (``evaluate.loss_by_position`` tables, name -> table) against
    position / ``window``, with 95% bars where a table has ``se``; names in ``dashed`` dashed."""
    fig, ax = plt.subplots(figsize=(8, 4))
    for name, t in curves.items():
        x = (t.start + t.end) / 2 / window
        ls = "--" if name in dashed else "-"
        if "se" in t:
            ax.errorbar(x, t.nll, yerr=1.96 * t.se, label=name, lw=1.2, capsize=0, ls=ls)
        else:
            ax.plot(x, t.nll, label=name, ls=ls)
    marks(ax, {str(v): v for v in lines})
    ax.set(xlabel="position / W", ylabel="NLL (nats)", title=title)
    ax.legend(fontsize=7, ncol=2)
    return fig


def passkey(grids: dict, window: int):
    """Passkey accuracy (per digit, exact, copy inside the needle) against length / ``window``,
    one panel per model (name -> ``evaluate.passkey`` grid)."""
    fig, axes = plt.subplots(
        1, len(grids), figsize=(5.5 * len(grids), 3.8), sharey=True, squeeze=False
    )
    for ax, (name, grid) in zip(axes[0], grids.items(), strict=True):
        by_len = grid.groupby("length")[["exact", "per_digit", "near_copy"]].mean()
        x = by_len.index / window
        ax.plot(x, by_len.per_digit, marker="o", label="per digit")
        ax.plot(x, by_len.exact, marker="s", label="exact match")
        ax.plot(x, by_len.near_copy, ls="--", marker=".", label="copy inside the needle")
        ax.axhline(0.1, color="grey", ls="--", lw=0.8, label="chance (per digit)")
        marks(ax, {"": 1})
        ax.set(xscale="log", xlabel="context length / W", title=name)
    axes[0][0].set_ylabel("passkey accuracy")
    axes[0][0].legend(fontsize=8)
    return fig


def suite_heatmaps(suites: dict, task: str, window: int, boundary: int | None = None):
    """:func:`suite_heatmap` of ``task`` for each model (title -> suite table), side by side,
    with a line after length ``boundary`` (e.g. the training length) if given."""
    fig, axes = plt.subplots(1, len(suites), figsize=(4 * len(suites), 3.2), squeeze=False)
    for ax, (title, suite) in zip(axes[0], suites.items(), strict=True):
        suite_heatmap(ax, suite, task, window=window)
        if boundary is not None:
            lengths = sorted(set(suite[suite.task == task].length))
            ax.axvline(lengths.index(boundary) + 0.5, color="b", lw=1.5)
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def task_heatmaps(suite, tasks: list, window: int):
    """:func:`suite_heatmap` of each task in ``tasks`` for one model's suite table."""
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.2 * len(tasks), 3), squeeze=False)
    for ax, t in zip(axes[0], tasks, strict=True):
        suite_heatmap(ax, suite, t, window=window)
    fig.tight_layout()
    return fig


def suite_grid(suites: dict, tasks: list, window: int):
    """:func:`suite_lines` for each task in ``tasks``, two rows of panels; ``suites``: name ->
    suite table."""
    cols = (len(tasks) + 1) // 2
    fig, axes = plt.subplots(2, cols, figsize=(2.9 * cols, 5.6), sharey=True, squeeze=False)
    for ax, t in zip(axes.flat, tasks, strict=False):
        suite_lines(ax, suites, t, window=window)
        marks(ax, {"": 1})
        if len(suites) == 1 and ax.get_legend():
            ax.get_legend().remove()
    for ax in list(axes.flat)[len(tasks) :]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def power_law_fits(fits: dict, contexts):
    """Llama 2 Long Fig. 1: mean NLL of the first c tokens with 95% bars and the fitted
    ``(alpha / c) ** beta + gamma``; ``fits``: label -> (loss, sigma, fit of
    ``evaluate.fit_power_law``)."""
    from .evaluate import power_law

    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for i, (label, (loss, sigma, f)) in enumerate(fits.items()):
        ax.errorbar(contexts, loss, yerr=1.96 * sigma, fmt="o", ms=3, color=f"C{i}", label=label)
        ax.plot(
            contexts,
            power_law(contexts, f["alpha"], f["beta"], f["gamma"]),
            color=f"C{i}",
            label=f"fit: beta {f['beta']:.2f}, R² {f['r2']:.3f}",
        )
    ax.set(
        xscale="log",
        xlabel="context length c",
        ylabel="mean NLL of the first c tokens",
        title="Loss vs context",
    )
    ax.legend(fontsize=8)
    return fig


def lines(
    panels: dict,
    ylabel: str = "",
    xlabel="context length / W",
    xscale="log",
    mark=1,
    dashed=(),
    legend: str = "last",
):
    """One panel per entry (title -> table: x in the index, one line per column, e.g. a score
    by length / W for each model). ``xlabel`` and ``xscale`` are one value for every panel or a
    tuple with one per panel; dotted lines at x = ``mark`` (a value or a tuple, e.g. the native
    window; None for none); columns in ``dashed`` dashed; the legend in the ``"last"`` or
    ``"first"`` panel."""
    n = len(panels)
    at = () if mark is None else mark if isinstance(mark, tuple) else (mark,)
    fig, axes = plt.subplots(1, n, figsize=(7 if n == 1 else 5 * n, 3.7), squeeze=False)
    xlabels = xlabel if isinstance(xlabel, tuple) else (xlabel,) * n
    xscales = xscale if isinstance(xscale, tuple) else (xscale,) * n
    for ax, (title, table), xl, xs in zip(axes[0], panels.items(), xlabels, xscales, strict=True):
        for col in table:
            ls = "--" if col in dashed else "-"
            ax.plot(table.index, table[col], marker="o", ms=4, ls=ls, label=col)
        marks(ax, {str(v): v for v in at})
        ax.set(xscale=xs, xlabel=xl, title=title)
    axes[0][0].set_ylabel(ylabel)
    axes[0][0 if legend == "first" else -1].legend(fontsize=7)
    return fig


def long_share(results, summary, shares: dict):
    """ProLong Figs. 1 and 3: long perplexity, the suite after SFT and short perplexity against
    the long-data share (``shares``: ablation name -> share); each seed in grey, the mean in
    colour, the suite also with HELMET's metric."""
    x = list(shares.values())
    panels = {
        "long ppl": "long perplexity (before SFT)",
        "avg": "suite after SFT: answer accuracy",
        "short ppl": "short perplexity (before SFT)",
    }
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for ax, (col, title) in zip(axes, panels.items(), strict=True):
        for _, per_seed in results.groupby("seed"):
            per_seed = per_seed.set_index("model")[col]
            ax.plot(x, [per_seed[k] for k in shares], "o", color="0.6", ms=4)
        mean = [summary.loc[k, col] for k in shares]
        ax.plot(x, mean, "o-", color="C0", label="mean over seeds")
        if col == "avg":
            helmet = [summary.loc[k, "HELMET avg"] for k in shares]
            ax.plot(x, helmet, "s--", color="C1", label="HELMET metric")
            ax.legend(fontsize=8)
        ax.set(xlabel="long share", title=title)
    axes[0].legend(fontsize=8)
    return fig


def final_suite(table, lengths, window: int):
    """ProLong Table 10 as a picture: each contender's macro-average by length after SFT
    (answer accuracy solid, HELMET's metric dashed); ``table`` from ``prolong.final_table``."""
    fig, ax = plt.subplots(figsize=(8, 3.6))
    for label in dict.fromkeys(table.index.get_level_values(0)):
        y, h = table.loc[label, "avg"], table.loc[label, "HELMET avg"]
        x = [int(n[:-1]) for n in y.index]
        (line,) = ax.plot(x, y.values, "o-", label=label)
        ax.plot(x, h.values, "s--", color=line.get_color(), alpha=0.6)
    ax.set(
        xscale="log",
        xlabel="context length",
        ylabel="macro-average",
        title="Suite after short SFT: answer accuracy (solid), HELMET metric (dashed)",
    )
    ax.set_xticks([n // window for n in lengths], [f"{n // window}W" for n in lengths])
    ax.minorticks_off()
    ax.legend(fontsize=7)
    return fig
