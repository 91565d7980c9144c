"""Resume equivalence, signals, non-finite losses, DDP on the CPU, a real MLflow server."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.conftest import EXPERIMENTS
from tests.train.helpers import history, runs, tiny_overrides

pytestmark = pytest.mark.slow
QUICK = EXPERIMENTS / "quickstart.yaml"
ENV = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}


def harness(*args, **kw):
    return [sys.executable, "-m", "harness", *map(str, args)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sigterm_kills_then_resume_equals_an_uninterrupted_run(tmp_path):
    over = tiny_overrides(tmp_path, iters=40, ckpt=4, eval_period=20)
    a, b = tmp_path / "a", tmp_path / "b"
    # all three runs in subprocesses with one environment: the thread count changes float sums
    subprocess.run(harness("train", QUICK, "--row", "POTO", "--workspace", a, "--set-file", over),
                   env=ENV, check=True, capture_output=True, timeout=300)

    proc = subprocess.Popen(harness("train", QUICK, "--row", "POTO", "--workspace", b, "--set-file", over),
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list(b.glob("*/checkpoint.pt")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    first = runs(b, "quickstart").iloc[0]
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert first["status"] == "KILLED"
    assert first["tags.harness.failure"].startswith("killed by SIGTERM at iteration")

    subprocess.run(harness("train", QUICK, "--row", "POTO", "--workspace", b, "--set-file", over),
                   env=ENV, check=True, capture_output=True, timeout=300)
    df = runs(b, "quickstart")
    assert len(df) == 1  # the same MLflow run continued
    resumed = df.iloc[0]
    assert resumed["status"] == "FINISHED" and resumed["run_id"] == first["run_id"]
    assert resumed["tags.harness.attempt"] == "2"
    ref = runs(a, "quickstart").iloc[0]
    assert history(b, resumed["run_id"], "train.total_loss") == history(a, ref["run_id"], "train.total_loss")
    for key in ("eval.nms_free.ap", "eval.nms_free.ar100", "eval.nms.ap", "train.total_loss"):
        assert resumed[f"metrics.{key}"] == ref[f"metrics.{key}"], key
    steps = [s for s, _ in history(b, resumed["run_id"], "train.total_loss")]
    assert steps == list(range(1, 41))  # continuous, no duplicates
    assert history(b, resumed["run_id"], "eval.nms_free.ap") == history(a, ref["run_id"], "eval.nms_free.ap")
    # the health monitor's state came back from the checkpoint: its EMA continues unbroken
    assert history(b, resumed["run_id"], "health.loss_ema") == history(a, ref["run_id"], "health.loss_ema")


def test_non_finite_loss_fails_the_run(run_cli, tmp_path):
    over = tiny_overrides(tmp_path, iters=5, extra="train.base_lr: 1.0e+30\ntrain.warmup_iters: 0\n")
    code, _, err = run_cli("train", QUICK, "--row", "POTO", "--workspace", tmp_path, "--set-file", over)
    assert code == 3  # diverged: not worth retrying
    r = runs(tmp_path, "quickstart").iloc[0]
    assert r["status"] == "FAILED"
    assert r["tags.harness.failure"].startswith("diverged: non-finite loss") and "at iteration" in r["tags.harness.failure"]
    assert "non-finite loss" in err


def test_unreachable_server_is_a_clear_error_before_training(run_cli, tmp_path):
    port = free_port()
    code, _, err = run_cli("train", QUICK, "--row", "POTO", "--workspace", tmp_path / "ws",
                           "--tracking-uri", f"http://127.0.0.1:{port}")
    assert code == 2
    assert f"cannot reach the MLflow server at http://127.0.0.1:{port}" in err
    assert not (tmp_path / "ws").exists()


def test_ddp_on_cpu_gives_the_single_process_losses(tmp_path):
    over = tiny_overrides(tmp_path, iters=1, batch=4, size=96)
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run(harness("train", QUICK, "--row", "POTO+3DMF+Aux", "--workspace", one, "--set-file", over),
                   env=ENV, check=True, capture_output=True, timeout=300)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "harness",
           "train", str(QUICK), "--row", "POTO+3DMF+Aux", "--workspace", str(two), "--set-file", str(over)]
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r1, r2 = runs(one, "quickstart").iloc[0], runs(two, "quickstart").iloc[0]
    assert r2["tags.harness.world_size"] == "2" and r2["status"] == "FINISHED"
    for key in ("train.loss_cls", "train.loss_box", "train.loss_aux", "train.total_loss"):
        assert r2[f"metrics.{key}"] == pytest.approx(r1[f"metrics.{key}"], rel=1e-5), key


def test_real_mlflow_server(tmp_path):
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                with urllib.request.urlopen(uri + "/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert time.time() < deadline, "mlflow server did not start"
            assert server.poll() is None, "mlflow server exited"
            time.sleep(0.5)
        over = tiny_overrides(tmp_path, iters=2)
        proc = subprocess.run(harness("train", QUICK, "--row", "FCOS", "--workspace", tmp_path / "ws", "--set-file",
                                      over, "--tracking-uri", uri), env=ENV, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        import mlflow

        mlflow.set_tracking_uri(uri)
        df = mlflow.search_runs(experiment_names=["quickstart"])
        assert len(df) == 1 and df.iloc[0]["status"] == "FINISHED"
        assert "metrics.eval.nms.ap" in df.columns and df.iloc[0]["tags.harness.row"] == "FCOS"
        assert not (tmp_path / "ws" / "mlflow.db").exists()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_a_launched_job_answers_in_its_result_file(tmp_path):
    # the scheduler's one channel back: finished with the final metrics, killed with its signal,
    # bad input with its one line; no log line or exception text is parsed
    import json

    from harness.schedule.job import Overrides, TrainJob
    from harness.spec import expand, load_spec
    from harness.train.result import CellState, Outcome, read_result

    over = Overrides.of(files=[str(tiny_overrides(tmp_path, iters=30, ckpt=2, fmt="odgt"))])
    ws = tmp_path / "ws"

    def job(row, extra=()):
        cell = next(c for c in expand(load_spec(QUICK), over.plus(extra).parsed()) if c.row == row)
        j = TrainJob.for_cell(cell, spec_file=str(QUICK), workspace=str(ws), tracking_uri=None)
        j.paths().make()
        j.write_job()
        return j

    done = job("FCOS")
    proc = subprocess.run(done.command(), env=ENV, capture_output=True, text=True, timeout=300)
    result = read_result(done.paths().result)
    assert proc.returncode == 0 and result.outcome is Outcome.FINISHED, proc.stderr
    assert result.iteration == 30 and result.run_id and result.state is CellState.FINISHED
    eval_json = json.loads(done.paths().eval_json.read_text())
    assert result.metrics["ap50"] == eval_json["ap50"] and result.metrics["nms.ap50"] == eval_json["nms.ap50"]

    killed = job("POTO")
    proc = subprocess.Popen(killed.command(), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not killed.paths().checkpoint.exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    result = read_result(killed.paths().result)
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    assert result.outcome is Outcome.KILLED and result.signal == signal.SIGTERM, out
    assert proc.returncode == result.exit_code == 128 + signal.SIGTERM
    assert result.message.startswith("killed by SIGTERM at iteration") and result.iteration >= 2

    bad = job("DATE-F", ["model.num_classes=3"])
    proc = subprocess.run(bad.command(), env=ENV, capture_output=True, text=True, timeout=300)
    result = read_result(bad.paths().result)
    assert proc.returncode == 2 and result.outcome is Outcome.BAD_INPUT
    assert "model.num_classes" in result.message and result.message in proc.stderr
    assert sorted(p.name for p in bad.paths().dir.iterdir()) == ["job.json", "result.json"]
