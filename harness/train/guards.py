"""What runs beside the training loop: the signal guard (a clean stop between iterations) and the
heartbeat (the run's lease, seen from MLflow)."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time

from harness.train.engine import Stop

HEARTBEAT_S = float(os.environ.get("HARNESS_HEARTBEAT_S", "30"))


class SignalGuard:
    """SIGTERM / SIGINT set a flag the loop checks between iterations; a second one raises."""

    def __init__(self):
        self.signum: int | None = None
        self._old = {}

    def __enter__(self):
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}
        return self

    def _handle(self, signum, frame):
        if self.signum is not None:
            raise Stop(f"killed by {signal.Signals(signum).name} (second signal)", signum)
        self.signum = signum

    def check(self, iteration: int) -> None:
        if self.signum is not None:
            raise Stop(f"killed by {signal.Signals(self.signum).name} at iteration {iteration}", self.signum)

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)
        return False


class Heartbeat:
    """Refreshes the run's `harness.heartbeat` tag (the lease seen from MLflow)."""

    def __init__(self, tracker, period: float = HEARTBEAT_S):
        self.tracker, self.period = tracker, period
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self.stop_event.wait(self.period):
            with contextlib.suppress(Exception):  # a missed beat is not worth killing the run
                self.tracker.set_tags({"harness.heartbeat": int(time.time())})

    def __enter__(self):
        self.tracker.set_tags({"harness.heartbeat": int(time.time())})
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_event.set()
        return False
