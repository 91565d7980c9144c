"""The Slurm backend: one submitit job per cell (job arrays per group of equal resources).

The submitted callable is checkpointable: on preemption or timeout submitit requeues it, and
the requeued job resumes the cell from its checkpoint in the same MLflow run. Multi-GPU cells
run torchrun --standalone inside their allocation.

Job states come from MLflow (the cells' runs) and squeue, not from sacct: clusters without
accounting make submitit report every state as UNKNOWN.
"""

from __future__ import annotations

import pickle
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from harness.schedule.job import Overrides, TrainJob
from harness.schedule.local import Handle
from harness.schedule.state import latest_runs
from harness.spec.matrix import Cell
from harness.spec.workspace import slurm_folder
from harness.train.exit_codes import EXIT_BUSY, EXIT_FAILED, EXIT_OK, ExitCode, describe


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
        # multi-GPU: torchrun inside the allocation
        code = subprocess.call(self.job.command(self.gpus)) if self.gpus > 1 else self.job.execute()
        if code not in (EXIT_OK, EXIT_BUSY):  # a failed job; Slurm requeues only preempted / timed-out ones
            raise RuntimeError(f"harness train exited with {code} ({describe(code)})")
        return code

    def checkpoint(self, *args, **kwargs):
        """Preemption / timeout: requeue; the next run resumes from the cell's checkpoint."""
        self.job = self.job.without_fresh()
        return DelayedSubmission(self, *args, **kwargs)


_EXITED = re.compile(r"harness train exited with (-?\d+)")


class SlurmBackend:
    """A Slurm cluster through submitit: one job per `TrainJob` (a job array per group of equal
    resources when submitted together). Poll reads squeue and submitit's result file, so it works
    on clusters without accounting (sacct)."""

    def __init__(self, workspace: str):
        self.workspace = workspace
        self.folder = slurm_folder(Path(workspace).resolve())

    def can_start(self, gpus: int) -> bool:
        return True  # Slurm queues

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

    def submit(self, job: TrainJob, resources, attempt: int = 1, header: str | None = None) -> Handle:
        return self.submit_many([(job, resources)])[0]

    def submit_many(self, items: list[tuple[TrainJob, object]]) -> list[Handle]:
        """Submit jobs, one array per group of equal Slurm parameters; handles in input order."""
        groups: dict[tuple, list[int]] = {}
        for i, (_, resources) in enumerate(items):
            key = tuple(sorted((k, str(v)) for k, v in slurm_parameters(resources).items()))
            groups.setdefault(key, []).append(i)
        handles: list[Handle | None] = [None] * len(items)
        for idx in groups.values():
            executor = self._executor(items[idx[0]][1])
            submitted = []
            with executor.batch():
                for i in idx:
                    job, resources = items[i]
                    job = self._absolute(job)
                    if job.planned is not None:  # the pickled job carries the cell; torchrun reads the file
                        job.paths().make()
                        job.write_job()
                    submitted.append((i, job, executor.submit(SlurmCell(job, resources.gpus))))
            for i, job, sjob in submitted:
                paths = job.paths()
                log = paths.log if paths else slurm_folder(self.workspace, str(sjob.job_id))
                handles[i] = Handle(job, 1, log, slurm_job=sjob)
        return handles  # type: ignore[return-value]

    def poll(self, handle: Handle) -> int | None:
        job = handle.slurm_job
        if job.job_id in queued([job.job_id]):
            return None
        result = job.paths.result_pickle
        for _ in range(20):  # the result file is written before the job leaves the queue; allow a slow FS
            if result.exists():
                break
            time.sleep(0.25)
        if not result.exists():
            return ExitCode.killed(signal.SIGKILL)  # cancelled before it could write a result
        with open(result, "rb") as f:
            outcome, payload = pickle.load(f)
        if outcome == "success":
            return int(payload)
        m = _EXITED.search(str(payload))
        return int(m.group(1)) if m else int(EXIT_FAILED)

    def stop(self, handle: Handle) -> None:
        """SIGTERM the job's steps: the trainer checkpoints and ends its run KILLED, then exits."""
        subprocess.run(["scancel", "--signal=TERM", handle.slurm_job.job_id], capture_output=True)

    def wait_stopped(self, handles: list[Handle], grace: float = 60.0) -> None:
        for h in handles:
            self.stop(h)
        deadline = time.time() + grace
        ids = [h.slurm_job.job_id for h in handles]
        while queued(ids) and time.time() < deadline:
            time.sleep(0.5)
        left = sorted(queued(ids))
        if left:
            subprocess.run(["scancel", *left], capture_output=True)


def submit(todo: list[tuple[Cell, bool]], *, spec_file: str, overrides: Overrides, workspace: str,
           uri: str) -> dict[str, str]:
    """Submit the cells; returns run key -> Slurm job id."""
    backend = SlurmBackend(workspace)
    items = [(TrainJob.for_cell(cell, spec_file=spec_file, workspace=workspace, tracking_uri=uri, overrides=overrides,
                                fresh=fresh), cell.config.resources) for cell, fresh in todo]
    handles = backend.submit_many(items)
    ids: dict[str, str] = {}
    for (cell, _), handle in zip(todo, handles, strict=True):
        ids[cell.run_key] = handle.slurm_job.job_id
        print(f"{cell.id}: submitted as Slurm job {handle.slurm_job.job_id}", flush=True)
    return ids


def queued(job_ids: list[str]) -> set[str]:
    """Job ids still known to squeue (pending, running, requeued)."""
    if not job_ids:
        return set()
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i", "-j", ",".join(job_ids)], capture_output=True, text=True)
    return {line.strip() for line in out.stdout.splitlines() if line.strip()}


def run_slurm(todo: list[tuple[Cell, bool]], *, spec_file: str, overrides: Overrides, workspace: str, uri: str,
              detach: bool = False, poll: float = 5.0) -> int:
    ids = submit(todo, spec_file=spec_file, overrides=overrides, workspace=workspace, uri=uri)
    if detach:
        print(f"{len(ids)} jobs submitted; `harness status {spec_file}` shows their state")
        return 0
    spec_name = todo[0][0].spec_name
    cells = {c.run_key: c for c, _ in todo}
    last: dict[str, str] = {}
    while True:
        alive = queued(list(ids.values()))
        runs = latest_runs(uri, spec_name)
        for key, cell in cells.items():
            state = runs[key].status if key in runs else "PENDING"
            if ids[key] in alive and state != "RUNNING":
                state = "QUEUED" if state in ("PENDING", "KILLED", "FAILED") else state
            if last.get(key) != state:
                print(f"{cell.id}: {state.lower()} (job {ids[key]})", flush=True)
                last[key] = state
        if not alive:
            break
        time.sleep(poll)
    runs = latest_runs(uri, spec_name)
    failed = [c for k, c in cells.items() if k not in runs or runs[k].status != "FINISHED"]
    for c in failed:
        info = runs.get(c.run_key)
        print(f"  NOT FINISHED {c.id}: {info.status if info else 'no run'} "
              f"{(info.failure or '') if info else ''} (logs {Path(workspace) / 'slurm' / ids[c.run_key]})")
    diverged = sum(1 for c in failed if c.run_key in runs and (runs[c.run_key].failure or "").startswith("diverged:"))
    print(f"summary: {len(cells) - len(failed)} finished, {len(failed)} not finished"
          + (f" ({diverged} diverged)" if diverged else ""))
    return 1 if failed else 0
