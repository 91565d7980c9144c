"""`harness report`: collect, aggregate, render the markdown report, plots and README regions."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pandas as pd

from harness.report import plots
from harness.report.collect import collect, histories
from harness.report.readme import regions, rewrite
from harness.report.stats import compare, holm, summarize
from harness.report.tables import LAYOUTS, confidence_table, pct, render_table, reproduction_table
from harness.spec.errors import Problem, UserError
from harness.spec.load import LoadedSpec
from harness.spec.matrix import Cell
from harness.track.runs import explain_missing

NOT_LEARNED = 0.01  # headline AP (or AP50) below 1 % after training: the row did not learn


def _mean(df, row, key) -> tuple[float, list[float]]:
    vals = [float(v) for v in df[(df["row"] == row) & (df["status"] == "finished")].get(key, pd.Series(dtype=float))
            if pd.notna(v)]
    return (sum(vals) / len(vals) if vals else math.nan), vals


def _by_seed(df, row, key) -> dict[int, float]:
    done = df[(df["row"] == row) & (df["status"] == "finished")]
    if key not in done:
        return {}
    return {int(s): float(v) for s, v in zip(done["seed"], done[key], strict=True) if pd.notna(v)}


#: The papers' claims checked on the quickstart: (text, row a, metric a, row b, metric b,
#: sign (+1: a above b claimed, -1: a below b), margin in points (non-inferiority), paired).
CLAIMS = (
    ("FCOS without NMS is below FCOS with NMS (AP50; the same runs, paired by seed)",
     "FCOS", "eval.nms_free.ap50", "FCOS", "eval.nms.ap50", -1, 0.0, True),
    ("POTO without NMS is within 3 AP50 points of FCOS with NMS, or better",
     "POTO", "eval.nms_free.ap50", "FCOS", "eval.nms.ap50", 1, 3.0, False),
    ("POTO without NMS beats FCOS without NMS (AP50)",
     "POTO", "eval.nms_free.ap50", "FCOS", "eval.nms_free.ap50", 1, 0.0, False),
    ("POTO + 3DMF without NMS is at least POTO without NMS (AP50)",
     "POTO+3DMF", "eval.nms_free.ap50", "POTO", "eval.nms_free.ap50", 1, 0.0, False),
    ("POTO + 3DMF + Aux without NMS is at least POTO + 3DMF without NMS (AP50)",
     "POTO+3DMF+Aux", "eval.nms_free.ap50", "POTO+3DMF", "eval.nms_free.ap50", 1, 0.0, False),
    ("POTO's recall without NMS is at least FCOS's with NMS",
     "POTO", "eval.nms_free.recall", "FCOS", "eval.nms.recall", 1, 0.0, False),
)


def convergence_check(hist: pd.DataFrame, rows: list[str], eval_key: str) -> str:
    """How many finished cells end with a lower training loss than at their first evaluation."""
    ok, bad, n = 0, [], 0
    for (row, seed), h in hist[hist["row"].isin(rows)].groupby(["row", "seed"]):
        loss = h[h["key"] == "train.total_loss"].sort_values("step")
        evals = h[h["key"] == eval_key]["step"]
        if loss.empty or evals.empty:
            continue
        first = loss[loss["step"] <= evals.min()]
        if first.empty:
            continue
        n += 1
        start, end = float(first["value"].iloc[-1]), float(loss["value"].iloc[-1])
        if end < start:
            ok += 1
        else:
            bad.append(f"{row} seed {seed} ({start:.3g} -> {end:.3g})")
    text = (f"Convergence: {ok} of {n} finished cells end with a lower training loss than at their "
            f"first evaluation")
    return text + (": not " + ", ".join(bad) + "." if bad else ".")


def _p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def phenomena(df: pd.DataFrame, rows: list[str]) -> list[str]:
    """The papers' claims, checked on the quickstart runs (whichever way they fall).

    Each claim is one-sided: its p-value tests "the claim holds" against "it does not"
    (a margin makes it a non-inferiority test), paired t for NMS vs NMS-free of the same runs,
    Welch otherwise. Holm's correction runs over the claims listed here. A claim is called
    observed only when it is significant after Holm with at least 3 seeds on each side; with
    fewer seeds no test is made.
    """
    found = []
    for text, ra, ka, rb, kb, sign, margin, paired in CLAIMS:
        if not {ra, rb} <= set(rows):
            continue
        a, b = _by_seed(df, ra, ka), _by_seed(df, rb, kb)
        if paired:
            seeds = sorted(set(a) & set(b))
            cmp = compare([a[s] for s in seeds], [b[s] for s in seeds], paired=True, sign=sign,
                          margin=margin / 100)
        else:
            cmp = compare(list(a.values()), list(b.values()), paired=False, sign=sign, margin=margin / 100)
        found.append((text, a, b, sign, margin, cmp))
    adjusted = holm([c.p if min(c.n_a, c.n_b) >= 3 else math.nan for *_, c in found])
    out = []
    for (text, a, b, sign, margin, c), p_holm in zip(found, adjusted, strict=True):
        if c.n_a == 0 or c.n_b == 0:
            out.append(f"- {text}: not enough finished runs to tell.")
            continue
        ma, mb = sum(a.values()) / len(a), sum(b.values()) / len(b)
        ci = "" if math.isnan(c.ci_low) else f", 95% CI {100 * c.ci_low:+.1f} to {100 * c.ci_high:+.1f}"
        if math.isnan(p_holm):
            verdict = f"**untested** (n = {c.n_a}/{c.n_b}: a test needs 3 seeds per side)"
        elif p_holm < 0.05:
            verdict = "**observed**"
        elif sign * c.delta > -margin / 100:
            verdict = "**same direction, not significant**"
        else:
            verdict = "**not observed**"
        test = "" if math.isnan(p_holm) else f"; one-sided {c.test}, {_p(c.p)}, Holm {_p(p_holm)}"
        out.append(f"- {text}: {verdict} ({pct(ma)} vs {pct(mb)}, Δ {100 * c.delta:+.1f} points{ci}{test}, "
                   f"n = {c.n_a}/{c.n_b}).")
    return out


def build_report(loaded: LoadedSpec, cells: list[Cell], uri: str, out: Path | None,
                 against: tuple[str, ...] = ()) -> tuple[str, dict[str, str]]:
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
    repeated = df[df["finished_runs"] > 1]
    if len(repeated):  # the same run key finished more than once (a --rerun): say which run counts
        lines += [f"> {len(repeated)} cell(s) finished more than once under the same run key; each uses its latest "
                  "finished run: " + ", ".join(f"{r.row}/{r.dataset}/{r.seed} ({r.finished_runs} runs)"
                                               for r in repeated.itertuples()), ""]
    if n_finished < len(cells):
        other = explain_missing(cells, uri, spec.name)
        if other:
            print("\n".join(other), file=sys.stderr)
            lines += [f"> {other[0]}", ""] + [f"> - {x}" for x in other[1:]] + [""]
    diverged = df[(df["status"] != "finished") & df["failure"].map(lambda f: isinstance(f, str) and f.startswith("diverged:"))]
    if len(diverged):  # a health rule or a non-finite loss ended them FAILED (train.health)
        lines += ["Diverged cells (FAILED, left out of the means): "
                  + "; ".join(f"{r.row}/{r.dataset}/{r.seed}: {r.failure}" for r in diverged.itertuples()) + ".", ""]
    tables: dict[str, str] = {}
    hist = histories(df, uri, sorted({"train.total_loss"} | {k for t in spec.tables.values()
                                                             for _, _, k in LAYOUTS[t.layout][1]}))
    for name, table in spec.tables.items():
        rt = render_table(name, spec, cells, df)
        rows = [r.label for r in spec.rows if r.table == name]
        legend = rt.noise.split("\n\n")[-1]
        tables[name] = f"{rt.markdown}\n\n{legend} Per-seed values, intervals and tests: `harness report`."
        lines += [f"## {rt.title}", "", rt.markdown, "", rt.noise, ""]
        lines += ["Per-seed values:", ""] + [f"- {f}" for f in rt.footnotes] + [""]
        lines += ["95% t-intervals:", "", confidence_table(name, spec, df), ""]
        _, metrics = LAYOUTS[table.layout]
        lines += [convergence_check(hist, rows, metrics[0][2]), ""]
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
            lines += figures(spec, name, rows, df, hist, metrics, plot_dir, stem)
    if against:
        lines += reproduction(spec, cells, df, against)
    return "\n".join(lines).rstrip() + "\n", tables


def figures(spec, name: str, rows: list[str], df: pd.DataFrame, hist: pd.DataFrame, metrics, plot_dir: Path,
            stem: str) -> list[str]:
    """The table's figures, each with a caption saying what its lines, dots and bands are."""
    prefix = stem if stem == name else f"{stem}_{name}"  # quickstart.md: quickstart_loss.png
    shown = [(plots.metric_label(header, key), key) for header, _, key in metrics[:2]]
    both = " and ".join(label for label, _ in shown)
    baseline = next((r.label for r in spec.rows if r.table == name and r.baseline), None)
    refs = {r.label: r.compare_to or baseline for r in spec.rows
            if r.table == name and r.label != baseline and (r.compare_to or baseline)}
    short = metrics[0][0].replace("↑", "").replace("↓", "").split()[0]
    lower = "; for mMR, left of 0 is better" if any(k.endswith(".mmr") for _, k in shown) else ""
    made = [
        ("Validation metrics during training", plots.convergence(hist, shown, rows, plot_dir / f"{prefix}_convergence.png"),
         plots.CAPTIONS["convergence"].format(metric=both)),
        ("Final values per seed", plots.seed_dots(df, shown, rows, plot_dir / f"{prefix}_seeds.png"),
         plots.CAPTIONS["seeds"].format(metric=both)),
        (f"{short} with and without NMS per seed",
         plots.nms_pairs(df, metrics[0][1], short, rows, plot_dir / f"{prefix}_nms.png"),
         plots.CAPTIONS["nms"].format(metric=short)),
        ("Difference to the reference row", plots.deltas(df, shown, refs, plot_dir / f"{prefix}_delta.png"),
         plots.CAPTIONS["delta"].format(lower=lower)),
        ("Training loss per seed", plots.loss_curves(hist, rows, plot_dir / f"{prefix}_loss.png"),
         plots.CAPTIONS["loss"]),
    ]
    out = []
    for alt, path, caption in made:
        if path is not None:
            out += [f"![{alt}]({path.name})", "", f"*{caption}*", ""]
    return out


