"""`harness run` and `harness status`: plan, dedup against MLflow, dispatch, summarise."""

from __future__ import annotations

import re
import signal
import sys
import time
from pathlib import Path

from harness.schedule.local import LocalPool, Outcome
from harness.schedule.state import Decision, decide, end_stale, latest_runs, prepare_store
from harness.spec.matrix import Cell
from harness.track.mlflow_tracker import check_store_exists, resolve_tracking_uri, sync_cell
from harness.track.runs import explain_missing
from harness.train.exit_codes import DIVERGENCE, describe
from harness.train.lock import is_locked

PROGRESS = re.compile(r"iter (\d+)/(\d+) .* eta (\S+)s")


def last_progress(log: Path) -> str:
    """'iteration/total, ETA' from the tail of a job's log."""
    try:
        with open(log, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 4096))
            tail = f.read().decode(errors="replace")
    except OSError:
        return ""
    hits = PROGRESS.findall(tail)
    if not hits:
        return ""
    it, total, eta = hits[-1]
    return f"{it}/{total}, eta {eta}s"


class Display:
    """A live table on a terminal; one line per event otherwise."""

    def __init__(self, cells: list[Cell], decisions: list[Decision], workspace: str):
        self.states = {c.run_key: ("pending", "") for c in cells}
        self.cells = cells
        self.workspace = workspace
        self.live = None
        for d in decisions:
            if d.action == "skip":
                self.states[d.cell.run_key] = ("skipped", d.note)
            elif d.action == "busy":
                self.states[d.cell.run_key] = ("running elsewhere", d.note)
        if sys.stdout.isatty():
            from rich.live import Live

            self.live = Live(self._table(), refresh_per_second=1)
            self.live.start()
        for d in decisions:
            if d.action != "run":
                self.line(f"{d.cell.id}: {d.note}, skipped" if d.action == "skip" else f"{d.cell.id}: {d.note}")

    def line(self, text: str) -> None:
        if self.live is None:
            print(text, flush=True)

    def _table(self):
        from rich.table import Table

        t = Table(title="harness run")
        for col in ("cell", "state", "progress", "key"):
            t.add_column(col)
        for c in self.cells:
            state, info = self.states[c.run_key]
            if state == "running":
                info = last_progress(Path(self.workspace) / c.run_key / "log.txt")
            t.add_row(c.id, state, info, c.short_key)
        return t

    def event(self, kind: str, cell: Cell, attempt: int, log: Path) -> None:
        state = {"start": "running", "retry": "retrying", "finished": "finished", "failed": "failed",
                 "busy": "running elsewhere"}.get(kind, kind)
        self.states[cell.run_key] = (state, f"attempt {attempt}")
        self.line(f"{cell.id}: {state} (attempt {attempt}, log {log})")
        if self.live is not None:
            self.live.update(self._table())

    def close(self) -> None:
        if self.live is not None:
            self.live.update(self._table())
            self.live.stop()


def run_spec(cells: list[Cell], *, spec_name: str, spec_file: str, override_args: list[str], workspace: str,
             tracking_uri: str | None, jobs: int | None, rerun: bool, backend: str = "local",
             detach: bool = False, description: str = "") -> int:
    uri = resolve_tracking_uri(tracking_uri, workspace)
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
        return 0
    if backend == "slurm":
        from harness.schedule.slurm import run_slurm

        return run_slurm(todo, spec_file=spec_file, override_args=override_args, workspace=workspace, uri=uri,
                         detach=detach)
    display = Display(cells, decisions, workspace)
    pool = LocalPool(spec_file=spec_file, override_args=override_args, workspace=workspace, uri=uri, jobs=jobs,
                     on_event=display.event)
    t0 = time.time()
    try:
        outcomes = pool.run(todo)
    finally:
        display.close()
    return summarise(outcomes, uri, spec_name, skipped, busy, time.time() - t0, pool.stopping)


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
        return 128 + stopped
    return 1 if failed else 0


def sync_cells(cells: list[Cell], uri: str, workspace: str | Path) -> tuple[int, int]:
    """Send the spooled tracking writes of cells that no process is training (`harness sync`, and
    `harness run` before it decides what to run); (records sent, cells synced)."""
    records = synced = 0
    for c in cells:
        cdir = Path(workspace) / c.run_key
        if not cdir.is_dir() or is_locked(cdir / "lock"):  # a live worker's sender owns its spool
            continue
        n = sync_cell(cdir, uri)
        if n:
            print(f"{c.id}: sent {n} spooled tracking record(s)", flush=True)
            records, synced = records + n, synced + 1
    return records, synced


def unsynced(workspace: str | Path, cell: Cell) -> bool:
    return (Path(workspace) / cell.run_key / "unsynced").exists()


def _clip(text: str, n: int) -> str:
    """The first line of a failure reason, at most n characters (a diverged run's reason, with
    its iteration, fits)."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= n else line[: n - 1] + "…"


def status_table(cells: list[Cell], *, spec_name: str, workspace: str, tracking_uri: str | None) -> int:
    from rich.console import Console
    from rich.table import Table

    uri = resolve_tracking_uri(tracking_uri, workspace)
    if tracking_uri:  # a store the user named must exist: reading it would create an empty one
        check_store_exists(uri)
    local = uri.startswith("sqlite:///")
    runs = latest_runs(uri, spec_name) if not local or Path(uri[len("sqlite:///"):]).is_file() else {}
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
        progress = last_progress(Path(workspace) / d.cell.run_key / "log.txt") if state == "running" else ""
        table.add_row(d.cell.id, state, progress, run.run_id[:8] if run else "", str(run.attempt) if run else "",
                      _clip(run.failure or "", 160) if run else "")
    console = Console()
    console.print(table)
    console.print(", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    if counts.get("pending") and runs:
        for line in explain_missing(cells, uri, spec_name, runs):
            console.print(line, markup=False, highlight=False)
    return 0


__all__ = ["run_spec", "status_table", "sync_cells", "signal"]
