"""Optuna sweeps of loss weights: each trial a cell dispatched like `harness run` does."""
