"""Report rendering (golden files), README regions and --check, missing and failed seeds,
against a real SQLite MLflow store filled by hand."""

import hashlib
import os
import warnings
from pathlib import Path

import pytest

from harness.spec import expand, load_spec

GOLDEN = Path(__file__).parent / "golden"

SPEC = """\
name: rep
description: A two-row table.
base:
  model: {num_classes: 10, backbone: {name: tiny}, predictor: {assigner: {name: poto}}}
  data: {name: synthetic, synthetic: {}}
  train: {max_iter: 5, base_lr: 0.01}
  eval: {nms: false}
axes:
  method:
    fcos: {model.predictor.assigner: {name: fcos}, eval.nms: true}
    poto:
tables:
  main: {title: Results, layout: defcn_coco, remark: "~0.3 AP noise"}
rows:
  - {label: FCOS, table: main, baseline: true, method: fcos, assignment: one-to-many, lr_sched: 3x, paper: {ap: 41.4, ar100: 59.1}}
  - {label: POTO, table: main, method: poto, assignment: one-to-one, lr_sched: 3x, paper: {ap: 39.2, ar100: 61.7}}
seeds: [0, 1, 2]
"""

VALUES = {  # (row, seed) -> (status, ap, ar100)
    ("FCOS", 0): ("FINISHED", 0.410, 0.590), ("FCOS", 1): ("FINISHED", 0.414, 0.588),
    ("FCOS", 2): ("FINISHED", 0.412, 0.592),
    ("POTO", 0): ("FINISHED", 0.392, 0.620), ("POTO", 1): ("FAILED", None, None),
}
DIVERGED = "diverged: total loss EMA 25.1 > 4 x its minimum 1.38 for 20 iterations at iteration 83"


@pytest.fixture
def store(tmp_path):
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    spec = tmp_path / "rep.yaml"
    spec.write_text(SPEC)
    cells = expand(load_spec(spec))
    ws = tmp_path / "ws"
    ws.mkdir()
    uri = f"sqlite:///{ws / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("rep", artifact_location=(ws / "art").as_uri())
    for c in cells:
        if (c.row, c.seed) not in VALUES:
            continue  # POTO seed 2: never ran
        status, ap, ar = VALUES[(c.row, c.seed)]
        tags = {"harness.run_key": c.run_key, "harness.row": c.row}
        if status == "FAILED":
            tags["harness.failure"] = DIVERGED
        run = client.create_run(exp, tags=tags, run_name=c.id)
        if ap is not None:
            client.log_batch(run.info.run_id, metrics=[
                Metric("eval.ap", ap, 0, 5), Metric("eval.ar100", ar, 0, 5), Metric("eval.ap", ap / 2, 0, 2),
                Metric("train.total_loss", 2.0, 0, 1), Metric("train.total_loss", 1.0, 0, 5)])
        client.set_terminated(run.info.run_id, status)
    return spec, ws


def test_table_matches_the_golden_file(store, run_cli, tmp_path):
    spec, ws = store
    out = tmp_path / "reports" / "rep.md"
    code, _, err = run_cli("report", spec, "--workspace", ws, "--out", out)
    assert code == 0, err
    text = out.read_text()
    table = text[text.index("| model"): text.index("\n\n", text.index("| model"))]
    golden = (GOLDEN / "defcn_coco.md").read_text().strip()
    if os.environ.get("HARNESS_UPDATE_GOLDEN"):
        (GOLDEN / "defcn_coco.md").write_text(table + "\n")
        golden = table
    assert table == golden
    assert "POTO (seeds 0, 1, 2): mAP 39.2, —, —; mAR" in text
    assert f"POTO: seed 1 failed ({DIVERGED[:67]}...); seed 2 missing." in table_notes(text)  # the reason, per seed
    assert f"Diverged cells (FAILED, left out of the means): POTO/synthetic/1: {DIVERGED}." in text
    assert "Observed seed noise (pooled std over rows, points): mAP 0.20, mAR 0.20; the paper says: ~0.3 AP noise" in text
    for png in ("rep_main_convergence.png", "rep_main_seeds.png", "rep_main_loss.png"):
        assert (out.parent / png).stat().st_size > 1000
        assert f"]({png})" in text


