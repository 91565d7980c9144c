"""`harness report`: collect, aggregate, render the markdown report, plots and README regions."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import pandas as pd

from harness.report.claims import ALPHA
from harness.report.claims import line as claim_line
from harness.report.collect import collect, plot_histories
from harness.report.decide import cells_to_decide, decide_tables, deciding_tables
from harness.report.decide import lines as lines_of
from harness.report.readme import regions, rewrite
from harness.report.stats import summarize
from harness.report.tables import (
    LAYOUTS,
    Column,
    claims_table,
    confidence_table,
    pct,
    render_table,
    reproduction_table,
)
from harness.spec.errors import Problem, UserError
from harness.spec.load import LoadedSpec
from harness.spec.matrix import Cell
from harness.track.provenance import describe, override_hint, provenance
from harness.track.runs import (
    COUNTING_RULE,
    Listing,
    list_runs,
    read_listing,
)
from harness.track.store import display, read_only, short

NOT_LEARNED = 0.01  # headline AP (or AP50) below 1 % after training: the row did not learn


def _mean(df, row, key) -> tuple[float, list[float]]:
    vals = [float(v) for v in df[(df["row"] == row) & (df["status"] == "finished")].get(key, pd.Series(dtype=float))
            if pd.notna(v)]
    return (sum(vals) / len(vals) if vals else math.nan), vals


def convergence_check(hist: pd.DataFrame, rows: list[str], eval_key: str) -> str:
    """How many finished cells end with a lower training loss than at their first evaluation."""
    h = hist[hist["row"].isin(rows)]
    loss = h[h["key"] == "train.total_loss"].sort_values(["row", "seed", "step"], kind="stable")
    first_eval = h[h["key"] == eval_key].groupby(["row", "seed"])["step"].min().rename("first_eval")
    m = loss.merge(first_eval.reset_index(), on=["row", "seed"], how="inner")
    start = m[m["step"] <= m["first_eval"]].groupby(["row", "seed"])["value"].last()
    end = loss.groupby(["row", "seed"])["value"].last()
    ok, bad = 0, []
    for (row, seed), first in start.items():
        last = float(end[(row, seed)])
        if last < first:
            ok += 1
        else:
            bad.append(f"{row} seed {seed} ({first:.3g} -> {last:.3g})")
    text = (f"Convergence: {ok} of {len(start)} finished cells end with a lower training loss than at their "
            f"first evaluation")
    return text + (": not " + ", ".join(bad) + "." if bad else ".")


def history_cache() -> Path:
    """Where plot histories of finished runs are cached by run id ($HARNESS_CACHE, else
    ~/.cache/harness/histories)."""
    root = os.environ.get("HARNESS_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "harness" / "histories"


def _when(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ms / 1000)) if ms else "?"


def data_quality(df: pd.DataFrame, listing: Listing | None = None) -> list[str]:
    """Warnings about the data behind the tables: runs that are not the harness's, a key finished
    more than once (which run counts and by which rule), non-finite metrics, running cells."""
    out = []
    if listing is not None and listing.untagged:
        out.append(f"{listing.untagged} of {listing.total} runs in the experiment carry no `harness.run_key` tag "
                   "(not made by harness run): ignored.")
    for r in df[df["finished_runs"] > 1].itertuples():
        runs = ", ".join(f"{rid[:8]} (commit {(commit or 'unknown')[:10]}, {_when(start)})"
                         for rid, commit, start in r.finished)
        out.append(f"{r.row}/{r.dataset}/{r.seed} finished {r.finished_runs} times under one run key: {runs}; "
                   f"{COUNTING_RULE}: {str(r.run_id)[:8]}.")
    for r in df[df["nan_keys"].map(bool)].itertuples():
        out.append(f"{r.row}/{r.dataset}/{r.seed}: {', '.join(r.nan_keys)} NaN in run {str(r.run_id)[:8]}: "
                   "counted as a failure of that metric, not as a value.")
    running = df[df["status"] == "running"]
    if len(running):
        now = time.time()
        out.append("Running (not in the tables yet): " + "; ".join(
            f"{r.row}/{r.dataset}/{r.seed} run {str(r.run_id)[:8]}"
            + (f" (heartbeat {now - r.heartbeat:.0f} s ago)" if isinstance(r.heartbeat, float) and not math.isnan(r.heartbeat) else "")
            for r in running.itertuples()) + ".")
    return out


def build_report(loaded: LoadedSpec, cells: list[Cell], uri: str, out: Path | None,
                 against: tuple[str, ...] = (), listing: Listing | None = None, overrides=()):
    """The report's markdown, the README regions and the JSON results: (text, tables, data).
    With `out`, the figures are drawn beside it (`report` calls this only after every input was
    checked)."""
    spec = loaded.spec
    if not spec.tables:
        raise UserError(Problem(loaded.file, None, "tables", "the spec declares no tables to report"))
    listing = listing or list_runs(uri, spec.name)
    df = collect(cells, uri, spec.name, listing)
    n_finished = int((df["status"] == "finished").sum())
    plot_dir = (out.parent if out else Path("reports"))
    stem = out.stem if out else spec.name
    made = provenance(loaded, cells, uri, listing.runs)
    whole = made.get("")
    overridden = whole is not None and any(whole.overrides)
    title = f"# Report: {spec.name}" + (" (runs made with overrides)" if overridden else "")
    lines = [title, "", spec.description, "",
             f"{n_finished} of {len(cells)} cells finished (spec `{loaded.file}`, {len(spec.seeds)} seeds per row). "
             "Numbers are percentages; every cell of a table is the mean ± sample standard deviation over seeds.", ""]
    if whole is not None:
        lines += [" ".join(describe(whole)), ""]
    quality = data_quality(df, listing)
    for q in quality:
        print(f"warning: {q}", file=sys.stderr)
    if quality:
        lines += [f"> {q}" for q in quality] + [""]
    if n_finished < len(cells):
        hint = override_hint(loaded, cells, uri, listing.runs)
        if hint:
            print(hint, file=sys.stderr)
            lines += [f"> {hint}", ""]
    diverged = df[(df["status"] != "finished") & df["failure"].map(lambda f: isinstance(f, str) and f.startswith("diverged:"))]
    if len(diverged):  # a health rule or a non-finite loss ended them FAILED (train.health)
        lines += ["Diverged cells (FAILED, left out of the means): "
                  + "; ".join(f"{r.row}/{r.dataset}/{r.seed}: {r.failure}" for r in diverged.itertuples()) + ".", ""]
    tables: dict[str, str] = {}
    data = {"spec": spec.name, "spec_file": loaded.file, "description": spec.description, "cells": len(cells),
            "finished": n_finished, "seeds": list(spec.seeds), "alpha": ALPHA, "counting_rule": COUNTING_RULE,
            "units": "fractions (0.5 = 50 %), as logged; *_points in points", "tables": [],
            "provenance": whole.to_json() if whole is not None else None}
    hist = None
    if out is not None:  # histories only for plots: the tables need the listing alone
        keys = sorted({"train.total_loss"} | {c.key for t in spec.tables.values() for c in LAYOUTS[t.layout].seeded[:2]})
        hist = plot_histories(df, uri, keys, cache_dir=history_cache())
    for name, table in spec.tables.items():
        rt = render_table(name, spec, cells, df)
        rows = [r.label for r in spec.rows if r.table == name]
        data["tables"].append(table_json(name, spec, df, rt.results))
        mine = made.get(name)
        data["tables"][-1]["provenance"] = mine.to_json() if mine is not None else None
        claims_md, claims_legend = claims_table(rt.results)
        region = f"{rt.markdown}\n\n{rt.legend} {rt.noise}."
        if mine is not None and any(mine.overrides):  # a README table from overridden runs says so
            region += "\n\n" + " ".join(describe(mine)[:1])
        if claims_md:
            region += f"\n\n{claims_md}\n\n{claims_legend}"
        tables[name] = region + " Per-seed values, intervals and tests: `harness report`."
        lines += [f"## {rt.title}", ""]
        if mine is not None and whole is not None and mine != whole:  # this table's runs differ from the rest
            lines += [" ".join(describe(mine)), ""]
        lines += [rt.markdown, "", rt.noise, "", rt.legend, ""]
        if rt.results:
            lines += [f"### Claims of {rt.title}", "", claims_md, "", claims_legend, ""]
            lines += [f"- {claim_line(r)}" for r in rt.results] + [""]
        lines += ["Per-seed values:", ""] + [f"- {f}" for f in rt.footnotes] + [""]
        lines += ["95% t-intervals:", "", confidence_table(name, spec, df), ""]
        layout = LAYOUTS[table.layout]
        if hist is not None:
            lines += [convergence_check(hist, rows, layout.seeded[0].key), ""]
        idle = []
        for r in rows:
            m, vals = _mean(df, r, layout.headline(_headline(cells, r)).key)
            if vals and m < NOT_LEARNED:
                idle.append(f"{r} ({pct(m)})")
        if idle:
            lines += [f"Rows that did not learn at this scale (headline {layout.seeded[0].header} below "
                      f"{100 * NOT_LEARNED:.0f}%): " + ", ".join(idle) + ".", ""]
        if hist is not None:  # out is given: every input was checked (report), its folder exists
            lines += figures(spec, name, rows, df, hist, layout.seeded, plot_dir, stem, rt.results)
    decisions = (decide_tables(loaded, cells_to_decide(loaded, overrides), uri, listing)
                 if deciding_tables(loaded) else [])
    for d in decisions:
        lines += decision_section(d, spec.tables[d.table].title)
    data["decisions"] = [d.to_json() for d in decisions]
    if against:
        section, summary = reproduction(spec, cells, df, against)
        lines += section
        tables[f"{spec.name}.reproduction"] = summary
    return "\n".join(lines).rstrip() + "\n", tables, data


def _json_safe(x):
    """NaN, infinities and pandas' missing values as null; numpy scalars as Python numbers."""
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, (bool, str)) or x is None:
        return x
    if hasattr(x, "item"):  # numpy scalar
        x = x.item()
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, int):
        return x
    return None if pd.isna(x) else str(x)


