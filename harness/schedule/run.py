"""`harness run` and `harness status`: plan, dedup against MLflow, dispatch, summarise."""

from __future__ import annotations

import shlex
import time
from dataclasses import replace
from pathlib import Path

from harness.schedule.backend import open_backend
from harness.schedule.job import Overrides, TrainJob
from harness.schedule.live import Display, read_progress
from harness.schedule.pool import Pool, Task
from harness.schedule.state import (
    RUN_STATES,
    Decision,
    busy,
    decide,
    end_stale,
    latest_runs,
    prepare_store,
)
from harness.spec.matrix import Cell
from harness.spec.workspace import CellPaths
from harness.track.mlflow_tracker import sync_cell
from harness.track.provenance import override_hint
from harness.track.runs import explain_missing
from harness.track.store import kind as store_kind
from harness.track.store import read_only, sqlite_file, without_credentials
from harness.train.exit_codes import ExitCode
from harness.train.result import CellState, read_result


def run_spec(cells: list[Cell], *, spec_name: str, spec_file: str, overrides: Overrides, workspace: str,
             uri: str, tracking_uri: str | None, jobs: int | None, rerun: bool, backend: str = "local",
             detach: bool = False, description: str = "") -> int:
    """Run the cells. uri: the store, resolved at the CLI edge (`resolve_tracking_uri`);
    tracking_uri: as the user gave it (None: the workspace's default), for the next-steps hint."""
    prepare_store(uri, spec_name, workspace, description)  # before any worker: parallel first migrations corrupt SQLite
    sync_cells(cells, uri, workspace)  # runs that ended while the store was away: their end decides
    decisions = decide(cells, latest_runs(uri, spec_name), workspace, rerun=rerun)
    end_stale(uri, decisions)
    todo = [d.cell for d in decisions if d.state is CellState.PENDING]
    skipped = sum(d.state is CellState.DONE_EARLIER for d in decisions)
    elsewhere = sum(d.state is CellState.ELSEWHERE for d in decisions)
    print(f"{spec_name}: {len(cells)} cells: {len(todo)} to run, {skipped} already finished, "
          f"{elsewhere} running elsewhere", flush=True)
    if not todo:
        if skipped == len(cells):
            print("every cell is already finished; nothing to train")
            print("\n".join(next_steps(spec_file, overrides, workspace, tracking_uri, uri)))
        return 0
    pool = Pool(open_backend(backend, workspace, jobs))
    tasks = [pool.add(cell, TrainJob.for_cell(cell, spec_file=spec_file, workspace=workspace, tracking_uri=uri,
                                              overrides=overrides, fresh=rerun)) for cell in todo]
    if detach and pool.backend.queues:
        return submitted(pool, tasks, spec_file)
    t0 = time.time()
    run_pool(pool, cells, decisions, workspace, len(tasks))
    code = summarise(tasks, skipped, elsewhere, time.time() - t0, pool.stopping)
    if skipped or any(t.state is CellState.FINISHED for t in tasks):
        for line in next_steps(spec_file, overrides, workspace, tracking_uri, uri):
            print(line)
    return code


def run_pool(pool: Pool, cells: list[Cell], decisions: list[Decision], workspace: str, todo: int) -> None:
    """Run the pool's cells to their end, shown live (every cell of the spec, the skipped ones too)."""
    display = Display(cells, decisions, workspace, jobs=pool.backend.max_jobs or todo)
    pool.on_event = display.event
    try:
        pool.run()
    finally:
        display.close()


def submitted(pool: Pool, tasks: list[Task], spec_file: str) -> int:
    """`--detach`: submit the cells to the backend's queue and return."""
    pool.start()
    for task in tasks:
        print(f"{task.cell.id}: submitted as {task.handle.label}", flush=True)
    print(f"{len(tasks)} jobs submitted; `harness status {spec_file}` shows their state")
    return 0


def next_steps(spec_file: str, overrides: Overrides, workspace: str, tracking_uri: str | None,
               uri: str) -> list[str]:
    """What to do with the finished runs: the report (with the same overrides and store) and the
    MLflow UI on the same store."""
    report = ["harness", "report", spec_file, *overrides.argv(), "--workspace", str(workspace)]
    if tracking_uri:  # never a password: it stays in the environment (MLFLOW_TRACKING_PASSWORD)
        report += ["--tracking-uri", without_credentials(tracking_uri)]
    ui = (f"mlflow ui --backend-store-uri {shlex.quote(uri)}" if store_kind(uri) != "server"
          else f"open {uri} in a browser (the MLflow server's UI)")
    return ["next:", f"  {shlex.join(report)}   # tables, intervals and plots", f"  {ui}   # the runs in MLflow's UI"]


def _attempt(r, t: Task) -> str:
    """MLflow's attempt number of the run where there is one (a run counts every launch that
    reached it, earlier `harness run`s' too), else this scheduler's launches."""
    return f"attempt {r.attempt} in MLflow" if r.attempt else f"launch {t.attempt}"


