"""`harness decide` on a store another process filled (an MLflow client and the harness tags):
the looks so far, each claim's verdict, the cells to run next; nothing trained, nothing written
but the JSON asked for."""

import json
import warnings

import numpy as np
import pytest

from harness.report.decide import cells_to_decide
from harness.spec import load_spec

SPEC = """\
name: dec
base:
  model: {num_classes: 1, backbone: {name: tiny}, predictor: {assigner: {name: poto}}}
  data: {name: synthetic, synthetic: {num_train: 4, num_val: 2, format: odgt}}
  train: {max_iter: 10, base_lr: 0.01}
  eval: {nms: false, metrics: crowdhuman}
axes:
  method:
    fcos: {model.predictor.assigner: {name: fcos}, eval.nms: true}
    poto: {}
    poto_b: {train.checkpoint_period: 7}
rows:
  - {label: FCOS, table: t, method: fcos, baseline: true}
  - {label: POTO, table: t, method: poto}
  - {label: POTO-B, table: t, method: poto_b}
tables:
  t:
    title: T
    layout: quickstart
    claims:
      - {row: FCOS, post: nms_free, vs: FCOS, vs_post: nms, metric: ap50, expect: worse}
      - {row: POTO-B, post: nms_free, vs: POTO, vs_post: nms_free, metric: ap50, expect: better}
    decide: {looks: [3, 5, 8], spending: pocock}
seeds: [0, 1, 2]
"""
#: the same design without futility stopping: the tests of the plan, the report's path and the
#: look records need the no-effect claim open after look 1 (`test_a_claim_stopped_for_futility`
#: has the default)
PLAIN = SPEC.replace("spending: pocock}", "spending: pocock, futility: null}")


def fill(uri, cells, values):
    """Runs as another process would write them: FINISHED, tagged, with final metrics."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("dec") or client.get_experiment(client.create_experiment("dec"))
    for c in cells:
        if (c.row, c.seed) not in values:
            continue
        nms, free = values[(c.row, c.seed)]
        run = client.create_run(exp.experiment_id, tags={"harness.run_key": c.run_key, "harness.row": c.row,
                                                         "harness.seed": str(c.seed)}, run_name=c.id)
        client.log_batch(run.info.run_id, metrics=[Metric("eval.nms.ap50", nms, 0, 10),
                                                   Metric("eval.nms_free.ap50", free, 0, 10)])
        client.set_terminated(run.info.run_id, "FINISHED")


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "dec.yaml"
    path.write_text(PLAIN)
    return path


def test_decide_reads_another_process_store_and_plans_the_next_seeds(spec, tmp_path, run_cli):
    cells = cells_to_decide(load_spec(spec))
    assert sorted({c.seed for c in cells}) == list(range(8))  # the spec's 3 seeds, then 3..7
    rng = np.random.default_rng(0)
    values = {}
    for seed in range(3):
        values[("FCOS", seed)] = (0.80 + 0.002 * rng.standard_normal(), 0.40 + 0.01 * rng.standard_normal())
        for row in ("POTO", "POTO-B"):  # the same setting: no effect
            values[(row, seed)] = (0.8, 0.85 + 0.01 * rng.standard_normal())
    ws = tmp_path / "ws"
    ws.mkdir()
    uri = f"sqlite:///{ws / 'mlflow.db'}"
    fill(uri, cells, values)
    before = sorted(p.name for p in ws.iterdir()), (ws / "mlflow.db").stat().st_mtime_ns
    code, out, err = run_cli("decide", spec, "--tracking-uri", uri, "--json", tmp_path / "d.json")
    assert code == 0, err
    assert (sorted(p.name for p in ws.iterdir()), (ws / "mlflow.db").stat().st_mtime_ns) == before
    data = json.loads((tmp_path / "d.json").read_text())
    (table,) = data["tables"]
    huge, null = table["claims"]
    assert huge["verdict"] == "holds" and huge["seeds"] == 3 and len(huge["looks"]) == 1  # the first look
    assert null["verdict"] == "continue"
    assert table["next"] == {"look": 2, "seeds": 5, "cells": {"POTO-B": [3, 4], "POTO": [3, 4]}}
    assert "next: look 2 at 5 seeds per row; run POTO-B: seeds 3, 4; POTO: seeds 3, 4" in out

    # the next look's seeds arrive, one of them failed: the seeds after it do not count yet
    more = {(row, seed): (0.8, 0.85 + 0.01 * rng.standard_normal()) for row in ("POTO", "POTO-B") for seed in (3, 4)}
    fill(uri, [c for c in cells if (c.row, c.seed) != ("POTO", 3)], more)
    code, out, _ = run_cli("decide", spec, "--tracking-uri", uri)
    assert code == 0 and "next: look 2 at 5 seeds per row; run POTO: seeds 3, 4" in out


def test_decide_without_a_decide_section_is_one_line(tmp_path, run_cli):
    path = tmp_path / "dec.yaml"
    path.write_text(SPEC.replace("    decide: {looks: [3, 5, 8], spending: pocock}\n", ""))
    code, _, err = run_cli("decide", path, "--workspace", tmp_path)
    assert code == 2 and "no table has a decide section" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("decide, message", [
    ("{looks: [3, 3, 8]}", "must increase strictly"),
    ("{looks: [3, 5, 4]}", "must increase strictly"),
    ("{looks: [2, 5]}", "greater than or equal to 3"),
    ("{claims: [5], looks: [3, 5]}", "claim 5 does not exist"),
    ("{looks: [3, 5], spending: linear}", "spending"),
    ("{looks: [3, 5], futility: high}", "futility"),
    ("{looks: [3, 5], futility: 20}", "futility"),
    ("{looks: [3, 5], futility: .inf}", "futility"),
])
def test_a_bad_decide_section_is_one_line(tmp_path, run_cli, decide, message):
    path = tmp_path / "dec.yaml"
    path.write_text(SPEC.replace("{looks: [3, 5, 8], spending: pocock}", decide))
    code, _, err = run_cli("decide", path, "--workspace", tmp_path)
    assert code == 2 and message in err and "decide" in err and len(err.strip().splitlines()) == 1, err


def huge_and_null_store(tmp_path, cells, seed):
    """A store with FCOS's huge NMS effect at 3 seeds and the no-effect POTO / POTO-B pair at 5."""
    rng = np.random.default_rng(seed)
    values = {("FCOS", s): (0.8 + 0.002 * rng.standard_normal(), 0.4 + 0.01 * rng.standard_normal()) for s in range(3)}
    values.update({(row, s): (0.8, 0.85 + 0.01 * rng.standard_normal()) for row in ("POTO", "POTO-B") for s in range(5)})
    ws = tmp_path / "ws"
    ws.mkdir()
    uri = f"sqlite:///{ws / 'mlflow.db'}"
    fill(uri, cells, values)
    return uri


