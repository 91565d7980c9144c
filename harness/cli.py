"""The `harness` command line: parses arguments and dispatches; no logic of its own.

Heavy modules (torch, mlflow) are imported inside the commands that need them, so that
`harness plan` and `harness --help` stay fast.
"""

from __future__ import annotations

import argparse
import errno
import functools
import json
import sys
from collections.abc import Sequence

from harness.schedule.job import (
    Overrides,
    Parser,
    TrainJob,
    add_override_arguments,
    add_store_arguments,
    add_train_arguments,
)
from harness.spec import Problem, UserError
from harness.spec.schema import EVALUATOR_METRICS
from harness.train.exit_codes import ExitCode

EXIT_USAGE = ExitCode.BAD_INPUT

_add_overrides = add_override_arguments
_add_store = add_store_arguments


def _add_backend(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=["local", "slurm"], default="local",
                   help="local: this machine's GPU slots (or CPU jobs); slurm: submitit")
    p.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="jobs at once on the local backend (default: one per GPU slot, 1 on CPU)")


def version_text() -> str:
    """`harness --version`: the installed package's version, and the source tree's commit when it
    is a git checkout."""
    import importlib.metadata
    import subprocess
    from pathlib import Path

    try:
        version = importlib.metadata.version("harness")
    except importlib.metadata.PackageNotFoundError:
        from harness import __version__ as version
    root = Path(__file__).resolve().parents[1]
    commit = ""
    if (root / ".git").exists():
        try:
            out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                                 text=True, timeout=5)
            commit = out.stdout.strip() if out.returncode == 0 else ""
        except (OSError, subprocess.SubprocessError):
            commit = ""
    return f"harness {version}" + (f" (git {commit})" if commit else "")


