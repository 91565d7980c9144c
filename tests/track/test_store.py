"""Tracking URIs parsed in one place (`harness/track/store.py`)."""

from pathlib import Path

import pytest

from harness.track import store


@pytest.mark.parametrize("uri, kind, file", [
    ("sqlite:////w/runs/mlflow.db", "sqlite", "/w/runs/mlflow.db"),
    ("sqlite:///rel/mlflow.db?timeout=5", "sqlite", "rel/mlflow.db"),
    ("sqlite+pysqlite:///file:/w/a%20b/mlflow.db?mode=ro&uri=true", "sqlite", "/w/a b/mlflow.db"),
    ("http://127.0.0.1:5000", "server", None),
    ("https://mlflow.lab.org/x", "server", None),
    ("postgresql+psycopg://alice@db:5432/mlflow", "postgresql", None),
    ("databricks://profile", "other", None),
    ("runs/mlruns", "file", None),  # a folder: the file store MLflow 3 refuses
    ("file:///w/mlruns", "file", None),
])
def test_kind_and_file(uri, kind, file):
    assert store.kind(uri) == kind
    assert store.sqlite_file(uri) == (Path(file) if file else None)


def test_read_only_round_trips_its_file_and_names(tmp_path):
    uri = f"sqlite:///{tmp_path / 'a b' / 'mlflow.db'}"
    ro = store.read_only(uri)
    assert ro.startswith("sqlite+pysqlite:///file:") and ro.endswith("?mode=ro&uri=true")
    assert store.sqlite_file(ro) == (tmp_path / "a b" / "mlflow.db").resolve()
    assert store.read_only("sqlite:///x.db?timeout=5") == "sqlite:///x.db?timeout=5"  # options: as given
    assert store.read_only("http://h:1") == "http://h:1"
    assert store.display(ro) == str((tmp_path / "a b" / "mlflow.db").resolve())
    assert store.short(ro) == "sqlite: a b/mlflow.db"
    assert store.display("http://alice:s3cret@host:5000/x") == "http://host:5000/x"


def test_uris_for_messages_and_new_stores(tmp_path):
    assert store.without_credentials("http://alice:s3cret@host:5000/x") == "http://***@host:5000/x"
    assert store.without_credentials("http://host:5000") == "http://host:5000"
    uri = store.sqlite_uri(tmp_path / "ws" / "mlflow.db")
    assert store.kind(uri) == "sqlite" and store.sqlite_file(uri) == (tmp_path / "ws" / "mlflow.db").resolve()