def test_the_report_shows_the_decision_path(spec, tmp_path, run_cli):
    uri = huge_and_null_store(tmp_path, cells_to_decide(load_spec(spec)), seed=1)
    code, _, err = run_cli("report", spec, "--tracking-uri", uri, "--json", tmp_path / "r.json")
    assert code == 0, err
    data = json.loads((tmp_path / "r.json").read_text())
    (d,) = data["decisions"]
    assert [c["verdict"] for c in d["claims"]] == ["holds", "continue"] and d["claims"][1]["seeds"] == 5
    assert d["next"]["seeds"] == 8
    assert d["have"] == {"FCOS": 3, "POTO-B": 5, "POTO": 5}
    code, out, _ = run_cli("report", spec, "--tracking-uri", uri)
    assert "### Sequential decision of T" in out and "look 2 at 5 seeds" in out
    assert "Seeds used: 13 cells over 3 rows, against 24 for every row at the cap (8 seeds)" in out


def test_looks_recorded_by_the_stagewise_rule_resume_quietly(spec, tmp_path):
    """A procedure begun by the earlier (stage-wise) rule: its look records have no `rule`. One
    that reads the same now is no change; one that reads differently is named as the rule's
    doing, not as a changed run; the records are not rewritten."""
    from harness.report.decide import decide_tables, record_looks
    from harness.track.runs import named_run, record, run_tags_of

    ld = load_spec(spec)
    cells = cells_to_decide(ld)
    uri = huge_and_null_store(tmp_path, cells, seed=0)
    run = named_run(uri, "dec", "harness.decision", "dec", run_name="decide:dec")
    same = {"seeds": 3, "claims": {"0": "holds", "1": "continue"}}
    other = {"seeds": 5, "claims": {"1": "holds"}}
    record(uri, run, tags={"harness.decide.t.look1": json.dumps(same), "harness.decide.t.look2": json.dumps(other)})
    decisions = decide_tables(ld, cells, uri)
    assert [lk.verdict for lk in decisions[0].results[1].looks] == ["continue", "continue"]
    notes = record_looks(uri, ld, decisions)
    assert len(notes) == 1 and "look 2 was recorded by the earlier rule" in notes[0], notes
    assert "changed since" not in notes[0]
    tags = run_tags_of(uri, run)
    assert json.loads(tags["harness.decide.t.look2"]) == other


