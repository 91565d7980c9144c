"""The CLI surface: plan output, exit codes and error messages."""

import json
import subprocess
import sys

import pytest

from tests.conftest import EXPERIMENTS, MINI_SPEC


def test_plan_json_lists_cells(run_cli):
    code, out, err = run_cli("plan", EXPERIMENTS / "coco_ablation.yaml", "--json")
    assert code == 0, err
    cells = json.loads(out)
    assert len(cells) == 39
    assert {"row", "dataset", "seed", "run_key", "config"} <= set(cells[0])
    again = json.loads(run_cli("plan", EXPERIMENTS / "coco_ablation.yaml", "--json")[1])
    assert [c["run_key"] for c in cells] == [c["run_key"] for c in again]


def test_set_takes_several_pairs_and_repeats(run_cli):
    code, out, _ = run_cli("plan", EXPERIMENTS / "quickstart.yaml", "--json",
                           "--set", "train.base_lr=0.02", "train.max_iter=900",
                           "--set", "eval.period=7")
    assert code == 0
    cfg = json.loads(out)[0]["config"]
    assert cfg["train"]["base_lr"] == 0.02 and cfg["train"]["max_iter"] == 900
    assert cfg["eval"]["period"] == 7


def test_plan_table(run_cli):
    code, out, _ = run_cli("plan", EXPERIMENTS / "crowdhuman.yaml")
    assert code == 0
    assert "21 cells (7 rows x 1 datasets x 3 seeds)" in out


@pytest.mark.parametrize("edit, fragment", [
    (("backbone: {name: tiny}", "backbone: {name: tiny, nme: 1}"), "base.model.backbone.nme: unknown key"),
    (("max_iter: 10", "max_iter: ten"), "base.train.max_iter:"),
    ((", base_lr: 0.01", ""), "train.base_lr: missing required key"),
    (("assigner: poto}", "assigner: potto}"), "rows[1].assigner: unknown value 'potto'"),
    (("label: B", "label: A"), "rows[1].label: duplicate row label"),
    (("eval: {nms: false}", "eval: {nms: false"), "YAML syntax error"),
])
def test_spec_errors_exit_2_with_message(run_cli, mini_spec, tmp_path, edit, fragment):
    path = mini_spec(MINI_SPEC.replace(*edit))
    before = sorted(p.name for p in tmp_path.iterdir())
    code, out, err = run_cli("plan", path)
    assert code == 2
    assert fragment in err and str(path) in err
    assert "Traceback" not in err and out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_override_of_missing_path_exits_2(run_cli, mini_spec):
    code, _, err = run_cli("plan", mini_spec(), "--set", "train.nope=1")
    assert code == 2
    assert "error: --set train.nope=1: unknown key 'nope' under train" in err


def test_status_of_a_fresh_workspace_writes_nothing(run_cli, tmp_path):
    code, out, err = run_cli("status", EXPERIMENTS / "quickstart.yaml", "--workspace", tmp_path / "ws")
    assert code == 0, err
    assert "15 pending" in out
    assert not (tmp_path / "ws").exists()


def test_run_checks_the_spec_first(run_cli, mini_spec):
    code, _, err = run_cli("run", mini_spec(MINI_SPEC.replace("max_iter: 10", "max_iter: x")))
    assert code == 2 and "base.train.max_iter" in err


def test_console_entry_point_without_traceback(mini_spec):
    path = mini_spec(MINI_SPEC.replace("label: B", "label: A"))
    proc = subprocess.run([sys.executable, "-m", "harness", "plan", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "duplicate row label" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("command", ["plan", "run", "train", "status", "sync", "report", "sweep",
                                     "evaluate", "data"])
def test_help_for_every_command(command):
    proc = subprocess.run([sys.executable, "-m", "harness", command, "--help"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert "usage: harness" in proc.stdout


@pytest.mark.parametrize("command", ["status", "report", "sync", "run", "train"])
def test_bad_sqlite_stores_exit_2_with_one_line_and_create_nothing(run_cli, tmp_path, command):
    import sqlite3

    other = tmp_path / "other.db"  # a valid SQLite file of another program
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE notes (x TEXT)")
    con.commit()
    con.close()
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"SQLite format 3\x00" + b"\x07" * 200)
    extra = ["--row", "POTO"] if command == "train" else []
    for uri, says in ((f"sqlite:///{tmp_path}/no/such/dir/x.db", "no such directory for the SQLite store"),
                      (f"sqlite:///{other}", "not an MLflow database"),
                      (f"sqlite:///{corrupt}", "not an MLflow database")):
        code, out, err = run_cli(command, EXPERIMENTS / "quickstart.yaml", *extra, "--workspace", tmp_path / "ws",
                                 "--tracking-uri", uri)
        assert code == 2 and len(err.strip().splitlines()) == 1 and says in err, (uri, out, err)
        assert not (tmp_path / "ws").exists() and not (tmp_path / "no").exists()
    assert other.read_bytes()[:16] == b"SQLite format 3\x00"
