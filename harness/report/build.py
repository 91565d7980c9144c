"""`harness report`: collect, aggregate, render the markdown report, plots and README regions."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from harness.report import plots
from harness.report.collect import collect, histories
from harness.report.readme import regions, rewrite
from harness.report.stats import summarize, welch
from harness.report.tables import LAYOUTS, confidence_table, pct, render_table
from harness.spec.errors import Problem, UserError
from harness.spec.load import LoadedSpec
from harness.spec.matrix import Cell

NOT_LEARNED = 0.01  # headline AP (or AP50) below 1 % after training: the row did not learn


def _mean(df, row, key) -> tuple[float, list[float]]:
    vals = [float(v) for v in df[(df["row"] == row) & (df["status"] == "finished")].get(key, pd.Series(dtype=float))
            if pd.notna(v)]
    return (sum(vals) / len(vals) if vals else math.nan), vals


def phenomena(df: pd.DataFrame, rows: list[str]) -> list[str]:
    """The papers' claims, checked on the quickstart runs (whichever way they fall)."""
    if not {"FCOS", "POTO"} <= set(rows):
        return []

    def claim(text, a_row, a_key, b_row, b_key, want_greater=True, allow_equal=False):
        a_mean, a = _mean(df, a_row, a_key)
        b_mean, b = _mean(df, b_row, b_key)
        if not a or not b:
            return f"- {text}: not enough finished runs to tell."
        d = a_mean - b_mean
        p = welch(a, b)
        holds = d > 0 if want_greater else d < 0
        holds = holds or (allow_equal and abs(d) < 1e-12)
        sig = "" if math.isnan(p) else (f", Welch p = {p:.3f}" + (" (significant)" if p < 0.05 else " (not significant)"))
        verdict = "**observed**" if holds else "**not observed**"
        return f"- {text}: {verdict} ({pct(a_mean)} vs {pct(b_mean)}, Δ {100 * d:+.1f} points{sig}, n = {len(a)}/{len(b)})."

    return [
        claim("FCOS without NMS collapses relative to FCOS with NMS (AP50)", "FCOS", "eval.nms_free.ap50",
              "FCOS", "eval.nms.ap50", want_greater=False),
        claim("POTO without NMS beats FCOS without NMS (AP50)", "POTO", "eval.nms_free.ap50", "FCOS",
              "eval.nms_free.ap50"),
        claim("On crowded scenes POTO's recall (no NMS) is at least FCOS+NMS's", "POTO",
              "eval.nms_free.recall", "FCOS", "eval.nms.recall", allow_equal=True),
    ]


def build_report(loaded: LoadedSpec, cells: list[Cell], uri: str, out: Path | None) -> tuple[str, dict[str, str]]:
    spec = loaded.spec
    if not spec.tables:
        raise UserError(Problem(loaded.file, None, "tables", "the spec declares no tables to report"))
    df = collect(cells, uri, spec.name)
    n_finished = int((df["status"] == "finished").sum())
    plot_dir = (out.parent if out else Path("reports"))
    stem = out.stem if out else spec.name
    lines = [f"# Report: {spec.name}", "", spec.description, "",
             f"{n_finished} of {len(cells)} cells finished (spec `{loaded.file}`, {len(spec.seeds)} seeds per row). "
             "Numbers are percentages; every cell of a table is the mean ± sample standard deviation over seeds.", ""]
    tables: dict[str, str] = {}
    hist = histories(df, uri, sorted({"train.total_loss"} | {k for t in spec.tables.values()
                                                             for _, _, k in LAYOUTS[t.layout][1]}))
    for name, table in spec.tables.items():
        rt = render_table(name, spec, cells, df)
        rows = [r.label for r in spec.rows if r.table == name]
        tables[name] = rt.markdown
        lines += [f"## {rt.title}", "", rt.markdown, "", rt.noise, ""]
        lines += ["Per-seed values:", ""] + [f"- {f}" for f in rt.footnotes] + [""]
        lines += ["95% t-intervals:", "", confidence_table(name, spec, df), ""]
        _, metrics = LAYOUTS[table.layout]
        if table.layout == "quickstart":
            found = phenomena(df, rows)
            if found:
                lines += ["### The papers' phenomena at this scale", ""] + found + [""]
        idle = []
        for r in rows:
            key = metrics[0][2] if table.layout != "quickstart" else ("eval.nms.ap50" if _nms(cells, r) else "eval.nms_free.ap50")
            m, vals = _mean(df, r, key)
            if vals and m < NOT_LEARNED:
                idle.append(f"{r} ({pct(m)})")
        if idle:
            lines += [f"Rows that did not learn at this scale (headline {metrics[0][0]} below "
                      f"{100 * NOT_LEARNED:.0f}%): " + ", ".join(idle) + ".", ""]
        if out is not None:
            pics = []
            key = metrics[0][2]
            for kind, path in (
                ("convergence", plots.convergence(hist, key, rows, f"{table.title}: {key}",
                                                  plot_dir / f"{stem}_{name}_convergence.png")),
                ("per-seed values", plots.seed_dots(df, key, rows, f"{key} per seed",
                                                    plot_dir / f"{stem}_{name}_seeds.png")),
                ("training loss", plots.loss_curves(hist, rows, "training loss", plot_dir / f"{stem}_{name}_loss.png")),
            ):
                if path is not None:
                    pics.append(f"![{kind}]({path.name})")
            if len(metrics) > 1:
                extra = plots.seed_dots(df, metrics[1][2], rows, f"{metrics[1][2]} per seed",
                                        plot_dir / f"{stem}_{name}_seeds_{metrics[1][1]}.png")
                if extra is not None:
                    pics.append(f"![per-seed values]({extra.name})")
            lines += pics + [""]
    return "\n".join(lines).rstrip() + "\n", tables


def _nms(cells: list[Cell], row: str) -> bool:
    return next((c.config.eval.nms for c in cells if c.row == row), False)


def report(loaded: LoadedSpec, cells: list[Cell], *, uri: str, out: str | None, readme: str | None,
           check: bool) -> int:
    out_path = Path(out) if out else None
    if out_path is not None and not check:
        out_path.parent.mkdir(parents=True, exist_ok=True)
    text, tables = build_report(loaded, cells, uri, None if check else out_path)
    if readme:
        path = Path(readme)
        try:
            original = path.read_text()
        except OSError as exc:
            raise UserError(Problem(readme, None, "", f"cannot read: {exc.strerror}")) from None
        if not regions(original):
            raise UserError(Problem(readme, None, "", "no <!-- harness:table NAME --> regions to rewrite"))
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
    if out_path is not None:
        tmp = out_path.with_name(out_path.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(out_path)
        print(f"wrote {out_path}")
    else:
        print(text)
    return 0


__all__ = ["report", "build_report", "summarize"]