def reproduction(spec, cells: list[Cell], df: pd.DataFrame, against: tuple[str, ...]) -> list[str]:
    """The same cells in other stores (fresh workspaces, other machines) against this store's
    95% intervals: does a second run of the matrix land where this one says it should?"""
    lines = ["## Reproduction", "",
             "The same cells (same run keys) trained again in other stores; each entry is the other "
             "store's mean over its seeds, against this report's 95% t-interval (✓ inside).", ""]
    for k, other_uri in enumerate(against, 1):
        other = collect(cells, other_uri, spec.name)
        done = int((other["status"] == "finished").sum())
        lines += [f"### Store {k} ({redact(other_uri)}): {done} of {len(cells)} cells finished", ""]
        for name in spec.tables:
            md, inside, compared = reproduction_table(name, spec, df, other)
            lines += [md, "", f"{inside} of {compared} row means inside this report's 95% intervals.", ""]
        same, both = identical_cells(df, other)
        lines += [f"{same} of {both} cells finished in both stores have bit-identical final metrics "
                  "(expected on one machine with the same seed and thread count).", ""]
    return lines


def identical_cells(a: pd.DataFrame, b: pd.DataFrame) -> tuple[int, int]:
    """(cells whose final eval.* metrics are exactly equal, cells finished in both stores)."""
    keys = [k for k in a.columns if k.startswith("eval.") and k in b.columns]
    a = a[a["status"] == "finished"].set_index("run_key")
    b = b[b["status"] == "finished"].set_index("run_key")
    common = a.index.intersection(b.index)
    same = sum(all((pd.isna(a.at[k, m]) and pd.isna(b.at[k, m])) or a.at[k, m] == b.at[k, m] for m in keys)
               for k in common)
    return same, len(common)


