"""Group-sequential decisions for a table's claims (issue 29): add seeds until each claim is decided.

A **design** fixes in advance the cumulative seeds per row at which the claims are looked at
(`looks`, e.g. (3, 5, 8, 12); the last is the cap), the family's α, a Lan-DeMets spending
function (`obrien_fleming` or `pocock`) and a futility threshold (`FUTILITY`, or None). The
claims are those of `claims.py` (superiority, non-inferiority, two-sided, equivalence by TOST;
paired or unpaired; sign and margin as `claims.claim_decision` takes them).

**The rule: a group-sequential t-test on all the seeds so far.** At look k each side's first
n_k seeds in seed order (paired: of the seeds both sides have) give the claim's t statistic for
its null θ ≤ θ0 (θ: the true Δ in the claim's direction; θ0 = -margin), exactly as a fixed design
of n_k seeds would: paired, the one-sample t of the n_k per-seed differences, (mean - θ0) /
(sd / √n_k), df n_k - 1; unpaired, Student's pooled-variance t of the two groups of n_k seeds,
(mean_a - mean_b - θ0) / sqrt((s_a² + s_b²) / n_k), df 2 n_k - 2 (exact under equal variances,
which `power.py` assumes too; with equal group sizes the statistic is Welch's, only the df
differ; `bench/decide_calibration.py` prints its type-I error at a variance ratio of 4). It is
compared with the look's boundary c_k on the t scale.

**Why it controls the error.** Under per-seed normality and θ = θ0 the joint law of
(t_1, .., t_K) depends on the looks alone, not on σ: every t is unchanged when all the values
are rescaled. So there are boundaries c_1 .. c_K on the t scale with

    P(t_1 < c_1, .., t_{k-1} < c_{k-1}, t_k ≥ c_k) = α(t_k) - α(t_{k-1})   (t_k = n_k / n_K),

the spending function's increments, and with them P(some look crosses) = α(1), the level, at
any n, with no large-sample step. c_1 is the plain t quantile (t_1 has a t law: exact). The later
c_k are found by Monte Carlo (`boundaries`): `PATHS` null paths of (t_1 .. t_K) per (looks,
paired), simulated once with a fixed seed from the statistics' exact sufficient increments (each
stage's mean is normal, its sum of squares chi-square; `null_paths`), then c_k is the quantile
among the paths still below every earlier boundary that spends the look's increment (at most
it: the floor of increment × `PATHS` paths cross). Where that is fewer than `MIN_CROSSINGS`
paths (a tiny increment: an early O'Brien-Fleming look at a small Holm level) c_k is the
marginal t quantile of the increment instead, P(t_k ≥ c_k) = increment, which can only spend
less. Deterministic; the crossing probability the boundaries realise differs from α(1) by Monte
Carlo error alone, standard error sqrt(α (1 - α) / PATHS) at most (0.0002 at α = 0.05), and
the tests check every look's spending by an independent simulation of whole procedures.
For θ < θ0 every t_k is smaller: crossing is rarer. Stopping for the other verdicts only removes
chances to cross. (The stage-wise rule this replaced, each stage's own t-test combined by the
inverse normal method, was exact too but lost information at stages of 2-4 seeds.)

**Verdicts at a look** (claim's level ℓ; the fixed-design meanings of docs/statistics.md):

- one-sided (superiority, non-inferiority): holds once t_j(θ0) ≥ c_j(ℓ) at some look j made;
  contradicted once t_j(θ0) ≤ -c_j(ℓ): the boundary of the opposite one-sided null θ ≥ θ0
  (the null law of the t paths is symmetric);
- two-sided: holds once |t_j(0)| ≥ c_j(ℓ/2) (ℓ/2 spent on each side); never contradicted;
- equivalence: two one-sided nulls, θ ≤ -m and θ ≥ m, each a sequential test at ℓ; equivalent
  once both have crossed (at the same or different looks: an intersection-union test needs no
  correction); contradicted once either opposite boundary is crossed (Δ shown beyond ±m);
- **stopped for futility** (non-binding): at a look before the cap, a claim still open after
  the look's efficacy and contradiction checks whose futility statistic is below the design's
  threshold f stops: t_k(θ0) < f (one-sided), |t_k(0)| < f (two-sided), min of the two TOST t's
  < f (equivalence). Inconclusive, with its interval (which neither clears the bound nor lies
  past it), not contradicted; it needs no more seeds. Never at the cap;
- otherwise `continue`, and at the cap `inconclusive at cap`.

**Futility is non-binding, so it can only lower the error.** The boundaries c_k are computed as
if no claim ever stopped for futility (the spending above is of the paths with no futility
stop); a futility stop only removes the chance to cross at a later look, so on the same data a
claim that holds with it also holds without it, and P(some look crosses) ≤ α(1) whether or not
the stop is obeyed (a caller may ignore it and go on: the boundaries stay valid). The default
threshold 0.35 (`FUTILITY`) is the smallest of the thresholds measured (0, 0.25, 0.3, 0.35,
0.4, 0.45, 0.5) that makes the mean seeds fall below the fixed design of equal power at every
effect of 1σ or more for every design `bench/decide_calibration.py` offers on each of five
simulation seeds; its cost is power at the cap (docs/statistics.md has both).

**The family: Holm with the spending (Maurer & Bretz 2013).** Each of the m claims starts at
level α/m; when a claim holds, the claims still open are re-tested at α/(m - r) (r claims
holding), with boundaries recomputed for that level, over all looks made so far, until no
further claim holds at the look. The false claims hold together at most α of the time: until the
first true null is rejected only false nulls have been, so every true null's level is at most
α/|I0| (I0: the true nulls); a true null rejected at level ≤ α/|I0| at some look would also be
rejected by its own sequential test at α/|I0|, whose boundaries are higher; summing over I0
gives ≤ α, for any dependence between the claims (claims sharing a row are dependent). A claim
that stopped as contradicted or for futility keeps its verdict and is not re-tested when a later
claim raises the Holm level: not re-testing only removes rejections. A claim stopped for futility
is not rejected, so it does not count toward r (the others' levels do not rise for it).
The family advances a look only when every open claim has its seeds for it, so the verdicts are
a function of the data at the planned looks, whenever they are computed (resuming re-derives
them; no look can go uncounted).

**The interval: repeated confidence intervals** (Jennison & Turnbull 1989). At look k the RCI is
the set of θ that the look's two-sided test at the claim's level does not reject,
{θ : -c_k < t_k(θ) < c_k} = est_k ± c_k se_k (est_k, se_k: the look's Δ and its standard error,
the t statistic's numerator and denominator). At the true θ the t_k(θ) have exactly the null law
above, so all RCIs cover θ together with probability ≥ 1 - 2ℓ (two-sided claims: 1 - ℓ); the
interval given is their intersection over the looks made, at the claim's final level, which
covers at least as often and is what the verdict is read from: a claim holds when that
interval clears its bound, as in the fixed design (its Holm level is data-dependent, as the
fixed design's is). In the rare case the intersection is empty, the last look's RCI is given
(`disjoint`), which need not clear the bound; and a claim that holds because Holm raised its
level may hold on an earlier look's t (`crossed_look`, `crossed_boundary`).
The estimate printed beside it is the naive mean difference at the stopping look (biased away
from 0 when stopping early).

**Planning.** `plan` gives the open claims, the next look and the seeds each row still needs for
it, a row shared by several open claims once. `savings` simulates one claim's design (through
`decide_arrays`, the function `decide` and the calibration benchmark use) for its power and mean
seeds per side, against the seeds of the fixed design of the same power (`power.seeds_needed`).

Values and margins are in the metric's stored unit (fractions, as `claims.evaluate` passes
them); the rule is scale-free. Pure functions on plain data; no torch, no mlflow.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from scipy import stats

from harness.report import power as pw
from harness.report.claims import ALPHA, MIN_N, MIN_STD, RULE, kind_of
from harness.report.stats import direction
from harness.spec.schema import Claim

SPENDING = ("obrien_fleming", "pocock")
KINDS = tuple(RULE)
#: the statistic and boundaries a look records (`Look.rule`); looks recorded by the earlier
#: stage-wise rule load with `RULE_STAGEWISE`
RULE_T = "cumulative t"
RULE_STAGEWISE = "stage-wise inverse normal (z)"
#: null paths of (t_1 .. t_K) the boundaries are read from, per (looks, paired)
PATHS = 1_000_000
#: a look's boundary is a quantile of the paths when at least this many of them cross it;
#: otherwise the marginal t quantile (which can only spend less)
MIN_CROSSINGS = 100
#: the simulation's seed: the boundaries are a deterministic function of the design
PATH_SEED = 29
#: verdict codes of `decide_arrays`, in order
OPEN, HOLDS, CONTRADICTED, CAPPED, UNTESTED, FUTILE = range(6)
CONTINUE = "continue"
AT_CAP = "inconclusive at cap"
FOR_FUTILITY = "stopped for futility"
#: the futility threshold a design has unless it says otherwise (spec `decide.futility`): an
#: open claim whose t statistic at an interim look is below it stops (`decide_arrays`)
FUTILITY = 0.35


# ------------------------------------------------------------------ the design


def spent(spending: str, t, level: float) -> np.ndarray:
    """α spent by information fraction t (Lan & DeMets 1983), one-sided `level` in all:
    O'Brien-Fleming type 2 - 2Φ(z_{1-level/2} / √t), Pocock type level · ln(1 + (e - 1) t)."""
    t = np.asarray(t, dtype=float)
    if spending == "obrien_fleming":
        return 2 * stats.norm.sf(stats.norm.isf(level / 2) / np.sqrt(t))
    if spending == "pocock":
        return level * np.log1p((math.e - 1) * t)
    raise ValueError(f"spending {spending!r}: one of {', '.join(SPENDING)}")


