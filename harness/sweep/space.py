"""Sweep specs: a base experiment row, a search space over config paths, the objective."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from harness.evaluation.kinds import evaluator
from harness.spec import SpecError, expand, load_spec, row_labels
from harness.spec.errors import Problem
from harness.spec.load import Source, load_yaml, pydantic_problems
from harness.spec.matrix import Cell
from harness.spec.overrides import Override, check_path, parse_set
from harness.spec.schema import Config
from harness.track.names import eval_key, parse_eval_key


class Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Param(Strict):
    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _range(self) -> Param:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs 'choices'")
        else:
            if self.low is None or self.high is None:
                raise ValueError(f"a {self.type} parameter needs 'low' and 'high'")
            if self.low > self.high:
                raise ValueError(f"low {self.low} > high {self.high}")
            if self.log and self.low <= 0:
                raise ValueError("a log-scaled parameter needs low > 0")
        return self


class Objective(Strict):
    metric: str
    direction: Literal["maximize", "minimize"] = "maximize"


class SamplerSpec(Strict):
    seed: int = 0
    n_startup_trials: int = Field(5, ge=0)


class PrunerSpec(Strict):
    n_startup_trials: int = Field(3, ge=0)
    n_warmup_steps: int = Field(0, ge=0)


class SweepSpec(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    experiment: str  # path of the base spec, relative to this file
    row: str
    dataset: str | None = None
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    space: dict[str, Param]
    objective: Objective
    n_trials: int = Field(ge=1)
    sampler: SamplerSpec = SamplerSpec()
    pruner: PrunerSpec = PrunerSpec()
    #: extra overrides applied to every trial (e.g. a shorter schedule)
    overrides: dict[str, Any] = Field(default_factory=dict)


class Sweep:
    """A validated sweep: its spec, base spec and the base cell of each seed."""

    def __init__(self, spec: SweepSpec, file: str, base_file: str, base_cells: list[Cell], fixed: list[Override],
                 source: Source | None = None):
        self.spec, self.file, self.base_file = spec, file, base_file
        self.base_cells, self.fixed = base_cells, fixed
        self.source = source or Source(file, None, ())

    def space_override(self, path: str, value: Any) -> Override:
        """One trial value as an override, typed as the trial's `harness train --set` worker types it;
        an error in it names the sweep file's `space` entry."""
        parsed = parse_set(set_item(path, value))
        return Override(parsed.path, parsed.value, Source(self.file, self.source.lines, ("space", path)))

    def row_cells(self, params: dict[str, Any] | None = None) -> list[Cell]:
        """Every cell (all datasets and seeds) of the swept row with these trial values; only that
        row is resolved, so the space need not fit the base spec's other rows."""
        extra = [self.space_override(k, v) for k, v in (params or {}).items()]
        return expand(load_spec(self.base_file), [*self.fixed, *extra], rows=(self.spec.row,))

    def trial_cells(self, params: dict[str, Any]) -> list[Cell]:
        """The cells a trial trains: the swept row's cells of the sweep's datasets and seeds."""
        wanted = {(c.dataset, c.seed) for c in self.base_cells}
        return [c for c in self.row_cells(params) if (c.dataset, c.seed) in wanted]


def set_item(path: str, value) -> str:
    """`path=value` as a `harness train --set` item."""
    return f"{path}={value}" if isinstance(value, str) else f"{path}={json.dumps(value)}"


def _split_key(key: str) -> tuple[str | int, ...]:
    return tuple(int(p) if p.isdigit() else p for p in key.split("."))


def _missing(config: dict, path: str) -> str | None:
    """None if `path` exists in this (dumped) config, else what is there instead."""
    node: Any = config
    done: list[str] = []
    for part in path.split("."):
        if not isinstance(node, dict):
            return f"{'.'.join(done)} is {node!r} there"
        if part not in node:
            where = ".".join(done) or "the top level"
            variant = f" ({node['name']})" if isinstance(node.get("name"), str) and done else ""
            return f"{where}{variant} has: {', '.join(node)}"
        node = node[part]
        done.append(part)
    return None


def _candidates(p: Param) -> list[tuple[str, Any]]:
    """The values a trial may take that the config must accept: the bounds, or every choice."""
    if p.type == "categorical":
        return [("choice", c) for c in p.choices]
    if p.type == "int":
        return [("low", int(p.low)), ("high", int(p.high))]
    return [("low", p.low), ("high", p.high)]


