"""Tracking: the Tracker protocol and its MLflow implementation.

The only package that writes to MLflow (docs/architecture.md). `harness.train.run` is its only user.
"""

from harness.track.mlflow_tracker import (
    MLflowTracker,
    NullTracker,
    Tracker,
    check_tracking_uri,
    default_tracking_uri,
)

__all__ = ["MLflowTracker", "NullTracker", "Tracker", "check_tracking_uri", "default_tracking_uri"]