def test_readme_regions_and_check(store, run_cli, tmp_path):
    spec, ws = store
    readme = tmp_path / "README.md"
    readme.write_text("# Title\n\n<!-- harness:table main -->\nold\n<!-- /harness:table -->\n\nafter\n")
    code, out, _ = run_cli("report", spec, "--workspace", ws, "--readme", readme, "--check")
    assert code == 1 and "stale tables: main" in out
    assert "old" in readme.read_text()  # --check changes nothing
    code, _, _ = run_cli("report", spec, "--workspace", ws, "--readme", readme)
    assert code == 0
    text = readme.read_text()
    assert text.startswith("# Title\n\n<!-- harness:table main -->\n| model") and text.endswith("<!-- /harness:table -->\n\nafter\n")
    first = text
    code, out, _ = run_cli("report", spec, "--workspace", ws, "--readme", readme, "--check")
    assert code == 0 and "up to date" in out
    run_cli("report", spec, "--workspace", ws, "--readme", readme)
    assert readme.read_text() == first  # deterministic


def test_readme_without_regions_is_an_error(store, run_cli, tmp_path):
    spec, ws = store
    readme = tmp_path / "R.md"
    readme.write_text("no regions\n")
    code, _, err = run_cli("report", spec, "--workspace", ws, "--readme", readme)
    assert code == 2 and "no <!-- harness:table NAME --> regions" in err


def test_a_wrong_workspace_is_an_error_and_creates_nothing(store, run_cli, tmp_path):
    spec, ws = store
    readme = tmp_path / "README.md"
    readme.write_text("<!-- harness:table main -->\nfilled\n<!-- /harness:table -->\n")
    wrong = tmp_path / "typo"
    code, _, err = run_cli("report", spec, "--workspace", wrong, "--readme", readme)
    assert code == 2 and "no tracking store here" in err and str(wrong) in err
    assert not wrong.exists() and "filled" in readme.read_text()
    code, _, err = run_cli("report", spec, "--tracking-uri", f"sqlite:///{tmp_path}/nope/x.db")
    assert code == 2 and not (tmp_path / "nope").exists()


def test_a_store_without_finished_runs_never_blanks_the_readme(run_cli, tmp_path):
    from harness.track.client import client_for
    from harness.track.mlflow_tracker import ensure_experiment

    spec = tmp_path / "rep.yaml"
    spec.write_text(SPEC)
    ws = tmp_path / "empty"
    ws.mkdir()
    ensure_experiment(client_for(f"sqlite:///{ws}/mlflow.db"), "rep", f"sqlite:///{ws}/mlflow.db", ws)
    readme = tmp_path / "README.md"
    readme.write_text("<!-- harness:table main -->\nfilled\n<!-- /harness:table -->\n")
    code, _, err = run_cli("report", spec, "--workspace", ws, "--readme", readme)
    assert code == 2 and "refusing to replace the README's tables with empty ones" in err
    assert "filled" in readme.read_text()
    assert "Traceback" not in err
    code, _, err = run_cli("report", spec, "--workspace", ws, "--out", tmp_path / "r" / "rep.md")
    assert code == 2 and "no finished run of rep's 6 cells" in err and not (tmp_path / "r").exists()
    code, _, err = run_cli("report", spec, "--workspace", ws, "--readme", readme, "--allow-empty")
    assert code == 0, err
    assert "| FCOS | one-to-many | Yes | 3x | — (41.4) | — (59.1) |" in readme.read_text()


def test_check_without_a_readme_is_an_error(store, run_cli):
    spec, ws = store
    code, _, err = run_cli("report", spec, "--workspace", ws, "--check")
    assert code == 2 and "--check: checks the README's tables: give --readme FILE" in err


def test_check_fails_when_the_readme_has_none_of_the_specs_tables(store, run_cli, tmp_path):
    spec, ws = store
    readme = tmp_path / "R.md"
    readme.write_text("<!-- harness:table other -->\nx\n<!-- /harness:table -->\n")
    code, _, err = run_cli("report", spec, "--workspace", ws, "--readme", readme, "--check")
    assert code == 2 and "no region for the tables of rep (main); it has: other" in err


def test_a_bad_readme_leaves_no_plots(store, run_cli, tmp_path):
    spec, ws = store
    readme = tmp_path / "R.md"
    readme.write_text("no regions\n")
    out = tmp_path / "plots" / "rep.md"
    code, _, _ = run_cli("report", spec, "--workspace", ws, "--readme", readme, "--out", out)
    assert code == 2 and not out.parent.exists()


