"""`harness run --until-decided` on a small real spec: a huge effect (recall without NMS against
an NMS at IoU 0.05 in crowded scenes: about 0.78 against 0.16) is decided at the first look,
two rows that differ only in a setting with no effect on training never "hold" against each other
(their runs are identical, t = 0: the default design stops that claim for futility at the first
look, and without futility stopping it runs to the cap), and a kill -9 of the procedure mid-look,
then a rerun, trains no cell twice and ends with the same decisions as a run that was never
killed."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from harness.report.sequential import FUTILITY
from tests.schedule.conftest import slurm  # noqa: F401 - the cluster fixture, for the Slurm case
from tests.train.helpers import runs

pytestmark = pytest.mark.slow
ENV = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}

SPEC = """\
name: ud
base:
  model:
    num_classes: 1
    backbone: {name: tiny, weights: null, norm: gn, tiny_width: 8, input_format: torchvision_rgb, freeze_at: 0,
               pretrain: null}
    fpn: {channels: 32}
    head: {num_convs: 1, gn_groups: 8}
    predictor: {assigner: {name: poto}}
  data:
    name: synthetic
    synthetic: {num_train: 16, num_val: 8, min_size: 64, max_size: 64, format: odgt, crowd: high, seed: 0}
    train_min_size: [64]
    train_max_size: 64
    test_min_size: 64
    test_max_size: 64
    num_workers: 0
  train: {max_iter: 20, steps: [], warmup_iters: 5, ims_per_batch: 4, reference_batch: 4, checkpoint_period: 10,
          base_lr: 0.003, optimizer: adamw, weight_decay: 0.05, clip_grad_norm: 1.0}
  eval: {nms: false, metrics: crowdhuman, period: 0}
  tracking: {log_period: 10}
axes:
  method:
    poto: {eval.nms_thresh: 0.05}   # an NMS that removes most true boxes of a crowd: a huge effect
    poto_b: {train.checkpoint_period: 20}   # changes nothing trained: a null effect
rows:
  - {label: POTO, table: t, method: poto, baseline: true}
  - {label: POTO-B, table: t, method: poto_b}
tables:
  t:
    title: T
    layout: quickstart
    claims:
      - {row: POTO, post: nms_free, vs: POTO, vs_post: nms, metric: recall, expect: better}
      - {row: POTO-B, post: nms_free, vs: POTO, vs_post: nms_free, metric: ap50, expect: better}
    decide: {looks: [3, 5], spending: pocock}
seeds: [0, 1, 2]
"""


def harness(*args):
    return [sys.executable, "-m", "harness", *map(str, args)]


def plain(spec):
    """The spec's design without futility stopping (`futility: null`): its null claim goes on to
    the second look, which the kill needs."""
    out = spec.with_name("ud_plain.yaml")
    out.write_text(spec.read_text().replace("spending: pocock}", "spending: pocock, futility: null}"))
    return out


def decisions(spec, ws, out):
    subprocess.run(harness("decide", spec, "--workspace", ws, "--json", out), env=ENV, check=True,
                   capture_output=True, timeout=120)
    return json.loads(out.read_text())["tables"][0]


@pytest.mark.parametrize("backend", ["local", "slurm"])
def test_until_decided_decides_and_a_kill_changes_nothing(tmp_path, backend, request):
    env = ENV
    spec = tmp_path / "ud.yaml"
    spec.write_text(SPEC)
    if backend == "slurm":  # the real single-node cluster of tests/schedule/conftest.py
        env = {**ENV, **request.getfixturevalue("slurm")}
        spec.write_text(SPEC.replace("  tracking: {log_period: 10}\n", "  tracking: {log_period: 10}\n"
                                     "  resources: {gpus: 0, max_attempts: 2, slurm: {cpus: 1, mem_gb: 1, time_min: 30}}\n"))
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    cmd = ["run", spec, "--until-decided", "--backend", backend, "--jobs", "2", "--workspace"]
    done = subprocess.run(harness(*cmd, clean), env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "every claim is decided, at its cap or stopped for futility" in done.stdout
    table = decisions(spec, clean, tmp_path / "futile.json")
    huge, null = table["claims"]
    assert huge["verdict"] == "holds" and len(huge["looks"]) == 1 and huge["seeds"] == 3, huge
    # the default design: the null claim stops at look 1 exactly when its t there is below the threshold
    (first,) = null["looks"][:1]
    assert first["t_futility"] == FUTILITY
    weak = first["t"][0] < FUTILITY
    assert (null["verdict"] == "stopped for futility") == weak and null["verdict"] != "holds", null
    assert not null["holds"] and null["seeds"] == (3 if weak else 5) and len(null["looks"]) == (1 if weak else 2)
    df = runs(clean, "ud")
    trained = df[df["tags.harness.run_key"].notna()]
    seeds = trained.groupby("tags.harness.row")["tags.harness.seed"].apply(lambda s: sorted(map(int, s))).to_dict()
    assert seeds == {row: list(range(3 if weak else 5)) for row in ("POTO", "POTO-B")}  # a futile claim: no seeds
    record = df[df["tags.harness.decision"] == "ud"].iloc[0]
    assert json.loads(record["tags.harness.decide.t.look1"])["claims"] == {"0": "holds", "1": null["looks"][0]["verdict"]}

    # the kill below starts from a copy of this look-1 store: it retrains nothing look 1 trained
    shutil.copytree(clean, killed)

    # without futility stopping the same procedure goes on from the same store to the cap
    spec = plain(spec)
    cmd[1] = spec
    done = subprocess.run(harness(*cmd, clean), env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = decisions(spec, clean, tmp_path / "clean.json")
    huge, null = table["claims"]
    assert huge["verdict"] == "holds" and len(huge["looks"]) == 1 and huge["seeds"] == 3, huge
    assert null["verdict"] not in ("holds", "stopped for futility") and null["seeds"] == 5, null
    assert null["looks"][0]["t"] == first["t"]
    df = runs(clean, "ud")
    trained = df[df["tags.harness.run_key"].notna()]
    assert trained["tags.harness.run_key"].is_unique and set(trained["status"]) == {"FINISHED"}
    seeds = trained.groupby("tags.harness.row")["tags.harness.seed"].apply(lambda s: sorted(map(int, s))).to_dict()
    assert seeds == {"POTO": [0, 1, 2, 3, 4], "POTO-B": [0, 1, 2, 3, 4]}
    record = df[df["tags.harness.decision"] == "ud"].iloc[0]
    assert json.loads(record["tags.harness.decide.t.look2"])["seeds"] == 5

    # the same procedure from the look-1 copy, its scheduler killed -9 once the second look's cells train
    proc = subprocess.Popen(harness(*cmd, killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline:
        time.sleep(1)
        if (killed / "mlflow.db").exists():
            df = runs(killed, "ud")
            if len(df) and (df.get("tags.harness.seed") == "3").any():
                break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    again = subprocess.run(harness(*cmd, killed), env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    df = runs(killed, "ud")
    trained = df[df["tags.harness.run_key"].notna()]
    assert "RUNNING" not in set(trained["status"])
    finished = trained[trained["status"] == "FINISHED"]
    assert finished["tags.harness.run_key"].is_unique  # no cell trained twice to its end
    assert set(finished["tags.harness.run_key"]) == set(runs(clean, "ud").dropna(subset=["tags.harness.run_key"])
                                                        ["tags.harness.run_key"])
    after = decisions(spec, killed, tmp_path / "killed.json")
    assert after["claims"] == table["claims"] and after["next"] == table["next"]