def dfs(looks: Sequence[int], paired: bool) -> np.ndarray:
    """The t statistic's degrees of freedom at each look: n_k - 1 paired, 2 n_k - 2 unpaired."""
    n = np.asarray(looks, dtype=float)
    return n - 1 if paired else 2 * n - 2


@lru_cache(maxsize=8)
def null_paths(looks: tuple[int, ...], paired: bool, paths: int = PATHS, seed: int = PATH_SEED) -> np.ndarray:
    """(paths, K) simulated null paths (t_1 .. t_K) at these looks (read-only; cached): per side
    and stage, the stage's mean (normal) and sum of squares about it (chi-square, df m - 1)
    update the cumulative mean and sum of squares exactly, so a path costs a few draws per
    stage, not n_K. σ = 1: the t's law does not depend on σ."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, int(paired), *looks]))
    sides = 1 if paired else 2
    mean = np.zeros((sides, paths))
    ss = np.zeros((sides, paths))
    out = np.empty((paths, len(looks)))
    prev = 0
    for k, n in enumerate(looks):
        m = n - prev
        stage = rng.standard_normal((sides, paths)) / math.sqrt(m)
        within = rng.chisquare(m - 1, (sides, paths)) if m > 1 else 0.0
        ss += within + prev * m / n * (stage - mean) ** 2
        mean = (prev * mean + m * stage) / n
        if paired:
            out[:, k] = mean[0] / np.sqrt(ss[0] / (n - 1) / n)
        else:
            out[:, k] = (mean[0] - mean[1]) / np.sqrt((ss[0] + ss[1]) / (2 * n - 2) * 2 / n)
        prev = n
    out.setflags(write=False)
    return out


def sequential_bounds(paths: np.ndarray, cum: np.ndarray, marginal: Callable[[int, float], float],
                      min_crossings: int = MIN_CROSSINGS) -> np.ndarray:
    """Boundaries spending the cumulative levels `cum` (K,) on simulated null paths (N, K):
    look 1 (and any look whose increment fewer than `min_crossings` paths would cross) at the
    exact marginal quantile `marginal(k, p)` (P(statistic_k ≥ it) = p), every other look at the
    largest value that at most floor(increment · N) of the paths below every earlier boundary
    reach."""
    n, k_n = paths.shape
    b = np.empty(k_n)
    alive = np.ones(n, dtype=bool)
    prev = 0.0
    for k in range(k_n):
        inc = float(cum[k]) - prev
        prev = float(cum[k])
        j = int(inc * n)
        if k == 0 or j < min_crossings:
            b[k] = marginal(k, inc)
        else:
            x = paths[alive, k]
            b[k] = np.partition(x, x.size - j)[x.size - j] if j < x.size else -np.inf
        alive &= paths[:, k] < b[k]
    return b


@lru_cache(maxsize=1024)
def boundaries(looks: tuple[int, ...], level: float, spending: str, paired: bool) -> tuple[float, ...]:
    """One-sided boundaries c_1 .. c_K on the t scale spending `level` at the fractions
    t = looks / cap: c_1 the exact t quantile, the later ones from `null_paths` (see the module
    docstring; Monte Carlo error of the spending: standard error ≤ sqrt(level / PATHS)). Cached."""
    cum = spent(spending, np.asarray(looks, dtype=float) / looks[-1], level)
    df = dfs(looks, paired)
    b = sequential_bounds(null_paths(looks, paired), cum, lambda k, p: float(stats.t.isf(p, df[k])))
    return tuple(float(x) for x in b)


@dataclass(frozen=True)
class Design:
    """A pre-planned sequential design: cumulative seeds per row at each look (the last is the
    cap), the family's α and the spending function."""

    looks: tuple[int, ...]
    alpha: float = ALPHA
    spending: str = "obrien_fleming"
    futility: float | None = FUTILITY  # None: no futility stopping

    def __post_init__(self):
        try:
            looks = tuple(self.looks)
        except TypeError:
            looks = ()
        try:
            whole = all(not isinstance(n, bool) and float(n).is_integer() for n in looks)
        except (TypeError, ValueError):
            whole = False
        if not looks:
            raise ValueError(f"looks {self.looks!r}: a non-empty list of cumulative seed counts, e.g. [3, 5, 8, 12]")
        if not whole:
            raise ValueError(f"looks {list(looks)}: seed counts are whole numbers")
        looks = tuple(int(n) for n in looks)
        if looks[0] < MIN_N:
            raise ValueError(f"looks {list(looks)}: the first look needs at least {MIN_N} seeds per row "
                             f"(a claim's test needs {MIN_N}), not {looks[0]}")
        for prev, n in zip(looks, looks[1:], strict=False):
            if n <= prev:
                raise ValueError(f"looks {list(looks)}: seed counts must increase strictly, each look adding "
                                 f"at least one new seed ({prev} then {n})")
        if not 0 < float(self.alpha) < 0.5:
            raise ValueError(f"alpha {self.alpha!r}: between 0 and 0.5")
        if self.spending not in SPENDING:
            raise ValueError(f"spending {self.spending!r}: one of {', '.join(SPENDING)}")
        if self.futility is not None:
            try:
                ok = not isinstance(self.futility, bool) and math.isfinite(float(self.futility))
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise ValueError(f"futility {self.futility!r}: a t threshold (a finite number), or null for no "
                                 "futility stopping")
            object.__setattr__(self, "futility", float(self.futility))
        object.__setattr__(self, "looks", looks)
        object.__setattr__(self, "alpha", float(self.alpha))

    @property
    def cap(self) -> int:
        return self.looks[-1]

    @property
    def fractions(self) -> np.ndarray:
        return np.asarray(self.looks, dtype=float) / self.cap

    def bounds(self, level: float, paired: bool) -> np.ndarray:
        """One-sided t boundaries at each look spending `level` (paired or unpaired t)."""
        return np.asarray(boundaries(self.looks, float(level), self.spending, bool(paired)))

    def futility_at(self, k: int) -> float | None:
        """The futility threshold at look k (0-based): None at the cap and when there is none."""
        return self.futility if k < len(self.looks) - 1 else None

    def to_json(self) -> dict:
        return {"looks": list(self.looks), "alpha": self.alpha, "spending": self.spending, "futility": self.futility}

    @classmethod
    def from_json(cls, d: Mapping) -> Design:
        """A design stored before futility stopping existed (no `futility`) had none."""
        return cls(tuple(d["looks"]), d.get("alpha", ALPHA), d.get("spending", "obrien_fleming"), d.get("futility"))


