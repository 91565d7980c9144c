"""Does the sequential decision procedure control its errors, and does it save seeds? (a
benchmark, not a test)

Simulates whole procedures through `harness.report.sequential.decide_arrays`, the function
`sequential.decide` (what `harness decide` runs on the store) calls: per-seed values drawn
normal with σ = 1 (paired: the per-seed differences), every look of the design, the verdicts and
the seeds each claim used. Per design (look schedule × spending function):

- one claim alone (level α), paired and unpaired: superiority (true Δ = 0, the null, and 0.5, 1,
  2 σ); non-inferiority with margin 1 σ (Δ = -m, the null, and -m + 0.5, 1, 2 σ); two-sided
  (Δ = 0 and 0.5, 1, 2 σ); equivalence (TOST) with margins 0.5, 1, 2 σ at Δ = 0 (its "effect" is
  the distance to the margins, m) and at Δ = m (the null);
- the same superiority null with unequal variances (σ_b = 2 σ_a, unpaired): the pooled
  t-test's robustness, printed, not a target;
- families (Holm with the spending): two superiority claims against a shared row; three claims
  (A and B better than C, A equivalent to B within ±1 σ); two paired claims and an unpaired one.

It prints P(holds) (the type-I error under a null, the power otherwise), P(contradicted), the
mean seeds per side the claim used, the seeds per side of the fixed design with the same power
(`power.seeds_needed` at the claim's level: α alone, α / m in a family as the report plans), their
ratio, and for single claims the coverage of the final interval (the intersection of repeated
confidence intervals at the claim's level; nominal 1 - 2α, two-sided claims 1 - α) on the first
`--coverage` procedures.

The designs stop a claim for futility as shipped (`sequential.FUTILITY`: t < 0.35 at a look
before the cap; `--futility none` or another threshold to compare), and for each effect of 1σ
the power and mean seeds of the same draws without the stop are printed too (its cost).

    python bench/decide_calibration.py [--sims 10000] [--quick] [--seed 0] [--looks 3,5,8,12 ...]
                                       [--futility 0.35|none]

Settings under a null run 4 × sims procedures: the rule's type-I error is exactly α = 0.05 at
most, and with about a hundred null settings at 10,000 each (standard error 0.0022) one would
land above 0.055 by chance alone; at 40,000 the bound is 4.6 standard errors away.

Targets (issue 29): type-I error (family-wise in families) <= 0.055 for every design and
setting (--quick: 0.05 + 4 standard errors), coverage >= nominal - 4 standard errors, and mean
seeds below the fixed design of equal power for effects >= 1 σ. Exit 1 when a type-I or coverage
target is missed; the seeds target is reported per design, each setting that misses it with its
power, mean seeds and fixed seeds.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import replace

import numpy as np

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))  # this checkout's harness

from harness.report.sequential import (  # noqa: E402
    CONTRADICTED,
    FUTILITY,
    HOLDS,
    SPENDING,
    Design,
    Hypothesis,
    decide_arrays,
    draw,
    fixed_seeds,
)

ALPHA = 0.05
LOOKS = ((3, 5, 8, 12), (4, 8, 12))
EFFECTS = (0.5, 1.0, 2.0)


def single_settings():
    """(claim name, kind, paired, margin, [(label, true Δ, is the null, effect size)]), σ units."""
    out = []
    for paired in (True, False):
        pair = "paired" if paired else "unpaired"
        out.append((f"superiority {pair}", "superiority", paired, 0.0,
                    [("null", 0.0, True, 0.0)] + [(f"{e:g}σ", e, False, e) for e in EFFECTS]))
        out.append((f"non-inferiority m=1σ {pair}", "non-inferiority", paired, 1.0,
                    [("Δ=-m", -1.0, True, 0.0)] + [(f"-m+{e:g}σ", -1.0 + e, False, e) for e in EFFECTS]))
        out.append((f"two-sided {pair}", "two-sided", paired, 0.0,
                    [("null", 0.0, True, 0.0)] + [(f"{e:g}σ", e, False, e) for e in EFFECTS]))
        for m in EFFECTS:
            out.append((f"equivalence m={m:g}σ {pair}", "equivalence", paired, m,
                        [("Δ=m", m, True, 0.0), ("Δ=0", 0.0, False, m)]))
    return out


def run_single(design, kind, paired, margin, delta, sims, coverage, rng, sd_b=1.0, without=False):
    """P(holds), P(contradicted), mean seeds, coverage of the first `coverage` intervals; with
    `without`, also P(holds) and mean seeds of the same design without futility stopping on the
    same draws."""
    h = Hypothesis(1, "a", "b", kind, 1, margin, paired)
    values = [draw(rng, sims, design.cap, delta, paired, sd_b)]
    batch = decide_arrays(design, [h], values)
    held = float(np.mean(batch.status[:, 0] == HOLDS))
    contra = float(np.mean(batch.status[:, 0] == CONTRADICTED))
    seeds = float(np.mean(batch.seeds(0)))
    cover = None
    if coverage:
        sub = _subset(batch, coverage)
        low, high = sub.interval(0)
        cover = float(np.mean((low < delta) & (delta < high)))
    if not without:
        return held, contra, seeds, cover
    plain = decide_arrays(replace(design, futility=None), [h], values)
    return held, contra, seeds, cover, float(np.mean(plain.status[:, 0] == HOLDS)), float(np.mean(plain.seeds(0)))


def _subset(batch, n):
    """The first n procedures of a batch (for the interval, which costs more)."""
    cut = slice(0, n)
    return replace(batch, status=batch.status[cut], stop=batch.stop[cut], level=batch.level[cut],
                   made=batch.made[cut], level_at=batch.level_at[cut], stats=[z[:, cut] for z in batch.stats],
                   est=[e[cut] for e in batch.est], se=[s[cut] for s in batch.se], df=[d[cut] for d in batch.df],
                   spread=[s[cut] for s in batch.spread])


# ------------------------------------------------------------------ families


def family_settings():
    """(name, claims [(kind, paired, margin, side a, side b)], [(config label, means per side,
    paired shifts)]): sides are rows A, B, C (unpaired values, σ 1) or A+/A-, B+/B- (the same
    runs post-processed twice: A- = A+ - shift + N(0, 1))."""
    return [
        ("2 superiority vs shared C", [("superiority", False, 0.0, "A", "C"), ("superiority", False, 0.0, "B", "C")],
         [("all equal", {"A": 0, "B": 0, "C": 0}), ("A=C+2σ", {"A": 2, "B": 0, "C": 0}),
          ("A=B=C+1σ", {"A": 1, "B": 1, "C": 0})]),
        ("A>C, B>C, A≈B ±1σ", [("superiority", False, 0.0, "A", "C"), ("superiority", False, 0.0, "B", "C"),
                                ("equivalence", False, 1.0, "A", "B")],
         [("all equal", {"A": 0, "B": 0, "C": 0}), ("B=C+1σ", {"A": 0, "B": 1, "C": 0}),
          ("A=B=C+1σ", {"A": 1, "B": 1, "C": 0})]),
        ("A+>A-, B+>B- paired, A+>B+", [("superiority", True, 0.0, "A+", "A-"), ("superiority", True, 0.0, "B+", "B-"),
                                         ("superiority", False, 0.0, "A+", "B+")],
         [("all equal", {"A": 0, "B": 0, "dA": 0, "dB": 0}), ("dA=2σ", {"A": 0, "B": 0, "dA": 2, "dB": 0}),
          ("dA=dB=1σ, A=B+1σ", {"A": 1, "B": 0, "dA": 1, "dB": 1})]),
    ]


def _draw_family(rng, sims, cap, means):
    if "dA" in means:
        out = {}
        for row in ("A", "B"):
            plus = rng.normal(means[row], 1.0, (sims, cap))
            out[row + "+"], out[row + "-"] = plus, plus - means["d" + row] + rng.normal(0.0, 1.0, (sims, cap))
        return out
    return {row: rng.normal(mu, 1.0, (sims, cap)) for row, mu in means.items()}


def _true_delta(kind, means, a, b):
    if "dA" in means:
        if a[0] == b[0]:
            return means["d" + a[0]]
        return means[a[0]] - means[b[0]]
    return means[a] - means[b]


def _is_null(kind, delta, margin):
    if kind == "equivalence":
        return abs(delta) >= margin
    if kind == "two-sided":
        return delta == 0
    return delta <= -margin


# ------------------------------------------------------------------ main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sims", type=int, default=10000, help="procedures per setting")
    ap.add_argument("--coverage", type=int, default=4000, help="procedures per setting whose interval is checked")
    ap.add_argument("--quick", action="store_true", help="300 procedures per setting, 300 intervals (tests)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--looks", nargs="+", default=[",".join(map(str, lk)) for lk in LOOKS],
                    help="look schedules, e.g. 3,5,8,12")
    ap.add_argument("--futility", default=str(FUTILITY),
                    help=f"the designs' futility threshold on the t scale, or 'none' (default: as shipped, {FUTILITY:g})")
    args = ap.parse_args()
    futility = None if args.futility.lower() in ("none", "null") else float(args.futility)
    if args.quick:
        args.sims, args.coverage = 300, 300
    null_sims = 4 * args.sims
    type1_target = 0.055 if null_sims >= 40000 else 0.05 + 4 * math.sqrt(0.05 * 0.95 / null_sims)
    schedules = [tuple(int(x) for x in s.split(",")) for s in args.looks]
    t0 = time.perf_counter()
    stream = np.random.SeedSequence(args.seed)
    worst_type1, worst_cover_gap, seeds_misses, per_design, costs = 0.0, 0.0, {}, {}, {}
    rule = ("no futility stopping" if futility is None else
            f"futility stop at interim looks when t < {futility:g} (two-sided |t|; equivalence the smaller one-sided t)")
    print(f"{args.sims} simulated procedures per setting, {null_sims} under a null (intervals: the first "
          f"{args.coverage}), α = {ALPHA}, σ = 1 (paired: of the differences); seeds are per side; {rule}")
    head = (f"{'claim':<30} {'true Δ':>8} {'holds':>7} {'contra':>7} {'seeds':>6} {'fixed':>6} {'ratio':>6} "
            f"{'cover':>6}")
    for looks in schedules:
        for spending in SPENDING:
            design = Design(looks, ALPHA, spending, futility)
            name = f"looks {','.join(map(str, looks))}, {spending}"
            seeds_misses[name], costs[name] = [], []
            per_design[name] = [0.0, 0.0, 0.0]  # largest type-I error single, family-wise, coverage gap
            bp, bu = (", ".join(f"{x:.3f}" for x in design.bounds(ALPHA, paired)) for paired in (True, False))
            print(f"\n== {name} (one-sided t boundaries at α = {ALPHA}: paired {bp}; unpaired {bu})")
            print(head)
            for claim, kind, paired, margin, cases in single_settings():
                for label, delta, null, effect in cases:
                    rng = np.random.default_rng(stream.spawn(1)[0])
                    sims = null_sims if null else args.sims
                    compare = futility is not None and effect == 1
                    held, contra, seeds, cover, *plain = run_single(design, kind, paired, margin, delta, sims,
                                                                    args.coverage, rng, without=compare)
                    if compare:
                        costs[name].append(f"{claim} {label}: power {held:.3f} / {plain[0]:.3f}, "
                                           f"seeds {seeds:.2f} / {plain[1]:.2f}")
                    nominal = 1 - ALPHA if kind == "two-sided" else 1 - 2 * ALPHA
                    se = math.sqrt(nominal * (1 - nominal) / min(args.coverage, sims))
                    worst_cover_gap = max(worst_cover_gap, (nominal - cover) / se)
                    per_design[name][2] = max(per_design[name][2], (nominal - cover) / se)
                    if null:
                        worst_type1 = max(worst_type1, held)
                        per_design[name][0] = max(per_design[name][0], held)
                        fixed_text, ratio_text = "", ""
                    else:
                        fixed = fixed_seeds(kind, paired=paired, effect=delta, margin=margin, alpha=ALPHA, power=held)
                        fixed_text = str(fixed) if fixed else "-"
                        ratio_text = f"{seeds / fixed:.2f}" if fixed else "-"
                        if effect >= 1 and fixed and not seeds < fixed:
                            seeds_misses[name].append(f"{claim} {label} (power {held:.3f}, {seeds:.2f} seeds "
                                                      f"vs fixed {fixed})")
                    print(f"{claim:<30} {label:>8} {held:>7.4f} {contra:>7.4f} {seeds:>6.2f} {fixed_text:>6} "
                          f"{ratio_text:>6} {cover:>6.3f}")
            rng = np.random.default_rng(stream.spawn(1)[0])
            held, contra, seeds, _ = run_single(design, "superiority", False, 0.0, 0.0, null_sims, 0, rng, sd_b=2.0)
            print(f"{'superiority unpaired σb=2σa':<30} {'null':>8} {held:>7.4f} {contra:>7.4f} {seeds:>6.2f} "
                  f"{'':>6} {'':>6} {'':>6}  (robustness, not a target)")
            for fam, claims, configs in family_settings():
                hyps = [Hypothesis(i + 1, a, b, kind, 1, margin, paired)
                        for i, (kind, paired, margin, a, b) in enumerate(claims)]
                m = len(hyps)
                for label, means in configs:
                    rng = np.random.default_rng(stream.spawn(1)[0])
                    sims = null_sims if any(_is_null(kind, _true_delta(kind, means, a, b), margin)
                                            for kind, _, margin, a, b in claims) else args.sims
                    rows = _draw_family(rng, sims, design.cap, means)
                    batch = decide_arrays(design, hyps, [(rows[a], rows[b]) for _, _, _, a, b in claims])
                    wrong = np.zeros(sims, dtype=bool)
                    parts = []
                    for i, (kind, paired, margin, a, b) in enumerate(claims):
                        delta = _true_delta(kind, means, a, b)
                        held = batch.status[:, i] == HOLDS
                        seeds = float(np.mean(batch.seeds(i)))
                        if _is_null(kind, delta, margin):
                            wrong |= held
                            parts.append(f"[{i + 1}] null: holds {held.mean():.4f}, {seeds:.2f} seeds")
                        else:
                            power = float(held.mean())
                            fixed = fixed_seeds(kind, paired=paired, effect=delta, margin=margin, alpha=ALPHA / m,
                                                power=power)
                            ratio = f" = {seeds / fixed:.2f}" if fixed else ""
                            parts.append(f"[{i + 1}] holds {power:.4f}, {seeds:.2f} seeds vs fixed {fixed}{ratio}")
                    fwer = float(wrong.mean())
                    worst_type1 = max(worst_type1, fwer)
                    per_design[name][1] = max(per_design[name][1], fwer)
                    print(f"family {fam} | {label}: family-wise type-I {fwer:.4f}; " + "; ".join(parts))
    print()
    print(f"errors per design (target: type-I <= {type1_target:.3f}, coverage <= 4 standard errors below nominal):")
    for name, (single, family, gap) in per_design.items():
        print(f"  {name}: largest type-I error {single:.4f} single claims, {family:.4f} family-wise; coverage at most "
              f"{max(gap, 0.0):.2f} standard errors below nominal")
    print("seeds criterion (single claims: mean seeds below the fixed design of equal power at every "
          "effect >= 1σ), per design:")
    for name, misses in seeds_misses.items():
        status = "HOLDS" if not misses else f"FAILS at {len(misses)} setting(s): {'; '.join(misses)}"
        print(f"  {name}: {status}")
    if futility is not None:
        print(f"the futility stop's cost at effects of 1σ (power and mean seeds with futility t < {futility:g} / "
              "without, same draws), per design:")
        for name, lines in costs.items():
            print(f"  {name}:")
            for line in lines:
                print(f"    {line}")
    validity_ok = worst_type1 <= type1_target and worst_cover_gap <= 4
    print(f"\nlargest type-I error {worst_type1:.4f} (target <= {type1_target:.3f}); largest coverage shortfall "
          f"{max(worst_cover_gap, 0.0):.2f} standard errors below nominal (target <= 4); "
          f"wall time {time.perf_counter() - t0:.0f} s on one core")
    return 0 if validity_ok else 1


if __name__ == "__main__":
    sys.exit(main())
