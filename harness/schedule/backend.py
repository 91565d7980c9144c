"""Where training jobs run: the one interface between the scheduling loop and a cluster.

`harness.schedule.pool.Pool` (the queue, the retries, the signals, the events) drives a `Backend`
and nothing else: `LocalBackend` (`harness/schedule/local.py`) starts `harness train` processes
on this machine, `SlurmBackend` (`harness/schedule/slurm.py`) submits submitit jobs. A backend
answers a finished launch with the worker's `CellResult` (its result.json, else what the exit
status says), so the pool decides the same way on both.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from harness.schedule.job import TrainJob
from harness.spec.schema import ResourcesConfig
from harness.train.result import CellResult


@dataclass(frozen=True)
class Submission:
    """One launch of a job: the cell to train, its resources, and which launch of the cell this is."""

    job: TrainJob
    resources: ResourcesConfig
    attempt: int = 1


@dataclass(eq=False)
class Handle:
    """A launch a backend started: what poll and stop need, and where its log is."""

    submission: Submission
    log: Path
    gpus: list[str] = field(default_factory=list)
    proc: subprocess.Popen | None = None  # local
    slurm_job: object = None  # slurm: the submitit Job

    @property
    def label(self) -> str:
        """How a person finds the launch: "Slurm job 123" or "pid 4567"."""
        if self.slurm_job is not None:
            return f"Slurm job {self.slurm_job.job_id}"
        return f"pid {self.proc.pid}" if self.proc is not None else ""

    @property
    def result_file(self) -> Path:
        return self.submission.job.paths().result


class Backend(Protocol):
    """Where jobs run. The pool launches through this only."""

    #: how many jobs run at once (None: as many as are submitted; the backend queues them)
    max_jobs: int | None
    #: submitted jobs wait in the backend's own queue before they run (Slurm)
    queues: bool

    def check_fits(self, gpus: int, what: str) -> None:
        """ValueError when a job needing `gpus` could never start here."""

    def room(self, gpus: Sequence[int]) -> int:
        """How many of these jobs (their GPU counts, in queue order) can start now."""

    def submit_many(self, submissions: Sequence[Submission]) -> list[Handle]:
        """Start the jobs (together: a Slurm array per group of equal resources)."""

    def started(self, handle: Handle) -> bool:
        """Whether a submitted job left the backend's queue and runs."""

    def poll(self, handle: Handle) -> CellResult | None:
        """None while the job runs; then how its launch ended."""

    def stop(self, handle: Handle) -> None:
        """Ask the job to stop (it checkpoints and ends its run KILLED)."""

    def wait_stopped(self, handles: Sequence[Handle], grace: float = 60.0) -> None:
        """Stop the jobs and wait until they are gone (killed outright after `grace` seconds)."""


def open_backend(kind: str, workspace: str, jobs: int | None) -> Backend:
    """The backend `--backend` names: "local" (`jobs` at once) or "slurm"."""
    if kind == "slurm":
        from harness.schedule.slurm import SlurmBackend

        return SlurmBackend(workspace)
    from harness.schedule.local import LocalBackend

    return LocalBackend(jobs)
