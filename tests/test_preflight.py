"""Preflight: `harness run`, `sweep` and `train` check what their cells need before anything starts
or is written: one line per missing thing (deduplicated over the cells), naming the path and the
variable or key that sets it, exit 2, no workspace."""

import os
import subprocess
import sys
import time

import pytest

from harness.spec import Problem, UserError
from tests.conftest import EXPERIMENTS, MINI_SPEC

QUICK = EXPERIMENTS / "quickstart.yaml"
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("HARNESS_")}


@pytest.mark.parametrize("spec, var", [("crowdhuman.yaml", "HARNESS_CROWDHUMAN"), ("coco_ablation.yaml", "HARNESS_COCO")])
def test_a_shipped_spec_without_its_data_is_two_lines_in_seconds(tmp_path, spec, var):
    # 21 (39) cells missing the same data root and weights file: one line each, before any worker
    env = {**CLEAN_ENV, "PYTHONPATH": str(EXPERIMENTS.parent), "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "harness", "run", str(EXPERIMENTS / spec), "--workspace", "ws"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    seconds = time.time() - t0
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert seconds < 10, seconds
    lines = proc.stderr.splitlines()
    assert len(lines) == 2 and all(line.startswith("error: ") for line in lines), proc.stderr
    data, weights = lines
    assert "data.root: no such directory" in data and f"set {var}" in data and "--set data.root=DIR" in data
    assert "weights/R-50.pkl: model.backbone.weights: weights file not found" in weights
    assert "set HARNESS_WEIGHTS" in weights and "--set model.backbone.weights=FILE" in weights
    assert "Traceback" not in proc.stderr and not proc.stdout
    assert sorted(os.listdir(tmp_path)) == []  # no workspace, no mlflow.db


def test_missing_files_under_a_given_root_are_one_line_per_path(run_cli, tmp_path, monkeypatch):
    root = tmp_path / "crowdhuman"
    root.mkdir()
    (root / "annotation_val.odgt").write_text("")  # present: existence only, never read
    monkeypatch.setenv("HARNESS_CROWDHUMAN", str(root))
    monkeypatch.setenv("HARNESS_WEIGHTS", str(tmp_path))
    (tmp_path / "R-50.pkl").write_bytes(b"")
    code, out, err = run_cli("run", EXPERIMENTS / "crowdhuman.yaml", "--workspace", tmp_path / "ws")
    assert code == 2, out + err
    lines = err.splitlines()
    assert lines == [
        f"error: {root}/annotation_train.odgt: data.train.annotations: annotation file not found "
        "(check HARNESS_CROWDHUMAN, or --set data.train.annotations=FILE)",
        f"error: {root}/Images: data.train.images, data.val.images: image folder not found "
        "(check HARNESS_CROWDHUMAN, or --set data.train.images=DIR --set data.val.images=DIR)",
    ], err
    assert not (tmp_path / "ws").exists()


def test_missing_weights_for_run_and_train(run_cli, mini_spec, tmp_path, monkeypatch):
    monkeypatch.delenv("HARNESS_TEST_WEIGHTS", raising=False)
    spec = mini_spec(MINI_SPEC.replace("backbone: {name: tiny}",
                                       'backbone: {name: tiny, weights: "${HARNESS_TEST_WEIGHTS:-nowhere}/w.pth"}'))
    ws = tmp_path / "ws"
    for argv in (["run", spec], ["train", spec, "--row", "A"]):
        code, out, err = run_cli(*argv, "--workspace", ws)
        assert code == 2, out + err
        assert err == ("error: nowhere/w.pth: model.backbone.weights: weights file not found "
                       "(set HARNESS_TEST_WEIGHTS, or --set model.backbone.weights=FILE)\n"), err
        assert not ws.exists()
    # an unset variable without a default names the variable
    spec = mini_spec(MINI_SPEC.replace("backbone: {name: tiny}",
                                       'backbone: {name: tiny, weights: "${HARNESS_TEST_WEIGHTS}/w.pth"}'))
    code, _, err = run_cli("run", spec, "--workspace", ws)
    assert code == 2 and "model.backbone.weights: environment variable HARNESS_TEST_WEIGHTS is not set" in err, err
    assert not ws.exists()


def test_slurm_off_node_is_one_line_and_writes_nothing(run_cli, tmp_path, monkeypatch):
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # no sbatch, squeue, scancel, srun
    code, out, err = run_cli("run", QUICK, "--backend", "slurm", "--workspace", tmp_path / "ws")
    assert code == 2, out + err
    assert err == ("error: --backend: slurm: sbatch, squeue, scancel, srun not on PATH (is this a Slurm login "
                   "node?); on this machine use --backend local\n"), err
    assert not (tmp_path / "ws").exists() and not out
    code, _, err = run_cli("sweep", EXPERIMENTS / "sweep_quickstart.yaml", "--backend", "slurm",
                           "--workspace", tmp_path / "ws")
    assert code == 2 and len(err.splitlines()) == 1 and "sbatch" in err, err
    assert not (tmp_path / "ws").exists()


def test_a_workspace_that_is_a_file_is_refused(run_cli, tmp_path):
    (tmp_path / "ws").write_text("")
    code, _, err = run_cli("run", QUICK, "--workspace", tmp_path / "ws" / "sub")
    assert code == 2 and err.startswith(f"error: {tmp_path}/ws/sub/: --workspace: ") and "is not a folder" in err, err


def test_a_bad_input_reason_reaches_the_result_and_status(run_cli, mini_spec, tmp_path):
    # a worker's bad input (found at run time, e.g. a corrupt file) answers with its first problem;
    # `harness status` shows the cell failed with that reason, not pending (it has no MLflow run)
    from harness.schedule.job import TrainJob
    from harness.spec import expand, load_spec
    from harness.train.result import Outcome, read_result

    spec = mini_spec()
    cell = expand(load_spec(str(spec)), [])[0]
    ws = tmp_path / "ws"
    job = TrainJob.for_cell(cell, spec_file=str(spec), workspace=str(ws), tracking_uri="sqlite:///x.db")
    job.paths().make()
    exc = UserError([Problem("ann.json", None, "data.train.annotations", "not JSON"), Problem(None, None, "x", "y")])
    job.answer_bad_input(cell, exc)
    result = read_result(job.paths().result)
    assert result.outcome is Outcome.BAD_INPUT
    assert result.message == "ann.json: data.train.annotations: not JSON (and 1 more problems: see the log)"
    code, out, err = run_cli("status", spec, "--workspace", ws)
    assert code == 0, err
    row = next(line for line in out.splitlines() if cell.id in line)
    assert "failed" in row and "bad input" in row and "pending" not in row, out
    assert "1 failed" in out and "3 pending" in out, out
