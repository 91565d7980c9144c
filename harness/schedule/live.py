"""What `harness run` shows while the pool trains: a live table on a terminal, plain lines
otherwise.

The pool's events (`harness.schedule.pool`) set each cell's `CellState`; the table is redrawn
about once a second from each running cell's progress file (``<workspace>/<run_key>/progress.json``,
replaced atomically by the trainer: nothing is read from logs). Above the cells, one overall line:
done / running / failed / pending, elapsed time and an ETA. A finished cell shows its duration
and headline metric (from its ``eval.json``), a killed one shows killed, a cell waiting in Slurm's
queue its job. When the cells do not fit the terminal, the running, failed and killed ones are
kept and the rest is summarised in one line.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from harness.evaluation.kinds import evaluator
from harness.spec.matrix import Cell
from harness.spec.workspace import CellPaths
from harness.train.result import CellState

#: states that always keep their line when the table has to be cut
KEEP = (CellState.RUNNING, CellState.RETRYING, CellState.FAILED, CellState.KILLED)
STYLE = {CellState.FINISHED: "green", CellState.DONE_EARLIER: "green", CellState.FAILED: "red",
         CellState.KILLED: "red", CellState.RUNNING: "cyan", CellState.RETRYING: "yellow"}
#: loggers whose INFO lines would scroll the table (the children log to their own files)
QUIET = ("mlflow", "alembic", "urllib3", "git")


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def read_progress(paths: CellPaths, since: float = 0.0) -> dict | None:
    """The trainer's progress file, if written at or after `since` (seconds since the epoch):
    an older one is a previous attempt's, not this one's."""
    path = paths.progress
    try:
        if path.stat().st_mtime < since - 1.0:
            return None
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def headline(cell: Cell, paths: CellPaths) -> str:
    """The cell's headline metric from its eval.json, e.g. 'AP50 84.1 no NMS' ('' without one)."""
    try:
        values = json.loads(paths.eval_json.read_text())
    except (OSError, ValueError):
        return ""
    name = evaluator(cell.config.eval.metrics).headline_metric
    mode = "NMS" if cell.config.eval.nms else "no NMS"
    value = values.get(f"{cell.config.eval.headline}.{name}", values.get(name))
    if not isinstance(value, (int, float)):
        return ""
    return f"{name.upper()} {100 * value:.1f} {mode}"


@dataclass
class Shown:
    """One cell's line: its state and what the table says beside it."""

    state: CellState = CellState.PENDING
    note: str = ""
    attempt: int = 0
    started: float | None = None
    ended: float | None = None