def _finite(x) -> float | None:
    return float(x) if x is not None and pd.notna(x) and math.isfinite(float(x)) else None


def decision_section(d, title: str) -> list[str]:
    """A deciding table's path: each look's t statistic and boundary, the verdicts with their
    repeated intervals, and the seeds used against running every claim's rows to the cap."""
    used = sum(d.have.get(row, 0) for row in d.have)
    cap = d.design.cap * len(d.have)
    out = [f"### Sequential decision of {title}", "", "```", *lines_of(d), "```", ""]
    out += [f"Seeds used: {used} cells over {len(d.have)} rows, against {cap} for every row at the cap "
            f"({d.design.cap} seeds); {'every claim is decided' if d.decided else 'claims still open'}"
            f"{_futile_note(d)}. "
            "The rule (the t statistic of all seeds so far against Lan-DeMets boundaries on the t scale, Holm over "
            f"the claims{'' if d.design.futility is None else ', a non-binding futility stop before the cap'}) and its "
            "calibration: docs/statistics.md.", ""]
    return out


def _futile_note(d) -> str:
    """The claims stopped for futility: inconclusive (their interval still contains the bound),
    not contradicted."""
    from harness.report.sequential import FOR_FUTILITY

    futile = [f"[{r.hypothesis.number}]" for r in d.results if r.verdict == FOR_FUTILITY]
    if not futile:
        return ""
    return (f" ({', '.join(futile)} stopped for futility: too far from holding at an interim look to be worth more "
            "seeds; inconclusive, with the interval shown, not contradicted)")


