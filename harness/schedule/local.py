"""The local backend: a pool of GPU slots (or CPU jobs) running one subprocess per cell.

Each job is `python -m harness train ...` (or torchrun --standalone for multi-GPU cells) with its
own disjoint CUDA_VISIBLE_DEVICES, its log at ``<workspace>/<run_key>/log.txt``, and
OMP_WAIT_POLICY=PASSIVE unless the user set it. Crashes are retried up to
``resources.max_attempts`` (resuming from the checkpoint); bad input (exit 2) and divergence
(exit 3: a non-finite loss, exit 4: a train.health rule) are not. Ctrl-C / SIGTERM terminates the children, which checkpoint and end KILLED.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from harness.spec.matrix import Cell
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
class Job:
    cell: Cell
    attempt: int
    gpus: list[str]
    proc: subprocess.Popen
    log: Path
    started: float = field(default_factory=time.time)


@dataclass
class Outcome:
    cell: Cell
    state: str  # finished | failed | busy | killed
    code: int
    attempts: int
    log: Path


def train_command(cell: Cell, *, spec_file: str, override_args: list[str], workspace: str, uri: str,
                  gpus: list[str], fresh: bool) -> list[str]:
    args = ["train", spec_file, "--row", cell.row, "--dataset", cell.dataset, "--seed", str(cell.seed),
            "--workspace", workspace, "--tracking-uri", uri, *override_args]
    if fresh:
        args.append("--fresh")
    if len(gpus) > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(len(gpus)),
                "-m", "harness", *args]
    return [sys.executable, "-m", "harness", *args]


def job_env(gpus: list[str], threads: int, attempt: int) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus) if gpus else ""
    env.setdefault("OMP_NUM_THREADS", str(threads))
    env["MASTER_PORT"] = str(free_port())
    env["HARNESS_ATTEMPT"] = str(attempt)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class LocalPool:
    def __init__(self, *, spec_file: str, override_args: list[str], workspace: str, uri: str, jobs: int | None,
                 gpus: list[str] | None = None, on_event=None):
        self.spec_file, self.override_args = spec_file, override_args
        self.workspace, self.uri = workspace, uri
        self.gpus = discover_gpus() if gpus is None else gpus
        self.free_gpus = list(self.gpus)
        self.max_jobs = jobs or (max(1, len(self.gpus)) if self.gpus else 1)
        self.threads = max(1, (os.cpu_count() or 1) // self.max_jobs)
        self.on_event = on_event or (lambda *a: None)
        self.stopping: int | None = None

    def _need(self, cell: Cell) -> int:
        return cell.config.resources.gpus if self.gpus else 0

    def _start(self, cell: Cell, attempt: int, fresh: bool) -> Job:
        need = self._need(cell)
        gpus, self.free_gpus = self.free_gpus[:need], self.free_gpus[need:]
        cdir = Path(self.workspace) / cell.run_key
        cdir.mkdir(parents=True, exist_ok=True)
        log = cdir / "log.txt"
        cmd = train_command(cell, spec_file=self.spec_file, override_args=self.override_args,
                            workspace=self.workspace, uri=self.uri, gpus=gpus, fresh=fresh)
        with open(log, "a") as f:
            f.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} launch {attempt} by this harness run "
                    f"(the run's attempt in MLflow follows): {' '.join(cmd)}\n")
        out = open(log, "a")  # noqa: SIM115 - closed when the job ends
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=job_env(gpus, self.threads, attempt), start_new_session=True)
        out.close()
        self.on_event("start", cell, attempt, log)
        return Job(cell, attempt, gpus, proc, log)

    def _handle_signal(self, signum, frame):
        self.stopping = signum

    def run(self, todo: list[tuple[Cell, bool]]) -> list[Outcome]:
        """Run the cells ([(cell, fresh)]) to completion; returns one outcome per cell."""
        for cell, _ in todo:
            if self.gpus and self._need(cell) > len(self.gpus):
                raise ValueError(f"{cell.id} needs {self._need(cell)} GPUs; this machine has {len(self.gpus)}")
        queue = deque((cell, 1, fresh) for cell, fresh in todo)
        running: list[Job] = []
        outcomes: list[Outcome] = []
        old = {s: signal.signal(s, self._handle_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while queue or running:
                if self.stopping is not None:
                    self._terminate(running)
                    for job in running:
                        outcomes.append(Outcome(job.cell, "killed", job.proc.returncode or -1, job.attempt, job.log))
                        self.on_event("killed", job.cell, job.attempt, job.log)
                    for cell, attempt, _ in queue:
                        outcomes.append(Outcome(cell, "pending", 0, attempt - 1, Path(self.workspace) / cell.run_key / "log.txt"))
                    return outcomes
                while queue and len(running) < self.max_jobs and self._need(queue[0][0]) <= len(self.free_gpus):
                    cell, attempt, fresh = queue.popleft()
                    running.append(self._start(cell, attempt, fresh))
                time.sleep(0.2)
                for job in list(running):
                    code = job.proc.poll()
                    if code is None:
                        continue
                    running.remove(job)
                    self.free_gpus.extend(job.gpus)
                    max_attempts = job.cell.config.resources.max_attempts
                    if code == 0:
                        outcomes.append(Outcome(job.cell, "finished", 0, job.attempt, job.log))
                    elif code == EXIT_BUSY:
                        outcomes.append(Outcome(job.cell, "busy", code, job.attempt, job.log))
                    elif code in NOT_RETRIED or job.attempt >= max_attempts:
                        outcomes.append(Outcome(job.cell, "failed", code, job.attempt, job.log))
                    else:  # a crash: retry, resuming from the checkpoint in the same run
                        self.on_event("retry", job.cell, job.attempt + 1, job.log)
                        queue.append((job.cell, job.attempt + 1, False))
                        continue
                    self.on_event(outcomes[-1].state, job.cell, job.attempt, job.log)
            return outcomes
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def _terminate(self, running: list[Job], grace: float = 60.0) -> None:
        for job in running:
            if job.proc.poll() is None:
                os.killpg(job.proc.pid, signal.SIGTERM)
        deadline = time.time() + grace
        for job in running:
            try:
                job.proc.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                os.killpg(job.proc.pid, signal.SIGKILL)
                job.proc.wait()
