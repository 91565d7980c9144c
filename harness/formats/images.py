"""Image headers: size without decoding the pixels (CrowdHuman records carry no size)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from harness.spec.errors import DataError, Problem


@cache
def _size(path: str) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:  # reads the header only
            return im.size
    except FileNotFoundError:
        raise DataError(Problem(path, None, "", "missing image file")) from None
    except (OSError, UnidentifiedImageError) as exc:
        raise DataError(Problem(path, None, "", f"unreadable image: {exc}")) from None


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) from the image header, cached."""
    return _size(str(path))
