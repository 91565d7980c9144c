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
    ("databricks", "other", None),
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
