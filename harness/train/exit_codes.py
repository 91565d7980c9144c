"""Exit codes of `harness train`, in one place: the schedulers (local pool, Slurm, sweeps) read
them to decide what to retry. Light on purpose (no torch): harness.schedule imports it."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """The exit status of every harness command; `harness train`'s decide the retries."""

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
        one place this rule is written; Popen gives -signum, which `describe` also reads)."""
        return 128 + int(signum)


# the members under the names the schedulers use
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = ExitCode.OK, ExitCode.FAILED, ExitCode.BAD_INPUT
EXIT_DIVERGED, EXIT_UNHEALTHY, EXIT_BUSY = ExitCode.DIVERGED, ExitCode.UNHEALTHY, ExitCode.BUSY

#: A retry resumes from the last checkpoint and would end the same way.
NOT_RETRIED = (EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_UNHEALTHY, ExitCode.NO_SPACE)
#: The run diverged; its `harness.failure` tag starts with "diverged:".
DIVERGENCE = (EXIT_DIVERGED, EXIT_UNHEALTHY)


def describe(code: int) -> str:
    """A short phrase for a scheduler's summary."""
    return {EXIT_OK: "finished", EXIT_FAILED: "crashed", EXIT_BAD_INPUT: "bad input, not retried",
            EXIT_DIVERGED: "diverged (non-finite loss), not retried",
            EXIT_UNHEALTHY: "diverged (health rule), not retried",
            EXIT_BUSY: "trained by another process", ExitCode.NO_SPACE: "no space left on a device, not retried"}.get(code, "killed by a signal" if code >= 128 or code < 0
                                                          else "crashed")