def table_json(name: str, spec, df: pd.DataFrame, results) -> dict:
    """One table's results: per row and column every seed's value (with its run id and state),
    n, mean, sample std and 95% t-interval; and the claims (`claims.Result.as_dict`)."""
    table = spec.tables[name]
    rows = []
    for r in (r for r in spec.rows if r.table == name):
        sub = df[df["row"] == r.label].sort_values(["dataset", "seed"])
        cols = []
        for c in LAYOUTS[table.layout].seeded:
            column = sub[c.key] if c.key in sub else [None] * len(sub)
            values = [{"dataset": d, "seed": int(seed), "status": status, "run_id": run_id, "value": _finite(v)}
                      for d, seed, status, run_id, v in zip(sub["dataset"], sub["seed"], sub["status"], sub["run_id"],
                                                           column, strict=True)]
            s = summarize([v["value"] for v in values if v["status"] == "finished" and v["value"] is not None])
            cols.append({"column": c.header, "metric": c.metric, "key": c.key, "post": c.mode, "n": s.n,
                         "mean": _finite(s.mean), "std": _finite(s.std), "ci95": [_finite(s.ci_low), _finite(s.ci_high)],
                         "paper_points": r.paper.get(c.metric) if c.mode is None else None, "values": values})
        rows.append({"label": r.label, "model": r.model or r.label, "assignment": r.assignment,
                     "baseline": r.baseline, "columns": cols})
    return {"name": name, "title": table.title, "layout": table.layout, "rows": rows,
            "claims": [c.as_dict() for c in results]}


