"""The one place an MLflow client is made (`client_for`), with the creation of a new SQLite
store. Only `harness/track` imports this module (an import-linter contract): every other layer
uses the verbs of `track/` (`runs.record`, `runs.end_run`, `runs.previous_attempt`,
`runs.sweep_parent`, `mlflow_tracker.prepare_experiment`, the tracker) and never holds a client."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from harness.track.store import sqlite_file, sqlite_uri


def quiet_store_logs() -> None:
    """MLflow's INFO lines about creating and migrating a SQLite store ("Creating initial MLflow
    database tables...") would land above the live table; warnings still show."""
    import logging

    for name in ("mlflow.store.db.utils", "mlflow.store.tracking.sqlalchemy_store", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


#: How long opening a SQLite store waits for another process that is creating it
STORE_CREATION_WAIT_S = 60.0


def _creation_race(exc: BaseException | None) -> bool:
    """An error of opening a SQLite store while another process creates or migrates it: alembic
    finding the version row moved under it, or SQLite's "already exists" / "locked"."""
    while exc is not None:
        names = {c.__name__ for c in type(exc).__mro__}
        text = str(exc).lower()
        if "CommandError" in names or (names & {"OperationalError", "IntegrityError"} and (
                "already exists" in text or "locked" in text or "unique constraint" in text)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _create_sqlite_store(path: Path) -> None:
    """Create a new SQLite store whole: MLflow's tables are made in a private file, which is
    then linked into place only if nobody created `path` meanwhile. Two processes migrating one
    fresh file at once (a second `harness run`, a script or `mlflow ui` reading the workspace)
    can leave it half-migrated for good; this way a reader finds either no file or a whole one."""
    from mlflow import MlflowClient

    tmp = path.with_name(f".{path.name}.{os.getpid()}.creating")
    try:
        client = MlflowClient(tracking_uri=sqlite_uri(tmp))
        store = client._tracking_client.store
        with contextlib.suppress(AttributeError):
            store.engine.dispose()  # no connection left on the private name
        with contextlib.suppress(FileExistsError):  # someone else's store won: use it
            os.link(tmp, path)
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + "-journal")):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()


def client_for(uri: str):
    """An MlflowClient. A SQLite store that does not exist yet is created whole (see
    `_create_sqlite_store`); one that another process is creating in place is waited for."""
    from mlflow import MlflowClient

    quiet_store_logs()
    path = sqlite_file(uri)
    if path is None or "?" in uri:  # a URI with options (the read-only form too): left to MLflow as given
        return MlflowClient(tracking_uri=uri)
    if not path.exists() and path.parent.is_dir():
        _create_sqlite_store(path)
    deadline = time.monotonic() + STORE_CREATION_WAIT_S
    while True:
        try:
            return MlflowClient(tracking_uri=uri)
        except Exception as exc:
            if not _creation_race(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


#: MLflow 3's UI opens an experiment by its kind; without it a training experiment opens in the
#: GenAI view (an empty Traces page)
