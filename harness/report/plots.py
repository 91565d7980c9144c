"""Plots (matplotlib, Agg) for the report: convergence, per-seed values with intervals, training
loss per seed, NMS against no NMS per row (paired by seed), and Δ against the reference row.

Every figure is saved at 150 dpi with 10-point text; metric values are fractions in MLflow and
percent here; intervals are clipped to the metric's range (0-100 %). Each function returns the
path it wrote, or None when there is nothing to draw, and `CAPTIONS` says what its lines,
dots and bands are (the report prints it under the figure).
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from harness.report.stats import summarize  # noqa: E402
from harness.track.names import eval_key  # noqa: E402

META = {"Software": None}  # no version stamp: the same data gives the same bytes
DPI = 150
STYLE = {"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 9,
         "xtick.labelsize": 9, "ytick.labelsize": 9, "axes.grid": True, "grid.alpha": 0.3}
COLORS = plt.get_cmap("tab10").colors
SEED_MARKERS = "osD^vP*X"

CAPTIONS = {
    "convergence": "{metric} on the validation set at each evaluation, one colour per row: the thick line with "
                   "dots is the mean over seeds, the thin lines are the individual seeds.",
    "seeds": "{metric} of every finished run: one dot per seed, the same colour for a seed in every row and "
             "panel, the black tick is the mean over seeds and the bar its 95% t-interval (clipped to 0-100 %; "
             "none with fewer than 2 seeds). Each panel has its own scale.",
    "loss": "Training loss (total of the loss terms, mean over each logging window) on a log scale: one thin "
            "line per seed, one colour per row, so a seed that diverges stands apart.",
    "nms": "{metric} of the same runs with NMS and without it: one panel per row, one line per seed (the "
           "same detections, post-processed twice). A flat line: the row needs no NMS.",
    "claims": "The table's declared claims: Δ = row - vs in points (dot) with the interval its verdict is read "
              "from (bar: two-sided, at the claim's Holm step, its confidence beside it). Dashed: the bound the "
              "claim must clear (0, or the margin); grey band: an equivalence claim's ±margin. Filled dot: the "
              "claim holds; hollow: contradicted, inconclusive or untested.",
}


def metric_label(header: str, mode: str | None) -> str:
    """A readable metric name: 'AP50 with NMS' for a column of the NMS postprocess (`mode`), the
    table header for a column of each row's headline mode."""
    name = header.replace("↑", "").replace("↓", "").split()[0]
    if mode == "nms_free":
        return f"{name} without NMS"
    if mode == "nms":
        return f"{name} with NMS"
    return header.replace("↑", "").replace("↓", "").strip()


def interval(values: list[float]) -> tuple[float, float]:
    """The 95% t-interval of the mean of fractions, in percent, clipped to 0-100 (nan, nan with
    fewer than 2 values): a t-interval knows nothing of a metric's range."""
    s = summarize(values)
    if math.isnan(s.ci_low):
        return math.nan, math.nan
    return max(0.0, 100 * s.ci_low), min(100.0, 100 * s.ci_high)


def _figure(width: float, height: float, ncols: int = 1, sharey: bool = False):
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, ncols, figsize=(width, height), sharey=sharey, squeeze=False)
    return fig, list(axes[0])


def _save(fig, path: Path, title: str | None = None) -> Path:
    with plt.rc_context(STYLE):
        if title:
            fig.suptitle("\n".join(textwrap.wrap(title, 70)), fontsize=STYLE["axes.titlesize"])
        fig.tight_layout()
        fig.savefig(path, dpi=DPI, metadata=META)
    plt.close(fig)
    return path


def _per_seed(r: pd.DataFrame, scale: float = 1.0) -> list[np.ndarray]:
    """One (step, value) array per seed of a row's history, split with numpy (not a groupby)."""
    r = r.sort_values(["seed", "step"], kind="stable")
    xy = np.column_stack([r["step"].to_numpy(dtype=float), scale * r["value"].to_numpy(dtype=float)])
    seeds = r["seed"].to_numpy()
    return np.split(xy, np.flatnonzero(seeds[1:] != seeds[:-1]) + 1) if len(xy) else []


def _lines(ax, curves, **style) -> None:
    """Many thin lines as one artist (a LineCollection): a plot per seed took seconds at 1,000 runs."""
    from matplotlib.collections import LineCollection

    segs = [c if isinstance(c, np.ndarray) else np.column_stack([np.asarray(c[0], dtype=float),
                                                                  np.asarray(c[1], dtype=float)]) for c in curves]
    if segs:
        ax.add_collection(LineCollection(segs, **style))
        ax.autoscale_view()