# ------------------------------------------------------------------ claims


@dataclass(frozen=True)
class Hypothesis:
    """One claim as the procedure sees it: Δ = a - b (values of `row` against `vs`), read in the
    claim's direction `sign`; margin in the values' unit; `margin_label` names it in verdicts."""

    number: int
    row: str
    vs: str
    kind: str  # superiority / non-inferiority / two-sided / equivalence
    sign: int = 1
    margin: float = 0.0
    paired: bool = False
    margin_label: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"claim {self.number}: kind {self.kind!r}, one of {', '.join(KINDS)}")
        if self.sign not in (1, -1):
            raise ValueError(f"claim {self.number}: sign {self.sign!r}, +1 or -1")
        if not self.margin >= 0 or (self.kind == "equivalence" and not self.margin > 0):
            raise ValueError(f"claim {self.number}: margin {self.margin!r} (equivalence needs one > 0)")

    def to_json(self) -> dict:
        return {"number": self.number, "row": self.row, "vs": self.vs, "kind": self.kind, "sign": self.sign,
                "margin": self.margin, "paired": self.paired, "margin_label": self.margin_label}


def hypothesis_of(claim: Claim, number: int) -> Hypothesis:
    """The spec's claim (its metric set) as a hypothesis, as `claims.evaluate` reads it: margin in
    fractions, direction from the metric, paired when both sides are one row or declared so."""
    sign = direction(claim.metric or "") * (-1 if claim.expect == "worse" else 1)
    return Hypothesis(number, claim.row, claim.vs, kind_of(claim), sign, claim.margin / 100,
                      claim.row == claim.vs or claim.paired, f"{claim.margin:g}")


