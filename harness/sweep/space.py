"""Sweep specs: a base experiment row, a search space over config paths, the objective."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from harness.spec import SpecError, expand, load_spec
from harness.spec.errors import Problem
from harness.spec.load import Source, load_yaml, pydantic_problems
from harness.spec.matrix import Cell
from harness.spec.overrides import Override, check_path
from harness.spec.schema import Config

COCO = ("ap", "ap50", "ap75", "aps", "apm", "apl", "ar1", "ar10", "ar100", "ars", "arm", "arl")
CROWDHUMAN = ("ap50", "mmr", "recall", "n_images", "n_valid_gt", "n_dets")


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

    def __init__(self, spec: SweepSpec, file: str, base_file: str, base_cells: list[Cell], fixed: list[Override]):
        self.spec, self.file, self.base_file = spec, file, base_file
        self.base_cells, self.fixed = base_cells, fixed


def load_sweep(file: str, extra: list[Override] = ()) -> Sweep:
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
        msg = check_path(Config, tuple(path.split(".")))
        if msg:
            problems.append(src.problem(msg, ("space", path)))
    fixed = []
    for key, value in spec.overrides.items():
        path = tuple(key.split("."))
        msg = check_path(Config, path)
        if msg:
            problems.append(src.problem(msg, ("overrides", key)))
        fixed.append(Override(path, value, Source(file, lines, ("overrides", key))))
    if problems:
        raise SpecError(problems)
    base_file = str((Path(file).parent / spec.experiment).resolve())
    loaded = load_spec(base_file)
    cells = [c for c in expand(loaded, [*fixed, *extra]) if c.row == spec.row]
    if not cells:
        rows = ", ".join(dict.fromkeys(c.row for c in expand(loaded)))
        raise SpecError(src.problem(f"unknown row {spec.row!r} in {spec.experiment} (known: {rows})", ("row",)))
    if spec.dataset:
        cells = [c for c in cells if c.dataset == spec.dataset]
    base = cells[0]
    known = COCO if base.config.eval.metrics == "coco" else CROWDHUMAN
    prefix, _, name = spec.objective.metric.rpartition(".")
    if prefix not in ("eval", "eval.nms", "eval.nms_free") or name not in known:
        allowed = ", ".join(f"eval.{m}" for m in known)
        raise SpecError(src.problem(f"the {base.config.eval.metrics} evaluator does not produce "
                                    f"{spec.objective.metric!r} (known: {allowed}, also under eval.nms. / "
                                    "eval.nms_free.)", ("objective", "metric")))
    for path in spec.space:  # the path must exist on this row's config, not just in the schema
        node: Any = base.config.model_dump()
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                raise SpecError(src.problem(f"{path!r} does not exist in row {spec.row}'s config", ("space", path)))
            node = node[part]
    by_seed = {c.seed: c for c in cells}
    missing = [s for s in spec.seeds if s not in by_seed]
    if missing:
        raise SpecError(src.problem(f"seeds {missing} are not seeds of {spec.experiment} ({sorted(by_seed)})",
                                    ("seeds",)))
    return Sweep(spec, file, base_file, [by_seed[s] for s in spec.seeds], fixed)


def current_value(cell: Cell, path: str):
    node: Any = cell.config.model_dump()
    for part in path.split("."):
        node = node[part]
    return node
