"""A fresh SQLite store opened by several processes at once ends whole and usable."""

import subprocess
import sys
import time

from harness.track.client import _creation_race, client_for

OPEN = """\
import sys, time, warnings
warnings.simplefilter("ignore")
from harness.track.mlflow_tracker import client_for
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
client_for(sys.argv[1]).search_experiments()
"""


def test_three_processes_opening_a_fresh_store_at_once_leave_it_whole(tmp_path):
    # concurrent in-place migrations of one new file can leave it half-migrated for good
    # ("table _alembic_tmp_latest_metrics already exists"); client_for creates it privately
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    start = time.time() + 6  # after every process has imported MLflow
    procs = [subprocess.Popen([sys.executable, "-c", OPEN, uri, str(start)], stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-2000:]
    client = client_for(uri)
    exp = client.create_experiment("after")
    run = client.create_run(exp)
    client.log_metric(run.info.run_id, "m", 1.0)
    assert client.get_run(run.info.run_id).data.metrics == {"m": 1.0}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db"]  # no private file left


def test_which_errors_count_as_another_process_creating_the_store():
    class CommandError(Exception):
        pass

    class OperationalError(Exception):
        pass

    assert _creation_race(CommandError("Online migration expected to match one row"))
    assert _creation_race(OperationalError("table _alembic_tmp_latest_metrics already exists"))
    assert _creation_race(OperationalError("database is locked"))
    wrapped = RuntimeError("MlflowException")
    wrapped.__cause__ = OperationalError("database is locked")
    assert _creation_race(wrapped)
    assert not _creation_race(OperationalError("unable to open database file"))
    assert not _creation_race(ValueError("already exists"))