class Display:
    """A live table on a terminal (redrawn about once a second); one line per event otherwise."""

    def __init__(self, cells: list[Cell], decisions, workspace: str, *, jobs: int = 1, tty: bool | None = None,
                 console=None):
        self.cells = cells
        self.workspace = Path(workspace)
        self.jobs = max(1, jobs)
        self.t0 = time.time()
        self.lock = threading.Lock()
        self.states = {c.run_key: Shown() for c in cells}
        for d in decisions:
            self.states[d.cell.run_key] = Shown(d.state, d.note)
        self.live = None
        self._lefts: list[float] = []
        self.stopped = False  # closed: no ETA any more
        self._levels: dict[str, int] = {}
        if sys.stdout.isatty() if tty is None else tty:
            from rich.live import Live

            for name in QUIET:  # library INFO lines would scroll the table away
                logger = logging.getLogger(name)
                self._levels[name] = logger.level
                logger.setLevel(max(logger.level, logging.WARNING))
            self.live = Live(console=console, get_renderable=self.render, refresh_per_second=1,
                             vertical_overflow="crop")
            self.live.start()
        for d in decisions:
            if d.state is CellState.DONE_EARLIER:
                self.line(f"{d.cell.id}: {d.note}, skipped")
            elif d.state is CellState.ELSEWHERE:
                self.line(f"{d.cell.id}: {d.note}")

    def line(self, text: str) -> None:
        if self.live is None:
            print(text, flush=True)

    # ------------------------------------------------------------------ state

    def event(self, state: CellState, cell: Cell, attempt: int, log: Path, where: str = "") -> None:
        """Called by the pool on every state change; where: the launch ("Slurm job 12")."""
        now = time.time()
        with self.lock:
            st = self.states[cell.run_key]
            st.state, st.attempt = state, attempt
            if state is CellState.QUEUED:
                st.note, st.started, st.ended = where, None, None
            elif state is CellState.RUNNING:
                st.started, st.ended = now, None
            else:
                st.ended = now
        if state is CellState.QUEUED:
            self.line(f"{cell.id}: submitted as {where} (attempt {attempt}, log {log})")
            return
        text = f"{cell.id}: {state} (attempt {attempt}"
        if state is CellState.FINISHED:
            text += f", {fmt_duration(st.ended - st.started if st.started else None)}"
            metric = headline(cell, CellPaths.of(self.workspace, cell.run_key))
            text += f", {metric}" if metric else ""
        self.line(text + f", log {log})")

    def counts(self) -> dict[str, int]:
        """done (finished now or earlier), running, failed, killed, pending."""
        out = {"done": 0, "running": 0, "failed": 0, "killed": 0, "pending": 0}
        for st in self.states.values():
            if st.state.done:
                out["done"] += 1
            elif st.state.active:
                out["running"] += 1
            elif st.state.ended_badly:
                out[st.state] += 1
            else:
                out["pending"] += 1
        return out

    def _progress(self, cell: Cell, st: Shown) -> tuple[str, float | None]:
        """(text, seconds left) of a running cell, from its progress file."""
        p = read_progress(CellPaths.of(self.workspace, cell.run_key), st.started or 0.0)
        if p is None:
            return "starting", None
        it, total = int(p.get("iteration", 0)), int(p.get("total", 0))
        if total and it >= total:
            return f"{it}/{total} evaluating", 0.0
        eta = p.get("eta_s")
        text = f"{it}/{total}" + (f" {100 * it / total:.0f}%" if total else "")
        if isinstance(eta, (int, float)):
            text += f" eta {fmt_duration(eta)}"
        if isinstance(p.get("loss"), (int, float)):
            text += f" loss {p['loss']:.3g}"
        return text, eta if isinstance(eta, (int, float)) else None

    def overall(self, lefts: list[float] | None = None) -> str:
        c = self.counts()
        now = time.time()
        line = (f"{c['done']}/{len(self.cells)} done · {c['running']} running · {c['failed']} failed · "
                + (f"{c['killed']} killed · " if c["killed"] else "")
                + f"{c['pending']} pending · elapsed {fmt_duration(now - self.t0)}")
        durations = [st.ended - st.started for st in self.states.values()
                     if st.state is CellState.FINISHED and st.started and st.ended]
        lefts = lefts or []
        per_cell = sum(durations) / len(durations) if durations else None
        if self.stopped or (c["pending"] == 0 and c["running"] == 0):
            return line
        if per_cell is None and lefts:  # nothing finished yet: a running cell's elapsed + left
            running = [(now - st.started) for st in self.states.values()
                       if st.state is CellState.RUNNING and st.started]
            per_cell = max(running) + max(lefts) if running else None
        if per_cell is None:
            return line + " · ETA ?"
        work = sum(lefts) + c["pending"] * per_cell
        return line + f" · ETA {fmt_duration(max(lefts, default=0.0) if not c['pending'] else work / self.jobs)}"

    # ------------------------------------------------------------------ rendering

    def rows(self) -> list[tuple[Cell, Shown, str]]:
        """(cell, state, info) per cell; info: progress, duration and metric, or the note."""
        now = time.time()
        out, lefts = [], []
        with self.lock:
            items = [(c, Shown(**vars(self.states[c.run_key]))) for c in self.cells]
        for c, st in items:
            info = st.note
            if st.state is CellState.RUNNING:
                info, left = self._progress(c, st)
                info += f" · attempt {st.attempt}" if st.attempt > 1 else ""
                if left is not None:
                    lefts.append(left)
            elif st.state is CellState.FINISHED:
                metric = headline(c, CellPaths.of(self.workspace, c.run_key))
                info = fmt_duration(st.ended - st.started if st.started and st.ended else None) + (f" · {metric}"
                                                                                                   if metric else "")
            elif st.state in (CellState.FAILED, CellState.KILLED, CellState.RETRYING):
                p = read_progress(CellPaths.of(self.workspace, c.run_key), st.started or 0.0) if st.started else None
                at = f" at {p.get('iteration')}/{p.get('total')}" if p else ""
                info = f"attempt {st.attempt}{at}" + (f" after {fmt_duration((st.ended or now) - st.started)}"
                                                      if st.started else "")
            out.append((c, st, info))
        self._lefts = lefts
        return out

    def render(self, height: int | None = None, width: int | None = None):
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        rows = self.rows()
        if height is None:
            height = self.live.console.size.height if self.live is not None else 10_000
        room = max(1, height - 6)  # overall line, title, header, rules
        shown = rows
        hidden: list[tuple[Cell, Shown, str]] = []
        if len(rows) > room:
            keep = [r for r in rows if r[1].state in KEEP]
            rest = [r for r in rows if r[1].state not in KEEP]
            take = max(0, room - 1 - len(keep))
            chosen = {id(r) for r in keep[: room - 1] + rest[:take]}
            shown = [r for r in rows if id(r) in chosen]
            hidden = [r for r in rows if id(r) not in chosen]
        if width is None:
            width = self.live.console.size.width if self.live is not None else 10_000
        counts: dict[str, int] = {}
        for _, st, _ in hidden:
            counts[st.state] = counts.get(st.state, 0) + 1
        more = [(f"… {len(hidden)} more", ", ".join(f"{n} {s}" for s, n in sorted(counts.items())), "")] \
            if hidden else []
        lines = [(c.id, st.state, info) for c, st, info in shown] + more
        keys = [c.short_key for c, _, _ in shown] + [""] * len(more)
        cells, with_key = fit_columns(lines, keys, width)
        t = Table(title="harness run", title_justify="left", expand=False)
        for col in ("cell", "state", "progress / result") + (("key",) if with_key else ()):
            t.add_column(col, no_wrap=True, overflow="ellipsis",
                         min_width=max((len(x[1]) for x in lines), default=5) if col == "state" else None)
        for (cell, state, info), key in zip(cells, keys, strict=True):
            t.add_row(cell, Text(state, style=STYLE.get(state, "")), info, *((key,) if with_key else ()))
        return Group(Text(self.overall(self._lefts)), t)

    def close(self) -> None:
        self.stopped = True
        if self.live is not None:
            self.live.refresh()
            self.live.stop()
            for name, level in self._levels.items():
                logging.getLogger(name).setLevel(level)


