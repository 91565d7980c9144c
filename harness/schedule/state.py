"""What MLflow says about each cell, and what to do with it.

Per run key the latest run decides: FINISHED -> skip; FAILED / KILLED -> run again (resuming
from the cell's checkpoint, in the same MLflow run); RUNNING with its lock held -> busy (another
worker trains it); RUNNING with the lock free and no recent heartbeat -> stale: the worker died
without ending its run, which is ended KILLED here and run again.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from harness.spec.matrix import Cell
from harness.train.lock import is_locked

warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"sqlalchemy.*")

STALE_AFTER_S = 120.0


@dataclass
class RunInfo:
    run_id: str
    status: str
    start_time: int
    failure: str | None
    heartbeat: float | None
    attempt: int


@dataclass
class Decision:
    cell: Cell
    action: str  # "skip" | "run" | "busy"
    run: RunInfo | None
    note: str = ""


def latest_runs(uri: str, experiment: str) -> dict[str, RunInfo]:
    """run key -> its latest run (by start time), read with one paginated search."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    if mlflow.MlflowClient(uri).get_experiment_by_name(experiment) is None:
        return {}
    out: dict[str, RunInfo] = {}
    for run in mlflow.search_runs(experiment_names=[experiment], output_format="list"):
        tags = run.data.tags
        key = tags.get("harness.run_key")
        if not key:
            continue
        hb = tags.get("harness.heartbeat")
        info = RunInfo(run.info.run_id, run.info.status, run.info.start_time or 0, tags.get("harness.failure"),
                       float(hb) if hb else None, int(tags.get("harness.attempt", "1")))
        if key not in out or info.start_time > out[key].start_time:
            out[key] = info
    return out


def decide(cells: list[Cell], runs: dict[str, RunInfo], workspace: str | Path, *, rerun: bool = False,
           now: float | None = None) -> list[Decision]:
    now = time.time() if now is None else now
    out = []
    for cell in cells:
        run = runs.get(cell.run_key)
        locked = is_locked(Path(workspace) / cell.run_key / "lock")
        if locked:
            out.append(Decision(cell, "busy", run, "running in another process"))
        elif rerun:
            out.append(Decision(cell, "run", run, "rerun requested"))
        elif run is None:
            out.append(Decision(cell, "run", None, "new"))
        elif run.status == "FINISHED":
            out.append(Decision(cell, "skip", run, "already finished"))
        elif run.status == "RUNNING":
            fresh = run.heartbeat is not None and now - run.heartbeat < STALE_AFTER_S
            if fresh and not Path(workspace, cell.run_key, "lock").exists():
                out.append(Decision(cell, "busy", run, "running elsewhere (recent heartbeat)"))
            else:
                out.append(Decision(cell, "run", run, "stale run (worker lost): resuming"))
        else:
            out.append(Decision(cell, "run", run, f"{run.status.lower()}: resuming"))
    return out


def end_stale(uri: str, decisions: list[Decision]) -> None:
    """End runs left RUNNING by a dead worker as KILLED, with the reason."""
    from mlflow import MlflowClient
    from mlflow.entities import RunTag

    client = MlflowClient(uri)
    for d in decisions:
        if d.action == "run" and d.run is not None and d.run.status == "RUNNING":
            client.log_batch(d.run.run_id, tags=[RunTag("harness.failure", "worker lost: run left RUNNING "
                                                        "without a live worker (reconciled by harness run)")])
            client.set_terminated(d.run.run_id, status="KILLED")


def prepare_store(uri: str, experiment: str, workspace: str | Path) -> None:
    """Create the store (SQLite migrations) and the experiment before any worker starts."""
    from harness.track.mlflow_tracker import client_for, ensure_experiment
    from harness.train.lock import CellLock

    Path(workspace).mkdir(parents=True, exist_ok=True)
    lock = CellLock(Path(workspace) / ".store.lock")  # two `harness run` at once: one migrates
    while not lock.acquire():
        time.sleep(0.2)
    try:
        client = client_for(uri)
        ensure_experiment(client, experiment, uri, workspace)
    finally:
        lock.release()
