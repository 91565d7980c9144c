"""The training loop and evaluation, as free functions read top to bottom (docs/architecture.md rule 6)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

from harness.data.transforms import nonempty, to_original
from harness.evaluation.kinds import evaluator
from harness.train.health import Unhealthy

if TYPE_CHECKING:
    from harness.train.session import Session


class NonFiniteLoss(RuntimeError):
    def __init__(self, term: str, iteration: int, value: float):
        super().__init__(f"diverged: non-finite loss {term} = {value} at iteration {iteration}")
        self.term, self.iteration, self.value = term, iteration, value


class Stop(RuntimeError):
    """A signal asked the run to stop; raised between iterations. `signum`: that signal."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


def unwrap(model):
    return model.module if hasattr(model, "module") else model


def to_device(batch: dict, device: torch.device) -> dict:
    return {**batch, "images": batch["images"].to(device, non_blocking=True),
            "targets": [{k: v.to(device) for k, v in t.items()} for t in batch["targets"]]}


def train_step(model, batch: dict, optimizer, scaler, *, iteration: int, amp_dtype=None,
               clip_grad_norm: float | None = None, collective: bool = True) -> dict[str, float]:
    """One optimisation step; returns the loss terms and their total as floats.

    collective=False: the logged values are this process's own, never averaged over DDP ranks
    (a step that only one rank takes, as the backbone pre-training in harness/train/pretrain.py)."""
    ctx = torch.autocast(device_type=batch["images"].device.type, dtype=amp_dtype) if amp_dtype else nullcontext()
    with ctx:
        losses = model(batch["images"], batch["image_sizes"], batch["targets"])
    total = sum(losses.values())
    values = _logged({**{k: v.detach() for k, v in losses.items()}, "total_loss": total.detach()}, collective)
    for term, value in values.items():
        if not math.isfinite(value):
            raise NonFiniteLoss(term, iteration, value)
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(total).backward()
        scaler.unscale_(optimizer)
    else:
        total.backward()
    if clip_grad_norm:
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], clip_grad_norm)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return values


def _logged(losses: dict[str, torch.Tensor], collective: bool = True) -> dict[str, float]:
    """Loss values for logging: under DDP the mean over processes, which equals the loss of
    one process holding the whole batch (each process divides by the batch's total)."""
    keys = sorted(losses)
    stacked = torch.stack([losses[k].float() for k in keys])
    if collective and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(stacked)
        stacked /= dist.get_world_size()
    return dict(zip(keys, stacked.tolist(), strict=True))


