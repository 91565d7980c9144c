"""Atomic file writers: a reader sees the old file or the whole new one, never half of one.

Each writer serialises first (a non-finite number is refused before anything touches the disk),
writes a uniquely named temporary file beside the target, fsyncs it and renames it into place.
On any error the temporary file is removed, so no ``.tmp`` is ever left behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path


def write_text_atomic(path: str | Path, text: str) -> Path:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, data, *, indent: int | None = None) -> Path:
    """JSON (finite numbers only: ValueError otherwise, and nothing written)."""
    return write_text_atomic(path, json.dumps(data, allow_nan=False, indent=indent))


def write_json_lines(path: str | Path, records: Iterable[dict]) -> Path:
    """One compact JSON object per line (odgt)."""
    return write_text_atomic(path, "".join(json.dumps(r, allow_nan=False, separators=(",", ":")) + "\n"
                                           for r in records))
