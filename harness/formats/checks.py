"""Value checks shared by the file readers."""

from __future__ import annotations

import math

#: Larger magnitudes are never a pixel coordinate, size, score or area (and an int this large
#: would overflow float conversion).
MAX_ABS = 1e12


def is_number(x) -> bool:
    """A finite int or float (not a bool) of magnitude below MAX_ABS."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return False
    if isinstance(x, int):
        return -MAX_ABS < x < MAX_ABS
    return math.isfinite(x) and abs(x) < MAX_ABS


def is_id(x) -> bool:
    """A COCO id: an int (not a bool) or a string."""
    return (isinstance(x, int) and not isinstance(x, bool)) or isinstance(x, str)


def box_problem(box) -> str | None:
    """None for a valid [x, y, w, h] box, else what is wrong with it."""
    if not isinstance(box, list) or len(box) != 4 or not all(is_number(v) for v in box):
        return f"a box must be 4 finite numbers [x, y, w, h] below {MAX_ABS:.0e}, got {str(box)[:80]}"
    if box[2] < 0 or box[3] < 0:
        return f"box with negative size {box!r}"
    return None