class Progress:
    """A progress bar on a terminal; plain lines every `period` iterations otherwise.

    With `file`, it also keeps a small JSON progress file up to date (replaced atomically, at
    most about once a second): the live table of `harness run` reads it.
    """

    FILE_PERIOD_S = 1.0

    def __init__(self, total: int, start: int, period: int, label: str, enabled: bool = True,
                 file: Path | None = None):
        self.total, self.period, self.label, self.enabled = total, period, label, enabled
        self.t0, self.start = time.perf_counter(), start
        self.bar = None
        self.file, self._written, self._info = file, -math.inf, {}
        self.tick(start)
        if enabled and sys.stdout.isatty():
            from rich.progress import BarColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self.bar = RichProgress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                                    TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
            self.task = self.bar.add_task(label, total=total, completed=start, info="")
            self.bar.start()

    def eta(self, iteration: int) -> float:
        done = iteration - self.start
        rate = done / max(1e-9, time.perf_counter() - self.t0)
        return (self.total - iteration) / rate if rate > 0 else float("nan")

    def tick(self, iteration: int, force: bool = False) -> None:
        """Rewrite the progress file (iteration, total, ETA, last loss) when a second has passed."""
        now = time.perf_counter()
        if self.file is None or not (force or now - self._written >= self.FILE_PERIOD_S):
            return
        self._written = now
        eta = self.eta(iteration)
        state = {"iteration": iteration, "total": self.total, "eta_s": None if math.isnan(eta) else round(eta, 1),
                 "pid": os.getpid(), "time": time.time(), **self._info}
        tmp = self.file.with_name(self.file.name + f".{os.getpid()}.tmp")
        with contextlib.suppress(OSError):  # the live table is a convenience: never stop training for it
            tmp.write_text(json.dumps(state))
            os.replace(tmp, self.file)

    def update(self, iteration: int, info: dict[str, float]) -> None:
        self._info = {k: v for k, v in info.items() if math.isfinite(v)}
        self.tick(iteration, force=iteration == self.total)
        if not self.enabled:
            return
        text = " ".join(f"{k}={v:.4g}" for k, v in info.items())
        if self.bar is not None:
            self.bar.update(self.task, completed=iteration, info=text)
        elif iteration % self.period == 0 or iteration == self.total:
            eta = self.eta(iteration)
            print(f"[{self.label}] iter {iteration}/{self.total} {text} eta {eta:.0f}s", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


class WindowMeter:
    """Means of the values logged since the last flush."""

    def __init__(self):
        self.sums: dict[str, float] = defaultdict(float)
        self.count = 0

    def add(self, values: dict[str, float]) -> None:
        for k, v in values.items():
            self.sums[k] += v
        self.count += 1

    def means(self) -> dict[str, float]:
        out = {k: v / max(1, self.count) for k, v in self.sums.items()}
        self.sums.clear()
        self.count = 0
        return out


# ---------------------------------------------------------------------------- evaluation


class InferenceTimer:
    """Wall time of the model's `detect` (forward and both post-processings) per test image, at
    the loader's batch size: every batch is timed (CUDA synchronized before each reading of the
    clock) and `per_image` leaves out the first `warmup` images' batches, keeping at least the
    last batch. Timing changes no detection."""

    WARMUP_IMAGES = 5

    def __init__(self, device: torch.device, warmup: int = WARMUP_IMAGES):
        self.device, self.warmup = device, warmup
        self.batches: list[tuple[float, int]] = []  # (seconds, images) per batch, in order

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextlib.contextmanager
    def batch(self, images: int):
        self._sync()
        t0 = time.perf_counter()
        yield
        self._sync()
        self.batches.append((time.perf_counter() - t0, images))

    def totals(self) -> tuple[float, int]:
        """(seconds, images) of the batches after the warm-up."""
        skipped, start = 0, 0
        while start < len(self.batches) - 1 and skipped < self.warmup:
            skipped += self.batches[start][1]
            start += 1
        kept = self.batches[start:]
        return sum(t for t, _ in kept), sum(n for _, n in kept)


@torch.no_grad()
def predict(model, loader, device, *, drop_empty: bool = True, timer: InferenceTimer | None = None) -> dict[str, list[dict]]:
    """Detections of this process's images, in original coordinates, for both postprocesses;
    drop_empty (detectron2/cvpods) drops the boxes left empty by clipping; `timer` times each
    batch's `detect`."""
    net = unwrap(model)
    was_training = net.training
    net.eval()
    out: dict[str, list[dict]] = {"nms": [], "nms_free": []}
    for batch in loader:
        images = batch["images"].to(device)
        with timer.batch(images.shape[0]) if timer is not None else nullcontext():
            dets = net.detect(images, batch["image_sizes"])
        placements = batch.get("placements") or [None] * len(dets)  # letterboxed images: offset, scale
        for i, d in enumerate(dets):
            for key in out:
                boxes, scores, labels = d[key]
                boxes = to_original(boxes.float().cpu(), batch["image_sizes"][i], batch["orig_sizes"][i],
                                    placements[i])
                scores, labels = scores.float().cpu(), labels.cpu()
                if drop_empty:
                    keep = nonempty(boxes)
                    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
                out[key].append({"image_id": batch["image_ids"][i], "boxes": boxes.tolist(),
                                 "scores": scores.tolist(), "labels": labels.tolist()})
    net.train(was_training)
    return out


def gather(preds: dict[str, list[dict]]) -> dict[str, list[dict]]:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return preds
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, preds)
    return {k: [p for part in parts for p in part[k]] for k in preds}


def score(preds: dict[str, list[dict]], info, val_records, *, metrics: str, backend: str, headline: str):
    """Each postprocess's predictions scored by the `metrics` evaluator (harness/evaluation/kinds.py):
    the metrics as `<mode>.<name>` (eval.json's names; `harness.track.names.logged_eval_metrics`
    logs them), the `headline` mode's also as `<name>`; and each mode's detections file records."""
    ev = evaluator(metrics)
    out: dict[str, float] = {}
    files: dict[str, list] = {}
    for mode, items in preds.items():
        values, files[mode] = ev.score(items, info, val_records, backend=backend)
        for name, v in values.items():
            out[f"{mode}.{name}"] = float(v)
            if mode == headline:
                out[name] = float(v)
    return out, files


