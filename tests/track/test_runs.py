"""harness.track.runs on a real SQLite MLflow store: the one rule for the run that counts per
key, histories, and ending a lost run KILLED with its reason."""

import warnings

from harness.track.client import client_for
from harness.track.mlflow_tracker import ensure_experiment, resolve_tracking_uri
from harness.track.runs import end_killed, metric_history, runs_by_key, write

warnings.filterwarnings("ignore", category=DeprecationWarning)


def make_run(client, exp, key, status, start, metrics=None):
    run = client.create_run(exp, start_time=start, tags={"harness.run_key": key})
    if metrics:
        write(client, run.info.run_id, metrics=metrics, step=10)
    if status != "RUNNING":
        client.set_terminated(run.info.run_id, status=status)
    return run.info.run_id


def test_the_run_that_counts_is_the_latest_finished_else_the_latest(tmp_path):
    uri = resolve_tracking_uri(None, tmp_path)
    client = client_for(uri)
    exp = ensure_experiment(client, "e", uri, tmp_path)
    done = make_run(client, exp, "a", "FINISHED", 1000, {"eval.ap": 0.4})
    make_run(client, exp, "a", "FAILED", 2000)  # a later failed attempt does not undo it
    make_run(client, exp, "b", "FAILED", 1000)
    latest_b = make_run(client, exp, "b", "KILLED", 3000)
    older = make_run(client, exp, "c", "FINISHED", 1000)
    newer = make_run(client, exp, "c", "FINISHED", 5000, {"eval.ap": 0.5})
    client.create_run(exp, start_time=9000)  # no harness tags: ignored, no error
    runs = runs_by_key(uri, "e")
    assert set(runs) == {"a", "b", "c"}
    assert runs["a"].run_id == done and runs["a"].metrics == {"eval.ap": 0.4}
    assert runs["b"].run_id == latest_b and runs["b"].status == "KILLED"
    assert runs["c"].run_id == newer != older
    assert metric_history(uri, newer, "eval.ap") == [(10, 0.5)]
    assert runs_by_key(uri, "no such experiment") == {}


def test_end_killed_keeps_the_reason(tmp_path):
    uri = resolve_tracking_uri(None, tmp_path)
    client = client_for(uri)
    exp = ensure_experiment(client, "e", uri, tmp_path)
    rid = make_run(client, exp, "k", "RUNNING", 1000)
    end_killed(uri, rid, "worker lost")
    run = client.get_run(rid)
    assert run.info.status == "KILLED" and run.data.tags["harness.failure"] == "worker lost"


def test_a_resumed_run_that_finishes_drops_its_old_failure(tmp_path):
    from harness.track.mlflow_tracker import MLflowTracker

    uri = resolve_tracking_uri(None, tmp_path)
    t = MLflowTracker.start(uri, "e", "r", {"harness.run_key": "k"}, workspace=tmp_path)
    t.end("KILLED", "killed by SIGTERM at iteration 111")
    again = MLflowTracker.start(uri, "e", "r", {}, workspace=tmp_path, resume_run_id=t.run_id)
    again.end("FINISHED")
    tags = client_for(uri).get_run(t.run_id).data.tags
    assert "harness.failure" not in tags and tags["harness.resumed_after"] == "killed by SIGTERM at iteration 111"
    assert runs_by_key(uri, "e")["k"].failure is None


def test_a_store_that_is_not_sqlite_is_a_clear_error(tmp_path):
    import pytest

    from harness.spec import UserError
    from harness.track.mlflow_tracker import check_tracking_uri

    bad = tmp_path / "mlflow.db"
    bad.write_bytes(b"\x00\x01random bytes, not a database" * 10)
    with pytest.raises(UserError) as exc:
        check_tracking_uri(f"sqlite:///{bad}")
    assert "not a SQLite database" in str(exc.value) and str(bad) in str(exc.value)
    with pytest.raises(UserError):
        check_tracking_uri(f"sqlite:///{tmp_path}")  # a directory
    check_tracking_uri(f"sqlite:///{tmp_path}/new.db")  # not there yet: created by the first run


def test_credentials_never_appear_in_errors():
    import socket

    import pytest

    from harness.spec import UserError
    from harness.track.mlflow_tracker import check_tracking_uri
    from harness.track.store import without_credentials

    assert without_credentials("http://alice:s3cret@host:5000/x") == "http://***@host:5000/x"
    assert without_credentials("http://host:5000") == "http://host:5000"
    with socket.socket() as s:  # a free loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(UserError) as exc:
        check_tracking_uri(f"http://alice:s3cret@127.0.0.1:{port}", timeout=1.0)
    assert "s3cret" not in str(exc.value) and "alice" not in str(exc.value)


def test_cells_missing_because_of_other_overrides_are_explained(tmp_path):
    from harness.spec import expand, load_spec, parse_set
    from harness.spec.matrix import hashed_config
    from harness.track.mlflow_tracker import flatten
    from harness.track.runs import explain_missing
    from tests.conftest import MINI_SPEC

    spec = tmp_path / "mini.yaml"
    spec.write_text(MINI_SPEC)
    trained = expand(load_spec(spec), [parse_set("train.max_iter=40")])
    asked = expand(load_spec(spec))
    uri = resolve_tracking_uri(None, tmp_path)
    client = client_for(uri)
    exp = ensure_experiment(client, "mini", uri, tmp_path)
    for c in trained:
        run = client.create_run(exp, tags={"harness.run_key": c.run_key, "harness.row": c.row,
                                           "harness.dataset": c.dataset, "harness.seed": str(c.seed)})
        write(client, run.info.run_id, params=flatten(hashed_config(c.config)))
        client.set_terminated(run.info.run_id, status="FINISHED")
    assert explain_missing(trained, uri, "mini") == []
    lines = explain_missing(asked, uri, "mini")
    assert lines[0].startswith(f"{len(asked)} cell(s) have no run for their run key")
    assert "train.max_iter 40 there, 10 here" in lines[1] and lines[1].startswith(asked[0].id)


