"""The local backend: a pool of GPU slots (or CPU jobs) running one subprocess per cell.

`LocalBackend` is the local side of the one launch interface (`Backend`: submit, poll, stop) that
`harness run` and `harness sweep` use; `harness.schedule.slurm.SlurmBackend` is the other side.
Each job is a `TrainJob` started as `python -m harness train ...` (or torchrun --standalone for
multi-GPU cells) with its own disjoint CUDA_VISIBLE_DEVICES, its log at the cell's log.txt, and
OMP_WAIT_POLICY=PASSIVE unless the user set it. Crashes are retried up to
``resources.max_attempts`` (resuming from the checkpoint); bad input (exit 2) and divergence
(exit 3: a non-finite loss, exit 4: a train.health rule) are not. Ctrl-C / SIGTERM terminates the children, which checkpoint and end KILLED.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from harness.schedule.job import Overrides, TrainJob
from harness.spec.matrix import Cell
from harness.spec.workspace import CellPaths
from harness.train.exit_codes import EXIT_BUSY, NOT_RETRIED


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


@dataclass
class Handle:
    """A job started by a backend: what poll / stop need, and where its log is."""

    job: TrainJob
    attempt: int
    log: Path
    gpus: list[str] = field(default_factory=list)
    proc: subprocess.Popen | None = None  # local
    slurm_job: object = None  # slurm: the submitit Job
    started: float = field(default_factory=time.time)

    @property
    def job_id(self) -> str:
        return getattr(self.slurm_job, "job_id", None) or str(self.proc.pid if self.proc else "")


class Backend(Protocol):
    """Where training jobs run. `harness run` and `harness sweep` launch through this only."""

    def can_start(self, gpus: int) -> bool: ...

    def submit(self, job: TrainJob, resources, attempt: int = 1, header: str | None = None) -> Handle: ...

    def poll(self, handle: Handle) -> int | None:
        """None while the job runs; then `harness train`'s exit code."""

    def stop(self, handle: Handle) -> None:
        """Ask the job to stop (it checkpoints and ends its run KILLED)."""

    def wait_stopped(self, handles: list[Handle], grace: float = 60.0) -> None: ...


@dataclass
class Outcome:
    cell: Cell
    state: str  # finished | failed | busy | killed | pending
    code: int
    attempts: int
    log: Path


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


class LocalBackend:
    """This machine: one subprocess per job, each on its own disjoint CUDA_VISIBLE_DEVICES
    (or, without GPUs, `jobs` CPU jobs sharing the cores evenly)."""

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

    def can_start(self, gpus: int) -> bool:
        return len(self.running) < self.max_jobs and self.need(gpus) <= len(self.free_gpus)

    def submit(self, job: TrainJob, resources, attempt: int = 1, header: str | None = None) -> Handle:
        need = self.need(resources.gpus)
        gpus, self.free_gpus = self.free_gpus[:need], self.free_gpus[need:]
        paths = job.paths()
        paths.make()
        job.write_job()  # the worker trains this planned cell, whatever the spec file says by then
        cmd = job.command(len(gpus))
        header = header or f"launch {attempt} by this harness run (the run's attempt in MLflow follows)"
        log_header(paths.log, f"{header}: {' '.join(cmd)}")
        out = open(paths.log, "a")  # noqa: SIM115 - the child holds it
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=job_env(gpus, self.threads), start_new_session=True)
        out.close()
        handle = Handle(job, attempt, paths.log, gpus=gpus, proc=proc)
        self.running.append(handle)
        return handle

    def poll(self, handle: Handle) -> int | None:
        code = handle.proc.poll()
        if code is not None and handle in self.running:
            self.running.remove(handle)
            self.free_gpus.extend(handle.gpus)
        return code

    def stop(self, handle: Handle) -> None:
        if handle.proc.poll() is None:
            os.killpg(handle.proc.pid, signal.SIGTERM)

    def wait_stopped(self, handles: list[Handle], grace: float = 60.0) -> None:
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
            self.poll(h)


class LocalPool:
    """`harness run` on the local backend: queue, retries (resuming), signals."""

    def __init__(self, *, spec_file: str, overrides: Overrides, workspace: str, uri: str, jobs: int | None,
                 gpus: list[str] | None = None, on_event=None):
        self.spec_file, self.overrides = spec_file, overrides
        self.workspace, self.uri = workspace, uri
        self.backend = LocalBackend(jobs, gpus)
        self.on_event = on_event or (lambda *a: None)
        self.stopping: int | None = None

    def _job(self, cell: Cell, fresh: bool) -> TrainJob:
        return TrainJob.for_cell(cell, spec_file=self.spec_file, workspace=self.workspace, tracking_uri=self.uri,
                                 overrides=self.overrides, fresh=fresh)

    def _handle_signal(self, signum, frame):
        self.stopping = signum

    def run(self, todo: list[tuple[Cell, bool]]) -> list[Outcome]:
        """Run the cells ([(cell, fresh)]) to completion; returns one outcome per cell."""
        for cell, _ in todo:
            self.backend.check_fits(cell.config.resources.gpus, cell.id)
        queue = deque((cell, 1, fresh) for cell, fresh in todo)
        running: list[tuple[Cell, Handle]] = []
        outcomes: list[Outcome] = []
        old = {s: signal.signal(s, self._handle_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while queue or running:
                if self.stopping is not None:
                    self.backend.wait_stopped([h for _, h in running])
                    for cell, h in running:
                        outcomes.append(Outcome(cell, "killed", h.proc.returncode or -1, h.attempt, h.log))
                        self.on_event("killed", cell, h.attempt, h.log)
                    for cell, attempt, _ in queue:
                        outcomes.append(Outcome(cell, "pending", 0, attempt - 1,
                                                CellPaths.of(self.workspace, cell.run_key).log))
                    return outcomes
                while queue and self.backend.can_start(queue[0][0].config.resources.gpus):
                    cell, attempt, fresh = queue.popleft()
                    handle = self.backend.submit(self._job(cell, fresh), cell.config.resources, attempt)
                    self.on_event("start", cell, attempt, handle.log)
                    running.append((cell, handle))
                time.sleep(0.2)
                for cell, handle in list(running):
                    code = self.backend.poll(handle)
                    if code is None:
                        continue
                    running.remove((cell, handle))
                    max_attempts = cell.config.resources.max_attempts
                    if code == 0:
                        outcomes.append(Outcome(cell, "finished", 0, handle.attempt, handle.log))
                    elif code == EXIT_BUSY:
                        outcomes.append(Outcome(cell, "busy", code, handle.attempt, handle.log))
                    elif code in NOT_RETRIED or handle.attempt >= max_attempts:
                        outcomes.append(Outcome(cell, "failed", code, handle.attempt, handle.log))
                    else:  # a crash: retry, resuming from the checkpoint in the same run
                        self.on_event("retry", cell, handle.attempt + 1, handle.log)
                        queue.append((cell, handle.attempt + 1, False))
                        continue
                    self.on_event(outcomes[-1].state, cell, handle.attempt, handle.log)
            return outcomes
        finally:
            for s, h in old.items():
                signal.signal(s, h)
