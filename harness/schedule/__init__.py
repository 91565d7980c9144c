"""Scheduling a matrix: dedup against MLflow by run key, a local GPU-slot / CPU-job pool, Slurm."""
