"""MLflow -> one row per cell: its latest FINISHED run's final metrics (or its state)."""

from __future__ import annotations

import warnings

import pandas as pd

from harness.spec.matrix import Cell

warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"sqlalchemy.*")


def collect(cells: list[Cell], uri: str, experiment: str) -> pd.DataFrame:
    """Columns: row, dataset, seed, run_key, status (finished | failed | killed | running | missing),
    run_id, failure, and one column per final metric (`eval.ap`, `eval.nms_free.ap50`, ...)."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    runs = pd.DataFrame()
    if mlflow.MlflowClient(uri).get_experiment_by_name(experiment) is not None:
        runs = mlflow.search_runs(experiment_names=[experiment])
    by_key: dict[str, dict] = {}
    if len(runs):
        runs = runs.sort_values("start_time")
        keys = {c.run_key for c in cells}
        runs = runs[runs["tags.harness.run_key"].isin(keys)]
        for _, r in runs.iterrows():  # the latest FINISHED run wins, else the latest run
            key = r["tags.harness.run_key"]
            prev = by_key.get(key)
            if prev is None or r["status"] == "FINISHED" or prev["status"] != "FINISHED":
                by_key[key] = r.to_dict()
    rows = []
    for c in cells:
        r = by_key.get(c.run_key)
        rec = {"row": c.row, "dataset": c.dataset, "seed": c.seed, "run_key": c.run_key,
               "status": "missing", "run_id": None, "failure": None}
        if r is not None:
            rec.update(status=str(r["status"]).lower(), run_id=r["run_id"], failure=r.get("tags.harness.failure"))
            if r["status"] == "FINISHED":
                rec.update({k[len("metrics."):]: v for k, v in r.items()
                            if k.startswith("metrics.eval.") and pd.notna(v)})
        rows.append(rec)
    return pd.DataFrame(rows)


def histories(df: pd.DataFrame, uri: str, keys: list[str]) -> pd.DataFrame:
    """Metric histories (row, seed, key, step, value) of the finished runs, for plots."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    out = []
    for _, r in df[df["status"] == "finished"].iterrows():
        for key in keys:
            for m in client.get_metric_history(r["run_id"], key):
                out.append({"row": r["row"], "seed": r["seed"], "key": key, "step": m.step, "value": m.value})
    return pd.DataFrame(out, columns=["row", "seed", "key", "step", "value"])
