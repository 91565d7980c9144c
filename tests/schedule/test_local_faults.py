"""`harness run` with real processes: kill -9 a job, kill the scheduler, NaN and exploding
cells, two schedulers at once, and a second run that trains nothing."""

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.train.helpers import history, runs

pytestmark = pytest.mark.slow
ENV = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1", "HARNESS_HEARTBEAT_S": "2"}

SPEC = """\
name: sched
base:
  model:
    num_classes: 10
    backbone: {{name: tiny, weights: null, norm: gn, tiny_width: 8, input_format: torchvision_rgb, freeze_at: 0}}
    fpn: {{channels: 32}}
    head: {{num_convs: 1, gn_groups: 8}}
    predictor: {{assigner: {{name: poto}}, loss: {{box_weight: 2.0}}}}
  data:
    name: synthetic
    synthetic: {{num_train: 8, num_val: 4, min_size: 96, max_size: 96, format: coco, seed: 0}}
    train_min_size: [96]
    train_max_size: 96
    test_min_size: 96
    test_max_size: 96
    num_workers: 0
  train: {{max_iter: {iters}, base_lr: 0.01, ims_per_batch: 2, reference_batch: 2, warmup_iters: 1,
          checkpoint_period: {ckpt}}}
  eval: {{nms: false}}
  tracking: {{log_period: 1}}
  resources: {{gpus: 0, max_attempts: 2}}
axes:
  method:
    poto: {{}}
    fcos: {{model.predictor: {{assigner: {{name: fcos}}, centerness: reg}}, eval.nms: true}}
    nan: {{train.base_lr: 1.0e+30, train.warmup_iters: 0}}
    # the loss explodes (EMA ~18 against a minimum of ~3) and stays finite: train.health flags it
    explode: {{train.base_lr: 10.0, train.clip_grad_norm: 100.0, train.warmup_iters: 10}}
rows:
{rows}
seeds: [0]
"""


def write_spec(tmp_path, rows=("A:poto", "B:fcos", "C:poto"), iters=6, ckpt=2):
    lines = []
    for i, r in enumerate(rows):
        label, method = r.split(":")
        # a distinct gamma per row: rows with one method would otherwise share a run key
        lines.append(f"  - {{label: {label}, method: {method}, overrides: {{train.gamma: {0.1 + i / 100}}}}}")
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC.format(iters=iters, ckpt=ckpt, rows="\n".join(lines)))
    return path


def harness_run(spec, ws, *extra):
    return [sys.executable, "-m", "harness", "run", str(spec), "--workspace", str(ws), *map(str, extra)]


def one_finished_run_per_cell(ws, n):
    df = runs(ws, "sched")
    assert df["tags.harness.run_key"].nunique() == n
    assert len(df) == n, df[["tags.harness.row", "status"]]
    assert set(df["status"]) == {"FINISHED"}
    return df


