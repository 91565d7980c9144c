"""What MLflow says about each cell, and what to do with it.

Per run key the run that counts (`harness.track.runs.runs_by_key`: the latest FINISHED, else
the latest) decides the cell's `CellState` before anything runs: FINISHED -> done earlier (skipped);
FAILED / KILLED -> pending (run again, resuming from the cell's checkpoint, in the same MLflow
run); its lock held, or RUNNING with a recent heartbeat -> running elsewhere (another worker
trains it); RUNNING with the lock free and no recent heartbeat -> stale: the worker died without
ending its run, which is ended KILLED here, and the cell is pending.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from harness.spec.matrix import Cell
from harness.spec.workspace import CellPaths, store_lock
from harness.track.runs import RunInfo, end_killed, runs_by_key
from harness.train.lock import CellLock, is_locked
from harness.train.result import CellState

__all__ = ["RUN_STATES", "STALE_AFTER_S", "Decision", "RunInfo", "busy", "decide", "end_stale", "latest_runs",
           "prepare_store", "store_locked"]

#: run key -> the run that counts for it (one rule, in harness.track.runs)
latest_runs = runs_by_key

warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"sqlalchemy.*")

STALE_AFTER_S = 120.0

#: MLflow's final statuses as cell states
RUN_STATES = {"FINISHED": CellState.FINISHED, "FAILED": CellState.FAILED, "KILLED": CellState.KILLED}


@dataclass
class Decision:
    cell: Cell
    state: CellState  # PENDING (to run), DONE_EARLIER (skipped) or ELSEWHERE (another process trains it)
    run: RunInfo | None
    note: str = ""


def busy(workspace: str | Path, run_key: str) -> bool:
    """Whether a worker holds the cell's lock (the lock is the worker's: `harness train` takes it)."""
    return is_locked(CellPaths.of(workspace, run_key).lock)


def decide(cells: list[Cell], runs: dict[str, RunInfo], workspace: str | Path, *, rerun: bool = False,
           now: float | None = None) -> list[Decision]:
    now = time.time() if now is None else now
    out = []
    for cell in cells:
        run = runs.get(cell.run_key)
        if busy(workspace, cell.run_key):
            out.append(Decision(cell, CellState.ELSEWHERE, run, "running in another process"))
        elif rerun:
            out.append(Decision(cell, CellState.PENDING, run, "rerun requested"))
        elif run is None:
            out.append(Decision(cell, CellState.PENDING, None, "new"))
        elif run.status == "FINISHED":
            out.append(Decision(cell, CellState.DONE_EARLIER, run, "already finished"))
        elif run.status == "RUNNING":
            fresh = run.heartbeat is not None and now - run.heartbeat < STALE_AFTER_S
            if fresh and not CellPaths.of(workspace, cell.run_key).lock.exists():
                out.append(Decision(cell, CellState.ELSEWHERE, run, "running elsewhere (recent heartbeat)"))
            else:
                out.append(Decision(cell, CellState.PENDING, run, "stale run (worker lost): resuming"))
        else:
            out.append(Decision(cell, CellState.PENDING, run, f"{run.status.lower()}: resuming"))
    return out


def end_stale(uri: str, decisions: list[Decision]) -> None:
    """End runs left RUNNING by a dead worker as KILLED, with the reason."""
    for d in decisions:
        if d.state is CellState.PENDING and d.run is not None and d.run.status == "RUNNING":
            end_killed(uri, d.run.run_id, "worker lost: run left RUNNING without a live worker "
                                          "(reconciled by harness run)")


def prepare_store(uri: str, experiment: str, workspace: str | Path, description: str = "") -> None:
    """Create the store (SQLite migrations) and the experiment before any worker starts."""
    from harness.track.mlflow_tracker import prepare_experiment

    Path(workspace).mkdir(parents=True, exist_ok=True)
    with store_locked(workspace):  # two `harness run` at once: one migrates
        prepare_experiment(uri, experiment, workspace, description)


@contextmanager
def store_locked(workspace: str | Path) -> Iterator[None]:
    """Hold the workspace's store lock (waiting for it): one process at a time creates the store,
    or a sweep's parent run. A lock of the store, not of a cell."""
    lock = CellLock(store_lock(workspace))
    while not lock.acquire():
        time.sleep(0.2)
    try:
        yield
    finally:
        lock.release()
