"""The one scheduling loop: a queue of cells launched through a `Backend`, local or Slurm.

`harness run` hands the pool its cells and waits (`run`); `harness sweep` adds each trial's cells
as the study asks for them and steps the pool itself (`step`, `stop` for a pruned trial). The
pool clears a cell's result.json before each launch and decides from the `CellResult` the
backend answers when it ends: a crash or a kill is launched again, resuming from the cell's
checkpoint, up to `resources.max_attempts` launches; bad input, divergence and a busy cell are
final (a retry would end the same way). SIGINT / SIGTERM stop the running jobs, which checkpoint
and end KILLED; queued cells stay pending, for the next run of the same command.
"""

from __future__ import annotations

import signal
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from harness.schedule.backend import Backend, Handle, Submission
from harness.schedule.job import TrainJob
from harness.spec.matrix import Cell
from harness.spec.workspace import CellPaths
from harness.train.result import CellResult, CellState, Outcome, clear_result

#: the states in which a task is over for this pool (a busy cell is another process's)
ENDED = (CellState.FINISHED, CellState.FAILED, CellState.KILLED, CellState.ELSEWHERE)


@dataclass(eq=False)
class Task:
    """One cell in the pool: its job, how many launches it had, and how the last one ended."""

    cell: Cell
    job: TrainJob
    state: CellState = CellState.PENDING
    attempt: int = 0  # launches so far
    handle: Handle | None = None
    result: CellResult | None = None
    final: bool = False  # stopped on purpose (a pruned trial, the pool stopping): not launched again

    @property
    def paths(self) -> CellPaths:
        return CellPaths.of(self.job.workspace, self.cell.run_key)

    @property
    def log(self) -> Path:
        return self.handle.log if self.handle is not None else self.paths.log

    @property
    def ended(self) -> bool:
        return self.state in ENDED


#: called on every state change: (state, cell, attempt, log, where)
Listener = Callable[..., None]


class Pool:
    """Cells queued, launched through `backend`, retried, stopped; one loop for every backend."""

    def __init__(self, backend: Backend, on_event: Listener | None = None):
        self.backend = backend
        self.on_event = on_event or (lambda *args, **kwargs: None)
        self.queue: deque[Task] = deque()
        self.running: list[Task] = []
        self.stopping: int | None = None  # the signal that asked the pool to stop

    def add(self, cell: Cell, job: TrainJob) -> Task:
        """Queue a cell (ValueError when the backend could never start it)."""
        self.backend.check_fits(cell.config.resources.gpus, cell.id)
        task = Task(cell, job)
        self.queue.append(task)
        return task

    @property
    def busy(self) -> bool:
        return bool(self.queue or self.running)

    # ------------------------------------------------------------------ the loop

    def run(self, poll_s: float = 0.2) -> None:
        """Launch and wait until every queued cell ended, or a signal stopped the pool."""
        with self.signals():
            while self.busy:
                if self.stopping is not None:
                    self.halt()
                    return
                self.step()
                time.sleep(poll_s)

    def step(self) -> None:
        """Launch what fits, then look at the running jobs."""
        self.start()
        for task in list(self.running):
            if task.state is CellState.QUEUED and self.backend.started(task.handle):
                self._set(task, CellState.RUNNING)
            result = self.backend.poll(task.handle)
            if result is not None:
                self._ended(task, result)

    def start(self) -> None:
        """Launch the queued tasks that fit now, in queue order, in one submission (Slurm makes
        an array of each group of equal resources)."""
        n = self.backend.room([t.cell.config.resources.gpus for t in self.queue])
        batch = [self.queue.popleft() for _ in range(n)]
        for task in batch:
            clear_result(task.paths.result)  # an earlier launch's answer is not this one's
            task.attempt += 1
        submissions = [Submission(t.job, t.cell.config.resources, t.attempt) for t in batch]
        for task, handle in zip(batch, self.backend.submit_many(submissions), strict=True):
            task.handle, task.result = handle, None
            self.running.append(task)
            self._set(task, CellState.QUEUED if self.backend.queues else CellState.RUNNING)

    def _ended(self, task: Task, result: CellResult) -> None:
        """A launch ended: queue the task again to resume, or settle its state."""
        self.running.remove(task)
        task.result = result
        retry = result.outcome.retried and not task.final
        if retry and task.attempt < task.cell.config.resources.max_attempts:
            task.job = task.job.without_fresh()  # resume from the checkpoint, in the same run
            self.queue.append(task)
            self._set(task, CellState.RETRYING)
        else:
            self._set(task, result.state)

    def _set(self, task: Task, state: CellState) -> None:
        task.state = state
        where = task.handle.label if task.handle is not None else ""
        self.on_event(state, task.cell, task.attempt, task.log, where=where)

    # ------------------------------------------------------------------ stopping

    def stop(self, task: Task) -> None:
        """Stop one task for good (a pruned trial): a running job checkpoints and ends KILLED; a
        queued one is not launched."""
        task.final = True
        if task in self.queue:
            self.queue.remove(task)
            task.result = CellResult(Outcome.KILLED, "stopped before it was launched")
            self._set(task, CellState.KILLED)
        elif task in self.running:
            self.backend.stop(task.handle)

    def halt(self) -> None:
        """Stop every running job and wait for it (each checkpoints and ends KILLED); the queued
        cells stay pending."""
        running = list(self.running)
        for task in running:
            task.final = True
        self.backend.wait_stopped([t.handle for t in running])
        for task in running:
            result = self.backend.poll(task.handle)
            self._ended(task, result or CellResult(Outcome.KILLED, "stopped by the scheduler"))
        for task in self.queue:
            task.state = CellState.PENDING
        self.queue.clear()

    @contextmanager
    def signals(self) -> Iterator[None]:
        """While inside: SIGINT and SIGTERM set `stopping` (the loop then halts the pool)."""
        def handler(signum, frame):
            self.stopping = signum

        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)

