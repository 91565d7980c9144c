"""`harness sweep`: the loop that hands the study's trials to the pool and tells their ends.

The study (`harness.sweep.study`) asks for trials and decides about them; the pool
(`harness.schedule.pool`, the one `harness run` uses, local or Slurm) trains each trial's cells
as `harness train` workers, `jobs` trials at once, with the same retries and signals: SIGINT /
SIGTERM stop the workers (their runs end KILLED), the trials stay RUNNING in the study and the
next driver adopts them (`Study._recover`).
"""

from __future__ import annotations

import time
from pathlib import Path

from harness.schedule.backend import open_backend
from harness.schedule.job import TrainJob
from harness.schedule.pool import Pool, Task
from harness.schedule.state import busy, prepare_store
from harness.sweep.space import CONFIRM, SEARCH, Sweep
from harness.sweep.study import Study, Trial
from harness.track.mlflow_tracker import check_tracking_uri, credentials_to_environment
from harness.track.store import kind as store_kind
from harness.train.exit_codes import ExitCode
from harness.train.result import Outcome


class Driver:
    def __init__(self, sweep: Sweep, *, workspace: str, uri: str, storage: str | None,
                 jobs: int | None, out_dir: str, backend: str = "local"):
        """uri: the store, resolved at the CLI edge (checked in `run`, after the sweep's own checks)."""
        self.sweep, self.workspace, self.uri = sweep, workspace, uri
        self.out_dir = Path(out_dir)
        self.jobs = jobs or 1
        self.storage = credentials_to_environment(storage) if storage else None  # never printed
        self.study = Study(sweep, workspace=workspace, uri=uri, storage=self.storage)
        # `jobs` trials at once, each of its cells (seeds) its own process and GPU slot
        self.pool = Pool(open_backend(backend, workspace, self.jobs * len(sweep.base_cells)))

    def job(self, trial: Trial | int, cell, phase: str = SEARCH) -> TrainJob:
        return TrainJob.for_cell(cell, spec_file=self.sweep.base_file, workspace=self.workspace,
                                 tracking_uri=self.uri, sweep=self.study.link(trial, phase))

    def launch(self, trial: Trial, cells) -> list[Task]:
        """A trial's cells to the pool: all at once, or when racing only the first (the next
        seed starts when the race goes on)."""
        cells = [c for c in cells if c not in trial.waiting]
        if self.study.racing:
            cells = cells[:1]
        return [self.pool.add(c, self.job(trial, c)) for c in cells]

    def run(self) -> int:
        check_tracking_uri(self.uri)
        if self.storage and store_kind(self.storage) == "postgresql":
            check_tracking_uri(self.storage, what="--storage")  # its driver is installed
        prepare_store(self.uri, self.study.experiment, self.workspace)
        running: dict[Trial, list[Task]] = {}
        for trial in self.study.open():  # a dead driver's trials, continued
            running[trial] = self.launch(trial, trial.cells)
        with self.pool.signals():
            while self.study.wants_more() or running:
                if self.pool.stopping is not None:
                    return self.stop("the running trials stay RUNNING in the study")
                self.ask(running)
                self.pool.step()
                self.follow(running)
                time.sleep(1.0)
            confirmation = None
            if self.sweep.spec.confirm is not None:
                confirmation = self.confirm()
                if confirmation is None:
                    return self.stop("the confirmation's finished runs are kept")
        self.study.end("FINISHED", self.out_dir, confirmation)
        return 0

    def stop(self, what: str) -> int:
        self.pool.halt()
        print(f"stopped: {what}; rerun to continue")
        self.study.end("KILLED")
        return ExitCode.killed(self.pool.stopping)

    def confirm(self) -> dict | None:
        """The top trials and the defaults on the confirmation split (every cell at once through
        the pool; finished cells answer at once on a rerun); None when stopped."""
        confirmed = self.study.to_confirm()
        names = ", ".join(c.label for c in confirmed)
        seeds = self.sweep.spec.confirm.seeds
        print(f"confirmation: {names} on seeds {seeds}", flush=True)
        tasks = [self.pool.add(cell, self.job(c.number, cell, CONFIRM))
                 for c in confirmed for cell in self.study.confirm_cells(c)]
        while not all(t.ended for t in tasks):
            if self.pool.stopping is not None:
                return None
            self.pool.step()
            time.sleep(1.0)
        result = self.study.read_confirmation(confirmed)
        print(f"confirmation: {result['outcome']}", flush=True)
        return result

    def ask(self, running: dict[Trial, list[Task]]) -> None:
        """New trials while fewer than `jobs` run and the pool has room (nothing waits in it)."""
        while len(running) < self.jobs and not self.pool.queue and self.study.wants_more():
            trial = self.study.ask()
            if trial is None:  # another driver asked at the same moment
                return
            running[trial] = self.launch(trial, trial.cells)

    def follow(self, running: dict[Trial, list[Task]]) -> None:
        """Report each trial's progress, stop a pruned one, tell Optuna each ended one."""
        for trial, tasks in list(running.items()):
            for cell in [c for c in trial.waiting if not busy(self.workspace, c.run_key)]:
                trial.waiting.remove(cell)  # its orphaned worker ended: ours finishes or resumes it
                tasks.insert(trial.cells.index(cell), self.pool.add(cell, self.job(trial, cell)))
            ended = all(t.ended for t in tasks) and not trial.waiting
            racing = self.study.racing and ended and len(tasks) < len(trial.cells) and \
                all(t.result.outcome is Outcome.FINISHED for t in tasks)
            if racing and not self.study.race(trial, len(tasks)):  # the race goes on: the next seed
                nxt = trial.cells[len(tasks)]
                tasks.append(self.pool.add(nxt, self.job(trial, nxt)))
                continue
            if self.study.report(trial, running=not ended):
                for task in tasks:
                    self.pool.stop(task)
            if ended:
                del running[trial]
                self.study.tell(trial, [t.result for t in tasks])


__all__ = ["Driver"]
