"""PostgreSQL for real (issue 16): a throwaway server from the image's initdb / pg_ctl holds
MLflow's backend store for `harness run`, then the Optuna storage of a sweep driven by two
`harness sweep` processes at once. Each cell trains exactly once; the trial count is right."""

import os
import shutil
import subprocess
import sys
import tempfile
import warnings

import pytest

from tests.schedule.test_local_faults import write_spec
from tests.servers import ENV, Postgres, postgres_bin
from tests.sweep.test_sweep import sweep_file

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    pytest.importorskip("psycopg", reason="pip install harness[postgres]")
    bindir = postgres_bin()
    if bindir is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not installed: .ci/run installs Debian's postgresql")
        pytest.skip("PostgreSQL not installed (apt-get install postgresql)")
    # not under pytest's tmp_path: that is private to root, and the server runs as `postgres`
    root = tempfile.mkdtemp(prefix="harness-pg-")
    server = Postgres(root, bindir)
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def harness(*args):
    return [sys.executable, "-m", "harness", *map(str, args)]


def finished_runs_by_key(uri: str, experiment: str):
    from mlflow import search_runs, set_tracking_uri

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    set_tracking_uri(uri)
    return search_runs(experiment_names=[experiment])


def test_harness_run_with_mlflow_on_postgresql(postgres, tmp_path):
    uri = postgres.createdb("mlflow_run")
    spec = write_spec(tmp_path, rows=("A:poto", "B:fcos"), iters=4, ckpt=2)
    ws = tmp_path / "ws"
    cmd = harness("run", spec, "--workspace", ws, "--tracking-uri", uri, "--jobs", 2)
    first = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "2 finished" in first.stdout
    second = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0 and "0 to run, 2 already finished" in second.stdout, second.stdout + second.stderr
    df = finished_runs_by_key(uri, "sched")
    assert len(df) == 2 and set(df["status"]) == {"FINISHED"}  # each cell trained exactly once
    assert df["tags.harness.run_key"].nunique() == 2
    assert not (ws / "mlflow.db").exists()  # the store is the database, not a file in the workspace
    assert list((ws / "mlartifacts").glob("*/artifacts/eval.json"))  # artifacts stay in the workspace


def test_sweep_with_optuna_on_postgresql_two_drivers_at_once(postgres, tmp_path):
    import optuna

    uri, storage = postgres.createdb("mlflow_sweep"), postgres.createdb("optuna")
    n = 4
    path = sweep_file(tmp_path, n=n)
    path.write_text(path.read_text().replace("train.max_iter: 8, eval.period: 2", "train.max_iter: 4, eval.period: 2"))
    ws = tmp_path / "ws"
    cmd = harness("sweep", path, "--workspace", ws, "--tracking-uri", uri, "--storage", storage, "--jobs", 1,
                  "--out-dir", tmp_path / "reports")
    drivers = [subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                cwd=tmp_path) for _ in range(2)]
    outs = [d.communicate(timeout=600)[0] for d in drivers]
    for d, out in zip(drivers, outs, strict=True):
        assert d.returncode == 0, out
    study = optuna.load_study(study_name="tiny_sweep", storage=storage)
    states = optuna.trial.TrialState
    ended = [t for t in study.trials if t.state in (states.COMPLETE, states.PRUNED)]
    assert len(ended) == n, [(t.number, t.state, t.user_attrs) for t in study.trials]
    assert not [t for t in study.trials if t.state == states.RUNNING]
    assert all(sum(f"trial {t.number}:" in out for out in outs) >= 1 for t in ended)  # shared by both drivers
    assert all(any(": started" in line for line in out.splitlines()) for out in outs)
    df = finished_runs_by_key(uri, "sched")
    trials = df[df["tags.harness.run_key"].notna()]
    # each parameter set trained exactly once: one MLflow run per run key, every ended trial has its run
    assert trials["tags.harness.run_key"].value_counts().max() == 1
    keys = {k for t in ended for k in t.user_attrs["run_keys"]}
    assert keys <= set(trials["tags.harness.run_key"])
    assert len(df[df["tags.harness.sweep_parent"] == "tiny_sweep"]) == 1  # one parent run for both drivers
