"""CrowdHuman ``.odgt``: one JSON object per line.

GT lines: ``{"ID": str, "gtboxes": [{"tag": str, "fbox": [x, y, w, h], "vbox": ..., "hbox": ...,
"extra": {"ignore": 0|1, ...}, "head_attr": {...}}], "width"?: int, "height"?: int}``.
Detection lines: ``{"ID": str, "dtboxes": [{"box": [x, y, w, h], "score": s, "tag": 1}],
"width"?, "height"?}``.
"""

from __future__ import annotations

import json
from pathlib import Path

from harness.formats.atomic import write_json_lines
from harness.formats.checks import box_problem, is_number
from harness.spec.errors import DataError, Problem


def read_lines(path: str | Path) -> list[tuple[int, dict]]:
    """Parse a JSON-lines file; (line number, object) for each non-blank line."""
    path = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(Problem(path, None, "", f"cannot read file: {exc}")) from None
    out = []
    # JSON lines end at "\n" only: str.splitlines() would also split at U+2028 and other
    # separators that JSON allows inside strings
    for n, line in enumerate(text.replace("\r\n", "\n").split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(Problem(path, n, "", f"malformed JSON: {exc.msg} (column {exc.colno})")) from None
        except (ValueError, RecursionError) as exc:  # an integer of more than 4,300 digits; deep nesting
            raise DataError(Problem(path, n, "", f"unreadable JSON: {str(exc).splitlines()[0][:120]}")) from None
        if not isinstance(obj, dict):
            raise DataError(Problem(path, n, "", "each line must be a JSON object"))
        out.append((n, obj))
    return out


def _check_common(path: str, n: int, rec: dict, seen: dict[str, int]) -> None:
    rid = rec.get("ID")
    if not isinstance(rid, str) or not rid:
        raise DataError(Problem(path, n, "ID", "missing or non-string image ID"))
    if rid in seen:
        raise DataError(Problem(path, n, "ID", f"duplicate image ID {rid!r} (first at line {seen[rid]})"))
    seen[rid] = n
    for key in ("width", "height"):
        if key in rec and (not is_number(rec[key]) or rec[key] <= 0):
            raise DataError(Problem(path, n, key, f"must be a positive number, got {rec[key]!r}"))


def read_gt(path: str | Path) -> list[dict]:
    """Validated GT records, in file order."""
    path = str(path)
    lines = read_lines(path)
    if not lines:
        raise DataError(Problem(path, None, "", "empty annotation file"))
    seen: dict[str, int] = {}
    records = []
    for n, rec in lines:
        _check_common(path, n, rec, seen)
        boxes = rec.get("gtboxes")
        if not isinstance(boxes, list):
            raise DataError(Problem(path, n, "gtboxes", "missing 'gtboxes' list"))
        for i, b in enumerate(boxes):
            if not isinstance(b, dict) or not isinstance(b.get("tag"), str):
                raise DataError(Problem(path, n, f"gtboxes[{i}].tag", "each GT box needs a string 'tag'"))
            problem = box_problem(b.get("fbox"))
            if problem:
                raise DataError(Problem(path, n, f"gtboxes[{i}].fbox", problem))
            extra = b.get("extra", {})
            if not isinstance(extra, dict):
                raise DataError(Problem(path, n, f"gtboxes[{i}].extra", "must be an object"))
        records.append(rec)
    return records


def read_dets(path: str | Path) -> list[dict]:
    """Validated detection records, in file order."""
    path = str(path)
    lines = read_lines(path)
    if not lines:
        raise DataError(Problem(path, None, "", "empty detections file"))
    seen: dict[str, int] = {}
    records = []
    for n, rec in lines:
        _check_common(path, n, rec, seen)
        boxes = rec.get("dtboxes")
        if not isinstance(boxes, list):
            raise DataError(Problem(path, n, "dtboxes", "missing 'dtboxes' list"))
        for i, b in enumerate(boxes):
            if not isinstance(b, dict):
                raise DataError(Problem(path, n, f"dtboxes[{i}]", "must be an object"))
            problem = box_problem(b.get("box"))
            if problem:
                raise DataError(Problem(path, n, f"dtboxes[{i}].box", problem))
            if not is_number(b.get("score")):
                raise DataError(Problem(path, n, f"dtboxes[{i}].score", f"must be a finite number, got {b.get('score')!r}"))
        rec["_line"] = n
        records.append(rec)
    return records


def write_lines(path: str | Path, records: list[dict]) -> None:
    """Write JSON lines atomically (temp file + rename)."""
    write_json_lines(path, records)
