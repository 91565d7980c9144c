"""The seeds' table layouts, filled with mean ± std over seeds, paper numbers and deltas."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from harness.report.claims import (
    ALPHA,
    MIN_STD,
    Result,
    claims_of,
    evaluate,
    fmt_p,
    observed_need,
    points,
    seeds_text,
)
from harness.report.stats import Summary, pooled_std, prediction_interval, summarize
from harness.spec.matrix import Cell
from harness.spec.schema import Spec
from harness.track.names import PERF_KEYS, TESTDEV_AP, eval_key

#: What a column's cells show (`Column.kind`).
KINDS = ("seeds", "memory", "time", "testdev", "text")


@dataclass(frozen=True)
class Column:
    """A column: its header, what it reads and the postprocess it reads (`nms`, `nms_free`;
    None: each row's headline mode, as the papers' tables print it).

    kind: `seeds`, a metric's mean ± std over seeds in percent (the statistics, claims, plots and
    intervals read these columns only, `Layout.seeded`); `memory` and `time`, the runs' measured
    training memory (GB) and test time per image (ms), CUDA's numbers, else the CPU's labelled
    as such (`harness.track.names.PERF_KEYS`); `testdev`, the COCO server's AP recorded for the
    row's runs (`harness record-testdev`), else the paper's marked †; `text`, the row's display
    field named by `metric` (`multi_scale`)."""

    header: str
    metric: str
    mode: str | None = None
    kind: str = "seeds"

    @property
    def key(self) -> str:
        """Its name in the runs table and the report's JSON (`harness.track.names.eval_key`; the
        CUDA name of a measured column, `TESTDEV_AP`)."""
        if self.kind in ("memory", "time"):
            return PERF_KEYS["cuda"][self.kind]
        return TESTDEV_AP if self.kind == "testdev" else eval_key(self.mode, self.metric)

    @property
    def paper_key(self) -> str:
        """Its name in a row's `paper` values."""
        return "testdev_ap" if self.kind == "testdev" else self.metric


@dataclass(frozen=True)
class Layout:
    """A seed README's table: text columns as (header, row field), columns, whether each line
    ends with the row's note, and `block`: each row as COCOeval's 12-line summary instead of a
    markdown table (the columns are then COCO's 12 metrics, in `COCOEVAL_LINES` order)."""

    text: tuple[tuple[str, str], ...]
    columns: tuple[Column, ...]
    note: bool = False
    block: bool = False

    @property
    def seeded(self) -> tuple[Column, ...]:
        """The columns of metrics over seeds: what statistics, claims, plots and JSON read."""
        return tuple(c for c in self.columns if c.kind == "seeds")

    def headline(self, mode: str) -> Column:
        """The column a row whose headline postprocess is `mode` leads with: the first that reads
        that mode or each row's own (the quickstart's AP50 NMS or AP50 no NMS by the row's
        `eval.nms`; a paper's first column)."""
        return next(c for c in self.seeded if c.mode in (None, mode))


