"""`harness train`: one cell end to end, read top to bottom: check → lock → run → fit → end.

Everything a user can get wrong (data, weights, class count, checkpoint) is checked by
`session.prepare` before the lock, the data cache or an MLflow run exist, so bad input leaves
nothing half-written. Once the run exists it always ends FINISHED, FAILED (exception; divergence:
a non-finite loss or a train.health rule, reason "diverged: ...") or KILLED (signal), with the
reason in the `harness.failure` tag, and the launch answers with one `CellResult`.
"""

from __future__ import annotations

import contextlib
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

import yaml

from harness.data.build import train_dataset
from harness.data.loader import train_loader
from harness.formats.atomic import NoSpace, is_no_space, write_text_atomic
from harness.spec.errors import Problem, UserError
from harness.spec.matrix import Cell
from harness.track.mlflow_tracker import MLflowTracker, NullTracker, git_commit, sync_cell
from harness.track.names import run_params, run_tags, workspace_tag
from harness.track.runs import end_abandoned, previous_attempt
from harness.train.engine import LoopContext, NonFiniteLoss, Progress, Stop, fit, unwrap
from harness.train.evaluation import Evaluation
from harness.train.guards import Heartbeat, SignalGuard
from harness.train.health import Unhealthy
from harness.train.lock import CellLock
from harness.train.log_lines import clock, evaluation_line, schedule_lines
from harness.train.platform import platform_tag
from harness.train.result import CellResult, Outcome
from harness.train.session import (
    Resume,
    Session,
    leave_process_group,
    load_pretrained,
    prepare,
    save_checkpoint,
    take_over,
)


@dataclass(frozen=True)
class Launch:
    """How this process was asked to train its cell. uri: the tracking store, resolved at the
    edge (`harness train`'s command line, or the scheduler that launched the job); sweep: a sweep
    trial's parent_run, trial and sweep (its run becomes a nested child of the sweep's run)."""

    uri: str
    resume: Resume = Resume.AUTO
    spec_file: str | None = None
    attempt: int | None = None
    progress: bool = True
    sweep: dict | None = None


def run_cell(cell: Cell, launch: Launch, workspace: str | Path = "runs") -> CellResult:
    """Train and evaluate one cell: check, lock (rank 0), run; returns how the launch ended."""
    s = prepare(cell, workspace=workspace, resume=launch.resume, spec_file=launch.spec_file)
    try:
        if not s.ranks.main:
            return _run(s, launch)
        lock = CellLock(s.paths.lock)
        if not lock.acquire():
            print(f"{cell.id}: being trained by another process (lock {lock.path}); not starting it twice",
                  file=sys.stderr)
            return CellResult(Outcome.BUSY, f"being trained by another process (lock {lock.path})")
        try:
            return _run(s, launch)
        finally:
            lock.release()
    finally:
        leave_process_group()


def _run(s: Session, launch: Launch) -> CellResult:
    take_over(s, launch.resume)
    with SignalGuard() as guard:  # from before the run opens: a signal ends it KILLED, never RUNNING
        tracker = _start_run(s, launch) if s.ranks.main else NullTracker()
        if tracker is None:
            return CellResult(Outcome.FINISHED, iteration=s.start_iter, run_id=s.run_id)
        evaluation = None
        try:
            guard.check(s.start_iter)  # a signal while the run was being opened
            with Heartbeat(tracker) if s.ranks.main else contextlib.nullcontext():
                evaluation = _train(s, tracker, guard, launch.progress)
                tracker.end("FINISHED")  # still under the guard: a late SIGTERM cannot cut this short
            if s.ranks.main:  # the log ends with what the run gave and how it ended
                print(evaluation_line(s.cell.id, evaluation.final, s.cfg.eval.headline,
                                      evaluation.evaluator.headline_metric), flush=True)
                print(f"{s.cell.id}: FINISHED at iteration {s.iteration} (run {s.run_id}, attempt {s.attempt}) "
                      f"at {clock()}", flush=True)
            if not getattr(tracker, "synced", True):
                print(f"{s.cell.id}: trained, but the tracking store is unreachable: its writes stay in "
                      f"{s.paths.spool} (marked unsynced); `harness sync SPEC` or the next `harness run` "
                      "sends them", file=sys.stderr, flush=True)
            return CellResult(Outcome.FINISHED, iteration=s.iteration, run_id=s.run_id, metrics=evaluation.final,
                              attempt=s.attempt)
        except BaseException as exc:
            return _ended(s, tracker, exc)


def _ended(s: Session, tracker, exc: BaseException) -> CellResult:
    """End the run after `exc` with its reason; the launch's result."""
    result = _result_of(s, exc)
    try:
        tracker.end("KILLED" if result.outcome is Outcome.KILLED else "FAILED", result.message)
    except Exception as end_exc:  # a full disk or a lost store: the scheduler reconciles the run later
        print(f"{s.cell.id}: could not record the run's end ({type(end_exc).__name__}: {end_exc})",
              file=sys.stderr, flush=True)
    if result.outcome is Outcome.CRASH or result.outcome is Outcome.KILLED and result.signal is None:
        traceback.print_exception(exc)
    state = "KILLED" if result.outcome is Outcome.KILLED else "FAILED"
    sys.stdout.flush()
    print(f"{s.cell.id}: {state} at iteration {s.iteration}" + (f" (run {s.run_id})" if s.run_id else "")
          + f" at {clock()}: {result.message}", file=sys.stderr, flush=True)
    return result


