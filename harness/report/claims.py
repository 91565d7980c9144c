"""The comparisons a table declares (spec `tables.NAME.claims`), tested across seeds.

Each claim is one test: paired t on the per-seed differences when both sides are the same runs
(one row, NMS against NMS-free), Welch's t otherwise. `better` / `worse` are one-sided in the
metric's direction (AP up, mMR down), a margin makes `better` a non-inferiority test, `differs`
is two-sided. Holm's correction runs over the claims a table declares (all of them: a claim that
cannot be tested yet still counts, so more data never loosens the others). No mark, no verdict
when a side has fewer than 3 seeds or no spread at all (identical seeds are not replicates).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from harness.report.stats import Comparison, compare, direction, holm
from harness.spec.schema import Claim, Spec

ALPHA = 0.05
MIN_N = 3
#: A std below this (0.001 points) over seeds means the seeds did not vary the run.
MIN_STD = 1e-5
POST = {"nms": "NMS", "nms_free": "no NMS"}


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


def key_of(post: str | None, metric: str) -> str:
    return f"eval.{post}.{metric}" if post else f"eval.{metric}"


def side(label: str, post: str | None) -> str:
    return f"{label} ({POST[post]})" if post else label


def by_seed(df: pd.DataFrame, row: str, key: str) -> dict[tuple, float]:
    """(dataset, seed) -> finite value of `key` in the finished runs of `row`."""
    done = df[(df["row"] == row) & (df["status"] == "finished")]
    if key not in done:
        return {}
    ds = done["dataset"] if "dataset" in done else [""] * len(done)
    return {(d, int(s)): float(v) for d, s, v in zip(ds, done["seed"], done[key], strict=True)
            if pd.notna(v) and math.isfinite(float(v))}


@dataclass
class Result:
    number: int  # 1-based, as the table's Δ cells refer to it
    claim: Claim
    test: Comparison
    a: dict[tuple, float]
    b: dict[tuple, float]
    paired: bool
    untested: str = ""  # why no test was made ("" when tested)
    p_two: float = math.nan  # two-sided (differs) or one-sided p of the claim
    p_holm: float = math.nan
    p_holm_contrary: float = math.nan  # the opposite one-sided claim, Holm over the same family

    @property
    def sign(self) -> int:
        d = direction(self.claim.metric or "")
        return -d if self.claim.expect == "worse" else d

    @property
    def title(self) -> str:
        c = self.claim
        if c.text:
            return c.text
        what = {"better": "better than", "worse": "worse than", "differs": "vs"}[c.expect]
        margin = f" (or within {c.margin:g} points)" if c.margin else ""
        return f"{side(c.row, c.post)} {what} {side(c.vs, c.vs_post)}{margin}, {c.metric}"

    @property
    def mark(self) -> str:
        """✓ / ✗: significantly better / worse in the metric's direction (after Holm)."""
        if self.untested:
            return ""
        d = direction(self.claim.metric or "")
        if self.claim.expect == "differs":
            if self.p_holm < ALPHA:
                return "✓" if self.test.delta * d > 0 else "✗"
            return ""
        if self.p_holm < ALPHA:  # the claim holds
            return "✓" if self.sign == d else "✗"
        if self.p_holm_contrary < ALPHA:  # its opposite does
            return "✗" if self.sign == d else "✓"
        return ""

    @property
    def verdict(self) -> str:
        if self.untested:
            return f"untested ({self.untested})"
        if self.p_holm < ALPHA:
            return "significant"
        if self.claim.expect == "differs":
            return "not significant"
        if self.sign * self.test.delta > -self.claim.margin / 100:
            return "same direction, not significant"
        return "not observed"


def fmt_p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def points(x: float, digits: int = 1) -> str:
    """A difference in points with its sign; never "-0.0" or "+0.0"."""
    v = round(100 * x, digits)
    return f"{0.0:.{digits}f}" if v == 0 else f"{v:+.{digits}f}"


def evaluate(claims: list[Claim], df: pd.DataFrame) -> list[Result]:
    results = []
    for i, c in enumerate(claims, 1):
        metric = c.metric or ""
        a = by_seed(df, c.row, key_of(c.post, metric))
        b = by_seed(df, c.vs, key_of(c.vs_post, metric))
        paired = c.row == c.vs
        d = direction(metric)
        sign = -d if c.expect == "worse" else d
        margin = c.margin / 100
        if paired:
            common = sorted(set(a) & set(b))
            xa, xb = [a[s] for s in common], [b[s] for s in common]
        else:
            xa, xb = list(a.values()), list(b.values())
        test = compare(xa, xb, paired=paired, sign=1 if c.expect == "differs" else sign,
                       margin=0.0 if c.expect == "differs" else margin)
        r = Result(i, c, test, a, b, paired)
        spread = ([pd.Series([x - y for x, y in zip(xa, xb, strict=True)]).std()] if paired
                  else [pd.Series(xa).std(), pd.Series(xb).std()])
        if min(test.n_a, test.n_b) < MIN_N:
            r.untested = f"n = {test.n_a}/{test.n_b}: a test needs {MIN_N} seeds per side"
        elif any(not s > MIN_STD for s in spread):
            r.untested = ("identical per-seed differences" if paired
                          else "identical values across seeds on one side") + ": the seeds did not vary the runs"
        elif c.expect == "differs":
            r.p_two = min(1.0, 2 * min(test.p, 1 - test.p))
        else:
            r.p_two = test.p
            contrary = compare(xa, xb, paired=paired, sign=-sign, margin=-margin)
            r.p_holm_contrary = contrary.p  # adjusted below
        results.append(r)
    # the family: every declared claim (an untested one enters as p = 1)
    for r, p in zip(results, holm([1.0 if r.untested else r.p_two for r in results]), strict=True):
        r.p_holm = math.nan if r.untested else p
    contrary = holm([r.p_holm_contrary if not math.isnan(r.p_holm_contrary) else 1.0 for r in results])
    for r, p in zip(results, contrary, strict=True):
        r.p_holm_contrary = p if not r.untested and r.claim.expect != "differs" else math.nan
    return results


def line(r: Result) -> str:
    """One claim as the report prints it: verdict, means, Δ with its 95% interval, test, p."""
    t = r.test
    if t.n_a == 0 or t.n_b == 0:
        return f"[{r.number}] {r.title}: not enough finished runs to tell (n = {t.n_a}/{t.n_b})."
    ma = sum(r.a.values()) / len(r.a) if r.a else math.nan
    mb = sum(r.b.values()) / len(r.b) if r.b else math.nan
    ci = "" if math.isnan(t.ci_low) else f", 95% CI {points(t.ci_low)} to {points(t.ci_high)}"
    kind = "two-sided" if r.claim.expect == "differs" else "one-sided"
    test = "" if r.untested else f"; {kind} {t.test}, {fmt_p(r.p_two)}, Holm {fmt_p(r.p_holm)}"
    return (f"[{r.number}] {r.title}: **{r.verdict}** ({100 * ma:.1f} vs {100 * mb:.1f}, "
            f"Δ {points(t.delta)} points{ci}{test}, n = {t.n_a}/{t.n_b}).")


def family(results: list[Result]) -> str:
    """The sentence under a table naming the Holm family and each claim's test."""
    if not results:
        return ""
    parts = [f"[{r.number}] {r.title}: {'paired t' if r.paired else 'Welch t'}" for r in results]
    return (f"Δ columns: the {len(results)} declared claim{'s' if len(results) > 1 else ''}, "
            f"Holm-corrected as one family: " + "; ".join(parts) + ".")