@dataclass
class LoopContext:
    """What the loop calls besides the step: the stop check, the tracker, the progress bar, and
    the checkpoint and evaluation of the cell (`save(iteration)`, `evaluate(iteration, final)`)."""

    guard: object
    tracker: object
    bar: Progress
    save: Callable[[int], None]
    evaluate: Callable[[int, bool], None]
    first_iteration: Callable[[], None] | None = None


def fit(s: Session, batches, loop: LoopContext) -> int:
    """The training loop, top to bottom; returns the last iteration (also kept in `s.iteration`).

    Each iteration: stop if a signal arrived (`guard`), take a batch, one optimisation step, one
    schedule step, feed the loss to the health rules, log the window's means every `log_period`
    iterations, then checkpoint (`save`) and evaluate (`evaluate(iteration, final=False)`) on
    their periods. A stop (a signal, or submitit requeueing the job) saves the last completed
    iteration and re-raises; a health flag raises `Unhealthy` after logging what led to it. At
    the end: the last checkpoint, then the final evaluation. Iterations up to `s.logged_until`
    (a resume from a checkpoint older than what the run logged) are trained but neither logged
    nor evaluated again: each step of the run's history has one value.
    """
    model, optimizer, sched, health, tracker = s.model, s.optimizer, s.sched, s.health, loop.tracker
    log_period, start_iter = s.cfg.tracking.log_period, s.start_iter
    model.train()
    iteration = s.iteration = start_iter
    meter = WindowMeter()
    t_last = time.perf_counter()
    try:
        while iteration < sched.max_iter:
            loop.guard.check(iteration)
            t0 = time.perf_counter()
            batch = to_device(next(batches), s.device)
            data_time = time.perf_counter() - t0
            values = train_step(model, batch, optimizer, s.scaler, iteration=iteration + 1, amp_dtype=s.amp_dtype,
                                clip_grad_norm=s.cfg.train.clip_grad_norm)
            if s.ema is not None:  # after every optimizer step, as the unofficial FCOS
                s.ema.update(unwrap(model))
            s.scheduler.step()
            iteration = s.iteration = iteration + 1
            flag = health.update(iteration, values["total_loss"])  # the same value on every rank
            loop.bar.tick(iteration)
            if iteration == start_iter + 1 and loop.first_iteration is not None:
                loop.first_iteration()
            values["data_time"] = data_time
            meter.add(values)
            if (iteration % log_period == 0 or iteration == sched.max_iter) and iteration <= s.logged_until:
                meter.means()  # a replayed window: the earlier attempt logged it (docs/architecture.md)
                t_last = time.perf_counter()
            elif iteration % log_period == 0 or iteration == sched.max_iter:
                now = time.perf_counter()
                means = log_window(tracker, meter, optimizer, health, iteration,
                                   iter_per_s=log_period / max(1e-9, now - t_last))
                t_last = now
                loop.bar.update(iteration, {"loss": means["total_loss"], "lr": means["lr"]})
            if flag:
                if meter.count:  # the unlogged part of the window: the explosion shows in the metrics
                    tracker.log_metrics({f"train.{k}": v for k, v in meter.means().items()}, step=iteration)
                    tracker.flush()
                raise Unhealthy(flag)
            if iteration % sched.checkpoint_period == 0 and iteration < sched.max_iter:
                loop.save(iteration)
            if (sched.eval_period and iteration % sched.eval_period == 0 and s.logged_until < iteration < sched.max_iter):
                loop.evaluate(iteration, False)
    except (Stop, SystemExit):  # SystemExit: submitit stopping the job to requeue it
        loop.save(iteration)  # the last completed iteration: a later run resumes from here
        raise
    finally:
        loop.bar.close()
    loop.save(iteration)
    loop.evaluate(iteration, True)
    return iteration


def log_window(tracker, meter: WindowMeter, optimizer, health, iteration: int, *, iter_per_s: float) -> dict:
    """Log the window's means (and lr, speed, the smoothed loss the health rule sees); returns them."""
    means = meter.means()
    group = optimizer.param_groups[0]
    means["lr"] = group["lr"] / group.get("lr_mult", 1.0)
    means["iter_per_s"] = iter_per_s
    logged = {f"train.{k}": v for k, v in means.items()}
    if health.smoothed is not None:
        logged["health.loss_ema"] = health.smoothed  # what the loss-ratio rule sees
    tracker.log_metrics(logged, step=iteration)
    tracker.flush()
    return means
