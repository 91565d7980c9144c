"""Sweep specs: a base experiment row, a search space over config paths, the objective."""

from __future__ import annotations

import json
import math
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
    """median: Optuna's median pruner on the learning curve of a trial's first seed (iterations
    as steps; for single-seed sweeps). racing: a trial's search seeds run one after another, each
    seed's final value reported as one step, and Optuna's WilcoxonPruner stops the trial once the
    signed-rank test of its per-seed differences against the incumbent (the best complete
    trial, on the same seeds) gives p < p_threshold. none: no pruning."""

    type: Literal["median", "racing", "none"] = "median"
    n_startup_trials: int = Field(3, ge=0)
    n_warmup_steps: int = Field(0, ge=0)
    p_threshold: float = Field(0.1, gt=0.0, lt=1.0)
    #: racing: seeds a trial has before it may be pruned (at least 2)
    n_startup_steps: int = Field(2, ge=2)


class Split(Strict):
    """Seeds and validation images a phase of the sweep scores on. val_images: positions
    [start, stop) of the validation split (`data.val_images`); absent, the whole split."""

    seeds: list[int] = Field(min_length=1)
    val_images: tuple[int, int] | None = None

    @model_validator(mode="after")
    def _distinct(self) -> Split:
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds {self.seeds} repeat a seed")
        return self


class Confirm(Split):
    """The confirmation: the top_k search trials and the defaults re-run on fresh seeds and
    held-out images; the winner is chosen here. allow_table_images: the confirmation images may be
    images the base spec's table is scored on (COCO, whose only annotated validation set is the
    table's); the report says so."""

    top_k: int = Field(2, ge=1)
    allow_table_images: bool = False