def figures(spec, name: str, rows: list[str], df: pd.DataFrame, hist: pd.DataFrame, columns: tuple[Column, ...],
            plot_dir: Path, stem: str, results) -> list[str]:
    """The table's figures, each with a caption saying what its lines, dots and bands are."""
    from harness.report import plots  # matplotlib: imported only when figures are drawn
    prefix = stem if stem == name else f"{stem}_{name}"  # quickstart.md: quickstart_loss.png
    shown = [(plots.metric_label(c.header, c.mode), c.key) for c in columns[:2]]
    both = " and ".join(label for label, _ in shown)
    short = columns[0].header.replace("↑", "").replace("↓", "").split()[0]
    made = [
        ("Validation metrics during training", plots.convergence(hist, shown, rows, plot_dir / f"{prefix}_convergence.png"),
         plots.CAPTIONS["convergence"].format(metric=both)),
        ("Final values per seed", plots.seed_dots(df, shown, rows, plot_dir / f"{prefix}_seeds.png"),
         plots.CAPTIONS["seeds"].format(metric=both)),
        (f"{short} with and without NMS per seed",
         plots.nms_pairs(df, columns[0].metric, short, rows, plot_dir / f"{prefix}_nms.png"),
         plots.CAPTIONS["nms"].format(metric=short)),
        ("The declared claims", plots.claims_forest(results, plot_dir / f"{prefix}_claims.png"),
         plots.CAPTIONS["claims"]),
        ("Training loss per seed", plots.loss_curves(hist, rows, plot_dir / f"{prefix}_loss.png"),
         plots.CAPTIONS["loss"]),
    ]
    out = []
    for alt, path, caption in made:
        if path is not None:
            out += [f"![{alt}]({path.name})", "", f"*{caption}*", ""]
    return out


