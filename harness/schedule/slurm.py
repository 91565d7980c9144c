"""The Slurm backend: one submitit job per launch (job arrays per group of equal resources).

The submitted callable is checkpointable: on preemption or timeout submitit requeues it, and
the requeued job resumes the cell from its checkpoint in the same MLflow run. Multi-GPU cells
run torchrun --standalone inside their allocation. The pool (`harness.schedule.pool`) drives it
like the local backend: the queue, the retries and the signals are the same.

A launch's end is read from the cell's result.json, which the worker writes in its allocation;
squeue says whether a job is still queued or running, and submitit's result file whether it left
without any answer. No accounting (sacct) is needed: on clusters without it submitit reports
every state as UNKNOWN.
"""

from __future__ import annotations

import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from harness.schedule.backend import Handle, Submission
from harness.schedule.job import TrainJob
from harness.spec.workspace import slurm_folder
from harness.train.exit_codes import ExitCode
from harness.train.result import CellResult, clear_result, launch_result, read_result, write_result


def slurm_parameters(resources) -> dict:
    """submitit SlurmExecutor parameters for a cell's `resources` section."""
    s = resources.slurm
    gpus = resources.gpus
    params = {
        "time": s.time_min,
        "nodes": 1,
        "ntasks_per_node": 1,
        "cpus_per_task": s.cpus_per_gpu * gpus if gpus else s.cpus,
        "mem": f"{s.mem_gb}GB",
        "array_parallelism": s.array_parallelism,
        "signal_delay_s": 120,
        "additional_parameters": {"requeue": True},
    }
    if gpus:
        params["gpus_per_node"] = gpus
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(s, key):
            params[key] = getattr(s, key)
    return params


try:
    from submitit.helpers import Checkpointable, DelayedSubmission
except ImportError:  # pragma: no cover - submitit is a dependency
    Checkpointable = object  # type: ignore[misc,assignment]


class SlurmCell(Checkpointable):
    """Runs one `TrainJob` inside its Slurm allocation (in the job's process; torchrun for
    multi-GPU cells)."""

    def __init__(self, job: TrainJob, gpus: int):
        self.job, self.gpus = job, gpus

    def __call__(self) -> int:
        result = self.job.paths().result
        clear_result(result)  # a requeued job: the preempted launch's answer is not this one's
        code = subprocess.call(self.job.command(self.gpus)) if self.gpus > 1 else self.job.execute()
        if code in (ExitCode.OK, ExitCode.BUSY):  # submitit's result file carries the status
            return code
        answer = read_result(result)
        if answer is None:  # torchrun's rank 0 died before it answered
            answer = CellResult.from_exit(code)
            write_result(result, answer)
        # a failed job (Slurm requeues only preempted / timed-out ones); the text is for people
        raise RuntimeError(f"harness train exited with {code} ({answer.describe()})")

    def checkpoint(self, *args, **kwargs):
        """Preemption / timeout: requeue; the next run resumes from the cell's checkpoint."""
        self.job = self.job.without_fresh()
        return DelayedSubmission(self, *args, **kwargs)


