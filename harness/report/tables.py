"""The seeds' table layouts, filled with mean ± std over seeds, paper numbers and deltas."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from harness.report.stats import Summary, direction, holm, pooled_std, summarize, welch
from harness.spec.matrix import Cell
from harness.spec.schema import Spec

#: layout -> (text columns, metrics as (header, metric, source key))
LAYOUTS: dict[str, tuple[list[tuple[str, str]], list[tuple[str, str, str]]]] = {
    "defcn_coco": ([("model", "model"), ("assignment", "assignment"), ("with NMS", "with_nms"),
                    ("lr sched.", "lr_sched")], [("mAP", "ap", "eval.ap"), ("mAR", "ar100", "eval.ar100")]),
    "defcn_ablation": ([("model", "model"), ("assignment", "assignment"), ("with NMS", "with_nms"),
                        ("lr sched.", "lr_sched")], [("mAP", "ap", "eval.ap"), ("mAR", "ar100", "eval.ar100")]),
    "defcn_crowdhuman": ([("model", "model"), ("assignment", "assignment"), ("with NMS", "with_nms"),
                          ("lr sched.", "lr_sched")],
                         [("AP50", "ap50", "eval.ap50"), ("mMR", "mmr", "eval.mmr"), ("recall", "recall", "eval.recall")]),
    "date_coco": ([("Model", "model"), ("epoch", "lr_sched")],
                  [("AP", "ap", "eval.ap"), ("AP50", "ap50", "eval.ap50"), ("AP75", "ap75", "eval.ap75"),
                   ("APs", "aps", "eval.aps"), ("APm", "apm", "eval.apm"), ("APl", "apl", "eval.apl")]),
    "date_crowdhuman": ([("Model", "model"), ("iters", "lr_sched")],
                        [("AP50 ↑", "ap50", "eval.ap50"), ("mMR ↓", "mmr", "eval.mmr"), ("Recall ↑", "recall", "eval.recall")]),
    "quickstart": ([("model", "model"), ("assignment", "assignment")],
                   [("AP50 NMS", "ap50", "eval.nms.ap50"), ("AP50 no NMS", "ap50", "eval.nms_free.ap50"),
                    ("mMR NMS", "mmr", "eval.nms.mmr"), ("mMR no NMS", "mmr", "eval.nms_free.mmr"),
                    ("recall NMS", "recall", "eval.nms.recall"), ("recall no NMS", "recall", "eval.nms_free.recall")]),
}
NOTE_LAYOUTS = {"defcn_ablation"}
ALPHA = 0.05


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def fmt_summary(s: Summary, expected: int) -> str:
    if s.n == 0:
        return "—"
    text = pct(s.mean) if s.n < 2 else f"{pct(s.mean)} ± {pct(s.std)}"
    return text + (f" (n={s.n}/{expected})" if s.n < expected else "")


@dataclass
class Comparison:
    row: str
    other: str
    metric: str  # source key
    delta: float
    p: float
    p_holm: float = math.nan

    @property
    def significant(self) -> bool:
        return not math.isnan(self.p_holm) and self.p_holm < ALPHA


@dataclass
class RenderedTable:
    name: str
    title: str
    markdown: str
    footnotes: list[str] = field(default_factory=list)
    noise: str = ""
    comparisons: list[Comparison] = field(default_factory=list)


def _values(df: pd.DataFrame, row: str, key: str) -> list[float]:
    sub = df[(df["row"] == row) & (df["status"] == "finished")]
    if key not in sub:
        return []
    return [float(v) for v in sub[key] if pd.notna(v)]


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    align = [":---"] + [":---:"] * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def render_table(name: str, spec: Spec, cells: list[Cell], df: pd.DataFrame) -> RenderedTable:
    table = spec.tables[name]
    text_cols, metrics = LAYOUTS[table.layout]
    rows = [r for r in spec.rows if r.table == name]
    labels = [r.label for r in rows]
    baseline = next((r.label for r in rows if r.baseline), None)
    expected = len(spec.seeds) * max(1, len({c.dataset for c in cells}))
    nms_of = {c.row: c.config.eval.nms for c in cells}

    # comparisons: each row against its compare_to row, else the table's baseline; Holm over the table
    comps: list[Comparison] = []
    for r in rows:
        other = r.compare_to or (baseline if r.label != baseline else None)
        if other is None:
            continue
        for _, _, key in _first_per_metric(metrics):
            a, b = _values(df, r.label, key), _values(df, other, key)
            if a and b:
                comps.append(Comparison(r.label, other, key, sum(a) / len(a) - sum(b) / len(b), welch(a, b)))
    for c, p in zip(comps, holm([c.p for c in comps]), strict=True):
        c.p_holm = p
    comp_by = {(c.row, c.metric): c for c in comps}

    paper_metrics = [m for m in dict.fromkeys(metric for _, metric, _ in metrics)
                     if any(m in r.paper for r in rows)]
    header = [h for h, _ in text_cols] + [h for h, _, _ in metrics]
    header += [f"paper {h}" for h, metric, _ in _first_per_metric(metrics) if metric in paper_metrics]
    header += [f"Δ paper {h}" for h, metric, _ in _first_per_metric(metrics) if metric in paper_metrics]
    delta_metrics = _first_per_metric(metrics)
    header += [f"Δ vs ref. {h}" for h, _, _ in delta_metrics]
    if table.layout in NOTE_LAYOUTS:
        header.append("note")

    body = []
    for r in rows:
        text = {"model": r.model or r.label, "assignment": r.assignment, "lr_sched": r.lr_sched,
                "with_nms": r.with_nms or ("Yes" if nms_of.get(r.label) else "No")}
        line = [text[k] for _, k in text_cols]
        sums = {key: summarize(_values(df, r.label, key)) for _, _, key in metrics}
        line += [fmt_summary(sums[key], expected) for _, _, key in metrics]
        for _, metric, _key in _first_per_metric(metrics):
            if metric in paper_metrics:
                line.append(f"{r.paper[metric]:.1f}" if metric in r.paper else "")
        for _, metric, key in _first_per_metric(metrics):
            if metric in paper_metrics:
                s = sums[key]
                line.append(f"{100 * s.mean - r.paper[metric]:+.1f}" if metric in r.paper and s.n else "")
        for _, _, key in delta_metrics:
            c = comp_by.get((r.label, key))
            if c is None:
                line.append("ref." if r.label == baseline else "")
            else:
                better = c.delta * direction(key) > 0
                mark = (" ✓" if better else " ✗") if c.significant else ""
                line.append(f"{100 * c.delta:+.1f}{mark}")
        if table.layout in NOTE_LAYOUTS:
            line.append(r.note)
        body.append(line)

    foot = []
    for r in rows:
        sub = df[df["row"] == r.label].sort_values(["dataset", "seed"])
        parts = []
        for _, m, key in _first_per_metric(metrics):
            vals = [f"{pct(v)}" if pd.notna(v) else "—" for v in sub.get(key, [])]
            if vals:
                parts.append(f"{m} " + ", ".join(vals))
        seeds = ", ".join(str(s) for s in sub["seed"])
        bad = [f"seed {s.seed}: {s.status}" + (f" ({s.failure})" if isinstance(s.failure, str) and s.failure else "")
               for s in sub.itertuples() if s.status != "finished"]
        foot.append(f"{r.label} (seeds {seeds}): " + "; ".join(parts) + (" — " + "; ".join(bad) if bad else ""))
    noise_parts = []
    for h, _, key in metrics:
        ps = pooled_std([_values(df, lab, key) for lab in labels])
        if not math.isnan(ps):
            noise_parts.append(f"{h} {100 * ps:.2f}")
    noise = ("Observed seed noise (pooled std over rows, points): " + ", ".join(noise_parts)) if noise_parts else \
        "Observed seed noise: needs at least two finished seeds per row"
    if table.remark:
        noise += f"; the paper says: {table.remark}"
    reference = "the row's `compare_to` or the table's baseline" + (f" ({baseline})" if baseline else "")
    legend = (f"Cells: mean ± sample std over seeds, in percent. Δ vs ref.: against {reference}, Welch's "
              f"t-test with Holm correction over the table; ✓ / ✗ = significantly better / worse (adjusted "
              f"p < {ALPHA}; mMR: lower is better). (n=k/N): only k of the N seeds finished; — : none did.")
    md = _markdown(header, body)
    if any(r.assignment.endswith("*") for r in rows):  # the seed tables' footnote on "mixture*"
        md += ("\n\n\\* mixture: the one-to-one assignment (POTO) trains the filtered score, the "
               "one-to-many auxiliary loss the raw classification score.")
    return RenderedTable(name, table.title, md, foot, noise + "\n\n" + legend, comps)


def _first_per_metric(metrics):
    seen, out = set(), []
    for h, m, key in metrics:
        if m not in seen:
            seen.add(m)
            out.append((h, m, key))
    return out


def confidence_table(name: str, spec: Spec, df: pd.DataFrame) -> str:
    """95% t-intervals of every metric of a table (for the report body)."""
    table = spec.tables[name]
    _, metrics = LAYOUTS[table.layout]
    rows = [r for r in spec.rows if r.table == name]
    body = []
    for r in rows:
        line = [r.label]
        for _, _, key in metrics:
            s = summarize(_values(df, r.label, key))
            line.append(f"[{pct(s.ci_low)}, {pct(s.ci_high)}]" if s.n >= 2 else "—")
        body.append(line)
    return _markdown(["row"] + [h for h, _, _ in metrics], body)


def reproduction_table(name: str, spec: Spec, ref: pd.DataFrame, other: pd.DataFrame) -> tuple[str, int, int]:
    """Each row's mean in `other` against the 95% t-interval of `ref` (this store's runs).

    Returns the markdown table and (inside, compared) counts; a metric is compared when `ref`
    has an interval (n >= 2) and `other` has at least one finished run.
    """
    _, metrics = LAYOUTS[spec.tables[name].layout]
    body, inside, compared = [], 0, 0
    for r in (r for r in spec.rows if r.table == name):
        line = [r.label]
        for _, _, key in metrics:
            s, o = summarize(_values(ref, r.label, key)), summarize(_values(other, r.label, key))
            if s.n < 2 or o.n == 0:
                line.append("—")
                continue
            ok = s.ci_low <= o.mean <= s.ci_high
            inside += ok
            compared += 1
            line.append(f"{pct(o.mean)} in [{pct(s.ci_low)}, {pct(s.ci_high)}] {'✓' if ok else '✗'}"
                        + (f" (n={o.n})" if o.n != s.n else ""))
        body.append(line)
    return _markdown(["row"] + [h for h, _, _ in metrics], body), inside, compared