def short_id(cell_id: str, room: int) -> str:
    """A cell id cut to `room` characters in the middle, keeping its seed (the last part) and as
    much of the row as fits: `POTO+3DMF+Aux/synthetic/0` -> `POTO+3DM…/0`."""
    if len(cell_id) <= room:
        return cell_id
    head, _, seed = cell_id.rpartition("/")
    keep = max(1, room - len(seed) - 2)
    return f"{head[:keep]}…/{seed}" if head else cell_id[: max(1, room - 1)] + "…"


def fit_columns(lines: list[tuple[str, str, str]], keys: list[str], width: int) -> tuple[list, bool]:
    """The table's rows fitted to `width` columns: the run-key column goes first, then the
    progress text is cut, then the cell ids lose the middle of their row names; the seed and the
    state are never cut. Returns the rows and whether the key column is shown."""
    def need(cols: list[int]) -> int:  # rich's box: a border per column plus one, a space either side
        return sum(cols) + 3 * len(cols) + 1

    heads = ("cell", "state", "progress / result")
    w = [max([len(x[i]) for x in lines] + [len(heads[i])]) for i in range(3)]
    k = max([len(x) for x in keys] + [len("key")])
    if need(w + [k]) <= width:
        return lines, True
    if need(w) <= width:
        return lines, False
    over = need(w) - width
    info_min = min(w[2], len(heads[2]))
    cut = min(over, w[2] - info_min)
    w[2] -= cut
    over -= cut
    room = max(w[0] - over, min(w[0], 8))
    out = [(short_id(cell, room), state, info if len(info) <= w[2] else info[: max(1, w[2] - 1)] + "…")
           for cell, state, info in lines]
    return out, False

