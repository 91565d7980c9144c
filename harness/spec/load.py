"""YAML loading that remembers the line of every key, and the spec loader."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

import yaml
from pydantic import ValidationError

from harness.spec.errors import Path, Problem, SpecError, format_path
from harness.spec.schema import Row, Spec

#: key path -> 1-based line of the key (or of the item, for list entries)
Lines = dict[Path, int]


@dataclass(frozen=True)
class Source:
    """Where a value came from: a YAML file and key path, or a command-line override."""

    file: str | None
    lines: Lines | None
    path: Path
    text: str | None = None  # e.g. "--set a.b=1" when there is no file

    def problem(self, message: str, path: Path | None = None) -> Problem:
        path = self.path if path is None else path
        if self.file is None:
            return Problem(None, None, self.text or format_path(path), message)
        return Problem(self.file, line_of(self.lines or {}, path), format_path(path), message)


def line_of(lines: Lines, path: Path) -> int | None:
    """Line of the longest prefix of `path` that the YAML knows."""
    for n in range(len(path), -1, -1):
        if tuple(path[:n]) in lines:
            return lines[tuple(path[:n])]
    return None


def _check_duplicates(node: yaml.Node, file: str) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value != "<<":
                if key.value in seen:
                    raise SpecError(
                        Problem(file, key.start_mark.line + 1, key.value,
                                f"duplicate key (first at line {seen[key.value]})")
                    )
                seen[key.value] = key.start_mark.line + 1
            _check_duplicates(value, file)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _check_duplicates(item, file)


def _record_lines(node: yaml.Node, data: Any, path: Path, lines: Lines) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode) and isinstance(data, dict):
        by_text = {str(k): k for k in data}
        for key_node, value_node in node.value:  # merged pairs first, explicit ones win
            key = by_text.get(str(key_node.value))
            if key is None:
                continue
            sub = (*path, key)
            _record_lines(value_node, data[key], sub, lines)
            lines[sub] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode) and isinstance(data, list):
        for i, (item_node, item) in enumerate(zip(node.value, data, strict=False)):
            _record_lines(item_node, item, (*path, i), lines)


#: Limits that a spec or override file never needs: its size on disk, the number of nodes after
#: expanding aliases (a "billion laughs" file stays small on disk) and the nesting depth.
MAX_BYTES = 1 << 20
MAX_NODES = 100_000
MAX_DEPTH = 64


def _check_size(node: yaml.Node, file: str) -> None:
    """Refuse alias bombs, self-referencing aliases and deep nesting before building any data."""
    count = 0
    stack: list[tuple[yaml.Node, int, frozenset]] = [(node, 1, frozenset())]
    while stack:
        n, depth, ancestors = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise SpecError(Problem(file, n.start_mark.line + 1, "",
                                    f"more than {MAX_NODES:,} values once aliases are expanded (an alias bomb?)"))
        if depth > MAX_DEPTH:
            raise SpecError(Problem(file, n.start_mark.line + 1, "", f"nested more than {MAX_DEPTH} levels deep"))
        if id(n) in ancestors:
            raise SpecError(Problem(file, n.start_mark.line + 1, "", "an alias that contains itself"))
        if isinstance(n, yaml.SequenceNode):
            children = n.value
        elif isinstance(n, yaml.MappingNode):
            children = [x for pair in n.value for x in pair]
        else:
            continue
        inner = ancestors | {id(n)}
        stack.extend((c, depth + 1, inner) for c in children)


def read_text(file: str) -> str:
    """A UTF-8 text file, or a one-line error naming the file and where it stops being UTF-8."""
    try:
        with open(file, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise SpecError(Problem(file, None, "", f"cannot read file: {exc.strerror}")) from None
    if len(raw) > MAX_BYTES:
        raise SpecError(Problem(file, None, "", f"larger than {MAX_BYTES:,} bytes; a spec or override file "
                                                "is never that big"))
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise SpecError(Problem(file, 1, "", "UTF-16 text; save the file as UTF-8"))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise SpecError(Problem(file, line, "", f"not UTF-8 (byte {exc.start}: {raw[exc.start]:#04x}); "
                                                "save the file as UTF-8")) from None
    if "\x00" in text:
        raise SpecError(Problem(file, text[: text.index("\x00")].count("\n") + 1, "", "a NUL byte in a text file"))
    return text


def load_yaml(file: str | FsPath) -> tuple[Any, Lines]:
    """Parse a YAML file; returns the data and the line of every key path."""
    file = str(file)
    return parse_yaml(read_text(file), file)


def parse_yaml(text: str, file: str | None = None) -> tuple[Any, Lines]:
    """Parse YAML text (of `file`, for the errors) with the limits above: every error is one line."""
    if len(text) > MAX_BYTES:
        raise SpecError(Problem(file, None, "", f"longer than {MAX_BYTES:,} characters"))
    try:
        loader = yaml.SafeLoader(text)
        try:
            try:
                node = loader.get_single_node()
            except RecursionError:
                raise SpecError(Problem(file, None, "", f"nested more than {MAX_DEPTH} levels deep")) from None
            if node is None:
                return None, {}
            _check_size(node, file)
            _check_duplicates(node, file)
            data = loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        msg = f"YAML syntax error: {' '.join(str(exc.problem or exc.context).split())}"
        raise SpecError(Problem(file, line, "", msg)) from None
    except yaml.reader.ReaderError as exc:  # a control character: its position, on one line
        line = text[: exc.position].count("\n") + 1
        char = f" (U+{exc.character:04X})" if isinstance(exc.character, int) else ""
        raise SpecError(Problem(file, line, "", f"YAML error: {' '.join(str(exc.reason).split())}{char}")) from None
    except yaml.YAMLError as exc:
        raise SpecError(Problem(file, None, "", f"YAML error: {' '.join(str(exc).split())}")) from None
    lines: Lines = {}
    _record_lines(node, data, (), lines)
    return data, lines


def pydantic_problems(
    exc: ValidationError, source: Source, loc_map=None, schema_root: type | None = None
) -> list[Problem]:
    """Turn pydantic errors into problems; `loc_map` maps an error location to a Source."""
    from harness.spec.overrides import known_fields_at  # local: overrides imports this module

    problems = []
    for err in exc.errors():
        tagged = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        # drop discriminator tags pydantic inserts into the location (e.g. 'poto')
        loc = _strip_union_tags(tagged, schema_root)
        kind = err["type"]
        if kind == "bool_number":  # raised by a model for one of its fields: name the field
            loc = (*loc, err["ctx"]["field"])
        src, path = (loc_map(loc) if loc_map else (source, (*source.path, *loc)))
        if kind == "extra_forbidden":
            # the keys of the variant that rejected it (its tag is in `tagged`), not of all variants
            known = known_fields_at(schema_root, tagged[:-1]) if schema_root else []
            msg = "unknown key" + (f" (known: {', '.join(known)})" if known else "")
        elif kind == "literal_error":
            expected = err.get("ctx", {}).get("expected", "")
            msg = f"unknown value {err['input']!r} (known: {expected.replace(' or ', ', ')})"
        elif kind == "missing":
            msg = "missing required key"
        elif kind == "union_tag_invalid":
            ctx = err.get("ctx", {})
            msg = f"unknown value {ctx.get('tag')!r} (known: {ctx.get('expected_tags')})"
            path = (*path, ctx.get("discriminator", "name").strip("'"))
        elif kind in ("value_error", "bool_number"):
            msg = str(err["msg"]).removeprefix("Value error, ")
        else:
            msg = f"{err['msg']} (got {err['input']!r})" if "input" in err else err["msg"]
        problems.append(src.problem(msg, path))
    return problems


def _strip_union_tags(loc: Path, root: type | None) -> Path:
    if root is None:
        return loc
    from harness.spec.overrides import is_union_tag

    out: list[str | int] = []
    for i, part in enumerate(loc):
        if is_union_tag(root, loc[:i], part):
            continue
        out.append(part)
    return tuple(out)


@dataclass(frozen=True)
class LoadedSpec:
    spec: Spec
    file: str
    lines: Lines = field(repr=False)

    def source(self, *path: str | int) -> Source:
        return Source(self.file, self.lines, tuple(path))


_ROW_FIELDS = set(Row.model_fields) - {"picks"}


def _split_rows(raw: dict) -> None:
    """Rows name their axis values as plain keys; move those into `picks`."""
    axes = raw.get("axes") if isinstance(raw.get("axes"), dict) else {}
    rows = raw.get("rows")
    if not isinstance(rows, list):
        return
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            continue
        picks = {k: row.pop(k) for k in list(row) if k in axes and k not in _ROW_FIELDS}
        picks = {k: (str(v) if isinstance(v, (int, float)) else v) for k, v in picks.items()}
        rows[i] = {**row, "picks": picks}


def load_spec(file: str | FsPath) -> LoadedSpec:
    """Load and validate a spec file (structure only; cells are resolved by the matrix)."""
    file = str(file)
    raw, lines = load_yaml(file)
    if not isinstance(raw, dict):
        raise SpecError(Problem(file, 1, "", "a spec must be a YAML mapping"))
    axes = raw.get("axes")
    if "axes" in raw and not isinstance(axes, dict):  # alone: every row's axis keys would be unknown too
        raise SpecError(Source(file, lines, ()).problem("must be a mapping: axis -> value -> overrides", ("axes",)))
    if isinstance(axes, dict):  # `value:` with nothing under it means "no overrides"
        for values in axes.values():
            if isinstance(values, dict):
                for k, v in values.items():
                    if v is None:
                        values[k] = {}
    _split_rows(raw)
    try:
        spec = Spec.model_validate(raw)
    except ValidationError as exc:
        def loc_map(loc: Path):
            # ('rows', i, 'picks', axis) is written as rows[i].axis in the file
            if len(loc) >= 4 and loc[0] == "rows" and loc[2] == "picks":
                loc = (loc[0], loc[1], *loc[3:])
            return Source(file, lines, ()), loc

        raise SpecError(pydantic_problems(exc, Source(file, lines, ()), loc_map, Spec)) from None
    loaded = LoadedSpec(spec, file, lines)
    _check_semantics(loaded, raw)
    return loaded


def _check_semantics(ld: LoadedSpec, raw: dict) -> None:
    """The structure first (axes, rows, include/exclude, seeds), then what refers to rows by name
    (claims, compare_to). When a fault changes which rows exist (an empty axis or `rows`, a
    duplicate label, a bad include/exclude), the references are not checked: a claim naming a row
    that the fault removed would only bury the user's one mistake under lines that are not it."""
    problems, rows_sound = _structure_problems(ld, raw)
    if rows_sound:
        problems += _reference_problems(ld)
    if problems:
        raise SpecError(problems)


