"""`harness decide`: each table's `decide` claims, decided group-sequentially from the store.

A table's `decide` section (spec) names the claims and the design: the looks (seeds per row), the
cap, α and the spending function. This module reads the finished runs of the claims' rows for the
design's seeds (`seeds_for`: the spec's own seeds, then new numbers after its largest), hands the
per-seed values to `sequential.decide` and says what to run next (`sequential.plan`): which rows,
which seed numbers. It trains nothing and writes nothing; `harness run --until-decided` runs the
plan and asks again.

A look counts only the seeds in order: a row's values are its finished seeds from the first
planned one up to the first that is not finished (a failed or missing seed stops the row there,
and the plan names it), so a look always reads the first seeds the design planned.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from harness.report import sequential as sq
from harness.report.claims import claims_of, side
from harness.report.collect import collect
from harness.report.tables import LAYOUTS
from harness.spec.load import LoadedSpec
from harness.spec.matrix import Cell, expand, seeds_for
from harness.spec.schema import Claim
from harness.track.names import eval_key


@dataclass
class TableDecision:
    """One table's sequential decision: its design, claims (numbered by their index in the
    table's `claims`), per-claim results, the plan, and the seed numbers of the design."""

    table: str
    design: sq.Design
    claims: list[Claim]
    results: list[sq.SequentialResult]
    plan: sq.Plan
    seeds: list[int]
    have: dict[str, int] = field(default_factory=dict)  # row -> finished seeds in order
    blocked: dict[str, str] = field(default_factory=dict)  # row -> why its next seed does not count

    def next_cells(self) -> dict[str, list[int]]:
        """Row -> the seed numbers to run for the next look (a row shared by claims once)."""
        if self.plan.seeds is None:
            return {}
        # a paired claim counts the seeds both sides have, so a row may already hold its share
        cells = {row: self.seeds[self.have.get(row, 0):self.plan.seeds] for row, need in self.plan.rows.items()
                 if need > 0}
        return {row: seeds for row, seeds in cells.items() if seeds}

    @property
    def decided(self) -> bool:
        return not self.plan.open

    def to_json(self) -> dict:
        return {"table": self.table, "design": self.design.to_json(), "seeds": self.seeds,
                "claims": [{"number": r.hypothesis.number, "text": c.text, "row": side(c.row, c.post),
                            "vs": side(c.vs, c.vs_post), "metric": c.metric, **r.to_json()}
                           for c, r in zip(self.claims, self.results, strict=True)],
                "next": {"look": self.plan.look, "seeds": self.plan.seeds, "cells": self.next_cells()},
                "have": self.have, "blocked": self.blocked, "decided": self.decided}


def design_of(ld: LoadedSpec, name: str) -> sq.Design:
    d = ld.spec.tables[name].decide
    return sq.Design(tuple(d.looks), alpha=d.alpha, spending=d.spending, futility=d.futility)


def deciding_tables(ld: LoadedSpec) -> list[str]:
    return [name for name, t in ld.spec.tables.items() if t.decide is not None]


def cells_to_decide(ld: LoadedSpec, overrides=()) -> list[Cell]:
    """Every cell a decision may read or run: the claims' rows at every seed up to each cap."""
    cap = max((ld.spec.tables[n].decide.looks[-1] for n in deciding_tables(ld)), default=0)
    rows = {r for n in deciding_tables(ld) for c in _selected(ld, n) for r in (c.row, c.vs)}
    if not rows:
        return []
    return expand(ld, list(overrides), rows=rows, seeds=seeds_for(ld, cap))


def _selected(ld: LoadedSpec, name: str) -> list[Claim]:
    table = ld.spec.tables[name]
    claims = claims_of(ld.spec, name, LAYOUTS[table.layout].seeded[0].metric)
    return [claims[i] for i in (table.decide.claims if table.decide.claims is not None else range(len(claims)))]


