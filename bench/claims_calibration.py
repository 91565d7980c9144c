"""Are the report's claim tests calibrated? (a benchmark, not a test: minutes of simulation)

Simulates per-seed values and decides each claim through `harness.report.claims.claim_decision`, the
function `harness report` decides every claim with, alone in its family (its Holm level is α):

- superiority, paired (the same runs post-processed twice: normal per-seed differences) and
  unpaired (Welch), true Δ = 0 (the null) and 1, 2, 3 σ;
- non-inferiority, unpaired, margin 1 σ: true Δ = -margin (the null) and -margin + 1, 2, 3 σ;
- equivalence (TOST), unpaired, true Δ = 0 with margins 1, 2, 3 σ (power), and true Δ on the
  margin (the null);

for n = 3, 5 and 10 seeds per side. It prints, per setting, how often the claim held (the type-I
error under the null, the empirical power otherwise) beside the power the report prints for that
effect (`harness.report.power`, the same call `claims._plan` makes).

    python bench/claims_calibration.py [--sims 20000] [--seed 0]

Targets (issue 26): type-I error <= 0.055 for every kind and n; |empirical - printed power| <=
0.03. Exit 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np

from harness.report import power as pw
from harness.report.claims import ALPHA, RULE, claim_decision

#: (name, claim kind, paired, margin in σ, [(label, true Δ in σ, is the null)])
SETTINGS = [
    ("superiority paired", "superiority", True, 0.0, [("null", 0.0, True)] + [(f"{k}σ", k, False) for k in (1, 2, 3)]),
    ("superiority Welch", "superiority", False, 0.0, [("null", 0.0, True)] + [(f"{k}σ", k, False) for k in (1, 2, 3)]),
    ("non-inferiority Welch, margin 1σ", "non-inferiority", False, 1.0,
     [("null", -1.0, True)] + [(f"-m+{k}σ", -1.0 + k, False) for k in (1, 2, 3)]),
]
EQUIVALENCE_MARGINS = (1.0, 2.0, 3.0)


def run(kind: str, paired: bool, n: int, delta: float, margin: float, sims: int, rng) -> float:
    """Fraction of simulated stores in which the claim holds."""
    held = 0
    for _ in range(sims):
        if paired:
            b = rng.normal(0.0, 1.0, n)
            a = b + rng.normal(delta, 1.0, n)  # differences ~ N(Δ, 1)
        else:
            a, b = rng.normal(delta, 1.0, n), rng.normal(0.0, 1.0, n)
        d = claim_decision(a.tolist(), b.tolist(), paired=paired, kind=kind, sign=1, margin=margin, level=ALPHA)
        held += d.verdict == "holds"
    return held / sims


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sims", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n", type=int, nargs="+", default=[3, 5, 10])
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    worst_type1, worst_gap = 0.0, 0.0
    print(f"{args.sims} simulated stores per setting, α = {ALPHA}, σ = 1 (per-seed std; paired: of the differences)")
    print(f"{'claim':<36} {'n':>3} {'true Δ':>8} {'held':>7} {'printed power':>14} {'gap':>7}")
    rows = []
    for name, kind, paired, margin, effects in SETTINGS:
        for n in args.n:
            for label, delta, null in effects:
                rows.append((name, kind, paired, margin, n, label, delta, null))
    for n in args.n:
        for m in EQUIVALENCE_MARGINS:
            rows.append((f"equivalence Welch, margin {m:g}σ", "equivalence", False, m, n, "0", 0.0, False))
            rows.append((f"equivalence Welch, margin {m:g}σ", "equivalence", False, m, n, "null (Δ = m)", m, True))
    for name, kind, paired, margin, n, label, delta, null in rows:
        held = run(kind, paired, n, delta, margin, args.sims, rng)
        if null:
            worst_type1 = max(worst_type1, held)
            print(f"{name:<36} {n:>3} {label:>8} {held:>7.4f} {'(type-I error)':>14}")
        else:
            printed = pw.power(delta, n, n, paired=paired, kind=RULE[kind], alpha=ALPHA, margin=margin)
            gap = held - printed
            worst_gap = max(worst_gap, abs(gap))
            print(f"{name:<36} {n:>3} {label:>8} {held:>7.4f} {printed:>14.4f} {gap:>+7.4f}")
    se = math.sqrt(0.25 / args.sims)
    print(f"\nlargest type-I error {worst_type1:.4f} (target <= 0.055); largest |empirical - printed power| "
          f"{worst_gap:.4f} (target <= 0.03; binomial SE of one estimate <= {se:.4f}); "
          f"{time.perf_counter() - t0:.0f} s")
    return 0 if worst_type1 <= 0.055 and worst_gap <= 0.03 else 1


if __name__ == "__main__":
    sys.exit(main())
