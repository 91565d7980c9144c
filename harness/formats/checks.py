"""Value checks shared by the file readers."""

from __future__ import annotations

import math


def is_number(x) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def box_problem(box) -> str | None:
    """None for a valid [x, y, w, h] box, else what is wrong with it."""
    if not isinstance(box, list) or len(box) != 4 or not all(is_number(v) for v in box):
        return f"a box must be 4 finite numbers [x, y, w, h], got {box!r}"
    if box[2] < 0 or box[3] < 0:
        return f"box with negative size {box!r}"
    return None