def _prefix(df: pd.DataFrame, row: str, key: str, seeds: list[int]) -> tuple[dict[int, float], str]:
    """The row's values of `key` for the planned seeds in order, up to the first that does not
    count, and why that one does not (empty when every planned seed counts)."""
    mine = df[df["row"] == row]
    dataset = mine["dataset"].iloc[0] if len(mine) else None
    out: dict[int, float] = {}
    for seed in seeds:
        rec = mine[(mine["seed"] == seed) & (mine["dataset"] == dataset)]
        if rec.empty or rec["status"].iloc[0] != "finished":
            status = rec["status"].iloc[0] if len(rec) else "missing"
            reason = rec["failure"].iloc[0] if len(rec) and rec["failure"].iloc[0] else ""
            return out, "" if status == "missing" else f"seed {seed} {status}" + (f" ({reason})" if reason else "")
        value = rec[key].iloc[0] if key in rec else float("nan")
        if pd.isna(value) or not math.isfinite(float(value)):
            return out, f"seed {seed}: {key} is not a finite number"
        out[seed] = float(value)
    return out, ""


def decide_tables(ld: LoadedSpec, cells: list[Cell], uri: str, listing=None) -> list[TableDecision]:
    """Each deciding table's decision from the finished runs in the store at `uri` (`listing`:
    the store's run listing when the caller has read it already, as the report has)."""
    df = collect(cells, uri, ld.spec.name, listing)
    out = []
    for name in deciding_tables(ld):
        design = design_of(ld, name)
        seeds = seeds_for(ld, design.cap)
        table = ld.spec.tables[name]
        numbers = table.decide.claims if table.decide.claims is not None else range(len(table.claims))
        claims = _selected(ld, name)
        values, have, blocked = [], {}, {}
        for claim in claims:
            pair = []
            for row, post in ((claim.row, claim.post), (claim.vs, claim.vs_post)):
                got, why = _prefix(df, row, eval_key(post, claim.metric), seeds)
                pair.append(got)
                have[row] = min(have.get(row, len(got)), len(got))
                if why:
                    blocked[row] = why
            values.append(tuple(pair))
        hypotheses = [sq.hypothesis_of(c, n) for c, n in zip(claims, numbers, strict=True)]
        results = sq.decide(design, hypotheses, values)
        out.append(TableDecision(name, design, claims, results, sq.plan(design, results), seeds, have, blocked))
    return out


def lines(d: TableDecision) -> list[str]:
    """What `harness decide` prints for one table."""
    design = d.design
    stop = ("no futility stopping" if design.futility is None else
            f"futility stop below t {design.futility:g} before the cap")
    out = [f"{d.table}: looks at {', '.join(map(str, design.looks))} seeds per row (cap {design.cap}), "
           f"α = {design.alpha:g}, {design.spending.replace('_', '-')} spending, {stop}"]
    for c, r in zip(d.claims, d.results, strict=True):
        out.append(f"  claim {r.hypothesis.number}: {c.text or side(c.row, c.post) + ' vs ' + side(c.vs, c.vs_post)}")
        for lk in r.looks:
            stat = " / ".join(f"{t:+.2f}" for t in lk.statistic)  # TOST: the lower and the upper null's
            weak = "" if lk.futility is None else f", futility {lk.futility:g}"
            out.append(f"    look {lk.look} at {lk.seeds} seeds: t {stat} (df {lk.df:g}), boundary "
                       f"±{lk.boundary:.2f}{weak} (level {lk.level:.4g}): {lk.verdict}")
        interval = "" if r.low is None else (f"; Δ {100 * r.estimate:+.2f} points, {100 * r.confidence:.4g}% "
                                             f"repeated interval [{100 * r.low:+.2f}, {100 * r.high:+.2f}]")
        why = f" ({r.untested})" if r.untested else ""
        if r.verdict == sq.FOR_FUTILITY and r.looks:
            lk = r.looks[-1]
            what = {"two-sided": "|t|", "equivalence": "the smaller t"}.get(r.hypothesis.kind, "t")
            why = (f" at look {lk.look}: {what} {_weakest(r.hypothesis.kind, lk.statistic):+.2f} below {lk.futility:g}; "
                   "inconclusive, not contradicted")
        if r.crossed_look is not None:
            why += (f" (the Holm level rose to {r.level:.4g} at look {r.stop_look}: look {r.crossed_look}'s t "
                    f"crossed that level's boundary ±{r.crossed_boundary:.2f})")
        if r.disjoint and interval:
            interval += " (the looks' intervals do not intersect: the last look's)"
        out.append(f"    verdict: {r.verdict}{why}{interval}")
    for row, why in sorted(d.blocked.items()):
        out.append(f"  {row}: {why}; the seeds after it do not count until it finishes")
    cells = d.next_cells()
    if cells:
        todo = "; ".join(f"{row}: seeds {', '.join(map(str, seeds))}" for row, seeds in cells.items())
        out.append(f"  next: look {d.plan.look} at {d.plan.seeds} seeds per row; run {todo}")
    elif d.decided:
        out.append("  every claim is decided, at its cap or stopped for futility")
    return out


