"""Faults a lab hits, on the worker's side: a full disk, a kill before the first checkpoint, a
checkpoint copied from another cell, a resume from an older checkpoint. After each: no run left
RUNNING, one FINISHED run per cell once it is trained, one clear line."""

import os
import shutil
import subprocess
import sys
import time

import pytest

from tests.conftest import EXPERIMENTS
from tests.train.helpers import history, runs, tiny_overrides

pytestmark = pytest.mark.slow
QUICK = EXPERIMENTS / "quickstart.yaml"
ENV = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1", "HARNESS_HEARTBEAT_S": "1"}


def harness(*args):
    return [sys.executable, "-m", "harness", *map(str, args)]


def statuses(ws, spec="quickstart"):
    df = runs(ws, spec)
    return sorted(df["status"]) if len(df) else []


def wait_for(pred, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_a_copied_checkpoint_of_another_cell_is_refused_in_one_line(tmp_path):
    over = tiny_overrides(tmp_path, iters=4, ckpt=2)
    ws = tmp_path / "ws"
    for seed in (0, 1):
        subprocess.run(harness("train", QUICK, "--row", "POTO", "--seed", seed, "--workspace", ws, "--set-file", over),
                       env=ENV, check=True, capture_output=True, timeout=300)
    df = runs(ws, "quickstart")
    key = {int(r["tags.harness.seed"]): r["tags.harness.run_key"] for _, r in df.iterrows()}
    shutil.copy(ws / key[1] / "checkpoint.pt", ws / key[0] / "checkpoint.pt")  # seed 1's, in seed 0's folder
    proc = subprocess.run(harness("train", QUICK, "--row", "POTO", "--seed", 0, "--workspace", ws, "--set-file", over),
                          env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and "belongs to another cell" in proc.stderr
    after = runs(ws, "quickstart")
    assert sorted(after["status"]) == ["FINISHED", "FINISHED"]
    assert {int(r["tags.harness.seed"]): r["tags.harness.run_key"] for _, r in after.iterrows()} == key
    proc = subprocess.run(harness("train", QUICK, "--row", "POTO", "--seed", 0, "--workspace", ws, "--set-file", over,
                                  "--fresh"), env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr  # --fresh sets it aside, as the line says
    assert list((ws / key[0]).glob("checkpoint.*.old.pt"))


def test_a_kill_before_the_first_checkpoint_leaves_no_run_running(tmp_path):
    over = tiny_overrides(tmp_path, iters=400, ckpt=300, size=64)
    ws = tmp_path / "ws"
    cmd = harness("train", QUICK, "--row", "FCOS", "--workspace", ws, "--set-file", over)
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert wait_for(lambda: any(ws.glob("*/progress.json")) and statuses(ws) == ["RUNNING"])
    time.sleep(0.5)
    proc.kill()  # kill -9: no checkpoint, the run stays RUNNING
    proc.communicate(timeout=60)
    (cell,) = [p for p in ws.glob("*/progress.json")]
    (cell.parent / "checkpoint.pt.tmp4242").write_bytes(b"x" * 100)  # a save cut short by the kill
    assert statuses(ws) == ["RUNNING"]
    subprocess.run(cmd, env=ENV, check=True, capture_output=True, timeout=600)  # the retry: a new run
    df = runs(ws, "quickstart")
    assert sorted(df["status"]) == ["FINISHED", "KILLED"]
    killed = df[df["status"] == "KILLED"].iloc[0]
    assert killed["tags.harness.failure"].startswith("worker lost before its first checkpoint")
    assert not list(cell.parent.glob("checkpoint.pt.tmp*"))


def test_a_resume_from_an_older_checkpoint_logs_each_step_once(tmp_path):
    over = tiny_overrides(tmp_path, iters=30, ckpt=10, size=64)
    a, b = tmp_path / "a", tmp_path / "b"
    cmd = ["train", QUICK, "--row", "POTO", "--set-file", over, "--workspace"]
    subprocess.run(harness(*cmd, a), env=ENV, check=True, capture_output=True, timeout=300)
    proc = subprocess.Popen(harness(*cmd, b), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def logged_past_checkpoint():
        df = runs(b, "quickstart")
        return len(df) and any(b.glob("*/checkpoint.pt")) and df.iloc[0].get("metrics.train.total_loss") == \
            df.iloc[0].get("metrics.train.total_loss") and len(history(b, df.iloc[0]["run_id"], "train.total_loss")) >= 14

    assert wait_for(logged_past_checkpoint)
    proc.kill()
    proc.communicate(timeout=60)
    subprocess.run(harness(*cmd, b), env=ENV, check=True, capture_output=True, timeout=300)
    df, ref = runs(b, "quickstart"), runs(a, "quickstart")
    assert list(df["status"]) == ["FINISHED"] and df.iloc[0]["tags.harness.attempt"] == "2"
    steps = [s for s, _ in history(b, df.iloc[0]["run_id"], "train.total_loss")]
    assert steps == list(range(1, 31))  # each step once, the replayed ones not again
    assert history(b, df.iloc[0]["run_id"], "train.total_loss") == history(a, ref.iloc[0]["run_id"], "train.total_loss")


def _tmpfs_available() -> bool:
    if not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"],
                          capture_output=True).returncode == 0


@pytest.mark.skipif(not _tmpfs_available(), reason="needs unshare and tmpfs mounts (user namespaces)")
def test_a_full_disk_fails_the_cell_in_one_line_and_a_rerun_finishes(tmp_path):
    # the workspace on a 3 MiB tmpfs (its own mount namespace): the first checkpoint does not fit;
    # the worker says so, ends its run FAILED and exits; with more room the rerun finishes
    over = tiny_overrides(tmp_path, iters=6, ckpt=3, size=64)
    ws, store = tmp_path / "ws", f"sqlite:///{tmp_path / 'mlflow.db'}"
    ws.mkdir()
    train = " ".join(f"'{a}'" for a in harness("train", QUICK, "--row", "POTO", "--workspace", ws, "--set-file", over,
                                               "--tracking-uri", store))
    script = (f"mount -t tmpfs -o size=3m tmpfs {ws} && {train} > {tmp_path}/first.out 2> {tmp_path}/first.err; "
              f"echo $? > {tmp_path}/first.rc; ls -a {ws}/*/ > {tmp_path}/files.txt; "
              f"mount -o remount,size=64m {ws} && {train} > {tmp_path}/second.out 2>&1; echo $? > {tmp_path}/second.rc")
    subprocess.run(["unshare", "-rm", "sh", "-c", script], env=ENV, timeout=600, check=True)
    err = (tmp_path / "first.err").read_text()
    assert (tmp_path / "first.rc").read_text().strip() == "5", err
    lines = [line for line in err.splitlines() if "no space left" in line]
    assert len(lines) == 1 and "MB free, the checkpoint needs about" in lines[0], err
    assert "Traceback" not in err
    assert ".tmp" not in (tmp_path / "files.txt").read_text()
    assert (tmp_path / "second.rc").read_text().strip() == "0", (tmp_path / "second.out").read_text()
    df = runs_at(store)
    assert sorted(df["status"]) == ["FAILED", "FINISHED"]
    assert df[df["status"] == "FAILED"].iloc[0]["tags.harness.failure"].startswith("no space left on the device")


def runs_at(uri):
    import mlflow

    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(experiment_names=["quickstart"])


def test_only_the_temporary_files_of_a_save_are_leftovers(tmp_path):
    from harness.train import checkpoint as ckpt

    path = tmp_path / "checkpoint.pt"
    (tmp_path / "checkpoint.pt.tmp123").write_bytes(b"")
    (tmp_path / "checkpoint.pt.old").write_bytes(b"")  # not a save's: kept
    assert ckpt.leftovers(path) == [tmp_path / "checkpoint.pt.tmp123"]


def test_a_signal_while_the_run_opens_ends_it_killed(tmp_path, monkeypatch, run_cli):
    # SIGTERM (the scheduler's stop) right after the MLflow run was created, before training: the
    # guard is already in place, so the run ends KILLED instead of staying RUNNING with a dead worker
    import signal

    from harness.train import run as run_mod

    opened = run_mod._start_run

    def opening(s, launch):
        tracker = opened(s, launch)
        os.kill(os.getpid(), signal.SIGTERM)
        return tracker

    monkeypatch.setattr(run_mod, "_start_run", opening)
    over = tiny_overrides(tmp_path, iters=4, ckpt=2, size=64)
    ws = tmp_path / "ws"
    code, _, err = run_cli("train", QUICK, "--row", "POTO", "--workspace", ws, "--set-file", over)
    assert code == 128 + signal.SIGTERM, err
    df = runs(ws, "quickstart")
    assert list(df["status"]) == ["KILLED"] and "SIGTERM" in df.iloc[0]["tags.harness.failure"], df