def test_a_claim_stopped_for_futility(tmp_path, run_cli):
    """The default design stops an open claim whose t at an interim look is below the futility
    threshold: `harness decide` says so with the look's t and the interval (inconclusive, not
    contradicted), plans no seeds for it, the JSON carries the look and the threshold, the
    report's path names it, and the look records stay the same when the procedure resumes; a
    look recorded before futility stopping existed that reads differently now is the rule's doing."""
    from harness.report import sequential as sq
    from harness.report.decide import decide_tables, record_looks
    from harness.track.runs import named_run, record, run_tags_of

    path = tmp_path / "dec.yaml"
    path.write_text(SPEC)
    ld = load_spec(path)
    assert ld.spec.tables["t"].decide.futility == sq.FUTILITY
    cells = cells_to_decide(ld)
    values = {("FCOS", s): (0.8 + 0.002 * d, 0.4 + 0.01 * d) for s, d in enumerate([0.3, -1.1, 0.6])}
    values.update({("POTO", s): (0.8, 0.85 + v) for s, v in enumerate([0.01, -0.01, 0.004])})
    values.update({("POTO-B", s): (0.8, 0.85 + v) for s, v in enumerate([0.004, 0.002, -0.004])})
    ws = tmp_path / "ws"
    ws.mkdir()
    uri = f"sqlite:///{ws / 'mlflow.db'}"
    fill(uri, cells, values)
    code, out, err = run_cli("decide", path, "--tracking-uri", uri, "--json", tmp_path / "d.json")
    assert code == 0, err
    (table,) = json.loads((tmp_path / "d.json").read_text())["tables"]
    assert table["design"]["futility"] == sq.FUTILITY
    huge, null = table["claims"]
    (look,) = null["looks"]
    assert look["t"][0] < sq.FUTILITY and look["t_futility"] == sq.FUTILITY  # POTO-B's mean is below POTO's
    assert null["verdict"] == "stopped for futility" and null["stop_look"] == 1 and not null["holds"]
    assert null["next_seeds"] is None and null["interval"][0] < 0 < null["interval"][1]
    assert huge["verdict"] == "holds" and huge["stop_look"] == 1
    assert table["decided"] and table["next"] == {"look": None, "seeds": None, "cells": {}}
    assert f"futility stop below t {sq.FUTILITY:g} before the cap" in out
    assert f"look 1 at 3 seeds: t {look['t'][0]:+.2f} (df 4), boundary" in out and "stopped for futility" in out
    assert (f"verdict: stopped for futility at look 1: t {look['t'][0]:+.2f} below {sq.FUTILITY:g}; inconclusive, "
            "not contradicted") in out
    assert "every claim is decided, at its cap or stopped for futility" in out
    code, out, _ = run_cli("report", path, "--tracking-uri", uri)
    assert code == 0 and "[1] stopped for futility" in out and "not contradicted" in out

    decisions = decide_tables(ld, cells, uri)
    assert record_looks(uri, ld, decisions) == [] and record_looks(uri, ld, decide_tables(ld, cells, uri)) == []
    run = named_run(uri, "dec", "harness.decision", "dec", run_name="decide:dec")
    tags = run_tags_of(uri, run)
    assert json.loads(tags["harness.decide.t.look1"]) == {"seeds": 3, "rule": sq.RULE_T, "futility": sq.FUTILITY,
                                                          "claims": {"0": "holds", "1": "stopped for futility"}}
    # a procedure begun before futility stopping: look 1 recorded with the claim open
    before = {"seeds": 3, "rule": sq.RULE_T, "claims": {"0": "holds", "1": "continue"}}
    record(uri, run, tags={"harness.decide.t.look1": json.dumps(before)})
    (note,) = record_looks(uri, ld, decisions)
    assert "recorded by the earlier rule (cumulative t without futility stopping)" in note and "changed since" not in note
    # the spec's threshold changed during the procedure: named as the design's change
    record(uri, run, tags={"harness.decide.t.look1": json.dumps({**before, "futility": 0.1})})
    (note,) = record_looks(uri, ld, decisions)
    assert "recorded with futility threshold 0.1" in note and "the design changed" in note


def test_a_deciding_row_on_several_datasets_is_one_line(tmp_path, run_cli):
    # a look reads one value per row and seed: a row that runs on two datasets must pick one
    two = SPEC.replace("axes:\n", "axes:\n  dataset:\n    a: {data.synthetic.seed: 0}\n    b: {data.synthetic.seed: 1}\n")
    path = tmp_path / "dec.yaml"
    path.write_text(two)
    code, _, err = run_cli("decide", path, "--workspace", tmp_path)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "rows FCOS, POTO-B, POTO of its claims run on 2 datasets (a, b)" in err and "decide" in err
    path.write_text(two.replace("method: fcos, baseline: true}", "method: fcos, dataset: a, baseline: true}")
                    .replace("method: poto}", "method: poto, dataset: a}").replace("method: poto_b}", "method: poto_b, dataset: a}"))
    code, out, err = run_cli("decide", path, "--workspace", tmp_path)
    assert "datasets" not in err, err