def _result_of(s: Session, exc: BaseException) -> CellResult:
    at = {"iteration": s.iteration, "run_id": s.run_id, "attempt": s.attempt}
    if isinstance(exc, Stop):
        return CellResult(Outcome.KILLED, str(exc), exc.signum, **at)
    if isinstance(exc, NonFiniteLoss | Unhealthy):  # no retry: resuming would only diverge again
        return CellResult(Outcome.DIVERGED if isinstance(exc, NonFiniteLoss) else Outcome.UNHEALTHY, str(exc), **at)
    if is_no_space(exc):
        full = exc if isinstance(exc, NoSpace) else NoSpace(getattr(exc, "filename", None) or s.paths.log)
        return CellResult(Outcome.NO_SPACE, full.strerror, **at)
    outcome = Outcome.KILLED if isinstance(exc, KeyboardInterrupt | SystemExit) else Outcome.CRASH
    return CellResult(outcome, f"{type(exc).__name__}: {exc}", **at)


def _start_run(s: Session, launch: Launch):
    """Open (or reopen) the cell's MLflow run; None when the checkpoint's run is finished."""
    cell, sched = s.cell, s.sched
    sent = sync_cell(s.paths.dir, launch.uri)  # an earlier attempt's writes that never reached the store
    if sent:
        print(f"{cell.id}: sent {sent} spooled tracking record(s) of an earlier attempt", flush=True)
    attempt = launch.attempt
    if s.run_id is not None:
        previous = previous_attempt(launch.uri, s.run_id)
        if previous.run_key != cell.run_key:  # a checkpoint naming another cell's run: never adopted
            raise UserError(Problem(str(s.paths.checkpoint), None, "", (
                f"this checkpoint resumes run {s.run_id}, which is another cell's (run key "
                f"{str(previous.run_key)[:12]}…); move the file aside, or run with --fresh")))
        if previous.status == "FINISHED" and s.start_iter >= sched.max_iter:
            print(f"{cell.id}: already finished (run {s.run_id})")
            return None
        attempt = attempt or previous.attempt + 1
        s.logged_until = previous.last_step
    workspace = workspace_tag(s.paths.workspace)
    s.attempt = attempt or 1
    tags = run_tags(cell, spec_file=launch.spec_file, attempt=s.attempt, world=s.ranks.world,
                    platform=platform_tag(s.device), commit=git_commit(), workspace=workspace, sweep=launch.sweep)
    tracker = MLflowTracker.start(launch.uri, cell.spec_name, cell.id, tags, workspace=s.paths.workspace,
                                  resume_run_id=s.run_id, spool_dir=s.paths.dir)
    s.run_id = tracker.run_id
    for run_id in end_abandoned(launch.uri, cell.spec_name, cell.run_key, workspace=workspace, keep=s.run_id,
                                reason=f"worker lost before its first checkpoint; run {s.run_id} trains the cell"):
        print(f"{cell.id}: run {run_id} was left RUNNING by a lost worker: ended KILLED", flush=True)
    tracker.log_params(run_params(cell, sched))
    if s.start_iter == 0:
        s.paths.make()
        write_text_atomic(s.paths.config, yaml.safe_dump(s.cfg.model_dump(mode="json"), sort_keys=False))
        tracker.log_artifact(s.paths.config)
    for line in schedule_lines(cell.id, s.cfg.train, sched):
        print(line, flush=True)
    metrics = s.cfg.tracking.system_metrics
    if s.device.type == "cuda" and metrics != "off" or metrics == "on":
        tracker.start_system_metrics()
    print(f"{cell.id}: run {s.run_id} ({'resumed at iteration ' + str(s.start_iter) if s.start_iter else 'new'}), "
          f"attempt {attempt or 1} in MLflow", flush=True)
    if s.logged_until > s.start_iter:
        print(f"{cell.id}: iterations {s.start_iter + 1}-{s.logged_until} were logged by the earlier attempt; "
              "their replay is not logged again", flush=True)
    return tracker


def _train(s: Session, tracker, guard: SignalGuard, progress: bool) -> Evaluation:
    cfg, ranks = s.cfg, s.ranks
    if cfg.model.backbone.pretrain is not None and s.start_iter == 0:  # a resumed cell has its weights
        tracker.set_tags({"harness.pretrain": load_pretrained(s)})
        if s.ema is not None:  # the average starts from the pre-trained weights
            s.ema.reset(unwrap(s.model))
    loader = train_loader(train_dataset(cfg.data, s.data.train, cfg.model.backbone.input_format),
                          cfg.train.ims_per_batch // ranks.world, seed=cfg.seed, rank=ranks.rank,
                          world_size=ranks.world, start_iter=s.start_iter, num_workers=cfg.data.num_workers,
                          divisibility=cfg.data.size_divisibility)
    evaluation = Evaluation(s, tracker)
    bar = Progress(s.sched.max_iter, s.start_iter, cfg.tracking.log_period, s.cell.id,
                   enabled=progress and ranks.main, file=s.paths.progress if ranks.main else None)
    first = (lambda: print(f"{s.cell.id}: first iteration at {clock()}", flush=True)) if ranks.main else None
    fit(s, iter(loader), LoopContext(guard, tracker, bar, lambda it: save_checkpoint(s, it), evaluation, first))
    if cfg.tracking.log_checkpoint and ranks.main:
        tracker.log_artifact(s.paths.checkpoint, "checkpoint")
    return evaluation