def _weakest(kind: str, t: tuple[float, ...]) -> float:
    """The look's statistic the futility threshold was compared with (`sq.futility_statistic`)."""
    return float(sq.futility_statistic(kind, np.asarray(t, dtype=float)[:, None])[0])


def record_looks(uri: str, ld: LoadedSpec, decisions: list[TableDecision]) -> list[str]:
    """Write each look made to the spec's decision run in the store (`harness.decide.<table>.look<k>`:
    its seeds, the rule, the futility threshold at the look and every claim's verdict after it),
    so that every look a procedure made is on record; returns a line for each look recorded
    earlier that reads differently now (a run of its seeds changed since: the store, not the
    design, moved). A look recorded by an earlier rule (no `rule` in its record: the stage-wise
    rule; no `futility`: the t rule before futility stopping) that reads the same now is no
    change; one that reads differently (a claim open then is stopped for futility now, say) is
    said to be the rule's doing, and the procedure goes on by the current rule (its verdicts
    are re-derived from the planned seeds' values, as always). A look recorded with another
    futility threshold than the design's now is named as a change of the design."""
    from harness.track.runs import end_run, named_run, record, run_tags_of

    run = named_run(uri, ld.spec.name, "harness.decision", ld.spec.name, run_name=f"decide:{ld.spec.name}")
    before, new, notes = run_tags_of(uri, run), {}, []
    for d in decisions:
        looks: dict[int, dict] = {}
        for r in d.results:
            for lk in r.looks:
                looks.setdefault(lk.look, {"seeds": lk.seeds, "rule": sq.RULE_T, "futility": lk.futility,
                                           "claims": {}})["claims"][str(r.hypothesis.number)] = lk.verdict
        for k, look in sorted(looks.items()):
            key, text = f"harness.decide.{d.table}.look{k}", json.dumps(look, sort_keys=True)
            if key not in before:
                new[key] = text
                continue
            if before[key] == text:
                continue
            try:
                old = json.loads(before[key])
            except ValueError:
                old = None
            if isinstance(old, dict) and ("rule" not in old or "futility" not in old):  # an earlier rule's
                if old == {x: v for x, v in look.items() if x in old}:
                    continue
                earlier = sq.RULE_STAGEWISE if "rule" not in old else f"{sq.RULE_T} without futility stopping"
                notes.append(f"{d.table}: look {k} was recorded by the earlier rule ({earlier}) as "
                             f"{before[key]}; the current rule reads {text} and the procedure goes on by it")
            elif isinstance(old, dict) and old.get("futility") != look["futility"]:
                notes.append(f"{d.table}: look {k} was recorded with futility threshold {old.get('futility')} as "
                             f"{before[key]}; the design now says {look['futility']} and reads {text}: the design "
                             "changed during the procedure")
            else:
                notes.append(f"{d.table}: look {k} was recorded as {before[key]} and now reads {text}: "
                             "a run of its seeds changed since")
    if new:
        record(uri, run, tags=new)
    end_run(uri, run, "FINISHED")
    return notes
