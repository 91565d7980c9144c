"""The Slurm backend: rendered submitit parameters (everywhere) and a real single-node Slurm."""

import re
import subprocess
import sys

import pytest

from harness.schedule.slurm import slurm_parameters
from harness.spec.schema import ResourcesConfig
from tests.schedule.test_local_faults import ENV, wait_for, write_spec
from tests.train.helpers import runs


def test_rendered_submitit_parameters(tmp_path):
    from submitit.slurm.slurm import _make_sbatch_string

    res = ResourcesConfig.model_validate({"gpus": 8, "slurm": {"partition": "gpu", "time_min": 1440, "cpus_per_gpu": 8,
                                                              "mem_gb": 64, "account": "det", "qos": "high"}})
    params = slurm_parameters(res)
    assert params["gpus_per_node"] == 8 and params["cpus_per_task"] == 64
    text = _make_sbatch_string(command="python -m harness train", folder=tmp_path, **params)
    for line in ("#SBATCH --partition=gpu", "#SBATCH --time=1440", "#SBATCH --gpus-per-node=8",
                 "#SBATCH --cpus-per-task=64", "#SBATCH --mem=64GB", "#SBATCH --account=det", "#SBATCH --qos=high",
                 "#SBATCH --requeue", "#SBATCH --signal=USR2@120"):
        assert line in text, line
    cpu = slurm_parameters(ResourcesConfig.model_validate({"gpus": 0, "slurm": {"cpus": 2}}))
    assert "gpus_per_node" not in cpu and cpu["cpus_per_task"] == 2 and "partition" not in cpu


SLURM_RES = 'resources: {gpus: 0, max_attempts: 2, slurm: {cpus: 1, mem_gb: 1, time_min: 30}}'


def slurm_spec(tmp_path, rows, iters, ckpt=4):
    spec = write_spec(tmp_path, rows=rows, iters=iters, ckpt=ckpt)
    spec.write_text(spec.read_text().replace("  resources: {gpus: 0, max_attempts: 2}", "  " + SLURM_RES))
    return spec


def harness(*args):
    return [sys.executable, "-m", "harness", *map(str, args)]


def job_ids(out: str) -> list[str]:
    return re.findall(r"submitted as Slurm job (\S+)", out)


@pytest.mark.slow
def test_slurm_runs_the_cells(slurm, tmp_path):
    spec = slurm_spec(tmp_path, ("A:poto", "B:fcos"), iters=4)
    ws = tmp_path / "ws"
    proc = subprocess.run(harness("run", spec, "--backend", "slurm", "--workspace", ws), env={**ENV, **slurm},
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(job_ids(proc.stdout)) == 2
    df = runs(ws, "sched")
    assert len(df) == 2 and set(df["status"]) == {"FINISHED"}
    assert df["tags.harness.slurm_job"].notna().all()


@pytest.mark.slow
@pytest.mark.parametrize("how", ["scancel", "requeue"])
def test_slurm_job_cancelled_or_requeued_resumes(slurm, tmp_path, how):
    spec = slurm_spec(tmp_path, ("A:poto",), iters=120, ckpt=4)
    ws = tmp_path / "ws"
    env = {**ENV, **slurm}
    sub = subprocess.run(harness("run", spec, "--backend", "slurm", "--workspace", ws, "--detach"), env=env,
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert sub.returncode == 0, sub.stdout + sub.stderr
    (job,) = job_ids(sub.stdout)
    assert wait_for(lambda: list(ws.glob("*/checkpoint.pt")))
    first = runs(ws, "sched").iloc[0]
    if how == "scancel":
        subprocess.run(["scancel", job], env=env, check=True)
        assert wait_for(lambda: runs(ws, "sched").iloc[0]["status"] == "KILLED", timeout=120)
        assert "SIGTERM" in runs(ws, "sched").iloc[0]["tags.harness.failure"]
        again = subprocess.run(harness("run", spec, "--backend", "slurm", "--workspace", ws), env=env,
                               capture_output=True, text=True, timeout=900, cwd=tmp_path)
        assert again.returncode == 0, again.stdout + again.stderr
    else:
        subprocess.run(["scontrol", "requeue", job], env=env, check=True)
        # a requeued job waits about two minutes before it may start again (Slurm's begin time);
        # the test does not need to wait: make it eligible now once it is pending
        wait_for(lambda: "PENDING" in subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], env=env,
                                                     capture_output=True, text=True).stdout, timeout=60)
        subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], env=env, capture_output=True)
        assert wait_for(lambda: runs(ws, "sched").iloc[0]["status"] == "FINISHED", timeout=900)
    df = runs(ws, "sched")
    assert len(df) == 1
    r = df.iloc[0]
    assert r["status"] == "FINISHED" and r["run_id"] == first["run_id"]
    assert int(r["tags.harness.attempt"]) >= 2


@pytest.mark.slow
def test_slurm_backend_stop_is_how_a_pruned_trial_ends(slurm, tmp_path, monkeypatch):
    """The sweep prunes a Slurm trial through `SlurmBackend.stop`: the job gets SIGTERM, the
    trainer checkpoints and ends its run KILLED, and poll reports it killed by SIGTERM, read from
    the cell's result.json."""
    from harness.schedule.backend import Submission
    from harness.schedule.job import TrainJob
    from harness.schedule.slurm import SlurmBackend
    from harness.schedule.state import prepare_store
    from harness.spec import expand, load_spec
    from harness.train.result import Outcome, read_result

    for key, value in {**ENV, **slurm}.items():
        monkeypatch.setenv(key, value)
    spec = slurm_spec(tmp_path, ("A:poto",), iters=400, ckpt=4)
    ws = tmp_path / "ws"
    ws.mkdir()
    uri = f"sqlite:///{ws / 'mlflow.db'}"
    prepare_store(uri, "sched", ws)
    (cell,) = expand(load_spec(spec))
    backend = SlurmBackend(str(ws), refresh_s=0.5)
    job = TrainJob.for_cell(cell, spec_file=str(spec), workspace=str(ws), tracking_uri=uri)
    (handle,) = backend.submit_many([Submission(job, cell.config.resources)])
    assert backend.poll(handle) is None
    assert wait_for(lambda: list(ws.glob("*/checkpoint.pt")), timeout=300)
    assert backend.started(handle)
    backend.stop(handle)
    assert wait_for(lambda: backend.poll(handle) is not None, timeout=120)
    result = backend.poll(handle)
    assert result.outcome is Outcome.KILLED and result.signal == 15 and result.exit_code == 128 + 15
    assert read_result(job.paths().result) == result  # the worker's own answer, not the exit status
    run = runs(ws, "sched").iloc[0]
    assert run["status"] == "KILLED" and "SIGTERM" in run["tags.harness.failure"]
    assert int(run["params.train.max_iter"]) == 400