def test_seed_table_conventions_arrows_and_the_mixture_footnote():
    import pandas as pd

    from harness.report.tables import render_table
    from tests.conftest import EXPERIMENTS

    loaded = load_spec(EXPERIMENTS / "crowdhuman.yaml")
    cells = expand(loaded)
    df = pd.DataFrame([{"row": c.row, "dataset": c.dataset, "seed": c.seed, "run_key": c.run_key,
                        "status": "missing", "run_id": None, "failure": None} for c in cells])
    defcn = render_table("defcn", loaded.spec, cells, df)
    assert "mixture*" in defcn.markdown and "\\* mixture: the one-to-one assignment" in defcn.markdown
    date = render_table("date", loaded.spec, cells, df)
    assert date.markdown.startswith("| Model | iters | AP50 ↑ | mMR ↓ | Recall ↑")
    assert "\\* mixture" not in date.markdown


def table_notes(text: str) -> str:
    start = text.index("| model")
    return text[start: text.index("Observed seed noise", start)]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_store_is_opened_read_only(store, run_cli, tmp_path):
    spec, ws = store
    db = ws / "mlflow.db"
    before, files = digest(db), sorted(ws.iterdir())
    code, _, err = run_cli("report", spec, "--workspace", ws)
    assert code == 0, err
    assert digest(db) == before and sorted(ws.iterdir()) == files
    other = tmp_path / "other.yaml"  # an experiment the store does not hold
    other.write_text(SPEC.replace("name: rep", "name: elsewhere"))
    code, _, err = run_cli("report", other, "--workspace", ws)
    assert code == 2 and f"{db}: --tracking-uri: no experiment 'elsewhere' in this store" in err and "Traceback" not in err
    assert digest(db) == before


def test_a_sqlite_file_that_is_no_mlflow_store_is_refused_untouched(run_cli, tmp_path):
    import sqlite3

    spec = tmp_path / "rep.yaml"
    spec.write_text(SPEC)
    db = tmp_path / "ws" / "mlflow.db"
    db.parent.mkdir()
    with sqlite3.connect(db) as con:
        con.execute("create table notes (x text)")
    con.close()
    before = digest(db)
    code, _, err = run_cli("report", spec, "--workspace", db.parent)
    assert code == 2 and "not an MLflow database" in err and "Traceback" not in err
    assert digest(db) == before


def test_runs_without_harness_tags_are_named_not_a_traceback(run_cli, tmp_path):
    from mlflow import MlflowClient

    spec = tmp_path / "rep.yaml"
    spec.write_text(SPEC)
    ws = tmp_path / "ws"
    ws.mkdir()
    client = MlflowClient(f"sqlite:///{ws / 'mlflow.db'}")
    exp = client.create_experiment("rep", artifact_location=(ws / "art").as_uri())
    for i in range(2):  # made by hand, not by harness run: no run key, no row
        run = client.create_run(exp, run_name=f"manual{i}")
        client.log_metric(run.info.run_id, "eval.ap", 0.4)
        client.set_terminated(run.info.run_id, "FINISHED")
    readme = tmp_path / "README.md"
    readme.write_text("<!-- harness:table main -->\nfilled\n<!-- /harness:table -->\n")
    code, _, err = run_cli("report", spec, "--workspace", ws, "--readme", readme, "--out", tmp_path / "o" / "r.md")
    assert code == 2 and "the experiment holds 2 run(s), 2 without harness tags" in err
    assert "Traceback" not in err and "filled" in readme.read_text() and not (tmp_path / "o").exists()


def test_a_traversal_table_name_is_refused_before_anything_is_written(run_cli, tmp_path, store):
    _, ws = store
    spec = tmp_path / "evil.yaml"
    spec.write_text(SPEC.replace("  main: {title", "  x/../../../../elsewhere/y: {title")
                    .replace("table: main", "table: x/../../../../elsewhere/y"))
    out = tmp_path / "deep" / "reports" / "rep.md"
    code, _, err = run_cli("report", spec, "--workspace", ws, "--out", out)
    assert code == 2 and "x/../../../../elsewhere/y" in err and "Traceback" not in err
    assert not (tmp_path / "deep").exists() and not (tmp_path / "elsewhere").exists()


