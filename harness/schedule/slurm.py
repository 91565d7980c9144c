"""The Slurm backend: one submitit job per cell (job arrays per group of equal resources).

The submitted callable is checkpointable: on preemption or timeout submitit requeues it, and
the requeued job resumes the cell from its checkpoint in the same MLflow run. Multi-GPU cells
run torchrun --standalone inside their allocation.

Job states come from MLflow (the cells' runs) and squeue, not from sacct: clusters without
accounting make submitit report every state as UNKNOWN.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from harness.schedule.local import train_command
from harness.schedule.state import latest_runs
from harness.spec.matrix import Cell
from harness.train.exit_codes import EXIT_BUSY, EXIT_OK, describe


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


def _train_in_process(args: list[str]) -> int:
    """`harness train ARGS` in this process (the arguments train_command wrote)."""
    from harness.spec import expand, load_set_file, load_spec, parse_set, select
    from harness.train.run import run_cell

    spec_file, rest = args[1], args[2:]
    opts: dict[str, str] = {}
    files: list[str] = []
    sets: list[str] = []
    fresh, i = False, 0
    while i < len(rest):
        if rest[i] == "--fresh":
            fresh, i = True, i + 1
        elif rest[i] == "--set-file":
            files.append(rest[i + 1])
            i += 2
        elif rest[i] == "--set":
            i += 1
            while i < len(rest) and not rest[i].startswith("--"):
                sets.append(rest[i])
                i += 1
        else:
            opts[rest[i]] = rest[i + 1]
            i += 2
    overrides = [o for f in files for o in load_set_file(f)] + [parse_set(s) for s in sets]
    cell = select(expand(load_spec(spec_file), overrides), opts["--row"], opts["--dataset"], int(opts["--seed"]),
                  spec_file=spec_file)
    return run_cell(cell, workspace=opts["--workspace"], tracking_uri=opts["--tracking-uri"],
                    resume=False if fresh else None, spec_file=spec_file)


class SlurmCell(Checkpointable):
    """Runs `harness train` for one cell inside its Slurm allocation."""

    def __init__(self, command: list[str], gpus: int):
        self.command, self.gpus = command, gpus

    def __call__(self) -> int:
        if self.gpus > 1:  # torchrun inside the allocation
            code = subprocess.call(self.command)
        else:
            code = _train_in_process(self.command[3:])  # drop "python -m harness"
        if code not in (EXIT_OK, EXIT_BUSY):  # a failed job; Slurm requeues only preempted / timed-out ones
            raise RuntimeError(f"harness train exited with {code} ({describe(code)})")
        return code

    def checkpoint(self, *args, **kwargs):
        """Preemption / timeout: requeue; the next run resumes from the cell's checkpoint."""
        self.command = [c for c in self.command if c != "--fresh"]
        return DelayedSubmission(self, *args, **kwargs)


def submit(todo: list[tuple[Cell, bool]], *, spec_file: str, override_args: list[str], workspace: str,
           uri: str) -> dict[str, str]:
    """Submit the cells; returns run key -> Slurm job id."""
    import submitit

    folder = Path(workspace) / "slurm" / "%j"
    groups: dict[tuple, list[tuple[Cell, bool]]] = {}
    for cell, fresh in todo:
        key = tuple(sorted((k, str(v)) for k, v in slurm_parameters(cell.config.resources).items()))
        groups.setdefault(key, []).append((cell, fresh))
    ids: dict[str, str] = {}
    for items in groups.values():
        executor = submitit.SlurmExecutor(folder=folder, python=sys.executable)
        executor.update_parameters(job_name="harness", **slurm_parameters(items[0][0].config.resources))
        jobs = []
        with executor.batch():
            for cell, fresh in items:
                gpus = cell.config.resources.gpus
                cmd = train_command(cell, spec_file=str(Path(spec_file).resolve()), override_args=override_args,
                                    workspace=str(Path(workspace).resolve()), uri=uri,
                                    gpus=[str(i) for i in range(gpus)], fresh=fresh)
                jobs.append(executor.submit(SlurmCell(cmd, gpus)))
        for (cell, _), job in zip(items, jobs, strict=True):
            ids[cell.run_key] = job.job_id
            print(f"{cell.id}: submitted as Slurm job {job.job_id}", flush=True)
    return ids


def queued(job_ids: list[str]) -> set[str]:
    """Job ids still known to squeue (pending, running, requeued)."""
    if not job_ids:
        return set()
    out = subprocess.run(["squeue", "-h", "-o", "%i", "-j", ",".join(job_ids)], capture_output=True, text=True)
    return {line.strip() for line in out.stdout.splitlines() if line.strip()}


def run_slurm(todo: list[tuple[Cell, bool]], *, spec_file: str, override_args: list[str], workspace: str, uri: str,
              detach: bool = False, poll: float = 5.0) -> int:
    ids = submit(todo, spec_file=spec_file, override_args=override_args, workspace=workspace, uri=uri)
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
