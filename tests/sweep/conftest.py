"""Sweeps on Slurm use the same real single-node cluster as the scheduler tests."""

from tests.schedule.conftest import slurm  # noqa: F401