class SlurmBackend:
    """A Slurm cluster through submitit: one job per launch (a job array per group of equal
    resources when submitted together). squeue is read once for every live job at most every
    `refresh_s` seconds, so a pool polling its jobs does not flood the controller."""

    max_jobs = None  # Slurm queues
    queues = True

    def __init__(self, workspace: str, refresh_s: float = 2.0):
        self.workspace = workspace
        self.folder = slurm_folder(Path(workspace).resolve())
        self.refresh_s = refresh_s
        self.live: list[Handle] = []
        self._states: dict[str, str] = {}
        self._read_at: float | None = None  # None: read squeue at the next look

    def check_fits(self, gpus: int, what: str) -> None:
        """Slurm refuses what no partition can hold when the job is submitted."""

    def room(self, gpus: Sequence[int]) -> int:
        return len(gpus)

    def _executor(self, resources):
        import submitit

        executor = submitit.SlurmExecutor(folder=self.folder, python=sys.executable)
        executor.update_parameters(job_name="harness", **slurm_parameters(resources))
        return executor

    @staticmethod
    def _absolute(job: TrainJob) -> TrainJob:
        """Jobs may start in another directory."""
        return replace(job, spec_file=str(Path(job.spec_file).resolve()) if job.spec_file else job.spec_file,
                       workspace=str(Path(job.workspace).resolve()),
                       job_file=str(Path(job.job_file).resolve()) if job.job_file else None)

    def submit_many(self, submissions: Sequence[Submission]) -> list[Handle]:
        """Submit jobs, one array per group of equal Slurm parameters; handles in input order."""
        groups: dict[tuple, list[int]] = {}
        for i, sub in enumerate(submissions):
            key = tuple(sorted((k, str(v)) for k, v in slurm_parameters(sub.resources).items()))
            groups.setdefault(key, []).append(i)
        handles: list[Handle | None] = [None] * len(submissions)
        for idx in groups.values():
            executor = self._executor(submissions[idx[0]].resources)
            submitted = []
            with executor.batch():
                for i in idx:
                    job = self._absolute(submissions[i].job)
                    job.paths().make()
                    job.write_job()  # the pickled job carries the cell too; torchrun's workers read the file
                    submitted.append((i, job, executor.submit(SlurmCell(job, submissions[i].resources.gpus))))
            for i, job, sjob in submitted:
                handles[i] = Handle(replace(submissions[i], job=job), Path(sjob.paths.stdout), slurm_job=sjob)
        self.live += handles  # type: ignore[arg-type]
        self._read_at = None
        return handles  # type: ignore[return-value]

    def _queue(self) -> dict[str, str]:
        """squeue's state of every live job, read at most every `refresh_s` seconds."""
        now = time.monotonic()
        if self._read_at is None or now - self._read_at >= self.refresh_s:
            self._states = squeue([h.slurm_job.job_id for h in self.live])
            self._read_at = now
        return self._states

    def started(self, handle: Handle) -> bool:
        return self._queue().get(handle.slurm_job.job_id) in ("RUNNING", "COMPLETING")

    def poll(self, handle: Handle) -> CellResult | None:
        if handle.slurm_job.job_id in self._queue():
            return None
        if handle in self.live:
            self.live.remove(handle)
        return launch_result(handle.result_file, exit_status(handle.slurm_job))

    def stop(self, handle: Handle) -> None:
        """SIGTERM the job's steps: the trainer checkpoints and ends its run KILLED, then exits."""
        subprocess.run(["scancel", "--signal=TERM", handle.slurm_job.job_id], capture_output=True)

    def wait_stopped(self, handles: Sequence[Handle], grace: float = 60.0) -> None:
        for h in handles:
            self.stop(h)
        deadline = time.time() + grace
        ids = [h.slurm_job.job_id for h in handles]
        while squeue(ids) and time.time() < deadline:
            time.sleep(0.5)
        left = sorted(squeue(ids))
        if left:
            subprocess.run(["scancel", *left], capture_output=True)
        self._read_at = None


def exit_status(job) -> int:
    """What submitit's result file says of a job that left the queue: the status `SlurmCell`
    returned; a crash when it raised (its answer, if any, is in result.json); killed when the job
    was cancelled before it could write the file."""
    path = job.paths.result_pickle
    for _ in range(20):  # the file is written before the job leaves the queue; allow a slow FS
        if path.exists():
            break
        time.sleep(0.25)
    if not path.exists():
        return ExitCode.killed(signal.SIGKILL)
    with open(path, "rb") as f:
        outcome, payload = pickle.load(f)
    return int(payload) if outcome == "success" else int(ExitCode.FAILED)


def squeue(job_ids: Sequence[str]) -> dict[str, str]:
    """Job id -> state (PENDING, RUNNING, ...) of the jobs squeue still knows."""
    if not job_ids:
        return {}
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T", "-j", ",".join(job_ids)], capture_output=True,
                         text=True)
    return dict(line.split(maxsplit=1) for line in out.stdout.splitlines() if len(line.split()) == 2)
