"""Atomic file writers: a reader sees the old file or the whole new one, never half of one.

Each writer serialises first (a non-finite number is refused before anything touches the disk),
writes a uniquely named temporary file beside the target, fsyncs it and renames it into place.
On any error the temporary file is removed, so no ``.tmp`` is ever left behind. A write a full
disk refuses is recognised (`is_no_space`) and reported as `NoSpace`: where, how much is free.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path


def write_text_atomic(path: str | Path, text: str | bytes) -> Path:
    """Text (UTF-8) or bytes. A folder that refuses the write is reported under the target's
    name, not the temporary's."""
    path = Path(path)
    data = text.encode() if isinstance(text, str) else text
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if is_no_space(exc) and not isinstance(exc, NoSpace):
            raise NoSpace(path, len(data)) from exc
        raise
    return path


def write_json(path: str | Path, data, *, indent: int | None = None) -> Path:
    """JSON (finite numbers only: ValueError otherwise, and nothing written)."""
    return write_text_atomic(path, json.dumps(data, allow_nan=False, indent=indent))


def write_json_lines(path: str | Path, records: Iterable[dict]) -> Path:
    """One compact JSON object per line (odgt)."""
    return write_text_atomic(path, "".join(json.dumps(r, allow_nan=False, separators=(",", ":")) + "\n"
                                           for r in records))


class NoSpace(OSError):
    """A write that a full disk (or an exhausted quota) refused, said so a person can act on it."""

    def __init__(self, where: str | Path, need: int | None = None, what: str = "this write"):
        free = free_bytes(where)
        need_text = f", {what} needs about {_mb(need)}" if need else ""
        super().__init__(errno.ENOSPC, f"no space left on the device holding {Path(where).parent}: "
                                       f"{_mb(free)} free{need_text}; free some space and run the cell again")
        self.where = where


def _mb(n: int | None) -> str:
    return "unknown" if n is None else f"{n / 2**20:.1f} MB"


def free_bytes(where: str | Path) -> int | None:
    """Free bytes on the device holding `where` (its nearest existing parent); None if unknown."""
    p = Path(where)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def check_space(where: str | Path, need: int, what: str = "this write", margin: int = 2**20) -> None:
    """Raise `NoSpace` before a write of about `need` bytes that the device cannot hold."""
    free = free_bytes(where)
    if free is not None and free < need + margin:
        raise NoSpace(where, need, what)


#: the messages of writers that report a full device without an errno (SQLite, torch's zip writer)
_FULL = ("database or disk is full", "no space left on device", "disk quota exceeded")


def is_no_space(exc: BaseException) -> bool:
    """Did a full device (or quota) cause `exc`? Checks its errno, its message and its causes."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, NoSpace) or (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)):
            return True
        if any(text in str(exc).lower() for text in _FULL):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False
