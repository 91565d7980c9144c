"""Evaluation during training: predict on every rank, score on rank 0, log, and check health.

Every rank holds every image's detections (`gather`); rank 0 alone scores them, logs the
metrics and, at the end of training, writes the detections and `eval.json` (also as artifacts).
A health rule that fires raises `Unhealthy` on every rank: rank 0 broadcasts its verdict on
the quality rule, which only it can check.

Each evaluation also logs what the run cost (`harness.track.names.PERF_KEYS`, docs/metrics.md):
the peak training memory summed over the processes (CUDA: `max_memory_allocated`, read before
each evaluation and reset after it, so evaluation's own allocations never count; CPU: the
process's peak RSS) and the test time per image (`engine.InferenceTimer`, averaged over the processes'
timed images). Measuring changes no prediction.
"""

from __future__ import annotations

import resource
import sys

import torch
import torch.distributed as dist

from harness.data.build import eval_dataset
from harness.data.loader import eval_loader
from harness.evaluation.kinds import evaluator
from harness.formats.atomic import write_json, write_json_lines
from harness.track.names import logged_eval_metrics, perf_metrics
from harness.train.engine import InferenceTimer, gather, predict, score
from harness.train.health import Unhealthy
from harness.train.session import Session


class Evaluation:
    """`evaluation(iteration, final)`: one evaluation of the session's model on the val split."""

    def __init__(self, s: Session, tracker):
        cfg = s.cfg
        self.s, self.tracker = s, tracker
        self.headline, self.evaluator = cfg.eval.headline, evaluator(cfg.eval.metrics)
        self.loader = eval_loader(eval_dataset(cfg.data, s.data.val, cfg.model.backbone.input_format),
                                  rank=s.ranks.rank, world_size=s.ranks.world, num_workers=cfg.data.num_workers,
                                  divisibility=cfg.data.size_divisibility)
        self.final: dict[str, float] = {}  # the last evaluation's metrics (rank 0)
        self.train_peak = 0  # bytes: this process's peak training memory so far

    def __call__(self, iteration: int, final: bool) -> None:
        s, cfg = self.s, self.s.cfg
        self.train_peak = max(self.train_peak, peak_memory(s.device))
        timer = InferenceTimer(s.device)
        preds = gather(predict(s.evaluated, self.loader, s.device, drop_empty=cfg.eval.drop_empty, timer=timer))
        if s.device.type == "cuda":  # the next reading is training's alone
            torch.cuda.reset_peak_memory_stats(s.device)
        perf = self._perf(timer)  # a collective: every rank
        n_dets = sum(len(p["scores"]) for p in preds[self.headline])
        flag = s.health.check_eval(iteration, n_dets)
        if not s.ranks.main:
            if flag:
                raise Unhealthy(flag)
            if s.ranks.world > 1:  # rank 0 alone scores: it tells the others whether the AP rule fired
                verdict = [None]
                dist.broadcast_object_list(verdict, src=0)
                if verdict[0]:
                    raise Unhealthy(verdict[0])
            return
        metrics, files = score(preds, s.data.info, s.data.val, metrics=cfg.eval.metrics, backend=cfg.eval.backend,
                               headline=self.headline)
        flag = flag or s.health.check_quality(iteration, metrics[f"{self.headline}.{self.evaluator.headline_metric}"])
        self.tracker.log_metrics({**logged_eval_metrics(metrics), "health.eval_dets": n_dets, **perf}, step=iteration)
        self.tracker.flush()
        self.final = metrics
        if final:
            self._write(iteration, metrics, files)
        if s.ranks.world > 1 and not s.health.check_eval(iteration, n_dets):  # the others wait for the verdict
            dist.broadcast_object_list([flag], src=0)
        if flag:
            raise Unhealthy(flag)

    def _perf(self, timer: InferenceTimer) -> dict[str, float]:
        """The run's measured cost under its device's names: memory summed over the processes,
        time per image over every process's timed images."""
        seconds, images = timer.totals()
        sums = torch.tensor([float(self.train_peak), seconds, float(images)], dtype=torch.float64, device=self.s.device)
        if self.s.ranks.world > 1:
            dist.all_reduce(sums)
        peak, seconds, images = sums.tolist()
        return perf_metrics(self.s.device.type, memory_gb=peak / 2**30,
                            ms_per_image=1000 * seconds / images if images else None)

    def _write(self, iteration: int, metrics: dict, files: dict) -> None:
        """The final detections and metrics, in the cell's folder and as artifacts."""
        paths, ext = self.s.paths, self.evaluator.ext
        for key, results in files.items():
            path = paths.detections(key, ext)
            (write_json if ext == "json" else write_json_lines)(path, results)
            self.tracker.log_artifact(path, "detections")
        write_json(paths.eval_json, {"iteration": iteration, "headline": self.headline, **metrics}, indent=1)
        self.tracker.log_artifact(paths.eval_json)


def peak_memory(device: torch.device) -> int:
    """This process's peak memory in bytes: CUDA's peak allocated memory since its last reset,
    else the peak resident set size (`ru_maxrss`: KiB on Linux, bytes on macOS)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)
