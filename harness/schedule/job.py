"""A training job: the one description of "train this cell" that every launcher uses.

`harness run` (local pool or Slurm), `harness sweep` and `harness train` itself all go through
`TrainJob`. A job a scheduler launches carries its resolved cell (config and run key, as planned):
the local pool writes it to `<workspace>/<key>/job.json` and starts `python -m harness train --job
FILE`, the Slurm backend pickles the job (cell included) into a submitit job that calls
`TrainJob.execute()` in its allocation. The worker trains exactly that config, never a re-read of
the spec, and refuses a job file whose key is not its config's. `harness train SPEC --row ...`
(people) resolves the cell from the spec. The command line is written once (`argv`) and read once
(`add_train_arguments` + `from_argv`); a test round-trips it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from harness.spec.workspace import CellPaths


def add_override_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, typed by the schema (e.g. train.base_lr=0.02); may be "
                        "repeated, and one --set may take several pairs (`--set a=1 b=2`)")
    p.add_argument("--set-file", dest="set_files", action="append", default=[], metavar="FILE",
                   help="YAML file of overrides (nested mappings or dotted keys); may be repeated")


def split_set_items(argv: Sequence[str]) -> list[str]:
    """`--set a=1 b=2` as `--set a=1 --set b=2`: each `--set` takes one item, and the items after it
    that hold a `=` (and are no option) get their own `--set`, so a positional after them (SPEC)
    is never taken for an override, whichever side of the `--set` items it is on."""
    out: list[str] = []
    items = False  # after a --set item: further KEY=VALUE words are items too
    pending = False  # right after a bare --set: the next word is its item, whatever it is
    for i, arg in enumerate(argv):
        if arg == "--":
            return out + list(argv[i:])
        if pending:
            out.append(arg)
            pending, items = False, True
        elif arg == "--set" or arg.startswith("--set="):
            out.append(arg)
            pending, items = arg == "--set", arg != "--set"
        elif items and "=" in arg and not arg.startswith("-"):
            out += ["--set", arg]
        else:
            out.append(arg)
            items = False
    return out


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose `--set` items never swallow a positional (`split_set_items`)."""

    def parse_known_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        return super().parse_known_args(split_set_items(args), namespace)


def add_store_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workspace", default="runs", metavar="DIR",
                   help="checkpoints, logs, caches and the default SQLite store (default: ./runs)")
    p.add_argument("--tracking-uri", default=None, metavar="URI",
                   help="MLflow tracking URI (default: sqlite:///<workspace>/mlflow.db); "
                        "http://host:port for an mlflow server")


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of `harness train`, which `TrainJob.argv` writes."""
    p.add_argument("spec", metavar="SPEC", nargs="?", default=None)
    p.add_argument("--row", default=None, metavar="LABEL", help="row label of the cell (required with SPEC)")
    # for workers only (written by the schedulers), hidden from the help: a cell as the scheduler
    # planned it (<workspace>/<key>/job.json), trained exactly as it is, instead of SPEC and --row
    p.add_argument("--job", default=None, metavar="FILE", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=None, help="one of the spec's seeds (default: first)")
    p.add_argument("--dataset", default=None, help="dataset axis value (default: first)")
    add_override_arguments(p)
    add_store_arguments(p)
    p.add_argument("--resume", action="store_true",
                   help="resume from the cell's checkpoint (the default when it exists)")
    p.add_argument("--fresh", action="store_true",
                   help="start a new run even if the cell has a checkpoint (it is set aside)")
    # sweep trials, written by `harness sweep` (hidden): the sweep's MLflow run (this run becomes its
    # nested child), the Optuna trial number and the sweep's name
    p.add_argument("--parent-run", default=None, metavar="RUN_ID", help=argparse.SUPPRESS)
    p.add_argument("--trial", type=int, default=None, metavar="N", help=argparse.SUPPRESS)
    p.add_argument("--sweep", default=None, metavar="NAME", help=argparse.SUPPRESS)


@dataclass(frozen=True)
class Overrides:
    """`--set` items and `--set-file` files, as the user gave them (files made absolute: a job may
    start in another directory)."""

    sets: tuple[str, ...] = ()
    files: tuple[str, ...] = ()

    @classmethod
    def of(cls, sets: Sequence[str] = (), files: Sequence[str] = ()) -> Overrides:
        return cls(tuple(sets), tuple(str(Path(f).resolve()) for f in files))

    def argv(self) -> list[str]:
        out: list[str] = []
        for f in self.files:
            out += ["--set-file", f]
        for item in self.sets:
            out += ["--set", item]
        return out

    def parsed(self) -> list:
        """The typed overrides: files first, then the items, as on the command line."""
        from harness.spec import load_set_file, parse_set

        return [o for f in self.files for o in load_set_file(f)] + [parse_set(s) for s in self.sets]

    def plus(self, sets: Sequence[str]) -> Overrides:
        return replace(self, sets=self.sets + tuple(sets))


@dataclass(frozen=True)
class SweepLink:
    """A sweep trial's place in its sweep: the parent MLflow run, the trial number, the sweep."""

    parent_run: str
    trial: int
    sweep: str
    #: "search" or "confirm": which split of the sweep the run scores
    phase: str = "search"

    def as_dict(self) -> dict:
        return {"parent_run": self.parent_run, "trial": self.trial, "sweep": self.sweep, "phase": self.phase}