def _style(ax) -> None:
    ax.grid(True, alpha=0.3)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _finished(df: pd.DataFrame, row: str, key: str) -> pd.DataFrame:
    if key not in df:
        return df.iloc[0:0]
    sub = df[(df["row"] == row) & (df["status"] == "finished")]
    return sub[sub[key].notna()]


def convergence(hist: pd.DataFrame, metrics: list[tuple[str, str]], rows: list[str], path: Path) -> Path | None:
    """Eval metrics [(label, key)] vs iteration: one panel per metric, per row the mean over
    seeds (thick) and each seed (thin)."""
    metrics = [(label, key) for label, key in metrics if not hist[hist["key"] == key].empty]
    if not metrics:
        return None
    fig, axes = _figure(5.2 * len(metrics), 4.2, len(metrics))  # each metric its own scale
    for ax, (label, key) in zip(axes, metrics, strict=True):
        sub = hist[hist["key"] == key]
        for i, row in enumerate(rows):
            r = sub[sub["row"] == row]
            if r.empty:
                continue
            color = COLORS[i % len(COLORS)]
            _lines(ax, _per_seed(r, 100.0), colors=[color], alpha=0.35, linewidths=0.9)
            mean = r.groupby("step")["value"].mean()
            ax.plot(mean.index, 100 * mean.values, color=color, marker="o", linewidth=2.2, label=row)
        ax.set_title(label)
        ax.set_xlabel("iteration")
        ax.set_ylabel(f"{label} (%)")
        ax.yaxis.set_tick_params(labelleft=True)
        _style(ax)
    axes[0].legend(loc="lower right", frameon=False)
    return _save(fig, path, "Validation metrics during training")


def seed_dots(df: pd.DataFrame, metrics: list[tuple[str, str]], rows: list[str], path: Path) -> Path | None:
    """Per-seed values [(label, key)] per row, with the mean and its 95% interval (clipped)."""
    metrics = [(label, key) for label, key in metrics if key in df and df[key].notna().any()]
    if not metrics:
        return None
    fig, axes = _figure(max(4.5, 0.9 * len(rows) + 1.8) * len(metrics), 4.4, len(metrics))
    offsets = np.linspace(-0.12, 0.12, 3)
    for ax, (label, key) in zip(axes, metrics, strict=True):
        for i, row in enumerate(rows):
            sub = _finished(df, row, key)
            vals = [100 * float(v) for v in sub[key]]
            if not vals:
                continue
            seeds = [int(x) for x in sub["seed"]]
            xs = [i + offsets[k % len(offsets)] for k in range(len(vals))]
            ax.scatter(xs, vals, s=28, color=[COLORS[sd % len(COLORS)] for sd in seeds], zorder=3)
            mean, (lo, hi) = sum(vals) / len(vals), interval([v / 100 for v in vals])
            ax.hlines(mean, i - 0.28, i + 0.28, color="black", linewidth=1.6, zorder=4)
            if not math.isnan(lo):
                ax.vlines(i + 0.3, lo, hi, color="black", linewidth=1.0)
                ax.hlines([lo, hi], i + 0.26, i + 0.34, color="black", linewidth=1.0)
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels(rows, rotation=25, ha="right")
        ax.set_xlim(-0.6, len(rows) - 0.4)
        ax.set_ylabel(f"{label} (%)")
        ax.set_title(label)
        _style(ax)
    return _save(fig, path, "Final values per seed, mean and 95% interval")


def loss_curves(hist: pd.DataFrame, rows: list[str], path: Path) -> Path | None:
    """Training loss per seed (thin lines, a colour per row), log scale."""
    sub = hist[hist["key"] == "train.total_loss"]
    if sub.empty:
        return None
    fig, axes = _figure(7.0, 4.4)
    ax = axes[0]
    for i, row in enumerate(rows):
        r = sub[sub["row"] == row]
        if r.empty:
            continue
        color = COLORS[i % len(COLORS)]
        _lines(ax, _per_seed(r), colors=[color], linewidths=1.0, alpha=0.8)
        ax.plot([], [], color=color, linewidth=1.0, label=row)  # the legend's entry
    ax.set_xlabel("iteration")
    ax.set_ylabel("total training loss (log scale)")
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.legend(loc="upper right", frameon=False)
    _style(ax)
    return _save(fig, path, "Training loss, one line per seed")


