"""MLflow -> one row per cell: the final metrics of the run that counts for its key (or its state)."""

from __future__ import annotations

import math

import pandas as pd

from harness.spec.matrix import Cell
from harness.track.names import headline_key, with_headline
from harness.track.runs import Listing, histories, list_runs


def collect(cells: list[Cell], uri: str, experiment: str, listing: Listing | None = None) -> pd.DataFrame:
    """Columns: row, dataset, seed, run_key, status (finished | failed | killed | running | missing),
    run_id, failure, finished_runs, finished (every FINISHED run of the key: id, commit, start),
    nan_keys (eval metrics the run logged as NaN: failures, never dropped silently), nms (the
    cell's headline mode), and one column per final metric (`eval.nms_free.ap50`, ...; `eval.ap`
    is the cell's headline mode), its measured cost and test-dev AP (`perf.*`, `testdev.*`;
    `harness.track.names.PERF_KEYS`, `TESTDEV_AP`), platform (the run's `harness.platform` tag). Which run counts for a cell: `harness.track.runs.list_runs`
    (latest FINISHED, else latest). Reads the run listing only."""
    by_key = (listing or list_runs(uri, experiment)).runs
    rows = []
    for c in cells:
        r = by_key.get(c.run_key)
        rec = {"row": c.row, "dataset": c.dataset, "seed": c.seed, "run_key": c.run_key,
               "status": "missing", "run_id": None, "failure": None, "finished_runs": 0, "finished": (),
               "nan_keys": (), "heartbeat": None, "nms": c.config.eval.nms, "platform": ""}
        if r is not None:
            rec.update(status=r.status.lower(), run_id=r.run_id, failure=r.failure, finished_runs=r.finished_runs,
                       finished=r.finished, heartbeat=r.heartbeat, platform=r.platform)
            if r.status == "FINISHED":
                metrics = with_headline(r.metrics, c.config.eval.headline)  # eval.ap: the cell's headline mode
                evals = {k: v for k, v in metrics.items() if k.startswith("eval.")}
                rec.update(evals)
                rec.update({k: v for k, v in metrics.items() if k.startswith(("perf.", "testdev."))})
                rec["nan_keys"] = tuple(sorted(k for k, v in evals.items() if not math.isfinite(v)))
        rows.append(rec)
    return pd.DataFrame(rows)


def plot_histories(df: pd.DataFrame, uri: str, keys: list[str], *, max_points: int = 100,
                   cache_dir=None) -> pd.DataFrame:
    """Metric histories (row, seed, key, step, value) of the finished runs, for plots only:
    down-sampled in the store's query, cached by run id. `eval.<name>` reads the run's own
    `eval.<name>` where it logged one (stores before issue 15), else its headline mode's."""
    done = df[df["status"] == "finished"]
    ids = [str(r) for r in done["run_id"]]
    got = histories(uri, ids, keys, max_points=max_points, cache_dir=cache_dir)
    nms_of = dict(zip(ids, done["nms"] if "nms" in done else [False] * len(ids), strict=True))
    lacking = {(rid, headline_key(k, bool(nms_of[rid]))) for rid in ids for k in keys
               if not got.get((rid, k)) and headline_key(k, bool(nms_of[rid])) != k}
    if lacking:  # runs logged after issue 15: eval.<name> only under its headline mode's name
        more = sorted({k for _, k in lacking})
        got.update(histories(uri, sorted({rid for rid, _ in lacking}), more, max_points=max_points,
                             cache_dir=None))
    out = []
    nms = done["nms"] if "nms" in done else [False] * len(done)
    for row, seed, rid, mode in zip(done["row"], done["seed"], done["run_id"], nms, strict=True):
        for key in keys:
            points = got.get((rid, key)) or got.get((rid, headline_key(key, bool(mode))), [])
            out += [(row, seed, key, step, value) for step, value in points]
    return pd.DataFrame(out, columns=["row", "seed", "key", "step", "value"])
