"""How strong a claim's test is: its power, its minimum detectable effect and the seeds it needs.

Every quantity is in units of the seed standard deviation σ (the caller scales by the pooled
std of the claim's metric), for the tests `claims.py` makes:

- paired t on n per-seed differences (df n - 1),
- Welch's t on n_a and n_b seeds (Welch-Satterthwaite df, itself random), equal σ on both sides,

and the three decision rules: one-sided (superiority, or non-inferiority with a margin),
two-sided, and equivalence by two one-sided tests (TOST). The exact power is an expectation over
the sample variances: given them, the estimated difference is normal and independent of them, so
the rejection probability is a normal tail, averaged over the chi-square law of the variances by
equal-probability quadrature (error below 1e-3). The paired one- and two-sided cases agree with
statsmodels' noncentral t (`tests/report/test_power.py`); Welch's random df and TOST have no
closed form there.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy import optimize, stats

POWER = 0.8
_NODES = 240  # quadrature nodes per variance (Welch: squared)
MAX_SEEDS = 1000


@lru_cache(maxsize=256)
def _chi_nodes(df: int, k: int = _NODES) -> np.ndarray:
    """k equal-probability nodes of chi2(df) / df (mean 1)."""
    return stats.chi2.ppf((np.arange(k) + 0.5) / k, df) / df


@lru_cache(maxsize=4096)
def _null_grid(n_a: int, n_b: int, paired: bool) -> tuple[np.ndarray, np.ndarray, float]:
    """(estimated se / σ, df) at every quadrature node, and the true se / σ."""
    if paired:
        v = _chi_nodes(n_a - 1)
        return np.sqrt(v / n_a), np.full(v.shape, float(n_a - 1)), math.sqrt(1 / n_a)
    # the variances concentrate as n grows: fewer nodes keep the error below 1e-3 beyond 20 seeds
    k = _NODES if max(n_a, n_b) <= 20 else _NODES // 4
    va = _chi_nodes(n_a - 1, k)[:, None] / n_a
    vb = _chi_nodes(n_b - 1, k)[None, :] / n_b
    se2 = va + vb
    df = se2 ** 2 / (va ** 2 / (n_a - 1) + vb ** 2 / (n_b - 1))
    return np.sqrt(se2).ravel(), df.ravel(), math.sqrt(1 / n_a + 1 / n_b)


@lru_cache(maxsize=4096)
def _critical(n_a: int, n_b: int, paired: bool, q: float) -> np.ndarray:
    """t quantile q at every node's df."""
    return stats.t.ppf(q, _null_grid(n_a, n_b, paired)[1])


def power(effect: float, n_a: int, n_b: int, *, paired: bool, kind: str, alpha: float,
          margin: float = 0.0) -> float:
    """P(the claim holds) when the true difference is `effect` (in σ, signed in the claim's
    direction). kind: `one-sided` (holds when Δ > -margin is shown), `two-sided` (Δ ≠ 0) or
    `equivalence` (-margin < Δ < margin). n_b is ignored when paired (n_a pairs)."""
    if n_a < 2 or (not paired and n_b < 2):
        return math.nan
    n_a, n_b = int(n_a), int(n_a if paired else n_b)
    se_hat, _, se = _null_grid(n_a, n_b, paired)
    if kind == "one-sided":
        c = _critical(n_a, n_b, paired, 1 - alpha)
        p = stats.norm.sf((c * se_hat - margin - effect) / se)
    elif kind == "two-sided":
        c = _critical(n_a, n_b, paired, 1 - alpha / 2)
        p = stats.norm.sf((c * se_hat - effect) / se) + stats.norm.cdf((-c * se_hat - effect) / se)
    elif kind == "equivalence":
        c = _critical(n_a, n_b, paired, 1 - alpha)
        p = np.clip(stats.norm.cdf((margin - c * se_hat - effect) / se)
                    - stats.norm.cdf((-margin + c * se_hat - effect) / se), 0.0, None)
    else:
        raise ValueError(kind)
    return float(np.mean(p))


def min_detectable(n_a: int, n_b: int, *, paired: bool, kind: str, alpha: float, margin: float = 0.0,
                   target: float = POWER) -> float:
    """The smallest true effect (σ, in the claim's direction) that the claim's test shows with
    probability `target`: for one-sided claims the difference itself (a non-inferiority claim's
    starts at -margin), for two-sided ones |Δ|. Equivalence has none (its power peaks at Δ = 0):
    nan, as below 2 seeds."""
    if kind == "equivalence" or n_a < 2 or (not paired and n_b < 2):
        return math.nan
    low = -margin if kind == "one-sided" else 0.0

    def gap(e: float) -> float:
        return power(e, n_a, n_b, paired=paired, kind=kind, alpha=alpha, margin=margin) - target

    high = low + 1.0
    while gap(high) < 0:
        high = low + 2 * (high - low)
        if high - low > 1e4:
            return math.inf
    return float(optimize.brentq(gap, low, high, xtol=1e-4))


def seeds_needed(effect: float, *, paired: bool, kind: str, alpha: float, margin: float = 0.0,
                 target: float = POWER, ratio_b: float = 1.0) -> int | None:
    """The fewest seeds per side (pairs when paired) at which the claim's test has power
    `target` against a true effect `effect` (σ, in the claim's direction); None when no number
    of seeds reaches it (the effect is on the wrong side of the claim's null) or above
    MAX_SEEDS."""
    if not math.isfinite(effect):
        return None

    def ok(n: int) -> bool:
        nb = max(2, round(n * ratio_b))
        return power(effect, n, nb, paired=paired, kind=kind, alpha=alpha, margin=margin) >= target

    if not ok(MAX_SEEDS):
        return None
    lo, hi = 2, MAX_SEEDS  # power grows with n on the claim's side of the null
    if ok(lo):
        return lo
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi
