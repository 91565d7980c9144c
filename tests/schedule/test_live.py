"""The live table of `harness run`: under a real pseudo-terminal it moves while a cell trains,
counts cells in its overall line and shows killed cells as killed after Ctrl-C; off a terminal it
prints plain lines; it fits a small terminal."""

import fcntl
import json
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pytest

from harness.schedule.live import Display
from harness.schedule.state import Decision
from harness.spec.load import load_spec
from harness.spec.matrix import expand
from harness.train.result import CellState
from tests.train.helpers import tiny_overrides

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "experiments" / "quickstart.yaml"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")
OVERALL = re.compile(r"(\d+)/(\d+) done · (\d+) running · (\d+) failed · (?:(\d+) killed · )?(\d+) pending")


class Terminal:
    """A pseudo-terminal of `rows` x `cols` running a command in its own process group."""

    def __init__(self, cmd, env, rows=20, cols=150):
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True,
                                     cwd=ROOT)
        os.close(slave)
        self.master, self.buf, self.lock = master, bytearray(), threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # the child closed the terminal
                return
            if not chunk:
                return
            with self.lock:
                self.buf += chunk

    def text(self) -> str:
        with self.lock:
            return ANSI.sub("", self.buf.decode(errors="replace"))

    def wait_for(self, pattern, timeout=120.0, after=0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            hits = list(re.finditer(pattern, self.text()[after:]))
            if hits:
                return hits[-1]
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"no {pattern!r} on the terminal; it shows:\n{self.text()[-3000:]}")


