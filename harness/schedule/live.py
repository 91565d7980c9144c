"""What `harness run` shows while the local pool trains: a live table on a terminal, plain lines
otherwise.

The table is redrawn about once a second from each running cell's progress file
(``<workspace>/<run_key>/progress.json``, replaced atomically by the trainer; the tail of the
cell's log when there is none yet). Above the cells, one overall line: done / running / failed /
pending, elapsed time and an ETA. A finished cell shows its duration and headline metric (from
its ``eval.json``), a killed one shows killed. When the cells do not fit the terminal, the
running, failed and killed ones are kept and the rest is summarised in one line.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from harness.evaluation.kinds import evaluator
from harness.spec.matrix import Cell
from harness.spec.workspace import CellPaths

PROGRESS = re.compile(r"iter (\d+)/(\d+) .* eta (\S+)s")
#: states that always keep their line when the table has to be cut
KEEP = ("running", "retrying", "failed", "killed")
#: loggers whose INFO lines would scroll the table (the children log to their own files)
QUIET = ("mlflow", "alembic", "urllib3", "git")


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


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
class CellState:
    state: str = "pending"  # pending | done earlier | running elsewhere | running | retrying | finished | failed | killed
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
        self.states = {c.run_key: CellState() for c in cells}
        self.todo = {d.cell.run_key for d in decisions if d.action == "run"}
        for d in decisions:
            if d.action == "skip":
                self.states[d.cell.run_key] = CellState("done earlier", d.note)
            elif d.action == "busy":
                self.states[d.cell.run_key] = CellState("running elsewhere", d.note)
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
            if d.action != "run":
                self.line(f"{d.cell.id}: {d.note}, skipped" if d.action == "skip" else f"{d.cell.id}: {d.note}")

    def line(self, text: str) -> None:
        if self.live is None:
            print(text, flush=True)

    # ------------------------------------------------------------------ state

    def event(self, kind: str, cell: Cell, attempt: int, log: Path) -> None:
        """Called by the pool: start | retry | finished | failed | busy | killed."""
        now = time.time()
        with self.lock:
            st = self.states[cell.run_key]
            if kind == "start":
                st.state, st.attempt, st.started, st.ended = "running", attempt, now, None
            elif kind == "retry":
                st.state, st.ended = "retrying", now
            else:
                st.state = {"busy": "running elsewhere"}.get(kind, kind)
                st.attempt, st.ended = attempt, now
        text = f"{cell.id}: {st.state} (attempt {attempt}"
        if kind == "finished":
            text += f", {fmt_duration(st.ended - st.started if st.started else None)}"
            metric = headline(cell, CellPaths.of(self.workspace, cell.run_key))
            text += f", {metric}" if metric else ""
        self.line(text + f", log {log})")

    def counts(self) -> dict[str, int]:
        """done (finished now or earlier), running, failed, killed, pending."""
        out = {"done": 0, "running": 0, "failed": 0, "killed": 0, "pending": 0}
        for st in self.states.values():
            if st.state in ("finished", "done earlier"):
                out["done"] += 1
            elif st.state in ("running", "retrying", "running elsewhere"):
                out["running"] += 1
            elif st.state in ("failed", "killed"):
                out[st.state] += 1
            else:
                out["pending"] += 1
        return out

    def _progress(self, cell: Cell, st: CellState) -> tuple[str, float | None]:
        """(text, seconds left) of a running cell."""
        paths = CellPaths.of(self.workspace, cell.run_key)
        p = read_progress(paths, st.started or 0.0)
        if p is None:
            text = last_progress(paths.log) if st.started is None else ""
            return (text or "starting"), None
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
                     if st.state == "finished" and st.started and st.ended]
        lefts = lefts or []
        per_cell = sum(durations) / len(durations) if durations else None
        if self.stopped or (c["pending"] == 0 and c["running"] == 0):
            return line
        if per_cell is None and lefts:  # nothing finished yet: a running cell's elapsed + left
            running = [(now - st.started) for st in self.states.values() if st.state == "running" and st.started]
            per_cell = max(running) + max(lefts) if running else None
        if per_cell is None:
            return line + " · ETA ?"
        work = sum(lefts) + c["pending"] * per_cell
        return line + f" · ETA {fmt_duration(max(lefts, default=0.0) if not c['pending'] else work / self.jobs)}"

    # ------------------------------------------------------------------ rendering

    def rows(self) -> list[tuple[Cell, CellState, str]]:
        """(cell, state, info) per cell; info: progress, duration and metric, or the note."""
        now = time.time()
        out, lefts = [], []
        with self.lock:
            items = [(c, CellState(**vars(self.states[c.run_key]))) for c in self.cells]
        for c, st in items:
            info = st.note
            if st.state == "running":
                info, left = self._progress(c, st)
                info += f" · attempt {st.attempt}" if st.attempt > 1 else ""
                if left is not None:
                    lefts.append(left)
            elif st.state == "finished":
                metric = headline(c, CellPaths.of(self.workspace, c.run_key))
                info = fmt_duration(st.ended - st.started if st.started and st.ended else None) + (f" · {metric}"
                                                                                                   if metric else "")
            elif st.state in ("failed", "killed", "retrying"):
                p = read_progress(CellPaths.of(self.workspace, c.run_key), st.started or 0.0) if st.started else None
                at = f" at {p.get('iteration')}/{p.get('total')}" if p else ""
                info = f"attempt {st.attempt}{at}" + (f" after {fmt_duration((st.ended or now) - st.started)}"
                                                      if st.started else "")
            out.append((c, st, info))
        self._lefts = lefts
        return out

    def render(self, height: int | None = None):
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        rows = self.rows()
        if height is None:
            height = self.live.console.size.height if self.live is not None else 10_000
        room = max(1, height - 6)  # overall line, title, header, rules
        shown = rows
        hidden: list[tuple[Cell, CellState, str]] = []
        if len(rows) > room:
            keep = [r for r in rows if r[1].state in KEEP]
            rest = [r for r in rows if r[1].state not in KEEP]
            take = max(0, room - 1 - len(keep))
            chosen = {id(r) for r in keep[: room - 1] + rest[:take]}
            shown = [r for r in rows if id(r) in chosen]
            hidden = [r for r in rows if id(r) not in chosen]
        t = Table(title="harness run", title_justify="left", expand=False)
        for col in ("cell", "state", "progress / result", "key"):
            t.add_column(col, no_wrap=True, overflow="ellipsis")
        style = {"finished": "green", "done earlier": "green", "failed": "red", "killed": "red", "running": "cyan",
                 "retrying": "yellow"}
        for c, st, info in shown:
            t.add_row(c.id, Text(st.state, style=style.get(st.state, "")), info, c.short_key)
        if hidden:
            counts: dict[str, int] = {}
            for _, st, _ in hidden:
                counts[st.state] = counts.get(st.state, 0) + 1
            t.add_row(f"… {len(hidden)} more", ", ".join(f"{n} {s}" for s, n in sorted(counts.items())), "", "")
        return Group(Text(self.overall(self._lefts)), t)

    def close(self) -> None:
        self.stopped = True
        if self.live is not None:
            self.live.refresh()
            self.live.stop()
            for name, level in self._levels.items():
                logging.getLogger(name).setLevel(level)