def _level_for(kind: str, level: float) -> float:
    """The one-sided level each boundary of a claim spends: half for a two-sided claim."""
    return level / 2 if kind == "two-sided" else level


def look_tests(a: np.ndarray, b: np.ndarray, design: Design, paired: bool):
    """Each look's t-test on all its seeds: (Δ estimate, its se, df, spread) per look, arrays
    (N, K); a, b: (N, n) per-seed values in seed order, NaN past the seeds there are (a look
    without its seeds: NaN). Paired: one-sample t of the first n_k differences; unpaired: the
    pooled-variance t of each side's first n_k seeds. The spread (std of the differences;
    unpaired, the smaller side's) is what `MIN_STD` is checked on."""
    a = _pad(np.asarray(a, dtype=float), design.cap)
    b = _pad(np.asarray(b, dtype=float), design.cap)
    out = np.full((4, a.shape[0], len(design.looks)), np.nan)
    for k, n in enumerate(design.looks):
        if paired:
            d = a[:, :n] - b[:, :n]
            var = d.var(axis=1, ddof=1)
            out[0, :, k], out[1, :, k], out[2, :, k], out[3, :, k] = d.mean(axis=1), np.sqrt(var / n), n - 1, np.sqrt(var)
        else:
            xa, xb = a[:, :n], b[:, :n]
            va, vb = xa.var(axis=1, ddof=1), xb.var(axis=1, ddof=1)
            out[0, :, k] = xa.mean(axis=1) - xb.mean(axis=1)
            out[1, :, k] = np.sqrt((va + vb) / n)  # pooled variance (va + vb) / 2, times 2 / n
            out[2, :, k] = 2 * n - 2
            out[3, :, k] = np.sqrt(np.minimum(va, vb))
    return out[0], out[1], out[2], out[3]


def _pad(x: np.ndarray, n: int) -> np.ndarray:
    if x.ndim == 1:
        x = x[None, :]
    if x.shape[1] >= n:
        return x[:, :n]
    return np.concatenate([x, np.full((x.shape[0], n - x.shape[1]), np.nan)], axis=1)


def t_stat(est, se, theta) -> np.ndarray:
    """t_k(θ) at each look: (est - θ) / se, est in the claim's direction (no spread: NaN/±inf,
    and the look is untested)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return (np.asarray(est, dtype=float) - theta) / se


def _statistics(h: Hypothesis, est, se) -> np.ndarray:
    """(S, N, K): the t statistics compared with +c for the claim to hold; TOST: the lower null
    θ ≤ -m and the upper one θ ≥ m."""
    e = h.sign * est
    if h.kind == "two-sided":
        return t_stat(e, se, 0.0)[None]
    low = t_stat(e, se, -h.margin)
    if h.kind != "equivalence":
        return low[None]
    return np.stack([low, -t_stat(e, se, h.margin)])


def futility_statistic(kind: str, z: np.ndarray) -> np.ndarray:
    """The statistic the futility threshold is compared with, from `_statistics`' (S, ...): the
    claim's t (one-sided), |t| (two-sided), the smaller of the two one-sided t's (equivalence)."""
    if kind == "two-sided":
        return np.abs(z[0])
    if kind == "equivalence":
        return np.minimum(z[0], z[1])
    return z[0]


def _crossed(kind: str, z: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(holds by look k, contradicted by look k), (N, K) each, at the boundaries b (K,)."""
    up = np.logical_or.accumulate(z >= b, axis=-1)
    down = np.logical_or.accumulate(z <= -b, axis=-1)
    if kind == "two-sided":
        return up[0] | down[0], np.zeros_like(up[0])
    if kind == "equivalence":
        return up[0] & up[1], down[0] | down[1]
    return up[0], down[0]