#: COCOeval.summarize's lines (pycocotools' text, before " = value"), by metric.
COCOEVAL_LINES = {
    m: f" {title:<18} {kind} @[ IoU={iou:<9} | area={area:>6s} | maxDets={dets:>3d} ]"
    for m, title, kind, iou, area, dets in (
        ("ap", "Average Precision", "(AP)", "0.50:0.95", "all", 100),
        ("ap50", "Average Precision", "(AP)", "0.50", "all", 100),
        ("ap75", "Average Precision", "(AP)", "0.75", "all", 100),
        ("aps", "Average Precision", "(AP)", "0.50:0.95", "small", 100),
        ("apm", "Average Precision", "(AP)", "0.50:0.95", "medium", 100),
        ("apl", "Average Precision", "(AP)", "0.50:0.95", "large", 100),
        ("ar1", "Average Recall", "(AR)", "0.50:0.95", "all", 1),
        ("ar10", "Average Recall", "(AR)", "0.50:0.95", "all", 10),
        ("ar100", "Average Recall", "(AR)", "0.50:0.95", "all", 100),
        ("ars", "Average Recall", "(AR)", "0.50:0.95", "small", 100),
        ("arm", "Average Recall", "(AR)", "0.50:0.95", "medium", 100),
        ("arl", "Average Recall", "(AR)", "0.50:0.95", "large", 100),
    )
}
COCOEVAL = tuple(Column(h, m) for h, m in zip(
    ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"), COCOEVAL_LINES, strict=True))

DEFCN_TEXT = (("model", "model"), ("assignment", "assignment"), ("with NMS", "with_nms"), ("lr sched.", "lr_sched"))
DEFCN_COCO = (Column("mAP", "ap"), Column("mAR", "ar100"))

LAYOUTS: dict[str, Layout] = {
    "defcn_coco": Layout(DEFCN_TEXT, DEFCN_COCO),
    "defcn_ablation": Layout(DEFCN_TEXT, DEFCN_COCO, note=True),
    "defcn_crowdhuman": Layout(DEFCN_TEXT, (Column("AP50", "ap50"), Column("mMR", "mmr"), Column("recall", "recall"))),
    "date_coco": Layout((("Model", "model"), ("epoch", "lr_sched")),
                        (Column("AP", "ap"), Column("AP50", "ap50"), Column("AP75", "ap75"), Column("APs", "aps"),
                         Column("APm", "apm"), Column("APl", "apl"))),
    "date_crowdhuman": Layout((("Model", "model"), ("iters", "lr_sched")),
                              (Column("AP50 ↑", "ap50"), Column("mMR ↓", "mmr"), Column("Recall ↑", "recall"))),
    "quickstart": Layout((("model", "model"), ("assignment", "assignment")),
                         (Column("AP50 NMS", "ap50", "nms"), Column("AP50 no NMS", "ap50", "nms_free"),
                          Column("mMR NMS", "mmr", "nms"), Column("mMR no NMS", "mmr", "nms_free"),
                          Column("recall NMS", "recall", "nms"), Column("recall no NMS", "recall", "nms_free"))),
    # the official FCOS README (tianzhi0549/FCOS)
    "fcos": Layout((("Model", "model"),),
                   (Column("Total training mem (GB)", "train_mem_gb", kind="memory"),
                    Column("Multi-scale training", "multi_scale", kind="text"),
                    Column("Testing time / im", "test_ms_per_image", kind="time"),
                    Column("AP (minival)", "ap"), Column("AP (test-dev)", "ap", kind="testdev"))),
    # an unofficial FCOS README: the model's whole COCOeval summary
    "cocoeval": Layout((("Model", "model"),), COCOEVAL, block=True),
}

#: A measured column's CPU label (its numbers are not a GPU's).
CPU_LABEL = {"memory": " (CPU RSS)", "time": " (CPU)"}
TESTDEV_MARK = "†"


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def fmt_std(std: float) -> str:
    """A std in points: 0.1 steps, two decimals below 0.05 (never a bare "0.0"), "0" only when
    every seed gave exactly the same value."""
    v = 100 * std
    if std < MIN_STD:  # float noise around identical values
        return "0"
    if v < 0.05:
        return f"{v:.2f}" if v >= 0.005 else "<0.01"
    return f"{v:.1f}"


def fmt_summary(s: Summary, expected: int, paper: float | None = None) -> str:
    """`37.5 ± 0.4 (37.3)`: mean ± sample std over seeds (paper value); `n=k/N` when seeds miss."""
    text = "—" if s.n == 0 else pct(s.mean) if s.n < 2 else f"{pct(s.mean)} ± {fmt_std(s.std)}"
    if paper is not None:
        text += f" ({paper:.1f})"
    return text + (f" n={s.n}/{expected}" if 0 < s.n < expected else "")


def _measure(kind: str, x: float) -> str:
    """Training memory as the FCOS README prints it ("29.3", GB); a test time ("71ms")."""
    if kind == "memory":
        return f"{x:.1f}"
    return f"{x:.0f}ms" if x >= 10 else f"{x:.1f}ms"


def fmt_measured(df: pd.DataFrame, row: str, kind: str, paper: float | None = None) -> str:
    """A measured column's cell: the mean over the row's finished runs of their CUDA numbers, else
    of their CPU numbers labelled as such ("0.4 (CPU RSS)", "35ms (CPU)"); (the paper's value)."""
    text = "—"
    for device in ("cuda", "cpu"):
        if vals := _values(df, row, PERF_KEYS[device][kind]):
            text = _measure(kind, sum(vals) / len(vals)) + (CPU_LABEL[kind] if device == "cpu" else "")
            break
    return text + (f" ({_measure(kind, paper)})" if paper is not None else "")


def fmt_testdev(df: pd.DataFrame, row: str, paper: float | None = None) -> str:
    """The COCO server's AP recorded for the row's runs (mean ± std when several; the paper's
    value in parentheses), else the paper's value marked `TESTDEV_MARK`, else "—"."""
    vals = _values(df, row, TESTDEV_AP)
    if vals:
        return fmt_summary(summarize(vals), len(vals), paper)
    return "—" if paper is None else f"{paper:.1f}{TESTDEV_MARK}"


def fmt_block_value(s: Summary, expected: int, paper: float | None = None) -> str:
    """A COCOeval line's value as the tool prints it (a fraction, 3 decimals): `0.380 ± 0.002
    (paper 0.380)`, the paper's value given in percent; `n=k/N` when seeds miss."""
    if s.n == 0:
        text = "—"
    elif s.n < 2:
        text = f"{s.mean:.3f}"
    else:
        std = "0" if s.std < MIN_STD else f"{s.std:.3f}" if s.std >= 0.0005 else "<0.001"
        text = f"{s.mean:.3f} ± {std}"
    if paper is not None:
        text += f" (paper {paper / 100:.3f})"
    return text + (f" n={s.n}/{expected}" if 0 < s.n < expected else "")


@dataclass
class RenderedTable:
    name: str
    title: str
    markdown: str  # the table and the notes under it (footnotes, claims family)
    footnotes: list[str] = field(default_factory=list)  # per-seed values, one line per row
    noise: str = ""
    legend: str = ""
    results: list[Result] = field(default_factory=list)


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


def _clip(text: str, limit: int = 70) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def shortfalls(df: pd.DataFrame, row: str, keys: list[str]) -> list[str]:
    """Why `row` has fewer values than cells, per seed: not finished (with the failure reason),
    still running, or a table metric that is NaN or was never logged."""
    out = []
    multi = "dataset" in df and df["dataset"].nunique() > 1
    for s in df[df["row"] == row].sort_values(["dataset", "seed"]).itertuples():
        who = f"{s.dataset} seed {s.seed}" if multi else f"seed {s.seed}"
        if s.status != "finished":
            why = s.status + (f" ({_clip(s.failure)})" if isinstance(s.failure, str) and s.failure else "")
            out.append(f"{who} {why}")
            continue
        nan = s.nan_keys if "nan_keys" in df and isinstance(s.nan_keys, tuple) else ()
        bad = [f"{k} {'is NaN' if k in nan else 'not logged'}" for k in keys if not _finite(df, s.Index, k)]
        if bad:
            out.append(f"{who}: " + ", ".join(bad))
    return out


def _finite(df: pd.DataFrame, idx, key: str) -> bool:
    if key not in df:
        return False
    v = df.at[idx, key]
    return bool(pd.notna(v) and math.isfinite(float(v)))


def render_table(name: str, spec: Spec, cells: list[Cell], df: pd.DataFrame) -> RenderedTable:
    """The results table (the seed README's rows, columns, headers and footnotes, mean ± std over
    seeds) and, apart from it, the claims table (one line per declared claim)."""
    table = spec.tables[name]
    layout = LAYOUTS[table.layout]
    rows = [r for r in spec.rows if r.table == name]
    labels = [r.label for r in rows]
    per_row = {lab: sum(c.row == lab for c in cells) for lab in labels}
    expected = max(per_row.values(), default=len(spec.seeds)) or len(spec.seeds)
    nms_of = {c.row: c.config.eval.nms for c in cells}
    multi_of = {c.row: len(c.config.data.train_min_size) > 1 for c in cells}
    seeded = layout.seeded

    results = evaluate(claims_of(spec, name, seeded[0].metric), df)
    header = [h for h, _ in layout.text] + [c.header for c in layout.columns]
    if layout.note:
        header.append("note")

    body, blocks, marked = [], [], False
    for r in rows:
        text = {"model": r.model or r.label, "assignment": r.assignment, "lr_sched": r.lr_sched,
                "with_nms": r.with_nms or ("Yes" if nms_of.get(r.label) else "No"),
                "multi_scale": r.multi_scale or ("Yes" if multi_of.get(r.label) else "No")}
        n_expected = per_row.get(r.label) or expected
        if layout.block:  # COCOeval's summary, one line per metric
            lines = [COCOEVAL_LINES[c.metric] + " = " + fmt_block_value(summarize(_values(df, r.label, c.key)), n_expected,
                                                                           r.paper.get(c.metric))
                     for c in layout.columns]
            blocks.append(f"**{text['model']}**\n\n```text\n" + "\n".join(lines) + "\n```")
            continue
        line = [text[k] for _, k in layout.text]
        for c in layout.columns:  # the paper's values are of its headline mode
            paper = r.paper.get(c.paper_key) if c.mode is None else None
            if c.kind == "seeds":
                line.append(fmt_summary(summarize(_values(df, r.label, c.key)), n_expected, paper))
            elif c.kind in ("memory", "time"):
                line.append(fmt_measured(df, r.label, c.kind, paper))
            elif c.kind == "testdev":
                line.append(fmt_testdev(df, r.label, paper))
                marked |= line[-1].endswith(TESTDEV_MARK)
            else:
                line.append(text[c.metric])
        if layout.note:
            line.append(r.note)
        body.append(line)

    keys = list(dict.fromkeys(c.key for c in seeded))
    foot = []
    for r in rows:
        sub = df[df["row"] == r.label].sort_values(["dataset", "seed"])
        parts = []
        for c in seeded:  # every column, both post-processings where the layout has them
            vals = [(f"{pct(v)}" if pd.notna(v) else "NaN") if st == "finished" else "—"
                    for v, st in zip(sub.get(c.key, [math.nan] * len(sub)), sub["status"], strict=True)]
            if vals:
                parts.append(f"{c.header} " + ", ".join(vals))
        seeds = ", ".join(str(s) for s in sub["seed"])
        bad = shortfalls(df, r.label, keys)
        foot.append(f"{r.label} (seeds {seeds}): " + "; ".join(parts) + (" — " + "; ".join(bad) if bad else ""))
    noise_parts = []
    for c in seeded:
        ps = pooled_std([_values(df, lab, c.key) for lab in labels])
        if not math.isnan(ps):
            noise_parts.append(f"{c.header} {100 * ps:.2f}")
    widest = max(((max(v) - min(v), lab, c.header) for c in seeded for lab in labels
                  if len(v := _values(df, lab, c.key)) >= 2), default=None)
    noise = ("Observed seed noise (pooled std over rows, points): " + ", ".join(noise_parts)) if noise_parts else \
        "Observed seed noise: needs at least two finished seeds per row"
    if table.remark:
        noise += f"; the paper says: {table.remark}"
    if widest is not None:
        noise += f"; widest range over seeds: {100 * widest[0]:.1f} points ({widest[1]}, {widest[2]})"
    has_paper = any(r.paper for r in rows)
    short = [f"{lab}: " + "; ".join(b) for lab in labels if (b := shortfalls(df, lab, keys))]
    lower = any(c.metric == "mmr" for c in seeded)
    kinds = {c.kind for c in layout.columns}
    legend = ((f"Lines: COCOeval's summary, mean ± sample std over {expected} seeds, as fractions" if layout.block else
               f"Cells: mean ± sample std over {expected} seeds, in percent")
              + ("; (x): the paper's value" if has_paper else "")
              + ("; training memory: peak allocated GB summed over the GPUs, mean over seeds ((CPU RSS): a CPU run's "
                 "peak resident memory)" if "memory" in kinds else "")
              + ("; testing time: model forward and post-processing per image at the test batch size after a "
                 "warm-up, mean over seeds ((CPU): measured on a CPU)" if "time" in kinds else "")
              + ("; test-dev: the COCO server's AP recorded for the runs" if "testdev" in kinds else "")
              + f"; n=k/N: k of N seeds count{' (why: below)' if short else ''}; —: none"
              + ("; mMR: lower is better" if lower else "") + ".")
    notes = []
    if table.footnotes:  # the source README's own notes, right under the table, as it prints them
        notes.append(" \\\n".join(table.footnotes))
    if any(r.assignment.endswith("*") for r in rows):  # the seed tables' footnote on "mixture*"
        notes.append("\\* mixture: the one-to-one assignment (POTO) trains the filtered score, the "
                     "one-to-many auxiliary loss the raw classification score.")
    if marked:
        notes.append(f"{TESTDEV_MARK} paper value; no server result recorded (`harness record-testdev`).")
    if short:
        notes.append("Fewer seeds than cells: " + " · ".join(short) + ".")
    md = ("\n\n".join(blocks) if layout.block else _markdown(header, body)) + "".join(f"\n\n{n}" for n in notes)
    return RenderedTable(name, table.title, md, foot, noise, legend, results)


def claims_table(results: list[Result]) -> tuple[str, str]:
    """One line per declared claim, and its one-line legend: (markdown, legend)."""
    if not results:
        return "", ""
    header = ["claim", "Δ (points)", "interval", "test", "p (Holm)", "verdict", "detectable Δ", "seeds needed"]
    body = []
    for r in results:
        t = r.test
        delta = points(t.delta) if t.n_a and t.n_b else "—"
        interval = f"{points(r.low)} to {points(r.high)} ({r.interval_name})" if math.isfinite(r.low) else "—"
        p = f"{fmt_p(r.p)[4:] if r.p >= 0.001 else '< 0.001'} ({fmt_p(r.p_holm)[4:] if r.p_holm >= 0.001 else '< 0.001'})" \
            if math.isfinite(r.p) else "—"
        verdict = r.verdict if not r.untested else f"untested ({r.untested.split(':')[0]})"
        detect = (points(r.sign * r.mde) if math.isfinite(r.mde)
                  else f"power at 0: {r.power_at_zero:.2f}" if math.isfinite(r.power_at_zero) else "—")
        need = []
        if r.claim.effect is not None:
            need.append(f"{seeds_text(r.seeds_declared, min(t.n_a, t.n_b))} for {r.claim.effect:g}")
        if not r.holds and t.n_a and t.n_b:
            need.append(observed_need(r))
        body.append([f"[{r.number}] {r.title}", delta, interval, r.test_name, p, f"**{verdict}**" if r.mark else verdict,
                     detect, "; ".join(need) or "—"])
    n = min((min(r.test.n_a, r.test.n_b) for r in results), default=0)
    m = len(results)
    legend = (f"Claims: one test each, Holm over the {m} as one family at α = {ALPHA}; Δ = row − vs; the interval "
              "is the one the verdict is read from (two-sided, at the claim's Holm step); holds / contradicted / "
              "inconclusive; detectable Δ: the true Δ its test shows with 80% power at α/"
              f"{m} with {n} seeds per side and the pooled seed std; seeds needed per side for 80% power: "
              "for the declared effect, and for the observed Δ when the claim does not hold yet.")
    return _markdown(header, body), legend


def confidence_table(name: str, spec: Spec, df: pd.DataFrame) -> str:
    """95% t-intervals of every metric of a table (for the report body)."""
    columns = LAYOUTS[spec.tables[name].layout].seeded
    rows = [r for r in spec.rows if r.table == name]
    body = []
    for r in rows:
        line = [r.label]
        for c in columns:
            s = summarize(_values(df, r.label, c.key))
            line.append(f"[{pct(s.ci_low)}, {pct(s.ci_high)}]" if s.n >= 2 else "—")
        body.append(line)
    return _markdown(["row"] + [c.header for c in columns], body)


def reproduction_table(name: str, spec: Spec, ref: pd.DataFrame, other: pd.DataFrame) -> tuple[str, int, int]:
    """Each row's mean in `other` against the 95% prediction interval from `ref` (this store's
    runs) for a mean of as many seeds as `other` has: where a faithful rerun of the row lands
    95 % of the time, its own seed noise included.

    Returns the markdown table and (inside, compared) counts; a metric is compared when `ref`
    has at least 2 seeds and `other` at least one finished run.
    """
    columns = LAYOUTS[spec.tables[name].layout].seeded
    body, inside, compared = [], 0, 0
    for r in (r for r in spec.rows if r.table == name):
        line = [r.label]
        for c in columns:
            ref_values = _values(ref, r.label, c.key)
            o = summarize(_values(other, r.label, c.key))
            low, high = prediction_interval(ref_values, o.n)
            if math.isnan(low) or o.n == 0:
                line.append("—")
                continue
            ok = low <= o.mean <= high
            inside += ok
            compared += 1
            line.append(f"{pct(o.mean)} in [{pct(low)}, {pct(high)}] {'✓' if ok else '✗'}"
                        + (f" (n={o.n})" if o.n != summarize(ref_values).n else ""))
        body.append(line)
    return _markdown(["row"] + [c.header for c in columns], body), inside, compared