def _structure_problems(ld: LoadedSpec, raw: dict) -> tuple[list[Problem], bool]:
    """(problems, whether the set of rows and their labels is sound)."""
    spec, problems, row_set = ld.spec, [], []
    axes = spec.axes
    for name, values in axes.items():
        if name in _ROW_FIELDS:
            row_set.append(ld.source("axes", name).problem(
                f"axis name {name!r} is taken by a row field ({', '.join(sorted(_ROW_FIELDS))})"))
        if not values:
            row_set.append(ld.source("axes", name).problem("an axis needs at least one value"))
    if raw.get("rows") == []:
        row_set.append(ld.source("rows").problem(
            "an empty list: list at least one row, or leave 'rows' out to run every combination of the axes"))
    labels: dict[str, int] = {}
    baselines: dict[str | None, int] = {}
    for i, row in enumerate(spec.rows):
        if row.label in labels:
            row_set.append(ld.source("rows", i, "label").problem(
                f"duplicate row label {row.label!r} (also rows[{labels[row.label]}])"))
        labels.setdefault(row.label, i)
        for axis, value in row.picks.items():
            if axes[axis] and value not in axes[axis]:  # an empty axis is its own fault (above)
                known = ", ".join(axes[axis])
                problems.append(ld.source("rows", i, axis).problem(
                    f"unknown value {value!r} (known: {known})"))
        if row.table is not None and row.table not in spec.tables:
            known = ", ".join(spec.tables) or "none declared under 'tables'"
            problems.append(ld.source("rows", i, "table").problem(
                f"unknown table {row.table!r} (known: {known})"))
        if row.baseline:
            if row.table in baselines:
                problems.append(ld.source("rows", i, "baseline").problem(
                    f"table {row.table!r} already has a baseline (rows[{baselines[row.table]}])"))
            baselines.setdefault(row.table, i)
    if spec.rows and (spec.include or spec.exclude):
        # the values under include/exclude do not matter when the sections cannot apply at all
        row_set.append(ld.source("include" if spec.include else "exclude").problem(
            "include/exclude apply to the axis product; with rows, list the rows you want"))
    else:
        for section in ("include", "exclude"):
            for i, combo in enumerate(getattr(spec, section)):
                for axis, value in combo.items():
                    if axis not in axes:
                        row_set.append(ld.source(section, i, axis).problem(
                            f"unknown axis {axis!r} (known: {', '.join(axes) or 'none'})"))
                    elif value not in axes[axis]:
                        row_set.append(ld.source(section, i, axis).problem(
                            f"unknown value {value!r} (known: {', '.join(axes[axis])})"))
    if len(set(spec.seeds)) != len(spec.seeds):
        problems.append(ld.source("seeds").problem(f"duplicate seeds in {spec.seeds}"))
    return row_set + problems, not row_set


