"""The cell's spool: every write to the tracker goes to an append-only file in the cell's
directory first, and a sender thread replays it to MLflow in order. The training loop only
appends (and fsyncs) a line; it never waits on the network.

Files in the cell's directory:
- `spool.jsonl`: one JSON record a line, numbered from 0: metrics (with their original steps and
  timestamps), params, tags, artifacts, and the run's end (its status and reason);
- `spool.sent`: the number of records MLflow has (written after each batch sent);
- `unsynced`: present when a cell ended while its store was away; what it says is shown by
  `harness status`, and `harness sync` or the next `harness run` sends the rest.

All three are removed once the end record is sent.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.formats.atomic import is_no_space

SPOOL, SENT, UNSYNCED = "spool.jsonl", "spool.sent", "unsynced"
METRICS_PER_BATCH = 1000
BATCH = 100  # params and tags per log_batch
RETRY_S = (0.5, 1.0, 2.0, 3.0)  # then every 3 s, for as long as the cell runs


def pending(cell_dir: str | Path) -> int:
    """How many records of the cell's spool MLflow does not have yet (0 without a spool)."""
    cell_dir = Path(cell_dir)
    return max(0, _count(cell_dir / SPOOL) - _sent(cell_dir))


def _count(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return sum(1 for line in f if line.endswith(b"\n"))  # a torn last line is not a record
    except FileNotFoundError:
        return 0


def _sent(cell_dir: Path) -> int:
    try:
        return int((cell_dir / SENT).read_text().strip() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def _records(cell_dir: Path) -> list[dict]:
    out = []
    try:
        with open(cell_dir / SPOOL, "rb") as f:
            for line in f:
                if line.endswith(b"\n"):
                    out.append(json.loads(line))
    except FileNotFoundError:
        pass
    return out


def _clear(cell_dir: Path) -> None:
    for name in (SPOOL, SENT, UNSYNCED):
        with contextlib.suppress(FileNotFoundError):
            (cell_dir / name).unlink()


class Sender:
    """Replays records to one MLflow run with a client; `send` raises when the store is away."""

    def __init__(self, client, run_id: str):
        self.client, self.run_id = client, run_id

    def send(self, records: list[dict]) -> None:
        """Send consecutive records, merging runs of metrics into batches."""
        from mlflow.entities import Metric

        i = 0
        while i < len(records):
            rec = records[i]
            if rec["op"] == "metrics":
                metrics = []
                while i < len(records) and records[i]["op"] == "metrics" and len(metrics) < METRICS_PER_BATCH:
                    metrics += [Metric(k, float(v), int(ts), int(step)) for k, v, ts, step in records[i]["data"]]
                    i += 1
                self.client.log_batch(self.run_id, metrics=metrics)
                continue
            self._one(rec)
            i += 1

    def _one(self, rec: dict) -> None:
        from mlflow.entities import Param, RunTag

        op = rec["op"]
        if op == "params":
            existing = self.client.get_run(self.run_id).data.params
            items = [Param(k, v) for k, v in rec["data"].items() if k not in existing]  # immutable: resume skips
            for j in range(0, len(items), BATCH):
                self.client.log_batch(self.run_id, params=items[j:j + BATCH])
        elif op == "tags":
            items = [RunTag(k, v) for k, v in rec["data"].items()]
            for j in range(0, len(items), BATCH):
                self.client.log_batch(self.run_id, tags=items[j:j + BATCH])
        elif op == "artifact":
            if Path(rec["path"]).exists():  # a file removed since (a set-aside checkpoint) is not waited for
                self.client.log_artifact(self.run_id, rec["path"], rec.get("artifact_path"))
        elif op == "end":
            from mlflow.entities import RunTag

            if rec.get("reason"):
                self.client.log_batch(self.run_id, tags=[RunTag("harness.failure", rec["reason"])])
            elif rec["status"] == "FINISHED":  # a resumed run that finishes no longer carries an old failure
                from harness.track.names import LIVE_ONLY_TAGS

                tags = self.client.get_run(self.run_id).data.tags
                if "harness.failure" in tags:
                    self.client.log_batch(self.run_id, tags=[RunTag("harness.resumed_after",
                                                                    tags["harness.failure"])])
                    self.client.delete_tag(self.run_id, "harness.failure")
                for key in LIVE_ONLY_TAGS:  # a finished run's lease means nothing: not shown in the UI
                    if key in tags:
                        self.client.delete_tag(self.run_id, key)
            self.client.set_terminated(self.run_id, status=rec["status"], end_time=rec["ts"])
        else:
            raise ValueError(f"unknown spool record {op!r}")


class Spool:
    """Append-only log of one run's writes, and the thread that sends it."""

    def __init__(self, cell_dir: str | Path, sender: Sender, *, say: Callable[[str], None] | None = None):
        self.dir = Path(cell_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        if pending(self.dir):  # a previous attempt's writes: `sync` them first, never drop them
            raise RuntimeError(f"{self.dir / SPOOL} holds unsent records; sync them before a new run")
        _clear(self.dir)
        self.sender = sender
        self.say = say or (lambda text: print(text, file=sys.stderr, flush=True))
        self._file = open(self.dir / SPOOL, "ab")  # noqa: SIM115 (closed by close())
        self._queue: list[dict] = []
        self._written = 0  # records in the file
        self._sent = 0
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._closing = False
        self._away_since: float | None = None
        self._full: BaseException | None = None  # the store's disk is full: waiting is pointless
        self._thread = threading.Thread(target=self._loop, name="harness-spool-sender", daemon=True)
        self._thread.start()

    # ---- the writer's side (training loop, heartbeat thread): append, fsync, return
    def append(self, op: str, **fields: Any) -> None:
        rec = {"op": op, "run_id": self.sender.run_id, "ts": int(time.time() * 1000), **fields}
        line = (json.dumps(rec, separators=(",", ":")) + "\n").encode()
        with self._lock:
            self._file.write(line)
            self._file.flush()
            os.fsync(self._file.fileno())
            self._written += 1
            self._queue.append(rec)
            self._wake.notify()

    def wait_sent(self, timeout: float | None) -> bool:
        """Wait until every record is sent (at most `timeout` s; None: no limit)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._sent < self._written:
                left = None if deadline is None else deadline - time.monotonic()
                if (left is not None and left <= 0) or self._full is not None:
                    return False
                self._wake.wait(left if left is None else min(left, 0.5))
        return True

    def close(self, timeout: float | None) -> bool:
        """Send what is left (waiting at most `timeout` s) and stop the sender. True when MLflow
        has everything (the spool files are removed); False leaves the spool and an `unsynced`
        marker on disk for `harness sync`."""
        done = self.wait_sent(timeout)
        with self._lock:
            self._closing = True
            self._wake.notify_all()
            left = self._written - self._sent
        self._thread.join(timeout=5)
        self._file.close()
        if done:
            _clear(self.dir)
        else:
            why = "full" if self._full is not None else "unreachable"
            with contextlib.suppress(OSError):  # the spool's own disk may be the full one
                (self.dir / UNSYNCED).write_text(
                    f"{left} tracking record(s) not sent: the store was {why} when the cell ended\n")
        return done

    # ---- the sender's side
    def _loop(self) -> None:
        tries = 0
        while True:
            with self._lock:
                while not self._queue and not self._closing:
                    self._wake.wait()
                if self._closing:
                    return
                batch = list(self._queue)
            try:
                self.sender.send(batch)
            except Exception as exc:  # the store is away: keep the records, try again
                if is_no_space(exc) and self._full is None:  # not coming back by itself: stop waiting
                    self.say(f"tracking store full ({_short(exc)}): writes stay spooled in {self.dir / SPOOL}")
                    with self._lock:
                        self._full = exc
                        self._wake.notify_all()
                if self._away_since is None:
                    self._away_since = time.time()
                    self.say(f"tracking store unreachable ({_short(exc)}); training goes on, writes are "
                             f"spooled to {self.dir / SPOOL}")
                delay = RETRY_S[min(tries, len(RETRY_S) - 1)]
                tries += 1
                with self._lock:
                    if not self._closing:
                        self._wake.wait(delay)
                continue
            tries = 0
            if self._away_since is not None:
                self.say(f"tracking store back after {time.time() - self._away_since:.0f} s: spooled writes sent")
                self._away_since = None
            with self._lock:
                del self._queue[:len(batch)]
                self._sent += len(batch)
                (self.dir / SENT).write_text(str(self._sent))  # no fsync: a resend is deduplicated
                self._wake.notify_all()


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:160]


def sync(cell_dir: str | Path, client_factory: Callable[[], Any]) -> int:
    """Send what a cell's spool holds beyond `spool.sent` (after a cell that ended while its store
    was away, or a worker that died); returns the number of records sent. Raises when the store
    is still away (nothing is lost: the next sync starts where this one stopped)."""
    cell_dir = Path(cell_dir)
    records = _records(cell_dir)
    done = _sent(cell_dir)
    todo = records[done:]
    if not todo:
        _clear(cell_dir)
        return 0
    client = client_factory()
    by_run: list[tuple[str, list[dict]]] = []
    for rec in todo:
        if by_run and by_run[-1][0] == rec["run_id"]:
            by_run[-1][1].append(rec)
        else:
            by_run.append((rec["run_id"], [rec]))
    for run_id, recs in by_run:
        sender = Sender(client, run_id)
        for j in range(0, len(recs), 200):
            chunk = recs[j:j + 200]
            sender.send(chunk)
            done += len(chunk)
            (cell_dir / SENT).write_text(str(done))
    _clear(cell_dir)
    return len(todo)
