"""The local backend: GPU slots (or CPU jobs) on this machine, one subprocess per launch.

Each launch is a `TrainJob` started as `python -m harness train --job FILE` (torchrun
--standalone for multi-GPU cells) with its own disjoint CUDA_VISIBLE_DEVICES, its output appended
to the cell's log.txt, and OMP_WAIT_POLICY=PASSIVE unless the user set it. The queue, the
retries and the signals are the pool's (`harness.schedule.pool`), the same as on Slurm.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from harness.schedule.backend import Handle, Submission
from harness.train.result import CellResult, launch_result


def discover_gpus() -> list[str]:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d for d in (x.strip() for x in env.split(",")) if d and d != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:
        return []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def job_env(gpus: list[str], threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus) if gpus else ""
    env.setdefault("OMP_NUM_THREADS", str(threads))
    env["MASTER_PORT"] = str(free_port())
    env["PYTHONUNBUFFERED"] = "1"
    return env


def log_header(log: Path, text: str) -> None:
    with open(log, "a") as f:
        f.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")


def _header(submission: Submission) -> str:
    trial = submission.job.sweep
    return (f"launch {submission.attempt}" + (f" of trial {trial.trial}" if trial else "")
            + " by this scheduler (the run's attempt in MLflow follows)")


class LocalBackend:
    """This machine: one subprocess per job, each on its own disjoint CUDA_VISIBLE_DEVICES
    (or, without GPUs, `jobs` CPU jobs sharing the cores evenly)."""

    queues = False

    def __init__(self, jobs: int | None, gpus: list[str] | None = None):
        self.gpus = discover_gpus() if gpus is None else gpus
        self.free_gpus = list(self.gpus)
        self.max_jobs = jobs or (max(1, len(self.gpus)) if self.gpus else 1)
        self.threads = max(1, (os.cpu_count() or 1) // self.max_jobs)
        self.running: list[Handle] = []

    def need(self, gpus: int) -> int:
        return gpus if self.gpus else 0

    def check_fits(self, gpus: int, what: str) -> None:
        if self.gpus and gpus > len(self.gpus):
            raise ValueError(f"{what} needs {gpus} GPUs; this machine has {len(self.gpus)}")

    def room(self, gpus: Sequence[int]) -> int:
        slots, free, n = self.max_jobs - len(self.running), len(self.free_gpus), 0
        for g in gpus:
            if n == slots or self.need(g) > free:
                break
            free -= self.need(g)
            n += 1
        return n

    def submit_many(self, submissions: Sequence[Submission]) -> list[Handle]:
        return [self._start(submission) for submission in submissions]

    def _start(self, submission: Submission) -> Handle:
        need = self.need(submission.resources.gpus)
        gpus, self.free_gpus = self.free_gpus[:need], self.free_gpus[need:]
        job = submission.job
        paths = job.paths()
        paths.make()
        job.write_job()  # the worker trains this planned cell, whatever the spec file says by then
        cmd = job.command(len(gpus))
        log_header(paths.log, f"{_header(submission)}: {' '.join(cmd)}")
        out = open(paths.log, "a")  # noqa: SIM115 - the child holds it
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=job_env(gpus, self.threads), start_new_session=True)
        out.close()
        handle = Handle(submission, paths.log, gpus=gpus, proc=proc)
        self.running.append(handle)
        return handle

    def started(self, handle: Handle) -> bool:
        return True

    def poll(self, handle: Handle) -> CellResult | None:
        code = handle.proc.poll()
        if code is None:
            return None
        if handle in self.running:
            self.running.remove(handle)
            self.free_gpus.extend(handle.gpus)
        return launch_result(handle.result_file, code)

    def stop(self, handle: Handle) -> None:
        if handle.proc.poll() is None:
            os.killpg(handle.proc.pid, signal.SIGTERM)

    def wait_stopped(self, handles: Sequence[Handle], grace: float = 60.0) -> None:
        """SIGTERM each job (checkpoint, run KILLED), SIGKILL what is still alive after `grace`."""
        for h in handles:
            self.stop(h)
        deadline = time.time() + grace
        for h in handles:
            try:
                h.proc.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                os.killpg(h.proc.pid, signal.SIGKILL)
                h.proc.wait()
