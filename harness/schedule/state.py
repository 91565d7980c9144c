"""What MLflow says about each cell, and what to do with it.

Per run key the run that counts (`harness.track.runs.runs_by_key`: the latest FINISHED, else
the latest) decides: FINISHED -> skip; FAILED / KILLED -> run again (resuming
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
from harness.spec.workspace import CellPaths, store_lock
from harness.track.runs import RunInfo, end_killed, runs_by_key
from harness.train.lock import is_locked

__all__ = ["STALE_AFTER_S", "Decision", "RunInfo", "decide", "end_stale", "latest_runs", "prepare_store"]

#: run key -> the run that counts for it (one rule, in harness.track.runs)
latest_runs = runs_by_key

warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"sqlalchemy.*")

STALE_AFTER_S = 120.0


@dataclass
class Decision:
    cell: Cell
    action: str  # "skip" | "run" | "busy"
    run: RunInfo | None
    note: str = ""


def decide(cells: list[Cell], runs: dict[str, RunInfo], workspace: str | Path, *, rerun: bool = False,
           now: float | None = None) -> list[Decision]:
    now = time.time() if now is None else now
    out = []
    for cell in cells:
        run = runs.get(cell.run_key)
        locked = is_locked(CellPaths.of(workspace, cell.run_key).lock)
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
            if fresh and not CellPaths.of(workspace, cell.run_key).lock.exists():
                out.append(Decision(cell, "busy", run, "running elsewhere (recent heartbeat)"))
            else:
                out.append(Decision(cell, "run", run, "stale run (worker lost): resuming"))
        else:
            out.append(Decision(cell, "run", run, f"{run.status.lower()}: resuming"))
    return out


def end_stale(uri: str, decisions: list[Decision]) -> None:
    """End runs left RUNNING by a dead worker as KILLED, with the reason."""
    for d in decisions:
        if d.action == "run" and d.run is not None and d.run.status == "RUNNING":
            end_killed(uri, d.run.run_id, "worker lost: run left RUNNING without a live worker "
                                          "(reconciled by harness run)")


def prepare_store(uri: str, experiment: str, workspace: str | Path, description: str = "") -> None:
    """Create the store (SQLite migrations) and the experiment before any worker starts."""
    from harness.track.mlflow_tracker import prepare_experiment
    from harness.train.lock import CellLock

    Path(workspace).mkdir(parents=True, exist_ok=True)
    lock = CellLock(store_lock(workspace))  # two `harness run` at once: one migrates
    while not lock.acquire():
        time.sleep(0.2)
    try:
        prepare_experiment(uri, experiment, workspace, description)
    finally:
        lock.release()
