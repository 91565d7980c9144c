"""`harness sweep`: bad input before any trial; an end-to-end sweep killed midway and resumed."""

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.schedule.test_local_faults import write_spec
from tests.train.helpers import runs

ENV = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}

SWEEP = """\
name: tiny_sweep
experiment: spec.yaml
row: A
seeds: [0]
space:
  train.base_lr: {{type: float, low: 0.0001, high: 0.05, log: true}}
  model.predictor.loss.box_weight: {{type: float, low: 1.0, high: 4.0}}
objective: {{metric: {metric}, direction: {direction}}}
n_trials: {n}
sampler: {{seed: 0, n_startup_trials: 2}}
pruner: {{n_startup_trials: 1, n_warmup_steps: 0}}
overrides: {{train.max_iter: 8, eval.period: 2, data.synthetic.format: odgt, model.num_classes: 1,
            eval.metrics: crowdhuman}}
"""


def load_study(ws):
    """The sweep's study from its journal in the workspace, and Optuna's trial states."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    study = optuna.load_study(study_name="tiny_sweep",
                              storage=JournalStorage(JournalFileBackend(str(ws / "optuna" / "tiny_sweep.journal"))))
    return study, optuna.trial.TrialState


def kill_midway(cmd, env, cwd, ended: int) -> None:
    """Start the sweep driver; SIGTERM it once `ended` trials ended and two more are running."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd)
    lines = []
    deadline = time.time() + 300
    while time.time() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        done = sum("eval.nms_free.mmr =" in x or "pruned at" in x for x in lines)
        if done >= ended and sum(": started" in x for x in lines) >= done + 2:
            break
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, "".join(lines) + rest


def sweep_file(tmp_path, n=6, metric="eval.nms_free.mmr", direction="minimize", extra="", confirm=False):
    write_spec(tmp_path, rows=("A:poto",), iters=8, ckpt=2)
    path = tmp_path / "sweep.yaml"
    text = SWEEP.format(n=n, metric=metric, direction=direction) + extra
    if confirm:  # search on the table's 4 images, confirm on 4 held-out ones with fresh seeds
        text = text.replace("seeds: [0]\n", "search: {seeds: [0], val_images: [0, 4]}\n"
                                            "confirm: {seeds: [5, 6, 7], val_images: [4, 8], top_k: 1}\n")
        text = text.replace("eval.metrics: crowdhuman}", "eval.metrics: crowdhuman, data.synthetic.num_val: 8}")
    path.write_text(text)
    return path


def tiny_study_spec(tmp_path, sweep: str, iters=30):
    """A spec whose cells score a few percent AP50 in seconds (32 training images; its table: 4
    validation images, the sweep's splits beyond them)."""
    spec = write_spec(tmp_path, rows=("A:poto",), iters=iters, ckpt=iters)
    spec.write_text(spec.read_text().replace("num_train: 8,", "num_train: 32,"))
    path = tmp_path / "sweep.yaml"
    path.write_text(sweep)
    return path


NO_EFFECT = """\
name: tiny_sweep
experiment: spec.yaml
row: A
search: {seeds: [10, 11], val_images: [4, 20]}
confirm: {seeds: [20, 21, 22], val_images: [20, 40], top_k: 1}
space:
  # +-1 % of the learning rate: no effect on the result beyond the run-to-run noise it reshuffles
  train.base_lr: {type: float, low: 0.0099, high: 0.0101}
objective: {metric: eval.nms_free.ap50, direction: maximize}
n_trials: 5
sampler: {seed: 0, n_startup_trials: 5}
pruner: {type: none}
overrides: {data.synthetic.format: odgt, model.num_classes: 1, eval.metrics: crowdhuman,
            data.synthetic.num_val: 40}
"""