def reproduction(spec, cells: list[Cell], df: pd.DataFrame, against: tuple[str, ...]) -> tuple[list[str], str]:
    """The same cells in other stores (fresh workspaces, other machines) against this store:
    does a second run of the matrix land where this one says it should? Returns the report's
    section and a short summary for the README region `<spec>.reproduction`.

    Two kinds of reproduction, stated apart: on the same platform (processor and CPU kernels or
    GPU, thread count, torch; the runs' `harness.platform` tag) a cell's final metrics are
    expected bit-identical; across platforms the rounding differs and only the table holds,
    within its noise: each row mean of the other store inside this store's 95% prediction
    interval for a mean of as many seeds."""
    lines = ["## Reproduction", "",
             "The same cells (same run keys) trained again in other stores; each entry is the other store's mean "
             "over its seeds, against the 95% prediction interval that this report's seeds give for a mean of "
             "that many new seeds (✓ inside; about 1 in 20 falls outside by chance). Cells are expected to be "
             "bit-identical only on the same platform (processor and kernels or GPU, thread count, torch).", ""]
    summary = []
    for k, other_uri in enumerate(against, 1):
        other = collect(cells, other_uri, spec.name)  # already read-only (report)
        done = int((other["status"] == "finished").sum())
        name = short(other_uri)
        lines += [f"### Store {k} ({name}): {done} of {len(cells)} cells finished", ""]
        inside_all = compared_all = 0
        for table in spec.tables:
            md, inside, compared = reproduction_table(table, spec, df, other)
            inside_all, compared_all = inside_all + inside, compared_all + compared
            lines += [md, "", f"{inside} of {compared} row means inside this report's 95% prediction intervals.", ""]
        same, both = identical_cells(df, other)
        mine, theirs = platforms(df, other)
        largest = largest_difference(df, other, spec)
        same_platform = mine == theirs and len(mine) == 1
        described = "; ".join(sorted(theirs)) or "platform not recorded"
        if same_platform:
            expect = f"the same platform in both stores ({described}): bit-identical cells expected"
        else:
            expect = (f"platforms differ (this store: {'; '.join(sorted(mine)) or 'not recorded'}; store {k}: "
                      f"{described}): bit-identical cells not expected")
        lines += [f"{same} of {both} cells finished in both stores have bit-identical final metrics; {expect}."]
        moved = ""
        if largest is not None and largest[0] > 0:
            lines += ["", f"Largest difference of one cell's final metric between the stores: {largest[0]:.1f} points "
                          f"({largest[1]})."]
            moved = f"; one cell's metric moved by up to {largest[0]:.1f} points"
        lines += [""]
        summary.append(f"- store {k}, {'the same' if same_platform else 'another'} platform ({described}): {done} of "
                       f"{len(cells)} cells; {inside_all} of {compared_all} row means inside this table's 95% "
                       f"prediction intervals; {same} of {both} cells bit-identical "
                       f"({'expected' if same_platform else 'not expected'}){moved}.")
    return lines, "\n".join(summary)


def platforms(a: pd.DataFrame, b: pd.DataFrame) -> tuple[set[str], set[str]]:
    """The `harness.platform` tags of the cells finished in both stores, per store."""
    a = a[a["status"] == "finished"].set_index("run_key")
    b = b[b["status"] == "finished"].set_index("run_key")
    common = a.index.intersection(b.index)
    return ({p for p in a.loc[common, "platform"] if p}, {p for p in b.loc[common, "platform"] if p})


def largest_difference(a: pd.DataFrame, b: pd.DataFrame, spec) -> tuple[float, str] | None:
    """The largest |a - b| in points over the tables' metrics of the cells finished in both
    stores, with the cell and metric it belongs to."""
    keys = sorted({c.key for t in spec.tables.values() for c in LAYOUTS[t.layout].seeded})
    a = a[a["status"] == "finished"].set_index("run_key")
    b = b[b["status"] == "finished"].set_index("run_key")
    best = None
    for k in a.index.intersection(b.index):
        for m in keys:
            if m in a.columns and m in b.columns and not (pd.isna(a.at[k, m]) or pd.isna(b.at[k, m])):
                d = abs(float(a.at[k, m]) - float(b.at[k, m])) * 100
                if best is None or d > best[0]:
                    best = (d, f"{a.at[k, 'row']} seed {a.at[k, 'seed']}, {m}")
    return best


def identical_cells(a: pd.DataFrame, b: pd.DataFrame) -> tuple[int, int]:
    """(cells whose final eval.* metrics are exactly equal, cells finished in both stores)."""
    keys = [k for k in a.columns if k.startswith("eval.") and k in b.columns]
    a = a[a["status"] == "finished"].set_index("run_key")
    b = b[b["status"] == "finished"].set_index("run_key")
    common = a.index.intersection(b.index)
    same = sum(all((pd.isna(a.at[k, m]) and pd.isna(b.at[k, m])) or a.at[k, m] == b.at[k, m] for m in keys)
               for k in common)
    return same, len(common)


def _headline(cells: list[Cell], row: str) -> str:
    """The row's headline postprocess (`eval.nms` of its cells)."""
    return next((c.config.eval.headline for c in cells if c.row == row), "nms_free")