def load_sweep(file: str, extra: list[Override] = ()) -> Sweep:
    """Load and validate a sweep spec: everything `harness sweep` checks before its first trial.

    The space paths, their bounds (or choices), the objective and the seeds are checked against
    the cells of the swept row only (`row:`; all its datasets and seeds): the base spec's other
    rows (an FCOS row whose assigner has no `alpha`) play no part in a sweep.
    `extra` (the command line's --set / --set-file) applies after the sweep's `overrides`.
    """
    file = str(file)
    raw, lines = load_yaml(file)
    if not isinstance(raw, dict):
        raise SpecError(Problem(file, 1, "", "a sweep spec must be a YAML mapping"))
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(pydantic_problems(exc, Source(file, lines, ()), schema_root=SweepSpec)) from None
    src = Source(file, lines, ())
    problems = []
    for path in spec.space:
        msg = check_path(Config, _split_key(path))
        if msg:
            problems.append(src.problem(msg, ("space", path)))
    fixed = []
    for key, value in spec.overrides.items():
        path = _split_key(key)
        msg = check_path(Config, path)
        if msg:
            problems.append(src.problem(msg, ("overrides", key)))
        fixed.append(Override(path, value, Source(file, lines, ("overrides", key))))
    if problems:
        raise SpecError(problems)
    fixed = [*fixed, *extra]  # the command line's overrides win, in validation and in every trial
    base_file = str((Path(file).parent / spec.experiment).resolve())
    loaded = load_spec(base_file)
    rows = row_labels(loaded)
    if spec.row not in rows:
        raise SpecError(src.problem(f"unknown row {spec.row!r} in {spec.experiment} (known: {', '.join(rows)})",
                                    ("row",)))
    sweep = Sweep(spec, file, base_file, [], fixed, src)
    cells = sweep.row_cells()  # the row as it is (the baseline trial)
    for path in spec.space:  # the path must exist in this row's config, not just in the schema
        for cell in cells:
            msg = _missing(cell.config.model_dump(), path)
            if msg:
                problems.append(src.problem(f"{path!r} does not exist in the config of row {spec.row!r} of "
                                            f"{spec.experiment} (cell {cell.id}): {msg}", ("space", path)))
                break
    if problems:
        raise SpecError(problems)
    for path, param in spec.space.items():  # every bound / choice must give valid configs of the row
        for what, value in _candidates(param):
            try:
                sweep.row_cells({path: value})
            except SpecError as exc:
                problems.extend(Problem(p.file, p.line, p.path, f"{what} {value!r}: {p.message}")
                                for p in exc.problems)
    if problems:
        raise SpecError(problems)
    if spec.dataset:
        known_ds = list(dict.fromkeys(c.dataset for c in cells))
        if spec.dataset not in known_ds:
            raise SpecError(src.problem(f"row {spec.row} of {spec.experiment} has no dataset {spec.dataset!r} "
                                        f"(known: {', '.join(known_ds)})", ("dataset",)))
        cells = [c for c in cells if c.dataset == spec.dataset]
    for name in dict.fromkeys(c.config.eval.metrics for c in cells):
        known = evaluator(name).metrics  # counts are not metrics (eval.json only): not objectives
        parsed = parse_eval_key(spec.objective.metric)
        if parsed is None or parsed[1] not in known:
            allowed = ", ".join(eval_key(None, m) for m in known)
            raise SpecError(src.problem(f"the {name} evaluator does not produce "
                                        f"{spec.objective.metric!r} (known: {allowed}, also under eval.nms. / "
                                        "eval.nms_free.)", ("objective", "metric")))
    by_seed = {c.seed: c for c in cells}
    missing = [s for s in spec.seeds if s not in by_seed]
    if missing:
        raise SpecError(src.problem(f"seeds {missing} are not seeds of {spec.experiment} ({sorted(by_seed)})",
                                    ("seeds",)))
    sweep.base_cells = [by_seed[s] for s in spec.seeds]
    return sweep


def validate_sweep(file: str, extra: list[Override] = (), backend: str = "local") -> Sweep:
    """What `harness sweep` checks before it touches the workspace or starts a trial (its --check):
    the sweep spec and base spec, the space, its bounds and the objective against the swept row's
    cells, and the backend. Raises SpecError (exit 2) naming the sweep file and key."""
    sweep = load_sweep(file, extra)
    if backend == "slurm" and shutil.which("sbatch") is None:
        raise SpecError(Problem(None, None, "--backend", "slurm: sbatch is not on PATH (is this a Slurm login node?)"))
    return sweep


def current_value(cell: Cell, path: str):
    node: Any = cell.config.model_dump()
    for part in path.split("."):
        node = node[part]
    return node
