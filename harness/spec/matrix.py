"""Spec -> cells: rows x datasets x seeds (or the axis product), each with its resolved config.

A cell's config is built in layers, each overriding the ones before it: the spec's ``base``,
the axis values the cell picks (in the order the axes are declared), the row's ``overrides``,
the command-line overrides, and the seed. The result is validated against the full schema;
an error names the file and line of the layer that set the offending key.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from harness.spec.errors import Problem, SpecError
from harness.spec.load import LoadedSpec, Source, pydantic_problems
from harness.spec.overrides import Override, Provenance, apply, apply_mapping, origin
from harness.spec.schema import HASHED_SECTIONS, KEYLESS_DEFAULTS, SCHEMA_VERSION, Config, Row

DATASET_AXIS = "dataset"


def _drop_at_default(tree: Any, path: list[str], default: Any) -> None:
    """Remove the leaf at `path` (`*` = every key) from nested dicts where it equals `default`."""
    if not isinstance(tree, dict) or not path:
        return
    head, rest = path[0], path[1:]
    for key in (list(tree) if head == "*" else [head]):
        if key not in tree:
            continue
        if rest:
            _drop_at_default(tree[key], rest, default)
        elif tree[key] == default:
            del tree[key]


def hashed_config(config: Config, keyless: dict[str, Any] | None = None) -> dict[str, Any]:
    """The part of a config that determines the result.

    `train.health` is left out: its rules only decide whether a run is called diverged, they
    never change what is trained, so tightening them does not make finished cells new. Fields
    of `KEYLESS_DEFAULTS` (schema growth) are left out at their behaviour-preserving value.
    """
    full = config.model_dump(mode="json")
    out = {k: full[k] for k in HASHED_SECTIONS}
    out["train"] = {k: v for k, v in out["train"].items() if k != "health"}
    for path, default in (KEYLESS_DEFAULTS if keyless is None else keyless).items():
        _drop_at_default(out, path.split("."), default)
    return out


def run_key(config: Config, keyless: dict[str, Any] | None = None) -> str:
    """sha256 of the canonical JSON of the hashed config plus the schema version."""
    return digest(hashed_config(config, keyless))


def digest(hashed: dict[str, Any]) -> str:
    """The run key of a hashed config (see `run_key`)."""
    payload = {"schema_version": SCHEMA_VERSION, "config": hashed}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Cell:
    spec_name: str
    row: str
    dataset: str
    seed: int
    config: Config
    run_key: str
    picks: dict[str, str] = field(default_factory=dict)
    meta: Row | None = None

    @property
    def id(self) -> str:
        return f"{self.row}/{self.dataset}/{self.seed}"

    @property
    def short_key(self) -> str:
        return self.run_key[:12]

    def to_json(self) -> dict[str, Any]:
        return {
            "spec_name": self.spec_name,
            "id": self.id,
            "row": self.row,
            "dataset": self.dataset,
            "seed": self.seed,
            "run_key": self.run_key,
            "picks": dict(self.picks),
            "table": self.meta.table if self.meta else None,
            "config": self.config.model_dump(mode="json"),
        }


def cell_from_json(data: Any, file: str) -> Cell:
    """The cell a job file (`Cell.to_json`) describes, its config validated against the schema and
    its run key recomputed: a key that does not match the config is refused (the file was edited,
    or written by another schema version), so a worker never trains under a key that is not its
    config's."""
    try:
        config = Config.model_validate(data["config"])
        cell = Cell(spec_name=str(data["spec_name"]), row=str(data["row"]), dataset=str(data["dataset"]),
                    seed=int(data["seed"]), config=config, run_key=str(data["run_key"]),
                    picks={str(k): str(v) for k, v in dict(data.get("picks") or {}).items()})
    except (KeyError, TypeError, ValueError) as exc:
        what = f"missing {exc}" if isinstance(exc, KeyError) else str(exc).splitlines()[0]
        raise SpecError(Problem(file, None, "", f"not a job file of this harness ({what})")) from None
    key = run_key(config)
    if key != cell.run_key:
        raise SpecError(Problem(file, None, "run_key", f"the job's key {cell.run_key[:12]} is not its config's "
                                f"({key[:12]}): the file was edited or written by another schema version; "
                                "nothing trained"))
    return cell


def _row_plans(ld: LoadedSpec) -> list[tuple[str, dict[str, str], Row | None, int | None]]:
    """(label, picks without the dataset axis, row, row index) for each row to expand."""
    spec = ld.spec
    if spec.rows:
        return [(r.label, {k: v for k, v in r.picks.items() if k != DATASET_AXIS}, r, i)
                for i, r in enumerate(spec.rows)]
    names = [a for a in spec.axes if a != DATASET_AXIS]
    combos = [dict(zip(names, vals, strict=True))
              for vals in itertools.product(*(list(spec.axes[a]) for a in names))]
    for extra in spec.include:
        combo = {k: v for k, v in extra.items() if k != DATASET_AXIS}
        if combo not in combos:
            combos.append(combo)
    combos = [c for c in combos
              if not any(all(c.get(k) == v for k, v in ex.items() if k != DATASET_AXIS)
                         and all(k in c or k == DATASET_AXIS for k in ex)
                         for ex in spec.exclude if any(k != DATASET_AXIS for k in ex))]
    return [("-".join(c.values()) or spec.name, c, None, None) for c in combos]