class _VersionAction(argparse.Action):
    """--version, computed only when asked (no git call on every command)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_text())
        parser.exit()


class _Formatter(argparse.HelpFormatter):
    """Descriptions wrapped as usual; an epilog of examples kept line by line."""

    def _fill_text(self, text, width, indent):
        if text.startswith("example"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


#: one example per subcommand, shown at the end of its help
EXAMPLES = {
    "plan": "harness plan experiments/quickstart.yaml --set train.max_iter=200",
    "run": "harness run experiments/quickstart.yaml --workspace runs --jobs 2",
    "train": "harness train experiments/quickstart.yaml --row POTO --seed 0 --set train.max_iter=50",
    "status": "harness status experiments/quickstart.yaml --workspace runs",
    "sync": "harness sync experiments/quickstart.yaml --workspace runs",
    "report": "harness report experiments/quickstart.yaml --out reports/quickstart.md --readme README.md",
    "decide": "harness decide experiments/quickstart_decide.yaml --json decide.json",
    "sweep": "harness sweep experiments/sweep_quickstart.yaml --check",
    "evaluate": "harness evaluate coco --gt instances_val2017.json --dets detections.json",
    "data": "harness data synth --out datasets/synthetic --images 200",
    "synth": "harness data synth --out datasets/synthetic --images 200 --format odgt --ignore-regions",
    "convert-crowdhuman": "harness data convert-crowdhuman annotation_val.odgt Images --out val.json",
    "record-testdev": "harness record-testdev 3f2a9c0d1e4b --ap 37.4 --workspace runs",
}


def _command(sub, name: str, **kwargs) -> argparse.ArgumentParser:
    return sub.add_parser(name, epilog=f"example:\n  {EXAMPLES[name]}", formatter_class=_Formatter, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="harness",
        description="Experiment harness for end-to-end fully convolutional object detection: "
                    "a YAML spec describes a matrix of training runs (cells); the harness plans, "
                    "runs, tracks (MLflow), sweeps (Optuna) and reports them.",
        epilog="example:\n  harness plan experiments/quickstart.yaml\n  harness run experiments/quickstart.yaml\n"
               "  harness COMMAND --help   # each command's options and an example",
        formatter_class=_Formatter)
    parser.add_argument("--version", action=_VersionAction, help="print the version (and git commit) and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = _command(sub, "plan", help="list the cells of a spec without running anything",
                       description="Expand SPEC into cells (row x dataset x seed) and print them "
                                   "with their run keys.")
    p.add_argument("spec", metavar="SPEC")
    _add_overrides(p)
    p.add_argument("--json", action="store_true",
                   help="print a JSON list of cells (id, row, dataset, seed, run_key, config)")

    p = _command(sub, "run", help="run every unfinished cell of a spec",
                       description="Run the cells of SPEC: skip finished ones, resume crashed "
                                   "ones, log every run to MLflow.")
    p.add_argument("spec", metavar="SPEC")
    _add_overrides(p)
    _add_backend(p)
    _add_store(p)
    p.add_argument("--rerun", action="store_true", help="start fresh runs even for finished cells")
    p.add_argument("--detach", action="store_true", help="slurm: submit and return")
    p.add_argument("--until-decided", action="store_true",
                   help="then add seeds to the claims of every table with a decide section, look by look, "
                        "until each is decided, at its cap or stopped for futility (`harness decide` shows the plan)")

    p = _command(sub, "train", help="train one cell in this process",
                       description="Train the cell of SPEC picked by --row (and --dataset, "
                                   "--seed) in this process.")
    add_train_arguments(p)

    p = _command(sub, "status", help="show the state of a spec's cells from MLflow",
                       description="Print the state of every cell of SPEC as recorded in MLflow.")
    p.add_argument("spec", metavar="SPEC")
    _add_overrides(p)
    _add_store(p)

    p = _command(sub, "sync", help="send tracking writes spooled while the store was away",
                       description="Send the spooled tracking writes (metrics, params, tags, artifacts, the "
                                   "run's end) of SPEC's cells that ended while their tracking store was "
                                   "unreachable. `harness run` does the same before it decides what to run.")
    p.add_argument("spec", metavar="SPEC")
    _add_overrides(p)
    _add_store(p)

    p = _command(sub, "report", help="rebuild a spec's tables from MLflow",
                       description="Aggregate the finished runs of SPEC across seeds and render "
                                   "the tables (markdown, plots, README regions).")
    p.add_argument("spec", metavar="SPEC")
    _add_overrides(p)
    _add_store(p)
    p.add_argument("--out", default=None, metavar="FILE", help="markdown report to write (its JSON beside it)")
    p.add_argument("--json", default=None, metavar="FILE",
                   help="the results as JSON: every per-seed value with its run id, each row's n, mean, std and "
                        "interval, each claim's test, interval, p, Holm p, verdict, power and seeds needed")
    p.add_argument("--readme", default=None, metavar="FILE",
                   help="rewrite the <!-- harness:table NAME --> regions of FILE")
    p.add_argument("--check", action="store_true",
                   help="change nothing; exit 1 when the README regions are stale")
    p.add_argument("--allow-empty", action="store_true",
                   help="write the report and README tables even when no cell of the spec has finished "
                        "(otherwise an error: a wrong store must not blank a filled table)")
    p.add_argument("--against", action="append", default=[], metavar="URI",
                   help="another tracking store holding the same cells (a fresh workspace, another "
                        "machine): the report adds its row means against this store's 95%% intervals; "
                        "may be repeated")
    p.add_argument("--log-to-mlflow", action="store_true",
                   help="also log each table to the store as one summary run (table:SPEC/TABLE): per row and "
                        "metric mean, std, n and 95%% interval as metrics, claim verdicts as tags, the report's "
                        "markdown, JSON and figures as artifacts; a rerun updates the same runs")

    p = _command(sub, "decide", help="decide a spec's claims by adding seeds: the looks so far and the next cells",
                       description="For each table with a `decide` section: read the finished runs of its "
                                   "claims' rows, make the design's looks so far (group-sequential, α spent "
                                   "over the looks, Holm over the claims), print each claim's t statistic, "
                                   "boundary and verdict, and the cells to run next. Trains nothing.")
    p.add_argument("spec", metavar="SPEC")
    _add_overrides(p)
    _add_store(p)
    p.add_argument("--json", default=None, metavar="FILE", help="write the same as JSON (the only file written)")

    p = _command(sub, "sweep", help="Optuna sweep of loss weights over a spec's cells",
                       description="Run an Optuna study whose trials are cells dispatched through "
                                   "the scheduler.")
    p.add_argument("spec", metavar="SPEC")
    _add_overrides(p)
    _add_backend(p)
    _add_store(p)
    p.add_argument("--storage", default=None, metavar="URL",
                   help="Optuna storage (default: a journal file in the workspace)")
    p.add_argument("--out-dir", default="reports", metavar="DIR", help="where the sweep report goes")
    p.add_argument("--check", action="store_true",
                   help="only validate the sweep (spec, base spec, space and bounds, objective, against the "
                        "swept row's cells) and exit 0; touches no workspace, trains nothing")

    p = _command(sub, "evaluate", help="evaluate a detections file against ground truth",
                       description="Evaluate detections with the official COCO or CrowdHuman "
                                   "metric.")
    p.add_argument("kind", choices=list(EVALUATOR_METRICS))
    p.add_argument("--gt", required=True, metavar="FILE",
                   help="COCO instances json, or CrowdHuman .odgt")
    p.add_argument("--dets", required=True, metavar="FILE",
                   help="COCO results json, or .odgt with dtboxes")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--backend", choices=["pycocotools", "faster_coco_eval"], default="pycocotools",
                   help="coco: the COCOeval implementation (same numbers)")
    p.add_argument("--images", default=None, metavar="DIR",
                   help="crowdhuman: image folder to read sizes from when the records lack them")
    p.add_argument("--testdev", default=None, metavar="OUT.zip",
                   help="coco: instead of scoring, write the COCO server's upload file (a zip holding "
                        "detections_test-dev2017_<alg>_results.json) from a run's detections on the test-dev "
                        "images; --gt is test-dev's image info (image_info_test-dev2017.json)")
    p.add_argument("--alg", default="harness", metavar="NAME",
                   help="with --testdev: the algorithm's name in the results file (letters, digits, '-')")

    p = _command(sub, "record-testdev", help="record a run's COCO test-dev server result",
                       description="Record the AP the COCO evaluation server gave a run's test-dev upload "
                                   "(`harness evaluate coco --testdev`): the metric testdev.ap, shown by a "
                                   "table's AP (test-dev) column.")
    p.add_argument("run_id", metavar="RUN_ID")
    p.add_argument("--ap", required=True, type=float, metavar="PERCENT", help="the server's AP in percent (37.4)")
    _add_store(p)

    p = _command(sub, "data", help="dataset tools (synthetic data, conversions)",
                       description="Dataset tools.")
    data = p.add_subparsers(dest="data_command", metavar="TOOL", required=True)
    q = _command(data, "synth", help="write the offline synthetic crowded dataset",
                        description="Generate the deterministic synthetic crowded dataset: "
                                    "N training images and N/4 validation images.")
    q.add_argument("--out", required=True, metavar="DIR")
    q.add_argument("--images", type=int, default=200, metavar="N")
    q.add_argument("--seed", type=int, default=0, metavar="S")
    q.add_argument("--crowd", choices=["none", "low", "high"], default="high")
    q.add_argument("--format", choices=["coco", "odgt"], default="coco")
    q.add_argument("--min-size", type=int, default=128, help="smallest image side drawn")
    q.add_argument("--max-size", type=int, default=320, help="largest image side drawn")
    q.add_argument("--ignore-regions", action="store_true",
                   help="odgt: add ignore ('mask') regions")
    q = _command(data, "convert-crowdhuman", help="CrowdHuman .odgt -> COCO instances json",
                        description="Convert a CrowdHuman .odgt file to COCO instances json.")
    q.add_argument("odgt", metavar="ODGT")
    q.add_argument("image_dir", metavar="IMAGE_DIR")
    q.add_argument("--out", required=True, metavar="FILE")
    return parser


def _overrides(args) -> list:
    from harness.spec import load_set_file, parse_set

    overrides = []
    for f in getattr(args, "set_files", []):
        overrides.extend(load_set_file(f))
    for item in getattr(args, "overrides", []):
        overrides.append(parse_set(item))
    return overrides


def _cells(args):
    from harness.spec import expand, load_spec

    loaded = load_spec(args.spec)
    return loaded, expand(loaded, _overrides(args))


def cmd_plan(args) -> int:
    loaded, cells = _cells(args)
    if args.json:
        json.dump([c.to_json() for c in cells], sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{loaded.spec.name}: {len(cells)} cells")
    for col in ("#", "row", "dataset", "seed", "run key", "table"):
        table.add_column(col)
    for i, c in enumerate(cells):
        table.add_row(str(i), c.row, c.dataset, str(c.seed), c.short_key,
                      (c.meta.table if c.meta else "") or "")
    console = Console()
    console.print(table)
    rows = len(dict.fromkeys(c.row for c in cells))
    datasets = len(dict.fromkeys(c.dataset for c in cells))
    console.print(f"{len(cells)} cells ({rows} rows x {datasets} datasets x "
                  f"{len(loaded.spec.seeds)} seeds)")
    return 0


def _json_safe(metrics: dict) -> dict:
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in metrics.items()}


def cmd_evaluate(args) -> int:
    from harness.evaluation.kinds import evaluator

    if args.testdev is not None:
        from harness.evaluation.files import testdev_upload

        if args.kind != "coco":
            raise UserError(Problem(None, None, "--testdev", "the COCO test-dev upload takes `harness evaluate coco`"))
        name, n_dets, n_images, total = testdev_upload(args.gt, args.dets, args.testdev, args.alg)
        print(f"{args.testdev}: {name}, {n_dets} detections on {n_images} of {total} images")
        return 0
    metrics = evaluator(args.kind).evaluate_files(args.gt, args.dets, backend=args.backend, images=args.images)
    if args.json:
        print(json.dumps(_json_safe(metrics)))
        return 0
    for name, value in metrics.items():
        shown = f"{100 * value:6.2f} %" if isinstance(value, float) else f"{value:8d}"
        print(f"{name:<11} {shown}")
    return 0


def cmd_record_testdev(args) -> int:
    import math

    from harness.track.runs import record_testdev

    if not (math.isfinite(args.ap) and 1 <= args.ap <= 100):
        raise UserError(Problem(None, None, "--ap", f"the server's AP in percent, 1 to 100 (37.4), got {args.ap:g}"))
    where = record_testdev(_store(args), args.run_id, args.ap / 100)
    print(f"{args.run_id} ({where}): testdev.ap = {args.ap:g} %")
    return 0


def cmd_data(args) -> int:
    if args.data_command == "synth":
        from harness.data.synthetic import write_split

        for split, n in (("train", args.images), ("val", max(1, args.images // 4))):
            path = write_split(args.out, split, n, seed=args.seed, crowd=args.crowd, fmt=args.format,
                               min_size=args.min_size, max_size=args.max_size,
                               ignore_regions=args.ignore_regions)
            print(f"{split}: {n} images, annotations {path}")
        return 0
    from harness.data.convert import check_output, crowdhuman_to_coco, write_json_atomic

    check_output(args.out)
    data = crowdhuman_to_coco(args.odgt, args.image_dir)
    write_json_atomic(data, args.out)
    print(f"{len(data['images'])} images, {len(data['annotations'])} boxes -> {args.out}")
    return 0


def _store(args, *, check: bool = True) -> str:
    """The one place a command's tracking URI is resolved (`--tracking-uri`, else the workspace's
    SQLite store; credentials move to the environment) and, with check, checked."""
    from harness.track.mlflow_tracker import resolve_tracking_uri

    return resolve_tracking_uri(args.tracking_uri, args.workspace, check=check)


def cmd_train(args) -> int:
    import os

    job = TrainJob.from_args(args)
    cell = job.cell()  # the spec's faults first, as before the store's
    main_rank = int(os.environ.get("RANK", "0")) == 0  # rank 0 checks
    if args.job is None and main_rank:  # a person's `harness train`: everything the cell needs, first
        from harness.schedule.preflight import preflight

        return job.execute(preflight([cell], workspace=args.workspace, tracking_uri=args.tracking_uri), cell)
    try:
        uri = _store(args, check=main_rank)
    except UserError as exc:  # a launched worker answers its scheduler with the reason
        if args.job is not None and main_rank:
            job.answer_bad_input(cell, exc)
        raise
    return job.execute(uri, cell)


def _job_overrides(args) -> Overrides:
    return Overrides.of(args.overrides, args.set_files)


def _preflight(cells, args, backend: str | None = None, folders=()) -> str:
    """Everything the cells need, checked before anything starts or is written; the store's URI."""
    from harness.schedule.preflight import preflight

    return preflight(cells, workspace=args.workspace, tracking_uri=args.tracking_uri, backend=backend,
                     folders=folders)


