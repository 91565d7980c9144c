"""`${VAR}` and `${VAR:-default}` in spec strings (dataset roots, weights files).

Errors about an expanded path show a variable's value only when it is a path (an absolute or
relative folder, no `:`-separated list, no control characters): `${PATH}`, a token or any other
value stays `${NAME}` in the message (`redact`)."""

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


def _is_path(value: str) -> bool:
    return (("/" in value or value.startswith(("~", "."))) and os.pathsep not in value
            and value.isprintable() and len(value) <= 1024)


def redact(message: str, *templates: str | None) -> str:
    """`message` about the expansion of `templates`, with the value of every variable they use
    that is not a path put back as `${NAME}`."""
    for text in templates:
        for m in _VAR.finditer(text or ""):
            value = os.environ.get(m.group(1))
            if value and not _is_path(value):
                message = message.replace(value, "${" + m.group(1) + "}")
    return message
