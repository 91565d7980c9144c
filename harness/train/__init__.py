"""Training: optimiser and schedules, checkpoints, the loop, and `run` (the one entry point)."""
