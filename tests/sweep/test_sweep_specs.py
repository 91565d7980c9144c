"""Every shipped sweep spec passes the checks `harness sweep` runs before its first trial, and a
space key that the swept row does not have fails them (exit 2, naming the sweep file and key)."""

import pytest

from harness.sweep.space import current_value, set_item, validate_sweep
from tests.conftest import EXPERIMENTS

SWEEPS = sorted(EXPERIMENTS.glob("sweep*.yaml"))


def test_sweep_specs_are_found():
    assert SWEEPS, f"no sweep*.yaml under {EXPERIMENTS}"


@pytest.mark.parametrize("path", SWEEPS, ids=[p.name for p in SWEEPS])
def test_shipped_sweep_validates(run_cli, tmp_path, path):
    sweep = validate_sweep(str(path))  # what `harness sweep` calls before it touches anything
    assert sweep.base_cells and {c.row for c in sweep.base_cells} == {sweep.spec.row}
    # the first trial (the row's own values) and the bounds give the cells a trial trains
    baseline = {k: current_value(sweep.base_cells[0], k) for k in sweep.spec.space}
    for params in (baseline, {k: p.low if p.low is not None else p.choices[0] for k, p in sweep.spec.space.items()},
                   {k: p.high if p.high is not None else p.choices[-1] for k, p in sweep.spec.space.items()}):
        cells = sweep.trial_cells(params)
        assert [(c.dataset, c.seed) for c in cells] == [(c.dataset, c.seed) for c in sweep.base_cells]
        assert all(c.row == sweep.spec.row for c in cells)
    # the CLI path: --check validates and exits 0 without creating the workspace
    code, out, err = run_cli("sweep", path, "--check", "--workspace", tmp_path / "ws")
    assert code == 0 and ": ok" in out, err
    assert not (tmp_path / "ws").exists()


def test_trial_overrides_reach_a_train_worker_of_the_swept_row(run_cli, tmp_path, monkeypatch):
    # a trial's worker is `harness train BASE --row ROW --set ...`: the override (POTO's alpha) must
    # resolve for that row even though the base spec's FCOS row has no such key
    import harness.train.run
    from harness.train.result import CellResult, Outcome

    got = []
    monkeypatch.setattr(harness.train.run, "run_cell",
                        lambda cell, launch, workspace: got.append(cell) or CellResult(Outcome.FINISHED))
    sweep = validate_sweep(str(EXPERIMENTS / "sweep_quickstart.yaml"))
    items = [set_item(".".join(map(str, o.path)), o.value) for o in sweep.fixed]
    items += [set_item("model.predictor.assigner.alpha", 0.6)]
    code, _, err = run_cli("train", EXPERIMENTS / "quickstart.yaml", "--row", sweep.spec.row, "--seed", "0",
                           "--workspace", tmp_path / "ws", "--set", *items)
    assert code == 0, err
    (cell,) = got
    assert cell.row == sweep.spec.row and cell.config.model.predictor.assigner.alpha == 0.6
    assert cell.run_key == sweep.row_cells({"model.predictor.assigner.alpha": 0.6})[0].run_key
    # ... and still fails, before training, for a row whose assigner has no alpha
    code, _, err = run_cli("train", EXPERIMENTS / "quickstart.yaml", "--row", "FCOS",
                           "--workspace", tmp_path / "ws", "--set", "model.predictor.assigner.alpha=0.6")
    assert code == 2 and "unknown key" in err and "[cell FCOS/" in err and len(got) == 1, err


def test_space_key_unknown_for_the_swept_row_exits_2(run_cli, tmp_path):
    text = (EXPERIMENTS / "sweep_quickstart.yaml").read_text()
    text = text.replace("row: POTO+3DMF+Aux", "row: FCOS").replace(
        "experiment: quickstart.yaml", f"experiment: {EXPERIMENTS / 'quickstart.yaml'}")
    path = tmp_path / "sweep_fcos.yaml"
    path.write_text(text)
    for extra in (["--check"], []):  # the same checks with and without --check: nothing written
        code, out, err = run_cli("sweep", path, "--workspace", tmp_path / "ws", *extra)
        assert code == 2, out + err
        line = next(x for x in err.splitlines() if "space.model.predictor.assigner.alpha" in x)
        assert line.startswith(f"error: {path}:"), line
        assert "does not exist in the config of row 'FCOS'" in line
        has = line.split("model.predictor.assigner (fcos) has: ", 1)[1].split(", ")
        assert "alpha" not in has and "name" in has, line  # the keys listed are FCOS's own
        assert not (tmp_path / "ws").exists()


def test_bound_outside_the_rows_schema_exits_2(run_cli, tmp_path):
    text = (EXPERIMENTS / "sweep_quickstart.yaml").read_text().replace("high: 0.95", "high: 1.5").replace(
        "experiment: quickstart.yaml", f"experiment: {EXPERIMENTS / 'quickstart.yaml'}")
    path = tmp_path / "sweep_bound.yaml"
    path.write_text(text)
    code, _, err = run_cli("sweep", path, "--check")
    assert code == 2 and f"{path}:" in err and "space.model.predictor.assigner.alpha: high 1.5:" in err, err


@pytest.mark.slow
@pytest.mark.parametrize("path", SWEEPS, ids=[p.name for p in SWEEPS])
def test_shipped_sweep_starts(tmp_path, path):
    """Each shipped sweep, on tiny synthetic data (its own images ranges kept): the driver starts
    trial 0 (the defaults) on the search split, a worker trains, Ctrl-C stops it cleanly."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.train.helpers import runs, tiny_overrides

    coco = validate_sweep(str(path)).base_cells[0].config.eval.metrics == "coco"
    # the spec's own evaluator (its objective is one of its metrics); images up to its largest range
    over = tiny_overrides(tmp_path, fmt="coco" if coco else "odgt", iters=50, size=64,
                          extra="data.synthetic.num_val: 5000\n")
    ws = tmp_path / "ws"
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "harness", "sweep", str(path), "--workspace", str(ws), "--jobs", "1",
                             "--out-dir", str(tmp_path / "reports"), "--set-file", str(over)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not list(ws.glob("*/progress.json")):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT, out
    assert "trial 0: started" in out and "stopped:" in out, out
    sweep = validate_sweep(str(path))
    df = runs(ws, sweep.base_cells[0].spec_name)
    kids = df[df["tags.harness.trial"] == "0"]
    assert len(kids) >= 1 and set(kids["tags.harness.sweep_phase"]) == {"search"}
    assert set(kids["tags.harness.seed"].astype(int)) <= set(sweep.spec.search.seeds)
    assert "RUNNING" not in set(df["status"]), df[["status", "tags.mlflow.runName"]]