def _reference_problems(ld: LoadedSpec) -> list[Problem]:
    """Names of rows (claims, compare_to), checked once the rows themselves are sound."""
    spec, problems = ld.spec, []
    labels = [row.label for row in spec.rows]
    for i, row in enumerate(spec.rows):
        if row.compare_to is not None and row.compare_to not in labels:
            problems.append(ld.source("rows", i, "compare_to").problem(
                f"unknown row {row.compare_to!r} (known: {', '.join(labels)})"))
    for name, table in spec.tables.items():
        if table.claims and not spec.rows:
            problems.append(ld.source("tables", name, "claims").problem(
                "claims compare rows, and this spec has no 'rows' (its axis combinations belong to no table)"))
            continue
        for i, claim in enumerate(table.claims):
            for side, label in (("row", claim.row), ("vs", claim.vs)):
                if label not in labels:
                    problems.append(ld.source("tables", name, "claims", i, side).problem(
                        f"unknown row {label!r} (known: {', '.join(labels)})"))
            if claim.row == claim.vs and claim.post == claim.vs_post:
                problems.append(ld.source("tables", name, "claims", i).problem(
                    "a claim compares a row with itself: give post and vs_post (nms / nms_free)"))
            if claim.margin and claim.expect not in ("better", "worse", "equivalent"):
                problems.append(ld.source("tables", name, "claims", i, "margin").problem(
                    "a margin needs expect: better / worse (within margin points, or better) or equivalent"))
            if claim.expect == "equivalent" and not claim.margin:
                problems.append(ld.source("tables", name, "claims", i, "expect").problem(
                    "equivalent needs a margin (points): the claim is -margin < difference < margin"))
            if claim.paired and claim.row == claim.vs:
                problems.append(ld.source("tables", name, "claims", i, "paired").problem(
                    "the same row on both sides is always paired (the same runs); leave 'paired' out"))
            elif claim.paired and not claim.pairing.strip():
                problems.append(ld.source("tables", name, "claims", i, "pairing").problem(
                    "pairing different rows by seed needs its reason in 'pairing' (the report prints it)"))
            elif claim.pairing and not claim.paired:
                problems.append(ld.source("tables", name, "claims", i, "pairing").problem(
                    "a pairing reason without paired: true"))
        if table.decide is not None:
            problems += _decide_problems(ld, name)
    return problems