def summarise(tasks: list[Task], skipped: int, elsewhere: int, seconds: float, stopped: int | None) -> int:
    """The run's last lines, each failed cell with its worker's reason; the exit status."""
    counts: dict[str, int] = {}
    for t in tasks:
        if t.state is CellState.ELSEWHERE:  # it lost the race for the lock: another process trains it
            elsewhere += 1
        else:
            counts[t.state] = counts.get(t.state, 0) + 1
    failed = [t for t in tasks if t.state is CellState.FAILED]
    diverged = sum(t.result.diverged for t in failed)
    parts = [f"{n} {state}" + (f" ({diverged} diverged)" if state == CellState.FAILED and diverged else "")
             for state, n in sorted(counts.items())]
    parts += [f"{skipped} skipped"] if skipped else []
    parts += [f"{elsewhere} running elsewhere"] if elsewhere else []
    print(f"summary ({seconds:.0f} s): " + ", ".join(parts))
    for t in failed:
        r = t.result
        print(f"  FAILED {t.cell.id}: {r.message or 'no reason recorded'} (exit {r.exit_code}: "
              f"{replace(r, message='').describe()}, {_attempt(r, t)}; log {t.log})")
    if stopped is not None:
        print("stopped by a signal: the children were terminated and their runs ended KILLED; "
              "run the same command again to continue")
        return ExitCode.killed(stopped)
    return 1 if failed else 0


def sync_cells(cells: list[Cell], uri: str, workspace: str | Path) -> tuple[int, int]:
    """Send the spooled tracking writes of cells that no process is training (`harness sync`, and
    `harness run` before it decides what to run); (records sent, cells synced)."""
    records = synced = 0
    for c in cells:
        paths = CellPaths.of(workspace, c.run_key)
        cdir = paths.dir
        if not cdir.is_dir() or busy(workspace, c.run_key):  # a live worker's sender owns its spool
            continue
        n = sync_cell(cdir, uri)
        if n:
            print(f"{c.id}: sent {n} spooled tracking record(s)", flush=True)
            records, synced = records + n, synced + 1
    return records, synced


def unsynced(workspace: str | Path, cell: Cell) -> bool:
    return CellPaths.of(workspace, cell.run_key).unsynced.exists()


def _clip(text: str, n: int) -> str:
    """The first line of a failure reason, at most n characters (a diverged run's reason, with
    its iteration, fits)."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= n else line[: n - 1] + "…"


def status_of(d: Decision, workspace: str | Path) -> str:
    """A cell's state as `harness status` shows it: a `CellState`, or one of the two states only
    MLflow and the workspace know (a run left RUNNING by a lost worker, writes still spooled)."""
    if d.state is CellState.ELSEWHERE:
        return CellState.RUNNING
    if unsynced(workspace, d.cell):
        return "unsynced (harness sync)"
    if d.run is None:  # a launch that failed before its run existed (bad input) answered in result.json
        answer = read_result(CellPaths.of(workspace, d.cell.run_key).result)
        return answer.state if answer is not None and answer.state.ended_badly else CellState.PENDING
    if d.run.status == "RUNNING":
        return "stale (worker lost)"
    return RUN_STATES.get(d.run.status, d.run.status.lower())


def status_table(cells: list[Cell], *, spec_name: str, workspace: str, uri: str, loaded=None) -> int:
    """The cells' states; uri: the store, resolved (and, when named, checked) at the CLI edge.
    With the loaded spec, pending cells whose runs were made with other overrides get one line
    with the `--set` string that finds them (`provenance.override_hint`)."""
    from rich.console import Console
    from rich.table import Table

    fresh = (path := sqlite_file(uri)) is not None and not path.is_file()  # nothing ran yet
    runs = {} if fresh else latest_runs(read_only(uri), spec_name)  # read-only: status never writes
    decisions = decide(cells, runs, workspace)
    table = Table(title=f"{spec_name}: {len(cells)} cells")
    for col in ("cell", "state", "progress", "run", "attempt", "failure"):
        table.add_column(col)
    counts: dict[str, int] = {}
    for d in decisions:
        run = d.run
        state = status_of(d, workspace)
        counts[state] = counts.get(state, 0) + 1
        progress = ""
        if state is CellState.RUNNING:  # the trainer's progress file
            p = read_progress(CellPaths.of(workspace, d.cell.run_key))
            progress = f"{p.get('iteration')}/{p.get('total')}" if p else ""
        failure = (run.failure or "") if run else ""
        if run is None and state in (CellState.FAILED, CellState.KILLED):  # no run: the worker's answer says why
            answer = read_result(CellPaths.of(workspace, d.cell.run_key).result)
            failure = answer.describe() if answer else ""
        table.add_row(d.cell.id, state, progress, run.run_id[:8] if run else "", str(run.attempt) if run else "",
                      _clip(failure, 160))
    console = Console()
    console.print(table)
    console.print(", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    if counts.get(CellState.PENDING) and runs:
        if loaded is not None:
            hint = override_hint(loaded, cells, read_only(uri), runs)
            lines = [hint] if hint else []
        else:
            lines = explain_missing(cells, read_only(uri), spec_name, runs)
        for line in lines:
            console.print(line, markup=False, highlight=False, soft_wrap=True)
    return 0


__all__ = ["run_spec", "status_table", "sync_cells"]
