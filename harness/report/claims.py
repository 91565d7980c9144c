"""The comparisons a table declares (spec `tables.NAME.claims`), each one hypothesis tested once.

Kinds, from `expect` and `margin` (Δ = row - vs, read in the metric's direction: AP up, mMR down):

- superiority (`better` / `worse`, no margin): one-sided, the claim holds when Δ > 0 is shown;
- non-inferiority (`better` / `worse` with a margin m): one-sided, holds when Δ > -m is shown;
- two-sided (`differs`): holds when Δ ≠ 0 is shown;
- equivalence (`equivalent`, margin m): two one-sided tests (TOST), holds when -m < Δ < m is shown.

The test is the paired t on the per-seed differences when both sides are the same runs (one row,
NMS against NMS-free) or the spec declares the pairing with its reason; Welch's t otherwise.
Holm's step-down runs once over the table's declared claims (a claim that cannot be tested yet
enters with p = 1, so more data never loosens the others); a claim holds when its Holm-adjusted
p is below α.

The interval printed with a claim is the one its verdict is read from: at the level of the
claim's Holm step (α / (m - j + 1) for the j-th smallest p, the stopping step's for every claim
at or after it), two-sided 1 - 2·level for one-sided and equivalence claims, 1 - level for
two-sided ones. So the verdict and the interval never disagree: a one-sided claim holds exactly
when the interval lies above -m; it is contradicted when the interval lies wholly below -m
(an equivalence claim: wholly outside ±m); otherwise inconclusive.

Power, minimum detectable effect and seeds needed come from `power.py` (exact t-test power) at
the family's strictest level α / m, with the pooled seed std of the claim's two sides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as st

from harness.report import power as pw
from harness.report.stats import Comparison, compare, direction, holm, pooled_std
from harness.spec.schema import Claim, Spec
from harness.track.names import eval_key

ALPHA = 0.05
MIN_N = 3
#: A std below this (0.001 points) over seeds means the seeds did not vary the run.
MIN_STD = 1e-5
POST = {"nms": "NMS", "nms_free": "no NMS"}
#: claim kind -> the decision rule `power.py` knows it by
RULE = {"superiority": "one-sided", "non-inferiority": "one-sided", "two-sided": "two-sided",
        "equivalence": "equivalence"}


def claims_of(spec: Spec, name: str, first_metric: str) -> list[Claim]:
    """The table's declared claims; without any, each row against its `compare_to` row or the
    table's baseline on the layout's first metric, two-sided."""
    table = spec.tables[name]
    if table.claims:
        return [c if c.metric else c.model_copy(update={"metric": first_metric}) for c in table.claims]
    rows = [r for r in spec.rows if r.table == name]
    baseline = next((r.label for r in rows if r.baseline), None)
    out = []
    for r in rows:
        other = r.compare_to or (baseline if r.label != baseline else None)
        if other is not None:
            out.append(Claim(row=r.label, vs=other, metric=first_metric, expect="differs"))
    return out


def kind_of(claim: Claim) -> str:
    if claim.expect == "differs":
        return "two-sided"
    if claim.expect == "equivalent":
        return "equivalence"
    return "non-inferiority" if claim.margin else "superiority"


def side(label: str, post: str | None) -> str:
    return f"{label} ({POST[post]})" if post else label


def by_seed(df: pd.DataFrame, row: str, key: str) -> dict[tuple, tuple[float, str | None]]:
    """(dataset, seed) -> (finite value of `key`, run id) in the finished runs of `row`."""
    done = df[(df["row"] == row) & (df["status"] == "finished")]
    if key not in done:
        return {}
    ds = done["dataset"] if "dataset" in done else [""] * len(done)
    ids = done["run_id"] if "run_id" in done else [None] * len(done)
    return {(d, int(s)): (float(v), i) for d, s, v, i in zip(ds, done["seed"], done[key], ids, strict=True)
            if pd.notna(v) and math.isfinite(float(v))}


# ------------------------------------------------------------------ the test of one claim


def claim_p(effect: float, se: float, df: float, kind: str, margin: float) -> float:
    """p-value of the claim's hypothesis from its estimate `effect` (in the claim's direction),
    standard error and degrees of freedom; margin as a fraction."""
    if kind in ("superiority", "non-inferiority"):
        return float(st.t.sf((effect + margin) / se, df))
    if kind == "two-sided":
        return float(min(1.0, 2 * st.t.sf(abs(effect) / se, df)))
    return float(max(st.t.sf((effect + margin) / se, df), st.t.sf((margin - effect) / se, df)))


def claim_interval(effect: float, se: float, df: float, kind: str, level: float) -> tuple[float, float]:
    """The interval matching the claim's test at `level`, in the claim's direction."""
    q = 1 - level / 2 if kind == "two-sided" else 1 - level
    half = float(st.t.ppf(q, df)) * se
    return effect - half, effect + half


def decide(low: float, high: float, kind: str, margin: float) -> str:
    """holds / contradicted / inconclusive from the interval (claim's direction, fractions)."""
    if kind in ("superiority", "non-inferiority"):
        return "holds" if low > -margin else "contradicted" if high < -margin else "inconclusive"
    if kind == "two-sided":
        return "holds" if low > 0 or high < 0 else "inconclusive"
    if -margin < low and high < margin:
        return "holds"
    return "contradicted" if low >= margin or high <= -margin else "inconclusive"


@dataclass(frozen=True)
class Decision:
    """One claim's test at a given level, in the claim's direction (fractions)."""

    test: Comparison  # Δ = a - b, its standard error and df
    p: float
    low: float  # the interval on the claim's-direction effect at `level`
    high: float
    verdict: str  # holds / contradicted / inconclusive


def claim_decision(a, b, *, paired: bool, kind: str, sign: int, margin: float, level: float) -> Decision:
    """The whole test of one claim on its per-seed values (paired: a[i] and b[i] from one
    seed), at `level` (its Holm step; α for a claim alone): what `evaluate` uses for every claim,
    and what the calibration benchmark simulates."""
    test = compare(a, b, paired=paired)
    effect = sign * test.delta
    p = claim_p(effect, test.se, test.df, kind, margin)
    low, high = claim_interval(effect, test.se, test.df, kind, level)
    return Decision(test, p, low, high, decide(low, high, kind, margin))


def step_levels(pvalues: list[float], alpha: float = ALPHA) -> tuple[list[float], list[float]]:
    """Holm over the family: (adjusted p-values, the level of each claim's step). The j-th
    smallest p is tested at alpha / (m - j + 1) while every smaller one was rejected; from the
    first step that fails on, every claim gets that step's level."""
    m = len(pvalues)
    adjusted = holm(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    levels = [math.nan] * m
    stop = None
    for rank, i in enumerate(order):
        if stop is None and not adjusted[i] < alpha:
            stop = rank
        levels[i] = alpha / (m - (rank if stop is None else stop))
    return adjusted, levels


# ------------------------------------------------------------------ results


@dataclass
class Result:
    number: int  # 1-based, as the claims table numbers them
    claim: Claim
    kind: str
    test: Comparison  # Δ = row - vs (fractions), its standard error and df
    a: dict[tuple, tuple[float, str | None]]  # (dataset, seed) -> (value, run id)
    b: dict[tuple, tuple[float, str | None]]
    paired: bool
    pairing: str  # why the sides are paired ("" when not)
    untested: str = ""  # why no test was made ("" when tested)
    p: float = math.nan  # the claim's p (one-sided, two-sided or TOST)
    p_holm: float = math.nan
    level: float = math.nan  # the claim's Holm step level; the interval is at this level
    low: float = math.nan  # the interval on Δ = row - vs (fractions)
    high: float = math.nan
    verdict: str = "untested"
    sd: float = math.nan  # pooled seed std of the claim's sides (paired: of the differences)
    plan_alpha: float = math.nan  # α / m: the level power and seeds needed are computed at
    mde: float = math.nan  # true Δ (claim's direction, fraction) shown with 80% power at n
    power_at_zero: float = math.nan  # equivalence: power at Δ = 0
    power_declared: float = math.nan  # power against the declared effect at n
    seeds_declared: int | None = None
    seeds_observed: int | None = None

    @property
    def sign(self) -> int:
        d = direction(self.claim.metric or "")
        return -d if self.claim.expect == "worse" else d

    @property
    def title(self) -> str:
        c = self.claim
        if c.text:
            return c.text
        what = {"better": "better than", "worse": "worse than", "differs": "differs from",
                "equivalent": "equivalent to"}[c.expect]
        if c.expect == "equivalent":
            margin = f" (within ±{c.margin:g} points)"
        else:
            margin = f" (or within {c.margin:g} points)" if c.margin else ""
        return f"{side(c.row, c.post)} {what} {side(c.vs, c.vs_post)}{margin}, {c.metric}"

    @property
    def test_name(self) -> str:
        base = "paired t" if self.paired else "Welch t"
        return {"superiority": f"one-sided {base}", "non-inferiority": f"one-sided {base}, margin "
                f"{self.claim.margin:g}", "two-sided": f"two-sided {base}",
                "equivalence": f"TOST {base}, ±{self.claim.margin:g}"}[self.kind]

    @property
    def interval_name(self) -> str:
        """e.g. `99.2% CI` (two-sided interval at the level of the claim's test)."""
        if math.isnan(self.level):
            return ""
        conf = 1 - self.level if self.kind == "two-sided" else 1 - 2 * self.level
        text = f"{100 * conf:.2f}".rstrip("0").rstrip(".")
        return f"{text}% CI"

    @property
    def holds(self) -> bool:
        """The claim holds (its Holm-adjusted p < α; its interval clears its bound)."""
        return self.verdict == "holds" or self.verdict.startswith("equivalent within")

    @property
    def mark(self) -> str:
        """✓ when the claim holds, nothing otherwise."""
        return "✓" if self.holds else ""

    def as_dict(self) -> dict:
        """The claim for the report's JSON (fractions as in MLflow; `_points` fields in points)."""
        c = self.claim

        def seeds(values):
            return [{"dataset": k[0], "seed": k[1], "value": v, "run_id": rid} for k, (v, rid) in sorted(values.items())]

        def num(x):
            return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x

        return {"id": self.number, "text": self.title, "kind": self.kind, "expect": c.expect,
                "metric": c.metric, "row": c.row, "post": c.post, "vs": c.vs, "vs_post": c.vs_post,
                "margin_points": c.margin, "effect_points": c.effect, "test": self.test_name,
                "paired": self.paired, "pairing": self.pairing, "n_row": self.test.n_a, "n_vs": self.test.n_b,
                "delta": num(self.test.delta), "se": num(self.test.se), "df": num(self.test.df),
                "interval": [num(self.low), num(self.high)], "interval_confidence": num(
                    (1 - self.level if self.kind == "two-sided" else 1 - 2 * self.level)
                    if not math.isnan(self.level) else math.nan),
                "p": num(self.p), "p_holm": num(self.p_holm), "holm_step_level": num(self.level),
                "verdict": self.verdict, "holds": self.holds, "untested": self.untested or None, "seed_std": num(self.sd),
                "planning_alpha": num(self.plan_alpha), "min_detectable_effect": num(self.mde),
                "power_at_zero": num(self.power_at_zero), "power_at_declared_effect": num(self.power_declared),
                "seeds_needed_declared": self.seeds_declared, "seeds_needed_observed": self.seeds_observed,
                "row_values": seeds(self.a), "vs_values": seeds(self.b)}


def evaluate(claims: list[Claim], df: pd.DataFrame, alpha: float = ALPHA, plan: bool = True) -> list[Result]:
    """Test every claim once, Holm over them all; `plan`: also power, detectable effect and
    seeds needed (simulations that only count verdicts leave it out)."""
    results = []
    for i, c in enumerate(claims, 1):
        metric = c.metric or ""
        a = by_seed(df, c.row, eval_key(c.post, metric))
        b = by_seed(df, c.vs, eval_key(c.vs_post, metric))
        paired = c.row == c.vs or c.paired
        pairing = ("the same runs, post-processed twice" if c.row == c.vs else c.pairing) if paired else ""
        if paired:
            common = sorted(set(a) & set(b))
            xa, xb = [a[s][0] for s in common], [b[s][0] for s in common]
        else:
            xa, xb = [v for v, _ in a.values()], [v for v, _ in b.values()]
        test = compare(xa, xb, paired=paired)
        r = Result(i, c, kind_of(c), test, a, b, paired, pairing)
        if paired:
            spread = [float(np.std(np.subtract(xa, xb), ddof=1))] if len(xa) > 1 else [0.0]
            r.sd = spread[0] if len(xa) > 1 else math.nan
        else:
            spread = [float(np.std(x, ddof=1)) if len(x) > 1 else 0.0 for x in (xa, xb)]
            r.sd = pooled_std([xa, xb])
        if min(test.n_a, test.n_b) < MIN_N:
            r.untested = f"n = {test.n_a}/{test.n_b}: a test needs {MIN_N} seeds per side"
        elif any(not s > MIN_STD for s in spread):
            r.untested = ("identical per-seed differences" if paired
                          else "identical values across seeds on one side") + ": the seeds did not vary the runs"
        else:
            r.p = claim_p(r.sign * test.delta, test.se, test.df, r.kind, c.margin / 100)
        results.append(r)
    if not results:
        return results
    adjusted, levels = step_levels([1.0 if r.untested else r.p for r in results], alpha)
    m = len(results)
    for r, p_adj, level in zip(results, adjusted, levels, strict=True):
        r.plan_alpha = alpha / m
        if plan:
            _plan(r)
        if r.untested:
            r.verdict = f"untested: {r.untested}"
            continue
        r.p_holm, r.level = p_adj, level
        # the same steps as `claim_decision`, on the comparison made once above
        lo, hi = claim_interval(r.sign * r.test.delta, r.test.se, r.test.df, r.kind, level)
        verdict = decide(lo, hi, r.kind, r.claim.margin / 100)
        r.low, r.high = (lo, hi) if r.sign > 0 else (-hi, -lo)  # back to Δ = row - vs
        if r.kind == "equivalence" and verdict == "holds":
            verdict = f"equivalent within ±{r.claim.margin:g}"
        r.verdict = verdict
    return results


def _plan(r: Result) -> None:
    """Minimum detectable effect at the current seeds, power against the declared effect, and
    the seeds per side the declared and the observed effect would need (α / m, 80% power)."""
    if not (r.sd > MIN_STD):
        return
    sd, rule, alpha = r.sd, RULE[r.kind], r.plan_alpha
    margin = r.claim.margin / 100 / sd
    n_a, n_b = r.test.n_a, r.test.n_b
    kw = {"paired": r.paired, "kind": rule, "alpha": alpha, "margin": margin}
    if n_a >= 2 and n_b >= 2:
        if r.kind == "equivalence":
            r.power_at_zero = pw.power(0.0, n_a, n_b, **kw)
        else:
            r.mde = pw.min_detectable(n_a, n_b, **kw) * sd
        if r.claim.effect is not None:
            r.power_declared = pw.power(r.claim.effect / 100 / sd, n_a, n_b, **kw)
    if r.claim.effect is not None:
        r.seeds_declared = pw.seeds_needed(r.claim.effect / 100 / sd, **kw)
    if n_a and n_b and math.isfinite(r.test.delta):
        observed = r.sign * r.test.delta / sd
        if r.kind == "two-sided":
            observed = abs(observed)
        r.seeds_observed = pw.seeds_needed(observed, **kw)


# ------------------------------------------------------------------ text


def fmt_p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def points(x: float, digits: int = 1) -> str:
    """A difference in points with its sign; never "-0.0" or "+0.0"."""
    v = round(100 * x, digits)
    return f"{0.0:.{digits}f}" if v == 0 else f"{v:+.{digits}f}"


def seeds_text(n: int | None, current: int) -> str:
    if n is None:
        return f"> {pw.MAX_SEEDS} or never"
    return f"{n}" + (" (has)" if n <= current else "")


def observed_need(r: Result, long: bool = False) -> str:
    """The seeds per side the observed Δ would need, or why no number would do."""
    margin = r.claim.margin / 100
    effect = r.sign * r.test.delta
    wrong = (r.kind in ("superiority", "non-inferiority") and effect + margin <= 0) or \
        (r.kind == "equivalence" and abs(effect) >= margin)
    if wrong:
        return ("the observed Δ is on the wrong side of the claim's bound: no number of seeds would show it"
                if long else "never at the observed Δ")
    n = seeds_text(r.seeds_observed, min(r.test.n_a, r.test.n_b))
    return f"the observed Δ would need {n} seeds per side" if long else f"{n} at the observed Δ"


def line(r: Result) -> str:
    """One claim as the report prints it: verdict, means, Δ with its interval, test, p, power."""
    t = r.test
    if t.n_a == 0 or t.n_b == 0:
        return f"[{r.number}] {r.title}: not enough finished runs to tell (n = {t.n_a}/{t.n_b})."
    ma = float(np.mean([v for v, _ in r.a.values()])) if r.a else math.nan
    mb = float(np.mean([v for v, _ in r.b.values()])) if r.b else math.nan
    ci = "" if math.isnan(r.low) else f", {r.interval_name} {points(r.low)} to {points(r.high)}"
    test = "" if r.untested else f"; {r.test_name}, {fmt_p(r.p)}, Holm {fmt_p(r.p_holm)}"
    paired = f"; paired: {r.pairing}" if r.paired and r.claim.row != r.claim.vs else ""
    plan = []
    if math.isfinite(r.mde):
        plan.append(f"detectable with 80% power at α/{round(ALPHA / r.plan_alpha)}: Δ {points(r.sign * r.mde)}")
    if math.isfinite(r.power_at_zero):
        plan.append(f"power at Δ = 0: {r.power_at_zero:.2f}")
    if r.claim.effect is not None:
        plan.append(f"the declared {r.claim.effect:g} points need {seeds_text(r.seeds_declared, min(t.n_a, t.n_b))} "
                    "seeds per side")
    if not r.holds:
        plan.append(observed_need(r, long=True))
    return (f"[{r.number}] {r.title}: **{r.verdict}** ({100 * ma:.1f} vs {100 * mb:.1f}, "
            f"Δ {points(t.delta)} points{ci}{test}, n = {t.n_a}/{t.n_b}{paired})"
            + (f"; {'; '.join(plan)}" if plan else "") + ".")


def family(results: list[Result]) -> str:
    """The sentence naming the Holm family."""
    if not results:
        return ""
    return (f"Claims: {len(results)} declared, Holm-corrected as one family at α = {ALPHA}; each interval is at "
            "its claim's Holm step, so a claim holds exactly when its interval clears the claim's bound.")