@pytest.mark.slow
def test_a_parameter_without_effect_looks_better_on_search_and_is_not_confirmed(tmp_path):
    import json

    path = tiny_study_spec(tmp_path, NO_EFFECT)
    ws, out = tmp_path / "ws", tmp_path / "reports"
    cmd = [sys.executable, "-m", "harness", "sweep", str(path), "--workspace", str(ws), "--jobs", "2",
           "--out-dir", str(out)]
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads((out / "sweep_tiny_sweep.json").read_text())
    conf = data["confirmation"]
    rows = {r["label"]: r for r in conf["trials"]}
    search_best = max((t for t in data["trials"] if t["state"] == "COMPLETE"), key=lambda t: t["mean"])
    # the search split shows a gain: the best of 5 noisy trials beats the defaults there ...
    assert search_best["number"] != 0 and rows[f"trial {search_best['number']}"]["gain_search"] > 0
    # ... which the fresh seeds and images do not confirm
    assert conf["outcome"].startswith("no better than the defaults"), conf["outcome"]
    assert not conf["better"] and conf["recommended"]["label"] == "defaults"
    assert all(r["confirm"]["n"] == 3 for r in conf["trials"]) and len(conf["trials"]) == 2
    md = (out / "sweep_tiny_sweep.md").read_text()
    assert "## Confirmation" in md and "**Outcome: no better than the defaults" in md and "± " in md
    assert "No parameter-importance plot: 5 complete trials" in md
    assert (out / "sweep_tiny_sweep_best.yaml").read_text().count("train.base_lr: 0.01\n") == 1
    # every confirmation run is a child of the sweep's run, tagged with its phase and trial
    df = runs(ws, "sched")
    parent = df[df["tags.harness.sweep_parent"] == "tiny_sweep"].iloc[0]
    assert parent["status"] == "FINISHED" and parent["tags.confirm.outcome"].startswith("no better")
    kids = df[df["tags.mlflow.parentRunId"] == parent["run_id"]]
    confirm = kids[kids["tags.harness.sweep_phase"] == "confirm"]
    assert len(confirm) == 6 and set(confirm["status"]) == {"FINISHED"}
    assert set(confirm["tags.harness.seed"].astype(int)) == {20, 21, 22}
    assert len(kids[kids["tags.harness.sweep_phase"] == "search"]) == 10
    # a rerun trains nothing again: the same outcome from the finished runs
    again = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert again.returncode == 0 and conf["outcome"] in again.stdout, again.stdout + again.stderr
    assert len(runs(ws, "sched")) == len(df)


RACING = """\
name: tiny_sweep
experiment: spec.yaml
row: A
search: {seeds: [10, 11, 12], val_images: [4, 20]}
space:
  # every value far below the defaults' 0.01 (trial 0): a clearly worse configuration
  train.base_lr: {type: float, low: 1.0e-7, high: 2.0e-7, log: true}
objective: {metric: eval.nms_free.ap50, direction: maximize}
n_trials: 2
pruner: {type: racing, p_threshold: 0.3, n_startup_steps: 2}
overrides: {data.synthetic.format: odgt, model.num_classes: 1, eval.metrics: crowdhuman,
            data.synthetic.num_val: 40}
"""


@pytest.mark.slow
def test_the_racing_pruner_stops_a_clearly_worse_configuration_within_the_search_seeds(tmp_path):
    path = tiny_study_spec(tmp_path, RACING)
    ws = tmp_path / "ws"
    cmd = [sys.executable, "-m", "harness", "sweep", str(path), "--workspace", str(ws), "--jobs", "1",
           "--out-dir", str(tmp_path / "reports")]
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "trial 1: pruned after 2 of 3 seeds" in done.stdout, done.stdout
    study, states = load_study(ws)
    first, second = study.trials
    assert first.state == states.COMPLETE and sorted(first.intermediate_values) == [0, 1, 2]
    assert second.state == states.PRUNED and sorted(second.intermediate_values) == [0, 1]
    assert all(second.intermediate_values[i] < first.intermediate_values[i] for i in (0, 1))
    df = runs(ws, "sched")
    trial1 = df[df["tags.harness.trial"] == "1"]
    # its third seed never started; the two it ran finished and keep their results
    assert sorted(trial1["tags.harness.seed"].astype(int)) == [10, 11] and set(trial1["status"]) == {"FINISHED"}


