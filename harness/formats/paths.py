"""`${VAR}` and `${VAR:-default}` in spec strings (dataset roots, weights files)."""

from __future__ import annotations

import os
import re

from harness.spec.errors import DataError, Problem

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_vars(text: str, where: str = "data.root") -> str:
    """Expand from the environment; an unset variable without a default is an error."""

    def sub(m: re.Match) -> str:
        value = os.environ.get(m.group(1))
        if value:
            return value
        if m.group(2) is not None:
            return m.group(2)
        raise DataError(Problem(None, None, where, f"environment variable {m.group(1)} is not set"))

    return _VAR.sub(sub, text)
