"""README regions between `<!-- harness:table NAME -->` and `<!-- /harness:table -->`."""

from __future__ import annotations

import re

REGION = re.compile(r"(<!-- harness:table (?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /harness:table -->)", re.S)


def rewrite(text: str, tables: dict[str, str]) -> tuple[str, list[str]]:
    """New text with every known region replaced; and the names of the regions that changed."""
    changed: list[str] = []

    def sub(m: re.Match) -> str:
        name = m.group("name")
        if name not in tables:
            return m.group(0)
        body = tables[name].rstrip("\n") + "\n"
        if body != m.group("body"):
            changed.append(name)
        return m.group(1) + body + m.group(4)

    return REGION.sub(sub, text), changed


def regions(text: str) -> list[str]:
    return [m.group("name") for m in REGION.finditer(text)]