# ------------------------------------------------------------------ the procedure on arrays


@dataclass
class Batch:
    """The procedure run on N simulated or real stores at once (`decide_arrays`). Per claim i:
    status[:, i] (OPEN, HOLDS, CONTRADICTED, CAPPED, UNTESTED, FUTILE), stop[:, i] (0-based look of
    the verdict; -1 while open), level[:, i] (the claim's Holm level when decided, or now);
    made: looks the family has made; level_at[:, i, k]: the claim's level at look k (NaN when
    it was not looked at); stats[i]: (S, N, K) t statistics; est/se/df/spread[i]: each look's
    t-test on all its seeds (N, K), est in the claim's direction."""

    design: Design
    hypotheses: list[Hypothesis]
    status: np.ndarray
    stop: np.ndarray
    level: np.ndarray
    made: np.ndarray
    level_at: np.ndarray
    stats: list[np.ndarray]
    est: list[np.ndarray]
    se: list[np.ndarray]
    df: list[np.ndarray]
    spread: list[np.ndarray]

    def seeds(self, i: int) -> np.ndarray:
        """Seeds per side claim i used: at its verdict's look, else at the last look made."""
        last = np.where(self.stop[:, i] >= 0, self.stop[:, i], self.made - 1)
        looks = np.r_[0, self.design.looks]
        return looks[last + 1]

    def interval(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """The claim's interval on Δ in its direction: the intersection of its repeated
        confidence intervals over the looks it was looked at, at its final level (N,) each."""
        h, d = self.hypotheses[i], self.design
        n, k_n = self.status.shape[0], len(d.looks)
        last = np.where(self.stop[:, i] >= 0, self.stop[:, i], self.made - 1)
        bnd = np.full((n, k_n), np.nan)
        for level in np.unique(self.level[:, i][np.isfinite(self.level[:, i])]):
            rows = self.level[:, i] == level
            bnd[rows] = d.bounds(_level_for(h.kind, float(level)), h.paired)
        low, high = rci(self.est[i], self.se[i], bnd)
        seen = np.arange(k_n)[None, :] <= last[:, None]
        lo = np.where(seen, low, -np.inf).max(axis=1)
        hi = np.where(seen, high, np.inf).min(axis=1)
        rows = np.arange(n)
        at = np.clip(last, 0, None)
        empty = lo > hi
        lo = np.where(empty, low[rows, at], lo)
        hi = np.where(empty, high[rows, at], hi)
        none = last < 0
        return np.where(none, np.nan, lo), np.where(none, np.nan, hi)

    def disjoint(self, i: int) -> np.ndarray:
        """(N,) True where claim i's repeated intervals over its looks do not intersect (its
        `interval` is then the last look's)."""
        h, d = self.hypotheses[i], self.design
        n, k_n = self.status.shape[0], len(d.looks)
        last = np.where(self.stop[:, i] >= 0, self.stop[:, i], self.made - 1)
        out = np.zeros(n, dtype=bool)
        for level in np.unique(self.level[:, i][np.isfinite(self.level[:, i])]):
            rows = self.level[:, i] == level
            low, high = rci(self.est[i][rows], self.se[i][rows], d.bounds(_level_for(h.kind, float(level)), h.paired))
            seen = np.arange(k_n)[None, :] <= last[rows, None]
            out[rows] = (np.where(seen, low, -np.inf).max(axis=1) > np.where(seen, high, np.inf).min(axis=1)) \
                & (last[rows] >= 0)
        return out


def decide_arrays(design: Design, hypotheses: Sequence[Hypothesis],
                  values: Sequence[tuple[np.ndarray, np.ndarray]], available: np.ndarray | None = None) -> Batch:
    """The whole procedure on N stores at once: values[i] = (a, b) of claim i, arrays (N, n)
    in seed order (paired: column j of both is one seed); `available` (N, m): looks each claim
    has the seeds for (default: every look up to n). What `decide` runs (N = 1) and what the
    calibration benchmark simulates."""
    m, k_n = len(hypotheses), len(design.looks)
    if m == 0:
        raise ValueError("no claims to decide")
    if len(values) != m:
        raise ValueError(f"{m} claims but {len(values)} pairs of values")
    est, se, df, spread, zs = [], [], [], [], []
    for h, (a, b) in zip(hypotheses, values, strict=True):
        e, s, f, sp = look_tests(a, b, design, h.paired)
        est.append(h.sign * e)
        se.append(s)
        df.append(f)
        spread.append(sp)
        zs.append(_statistics(h, e, s))
    n = zs[0].shape[1]
    if available is None:
        available = np.stack([(np.isfinite(e)).cumprod(axis=1).sum(axis=1) for e in est], axis=1)
    available = np.broadcast_to(np.asarray(available), (n, m))
    # (claim, r - 1): holds / contradicted by look k at level α / r
    held = np.zeros((m, m, n, k_n), dtype=bool)
    contra = np.zeros((m, m, n, k_n), dtype=bool)
    for i, h in enumerate(hypotheses):
        for r in range(1, m + 1):
            bnd = design.bounds(_level_for(h.kind, design.alpha / r), h.paired)
            held[i, r - 1], contra[i, r - 1] = _crossed(h.kind, zs[i], bnd)
    status = np.full((n, m), OPEN, dtype=np.int8)
    stop = np.full((n, m), -1)
    level = np.full((n, m), design.alpha / m)
    level_at = np.full((n, m, k_n), np.nan)
    made = np.zeros(n, dtype=int)
    rejected = np.zeros(n, dtype=int)
    rows = np.arange(n)
    for k in range(k_n):
        is_open = status == OPEN
        go = (made == k) & np.all(~is_open | (available > k), axis=1)
        if not go.any():
            break
        made[go] = k + 1
        looked = go[:, None] & is_open
        # a look without spread: the seeds did not vary the runs; the claim keeps its α share
        flat = looked & np.stack([~(sp[:, k] > MIN_STD) for sp in spread], axis=1)
        status[flat], stop[flat] = UNTESTED, k
        for _ in range(m):
            r = np.maximum(m - rejected, 1)
            new = np.stack([held[i, r - 1, rows, k] for i in range(m)], axis=1) & go[:, None] & (status == OPEN)
            if not new.any():
                break
            status[new], stop[new] = HOLDS, k
            level[new] = np.broadcast_to((design.alpha / r)[:, None], (n, m))[new]
            rejected += new.sum(axis=1)
        r = np.maximum(m - rejected, 1)
        still = go[:, None] & (status == OPEN)
        level[still] = np.broadcast_to((design.alpha / r)[:, None], (n, m))[still]
        new = np.stack([contra[i, r - 1, rows, k] for i in range(m)], axis=1) & still
        status[new], stop[new] = CONTRADICTED, k
        threshold = design.futility_at(k)
        if threshold is not None:  # non-binding: the boundaries above ignore it
            with np.errstate(invalid="ignore"):
                weak = np.stack([futility_statistic(h.kind, zs[i][:, :, k]) < threshold
                                 for i, h in enumerate(hypotheses)], axis=1)
            new = weak & go[:, None] & (status == OPEN)
            status[new], stop[new] = FUTILE, k
        if k == k_n - 1:
            capped = go[:, None] & (status == OPEN)
            status[capped], stop[capped] = CAPPED, k
        level_at[:, :, k] = np.where(looked, level, np.nan)
    return Batch(design, list(hypotheses), status, stop, level, made, level_at, zs, est, se, df, spread)


def rci(est, se, bnd) -> tuple[np.ndarray, np.ndarray]:
    """Repeated confidence intervals at each look (N, K): {θ : -c_k < t_k(θ) < c_k} =
    est ± c_k · se; est in the claim's direction, bnd (N, K) boundaries (NaN: none)."""
    est, se, bnd = (np.asarray(x, dtype=float) for x in (est, se, bnd))
    with np.errstate(invalid="ignore"):
        low, high = est - bnd * se, est + bnd * se
    bad = ~np.isfinite(bnd) | ~np.isfinite(est) | ~(se > 0)
    return np.where(bad, np.nan, low), np.where(bad, np.nan, high)


# ------------------------------------------------------------------ one store: results


@dataclass(frozen=True)
class Look:
    """One look at one claim: cumulative seeds per side, the claim's level then, the one-sided
    boundary on the t scale, the t statistic(s) of all the seeds so far (TOST: the lower and
    upper null's), their degrees of freedom and the verdict after the look. `rule`: the rule the
    numbers are of (`RULE_T`; a look stored by the earlier stage-wise rule, whose statistic and
    boundary were z values, loads with `RULE_STAGEWISE` and df NaN). `futility`: the futility
    threshold at the look (`futility_statistic` below it stops the claim); None at the cap, in
    a design without futility stopping and in looks stored before it existed."""

    look: int  # 1-based
    seeds: int
    level: float
    boundary: float
    statistic: tuple[float, ...]
    df: float
    verdict: str
    rule: str = RULE_T
    futility: float | None = None

    def to_json(self) -> dict:
        return {"look": self.look, "seeds": self.seeds, "level": self.level, "rule": self.rule,
                "t": [_num(x) for x in self.statistic], "t_boundary": _num(self.boundary), "df": _num(self.df),
                "t_futility": self.futility, "verdict": self.verdict}

    @classmethod
    def from_json(cls, d: Mapping) -> Look:
        def num(x):
            return math.nan if x is None else x

        if "t" not in d:  # stored by the stage-wise rule: z statistic and boundary, stage p-values
            return cls(d["look"], d["seeds"], d["level"], num(d["boundary"]), tuple(num(x) for x in d["statistic"]),
                       math.nan, d["verdict"], d.get("rule", RULE_STAGEWISE))
        return cls(d["look"], d["seeds"], d["level"], num(d["t_boundary"]), tuple(num(x) for x in d["t"]),
                   num(d["df"]), d["verdict"], d.get("rule", RULE_T), d.get("t_futility"))


@dataclass(frozen=True)
class SequentialResult:
    """One claim's sequential decision so far. low/high: the interval on Δ = row - vs (values'
    unit) with its nominal simultaneous `confidence`; estimate: the naive Δ at `seeds`;
    stop_look: the look (1-based) of the verdict, None while open (a result stored before the
    field existed loads with its last look when decided)."""

    hypothesis: Hypothesis
    verdict: str  # holds / equivalent within ±m / contradicted / continue / inconclusive at cap / stopped for
    # futility / untested
    level: float  # the claim's Holm level (one-sided; two-sided claims spend half per side)
    seeds: int  # seeds per side the verdict rests on
    available: tuple[int, int]  # usable seeds per side now (paired: the seeds both sides have)
    next_seeds: int | None  # seeds per side at the claim's next look; None once decided
    estimate: float | None
    low: float | None
    high: float | None
    confidence: float
    looks: tuple[Look, ...] = ()
    untested: str = ""
    stop_look: int | None = None
    #: a claim that holds because Holm raised its level at `stop_look`: the earlier look whose t
    #: crossed the boundary of the raised level, and that boundary (None otherwise)
    crossed_look: int | None = None
    crossed_boundary: float | None = None
    #: the looks' repeated intervals do not intersect: low/high are the last look's
    disjoint: bool = False

    @property
    def holds(self) -> bool:
        return self.verdict == "holds" or self.verdict.startswith("equivalent within")

    @property
    def is_open(self) -> bool:
        return self.verdict == CONTINUE

    def to_json(self) -> dict:
        return {"hypothesis": self.hypothesis.to_json(), "verdict": self.verdict, "holds": self.holds,
                "level": self.level, "seeds": self.seeds, "available": list(self.available),
                "next_seeds": self.next_seeds, "estimate": self.estimate, "interval": [self.low, self.high],
                "confidence": self.confidence, "looks": [lk.to_json() for lk in self.looks],
                "untested": self.untested, "stop_look": self.stop_look, "crossed_look": self.crossed_look,
                "crossed_boundary": self.crossed_boundary, "disjoint": self.disjoint}

    @classmethod
    def from_json(cls, d: Mapping) -> SequentialResult:
        looks = tuple(Look.from_json(lk) for lk in d["looks"])
        stop = d.get("stop_look")
        if "stop_look" not in d and d["verdict"] != CONTINUE:  # stored before the field: decided at its last
            # look (untested: at the look after the last one listed, which tested nothing)
            stop = len(looks) + 1 if d["verdict"] == "untested" else looks[-1].look if looks else None
        return cls(Hypothesis(**d["hypothesis"]), d["verdict"], d["level"], d["seeds"], tuple(d["available"]),
                   d["next_seeds"], d["estimate"], d["interval"][0], d["interval"][1], d["confidence"],
                   looks, d["untested"], stop, d.get("crossed_look"), d.get("crossed_boundary"),
                   bool(d.get("disjoint", False)))


def _num(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _aligned(h: Hypothesis, a: Mapping[int, float], b: Mapping[int, float]) -> tuple[list[float], list[float]]:
    """Each side's finite values in seed order; paired: over the seeds both sides have."""
    fa = {int(s): float(v) for s, v in a.items() if v is not None and math.isfinite(float(v))}
    fb = {int(s): float(v) for s, v in b.items() if v is not None and math.isfinite(float(v))}
    if h.paired:
        common = sorted(set(fa) & set(fb))
        return [fa[s] for s in common], [fb[s] for s in common]
    return [fa[s] for s in sorted(fa)], [fb[s] for s in sorted(fb)]


def _verdict(h: Hypothesis, code: int) -> str:
    if code == HOLDS:
        return f"equivalent within ±{h.margin_label or f'{h.margin:g}'}" if h.kind == "equivalence" else "holds"
    return {OPEN: CONTINUE, CONTRADICTED: "contradicted", CAPPED: AT_CAP, UNTESTED: "untested",
            FUTILE: FOR_FUTILITY}[code]


def decide(design: Design, hypotheses: Sequence[Hypothesis],
           values: Sequence[tuple[Mapping[int, float], Mapping[int, float]]]) -> list[SequentialResult]:
    """Decide a family of claims on the seeds there are: values[i] = (row's, vs's) per-seed
    values of claim i keyed by seed number. Looks are made in order while every open claim has
    the seeds for the next one; the seeds past the last look made wait for the next."""
    if len(values) != len(hypotheses):
        raise ValueError(f"{len(hypotheses)} claims but {len(values)} pairs of values")
    sides = [_aligned(h, a, b) for h, (a, b) in zip(hypotheses, values, strict=True)]
    batch = decide_arrays(design, hypotheses, [(np.asarray(a, dtype=float), np.asarray(b, dtype=float))
                                               for a, b in sides],
                          available=np.array([[sum(n <= min(len(a), len(b)) for n in design.looks)
                                               for a, b in sides]]))
    return [_result(batch, i, side) for i, side in enumerate(sides)]


def _result(batch: Batch, i: int, side: tuple[list[float], list[float]]) -> SequentialResult:
    h, d = batch.hypotheses[i], batch.design
    code, stop, made = int(batch.status[0, i]), int(batch.stop[0, i]), int(batch.made[0])
    level = float(batch.level[0, i])
    last = stop if stop >= 0 else made - 1
    looks = []
    for k in range(last if code == UNTESTED else last + 1):  # a look without spread tests nothing
        lv = float(batch.level_at[0, i, k])
        bound = float(d.bounds(_level_for(h.kind, lv), h.paired)[k])
        t = tuple(float(x) for x in batch.stats[i][:, 0, k])
        now = _verdict(h, code) if k == stop else CONTINUE
        looks.append(Look(k + 1, d.looks[k], lv, bound, t, float(batch.df[i][0, k]), now, RULE_T, d.futility_at(k)))
    a, b = side
    seeds = d.looks[last] if last >= 0 else 0
    untested = ""
    if code == UNTESTED:
        untested = (f"no spread at look {stop + 1} ({'identical per-seed differences' if h.paired else 'identical values on one side'}): "
                    "the seeds did not vary the runs")
    disjoint = False
    if seeds:
        estimate = float(np.mean(a[:seeds]) - np.mean(b[:seeds]))
        lo, hi = (float(x[0]) for x in batch.interval(i))
        lo, hi = (lo, hi) if h.sign > 0 else (-hi, -lo)
        disjoint = bool(batch.disjoint(i)[0])
    else:
        estimate = lo = hi = math.nan
    if code == UNTESTED:  # a look without spread tests nothing: no interval either
        lo = hi = math.nan
        disjoint = False
    crossed = crossed_bound = None
    if code == HOLDS:  # held at look `stop`, perhaps on an earlier look's t once Holm raised the level
        bnd = d.bounds(_level_for(h.kind, level), h.paired)
        up, _ = _crossed(h.kind, batch.stats[i][:, :1, :stop + 1], bnd[:stop + 1])
        first = int(np.argmax(up[0])) if up[0].any() else stop
        if first < stop:
            crossed, crossed_bound = first + 1, float(bnd[first])
    conf = 1 - level if h.kind == "two-sided" else 1 - 2 * level
    nxt = None
    if code == OPEN:
        nxt = d.looks[made] if made < len(d.looks) else None
    return SequentialResult(h, _verdict(h, code), level, seeds, (len(a), len(b)), nxt, _num(estimate), _num(lo),
                            _num(hi), conf, tuple(looks), untested, stop + 1 if stop >= 0 else None, crossed,
                            crossed_bound, disjoint)


# ------------------------------------------------------------------ planning


@dataclass(frozen=True)
class Plan:
    """What to run next: the open claims, the family's next look (1-based) and its cumulative
    seeds per row, and per row the seeds still to add for it (a row shared by several open
    claims once)."""

    open: tuple[int, ...]
    look: int | None
    seeds: int | None
    rows: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"open": list(self.open), "look": self.look, "seeds": self.seeds, "rows": dict(self.rows)}

    @classmethod
    def from_json(cls, d: Mapping) -> Plan:
        return cls(tuple(d["open"]), d["look"], d["seeds"], dict(d["rows"]))


def plan(design: Design, results: Sequence[SequentialResult]) -> Plan:
    """The next look's seeds for the claims still open (empty when all are decided): a claim
    stopped (holds, contradicted, at its cap, for futility, untested) needs none, but a row it
    shares with an open claim gets that claim's."""
    open_ = [r for r in results if r.is_open and r.next_seeds is not None]
    if not open_:
        return Plan((), None, None, {})
    target = min(r.next_seeds for r in open_)
    rows: dict[str, int] = {}
    for r in open_:
        h = r.hypothesis
        for row, have in ((h.row, r.available[0]), (h.vs, r.available[1])):
            rows[row] = max(rows.get(row, 0), target - have, 0)
    return Plan(tuple(r.hypothesis.number for r in open_), design.looks.index(target) + 1, target, rows)


# ------------------------------------------------------------------ seeds saved


@dataclass(frozen=True)
class Savings:
    """One claim's design at a true effect (σ units): power, how often contradicted, mean seeds
    per side, the seeds per side of the fixed design with the same power (`power.py`), and how
    often the claim stopped for futility."""

    effect: float
    power: float
    contradicted: float
    mean_seeds: float
    fixed_seeds: int | None
    ratio: float | None  # mean_seeds / fixed_seeds
    futile: float = 0.0

    def to_json(self) -> dict:
        return dict(self.__dict__)


def draw(rng: np.random.Generator, n: int, cap: int, delta: float, paired: bool,
         sd_b: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """N = n simulated stores of one claim: (a, b) arrays (n, cap) with Δ = delta and σ = 1
    (paired: the per-seed differences have σ = 1; unpaired: side a has σ = 1, side b sd_b)."""
    b = rng.normal(0.0, sd_b, (n, cap))
    if paired:
        return b + rng.normal(delta, 1.0, (n, cap)), b
    return rng.normal(delta, 1.0, (n, cap)), b


def fixed_seeds(kind: str, *, paired: bool, effect: float, margin: float, alpha: float, power: float) -> int | None:
    """Seeds per side of the fixed design with `power` (capped at 0.999) against `effect`; None
    at or beyond the claim's null, where no number of seeds has power."""
    null = {"two-sided": effect == 0, "equivalence": abs(effect) >= margin}.get(kind, effect <= -margin)
    if null or not power > 0:
        return None
    return pw.seeds_needed(abs(effect) if kind == "two-sided" else effect, paired=paired, kind=RULE[kind],
                           alpha=alpha, margin=margin, target=min(power, 0.999))


def savings(design: Design, kind: str, *, paired: bool, effect: float, margin: float = 0.0, sims: int = 4000,
            seed: int = 0) -> Savings:
    """Simulate one claim alone (its level α) at a true effect in σ (claim's direction) through
    `decide_arrays`: the sequential design's power and mean seeds against the fixed design's."""
    h = Hypothesis(1, "row", "vs", kind, 1, margin, paired)
    batch = decide_arrays(design, [h], [draw(np.random.default_rng(seed), sims, design.cap, effect, paired)])
    power = float(np.mean(batch.status[:, 0] == HOLDS))
    mean = float(np.mean(batch.seeds(0)))
    fixed = fixed_seeds(kind, paired=paired, effect=effect, margin=margin, alpha=design.alpha, power=power)
    return Savings(effect, power, float(np.mean(batch.status[:, 0] == CONTRADICTED)), mean, fixed,
                   mean / fixed if fixed else None, float(np.mean(batch.status[:, 0] == FUTILE)))
