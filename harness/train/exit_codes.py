"""Exit codes of `harness train`, in one place: the schedulers (local pool, Slurm, sweeps) read
them to decide what to retry. Light on purpose (no torch): harness.schedule imports it."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1  # an exception: a crash worth retrying from the last checkpoint
EXIT_BAD_INPUT = 2  # a user error (spec, data, weights): not retried
EXIT_DIVERGED = 3  # a non-finite loss: retrying from the last checkpoint would diverge again
EXIT_UNHEALTHY = 4  # a health rule (train.health) flagged divergence: not retried either
EXIT_BUSY = 75  # the cell is being trained by another process (its lock is held)

#: A retry resumes from the last checkpoint and would end the same way.
NOT_RETRIED = (EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_UNHEALTHY)
#: The run diverged; its `harness.failure` tag starts with "diverged:".
DIVERGENCE = (EXIT_DIVERGED, EXIT_UNHEALTHY)


def describe(code: int) -> str:
    """A short phrase for a scheduler's summary."""
    return {EXIT_OK: "finished", EXIT_FAILED: "crashed", EXIT_BAD_INPUT: "bad input, not retried",
            EXIT_DIVERGED: "diverged (non-finite loss), not retried",
            EXIT_UNHEALTHY: "diverged (health rule), not retried",
            EXIT_BUSY: "trained by another process"}.get(code, "killed by a signal" if code >= 128 or code < 0
                                                          else "crashed")