class SweepSpec(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    experiment: str  # path of the base spec, relative to this file
    row: str
    dataset: str | None = None
    #: the search split's seeds alone (the images: the row's whole validation split); or `search`
    seeds: list[int] | None = Field(default=None, min_length=1)
    search: Split | None = None
    confirm: Confirm | None = None
    space: dict[str, Param]
    objective: Objective
    #: a second objective (e.g. mMR beside AP50): the study is multi-objective, the report shows
    #: the Pareto front of the search; the confirmation ranks and picks by `objective`
    secondary: Objective | None = None
    n_trials: int = Field(ge=1)
    sampler: SamplerSpec = SamplerSpec()
    pruner: PrunerSpec = PrunerSpec()
    #: extra overrides applied to every trial (e.g. a shorter schedule)
    overrides: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _search(cls, data: Any) -> Any:
        if isinstance(data, dict):
            if "seeds" in data and "search" in data:
                raise ValueError("give the search seeds once: 'seeds' or 'search.seeds', not both")
            if "search" not in data:
                data = {**data, "search": {"seeds": data.get("seeds", [0])}}
        return data

    @model_validator(mode="after")
    def _splits(self) -> SweepSpec:
        if self.confirm is not None:
            shared = sorted(set(self.search.seeds) & set(self.confirm.seeds))
            if shared:
                raise ValueError(f"confirm.seeds share seeds {shared} with the search split: the confirmation "
                                 "needs fresh seeds")
            if not _disjoint(self.search.val_images, self.confirm.val_images):
                raise ValueError(f"confirm.val_images {_images(self.confirm.val_images)} overlap the search split's "
                                 f"{_images(self.search.val_images)}: the confirmation needs held-out images")
        return self

    @model_validator(mode="after")
    def _objectives(self) -> SweepSpec:
        if self.secondary is not None:
            if self.secondary.metric == self.objective.metric:
                raise ValueError("secondary: the same metric as the objective")
            if self.pruner.type != "none":
                raise ValueError(f"pruner.type {self.pruner.type!r}: a sweep with a secondary objective cannot "
                                 "prune (Optuna prunes single-objective studies only); use pruner: {type: none}")
        return self

    @property
    def objectives(self) -> list[Objective]:
        return [self.objective] + ([self.secondary] if self.secondary is not None else [])


def _images(r: tuple[int, int] | None) -> str:
    return "(the whole validation split)" if r is None else f"[{r[0]}, {r[1]})"


def _disjoint(a: tuple[int, int] | None, b: tuple[int, int] | None) -> bool:
    return a is not None and b is not None and (a[1] <= b[0] or b[1] <= a[0])


def min_racing_p(k: int) -> float:
    """The smallest one-sided p-value the racing pruner's signed-rank test can give on k
    per-seed differences (all of one sign: 2^-k exactly), through the test it runs."""
    import numpy as np
    from scipy import stats

    return float(stats.wilcoxon(-np.arange(1.0, k + 1), alternative="less", zero_method="zsplit").pvalue)


def racing_refusal(spec: SweepSpec) -> str | None:
    """Why the racing pruner could never prune this sweep, or None: it may stop a trial only
    before its last search seed, after at least n_startup_steps of them."""
    n, p = len(spec.search.seeds), spec.pruner
    steps = range(max(2, p.n_startup_steps), n)
    if any(min_racing_p(k) < p.p_threshold for k in steps):
        return None
    if not steps:
        why = f"it may prune only after {max(2, p.n_startup_steps)} seeds and before the last of the {n}"
    else:
        why = (f"its signed-rank p-value cannot go below {min_racing_p(steps[-1]):.3g} with the {steps[-1]} seeds "
               f"before the last of {n}, and p_threshold is {p.p_threshold:g}")
    need = next(k for k in range(2, 64) if min_racing_p(k) < p.p_threshold) + 1
    return (f"the racing pruner can never prune with {n} search seeds: {why}; give at least "
            f"{max(need, p.n_startup_steps + 1)} search seeds, raise pruner.p_threshold, or use pruner.type median")


class Sweep:
    """A validated sweep: its spec, base spec and the base cell of each search seed."""

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

    def split(self, phase: str) -> Split:
        return self.spec.search if phase == SEARCH else self.spec.confirm

    def split_overrides(self, phase: str) -> list[Override]:
        """The phase's images, as the override `data.val_images` (none: the whole split)."""
        images = self.split(phase).val_images
        if images is None:
            return []
        where = "search" if phase == SEARCH else "confirm"
        return [Override(("data", "val_images"), list(images), Source(self.file, self.source.lines, (where, "val_images")))]

    def row_cells(self, params: dict[str, Any] | None = None, phase: str | None = None) -> list[Cell]:
        """Every cell (all datasets) of the swept row with these trial values; with a phase, of
        that phase's seeds and images (else the base spec's seeds). Only that row is resolved, so
        the space need not fit the base spec's other rows."""
        extra = [self.space_override(k, v) for k, v in (params or {}).items()]
        split = [] if phase is None else self.split_overrides(phase)
        seeds = None if phase is None else self.split(phase).seeds
        return expand(load_spec(self.base_file), [*self.fixed, *split, *extra], rows=(self.spec.row,), seeds=seeds)

    def trial_cells(self, params: dict[str, Any], phase: str = "search") -> list[Cell]:
        """The cells a trial trains in a phase: the swept row's cells of the sweep's dataset and
        the phase's seeds (in the spec's seed order), on the phase's images."""
        cells = self.row_cells(params, phase)
        if self.spec.dataset:
            cells = [c for c in cells if c.dataset == self.spec.dataset]
        return cells


SEARCH, CONFIRM = "search", "confirm"


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
        for where, objective in zip(("objective", "secondary"), spec.objectives, strict=False):
            parsed = parse_eval_key(objective.metric)
            if parsed is None or parsed[1] not in known:
                allowed = ", ".join(eval_key(None, m) for m in known)
                raise SpecError(src.problem(f"the {name} evaluator does not produce "
                                            f"{objective.metric!r} (known: {allowed}, also under eval.nms. / "
                                            "eval.nms_free.)", (where, "metric")))
    table = expand(loaded, rows=(spec.row,))  # the base spec's own cells: what its table reports
    table_seeds = {c.seed for c in table}
    if spec.confirm is not None:
        shared = sorted(set(spec.confirm.seeds) & table_seeds)
        if shared:
            raise SpecError(src.problem(f"confirm.seeds share seeds {shared} with the table of {spec.experiment} "
                                        f"(its seeds: {sorted(table_seeds)}): the confirmation needs fresh seeds",
                                        ("confirm", "seeds")))
    if spec.pruner.type == "racing":
        why = racing_refusal(spec)
        if why:
            raise SpecError(src.problem(why, ("pruner", "type")))
    try:
        sweep.base_cells = sweep.trial_cells({}, SEARCH)
        confirm = sweep.trial_cells({}, CONFIRM) if spec.confirm is not None else []
    except SpecError as exc:  # e.g. images beyond the validation split
        raise SpecError(exc.problems) from None
    if confirm and not spec.confirm.allow_table_images:
        _check_table_images(src, spec, table, confirm)
    return sweep


def _val_source(cell: Cell) -> tuple:
    """What the validation images are drawn from: images at the same position of the same
    source are the same images."""
    d = cell.config.data
    if d.name == "synthetic":
        s = d.synthetic
        # the annotation format does not change the pixels: only whether ignore regions are drawn
        return ("synthetic", s.seed, s.crowd, s.min_size, s.max_size, s.ignore_regions and s.format == "odgt")
    return (d.name, d.root, d.val.annotations)


def _val_range(cell: Cell) -> tuple[int, float]:
    d = cell.config.data
    if d.val_images is not None:
        return tuple(d.val_images)
    return (0, d.synthetic.num_val if d.name == "synthetic" else math.inf)


def _check_table_images(src: Source, spec: SweepSpec, table: list[Cell], confirm: list[Cell]) -> None:
    """The confirmation images must not be images the base spec's table is scored on."""
    for c in confirm:
        for t in table:
            if t.dataset != c.dataset or _val_source(t) != _val_source(c):
                continue
            (a0, a1), (b0, b1) = _val_range(t), _val_range(c)
            if a0 < b1 and b0 < a1:
                hi = "" if math.isinf(a1) else f"{a1:g}"
                raise SpecError(src.problem(
                    f"confirm.val_images {_images(spec.confirm.val_images)} overlap the images [{a0}, {hi}) that "
                    f"the table of {spec.experiment} is scored on ({t.dataset}): the confirmation needs held-out "
                    "images (or confirm.allow_table_images: true where no other annotated images exist)",
                    ("confirm", "val_images")))


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
