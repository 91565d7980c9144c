"""What a worker answers its scheduler: one typed result per launch, and the states of a cell.

A scheduler asks with `<workspace>/<key>/job.json` (`harness.schedule.job.TrainJob.write_job`) and
the worker answers in `<workspace>/<key>/result.json`: how the launch ended (`Outcome`), the
signal that stopped it, the reason in one line, the iteration reached and the final evaluation's
headline metrics. The scheduler removes an old answer before it launches, so a missing file means
the worker died before it could write one (kill -9, out of memory): `CellResult.from_exit` then
reads the exit status alone. Nothing parses log lines or exception text.

Light on purpose (no torch): harness.schedule imports it.
"""

from __future__ import annotations

import json
import signal as signals
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path

from harness.train.exit_codes import ExitCode


class CellState(StrEnum):
    """Where a cell stands, for every scheduler, the live table and `harness status`."""

    PENDING = "pending"  # not started (or left in the queue when the scheduler stopped)
    QUEUED = "queued"  # submitted, waiting for its slot (Slurm)
    RUNNING = "running"  # a worker of this scheduler trains it
    RETRYING = "retrying"  # crashed; queued again, to resume from its checkpoint
    ELSEWHERE = "running elsewhere"  # another process holds its lock or beats its heartbeat
    DONE_EARLIER = "done earlier"  # finished before this scheduler started
    FINISHED = "finished"
    FAILED = "failed"
    KILLED = "killed"

    @property
    def done(self) -> bool:
        return self in (CellState.FINISHED, CellState.DONE_EARLIER)

    @property
    def active(self) -> bool:
        return self in (CellState.RUNNING, CellState.RETRYING, CellState.ELSEWHERE, CellState.QUEUED)

    @property
    def ended_badly(self) -> bool:
        return self in (CellState.FAILED, CellState.KILLED)


class Outcome(StrEnum):
    """How one launch of `harness train` ended."""

    FINISHED = "finished"
    DIVERGED = "diverged"  # a non-finite loss
    UNHEALTHY = "unhealthy"  # a train.health rule
    KILLED = "killed"  # a signal (SIGTERM, SIGINT; preemption)
    CRASH = "crash"  # an exception: worth a retry from the last checkpoint
    BAD_INPUT = "bad_input"  # data, weights or config the cell cannot train with
    BUSY = "busy"  # another process trains the cell
    NO_SPACE = "no_space"  # a disk filled up: a retry would fail the same way until space is freed

    @property
    def exit_code(self) -> ExitCode:
        return {Outcome.FINISHED: ExitCode.OK, Outcome.DIVERGED: ExitCode.DIVERGED,
                Outcome.UNHEALTHY: ExitCode.UNHEALTHY, Outcome.KILLED: ExitCode.FAILED,
                Outcome.CRASH: ExitCode.FAILED, Outcome.BAD_INPUT: ExitCode.BAD_INPUT,
                Outcome.BUSY: ExitCode.BUSY, Outcome.NO_SPACE: ExitCode.NO_SPACE}[self]

    @property
    def retried(self) -> bool:
        """A retry resumes from the last checkpoint: worth it after a crash or a kill only."""
        return self in (Outcome.CRASH, Outcome.KILLED)

    @property
    def state(self) -> CellState:
        return {Outcome.FINISHED: CellState.FINISHED, Outcome.KILLED: CellState.KILLED,
                Outcome.BUSY: CellState.ELSEWHERE}.get(self, CellState.FAILED)


@dataclass(frozen=True)
class CellResult:
    """One launch's answer (`result.json`)."""

    outcome: Outcome
    message: str = ""  # the reason, one line ("" when finished)
    signal: int | None = None  # the signal that stopped a killed launch
    iteration: int | None = None  # the last iteration trained, when known
    run_id: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)  # the final evaluation's, headline first
    attempt: int | None = None  # the run's attempt in MLflow (its `harness.attempt` tag), when it has a run

    @property
    def exit_code(self) -> int:
        """`harness train`'s exit status for this result (128 + signal for a killed launch)."""
        if self.outcome is Outcome.KILLED and self.signal:
            return ExitCode.killed(self.signal)
        return int(self.outcome.exit_code)

    @property
    def state(self) -> CellState:
        return self.outcome.state

    @property
    def diverged(self) -> bool:
        return self.outcome in (Outcome.DIVERGED, Outcome.UNHEALTHY)

    def describe(self) -> str:
        """A short phrase for a scheduler's summary."""
        phrase = {Outcome.FINISHED: "finished", Outcome.DIVERGED: "diverged (non-finite loss), not retried",
                  Outcome.UNHEALTHY: "diverged (health rule), not retried", Outcome.CRASH: "crashed",
                  Outcome.BAD_INPUT: "bad input, not retried", Outcome.BUSY: "trained by another process",
                  Outcome.NO_SPACE: "no space left, not retried",
                  Outcome.KILLED: f"killed by {_signal_name(self.signal)}" if self.signal else "killed"}[self.outcome]
        return f"{phrase}: {self.message}" if self.message and self.outcome is not Outcome.FINISHED else phrase

    def to_json(self) -> dict:
        return {"version": 1, **asdict(self), "outcome": str(self.outcome)}

    @classmethod
    def from_json(cls, data: dict) -> CellResult:
        return cls(outcome=Outcome(data["outcome"]), message=str(data.get("message") or ""),
                   signal=data.get("signal"), iteration=data.get("iteration"), run_id=data.get("run_id"),
                   metrics={str(k): float(v) for k, v in (data.get("metrics") or {}).items()},
                   attempt=data.get("attempt"))

    @classmethod
    def from_exit(cls, code: int) -> CellResult:
        """What an exit status alone says, for a worker that died before it wrote its result
        (a negative status is Popen's -signum)."""
        if code < 0 or code >= 128:
            signum = -code if code < 0 else code - 128
            return cls(Outcome.KILLED, f"died without writing its result (exit {code})", signal=signum)
        try:
            code = ExitCode(code)
        except ValueError:
            return cls(Outcome.CRASH, f"died without writing its result (exit {code})")
        outcome = {ExitCode.OK: Outcome.FINISHED, ExitCode.BAD_INPUT: Outcome.BAD_INPUT,
                   ExitCode.DIVERGED: Outcome.DIVERGED, ExitCode.UNHEALTHY: Outcome.UNHEALTHY,
                   ExitCode.BUSY: Outcome.BUSY, ExitCode.NO_SPACE: Outcome.NO_SPACE}.get(code, Outcome.CRASH)
        return cls(outcome, "" if outcome is Outcome.FINISHED else f"no result written (exit {int(code)})")


def _signal_name(signum: int | None) -> str:
    try:
        return signals.Signals(signum).name
    except (TypeError, ValueError):
        return f"signal {signum}"


def write_result(path: str | Path, result: CellResult) -> None:
    from harness.formats.atomic import write_json

    write_json(path, result.to_json(), indent=1)


def read_result(path: str | Path) -> CellResult | None:
    """The result a worker wrote, or None when there is none (or it cannot be read)."""
    try:
        data = json.loads(Path(path).read_text())
        return CellResult.from_json(data) if isinstance(data, dict) and data.get("version") == 1 else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def launch_result(path: str | Path, code: int) -> CellResult:
    """A finished launch's answer: its result file, else what its exit status says."""
    return read_result(path) or CellResult.from_exit(code)


def clear_result(path: str | Path) -> None:
    """Before a launch: an earlier launch's answer must not be read as this one's."""
    Path(path).unlink(missing_ok=True)
