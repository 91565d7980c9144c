"""Exit codes of every harness command, in one place. A scheduler decides from the worker's
`result.json` (`harness.train.result`); the exit status is its fallback when the worker died
before answering. Light on purpose (no torch): harness.schedule imports it."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """The exit status of every harness command."""

    OK = 0
    FAILED = 1  # an exception: a crash worth retrying from the last checkpoint
    BAD_INPUT = 2  # a user error (spec, data, weights, arguments): not retried
    DIVERGED = 3  # a non-finite loss: retrying from the last checkpoint would diverge again
    UNHEALTHY = 4  # a health rule (train.health) flagged divergence: not retried either
    NO_SPACE = 5  # a disk filled up (checkpoint, evaluation, spool): not retried until space is freed
    BUSY = 75  # the cell is being trained by another process (its lock is held; EX_TEMPFAIL)

    @staticmethod
    def killed(signum: int) -> int:
        """The status of a process a signal ended: 128 + its number, as a shell reports it (the
        one place this rule is written; Popen gives -signum, which `CellResult.from_exit` also reads)."""
        return 128 + int(signum)
