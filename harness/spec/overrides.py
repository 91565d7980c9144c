"""Typed ``a.b.c=value`` overrides (shared by the CLI, override files and sweeps).

An override names a path of the config schema; its value is parsed as YAML unless the schema
expects a string there. A path the schema does not have is an error before anything runs.
Variant sections (a union of models told apart by ``name``, such as the assigners) are replaced,
not merged, when their ``name`` changes (``model.predictor.assigner.name=poto``, or a mapping with
another ``name``): the fields of the old variant do not carry over to the new one. Other sections
that merely have a ``name`` field (backbone, FPN, data) merge as usual.
"""

from __future__ import annotations

import copy
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel

from harness.spec.errors import Path, Problem, SpecError, format_path
from harness.spec.load import Source, load_yaml, parse_yaml
from harness.spec.schema import Config

# --------------------------------------------------------------------- schema walking


def _members(annotation: Any) -> list[Any]:
    """Flatten Annotated / Optional / Union into the member annotations."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _members(typing.get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        out = []
        for arg in typing.get_args(annotation):
            out.extend(_members(arg))
        return out
    return [annotation]


def _step(annotation: Any, key: str | int) -> list[Any]:
    """Annotations reachable from `annotation` through `key` (empty: no such path)."""
    out = []
    for member in _members(annotation):
        origin = typing.get_origin(member)
        if isinstance(member, type) and issubclass(member, BaseModel):
            if isinstance(key, str) and key in member.model_fields:
                out.append(member.model_fields[key].annotation)
        elif origin in (dict, Mapping):
            out.append(typing.get_args(member)[1] if typing.get_args(member) else Any)
        elif origin in (list, tuple):
            if isinstance(key, int) or (isinstance(key, str) and key.isdigit()):
                args = typing.get_args(member)
                out.append(args[0] if args else Any)
        elif member is Any:
            out.append(Any)
    return out


def annotations_at(root: Any, path: Path) -> list[Any]:
    current = [root]
    for key in path:
        current = [nxt for ann in current for nxt in _step(ann, key)]
        if not current:
            return []
    return current


def known_fields(root: Any, path: Path) -> list[str]:
    names: list[str] = []
    for ann in annotations_at(root, path):
        for member in _members(ann):
            if isinstance(member, type) and issubclass(member, BaseModel):
                names.extend(n for n in member.model_fields if n not in names)
    return names


def known_fields_at(root: Any, loc: Path) -> list[str]:
    """The fields of the model at a pydantic error location, whose union tags (e.g. 'fcos' in
    ``model.predictor.assigner.fcos``) pick the variant: the keys that this config accepts there,
    not those of every variant the schema has."""
    current, plain = [root], ()  # plain: the location without its tags
    for part in loc:
        if is_union_tag(root, plain, part):
            current = [m for ann in current for m in _members(ann)
                       if isinstance(m, type) and issubclass(m, BaseModel) and "name" in m.model_fields
                       and m.model_fields["name"].default == part]
        else:
            current = [nxt for ann in current for nxt in _step(ann, part)]
            plain = (*plain, part)
        if not current:
            return []
    names: list[str] = []
    for ann in current:
        for member in _members(ann):
            if isinstance(member, type) and issubclass(member, BaseModel):
                names.extend(n for n in member.model_fields if n not in names)
    return names


def is_union_tag(root: Any, path: Path, part: str | int) -> bool:
    """True when pydantic inserted `part` as a discriminated-union tag after `path`."""
    if not isinstance(part, str):
        return False
    for ann in annotations_at(root, path):
        members = _members(ann)
        if len(members) > 1:
            for m in members:
                if isinstance(m, type) and issubclass(m, BaseModel) and "name" in m.model_fields:
                    default = m.model_fields["name"].default
                    if default == part:
                        return True
    return False


def check_path(root: Any, path: Path) -> str | None:
    """None if `path` exists in the schema, else a message naming the first unknown key."""
    for n in range(1, len(path) + 1):
        if not annotations_at(root, path[:n]):
            known = known_fields(root, path[: n - 1])
            where = format_path(path[: n - 1]) or "the top level"
            hint = f" (known: {', '.join(known)})" if known else ""
            return f"unknown key {path[n - 1]!r} under {where}{hint}"
    return None


def _expects_string(anns: list[Any]) -> bool:
    members = [m for ann in anns for m in _members(ann) if m is not type(None)]
    if not members:
        return False
    for m in members:
        if m is str:
            continue
        if typing.get_origin(m) is Literal and all(isinstance(a, str) for a in typing.get_args(m)):
            continue
        return False
    return True


def typed_value(root: Any, path: Path, text: str) -> Any:
    """Parse the text of an override for the type the schema expects at `path`."""
    anns = annotations_at(root, path)
    if _expects_string(anns):
        optional = any(m is type(None) for ann in anns for m in _members(ann))
        if optional and text.strip().lower() in ("null", "none", "~"):
            return None
        return text
    if not text.strip():
        return None
    try:  # the limits of spec files: no alias bombs, no deep nesting, one-line errors
        return parse_yaml(text)[0]
    except SpecError as exc:
        raise ValueError(f"cannot parse value {text[:60]!r}: {exc.problems[0].message}") from None


# --------------------------------------------------------------------------- overrides


@dataclass(frozen=True)
class Override:
    path: Path
    value: Any
    source: Source


def parse_set(item: str, root: Any = Config) -> Override:
    """Parse one ``a.b.c=value`` item from the command line."""
    text = f"--set {item if len(item) <= 100 else item[:97] + '...'}"
    if "=" not in item:
        raise SpecError(Problem(None, None, text, "expected KEY=VALUE"))
    key, value = item.split("=", 1)
    if key.strip() and "" in key.strip().split("."):
        raise SpecError(Problem(None, None, text, f"empty part in the key {key.strip()!r}"))
    path = _split_key(key.strip())
    source = Source(None, None, path, text=text)
    if not path:
        raise SpecError(source.problem("empty key"))
    problem = check_path(root, path)
    if problem:
        raise SpecError(source.problem(problem))
    if path == ("seed",):
        raise SpecError(source.problem("a cell's seed comes from the spec's 'seeds' "
                                       "(harness train --seed picks one)"))
    try:
        parsed = typed_value(root, path, value)
    except ValueError as exc:
        raise SpecError(source.problem(str(exc))) from None
    return Override(path, parsed, source)


def load_set_file(file: str, root: Any = Config) -> list[Override]:
    """Overrides from a YAML file: nested mappings and/or dotted keys."""
    data, lines = load_yaml(file)
    if data is None:
        return []
    if not isinstance(data, dict):
        raise SpecError(Problem(file, 1, "", "an override file must be a YAML mapping"))
    out: list[Override] = []
    for cfg_path, yaml_path, value in _leaves(data, (), ()):
        source = Source(file, lines, yaml_path)
        problem = check_path(root, cfg_path)
        if problem:
            raise SpecError(source.problem(problem))
        if cfg_path == ("seed",):
            raise SpecError(source.problem("a cell's seed comes from the spec's 'seeds' "
                                           "(harness train --seed picks one)"))
        out.append(Override(cfg_path, value, source))
    return out


def _split_key(key: str) -> Path:
    return tuple(int(p) if p.isdigit() else p for p in key.split(".") if p != "")


def _leaves(mapping: Mapping, cfg_prefix: Path, yaml_prefix: Path):
    """Yield (config path, yaml path, value) for each leaf; dotted keys are split."""
    for key, value in mapping.items():
        cfg = (*cfg_prefix, *_split_key(str(key)))
        yml = (*yaml_prefix, key)
        if isinstance(value, dict) and value and "name" not in value:
            yield from _leaves(value, cfg, yml)
        else:  # a mapping with a `name` is a whole (variant) section
            yield cfg, yml, value


# ------------------------------------------------------------------------ application

#: config path -> where its value came from (for error messages)
Provenance = dict[Path, Source]


def is_variant(path: Path, root: Any = Config) -> bool:
    """True when `path` is a union of models told apart by `name` (e.g. an assigner)."""
    for ann in annotations_at(root, tuple(p for p in path if not isinstance(p, int))):
        models = [m for m in _members(ann) if isinstance(m, type) and issubclass(m, BaseModel)]
        if len(models) > 1 and all("name" in m.model_fields for m in models):
            return True
    return False


def apply(config: dict, path: Path, value: Any, source: Source, prov: Provenance) -> None:
    """Set `path` in the nested dict `config` (in place), recording provenance."""
    node = config
    for key in path[:-1]:
        nxt = node.get(key) if isinstance(node, dict) else None
        if not isinstance(nxt, dict):
            nxt = {}
            node[key] = nxt
        node = nxt
    last = path[-1]
    if (last == "name" and isinstance(node, dict) and node.get("name") not in (None, value)
            and is_variant(path[:-1])):
        node.clear()  # another variant: the old variant's fields do not carry over
        _forget(prov, path[:-1])
    if isinstance(value, dict) and isinstance(node.get(last), dict) and (
        "name" not in value or value.get("name") == node[last].get("name") or not is_variant(path)
    ):
        for k, v in value.items():
            apply(config, (*path, *_split_key(str(k))), v, _child(source, k), prov)
        return
    _forget(prov, path)
    node[last] = copy.deepcopy(value)
    prov[path] = source
    if isinstance(value, dict):
        _record(prov, path, value, source)


def _child(source: Source, key: Any) -> Source:
    return Source(source.file, source.lines, (*source.path, key), source.text)


def _record(prov: Provenance, path: Path, value: dict, source: Source) -> None:
    for k, v in value.items():
        sub = (*path, *_split_key(str(k)))
        prov[sub] = _child(source, k)
        if isinstance(v, dict):
            _record(prov, sub, v, _child(source, k))


def _forget(prov: Provenance, path: Path) -> None:
    n = len(path)
    for p in [p for p in prov if len(p) > n and p[:n] == path]:
        del prov[p]


def apply_mapping(config: dict, mapping: Mapping, source: Source, prov: Provenance) -> None:
    """Merge a mapping of overrides (nested and/or dotted keys) into `config`."""
    for key, value in mapping.items():
        apply(config, _split_key(str(key)), value, _child(source, key), prov)


def origin(prov: Provenance, loc: Path) -> tuple[Source, Path] | None:
    """The source that set the longest prefix of `loc`, and the yaml path of `loc` in it."""
    for n in range(len(loc), 0, -1):
        src = prov.get(tuple(loc[:n]))
        if src is not None:
            return src, (*src.path, *loc[n:])
    return None