def redact(uri: str) -> str:
    """A store's name for a report: no credentials, no machine-specific directories."""
    if uri.startswith("sqlite:"):
        return "sqlite: " + Path(uri.split("///", 1)[-1]).parent.name + "/" + Path(uri).name
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    return f"{parts.scheme}://{parts.hostname or ''}{':' + str(parts.port) if parts.port else ''}{parts.path}"


def _nms(cells: list[Cell], row: str) -> bool:
    return next((c.config.eval.nms for c in cells if c.row == row), False)


def _any_finished(loaded: LoadedSpec, cells: list[Cell], uri: str) -> bool:
    return bool((collect(cells, uri, loaded.spec.name)["status"] == "finished").any())


def report(loaded: LoadedSpec, cells: list[Cell], *, uri: str, out: str | None, readme: str | None,
           check: bool, against: tuple[str, ...] = ()) -> int:
    """Every input is checked before anything is written (plots, report, README)."""
    out_path = Path(out) if out else None
    original = None
    if readme:  # the README is checked first: a bad one must not leave plots behind
        try:
            original = Path(readme).read_text()
        except OSError as exc:
            raise UserError(Problem(readme, None, "", f"cannot read: {exc.strerror}")) from None
        found = regions(original)
        if not found:
            raise UserError(Problem(readme, None, "", "no <!-- harness:table NAME --> regions to rewrite"))
        if not set(found) & set(loaded.spec.tables):
            raise UserError(Problem(readme, None, "", f"no region for the tables of {loaded.spec.name} "
                                    f"({', '.join(sorted(loaded.spec.tables))}); it has: {', '.join(found)}"))
        if not check and not _any_finished(loaded, cells, uri):
            raise UserError(Problem(readme, None, "", f"no finished run of {loaded.spec.name} in {redact(uri)}: "
                                    "refusing to replace the README's tables with empty ones"))
    if out_path is not None and not check:
        out_path.parent.mkdir(parents=True, exist_ok=True)
    text, tables = build_report(loaded, cells, uri, None if check else out_path, against)
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
    if out_path is not None:
        tmp = out_path.with_name(out_path.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(out_path)
        print(f"wrote {out_path}")
    else:
        print(text)
    return 0


__all__ = ["report", "build_report", "summarize"]