def _datasets(ld: LoadedSpec, row: Row | None) -> list[str | None]:
    axis = ld.spec.axes.get(DATASET_AXIS)
    if not axis:
        return [None]
    if row is not None and DATASET_AXIS in row.picks:
        return [row.picks[DATASET_AXIS]]
    return list(axis)


def resolve(ld: LoadedSpec, picks: dict[str, str], dataset: str | None, seed: int,
            row: Row | None, row_index: int | None,
            overrides: list[Override] = ()) -> Config:
    """Resolve and validate the config of one cell."""
    spec = ld.spec
    config: dict = {}
    prov: Provenance = {}
    apply_mapping(config, spec.base, ld.source("base"), prov)
    chosen = dict(picks)
    if dataset is not None:
        chosen[DATASET_AXIS] = dataset
    for axis in spec.axes:  # declaration order
        if axis in chosen:
            apply_mapping(config, spec.axes[axis][chosen[axis]],
                          ld.source("axes", axis, chosen[axis]), prov)
    if row is not None:
        apply_mapping(config, row.overrides, ld.source("rows", row_index, "overrides"), prov)
    for ov in overrides:
        apply(config, ov.path, ov.value, ov.source, prov)
    config["seed"] = seed
    try:
        return Config.model_validate(config)
    except ValidationError as exc:
        where = ld.source("rows", row_index) if row is not None else ld.source("axes")

        def loc_map(loc):
            found = origin(prov, loc)
            if found is not None:
                return found
            return where, loc  # e.g. a missing key: blame the row

        problems = pydantic_problems(exc, where, loc_map, Config)
        label = row.label if row is not None else "-".join(picks.values())
        cell = f"{label}/{dataset or config.get('data', {}).get('name')}/{seed}"
        raise SpecError([Problem(p.file, p.line, p.path, f"{p.message} [cell {cell}]")
                         for p in problems]) from None


def row_labels(ld: LoadedSpec) -> list[str]:
    """The labels of the rows a spec expands into (its `rows`, or the axis combinations)."""
    return [label for label, *_ in _row_plans(ld)]


def seeds_for(ld: LoadedSpec, n: int) -> list[int]:
    """The first `n` seeds of a spec: its own, then new numbers after its largest (a sequential
    decision's added seeds; the cells of the spec's own seeds keep their keys)."""
    own = list(ld.spec.seeds)
    return own[:n] + list(range(max(own) + 1, max(own) + 1 + n - len(own)))


def expand(ld: LoadedSpec, overrides: list[Override] = (), rows: Collection[str] | None = None,
           seeds: Collection[int] | None = None) -> list[Cell]:
    """All cells of a spec, in row order, then dataset, then seed; with `rows`, only the cells of
    those rows are resolved (the overrides need not fit the other rows); with `seeds`, those seeds
    instead of the spec's (`seeds_for`)."""
    cells: list[Cell] = []
    problems: list[Problem] = []
    for label, picks, row, index in _row_plans(ld):
        if rows is not None and label not in rows:
            continue
        for dataset in _datasets(ld, row):
            for seed in ld.spec.seeds if seeds is None else seeds:
                try:
                    config = resolve(ld, picks, dataset, seed, row, index, overrides)
                except SpecError as exc:
                    problems.extend(p for p in exc.problems if p not in problems)
                    continue
                cells.append(Cell(
                    spec_name=ld.spec.name, row=label, dataset=dataset or config.data.name,
                    seed=seed, config=config, run_key=run_key(config),
                    picks={**picks, **({DATASET_AXIS: dataset} if dataset else {})}, meta=row,
                ))
    if problems:
        raise SpecError(_dedupe(problems))
    return cells


def _dedupe(problems: list[Problem]) -> list[Problem]:
    """The same bad key fails in every seed of a row; say it once."""
    seen: dict[tuple, Problem] = {}
    for p in problems:
        key = (p.file, p.line, p.path, p.message.rsplit(" [cell ", 1)[0])
        seen.setdefault(key, p)
    return list(seen.values())


def select(cells: list[Cell], row: str, dataset: str | None = None,
           seed: int | None = None, spec_file: str | None = None) -> Cell:
    """The one cell with this row (and dataset/seed, defaulting to the first)."""
    rows = list(dict.fromkeys(c.row for c in cells))
    if row not in rows:
        raise SpecError(Problem(spec_file, None, "--row", f"unknown row {row!r} (known: {', '.join(rows)})"))
    mine = [c for c in cells if c.row == row]
    if dataset is not None:
        known = list(dict.fromkeys(c.dataset for c in mine))
        if dataset not in known:
            raise SpecError(Problem(spec_file, None, "--dataset",
                                    f"unknown dataset {dataset!r} for row {row} (known: {', '.join(known)})"))
        mine = [c for c in mine if c.dataset == dataset]
    if seed is not None:
        known_seeds = [c.seed for c in mine]
        if seed not in known_seeds:
            raise SpecError(Problem(spec_file, None, "--seed",
                                    f"seed {seed} is not in the spec's seeds {known_seeds}"))
        mine = [c for c in mine if c.seed == seed]
    return mine[0]


__all__ = ["Cell", "cell_from_json", "expand", "row_labels", "resolve", "run_key", "hashed_config", "seeds_for", "select",
           "Source"]