def test_a_key_finished_twice_is_counted(tmp_path):
    uri = resolve_tracking_uri(None, tmp_path)
    client = client_for(uri)
    exp = ensure_experiment(client, "e", uri, tmp_path)
    make_run(client, exp, "a", "FINISHED", 1000)
    latest = make_run(client, exp, "a", "FINISHED", 2000)
    make_run(client, exp, "b", "FINISHED", 1000)
    runs = runs_by_key(uri, "e")
    assert runs["a"].run_id == latest and runs["a"].finished_runs == 2 and runs["b"].finished_runs == 1


def test_experiments_open_as_model_development_with_the_spec_description(tmp_path):
    uri = resolve_tracking_uri(None, tmp_path)
    client = client_for(uri)
    exp = ensure_experiment(client, "e", uri, tmp_path, "FCOS vs POTO")
    tags = client.get_experiment(exp).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development" and tags["mlflow.note.content"] == "FCOS vs POTO"
    old = client.create_experiment("made-elsewhere")
    ensure_experiment(client, "made-elsewhere", uri, tmp_path)
    assert client.get_experiment(old).tags["mlflow.experimentKind"] == "custom_model_development"


def test_creating_a_store_prints_nothing(tmp_path):
    import os
    import subprocess
    import sys

    code = ("from harness.schedule.state import prepare_store; "
            f"prepare_store('sqlite:///{tmp_path}/m.db', 'e', '{tmp_path}')")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "database tables" not in out.stderr + out.stdout
    assert (tmp_path / "m.db").is_file()


def test_a_server_whose_api_fails_is_refused_at_once():
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import pytest

    from harness.spec import UserError
    from harness.track.mlflow_tracker import check_tracking_uri

    api_code = {"value": 503}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            code = 200 if self.path == "/health" else api_code["value"]
            self.send_response(code)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        uri = f"http://127.0.0.1:{server.server_address[1]}"
        with pytest.raises(UserError) as exc:
            check_tracking_uri(uri, timeout=2.0)
        assert "tracking API answers HTTP 503" in str(exc.value)
        api_code["value"] = 404  # a working API: the probe's made-up experiment does not exist
        check_tracking_uri(uri, timeout=2.0)
    finally:
        server.shutdown()


def test_postgresql_without_its_driver_is_a_clear_error(monkeypatch):
    import importlib.util

    import pytest

    from harness.spec import UserError
    from harness.track.mlflow_tracker import check_tracking_uri

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "psycopg" else real(name, *a))
    with pytest.raises(UserError) as exc:
        check_tracking_uri("postgresql://bob:pw@127.0.0.1:1/mlflow")
    text = str(exc.value)
    assert "driver 'psycopg' is not installed" in text and "install harness[postgres]" in text and "pw" not in text


def test_the_sqlite_listing_reads_what_mlflow_search_returns(tmp_path):
    # the report reads SQLite stores with three read-only queries instead of MLflow's search
    # (6 s -> 0.03 s for 1,000 runs): both must give the same runs, tags and final metrics
    from harness.track.runs import _mlflow_runs, _sqlite_runs, histories, list_runs, read_only

    uri = resolve_tracking_uri(None, tmp_path)
    client = client_for(uri)
    exp = ensure_experiment(client, "e", uri, tmp_path)
    a = make_run(client, exp, "a", "FINISHED", 1000, {"eval.ap": 0.4, "eval.mmr": float("nan")})
    write(client, a, metrics={"eval.ap": 0.45}, step=20)  # the final value: highest step
    write(client, a, tags={"harness.git_commit": "abc", "harness.heartbeat": "12.5", "other": "x"})
    make_run(client, exp, "b", "RUNNING", 2000)
    gone = make_run(client, exp, "c", "FINISHED", 3000)
    client.delete_run(gone)  # deleted runs are not listed by either
    client.create_run(exp, start_time=4000)  # untagged
    for step in range(0, 1000, 10):
        write(client, a, metrics={"train.total_loss": 1.0 / (step + 1)}, step=step)

    def norm(found):
        return sorted((rid, status, start, {k: v for k, v in tags.items() if k.startswith("harness.")},
                       {k: ("nan" if v != v else v) for k, v in metrics.items()}) for rid, status, start, tags, metrics in found)

    path = str(tmp_path / "mlflow.db")
    assert norm(_sqlite_runs(path, "e")) == norm(_mlflow_runs(uri, "e"))
    assert _sqlite_runs(path, "nope") is None
    listing = list_runs(read_only(uri), "e")
    assert (listing.total, listing.untagged, set(listing.runs)) == (3, 1, {"a", "b"})
    assert listing.runs["a"].metrics["eval.ap"] == 0.45 and listing.runs["a"].commit == "abc"
    sampled = histories(read_only(uri), [a], ["train.total_loss"], max_points=10, cache_dir=tmp_path / "cache")
    pts = sampled[(a, "train.total_loss")]
    assert pts[0] == (0, 1.0) and pts[-1] == (990, 1.0 / 991) and 8 <= len(pts) <= 10
    assert [s for s, _ in pts] == sorted(s for s, _ in pts)
    assert (tmp_path / "cache" / f"{a}.json").is_file()  # a finished run's histories are cached