def _decide_problems(ld: LoadedSpec, name: str) -> list[Problem]:
    """A table's `decide` section against its claims and the spec's seeds."""
    table, problems = ld.spec.tables[name], []
    d = table.decide
    if not table.claims:
        return [ld.source("tables", name, "decide").problem("decides claims, and this table declares none")]
    for i, index in enumerate(d.claims or []):
        if index >= len(table.claims):
            problems.append(ld.source("tables", name, "decide", "claims", i).problem(
                f"claim {index} does not exist: the table has {len(table.claims)} (0 to {len(table.claims) - 1})"))
    if d.claims is not None and len(set(d.claims)) != len(d.claims):
        problems.append(ld.source("tables", name, "decide", "claims").problem("a claim is listed twice"))
    steps = list(zip(d.looks, d.looks[1:], strict=False))
    if any(b <= a for a, b in steps):
        problems.append(ld.source("tables", name, "decide", "looks").problem(
            f"{d.looks}: the seed counts must increase strictly (each look adds at least one new seed)"))
    if d.looks[0] < len(ld.spec.seeds):
        problems.append(ld.source("tables", name, "decide", "looks", 0).problem(
            f"the first look ({d.looks[0]} seeds) comes before the spec's own {len(ld.spec.seeds)} seeds"))
    datasets = list(ld.spec.axes.get("dataset") or [])
    if len(datasets) > 1:  # a look reads one value per row and seed: a row on several datasets has several
        rows = {r.label: r for r in ld.spec.rows}
        decided = [table.claims[i] for i in (d.claims if d.claims is not None else range(len(table.claims)))
                   if i < len(table.claims)]
        loose = list(dict.fromkeys(label for c in decided for label in (c.row, c.vs)
                                   if label in rows and "dataset" not in rows[label].picks))
        if loose:
            problems.append(ld.source("tables", name, "decide").problem(
                f"row{'s' if len(loose) > 1 else ''} {', '.join(loose)} of its claims run{'' if len(loose) > 1 else 's'} "
                f"on {len(datasets)} datasets ({', '.join(datasets)}), and a look reads one value per row and seed; "
                "pick one dataset in each (dataset: NAME)"))
    return problems
