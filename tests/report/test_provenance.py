"""Outputs that name their provenance, on a small store trained for real with overrides: the
status hint (one line, complete: pasted, it finds the runs), the report's header, the cell log's
end, MLflow's source tags and live-only tags, and `harness report --log-to-mlflow`."""

import json
import os
import shlex
import subprocess
import sys
import warnings

import pytest

from harness.track.provenance import override_items, set_string
from tests.schedule.test_local_faults import SPEC
from tests.train.helpers import runs, tiny_overrides

pytestmark = pytest.mark.slow
ENV = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1", "HARNESS_HEARTBEAT_S": "1"}
TABLES = """\
tables:
  main: {title: Tiny results, layout: defcn_coco}
"""
ROWS = """\
  - {label: A, table: main, baseline: true, method: fcos, assignment: one-to-many, overrides: {train.gamma: 0.1}}
  - {label: B, table: main, method: poto, assignment: one-to-one, overrides: {train.gamma: 0.11}}"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two cells trained 3 iterations with a --set-file and a --set the spec does not have."""
    tmp = tmp_path_factory.mktemp("prov")
    text = SPEC.format(iters=6, ckpt=2, rows=ROWS).replace("seeds: [0]", "seeds: [0]\n" + TABLES)
    spec = tmp / "spec.yaml"
    spec.write_text(text)
    tiny = tiny_overrides(tmp, iters=3, ckpt=3)
    ws = tmp / "ws"
    given = ["--set-file", str(tiny), "--set", "train.base_lr=0.02", "train.weight_decay=0.0002"]
    done = subprocess.run([sys.executable, "-m", "harness", "run", str(spec), "--workspace", str(ws), "--jobs", "2",
                           *given], env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return spec, ws, given


def test_override_items_read_back_values_and_null_sections():
    spec = {"train.max_iter": "600", "train.steps": "[480, 560]", "model.backbone.pretrain.iters": "600",
            "model.backbone.pretrain.num_images": "1000", "model.backbone.name": "tiny", "tracking.log_period": "20",
            "train.channels_last": "True", "schedule.lr": "1"}
    run = {"train.max_iter": "60", "train.steps": "[]", "model.backbone.name": "tiny", "tracking.log_period": "1",
           "train.channels_last": "False"}
    items = override_items(spec, run)
    assert items == {"model.backbone.pretrain": "null", "train.channels_last": "false", "train.max_iter": "60",
                     "train.steps": "[]"}  # tracking.* and schedule.* make no run key: not overrides
    assert set_string(items) == ("--set model.backbone.pretrain=null train.channels_last=false train.max_iter=60 "
                                 "'train.steps=[]'")


def test_status_hint_is_one_complete_line_that_finds_the_runs(trained, run_cli):
    spec, ws, _ = trained
    code, out, _ = run_cli("status", spec, "--workspace", ws)
    assert code == 0 and "2 pending" in out
    hints = [line for line in out.splitlines() if "--set" in line]
    assert len(hints) == 1, out
    pasted = shlex.split(hints[0].split("(instead of any --set/--set-file): ")[-1].split("  (")[0])
    assert pasted == ["--set", "train.base_lr=0.02", "train.checkpoint_period=3", "train.max_iter=3",
                      "train.weight_decay=0.0002"]  # every key the runs differ in, not the first 3
    assert "(2 of 2 cells have runs)" in hints[0]
    code, out, _ = run_cli("status", spec, "--workspace", ws, *pasted)
    assert code == 0 and "2 finished" in out and "--set" not in out


def test_report_names_overrides_and_commit_and_hints_once(trained, run_cli, tmp_path):
    spec, ws, given = trained
    code, _, err = run_cli("report", spec, "--workspace", ws, "--allow-empty", "--out", tmp_path / "empty.md")
    assert code == 0 and sum("--set" in line for line in err.splitlines()) == 1, err
    code, _, err = run_cli("report", spec, "--workspace", ws, *given, "--out", tmp_path / "r.md")
    assert code == 0, err
    text = (tmp_path / "r.md").read_text()
    assert text.startswith("# Report: sched (runs made with overrides)")
    header = text[: text.index("## ")]
    assert "Made with `--set " in header and "train.base_lr=0.02" in header and "train.max_iter=3" in header
    assert "Harness commit `" in header
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["provenance"]["overrides"] and data["tables"][0]["provenance"]["commits"]


def test_cell_log_ends_with_evaluation_and_final_state(trained):
    _, ws, _ = trained
    for log in ws.glob("*/log.txt"):
        lines = [x for x in log.read_text().splitlines() if x.strip()]
        assert "final evaluation:" in lines[-2] and "(headline)" in lines[-2] and " %" in lines[-2], lines[-3:]
        assert ": FINISHED at iteration 3 (run " in lines[-1]
        first = next(x for x in lines if "first iteration at" in x)
        assert first.split("first iteration at ")[1].count(":") == 2  # a clock time, not an epoch


def test_finished_runs_carry_source_tags_and_no_heartbeat(trained):
    _, ws, _ = trained
    df = runs(ws, "sched")
    assert set(df["status"]) == {"FINISHED"}
    assert set(df["tags.mlflow.source.name"]) == {"harness train"}
    assert set(df["tags.mlflow.source.git.commit"]) == set(df["tags.harness.git_commit"])
    assert "tags.harness.heartbeat" not in df or df["tags.harness.heartbeat"].isna().all()


def test_log_to_mlflow_one_summary_run_per_table_updated_in_place(trained, run_cli, tmp_path):
    spec, ws, given = trained
    for _ in range(2):
        code, out, err = run_cli("report", spec, "--workspace", ws, *given, "--out", tmp_path / "r.md",
                                 "--log-to-mlflow")
        assert code == 0, err
        assert "logged table main to MLflow" in out
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    from mlflow import MlflowClient

    df = runs(ws, "sched")
    summary = df[df["tags.harness.report_table"].notna()]
    assert len(summary) == 1 and summary["tags.mlflow.runName"].iloc[0] == "table:sched/main"
    rid = summary["run_id"].iloc[0]
    client = MlflowClient(f"sqlite:///{ws / 'mlflow.db'}")
    run = client.get_run(rid)
    assert run.info.status == "FINISHED"
    m = run.data.metrics
    for stat in ("mean", "std", "n", "ci_low", "ci_high"):
        assert f"A/eval.ap/{stat}" in m or stat in ("std", "ci_low", "ci_high")  # one seed: no std
    assert m["A/eval.ap/n"] == 1
    assert any(k.startswith("harness.claim.") for k in run.data.tags)
    assert "Tiny results" in run.data.tags["mlflow.note.content"]
    names = {a.path for a in client.list_artifacts(rid)}
    assert {"r.md", "r.json", "figures"} <= names
    # the summary run is bookkeeping: status still counts 2 cells, none of them it
    code, out, _ = run_cli("status", spec, "--workspace", ws, *given)
    assert "2 finished" in out and "without" not in out


def test_a_field_added_after_a_run_was_made_is_not_an_override():
    from harness.track.provenance import override_items

    # the run predates data.resize and train.lr_schedule (keyless at their defaults): no param for them
    run = {"train.base_lr": "0.01", "data.name": "synthetic", "model.num_classes": "1"}
    spec = {**run, "data.resize": "shortest_edge", "train.lr_schedule": "step", "data.train_extra": "[]"}
    assert override_items(spec, run) == {}
    # ... while a spec that sets such a field away from its default does differ from that run
    assert override_items({**spec, "train.lr_schedule": "cosine"}, run) == {"train.lr_schedule": "null"}
    # and an option the run left unset that is no such field stays an override
    assert override_items({**run, "model.aux.weight": "1.0"}, run) == {"model.aux": "null"}