def report(loaded: LoadedSpec, cells: list[Cell], *, uri: str, out: str | None, readme: str | None,
           check: bool, against: tuple[str, ...] = (), allow_empty: bool = False,
           json_out: str | None = None, overrides=(), log_to_mlflow: bool = False) -> int:
    """Every input is checked before anything is written (plots, report, README): the README,
    then the store (opened read-only), its experiment and finished runs. A store without a
    finished cell of the spec is an error unless allow_empty."""
    spec = loaded.spec
    out_path = Path(out) if out else None
    original = None
    if check and not readme:
        raise UserError(Problem(None, None, "--check", "checks the README's tables: give --readme FILE"))
    if readme:  # the README is checked first: a bad one must not leave plots behind
        try:
            original = Path(readme).read_text()
        except OSError as exc:
            raise UserError(Problem(readme, None, "", f"cannot read: {exc.strerror}")) from None
        found = regions(original)
        if not found:
            raise UserError(Problem(readme, None, "", "no <!-- harness:table NAME --> regions to rewrite"))
        if not set(found) & set(spec.tables):
            raise UserError(Problem(readme, None, "", f"no region for the tables of {spec.name} "
                                    f"({', '.join(sorted(spec.tables))}); it has: {', '.join(found)}"))
    if out_path is not None and out_path.is_dir():
        raise UserError(Problem(str(out_path), None, "--out", "is a directory; give the markdown file to write"))
    ro = read_only(uri)
    listing = read_listing(ro, spec.name, display(uri))
    keys = {c.run_key for c in cells}
    if not any(r.status == "FINISHED" for k, r in listing.runs.items() if k in keys) and not allow_empty:
        tagged = listing.total - listing.untagged
        why = (f"the experiment holds {listing.total} run(s)"
               + (f", {listing.untagged} without harness tags" if listing.untagged else "")
               + (f", {tagged} with run keys of other cells or not finished" if tagged else ""))
        action = "replace the README's tables with empty ones" if readme else "write a report of empty tables"
        raise UserError(Problem(display(uri), None, "", f"no finished run of {spec.name}'s {len(cells)} cells "
                                f"({why}): refusing to {action} (--allow-empty to do it anyway)"))
    against_ro = tuple(read_only(a) for a in against)
    for a, a_ro in zip(against, against_ro, strict=True):
        read_listing(a_ro, spec.name, display(a), "--against")
    if out_path is not None and not check:
        out_path.parent.mkdir(parents=True, exist_ok=True)
    json_path = Path(json_out) if json_out else (out_path.with_suffix(".json") if out_path is not None else None)
    if json_path is not None and json_path.is_dir():
        raise UserError(Problem(str(json_path), None, "--json", "is a directory; give the JSON file to write"))
    text, tables, data = build_report(loaded, cells, ro, None if check else out_path, against_ro, listing,
                                      overrides)
    if readme:
        path = Path(readme)
        new, changed = rewrite(original, tables)
        if check:
            if changed:
                print(f"{readme}: stale tables: {', '.join(changed)} (run harness report without --check)")
                return 1
            print(f"{readme}: tables up to date")
            return 0
        if changed:
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(new)
            tmp.replace(path)
            print(f"{readme}: rewrote {', '.join(changed)}")
    if check:
        return 0
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = json_path.with_name(json_path.name + ".tmp")
        tmp.write_text(json.dumps(_json_safe(data), indent=1, allow_nan=False) + "\n")
        tmp.replace(json_path)
        print(f"wrote {json_path}")
    if out_path is not None:
        tmp = out_path.with_name(out_path.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(out_path)
        print(f"wrote {out_path}")
    else:
        print(text)
    if log_to_mlflow:
        for line in log_tables(uri, spec.name, text, tables, data, out_path, json_path):
            print(line)
    return 0


def metric_name(*parts: str) -> str:
    """An MLflow metric name from parts joined by `/`: characters MLflow refuses become `_`."""
    import re

    return "/".join(re.sub(r"[^0-9A-Za-z_\-. ]", "_", str(p)) for p in parts)


def summary_metrics(table: dict) -> dict[str, float]:
    """`<row>/<metric key>/{mean,std,n,ci_low,ci_high}` of one table's JSON (`table_json`), the
    values that exist (fractions, as logged)."""
    out = {}
    for row in table["rows"]:
        for col in row["columns"]:
            low, high = col["ci95"]
            for stat, value in (("mean", col["mean"]), ("std", col["std"]), ("n", col["n"]),
                                ("ci_low", low), ("ci_high", high)):
                if value is not None:
                    out[metric_name(row["label"], col["key"], stat)] = float(value)
    return out


#: the figures `figures` draws for a table: `<prefix>_<kind>.png`
FIGURES = ("convergence", "seeds", "nms", "claims", "loss")
#: the tag of a table's summary run (`harness report --log-to-mlflow`): `<spec>/<table>`
SUMMARY_TAG = "harness.report_table"


def log_tables(uri: str, spec_name: str, text: str, regions: dict[str, str], data: dict,
               out_path: Path | None, json_path: Path | None) -> list[str]:
    """`harness report --log-to-mlflow`: one run per table in the spec's experiment, named
    `table:<spec>/<table>` and tagged `harness.report_table` (bookkeeping: never a cell), found
    again on the next report and updated (no duplicates). Per row and column the mean, std, n and
    95% interval bounds as metrics, each claim's verdict as a tag, the table (with its noise and
    claims) as the run's note, the report's markdown, JSON and the table's figures as artifacts."""
    import tempfile

    from harness.track.mlflow_tracker import git_commit
    from harness.track.runs import end_run, named_run, record, record_artifacts, run_tags_of

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        md = out_path if out_path is not None else Path(tmp) / f"{spec_name}.md"
        js = json_path if json_path is not None else Path(tmp) / f"{spec_name}.json"
        if out_path is None:
            md.write_text(text)
        if json_path is None:
            js.write_text(json.dumps(_json_safe(data), indent=1, allow_nan=False) + "\n")
        for table in data["tables"]:
            name = table["name"]
            key = f"{spec_name}/{name}"
            run = named_run(uri, spec_name, SUMMARY_TAG, key, run_name=f"table:{key}")
            before = run_tags_of(uri, run)
            made = table.get("provenance") or {}
            tags = {"harness.spec_name": spec_name, "harness.table": name,
                    "mlflow.note.content": f"## {table['title']}\n\n{regions.get(name, '')}",
                    "mlflow.source.name": "harness report", "mlflow.source.type": "LOCAL",
                    "mlflow.source.git.commit": git_commit(),
                    "harness.runs.overrides": " | ".join(s or "none" for s in made.get("overrides", {})),
                    "harness.runs.commits": " ".join(made.get("commits", {}))}
            verdicts = {f"harness.claim.{c['id']}": f"{c['verdict']}: {c['text']}" for c in table["claims"]}
            for stale in before.keys() - verdicts.keys():  # a claim dropped from the spec since
                if stale.startswith("harness.claim."):
                    verdicts[stale] = "no longer declared"
            metrics = summary_metrics(table)
            items = list({**tags, **verdicts}.items())
            for i in range(0, max(len(items), 1), 100):
                record(uri, run, tags=dict(items[i:i + 100]))
            names = list(metrics)
            for i in range(0, len(names), 1000):
                record(uri, run, metrics={k: metrics[k] for k in names[i:i + 1000]})
            prefix = md.stem if md.stem == name else f"{md.stem}_{name}"  # as `figures` names them
            figures = [md.parent / f"{prefix}_{kind}.png" for kind in FIGURES] if out_path is not None else []
            record_artifacts(uri, run, [(md, None), (js, None)] + [(f, "figures") for f in figures if f.is_file()])
            end_run(uri, run, "FINISHED")
            out.append(f"logged table {name} to MLflow: run {run} (table:{key}), {len(metrics)} metrics, "
                       f"{len(table['claims'])} claim verdicts")
    return out


__all__ = ["report", "build_report", "summarize"]
