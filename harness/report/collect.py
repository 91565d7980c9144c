"""MLflow -> one row per cell: its latest FINISHED run's final metrics (or its state)."""

from __future__ import annotations

import pandas as pd

from harness.spec.matrix import Cell
from harness.track.names import headline_key, with_headline
from harness.track.runs import metric_history, runs_by_key


def collect(cells: list[Cell], uri: str, experiment: str) -> pd.DataFrame:
    """Columns: row, dataset, seed, run_key, status (finished | failed | killed | running | missing),
    run_id, failure, and one column per final metric (`eval.ap`, `eval.nms_free.ap50`, ...).
    Which run counts for a cell: `harness.track.runs.runs_by_key` (latest FINISHED, else latest)."""
    by_key = runs_by_key(uri, experiment)
    rows = []
    for c in cells:
        r = by_key.get(c.run_key)
        rec = {"row": c.row, "dataset": c.dataset, "seed": c.seed, "run_key": c.run_key,
               "status": "missing", "run_id": None, "failure": None, "finished_runs": 0, "nms": c.config.eval.nms}
        if r is not None:
            rec.update(status=r.status.lower(), run_id=r.run_id, failure=r.failure, finished_runs=r.finished_runs)
            if r.status == "FINISHED":
                metrics = with_headline(r.metrics, c.config.eval.nms)  # eval.ap: the cell's headline mode
                rec.update({k: v for k, v in metrics.items() if k.startswith("eval.") and pd.notna(v)})
        rows.append(rec)
    return pd.DataFrame(rows)


def histories(df: pd.DataFrame, uri: str, keys: list[str]) -> pd.DataFrame:
    """Metric histories (row, seed, key, step, value) of the finished runs, for plots."""
    out = []
    for _, r in df[df["status"] == "finished"].iterrows():
        for key in keys:
            # eval.<name>: logged under the cell's headline mode only since issue 15
            points = metric_history(uri, r["run_id"], key) or metric_history(uri, r["run_id"],
                                                                             headline_key(key, bool(r["nms"])))
            for step, value in points:
                out.append({"row": r["row"], "seed": r["seed"], "key": key, "step": step, "value": value})
    return pd.DataFrame(out, columns=["row", "seed", "key", "step", "value"])
