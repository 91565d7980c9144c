"""Tracking: the Tracker protocol and its MLflow implementation.

The only package that talks to MLflow (docs/architecture.md): the worker writes through its
tracker (`mlflow_tracker.py`), every other layer through the verbs of `runs.py`.
"""

from harness.track.mlflow_tracker import (
    MLflowTracker,
    NullTracker,
    Tracker,
    check_tracking_uri,
    default_tracking_uri,
)

__all__ = ["MLflowTracker", "NullTracker", "Tracker", "check_tracking_uri", "default_tracking_uri"]