def cmd_run(args) -> int:
    loaded, cells = _cells(args)

    if args.until_decided and (args.detach or args.rerun):
        raise UserError(Problem(None, None, "--until-decided", "decides from finished runs: it takes neither "
                                                               "--detach nor --rerun"))
    uri = _preflight(cells, args, backend=args.backend)
    from harness.schedule.run import run_spec

    run = functools.partial(run_spec, spec_name=loaded.spec.name, spec_file=args.spec,
                            overrides=_job_overrides(args), workspace=args.workspace, uri=uri,
                            tracking_uri=args.tracking_uri, jobs=args.jobs, backend=args.backend,
                            description=loaded.spec.description)
    if not args.until_decided:
        return run(cells, rerun=args.rerun, detach=args.detach)
    return _until_decided(loaded, cells, run, uri, args)


def _until_decided(loaded, cells, run, uri: str, args) -> int:
    """`harness run --until-decided`: run the cells, decide, run the next look's cells, until every
    deciding claim is decided, at its cap or stopped for futility. Every decision is a function of the planned seeds'
    runs, so a rerun after a kill makes the same looks and trains no finished cell again."""
    import time

    from harness.report.decide import cells_to_decide, decide_tables, lines, record_looks
    from harness.schedule.state import busy

    deciding = {(c.row, c.seed): c for c in cells_to_decide(loaded, _overrides(args))}
    if not deciding:
        raise UserError(Problem(None, None, "--until-decided", "no table of the spec has a decide section"))
    todo, last = cells, None
    while True:
        code = run(todo, rerun=False, detach=False)
        if code:
            print("not every cell finished: the decision waits for them (run the same command again)")
            return code
        decisions = decide_tables(loaded, list(deciding.values()), uri)
        for line in record_looks(uri, loaded, decisions) + [x for d in decisions for x in lines(d)]:
            print(line)
        wanted = sorted({(row, seed) for d in decisions for row, seeds in d.next_cells().items() for seed in seeds})
        if not wanted:
            print("every claim is decided, at its cap or stopped for futility")
            return 0
        if wanted == last and any(busy(args.workspace, deciding[k].run_key) for k in wanted):
            time.sleep(5)  # another process trains some (a killed run's orphaned workers): wait for them
        elif wanted == last:  # the same cells again: a finished run does not count (a NaN metric, say)
            print("the next look waits for cells that finished without a usable value: see the lines above")
            return 1
        todo, last = [deciding[k] for k in wanted], wanted