def wait_for(predicate, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_second_run_trains_nothing(tmp_path):
    spec = write_spec(tmp_path, rows=("A:poto", "B:fcos"))
    ws = tmp_path / "ws"
    first = subprocess.run(harness_run(spec, ws, "--jobs", 2), env=ENV, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "summary" in first.stdout and "2 finished" in first.stdout
    second = subprocess.run(harness_run(spec, ws, "--jobs", 2), env=ENV, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0
    assert "0 to run, 2 already finished" in second.stdout and "nothing to train" in second.stdout
    one_finished_run_per_cell(ws, 2)


def test_kill_9_a_job_is_retried_and_resumes(tmp_path):
    spec = write_spec(tmp_path, rows=("A:poto",), iters=60, ckpt=4)
    ws = tmp_path / "ws"
    proc = subprocess.Popen(harness_run(spec, ws), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert wait_for(lambda: list(ws.glob("*/checkpoint.pt")))
    lock = next(ws.glob("*/lock"))
    pid = int(lock.read_text().strip())
    os.kill(pid, signal.SIGKILL)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    assert "retrying" in out
    df = one_finished_run_per_cell(ws, 1)
    r = df.iloc[0]
    assert r["tags.harness.attempt"] == "2"
    points = history(ws, r["run_id"], "train.total_loss")
    assert sorted({s for s, _ in points}) == list(range(1, 61))  # continuous
    by_step: dict = {}
    for s, v in points:  # steps replayed after the checkpoint carry the same values
        assert by_step.setdefault(s, v) == v


def test_kill_the_scheduler_then_continue(tmp_path):
    spec = write_spec(tmp_path, rows=("A:poto", "B:fcos", "C:poto"), iters=40, ckpt=4)
    ws = tmp_path / "ws"
    proc = subprocess.Popen(harness_run(spec, ws, "--jobs", 1), env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)

    def first_done_second_started():
        try:
            df = runs(ws, "sched")
        except Exception:
            return False
        return (df["status"] == "FINISHED").sum() >= 1 and len(df) >= 2
    assert wait_for(first_done_second_started, timeout=300)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, out
    df = runs(ws, "sched")
    assert set(df["status"]) <= {"FINISHED", "KILLED"} and "RUNNING" not in set(df["status"])
    finished_before = set(df.loc[df["status"] == "FINISHED", "tags.harness.run_key"])
    again = subprocess.run(harness_run(spec, ws, "--jobs", 1), env=ENV, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"{len(finished_before)} already finished" in again.stdout
    one_finished_run_per_cell(ws, 3)


def test_nan_cell_fails_the_others_finish(tmp_path):
    spec = write_spec(tmp_path, rows=("A:poto", "N:nan"))
    ws = tmp_path / "ws"
    proc = subprocess.run(harness_run(spec, ws, "--jobs", 2), env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1
    assert "FAILED N/synthetic/0: diverged: non-finite loss" in proc.stdout
    assert "(exit 3: diverged (non-finite loss), not retried, attempt 1 in MLflow;" in proc.stdout
    df = runs(ws, "sched").set_index("tags.harness.row")
    assert df.loc["A", "status"] == "FINISHED" and df.loc["N", "status"] == "FAILED"
    assert df.loc["N", "tags.harness.attempt"] == "1"  # divergence is not retried


def test_exploding_cell_fails_diverged_and_is_not_retried(tmp_path):
    # flagged at iteration 41-42 on AVX-512, AVX2 and scalar kernels, 1 or 2 threads; 120 leaves
    # room for another CPU's rounding before the end of the schedule
    spec = write_spec(tmp_path, rows=("X:explode",), iters=120, ckpt=1000)
    ws = tmp_path / "ws"
    proc = subprocess.run(harness_run(spec, ws), env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 failed (1 diverged)" in proc.stdout
    assert "FAILED X/synthetic/0: diverged: total loss EMA" in proc.stdout
    assert "(exit 4: diverged (health rule), not retried, attempt 1 in MLflow;" in proc.stdout
    assert "retrying" not in proc.stdout
    r = runs(ws, "sched").iloc[0]
    assert r["status"] == "FAILED" and r["tags.harness.attempt"] == "1"
    reason = r["tags.harness.failure"]
    assert reason.startswith("diverged: total loss EMA ") and int(reason.rsplit(" ", 1)[1]) < 120
    status = subprocess.run([sys.executable, "-m", "harness", "status", str(spec), "--workspace", str(ws)],
                            env={**ENV, "COLUMNS": "250"}, capture_output=True, text=True, timeout=300)
    assert status.returncode == 0
    assert "failed" in status.stdout and reason in status.stdout  # the whole reason, iteration included


def test_two_schedulers_at_once_run_each_cell_once(tmp_path):
    spec = write_spec(tmp_path, rows=("A:poto", "B:fcos", "C:poto"), iters=10)
    ws = tmp_path / "ws"
    procs = [subprocess.Popen(harness_run(spec, ws, "--jobs", 1), env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=900)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    one_finished_run_per_cell(ws, 3)


def test_editing_the_spec_while_cells_are_queued_changes_nothing_planned(tmp_path):
    # issue 27: the queue is planned once; a worker trains the resolved cell the scheduler wrote
    # (job.json), not the spec file as it reads when the worker starts
    from harness.spec import expand, load_spec

    spec = write_spec(tmp_path, rows=("A:poto", "B:fcos", "C:poto"), iters=20, ckpt=1000)
    planned = {c.run_key: c.config.train.base_lr for c in expand(load_spec(spec))}
    ws = tmp_path / "ws"
    proc = subprocess.Popen(harness_run(spec, ws, "--jobs", 1), env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert wait_for(lambda: len(list(ws.glob("*/log.txt"))) >= 1, timeout=300)  # the first cell started
    spec.write_text(spec.read_text().replace("base_lr: 0.01", "base_lr: 0.02"))  # cells 2 and 3 still queued
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    assert "3 finished" in out, out
    df = one_finished_run_per_cell(ws, 3)
    assert set(df["tags.harness.run_key"]) == set(planned)
    assert {float(v) for v in df["params.train.base_lr"]} == {0.01} == set(planned.values())
