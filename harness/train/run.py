"""`harness train`: one cell end to end. The only place that reads a config and talks to the
tracker (docs/architecture.md rules 2 and 7).

Order matters: everything a user can get wrong (data, weights, class count, tracking store) is
checked before an MLflow run exists, so bad input leaves nothing half-written. Once the run
exists it always ends FINISHED, FAILED (exception; divergence: a non-finite loss or a
train.health rule, reason "diverged: ...") or KILLED (signal), with the reason in the
`harness.failure` tag.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import yaml

from harness.data.build import Datasets, eval_dataset, load_datasets, train_dataset
from harness.data.loader import eval_loader, train_loader
from harness.data.synthetic import synthetic_kind
from harness.formats.atomic import write_json, write_json_lines, write_text_atomic
from harness.model.backbone import WeightsError
from harness.model.build import build_from_config
from harness.spec.errors import Problem, UserError
from harness.spec.matrix import Cell
from harness.spec.workspace import CellPaths, cache_folder
from harness.track.mlflow_tracker import (
    MLflowTracker,
    NullTracker,
    git_commit,
    sync_cell,
)
from harness.track.names import axis_tags, cell_params, logged_eval_metrics
from harness.track.runs import previous_attempt
from harness.train import checkpoint as ckpt
from harness.train.engine import (
    NonFiniteLoss,
    Progress,
    Stop,
    fit,
    gather,
    predict,
    score,
    unwrap,
)
from harness.train.exit_codes import EXIT_BUSY, EXIT_DIVERGED, EXIT_FAILED, EXIT_UNHEALTHY, ExitCode
from harness.train.health import HealthMonitor, Unhealthy, build_monitor
from harness.train.lock import CellLock
from harness.train.optim import build_optimizer, build_scheduler, scaled_schedule
from harness.train.platform import platform_tag
from harness.train.pretrain import pretrained_backbone

HEARTBEAT_S = float(os.environ.get("HARNESS_HEARTBEAT_S", "30"))


class SignalGuard:
    """SIGTERM / SIGINT set a flag the loop checks between iterations; a second one raises."""

    def __init__(self):
        self.signum: int | None = None
        self._old = {}

    def __enter__(self):
        for s in (signal.SIGTERM, signal.SIGINT):
            self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signum is not None:
            raise Stop(f"killed by {signal.Signals(signum).name} (second signal)", signum)
        self.signum = signum

    def check(self, iteration: int) -> None:
        if self.signum is not None:
            raise Stop(f"killed by {signal.Signals(self.signum).name} at iteration {iteration}", self.signum)

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)
        return False


def _distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank); initialises the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def _amp(train, device) -> tuple[torch.dtype | None, torch.amp.GradScaler | None]:
    if not train.amp or device.type != "cuda":
        return None, None  # CPU: full precision
    if torch.cuda.is_bf16_supported():
        return torch.bfloat16, None
    return torch.float16, torch.amp.GradScaler("cuda")


def run_cell(cell: Cell, *, uri: str, workspace: str | Path = "runs",
             resume: bool | None = None, spec_file: str | None = None, attempt: int | None = None,
             progress: bool = True, sweep: dict | None = None) -> int:
    """Train and evaluate one cell; returns the process exit code.

    resume: None = resume when the cell's checkpoint exists; True = must resume; False = start a
    fresh run (the old checkpoint is set aside). sweep: a sweep trial's parent_run, trial and sweep
    (its run becomes a nested child of the sweep's run).

    uri: the tracking store, resolved and checked at the edge (`harness train`'s command line, or
    the scheduler that launched the job). Everything else a user can get wrong (data files, class
    count, weights file, checkpoint) is checked by `_prepare` before the lock, the data cache or
    the run exist, so bad input writes nothing.
    """
    rank = int(os.environ.get("RANK", "0"))
    prepared = _prepare(cell, workspace=Path(workspace), resume=resume, spec_file=spec_file)
    if rank != 0:
        return _run_cell(cell, prepared, workspace=workspace, uri=uri, resume=resume,
                         spec_file=spec_file, attempt=attempt, progress=progress, sweep=sweep)
    lock = CellLock(CellPaths.of(workspace, cell.run_key).lock)
    if not lock.acquire():
        print(f"{cell.id}: being trained by another process (lock {lock.path}); not starting it twice",
              file=sys.stderr)
        return EXIT_BUSY
    try:
        return _run_cell(cell, prepared, workspace=workspace, uri=uri, resume=resume,
                         spec_file=spec_file, attempt=attempt, progress=progress, sweep=sweep)
    finally:
        lock.release()


@dataclass
class _Prepared:
    """A cell's pieces, built and checked before anything is written."""

    data: Datasets | None  # None: the synthetic dataset, generated into the cache under the lock
    model: torch.nn.Module  # not yet wrapped in DDP
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: torch.amp.GradScaler | None
    amp_dtype: torch.dtype | None
    sched: object
    health: HealthMonitor
    device: torch.device
    checkpoint: tuple | None = None  # the (inode, size, mtime) of the checkpoint loaded, if any
    start_iter: int = 0
    run_id: str | None = None


def _ckpt_stamp(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _load_checkpoint(path: Path, p: _Prepared) -> None:
    """Restore model, optimizer, schedule, scaler, RNG and health from `path` into `p`; a file
    that cannot be read or does not fit the cell is one clear error saying how to go on."""
    stamp = _ckpt_stamp(path)
    try:
        state = ckpt.load(path)
        unwrap(p.model).load_state_dict(state["model"])
        p.optimizer.load_state_dict(state["optimizer"])
        p.scheduler.load_state_dict(state["scheduler"])
        if p.scaler is not None and state["scaler"]:
            p.scaler.load_state_dict(state["scaler"])
        ckpt.set_rng_state(state["rng"])
        p.health.load_state_dict(state.get("health"))  # absent in checkpoints from before health
        start_iter, run_id = int(state["iteration"]), state["run_id"] or None
        if not isinstance(run_id, str | None):
            raise TypeError(f"run_id is {type(run_id).__name__}")
    except Exception as exc:  # truncated, not a checkpoint, refused by weights_only, another model
        first = (str(exc).strip().splitlines() or [""])[0].split(". ")[0][:160]
        raise UserError(Problem(str(path), None, "", (
            f"cannot resume from this checkpoint ({type(exc).__name__}{': ' + first if first else ''}); "
            "move the file aside to keep it, or run `harness train` with --fresh to set it aside "
            "and start the cell again"))) from None
    p.checkpoint, p.start_iter, p.run_id = stamp, start_iter, run_id


def _prepare(cell: Cell, *, workspace: Path, resume, spec_file) -> _Prepared:
    """Check the inputs and build the model, optimizer and schedule; writes nothing."""
    cfg = cell.config
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if cfg.train.ims_per_batch % world:
        raise UserError(Problem(spec_file, None, "train.ims_per_batch",
                                f"{cfg.train.ims_per_batch} images do not split over {world} processes"))
    if cfg.data.name == "synthetic":  # generated on first use: checked without generating it
        data = None
        kind, classes = synthetic_kind(cfg.data.synthetic.format)
    else:
        data = load_datasets(cfg.data, cache_folder(workspace))
        kind, classes = data.info.kind, len(data.info.class_names)
    if classes != cfg.model.num_classes:
        raise UserError(Problem(spec_file, None, "model.num_classes",
                                f"{cfg.model.num_classes}, but the dataset has {classes} classes"))
    if cfg.eval.metrics != kind:
        raise UserError(Problem(spec_file, None, "eval.metrics",
                                f"{cfg.eval.metrics!r} needs {cfg.eval.metrics} annotations; this dataset has {kind}"))
    torch.manual_seed(cfg.seed)
    t_build = time.time()
    try:
        model = build_from_config(cfg).to(device)
    except WeightsError as exc:
        raise UserError(Problem(spec_file, None, "model.backbone.weights", str(exc))) from None
    if cfg.train.channels_last:
        model = model.to_channels_last()
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"{cell.id}: model built in {time.time() - t_build:.2f} s", flush=True)
    sched = scaled_schedule(cfg.train, cfg.eval.period)
    optimizer = build_optimizer(model, cfg.train, sched.base_lr)
    scheduler = build_scheduler(optimizer, sched, cfg.train)
    amp_dtype, scaler = _amp(cfg.train, device)
    health = build_monitor(cfg.train.health, max_iter=sched.max_iter, warmup_iters=sched.warmup_iters)
    p = _Prepared(data, model, optimizer, scheduler, scaler, amp_dtype, sched, health, device)
    ckpt_path = CellPaths.of(workspace, cell.run_key).checkpoint
    if resume is not False and ckpt_path.exists():
        _load_checkpoint(ckpt_path, p)
    elif resume:
        raise UserError(Problem(None, None, "--resume", f"no checkpoint for cell {cell.id} at {ckpt_path}"))
    return p


class Heartbeat:
    """Refreshes the run's `harness.heartbeat` tag (the lease seen from MLflow)."""

    def __init__(self, tracker, period: float = HEARTBEAT_S):
        import threading

        self.tracker, self.period = tracker, period
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self.stop_event.wait(self.period):
            with contextlib.suppress(Exception):  # a missed beat is not worth killing the run
                self.tracker.set_tags({"harness.heartbeat": int(time.time())})

    def __enter__(self):
        self.tracker.set_tags({"harness.heartbeat": int(time.time())})
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_event.set()
        return False


def _run_cell(cell: Cell, p: _Prepared, *, workspace, uri, resume, spec_file, attempt, progress,
              sweep=None) -> int:
    cfg = cell.config
    rank, world, local_rank = _distributed()
    device = p.device
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    workspace = Path(workspace)
    workspace.mkdir(parents=True, exist_ok=True)
    paths = CellPaths.of(workspace, cell.run_key)
    ckpt_path = paths.checkpoint

    # ---- under the lock: the data cache, the checkpoint as it is now
    data = p.data
    if data is None:
        data = load_datasets(cfg.data, cache_folder(workspace))
    model, optimizer, scheduler, scaler, amp_dtype = p.model, p.optimizer, p.scheduler, p.scaler, p.amp_dtype
    sched, health = p.sched, p.health
    if resume is False and ckpt_path.exists() and rank == 0:
        os.replace(ckpt_path, paths.set_aside(int(time.time())))
    if resume is not False and _ckpt_stamp(ckpt_path) != p.checkpoint:  # written since _prepare read it
        if ckpt_path.exists():
            _load_checkpoint(ckpt_path, p)
        elif resume:
            raise UserError(Problem(None, None, "--resume", f"no checkpoint for cell {cell.id} at {ckpt_path}"))
    start_iter, run_id = p.start_iter, p.run_id
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[local_rank] if device.type == "cuda" else None)

    # ---- the run
    tracker = NullTracker()
    if rank == 0:
        sent = sync_cell(paths.dir, uri)  # an earlier attempt's writes that never reached the store
        if sent:
            print(f"{cell.id}: sent {sent} spooled tracking record(s) of an earlier attempt", flush=True)
        if run_id is not None:
            status, previous = previous_attempt(uri, run_id)
            if status == "FINISHED" and start_iter >= sched.max_iter:
                print(f"{cell.id}: already finished (run {run_id})")
                return 0
            attempt = attempt or previous + 1
        tags = {"harness.run_key": cell.run_key, "harness.row": cell.row, "harness.dataset": cell.dataset,
                "harness.seed": cell.seed, "harness.spec": spec_file or "", "harness.git_commit": git_commit(),
                "harness.attempt": attempt or 1, "harness.spec_name": cell.spec_name,
                "harness.host": os.uname().nodename, "harness.world_size": world,
                "harness.platform": platform_tag(device),
                "harness.headline": "nms" if cfg.eval.nms else "nms_free", **axis_tags(cell.picks)}
        if os.environ.get("SLURM_JOB_ID"):
            tags["harness.slurm_job"] = os.environ["SLURM_JOB_ID"]
        if sweep:  # a sweep trial: a nested child run
            tags["mlflow.parentRunId"] = sweep["parent_run"]
            tags["harness.trial"] = sweep["trial"]
            tags["harness.sweep"] = sweep["sweep"]
        tracker = MLflowTracker.start(uri, cell.spec_name, cell.id, tags, workspace=workspace, resume_run_id=run_id,
                                      spool_dir=paths.dir)
        run_id = tracker.run_id
        params = cell_params(cfg.model_dump(mode="json"), slurm=bool(os.environ.get("SLURM_JOB_ID")))
        if sched.scale != 1.0:  # the schedule actually trained differs from train.*: say how
            params.update({"schedule.lr": sched.base_lr, "schedule.max_iter": sched.max_iter,
                           "schedule.steps": list(sched.steps), "schedule.warmup_iters": sched.warmup_iters,
                           "schedule.linear_scale": sched.scale})
        tracker.log_params(params)
        if start_iter == 0:
            paths.make()
            write_text_atomic(paths.config, yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
            tracker.log_artifact(paths.config)
        if sched.scale != 1.0:
            print(f"{cell.id}: linear scaling rule: batch {cfg.train.ims_per_batch} vs reference "
                  f"{cfg.train.reference_batch}: lr {cfg.train.base_lr} -> {sched.base_lr:g}, "
                  f"max_iter {cfg.train.max_iter} -> {sched.max_iter}")
        if torch.cuda.is_available() and cfg.tracking.system_metrics != "off" or cfg.tracking.system_metrics == "on":
            tracker.start_system_metrics()
        print(f"{cell.id}: run {run_id} ({'resumed at iteration ' + str(start_iter) if start_iter else 'new'}), "
              f"attempt {attempt or 1} in MLflow", flush=True)

    try:
        with SignalGuard() as guard, (Heartbeat(tracker) if rank == 0 else contextlib.nullcontext()):
            _train(cell, model, optimizer, scheduler, scaler, amp_dtype, data, sched, tracker, guard, health,
                   start_iter=start_iter, rank=rank, world=world, device=device, ckpt_path=ckpt_path,
                   run_id=run_id, paths=paths, progress=progress)
            tracker.end("FINISHED")  # still under the guard: a late SIGTERM cannot cut this short
        if not getattr(tracker, "synced", True):
            print(f"{cell.id}: trained, but the tracking store is unreachable: its writes stay in "
                  f"{paths.spool} (marked unsynced); `harness sync SPEC` or the next `harness run` "
                  "sends them", file=sys.stderr, flush=True)
    except Stop as exc:
        tracker.end("KILLED", str(exc))
        print(f"{cell.id}: {exc}", file=sys.stderr)
        return ExitCode.killed(exc.signum)
    except NonFiniteLoss as exc:
        tracker.end("FAILED", str(exc))
        print(f"{cell.id}: FAILED: {exc}", file=sys.stderr)
        return EXIT_DIVERGED
    except Unhealthy as exc:  # no checkpoint: resuming would only diverge again
        tracker.end("FAILED", str(exc))
        print(f"{cell.id}: FAILED: {exc}", file=sys.stderr)
        return EXIT_UNHEALTHY
    except BaseException as exc:
        reason = f"{type(exc).__name__}: {exc}"
        tracker.end("KILLED" if isinstance(exc, (KeyboardInterrupt, SystemExit)) else "FAILED", reason)
        traceback.print_exc()
        return EXIT_FAILED
    return 0


def _load_pretrained(cell, model, tracker, *, rank, world, device, cache_dir) -> None:
    """Replace the tiny backbone's random draw by the workspace's shared pre-training."""
    def log(msg: str) -> None:
        print(f"{cell.id}: {msg}", flush=True)

    if rank == 0:
        state, path = pretrained_backbone(cell.config, cache_dir, device=device, log=log)
    if world > 1:  # rank 0 trains (or finds) it; the others read the file it leaves
        dist.barrier()
    if rank != 0:
        state, path = pretrained_backbone(cell.config, cache_dir, device=device, log=log)
    model.backbone.load_state_dict(state)
    tracker.set_tags({"harness.pretrain": Path(path).stem})


def _train(cell, model, optimizer, scheduler, scaler, amp_dtype, data, sched, tracker, guard,
           health: HealthMonitor, *, start_iter, rank, world, device, ckpt_path, run_id, paths, progress) -> None:
    cfg = cell.config
    per_rank = cfg.train.ims_per_batch // world
    if cfg.model.backbone.pretrain is not None and start_iter == 0:  # a resumed cell has its weights
        _load_pretrained(cell, unwrap(model), tracker, rank=rank, world=world, device=device,
                         cache_dir=paths.cache)
    loader = train_loader(train_dataset(cfg.data, data.train, cfg.model.backbone.input_format), per_rank,
                          seed=cfg.seed, rank=rank, world_size=world, start_iter=start_iter,
                          num_workers=cfg.data.num_workers, divisibility=cfg.data.size_divisibility)
    val = eval_loader(eval_dataset(cfg.data, data.val, cfg.model.backbone.input_format), rank=rank,
                      world_size=world, num_workers=cfg.data.num_workers, divisibility=cfg.data.size_divisibility)
    headline = "nms" if cfg.eval.nms else "nms_free"
    bar = Progress(sched.max_iter, start_iter, cfg.tracking.log_period, cell.id, enabled=progress and rank == 0,
                   file=paths.progress if rank == 0 else None)

    def save(iteration: int) -> None:
        if rank == 0:
            ckpt.save(ckpt_path, model=unwrap(model), optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                      iteration=iteration, run_id=run_id, run_key=cell.run_key, health=health.state_dict())

    def evaluate(iteration: int, final: bool) -> None:
        # every rank holds every image's detections
        preds = gather(predict(model, val, device, drop_empty=cfg.eval.drop_empty))
        n_dets = sum(len(p["scores"]) for p in preds[headline])
        flag = health.check_eval(iteration, n_dets)
        if rank != 0:
            if flag:
                raise Unhealthy(flag)
            if world > 1:  # rank 0 alone scores: it tells the others whether the AP rule fired
                verdict = [None]
                dist.broadcast_object_list(verdict, src=0)
                if verdict[0]:
                    raise Unhealthy(verdict[0])
            return
        metrics, files = score(preds, data.info, data.val, metrics=cfg.eval.metrics, backend=cfg.eval.backend,
                               headline=headline)
        flag = flag or health.check_quality(iteration, metrics["ap" if cfg.eval.metrics == "coco" else "ap50"])
        tracker.log_metrics({**logged_eval_metrics(metrics), "health.eval_dets": n_dets}, step=iteration)
        tracker.flush()
        if final:
            ext = "json" if cfg.eval.metrics == "coco" else "odgt"
            for key, results in files.items():
                path = paths.detections(key, ext)
                (write_json if ext == "json" else write_json_lines)(path, results)
                tracker.log_artifact(path, "detections")
            write_json(paths.eval_json, {"iteration": iteration, "headline": headline, **metrics}, indent=1)
            tracker.log_artifact(paths.eval_json)
        if world > 1 and not health.check_eval(iteration, n_dets):  # the others wait for the verdict
            dist.broadcast_object_list([flag], src=0)
        if flag:
            raise Unhealthy(flag)

    def first_iteration() -> None:
        if rank == 0:
            print(f"{cell.id}: first iteration at {time.time():.3f}", flush=True)

    fit(model, optimizer, scheduler, scaler, iter(loader), sched=sched, start_iter=start_iter, device=device,
        amp_dtype=amp_dtype, clip_grad_norm=cfg.train.clip_grad_norm, log_period=cfg.tracking.log_period,
        guard=guard, health=health, tracker=tracker, bar=bar, save=save, evaluate=evaluate,
        first_iteration=first_iteration)
    if cfg.tracking.log_checkpoint and rank == 0:
        tracker.log_artifact(ckpt_path, "checkpoint")