def nms_pairs(df: pd.DataFrame, name: str, label: str, rows: list[str], path: Path) -> Path | None:
    """eval.nms.<name> vs eval.nms_free.<name> of the same runs: a panel per row, a line per seed."""
    a, b = eval_key("nms", name), eval_key("nms_free", name)
    if a not in df or b not in df:
        return None
    shown = [r for r in rows if len(_finished(_finished(df, r, a), r, b))]
    if not shown:
        return None
    fig, axes = _figure(max(5.0, 1.9 * len(shown) + 1.0), 4.0, len(shown))  # a row's gain stays visible
    seeds = sorted({int(s) for s in df["seed"]})
    many = len(seeds) > len(SEED_MARKERS)  # past 8 seeds: one artist per panel, no legend per seed
    for ax, row in zip(axes, shown, strict=True):
        sub = _finished(_finished(df, row, a), row, b)
        if many:
            _lines(ax, [([0, 1], [100 * x, 100 * y]) for x, y in zip(sub[a], sub[b], strict=True)],
                   colors=[COLORS[k % len(COLORS)] for k in range(len(sub))], linewidths=1.0, alpha=0.6)
        for _, r in ([] if many else sub.sort_values("seed").iterrows()):
            k = seeds.index(int(r["seed"]))
            ax.plot([0, 1], [100 * r[a], 100 * r[b]], marker=SEED_MARKERS[k % len(SEED_MARKERS)],
                    color=COLORS[k % len(COLORS)], linewidth=1.4, label=f"seed {int(r['seed'])}")
        ax.set_xticks([0, 1])
        ax.set_xticklabels(["NMS", "no NMS"])
        ax.set_xlim(-0.3, 1.3)
        ax.set_title("\n".join(textwrap.wrap(row, 14)))
        ax.yaxis.set_tick_params(labelleft=True)
        _style(ax)
    axes[0].set_ylabel(f"{label} (%)")
    handles, labels = axes[0].get_legend_handles_labels()
    if labels:
        fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False,
                   bbox_to_anchor=(0.5, -0.01))
    fig.subplots_adjust(bottom=0.2)
    with plt.rc_context(STYLE):
        fig.suptitle(f"{label}: with NMS and without, per seed", fontsize=STYLE["axes.titlesize"])
        fig.tight_layout(rect=(0, 0.07, 1, 1))
        fig.savefig(path, dpi=DPI, metadata=META)
    plt.close(fig)
    return path


def claims_forest(results, path: Path) -> Path | None:
    """One line per declared claim (`claims.Result`): Δ in points with the interval its verdict
    is read from, the claim's bound, filled when the claim holds."""
    items = [r for r in results if r.test.n_a and r.test.n_b and math.isfinite(r.test.delta)]
    if not items:
        return None
    fig, axes = _figure(7.5, 1.4 + 0.55 * len(items))
    ax = axes[0]
    ys = list(range(len(items)))[::-1]
    for y, r in zip(ys, items, strict=True):
        m = r.claim.margin
        if r.kind == "equivalence":
            ax.fill_betweenx([y - 0.3, y + 0.3], -m, m, color="grey", alpha=0.25, linewidth=0)
        elif r.kind != "two-sided":
            bound = -r.sign * m  # Δ must clear -margin in the claim's direction
            ax.vlines(bound, y - 0.35, y + 0.35, color="grey", linestyle="--", linewidth=1.2)
        else:
            ax.vlines(0.0, y - 0.35, y + 0.35, color="grey", linestyle="--", linewidth=1.2)
        if math.isfinite(r.low):
            ax.hlines(y, 100 * r.low, 100 * r.high, color="black", linewidth=1.4)
            ax.annotate(r.interval_name, (100 * r.high, y), xytext=(4, 3), textcoords="offset points", fontsize=7)
        holds = r.holds
        ax.plot([100 * r.test.delta], [y], "o", markersize=6, color="black",
                markerfacecolor="black" if holds else "white")
    ax.set_yticks(ys)
    ax.set_yticklabels([f"[{r.number}] {r.verdict.split(':')[0]}" for r in items])
    ax.set_ylim(-0.7, len(items) - 0.3)
    ax.set_xlabel("Δ = row - vs (points; mMR: lower is better)")
    _style(ax)
    return _save(fig, path, "Declared claims: Δ and the interval each verdict is read from")
