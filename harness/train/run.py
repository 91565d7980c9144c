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
import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.distributed as dist
import yaml

from harness.data.build import eval_dataset, load_datasets, train_dataset
from harness.data.loader import eval_loader, train_loader
from harness.model.backbone import WeightsError
from harness.model.build import build_from_config
from harness.spec.errors import Problem, UserError
from harness.spec.matrix import Cell
from harness.track.mlflow_tracker import (
    MLflowTracker,
    NullTracker,
    client_for,
    flatten,
    git_commit,
    resolve_tracking_uri,
    sync_cell,
)
from harness.train import checkpoint as ckpt
from harness.train.engine import (
    NonFiniteLoss,
    Progress,
    Stop,
    WindowMeter,
    gather,
    predict,
    score,
    to_device,
    train_step,
    unwrap,
)
from harness.train.exit_codes import EXIT_BUSY, EXIT_DIVERGED, EXIT_FAILED, EXIT_UNHEALTHY
from harness.train.health import HealthMonitor, Unhealthy, build_monitor
from harness.train.lock import CellLock
from harness.train.optim import build_optimizer, build_scheduler, scaled_schedule

HEARTBEAT_S = float(os.environ.get("HARNESS_HEARTBEAT_S", "30"))


def cell_dir(workspace: str | Path, cell: Cell) -> Path:
    return Path(workspace) / cell.run_key


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
            raise Stop(f"killed by {signal.Signals(signum).name} (second signal)")
        self.signum = signum

    def check(self, iteration: int) -> None:
        if self.signum is not None:
            raise Stop(f"killed by {signal.Signals(self.signum).name} at iteration {iteration}")

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


def run_cell(cell: Cell, *, workspace: str | Path = "runs", tracking_uri: str | None = None,
             resume: bool | None = None, spec_file: str | None = None, attempt: int | None = None,
             progress: bool = True) -> int:
    """Train and evaluate one cell; returns the process exit code.

    resume: None = resume when the cell's checkpoint exists; True = must resume; False = start a
    fresh run (the old checkpoint is set aside).
    """
    rank = int(os.environ.get("RANK", "0"))
    if rank != 0:
        return _run_cell(cell, workspace=workspace, tracking_uri=tracking_uri, resume=resume,
                         spec_file=spec_file, attempt=attempt, progress=progress)
    resolve_tracking_uri(tracking_uri, workspace)
    lock = CellLock(cell_dir(workspace, cell) / "lock")
    if not lock.acquire():
        print(f"{cell.id}: being trained by another process (lock {lock.path}); not starting it twice",
              file=sys.stderr)
        return EXIT_BUSY
    try:
        return _run_cell(cell, workspace=workspace, tracking_uri=tracking_uri, resume=resume,
                         spec_file=spec_file, attempt=attempt, progress=progress)
    finally:
        lock.release()


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