def test_data_quality_nan_duplicates_and_running(run_cli, tmp_path):
    from mlflow import MlflowClient
    from mlflow.entities import Metric, RunTag

    spec = tmp_path / "rep.yaml"
    spec.write_text(SPEC)
    cells = {(c.row, c.seed): c for c in expand(load_spec(spec))}
    ws = tmp_path / "ws"
    ws.mkdir()
    client = MlflowClient(f"sqlite:///{ws / 'mlflow.db'}")
    exp = client.create_experiment("rep", artifact_location=(ws / "art").as_uri())

    def run(row, seed, ap, status, commit="abc1234"):
        c = cells[(row, seed)]
        r = client.create_run(exp, run_name=c.id, tags={"harness.run_key": c.run_key, "harness.row": row,
                                                         "harness.git_commit": commit})
        client.log_batch(r.info.run_id, metrics=[Metric("eval.ap", ap, 0, 5), Metric("eval.ar100", 0.6, 0, 5)],
                         tags=[RunTag("harness.heartbeat", "1.0")])
        if status != "RUNNING":
            client.set_terminated(r.info.run_id, status)
        return r.info.run_id

    for seed in range(3):
        run("FCOS", seed, 0.41 + seed / 1000, "FINISHED")
    old = run("POTO", 0, 0.30, "FINISHED", commit="0ld0ld0")
    new = run("POTO", 0, 0.39, "FINISHED", commit="n3wn3w1")
    run("POTO", 1, float("nan"), "FINISHED")
    run("POTO", 2, 0.0, "RUNNING")
    out = tmp_path / "r" / "rep.md"
    code, _, err = run_cli("report", spec, "--workspace", ws, "--out", out)
    assert code == 0, err
    text = out.read_text()
    dup = (f"POTO/synthetic/0 finished 2 times under one run key: {new[:8]} (commit n3wn3w1, ")
    assert dup in err and dup in text and f"{old[:8]} (commit 0ld0ld0, " in text
    assert f"the latest FINISHED run (by start time) counts; without one, the latest run: {new[:8]}." in text
    assert "POTO/synthetic/1: eval.ap NaN in run" in text  # a failure with its reason, not a dropped value
    assert "Running (not in the tables yet): POTO/synthetic/2 run" in text
    notes = table_notes(text)
    assert "39.0 (39.2) n=1/3" in notes and "POTO: seed 1: eval.ap is NaN; seed 2 running." in notes
    assert "POTO (seeds 0, 1, 2): mAP 39.0, NaN, —; mAR" in text


def test_status_reads_the_store_read_only_and_a_wrong_uri_is_an_error(store, run_cli, tmp_path):
    spec, ws = store
    db = ws / "mlflow.db"
    before = digest(db)
    code, out, err = run_cli("status", spec, "--workspace", ws)
    assert code == 0, err
    assert "1 failed, 4 finished, 1 pending" in out and digest(db) == before
    code, _, err = run_cli("status", spec, "--tracking-uri", f"sqlite:///{tmp_path}/typo/mlflow.db")
    assert code == 2 and "no such directory for the SQLite store" in err and not (tmp_path / "typo").exists()


