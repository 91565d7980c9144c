"""Reading and amending runs in the store: the only rule for which run counts for a run key,
and the few writes the scheduler and the sweep make outside a training process."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field, replace

warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"sqlalchemy.*")


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    status: str  # MLflow's: RUNNING, FINISHED, FAILED, KILLED, SCHEDULED
    start_time: int  # ms
    failure: str | None = None  # the `harness.failure` tag
    heartbeat: float | None = None  # the `harness.heartbeat` tag (seconds since the epoch)
    attempt: int = 1
    metrics: dict[str, float] = field(default_factory=dict)  # final values
    finished_runs: int = 0  # FINISHED runs with this key (more than 1: the latest counts)


def runs_by_key(uri: str, experiment: str) -> dict[str, RunInfo]:
    """run key -> the run that counts for it, read with one paginated search.

    The rule (the only one in the harness): a key's latest FINISHED run if it has one, else its
    latest run by start time. A finished cell stays finished when a later attempt at the same key
    fails or is still running; `harness run --rerun` is how a user asks for it again.
    """
    from mlflow import MlflowClient, search_runs, set_tracking_uri

    from harness.track.mlflow_tracker import quiet_store_logs

    quiet_store_logs()
    set_tracking_uri(uri)
    if MlflowClient(uri).get_experiment_by_name(experiment) is None:
        return {}
    out: dict[str, RunInfo] = {}
    finished: dict[str, int] = {}
    for run in search_runs(experiment_names=[experiment], output_format="list"):
        tags = run.data.tags
        key = tags.get("harness.run_key")
        if not key:
            continue
        hb = tags.get("harness.heartbeat")
        info = RunInfo(run.info.run_id, run.info.status, run.info.start_time or 0, tags.get("harness.failure"),
                       float(hb) if hb else None, int(tags.get("harness.attempt", "1")), dict(run.data.metrics))
        finished[key] = finished.get(key, 0) + (info.status == "FINISHED")
        prev = out.get(key)
        if prev is None or _counts_more(info, prev):
            out[key] = info
    return {k: replace(v, finished_runs=finished[k]) for k, v in out.items()}


def _counts_more(new: RunInfo, old: RunInfo) -> bool:
    new_done, old_done = new.status == "FINISHED", old.status == "FINISHED"
    if new_done != old_done:
        return new_done
    return new.start_time > old.start_time


def metric_history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) of one metric of one run, by step."""
    from mlflow import MlflowClient

    return sorted((m.step, m.value) for m in MlflowClient(uri).get_metric_history(run_id, key))


def write(client, run_id: str, *, params: dict | None = None, tags: dict | None = None,
          metrics: dict | None = None, step: int = 0) -> None:
    """One batch of params, tags and metrics (values as given; strings for params and tags)."""
    from mlflow.entities import Metric, Param, RunTag

    now = int(time.time() * 1000)
    client.log_batch(run_id, params=[Param(k, str(v)) for k, v in (params or {}).items()],
                     tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()],
                     metrics=[Metric(k, float(v), now, step) for k, v in (metrics or {}).items()])


def end_killed(uri: str, run_id: str, reason: str) -> None:
    """End a run that no process will finish as KILLED, with the reason in `harness.failure`."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    write(client, run_id, tags={"harness.failure": reason})
    client.set_terminated(run_id, status="KILLED")


def explain_missing(cells, uri: str, experiment: str, runs: dict[str, RunInfo] | None = None) -> list[str]:
    """Cells without a run for their key, for which runs of the same row, dataset and seed exist
    under other keys (other overrides, or another version of the spec): one line per cell (at
    most 5), naming up to 3 differing config keys, and a summary line first. [] when none."""
    from mlflow import MlflowClient, search_runs, set_tracking_uri

    from harness.spec.matrix import hashed_config
    from harness.track.names import cell_params

    runs = runs_by_key(uri, experiment) if runs is None else runs
    missing = [c for c in cells if c.run_key not in runs]
    if not missing:
        return []
    set_tracking_uri(uri)
    if MlflowClient(uri).get_experiment_by_name(experiment) is None:
        return []
    by_cell: dict[tuple, object] = {}
    for run in search_runs(experiment_names=[experiment], output_format="list"):
        t = run.data.tags
        ident = (t.get("harness.row"), t.get("harness.dataset"), t.get("harness.seed"))
        prev = by_cell.get(ident)
        done = run.info.status == "FINISHED"
        if prev is None or (done, run.info.start_time or 0) > (prev.info.status == "FINISHED", prev.info.start_time or 0):
            by_cell[ident] = run
    lines = []
    for c in missing:
        run = by_cell.get((c.row, c.dataset, str(c.seed)))
        if run is None:
            continue
        mine = cell_params(hashed_config(c.config))  # what a run logs as params (no nulls)
        theirs = run.data.params
        diff = [f"{k} {theirs[k]} there, {v} here" for k, v in sorted(mine.items()) if k in theirs and theirs[k] != v]
        diff += [f"{k} {v} here, absent there" for k, v in sorted(mine.items()) if k not in theirs][: max(0, 3 - len(diff))]
        lines.append(f"{c.id}: run {run.info.run_id[:8]} ({run.info.status.lower()}) has another run key"
                     + (f": {'; '.join(diff[:3])}" if diff else ""))
    if not lines:
        return []
    head = (f"{len(lines)} cell(s) have no run for their run key, but runs of the same row, dataset and seed "
            "exist under other keys (other --set/--set-file overrides, or another version of the spec); "
            "pass the same overrides to see them:")
    return [head, *lines[:5]] + ([f"... and {len(lines) - 5} more"] if len(lines) > 5 else [])