def env():
    e = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    return {**e, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1", "TERM": "xterm-256color",
            "PYTHONPATH": str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")}


@pytest.mark.slow
def test_live_table_moves_counts_and_shows_killed_cells(tmp_path):
    tiny = tiny_overrides(tmp_path, fmt="odgt", iters=5000, size=64, ckpt=5000)
    ws = tmp_path / "ws"
    term = Terminal([sys.executable, "-m", "harness", "run", str(QUICKSTART), "--set-file", str(tiny),
                     "--workspace", str(ws), "--jobs", "1"], env())
    try:
        running = r"FCOS/synthetic/0\W+running\W+(\d+)/5000"
        first = term.wait_for(running, timeout=180)
        mark = len(term.text())
        time.sleep(2.5)  # the table redraws about once a second from the trainer's progress file
        second = term.wait_for(running, timeout=30, after=mark)
        assert int(second.group(1)) > int(first.group(1)), (first.group(0), second.group(0))
        overall = term.wait_for(OVERALL.pattern, after=mark)
        # 15 cells, one training, none failed, 14 pending
        assert overall.group(1, 2, 3, 4, 6) == ("0", "15", "1", "0", "14"), overall.group(0)
        # a 20-line terminal cannot hold 15 cells: the running one stays, the rest is summarised
        assert term.wait_for(r"… \d+ more\W+\d+ pending", after=mark)
        assert "Creating initial MLflow" not in term.text() and "INFO" not in term.text()

        end = len(term.text())
        os.killpg(term.proc.pid, signal.SIGINT)  # Ctrl-C: the terminal's foreground group
        assert term.proc.wait(timeout=90) == 128 + signal.SIGINT
        term.reader.join(timeout=10)
        tail = term.text()[end:]
        assert re.search(r"FCOS/synthetic/0\W+killed", tail), tail
        final = OVERALL.findall(tail)[-1]
        assert (final[2], final[3], final[4], final[5]) == ("0", "0", "1", "14"), tail
    finally:
        if term.proc.poll() is None:
            os.killpg(term.proc.pid, signal.SIGKILL)
            term.proc.wait()
        os.close(term.master)


@pytest.fixture
def cells():
    return expand(load_spec(str(QUICKSTART)))


def test_display_fits_a_small_terminal_keeping_running_and_failed_cells(tmp_path, cells):
    from rich.console import Console

    ws = tmp_path / "ws"
    d = Display(cells, [Decision(c, CellState.PENDING, None) for c in cells], str(ws), jobs=2, tty=False)
    log = ws / "log.txt"
    d.event(CellState.RUNNING, cells[0], 1, log)
    d.event(CellState.FINISHED, cells[0], 1, log)
    (ws / cells[0].run_key).mkdir(parents=True)
    (ws / cells[0].run_key / "eval.json").write_text(json.dumps({"nms.ap50": 0.831, "nms_free.ap50": 0.5}))
    d.event(CellState.RUNNING, cells[1], 1, log)
    d.event(CellState.FAILED, cells[1], 2, log)
    d.event(CellState.RUNNING, cells[7], 1, log)
    (ws / cells[7].run_key).mkdir(parents=True)
    (ws / cells[7].run_key / "progress.json").write_text(json.dumps({"iteration": 30, "total": 120, "eta_s": 75}))
    d.event(CellState.RUNNING, cells[9], 1, log)
    d.event(CellState.KILLED, cells[9], 1, log)

    console = Console(width=120, record=True, color_system=None)
    console.print(d.render(height=12))
    screen = console.export_text()
    assert len(screen.splitlines()) <= 12, screen
    for c, state in ((cells[1], "failed"), (cells[7], "running"), (cells[9], "killed")):
        assert re.search(re.escape(c.id) + r"\W+" + state, screen), screen
    assert re.search(re.escape(cells[7].id) + r".*30/120 25% eta 1m15s", screen), screen
    assert re.search(r"… \d+ more", screen), screen
    assert "1/15 done · 1 running · 1 failed · 1 killed · 11 pending" in screen, screen

    console = Console(width=120, record=True, color_system=None)
    console.print(d.render(height=40))  # room for every cell: the finished one with its metric
    screen = console.export_text()
    assert re.search(re.escape(cells[0].id) + r"\W+finished\W+\d+s · AP50 83.1 NMS", screen), screen
    assert "more" not in screen


def test_display_off_a_terminal_prints_plain_lines(tmp_path, cells, capsys):
    ws = tmp_path / "ws"
    (ws / cells[0].run_key).mkdir(parents=True)
    (ws / cells[0].run_key / "eval.json").write_text(json.dumps({"nms.ap50": 0.831}))
    decisions = [Decision(cells[0], CellState.PENDING, None),
                 Decision(cells[1], CellState.DONE_EARLIER, None, "already finished")]
    d = Display(cells[:2], decisions, str(ws), tty=False)
    d.event(CellState.RUNNING, cells[0], 1, ws / "log.txt")
    d.event(CellState.FINISHED, cells[0], 1, ws / "log.txt")
    d.close()
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{cells[1].id}: already finished, skipped"
    assert out[1].startswith(f"{cells[0].id}: running (attempt 1")
    assert re.match(re.escape(cells[0].id) + r": finished \(attempt 1, \d+s, AP50 83.1 NMS, log ", out[2]), out
    assert not any("\x1b[" in line for line in out)


@pytest.mark.parametrize("width", [80, 60])
def test_at_narrow_widths_the_key_goes_first_and_seed_and_state_stay(tmp_path, cells, width):
    from rich.console import Console

    from harness.schedule.live import short_id

    ws = tmp_path / "ws"
    d = Display(cells, [Decision(c, CellState.PENDING, None) for c in cells], str(ws), jobs=2, tty=False)
    log = ws / "log.txt"
    d.event(CellState.RUNNING, cells[0], 1, log)
    d.event(CellState.FINISHED, cells[0], 1, log)
    d.event(CellState.RUNNING, cells[13], 2, log)  # POTO+3DMF+Aux/synthetic/1, a second attempt
    (ws / cells[13].run_key).mkdir(parents=True)
    (ws / cells[13].run_key / "progress.json").write_text(json.dumps({"iteration": 30, "total": 120, "eta_s": 75}))
    console = Console(width=width, record=True, color_system=None)
    console.print(d.render(height=40, width=width))
    screen = console.export_text()
    assert max(len(line) for line in screen.splitlines()) <= width, screen
    assert "finished" in screen and "pending" in screen and "running" in screen, screen
    if width < 80:
        assert " key " not in screen, screen  # the key column goes first
    for c in cells:  # every cell keeps its seed, whole, beside its whole state
        assert re.search(re.escape(short_id(c.id, 99)[-2:]) + r"\W+(finished|pending|running)", screen), screen
    assert short_id("POTO+3DMF+Aux/synthetic/0", 12) == "POTO+3DMF…/0"
    assert short_id("A/x/12", 40) == "A/x/12"