def _fill(ws: Path, spec: Path, values: dict, platform: str) -> str:
    """A store at ws/mlflow.db with one FINISHED run per (row, seed) in values (ap, ar100)."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    ws.mkdir()
    uri = f"sqlite:///{ws / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("rep", artifact_location=(ws / "art").as_uri())
    for c in expand(load_spec(spec)):
        if (c.row, c.seed) in values:
            ap, ar = values[(c.row, c.seed)]
            run = client.create_run(exp, tags={"harness.run_key": c.run_key, "harness.row": c.row,
                                               "harness.platform": platform}, run_name=c.id)
            client.log_batch(run.info.run_id, metrics=[Metric("eval.ap", ap, 0, 5), Metric("eval.ar100", ar, 0, 5)])
            client.set_terminated(run.info.run_id, "FINISHED")
    return uri


def test_reproduction_says_what_a_platform_promises(run_cli, tmp_path):
    # three stores of the same cells: the reference, a bit-identical rerun on its platform, and a
    # rerun on another processor whose cells differ in their rounding (one row far off)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    spec = tmp_path / "rep.yaml"
    spec.write_text(SPEC)
    ref = {("FCOS", s): (0.410 + 0.002 * s, 0.590 + 0.001 * s) for s in range(3)}
    ref |= {("POTO", s): (0.390 + 0.003 * s, 0.620 - 0.002 * s) for s in range(3)}
    other = {k: (ap + 0.0007, ar - 0.0004) for k, (ap, ar) in ref.items()}
    other[("POTO", 2)] = (0.450, 0.615)  # POTO's mean AP moves by +1.6 points: outside
    one = "AMD EPYC, CPU kernels AVX512, 1 thread, torch 2.14.1"
    _fill(tmp_path / "a", spec, ref, one)
    same = _fill(tmp_path / "b", spec, ref, one)
    elsewhere = _fill(tmp_path / "c", spec, other, "Intel Xeon, CPU kernels AVX2, 2 threads, torch 2.14.1")
    readme = tmp_path / "README.md"
    readme.write_text("<!-- harness:table main -->\n<!-- /harness:table -->\n"
                      "<!-- harness:table rep.reproduction -->\nold\n<!-- /harness:table -->\n")
    out = tmp_path / "r.md"
    code, _, err = run_cli("report", spec, "--workspace", tmp_path / "a", "--out", out, "--readme", readme,
                           "--against", same, "--against", elsewhere)
    assert code == 0, err
    text = out.read_text()
    assert "95% prediction interval" in text
    assert (f"6 of 6 cells finished in both stores have bit-identical final metrics; the same platform in both "
            f"stores ({one}): bit-identical cells expected.") in text
    assert ("0 of 6 cells finished in both stores have bit-identical final metrics; platforms differ (this store: "
            f"{one}; store 2: Intel Xeon, CPU kernels AVX2, 2 threads, torch 2.14.1): bit-identical cells not "
            "expected.") in text
    assert "Largest difference of one cell's final metric between the stores: 5.4 points (POTO seed 2, eval.ap)." in text
    assert "4 of 4 row means inside" in text and "3 of 4 row means inside" in text
    region = readme.read_text().split("<!-- harness:table rep.reproduction -->\n")[1].split("<!--")[0]
    assert region.splitlines() == [
        "- store 1, the same platform (AMD EPYC, CPU kernels AVX512, 1 thread, torch 2.14.1): 6 of 6 cells; 4 of 4 "
        "row means inside this table's 95% prediction intervals; 6 of 6 cells bit-identical (expected).",
        "- store 2, another platform (Intel Xeon, CPU kernels AVX2, 2 threads, torch 2.14.1): 6 of 6 cells; 3 of 4 "
        "row means inside this table's 95% prediction intervals; 0 of 6 cells bit-identical (not expected); one "
        "cell's metric moved by up to 5.4 points."]


def test_json_results_beside_the_report_and_on_their_own(store, run_cli, tmp_path):
    import json

    spec, ws = store
    out = tmp_path / "reports" / "rep.md"
    code, _, err = run_cli("report", spec, "--workspace", ws, "--out", out)
    assert code == 0, err
    data = json.loads((tmp_path / "reports" / "rep.json").read_text())
    alone = tmp_path / "alone.json"
    code, _, err = run_cli("report", spec, "--workspace", ws, "--json", alone)
    assert code == 0, err
    assert json.loads(alone.read_text()) == data  # the same results, with or without the markdown
    assert data["spec"] == "rep" and data["cells"] == 6 and data["finished"] == 4 and data["alpha"] == 0.05
    (table,) = data["tables"]
    fcos, poto = table["rows"]
    ap = fcos["columns"][0]
    assert (ap["column"], ap["key"], ap["n"], ap["paper_points"]) == ("mAP", "eval.ap", 3, 41.4)
    assert [v["value"] for v in ap["values"]] == [0.410, 0.414, 0.412] and all(v["run_id"] for v in ap["values"])
    assert ap["mean"] == pytest.approx(0.412) and ap["std"] == pytest.approx(0.002)
    assert ap["ci95"][0] == pytest.approx(0.412 - 4.302652729911275 * 0.002 / 3 ** 0.5)
    states = [(v["seed"], v["status"], v["value"]) for v in poto["columns"][0]["values"]]
    assert states == [(0, "finished", 0.392), (1, "failed", None), (2, "missing", None)]
    (claim,) = table["claims"]  # no declared claims: POTO against the baseline, two-sided
    assert claim["kind"] == "two-sided" and claim["row"] == "POTO" and claim["vs"] == "FCOS"
    assert claim["verdict"].startswith("untested") and claim["n_row"] == 1 and claim["n_vs"] == 3
    for key in ("delta", "interval", "p", "p_holm", "min_detectable_effect", "seeds_needed_observed", "row_values"):
        assert key in claim
