"""Statistics across seeds (scipy.stats): mean, sample std, 95% t-interval, Welch + Holm."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

#: +1: higher is better; -1: lower is better
DIRECTION = {"mmr": -1}


def direction(metric: str) -> int:
    return DIRECTION.get(metric.rsplit(".", 1)[-1], 1)


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    std: float  # sample std (ddof 1); nan when n < 2
    ci_low: float
    ci_high: float
    values: tuple[float, ...]


def summarize(values) -> Summary:
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=float)
    n = len(v)
    if n == 0:
        return Summary(0, math.nan, math.nan, math.nan, math.nan, ())
    mean = float(v.mean())
    if n == 1:
        return Summary(1, mean, math.nan, math.nan, math.nan, tuple(v.tolist()))
    std = float(v.std(ddof=1))
    half = float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)
    return Summary(n, mean, std, mean - half, mean + half, tuple(v.tolist()))


def prediction_interval(values, m: int, level: float = 0.95) -> tuple[float, float]:
    """The interval that the mean of m new seeds falls in with probability `level`, given these
    n seeds: mean ± t(n-1) · s · sqrt(1/n + 1/m) (normal seeds, same distribution). A confidence
    interval for the mean (sqrt(1/n) alone) ignores the new seeds' own noise and would reject a
    faithful reproduction far more often than 5 % of the time. (nan, nan) below 2 values or m < 1."""
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=float)
    n = len(v)
    if n < 2 or m < 1:
        return math.nan, math.nan
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * float(v.std(ddof=1)) * math.sqrt(1 / n + 1 / m)
    return float(v.mean()) - half, float(v.mean()) + half


def welch(a, b) -> float:
    """Two-sided p-value of Welch's t-test (nan when either side has < 2 values or no spread)."""
    a = [x for x in a if not math.isnan(x)]
    b = [x for x in b if not math.isnan(x)]
    if len(a) < 2 or len(b) < 2:
        return math.nan
    if np.std(a) == 0 and np.std(b) == 0:
        return 0.0 if np.mean(a) != np.mean(b) else 1.0
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def holm(pvalues: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone); nan stays nan."""
    idx = [i for i, p in enumerate(pvalues) if not math.isnan(p)]
    m = len(idx)
    out = [math.nan] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def pooled_std(groups: list[list[float]]) -> float:
    """sqrt(sum((n_i - 1) s_i^2) / sum(n_i - 1)) over groups with n_i >= 2."""
    num = den = 0.0
    for g in groups:
        g = [x for x in g if not math.isnan(x)]
        if len(g) >= 2:
            num += (len(g) - 1) * float(np.var(g, ddof=1))
            den += len(g) - 1
    return math.sqrt(num / den) if den else math.nan


@dataclass(frozen=True)
class Comparison:
    """Δ = mean(a) - mean(b) with its 95% t-interval and a one-sided p-value for the claim."""

    test: str  # "paired t" | "Welch t"
    n_a: int
    n_b: int
    delta: float
    ci_low: float
    ci_high: float
    p: float  # one-sided, H1: delta > -margin (sign=+1) or delta < margin (sign=-1); nan if untestable
    se: float = math.nan  # standard error of delta
    df: float = math.nan  # degrees of freedom of the t reference (Welch-Satterthwaite unpaired)


def compare(a: list[float], b: list[float], *, paired: bool, sign: int = 1, margin: float = 0.0) -> Comparison:
    """Compare a with b for the claim `sign * (a - b) > -margin`.

    paired: a[i] and b[i] come from the same run (e.g. NMS and NMS-free detections of one
    seed); the t-test and interval are on the differences. Otherwise Welch's t-test with the
    Welch-Satterthwaite degrees of freedom. margin > 0 makes it a non-inferiority test
    ("within margin points, or better").
    """
    if paired:
        pairs = [(x, y) for x, y in zip(a, b, strict=True) if not (math.isnan(x) or math.isnan(y))]
        d = np.asarray([x - y for x, y in pairs], dtype=float)
        n = len(d)
        if n == 0:
            return Comparison("paired t", 0, 0, math.nan, math.nan, math.nan, math.nan)
        delta = float(d.mean())
        if n < 2:
            return Comparison("paired t", n, n, delta, math.nan, math.nan, math.nan)
        se = float(d.std(ddof=1)) / math.sqrt(n)
        df = n - 1
        na = nb = n
    else:
        a = np.asarray([x for x in a if not math.isnan(x)], dtype=float)
        b = np.asarray([x for x in b if not math.isnan(x)], dtype=float)
        na, nb = len(a), len(b)
        if na == 0 or nb == 0:
            return Comparison("Welch t", na, nb, math.nan, math.nan, math.nan, math.nan)
        delta = float(a.mean() - b.mean())
        if na < 2 or nb < 2:
            return Comparison("Welch t", na, nb, delta, math.nan, math.nan, math.nan)
        va, vb = float(a.var(ddof=1)) / na, float(b.var(ddof=1)) / nb
        se = math.sqrt(va + vb)
        df = (va + vb) ** 2 / ((va ** 2 / (na - 1)) + (vb ** 2 / (nb - 1))) if se > 0 else na + nb - 2
    test = "paired t" if paired else "Welch t"
    if se == 0:
        holds = sign * delta > -margin
        return Comparison(test, na, nb, delta, delta, delta, 0.0 if holds else 1.0, 0.0, df)
    half = float(stats.t.ppf(0.975, df)) * se
    t = (sign * delta + margin) / se
    return Comparison(test, na, nb, delta, delta - half, delta + half, float(stats.t.sf(t, df)), se, df)