def cmd_status(args) -> int:
    loaded, cells = _cells(args)
    from harness.schedule.run import status_table
    from harness.track.mlflow_tracker import check_store_exists

    uri = _store(args)
    if args.tracking_uri is not None:  # a store named explicitly must exist: a typo is not "all pending"
        check_store_exists(uri)
    return status_table(cells, spec_name=loaded.spec.name, workspace=args.workspace, uri=uri, loaded=loaded)


def cmd_sync(args) -> int:
    _, cells = _cells(args)
    from harness.schedule.run import sync_cells
    from harness.track.mlflow_tracker import check_store_exists

    uri = _store(args)
    check_store_exists(uri)
    records, synced = sync_cells(cells, uri, args.workspace)
    print(f"{records} record(s) of {synced} cell(s) sent; nothing left unsynced" if records
          else "nothing to send: every cell's tracking writes are in the store")
    return 0


def cmd_report(args) -> int:
    loaded, cells = _cells(args)
    from harness.report.build import report
    from harness.track.mlflow_tracker import check_store_exists, check_tracking_uri

    uri = _store(args)
    check_store_exists(uri)
    for other in args.against:
        check_tracking_uri(other)
        check_store_exists(other, "--against")
    return report(loaded, cells, uri=uri, out=args.out, readme=args.readme, check=args.check,
                  against=tuple(args.against), allow_empty=args.allow_empty, json_out=args.json,
                  overrides=_overrides(args), log_to_mlflow=args.log_to_mlflow)


