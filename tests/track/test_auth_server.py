"""An authenticated tracking server (issue 16): `mlflow server --app-name basic-auth` with an admin
password and a secret key set here. The harness logs in through MLFLOW_TRACKING_USERNAME /
MLFLOW_TRACKING_PASSWORD (or credentials in the URI, moved there); wrong or missing credentials
are one clear line and exit 2; the password never appears in output, logs, params or tags."""

import os
import secrets
import subprocess
import sys
import warnings

import pytest

from tests.schedule.test_local_faults import write_spec
from tests.servers import ENV, MlflowServer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("auth")
    password, secret = "pw-" + secrets.token_hex(12), secrets.token_hex(16)
    ini = root / "basic_auth.ini"
    ini.write_text(f"[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///{root / 'auth.db'}\n"
                   "admin_username = admin\nauth_cache_ttl_seconds = 60\n"  # one password hash per worker, not per call
                   "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    server = MlflowServer(root, app="basic-auth", env={
        "MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_AUTH_ADMIN_PASSWORD": password,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secret}).start()
    try:
        yield server, password
    finally:
        server.stop()


def harness(*args, env, cwd=None):
    return subprocess.run([sys.executable, "-m", "harness", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=600, cwd=cwd)


def no_login_env():
    return {k: v for k, v in ENV.items() if not k.startswith("MLFLOW_TRACKING_")}


def test_wrong_or_missing_credentials_are_one_line_exit_2(auth_server, tmp_path):
    server, password = auth_server
    spec = write_spec(tmp_path, rows=("A:poto",), iters=2, ckpt=2)
    ws = tmp_path / "ws"
    wrong = {**no_login_env(), "MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": "not-" + password}
    for env, uri, says in (
        (no_login_env(), server.uri, "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"),
        (wrong, server.uri, "MLFLOW_TRACKING_PASSWORD were refused"),
        (no_login_env(), server.uri.replace("//", "//admin:wrong-secret@"), "were refused"),
    ):
        for command in ("run", "status"):
            out = harness(command, spec, "--workspace", ws, "--tracking-uri", uri, env=env)
            assert out.returncode == 2, out.stdout + out.stderr
            lines = out.stderr.strip().splitlines()
            assert len(lines) == 1 and "asks for a login (HTTP 401)" in lines[0] and says in lines[0], lines
            assert "Traceback" not in out.stderr and "wrong-secret" not in out.stdout + out.stderr
            assert password not in out.stdout + out.stderr
    assert not ws.exists()  # refused before any work


def test_the_harness_logs_in_and_never_shows_the_password(auth_server, tmp_path):
    server, password = auth_server
    spec = write_spec(tmp_path, rows=("A:poto",), iters=2, ckpt=2)
    ws = tmp_path / "ws"
    login = {**no_login_env(), "MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": password}
    # credentials in the URI for `harness run` (its jobs' command lines go to their logs), in the
    # environment for `harness status`
    with_password = server.uri.replace("//", f"//admin:{password}@")
    run = harness("run", spec, "--workspace", ws, "--tracking-uri", with_password, env=no_login_env())
    assert run.returncode == 0 and "1 finished" in run.stdout, run.stdout + run.stderr
    assert list(ws.glob("*/log.txt"))
    status = harness("status", spec, "--workspace", ws, "--tracking-uri", server.uri, env=login)
    assert status.returncode == 0 and "1 finished" in status.stdout, status.stdout + status.stderr
    seen = run.stdout + run.stderr + status.stdout + status.stderr
    for path in ws.rglob("*"):  # logs, configs, detections, the spool if any: every file in the workspace
        if path.is_file():
            seen += path.read_bytes().decode(errors="replace")
    assert password not in seen

    from mlflow import MlflowClient

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = "admin", password
    try:
        client = MlflowClient(server.uri)
        exp = client.get_experiment_by_name("sched")
        (run_,) = client.search_runs([exp.experiment_id])
        assert run_.info.status == "FINISHED"
        stored = " ".join(f"{k}={v}" for d in (run_.data.params, run_.data.tags) for k, v in d.items())
        assert password not in stored and "harness.run_key" in run_.data.tags
    finally:
        del os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]
