"""The confirmation of a sweep: the top trials of the search and the defaults, re-scored on fresh
seeds and held-out images, and the winner tested against the defaults.

Why: the best of N noisy trials is biased upward (the winner's curse): its search score says how
lucky it was as much as how good it is. Re-running it on seeds and images the search never saw
gives an unbiased score, and the **selection gap** says how much of the search's score was luck:

- per confirmed trial, search mean minus confirmation mean (which also moves with how hard
  the two image sets are), and
- the gap of the gain: the trial's gain over the defaults on the search split minus its gain
  on the confirmation split (the image sets' difficulty cancels: what the selection added).

The winner is the confirmed trial with the best confirmation mean. Each confirmed trial is
compared with the defaults by the claims code `harness report` uses (`claims.evaluate`: the
paired t on the per-seed differences, the confirmation runs sharing seeds and images; Holm over
the k comparisons, since the winner is picked on these very runs). "No better than the defaults"
is an outcome: the winner is the defaults, or its claim does not hold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from harness.report import claims as cl
from harness.report.stats import direction
from harness.report.sweep import metric_name
from harness.spec.schema import Claim
from harness.track.names import eval_key, parse_eval_key

DEFAULTS = "defaults"
BETTER = "better than the defaults"


@dataclass
class Confirmed:
    """One confirmed trial: its number (the defaults' own trial, or -1), parameters, and its
    per-seed objective values on each split (seed -> value; missing seeds did not finish)."""

    number: int
    params: dict
    defaults: bool
    search: dict[int, float] = field(default_factory=dict)
    confirm: dict[int, float] = field(default_factory=dict)
    run_ids: dict[int, str] = field(default_factory=dict)  # confirmation seed -> run id
    confirm2: dict[int, float] = field(default_factory=dict)  # the secondary objective, if any

    @property
    def label(self) -> str:
        return DEFAULTS if self.defaults else f"trial {self.number}"


def _stats(values: dict[int, float]) -> dict:
    x = list(values.values())
    return {"mean": float(np.mean(x)) if x else math.nan,
            "std": float(np.std(x, ddof=1)) if len(x) > 1 else math.nan, "n": len(x)}


def analyse(confirmed: list[Confirmed], objective: str, maximize: bool) -> dict:
    """The confirmation's numbers and verdicts as plain data (what the report prints and its JSON
    holds). objective: the sweep's metric key (`eval.nms_free.ap50`)."""
    sign = 1 if maximize else -1
    base = next((c for c in confirmed if c.defaults), None)
    rows = []
    for c in confirmed:
        s, f = _stats(c.search), _stats(c.confirm)
        row = {"trial": c.number, "label": c.label, "defaults": c.defaults, "params": c.params,
               "search": s, "confirm": f, "search_values": c.search, "confirm_values": c.confirm,
               "gap": s["mean"] - f["mean"]}
        if c.confirm2:
            row["confirm2"] = _stats(c.confirm2)
            row["confirm2_values"] = c.confirm2
        if base is not None and not c.defaults:
            bs, bf = _stats(base.search)["mean"], _stats(base.confirm)["mean"]
            row["gain_search"] = s["mean"] - bs
            row["gain_confirm"] = f["mean"] - bf
            row["gain_gap"] = sign * (row["gain_search"] - row["gain_confirm"])
        rows.append(row)
    scored = [r for r in rows if r["confirm"]["n"]]
    winner = max(scored, key=lambda r: (sign * r["confirm"]["mean"], -r["trial"])) if scored else None
    tests = _tests(confirmed, objective, maximize)
    out = {"trials": rows, "winner": winner["label"] if winner else None, "tests": tests}
    out["outcome"] = _outcome(winner, tests)
    out["better"] = out["outcome"].startswith(BETTER)
    pick = winner if out["better"] or base is None else next(r for r in rows if r["defaults"])
    out["recommended"] = {"label": pick["label"], "params": pick["params"]} if pick else None
    return out


def _tests(confirmed: list[Confirmed], objective: str, maximize: bool) -> list[dict]:
    """Each confirmed trial against the defaults on the confirmation runs: one Holm family."""
    base = next((c for c in confirmed if c.defaults), None)
    others = [c for c in confirmed if not c.defaults]
    if base is None or not others:
        return []
    post, metric = parse_eval_key(objective)
    key = eval_key(post, metric)
    better = maximize == (direction(metric) > 0)
    claims = [Claim(row=c.label, vs=DEFAULTS, post=post, vs_post=post, metric=metric,
                    expect="better" if better else "worse", paired=True,
                    pairing="the same confirmation seeds and images",
                    text=f"{c.label} {'better' if maximize else 'lower'} than the defaults ({metric_name(objective)})")
              for c in others]
    records = [{"row": c.label, "status": "finished", "dataset": "", "seed": seed, "run_id": c.run_ids.get(seed),
                key: value} for c in confirmed for seed, value in c.confirm.items()]
    df = pd.DataFrame(records, columns=["row", "status", "dataset", "seed", "run_id", key])
    results = cl.evaluate(claims, df)
    return [{"label": r.claim.row, "verdict": r.verdict, "holds": r.holds, "delta": r.test.delta,
             "low": r.low, "high": r.high, "p": r.p, "p_holm": r.p_holm, "n": min(r.test.n_a, r.test.n_b),
             "seeds_needed": r.seeds_observed, "line": cl.line(r)} for r in results]


def _outcome(winner: dict | None, tests: list[dict]) -> str:
    if winner is None:
        return "no confirmation runs finished"
    if winner["defaults"]:
        return "no better than the defaults: the defaults have the best confirmation mean"
    test = next((t for t in tests if t["label"] == winner["label"]), None)
    if test is None:
        return f"{winner['label']} has the best confirmation mean; the defaults were not confirmed, so no test"
    if test["holds"]:
        return f"{BETTER}: {winner['label']} on the confirmation split ({test['verdict']})"
    return f"no better than the defaults: {winner['label']} has the best confirmation mean, but its claim is {test['verdict']}"


__all__ = ["DEFAULTS", "Confirmed", "analyse"]