def cmd_decide(args) -> int:
    from harness.report.decide import cells_to_decide, decide_tables, lines
    from harness.spec import load_spec
    from harness.track.mlflow_tracker import check_store_exists

    loaded = load_spec(args.spec)
    cells = cells_to_decide(loaded, _overrides(args))
    if not cells:
        raise UserError(Problem(args.spec, None, "tables", "no table has a decide section (tables.NAME.decide)"))
    uri = _store(args)
    check_store_exists(uri)
    decisions = decide_tables(loaded, cells, uri)
    for d in decisions:
        print("\n".join(lines(d)))
    if args.json:
        from harness.formats.atomic import write_json

        write_json(args.json, {"spec": loaded.spec.name, "tables": [d.to_json() for d in decisions]}, indent=1)
    return 0


def cmd_sweep(args) -> int:
    from harness.sweep.space import validate_sweep

    sweep = validate_sweep(args.spec, _overrides(args), backend=args.backend)
    if args.check:
        cells = len(sweep.base_cells)
        print(f"{args.spec}: ok (row {sweep.spec.row} of {sweep.spec.experiment}, {len(sweep.spec.space)} "
              f"parameters, {sweep.spec.n_trials} trials of {cells} cell{'s' if cells > 1 else ''})")
        return 0
    uri = _preflight(sweep.base_cells, args, backend=args.backend, folders=[(args.out_dir, "--out-dir")])
    from harness.sweep.driver import Driver

    return Driver(sweep, workspace=args.workspace, uri=uri, storage=args.storage,
                  jobs=args.jobs, out_dir=args.out_dir, backend=args.backend).run()


COMMANDS = {"plan": cmd_plan, "evaluate": cmd_evaluate, "data": cmd_data, "train": cmd_train,
            "run": cmd_run, "status": cmd_status, "sync": cmd_sync, "report": cmd_report, "decide": cmd_decide,
            "sweep": cmd_sweep, "record-testdev": cmd_record_testdev}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = COMMANDS[args.command]
    try:
        return handler(args)
    except UserError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # a folder that cannot be written: one line naming it, not a traceback
        if exc.errno not in UNWRITABLE:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror}" if exc.errno == errno.ENOSPC else
              f"error: {where}cannot be written ({exc.strerror})", file=sys.stderr)
        return EXIT_USAGE


#: errors of a place that cannot be written: read-only, no permission, full
UNWRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT)


if __name__ == "__main__":
    sys.exit(main())
