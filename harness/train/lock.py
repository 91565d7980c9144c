"""A cell's lock: an exclusive flock on ``<workspace>/<run_key>/lock`` held for the whole run.

The kernel releases it when the process dies, however it dies, so a free lock means "nobody
is training this cell" and two `harness run` of one spec never train a cell twice.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class CellLock:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.fd: int | None = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
        return False


def is_locked(path: str | Path) -> bool:
    """True while some process holds the lock (checked without taking it for long)."""
    path = Path(path)
    if not path.exists():
        return False
    lock = CellLock(path)
    if lock.acquire():
        lock.release()
        return False
    return True