@dataclass(frozen=True)
class TrainJob:
    """Train one cell: the spec file, the cell's coordinates, its overrides and where it goes."""

    spec_file: str
    row: str
    dataset: str | None
    seed: int | None
    workspace: str
    tracking_uri: str | None
    overrides: Overrides = field(default_factory=Overrides)
    fresh: bool = False
    resume: bool = False
    sweep: SweepLink | None = None
    run_key: str | None = None  # the cell's key when the launcher knows it (its log goes there)
    #: the resolved cell as the launcher planned it (`harness.spec.Cell`); None: resolve it from
    #: the spec (`harness train SPEC --row`)
    planned: object | None = None
    job_file: str | None = None  # where the planned cell is written for a worker process

    @classmethod
    def for_cell(cls, cell, *, spec_file: str, workspace: str, tracking_uri: str,
                 overrides: Overrides = Overrides(), fresh: bool = False, sweep: SweepLink | None = None) -> TrainJob:
        return cls(spec_file=spec_file, row=cell.row, dataset=cell.dataset, seed=cell.seed, workspace=workspace,
                   tracking_uri=tracking_uri, overrides=overrides, fresh=fresh, sweep=sweep, run_key=cell.run_key,
                   planned=cell, job_file=str(CellPaths.of(workspace, cell.run_key).job))

    # ------------------------------------------------------------------ job file

    def write_job(self) -> Path:
        """Write the planned cell where the worker reads it (atomically; the cell's folder exists)."""
        from harness.formats.atomic import write_json

        if self.planned is None or self.job_file is None:
            raise ValueError("only a job with a planned cell has a job file")
        sweep = None if self.sweep is None else self.sweep.as_dict()
        return write_json(self.job_file, {"version": 1, "spec_file": self.spec_file, "cell": self.planned.to_json(),
                                          "sweep": sweep}, indent=1)

    @classmethod
    def read_job(cls, file: str, *, workspace: str, tracking_uri: str | None, fresh: bool = False,
                 resume: bool = False) -> TrainJob:
        """The job a scheduler wrote (`write_job`); SpecError when it cannot be trained as it is."""
        import json

        from harness.spec import Problem, SpecError
        from harness.spec.matrix import cell_from_json

        try:
            data = json.loads(Path(file).read_text())
        except OSError as exc:
            raise SpecError(Problem(file, None, "--job", f"cannot read: {exc.strerror}")) from None
        except ValueError as exc:
            raise SpecError(Problem(file, None, "--job", f"not JSON ({exc})")) from None
        if not isinstance(data, dict) or data.get("version") != 1 or not isinstance(data.get("cell"), dict):
            raise SpecError(Problem(file, None, "--job", "not a job file of this harness (version 1)"))
        cell = cell_from_json(data["cell"], file)
        link = data.get("sweep")
        try:
            sweep = None if not link else SweepLink(str(link["parent_run"]), int(link["trial"]), str(link["sweep"]),
                                                  str(link.get("phase", "search")))
        except (KeyError, TypeError, ValueError):
            raise SpecError(Problem(file, None, "sweep", "not a sweep link (parent_run, trial, sweep)")) from None
        return cls(spec_file=str(data.get("spec_file") or ""), row=cell.row, dataset=cell.dataset, seed=cell.seed,
                   workspace=workspace, tracking_uri=tracking_uri, fresh=fresh, resume=resume, sweep=sweep,
                   run_key=cell.run_key, planned=cell, job_file=file)

    # ------------------------------------------------------------------ argv

    def argv(self) -> list[str]:
        """`harness train` arguments (without the program): `--job FILE` for a planned cell."""
        if self.job_file is not None:
            out = ["train", "--job", self.job_file, "--workspace", self.workspace]
            if self.tracking_uri is not None:
                out += ["--tracking-uri", self.tracking_uri]
            return out + (["--fresh"] if self.fresh else []) + (["--resume"] if self.resume else [])
        out = ["train", self.spec_file, "--row", self.row]
        if self.dataset is not None:
            out += ["--dataset", self.dataset]
        if self.seed is not None:
            out += ["--seed", str(self.seed)]
        out += ["--workspace", self.workspace]
        if self.tracking_uri is not None:
            out += ["--tracking-uri", self.tracking_uri]
        out += self.overrides.argv()
        if self.fresh:
            out.append("--fresh")
        if self.resume:
            out.append("--resume")
        if self.sweep is not None:
            out += ["--parent-run", self.sweep.parent_run, "--trial", str(self.sweep.trial),
                    "--sweep", self.sweep.sweep]
        return out

    def command(self, gpus: int = 0) -> list[str]:
        """The process to start: `python -m harness train ...`, under torchrun for multi-GPU cells."""
        if gpus > 1:
            return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(gpus),
                    "-m", "harness", *self.argv()]
        return [sys.executable, "-m", "harness", *self.argv()]

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> TrainJob:
        from harness.spec import Problem, SpecError

        if args.job is not None:
            extra = [name for name, value in (("SPEC", args.spec), ("--row", args.row), ("--seed", args.seed),
                                              ("--dataset", args.dataset), ("--set", args.overrides),
                                              ("--set-file", args.set_files), ("--parent-run", args.parent_run))
                     if value]
            if extra:
                raise SpecError(Problem(None, None, "--job", f"a job file is the whole cell: drop {', '.join(extra)}"))
            return cls.read_job(args.job, workspace=args.workspace, tracking_uri=args.tracking_uri, fresh=args.fresh,
                                resume=args.resume)
        if args.spec is None or args.row is None:
            raise SpecError(Problem(None, None, "train", "give SPEC and --row LABEL (or --job FILE)"))
        sweep = None
        if args.parent_run is not None:
            sweep = SweepLink(args.parent_run, args.trial if args.trial is not None else -1, args.sweep or "")
        return cls(spec_file=args.spec, row=args.row, dataset=args.dataset, seed=args.seed,
                   workspace=args.workspace, tracking_uri=args.tracking_uri,
                   overrides=Overrides(tuple(args.overrides), tuple(args.set_files)),
                   fresh=args.fresh, resume=args.resume, sweep=sweep)

    @classmethod
    def from_argv(cls, argv: Sequence[str]) -> TrainJob:
        """Inverse of `argv()` (the first element is "train")."""
        argv = list(argv)
        if not argv or argv[0] != "train":
            raise ValueError(f"not a `harness train` command line: {argv[:1]}")
        parser = Parser(prog="harness train")
        add_train_arguments(parser)
        return cls.from_args(parser.parse_args(argv[1:]))

    def without_fresh(self) -> TrainJob:
        """The same job resumed (a requeue after preemption must not start over)."""
        return replace(self, fresh=False)

    # --------------------------------------------------------------- running

    def paths(self) -> CellPaths | None:
        return CellPaths.of(self.workspace, self.run_key) if self.run_key else None

    def cell(self):
        """The planned cell; without one, load the spec, apply the overrides and pick this job's
        cell (SpecError on bad input)."""
        if self.planned is not None:
            return self.planned
        from harness.spec import Problem, SpecError, expand, load_spec, row_labels, select

        loaded = load_spec(self.spec_file)
        rows = row_labels(loaded)
        if self.row not in rows:
            raise SpecError(Problem(self.spec_file, None, "--row",
                                    f"unknown row {self.row!r} (known: {', '.join(rows)})"))
        # the overrides (a sweep trial's) need fit this row only
        cells = expand(loaded, self.overrides.parsed(), rows=(self.row,))
        return select(cells, self.row, self.dataset, self.seed, spec_file=self.spec_file)

    def answer_bad_input(self, cell, exc) -> None:
        """Answer the scheduler (result.json) with the reason of a UserError, in one line: its
        first problem, and how many more there are."""
        from harness.train.result import CellResult, Outcome, write_result

        problems = [line for p in getattr(exc, "problems", []) if (line := str(p).strip())]
        first = (problems[0] if problems else str(exc).strip() or type(exc).__name__).splitlines()[0]
        more = f" (and {len(problems) - 1} more problems: see the log)" if len(problems) > 1 else ""
        write_result(CellPaths.of(self.workspace, cell.run_key).result, CellResult(Outcome.BAD_INPUT, first + more))

    def execute(self, uri: str | None = None, cell=None) -> int:
        """Train the cell in this process; returns `harness train`'s exit code. uri: the store as
        resolved at the edge (`harness train`); a launched job carries its launcher's resolved URI.
        cell: `self.cell()` when the caller has it already (the spec is read once).

        A job launched from a job file answers in the cell's `result.json` (rank 0): how it
        ended, bad input included (then re-raised for the one-line message)."""
        import os

        from harness.spec import UserError
        from harness.train.result import Outcome, write_result
        from harness.train.run import Launch, run_cell
        from harness.train.session import Resume

        cell = cell or self.cell()
        uri = uri or self.tracking_uri
        if uri is None:
            raise ValueError("a job executes with a resolved tracking URI (resolve_tracking_uri)")
        sweep = None
        if self.sweep is not None:
            sweep = self.sweep.as_dict()
        launch = Launch(uri, Resume.of(fresh=self.fresh, resume=self.resume), spec_file=self.spec_file, sweep=sweep)
        answer = self.job_file is not None and int(os.environ.get("RANK", "0")) == 0
        try:
            result = run_cell(cell, launch, self.workspace)
        except UserError as exc:
            if answer:
                self.answer_bad_input(cell, exc)
            raise
        if answer and result.outcome is not Outcome.BUSY:  # the folder is the lock holder's: its answer, not ours
            write_result(CellPaths.of(self.workspace, cell.run_key).result, result)
        return result.exit_code


__all__ = ["Overrides", "Parser", "SweepLink", "TrainJob", "add_override_arguments", "add_store_arguments",
           "add_train_arguments", "split_set_items"]