@pytest.mark.parametrize("edit, message", [
    ({"metric": "eval.nope"}, "does not produce 'eval.nope'"),
    ({"extra": "", "space": "model.predictor.loss.box_wieght"}, "unknown key 'box_wieght'"),
    ({"extra": "", "lowhigh": True}, "low 0.05 > high 0.0001"),
])
def test_bad_sweep_input_exits_2_before_any_trial(run_cli, tmp_path, edit, message):
    path = sweep_file(tmp_path, metric=edit.get("metric", "eval.nms_free.mmr"))
    text = path.read_text()
    if "space" in edit:
        text = text.replace("model.predictor.loss.box_weight", edit["space"])
    if edit.get("lowhigh"):
        text = text.replace("low: 0.0001, high: 0.05", "low: 0.05, high: 0.0001")
    path.write_text(text)
    code, _, err = run_cli("sweep", path, "--workspace", tmp_path / "ws")
    assert code == 2 and message in err, err
    assert not (tmp_path / "ws").exists()


@pytest.mark.slow
def test_sweep_killed_midway_and_resumed(tmp_path):
    path = sweep_file(tmp_path, n=6)
    ws, out = tmp_path / "ws", tmp_path / "reports"
    cmd = [sys.executable, "-m", "harness", "sweep", str(path), "--workspace", str(ws), "--jobs", "2",
           "--out-dir", str(out)]
    kill_midway(cmd, ENV, tmp_path, ended=2)  # two trials ended and two more running
    again = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr

    study, states = load_study(ws)
    assert sum(t.state in (states.COMPLETE, states.PRUNED) for t in study.trials) == 6
    # the trials running at the kill were adopted, not failed and re-enqueued: each parameter set once
    assert not [t for t in study.trials if t.state == states.FAIL and "run_keys" in t.user_attrs]
    params = [tuple(sorted(t.params.items())) for t in study.trials if "run_keys" in t.user_attrs]
    assert len(params) == len(set(params)) == 6
    assert "continued" in again.stdout
    assert "RUNNING" not in set(runs(ws, "sched")["status"])
    df = runs(ws, "sched")
    parent = df[df["tags.harness.sweep_parent"] == "tiny_sweep"]
    assert len(parent) == 1 and parent.iloc[0]["status"] == "FINISHED"
    children = df[df["tags.mlflow.parentRunId"] == parent.iloc[0]["run_id"]]
    assert len(children) >= 6
    # no parameter set trained twice: one MLflow run per run key
    assert children["tags.harness.run_key"].value_counts().max() == 1
    pruned = [t for t in study.trials if t.state == states.PRUNED]
    for t in pruned:
        (key,) = t.user_attrs["run_keys"]
        row = children[children["tags.harness.run_key"] == key].iloc[0]
        assert row["status"] == "KILLED" and row["tags.harness.failure"].startswith("pruned by Optuna")
    assert (out / "sweep_tiny_sweep.md").exists() and (out / "sweep_tiny_sweep_history.png").exists()
    assert "best" in parent.iloc[0]["tags.best.trial"] or parent.iloc[0]["tags.best.trial"].isdigit()
    assert (out / "sweep_tiny_sweep_best.yaml").exists()


@pytest.mark.slow
def test_sweep_on_slurm_prunes_and_resumes(slurm, tmp_path):
    """`harness sweep --backend slurm`: trials are Slurm jobs on the real single-node cluster; the
    driver is killed midway and rerun, and the study ends with exactly n_trials trials."""
    from tests.schedule.test_slurm import SLURM_RES

    path = sweep_file(tmp_path, n=5, confirm=True)
    spec = tmp_path / "spec.yaml"
    spec.write_text(spec.read_text().replace("  resources: {gpus: 0, max_attempts: 2}", "  " + SLURM_RES))
    ws, out = tmp_path / "ws", tmp_path / "reports"
    env = {**ENV, **slurm}
    cmd = [sys.executable, "-m", "harness", "sweep", str(path), "--backend", "slurm", "--workspace", str(ws),
           "--jobs", "2", "--out-dir", str(out)]
    kill_midway(cmd, env, tmp_path, ended=1)  # one trial ended and two more running
    queue = subprocess.run(["squeue", "-h"], env=env, capture_output=True, text=True)
    assert queue.stdout.strip() == "", "the stopped driver left Slurm jobs behind: " + queue.stdout
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr

    study, states = load_study(ws)
    assert sum(t.state in (states.COMPLETE, states.PRUNED) for t in study.trials) == 5
    df = runs(ws, "sched")
    assert "RUNNING" not in set(df["status"])
    parent = df[df["tags.harness.sweep_parent"] == "tiny_sweep"]
    children = df[df["tags.mlflow.parentRunId"] == parent.iloc[0]["run_id"]]
    assert children["tags.harness.slurm_job"].notna().all(), "every trial ran as a Slurm job"
    assert children["tags.harness.run_key"].value_counts().max() == 1  # nothing trained twice
    for t in study.trials:
        if t.state == states.PRUNED:
            (key,) = t.user_attrs["run_keys"]
            row = children[children["tags.harness.run_key"] == key].iloc[0]
            assert row["status"] == "KILLED" and row["tags.harness.failure"].startswith("pruned by Optuna")
    # the confirmation step ran as Slurm jobs too: the best trial and the defaults on 3 fresh seeds
    confirm = children[children["tags.harness.sweep_phase"] == "confirm"]
    assert len(confirm) in (3, 6) and set(confirm["status"]) == {"FINISHED"}
    assert set(confirm["tags.harness.seed"].astype(int)) == {5, 6, 7}
    assert "## Confirmation" in (out / "sweep_tiny_sweep.md").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("worker", ["alive", "finished"])
