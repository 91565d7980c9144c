"""Plots (matplotlib, Agg): convergence, per-seed dots, training loss."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

META = {"Software": None}  # no version stamp: the same data gives the same bytes


def _save(fig, ax, title: str, path: Path, legend: bool = True) -> Path:
    ax.set_title(title)
    if legend:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80, metadata=META)
    plt.close(fig)
    return path


def convergence(hist: pd.DataFrame, key: str, rows: list[str], title: str, path: Path) -> Path | None:
    """Eval metric vs iteration per row: mean line, min-max band over seeds."""
    sub = hist[hist["key"] == key]
    if sub.empty:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for row in rows:
        r = sub[sub["row"] == row]
        if r.empty:
            continue
        g = r.groupby("step")["value"]
        steps = g.mean().index
        ax.plot(steps, 100 * g.mean().values, marker="o", label=row)
        ax.fill_between(steps, 100 * g.min().values, 100 * g.max().values, alpha=0.2)
    ax.set_xlabel("iteration")
    ax.set_ylabel(key + " (%)")
    return _save(fig, ax, title, path)


def seed_dots(df: pd.DataFrame, key: str, rows: list[str], title: str, path: Path) -> Path | None:
    if key not in df:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for i, row in enumerate(rows):
        vals = df[(df["row"] == row) & (df["status"] == "finished")][key].dropna()
        ax.scatter([i] * len(vals), 100 * vals, s=20)
        if len(vals):
            ax.hlines(100 * vals.mean(), i - 0.25, i + 0.25)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(rows, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel(key + " (%)")
    return _save(fig, ax, title, path, legend=False)


def loss_curves(hist: pd.DataFrame, rows: list[str], title: str, path: Path) -> Path | None:
    sub = hist[hist["key"] == "train.total_loss"]
    if sub.empty:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for row in rows:
        r = sub[sub["row"] == row]
        if not r.empty:
            g = r.groupby("step")["value"].mean()
            ax.plot(g.index, g.values, label=row)
    ax.set_xlabel("iteration")
    ax.set_ylabel("total loss (mean over seeds)")
    ax.set_yscale("log")
    return _save(fig, ax, title, path)


def has_data(fn, args) -> bool:
    """Whether fn(*args) draws anything (the report links only plots that exist)."""
    if fn is seed_dots:
        df, key = args[0], args[1]
        return key in df and bool(df[df["status"] == "finished"][key].notna().any())
    hist = args[0]
    key = args[1] if fn is convergence else "train.total_loss"
    return bool((hist["key"] == key).any())