def _run_cell(cell: Cell, *, workspace, tracking_uri, resume, spec_file, attempt, progress) -> int:
    cfg = cell.config
    rank, world, local_rank = _distributed()
    device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    workspace = Path(workspace)
    uri = resolve_tracking_uri(tracking_uri, workspace, check=False)  # checked by run_cell before the lock
    workspace.mkdir(parents=True, exist_ok=True)
    cdir = cell_dir(workspace, cell)
    ckpt_path = cdir / "checkpoint.pt"

    # ---- everything a user can get wrong, before any MLflow run exists
    if cfg.train.ims_per_batch % world:
        raise UserError(Problem(spec_file, None, "train.ims_per_batch",
                                f"{cfg.train.ims_per_batch} images do not split over {world} processes"))
    data = load_datasets(cfg.data, workspace / "cache")
    if len(data.info.class_names) != cfg.model.num_classes:
        raise UserError(Problem(spec_file, None, "model.num_classes",
                                f"{cfg.model.num_classes}, but the dataset has {len(data.info.class_names)} classes"))
    if cfg.eval.metrics != data.info.kind:
        raise UserError(Problem(spec_file, None, "eval.metrics",
                                f"{cfg.eval.metrics!r} needs {cfg.eval.metrics} annotations; this dataset has {data.info.kind}"))
    torch.manual_seed(cfg.seed)
    t_build = time.time()
    try:
        model = build_from_config(cfg).to(device)
    except WeightsError as exc:
        raise UserError(Problem(spec_file, None, "model.backbone.weights", str(exc))) from None
    if rank == 0:
        print(f"{cell.id}: model built in {time.time() - t_build:.2f} s", flush=True)
    sched = scaled_schedule(cfg.train, cfg.eval.period)
    optimizer = build_optimizer(model, cfg.train, sched.base_lr)
    scheduler = build_scheduler(optimizer, sched, cfg.train)
    amp_dtype, scaler = _amp(cfg.train, device)
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[local_rank] if device.type == "cuda" else None)

    health = build_monitor(cfg.train.health, max_iter=sched.max_iter, warmup_iters=sched.warmup_iters)
    start_iter, run_id = 0, None
    if resume is False and ckpt_path.exists() and rank == 0:
        os.replace(ckpt_path, ckpt_path.with_name(f"checkpoint.{int(time.time())}.old.pt"))
    if resume is not False and ckpt_path.exists():
        state = ckpt.load(ckpt_path)
        unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state["scaler"]:
            scaler.load_state_dict(state["scaler"])
        ckpt.set_rng_state(state["rng"])
        health.load_state_dict(state.get("health"))  # absent in checkpoints from before health
        start_iter, run_id = int(state["iteration"]), state["run_id"] or None
    elif resume:
        raise UserError(Problem(None, None, "--resume", f"no checkpoint for cell {cell.id} at {ckpt_path}"))

    # ---- the run
    tracker = NullTracker()
    if rank == 0:
        sent = sync_cell(cdir, uri)  # an earlier attempt's writes that never reached the store
        if sent:
            print(f"{cell.id}: sent {sent} spooled tracking record(s) of an earlier attempt", flush=True)
        if run_id is not None:
            previous = client_for(uri).get_run(run_id)
            if previous.info.status == "FINISHED" and start_iter >= sched.max_iter:
                print(f"{cell.id}: already finished (run {run_id})")
                return 0
            attempt = attempt or int(previous.data.tags.get("harness.attempt", "1")) + 1
        tags = {"harness.run_key": cell.run_key, "harness.row": cell.row, "harness.dataset": cell.dataset,
                "harness.seed": cell.seed, "harness.spec": spec_file or "", "harness.git_commit": git_commit(),
                "harness.attempt": attempt or 1, "harness.spec_name": cell.spec_name,
                "harness.host": os.uname().nodename, "harness.world_size": world}
        if os.environ.get("SLURM_JOB_ID"):
            tags["harness.slurm_job"] = os.environ["SLURM_JOB_ID"]
        if os.environ.get("HARNESS_PARENT_RUN_ID"):  # a sweep trial: a nested child run
            tags["mlflow.parentRunId"] = os.environ["HARNESS_PARENT_RUN_ID"]
            tags["harness.trial"] = os.environ.get("HARNESS_TRIAL", "")
            tags["harness.sweep"] = os.environ.get("HARNESS_SWEEP", "")
        tracker = MLflowTracker.start(uri, cell.spec_name, cell.id, tags, workspace=workspace, resume_run_id=run_id,
                                      spool_dir=cdir)
        run_id = tracker.run_id
        params = flatten(cfg.model_dump(mode="json"))
        params.update({"schedule.lr": sched.base_lr, "schedule.max_iter": sched.max_iter,
                       "schedule.steps": list(sched.steps), "schedule.warmup_iters": sched.warmup_iters,
                       "schedule.linear_scale": sched.scale})
        tracker.log_params(params)
        if start_iter == 0:
            cdir.mkdir(parents=True, exist_ok=True)
            (cdir / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
            tracker.log_artifact(cdir / "config.yaml")
        if sched.scale != 1.0:
            print(f"{cell.id}: linear scaling rule: batch {cfg.train.ims_per_batch} vs reference "
                  f"{cfg.train.reference_batch}: lr {cfg.train.base_lr} -> {sched.base_lr:g}, "
                  f"max_iter {cfg.train.max_iter} -> {sched.max_iter}")
        if torch.cuda.is_available() and cfg.tracking.system_metrics != "off" or cfg.tracking.system_metrics == "on":
            tracker.start_system_metrics()
        print(f"{cell.id}: run {run_id} ({'resumed at iteration ' + str(start_iter) if start_iter else 'new'})",
              flush=True)

    try:
        with SignalGuard() as guard, (Heartbeat(tracker) if rank == 0 else contextlib.nullcontext()):
            _train(cell, model, optimizer, scheduler, scaler, amp_dtype, data, sched, tracker, guard, health,
                   start_iter=start_iter, rank=rank, world=world, device=device, ckpt_path=ckpt_path,
                   run_id=run_id, cdir=cdir, progress=progress)
            tracker.end("FINISHED")  # still under the guard: a late SIGTERM cannot cut this short
        if not getattr(tracker, "synced", True):
            print(f"{cell.id}: trained, but the tracking store is unreachable: its writes stay in "
                  f"{cdir / 'spool.jsonl'} (marked unsynced); `harness sync SPEC` or the next `harness run` "
                  "sends them", file=sys.stderr, flush=True)
    except Stop as exc:
        tracker.end("KILLED", str(exc))
        print(f"{cell.id}: {exc}", file=sys.stderr)
        return 128 + (signal.SIGTERM if "SIGTERM" in str(exc) else signal.SIGINT)
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


def _train(cell, model, optimizer, scheduler, scaler, amp_dtype, data, sched, tracker, guard,
           health: HealthMonitor, *, start_iter, rank, world, device, ckpt_path, run_id, cdir, progress) -> None:
    cfg = cell.config
    per_rank = cfg.train.ims_per_batch // world
    loader = train_loader(train_dataset(cfg.data, data.train, cfg.model.backbone.input_format), per_rank,
                          seed=cfg.seed, rank=rank, world_size=world, start_iter=start_iter,
                          num_workers=cfg.data.num_workers, divisibility=cfg.data.size_divisibility)
    val = eval_loader(eval_dataset(cfg.data, data.val, cfg.model.backbone.input_format), rank=rank,
                      world_size=world, num_workers=cfg.data.num_workers, divisibility=cfg.data.size_divisibility)
    headline = "nms" if cfg.eval.nms else "nms_free"
    meter = WindowMeter()
    bar = Progress(sched.max_iter, start_iter, cfg.tracking.log_period, cell.id, enabled=progress and rank == 0)

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
        tracker.log_metrics({**{f"eval.{k}": v for k, v in metrics.items()}, "health.eval_dets": n_dets},
                            step=iteration)
        tracker.flush()
        if final:
            ext = "json" if cfg.eval.metrics == "coco" else "odgt"
            for key, results in files.items():
                path = cdir / f"detections_{key}.{ext}"
                with open(path, "w") as f:
                    if ext == "json":
                        json.dump(results, f)
                    else:
                        f.writelines(json.dumps(r) + "\n" for r in results)
                tracker.log_artifact(path, "detections")
            (cdir / "eval.json").write_text(json.dumps({"iteration": iteration, **metrics}, indent=1))
            tracker.log_artifact(cdir / "eval.json")
        if world > 1 and not health.check_eval(iteration, n_dets):  # the others wait for the verdict
            dist.broadcast_object_list([flag], src=0)
        if flag:
            raise Unhealthy(flag)

    model.train()
    iteration = start_iter
    data_iter = iter(loader)
    t_last = time.perf_counter()
    try:
        while iteration < sched.max_iter:
            guard.check(iteration)
            t0 = time.perf_counter()
            batch = to_device(next(data_iter), device)
            data_time = time.perf_counter() - t0
            values = train_step(model, batch, optimizer, scaler, iteration=iteration + 1, amp_dtype=amp_dtype,
                                clip_grad_norm=cfg.train.clip_grad_norm)
            scheduler.step()
            iteration += 1
            flag = health.update(iteration, values["total_loss"])  # the same value on every rank
            if iteration == start_iter + 1 and rank == 0:
                print(f"{cell.id}: first iteration at {time.time():.3f}", flush=True)
            values["data_time"] = data_time
            meter.add(values)
            if iteration % cfg.tracking.log_period == 0 or iteration == sched.max_iter:
                now = time.perf_counter()
                means = meter.means()
                means["lr"] = optimizer.param_groups[0]["lr"] / optimizer.param_groups[0].get("lr_mult", 1.0)
                means["iter_per_s"] = cfg.tracking.log_period / max(1e-9, now - t_last)
                t_last = now
                logged = {f"train.{k}": v for k, v in means.items()}
                if health.smoothed is not None:
                    logged["health.loss_ema"] = health.smoothed  # what the loss-ratio rule sees
                tracker.log_metrics(logged, step=iteration)
                tracker.flush()
                bar.update(iteration, {"loss": means["total_loss"], "lr": means["lr"]})
            if flag:
                if meter.count:  # the unlogged part of the window: the explosion shows in the metrics
                    tracker.log_metrics({f"train.{k}": v for k, v in meter.means().items()}, step=iteration)
                    tracker.flush()
                raise Unhealthy(flag)
            if iteration % sched.checkpoint_period == 0 and iteration < sched.max_iter:
                save(iteration)
            if sched.eval_period and iteration % sched.eval_period == 0 and iteration < sched.max_iter:
                evaluate(iteration, final=False)
    except (Stop, SystemExit):  # SystemExit: submitit stopping the job to requeue it
        save(iteration)  # the last completed iteration: a later run resumes from here
        raise
    finally:
        bar.close()
    save(iteration)
    evaluate(iteration, final=True)
    if cfg.tracking.log_checkpoint and rank == 0:
        tracker.log_artifact(ckpt_path, "checkpoint")