def test_a_sweep_driver_killed_hard_is_continued_without_duplicates(tmp_path, worker):
    # kill -9 of the driver during trial 0: its worker lives on (its own session). The rerun adopts
    # trial 0 (waiting for the orphaned worker, or reading its finished run), runs the rest, and
    # trains no parameter set twice
    path = sweep_file(tmp_path, n=3, extra="")
    path.write_text(path.read_text().replace("train.max_iter: 8", "train.max_iter: 40"))
    ws = tmp_path / "ws"
    cmd = [sys.executable, "-m", "harness", "sweep", str(path), "--workspace", str(ws), "--jobs", "1",
           "--out-dir", str(tmp_path / "reports")]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    deadline = time.time() + 300
    while time.time() < deadline and not list(ws.glob("*/progress.json")):
        time.sleep(0.1)
    proc.kill()
    proc.wait(timeout=60)
    (lock,) = ws.glob("*/lock")
    if worker == "finished":
        from harness.train.lock import is_locked

        while time.time() < deadline and is_locked(lock):
            time.sleep(0.2)
    again = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "trial 0: left running by a dead driver; continued" in again.stdout
    study, states = load_study(ws)
    assert [t.state for t in study.trials if "run_keys" in t.user_attrs].count(states.RUNNING) == 0
    done = [t for t in study.trials if t.state in (states.COMPLETE, states.PRUNED)]
    assert len(done) == 3 and not [t for t in study.trials if t.state == states.FAIL]
    params = [tuple(sorted(t.params.items())) for t in done]
    assert len(set(params)) == 3
    df = runs(ws, "sched")
    trained = df[df["tags.harness.run_key"].notna()]
    assert "RUNNING" not in set(trained["status"]) and trained["tags.harness.run_key"].is_unique


@pytest.mark.slow
def test_two_objectives_give_a_pareto_front_and_the_confirmation_reports_both(tmp_path):
    import json

    text = NO_EFFECT.replace("n_trials: 5", "n_trials: 2").replace(
        "objective: {metric: eval.nms_free.ap50, direction: maximize}",
        "objective: {metric: eval.nms_free.ap50, direction: maximize}\n"
        "secondary: {metric: eval.nms_free.mmr, direction: minimize}")
    path = tiny_study_spec(tmp_path, text)
    out = tmp_path / "reports"
    cmd = [sys.executable, "-m", "harness", "sweep", str(path), "--workspace", str(tmp_path / "ws"), "--jobs", "1",
           "--out-dir", str(out)]
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "eval.nms_free.mmr = " in done.stdout
    data = json.loads((out / "sweep_tiny_sweep.json").read_text())
    complete = [t for t in data["trials"] if t["state"] == "COMPLETE"]
    assert len(complete) == 2 and all(t["n2"] == 2 and t["mean2"] is not None for t in complete)
    md = (out / "sweep_tiny_sweep.md").read_text()
    assert "## Pareto front of the search" in md and "mMR without NMS" in md
    assert (out / "sweep_tiny_sweep_pareto.png").exists()
    assert all(r["confirm2"]["n"] == 3 for r in data["confirmation"]["trials"])
