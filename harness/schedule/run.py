"""`harness run` and `harness status`: plan, dedup against MLflow, dispatch, summarise."""

from __future__ import annotations

import shlex
import signal
import time
from pathlib import Path

from harness.schedule.job import Overrides
from harness.schedule.live import Display, last_progress, read_progress
from harness.schedule.local import LocalPool, Outcome
from harness.schedule.state import decide, end_stale, latest_runs, prepare_store
from harness.spec.matrix import Cell
from harness.spec.workspace import CellPaths
from harness.track.mlflow_tracker import sync_cell, without_credentials
from harness.track.runs import explain_missing
from harness.track.store import kind as store_kind
from harness.track.store import read_only, sqlite_file
from harness.train.exit_codes import DIVERGENCE, ExitCode, describe
from harness.train.lock import is_locked


def run_spec(cells: list[Cell], *, spec_name: str, spec_file: str, overrides: Overrides, workspace: str,
             uri: str, tracking_uri: str | None, jobs: int | None, rerun: bool, backend: str = "local",
             detach: bool = False, description: str = "") -> int:
    """Run the cells. uri: the store, resolved at the CLI edge (`resolve_tracking_uri`);
    tracking_uri: as the user gave it (None: the workspace's default), for the next-steps hint."""
    prepare_store(uri, spec_name, workspace, description)  # before any worker: parallel first migrations corrupt SQLite
    sync_cells(cells, uri, workspace)  # runs that ended while the store was away: their end decides
    decisions = decide(cells, latest_runs(uri, spec_name), workspace, rerun=rerun)
    end_stale(uri, decisions)
    todo = [(d.cell, rerun) for d in decisions if d.action == "run"]
    skipped = sum(d.action == "skip" for d in decisions)
    busy = sum(d.action == "busy" for d in decisions)
    print(f"{spec_name}: {len(cells)} cells: {len(todo)} to run, {skipped} already finished, "
          f"{busy} running elsewhere", flush=True)
    if not todo:
        if skipped == len(cells):
            print("every cell is already finished; nothing to train")
            print("\n".join(next_steps(spec_file, overrides, workspace, tracking_uri, uri)))
        return 0
    if backend == "slurm":
        from harness.schedule.slurm import run_slurm

        return run_slurm(todo, spec_file=spec_file, overrides=overrides, workspace=workspace, uri=uri,
                         detach=detach)
    pool = LocalPool(spec_file=spec_file, overrides=overrides, workspace=workspace, uri=uri, jobs=jobs)
    display = Display(cells, decisions, workspace, jobs=pool.backend.max_jobs)
    pool.on_event = display.event
    t0 = time.time()
    try:
        outcomes = pool.run(todo)
    finally:
        display.close()
    code = summarise(outcomes, uri, spec_name, skipped, busy, time.time() - t0, pool.stopping)
    if skipped or any(o.state == "finished" for o in outcomes):
        for line in next_steps(spec_file, overrides, workspace, tracking_uri, uri):
            print(line)
    return code


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


def summarise(outcomes: list[Outcome], uri: str, spec_name: str, skipped: int, busy: int, seconds: float,
              stopped: int | None) -> int:
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.state] = counts.get(o.state, 0) + 1
    failed = [o for o in outcomes if o.state == "failed"]
    diverged = sum(o.code in DIVERGENCE for o in failed)
    parts = [f"{n} {state}" + (f" ({diverged} diverged)" if state == "failed" and diverged else "")
             for state, n in sorted(counts.items())]
    parts += [f"{skipped} skipped"] if skipped else []
    parts += [f"{busy} running elsewhere"] if busy else []
    print(f"summary ({seconds:.0f} s): " + ", ".join(parts))
    if failed:
        runs = latest_runs(uri, spec_name)
        for o in failed:
            info = runs.get(o.cell.run_key)
            reason = info.failure if info and info.failure else "no reason recorded"
            print(f"  FAILED {o.cell.id}: {reason} (exit {o.code}: {describe(o.code)}, "
                  f"attempt {o.attempts}; log {o.log})")
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
        if not cdir.is_dir() or is_locked(paths.lock):  # a live worker's sender owns its spool
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


def status_table(cells: list[Cell], *, spec_name: str, workspace: str, uri: str) -> int:
    """The cells' states; uri: the store, resolved (and, when named, checked) at the CLI edge."""
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
        if d.action == "busy":
            state = "running"
        elif run is None:
            state = "pending"
        elif run.status == "RUNNING":
            state = "stale (worker lost)"
        else:
            state = run.status.lower()
        if d.action != "busy" and unsynced(workspace, d.cell):
            state = "unsynced (harness sync)"
        counts[state] = counts.get(state, 0) + 1
        progress = ""
        if state == "running":  # the trainer's progress file, else the tail of its log
            paths = CellPaths.of(workspace, d.cell.run_key)
            p = read_progress(paths)
            progress = f"{p.get('iteration')}/{p.get('total')}" if p else last_progress(paths.log)
        table.add_row(d.cell.id, state, progress, run.run_id[:8] if run else "", str(run.attempt) if run else "",
                      _clip(run.failure or "", 160) if run else "")
    console = Console()
    console.print(table)
    console.print(", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    if counts.get("pending") and runs:
        for line in explain_missing(cells, read_only(uri), spec_name, runs):
            console.print(line, markup=False, highlight=False)
    return 0


__all__ = ["run_spec", "status_table", "sync_cells", "signal"]
