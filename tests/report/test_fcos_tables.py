"""The FCOS tables: the official README's (measured training memory and test time, the multi-scale
flag, AP on minival and the test-dev server's AP or the paper's marked †) and the unofficial
README's COCOeval block (12 lines, mean ± std over seeds beside the paper's value); the test-dev
record end to end, through a real store and `harness report`.

Set HARNESS_UPDATE_GOLDEN=1 to rewrite the golden file after a deliberate change."""

import os
import re
import warnings
from pathlib import Path

import pandas as pd
import pytest

from harness.report.tables import COCOEVAL_LINES, LAYOUTS, render_table
from harness.spec import expand, load_spec

GOLDEN = Path(__file__).parent / "golden" / "cocoeval.md"
PAPER = dict(zip(COCOEVAL_LINES, (38.0, 56.6, 40.3, 18.1, 43.1, 54.0, 31.3, 49.0, 52.0, 26.6, 59.6, 70.9), strict=True))
SPEC = """\
name: fcos
base:
  model:
    num_classes: 3
    backbone: {name: tiny}
    predictor:
      assigner: {name: fcos}
  data:
    name: synthetic
    synthetic: {num_train: 4, num_val: 2}
  train: {max_iter: 10, base_lr: 0.01}
  eval: {nms: true}
axes:
  sched:
    1x: {data.train_min_size: [800]}
    ms: {data.train_min_size: [640, 800]}
rows:
  - {label: FCOS_R_50_FPN_1x, sched: 1x, table: official,
     paper: {train_mem_gb: 29.3, test_ms_per_image: 71, ap: 37.1, testdev_ap: 37.4}}
  - {label: FCOS_MS, sched: ms, table: official, paper: {ap: 38.0, testdev_ap: 38.3}}
  - {label: FCOS_CPU, sched: 1x, table: official, multi_scale: "No (CPU)"}
  - {label: R50, sched: 1x, table: block, paper: %s}
tables:
  official: {title: FCOS (official README), layout: fcos}
  block: {title: FCOS (unofficial README), layout: cocoeval}
seeds: [0, 1, 2]
""" % {k: v for k, v in PAPER.items()}


@pytest.fixture
def fcos(tmp_path):
    path = tmp_path / "fcos.yaml"
    path.write_text(SPEC)
    loaded = load_spec(path)
    return path, loaded, expand(loaded)


def _frame(cells, values) -> pd.DataFrame:
    """One finished run per cell; `values(row, seed)`: its metrics."""
    return pd.DataFrame([{"row": c.row, "dataset": c.dataset, "seed": c.seed, "run_key": c.run_key,
                          "status": "finished", "run_id": f"r{i}", "failure": None, **values(c.row, c.seed)}
                         for i, c in enumerate(cells)])


def _official(row, seed):
    if row == "FCOS_R_50_FPN_1x":  # GPU numbers; one seed's server result recorded
        return {"eval.ap": 0.371 + seed / 1000, "perf.train_mem_gb": 29.0 + seed / 10,
                "perf.test_ms_per_image": 70.0 + seed, **({"testdev.ap": 0.374} if seed == 0 else {})}
    if row == "FCOS_MS":  # memory not logged (a run from before the rule); no server result
        return {"eval.ap": 0.38, "perf.test_ms_per_image": 8.25}
    if row == "FCOS_CPU":
        return {"eval.ap": 0.01, "perf.cpu.train_rss_gb": 0.4, "perf.cpu.test_ms_per_image": 35.2}
    return {f"eval.{m}": (p + (seed - 1) / 10) / 100 for m, p in PAPER.items()}


def test_the_official_fcos_table_prints_what_the_readme_prints(fcos):
    _, loaded, cells = fcos
    t = render_table("official", loaded.spec, cells, _frame(cells, _official))
    lines = t.markdown.splitlines()
    assert lines[0] == ("| Model | Total training mem (GB) | Multi-scale training | Testing time / im | AP (minival) "
                        "| AP (test-dev) |")
    assert lines[2] == "| FCOS_R_50_FPN_1x | 29.1 (29.3) | No | 71ms (71ms) | 37.2 ± 0.1 (37.1) | 37.4 (37.4) |"
    assert lines[3] == "| FCOS_MS | — | Yes | 8.2ms | 38.0 ± 0 (38.0) | 38.3† |"
    assert lines[4] == "| FCOS_CPU | 0.4 (CPU RSS) | No (CPU) | 35ms (CPU) | 1.0 ± 0 | — |"
    assert "† paper value; no server result recorded" in t.markdown
    assert "training memory: peak allocated GB summed over the GPUs" in t.legend
    # the measured columns are no statistics: no noise, intervals or claims on them
    assert [c.header for c in LAYOUTS["fcos"].seeded] == ["AP (minival)"]
    assert "AP (minival) 0.06" in t.noise and "mem" not in t.noise
    assert all("perf" not in f and "testdev" not in f for f in t.footnotes)


def test_the_cocoeval_block_matches_its_golden_file(fcos):
    _, loaded, cells = fcos
    t = render_table("block", loaded.spec, cells, _frame(cells, _official))
    if os.environ.get("HARNESS_UPDATE_GOLDEN"):
        GOLDEN.write_text(t.markdown + "\n")
    assert t.markdown + "\n" == GOLDEN.read_text()
    lines = t.markdown.splitlines()
    assert lines[0] == "**R50**" and len([x for x in lines if x.startswith(" Average")]) == 12
    assert lines[3] == (" Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = "
                        "0.380 ± 0.001 (paper 0.380)")
    assert lines[-2].startswith(" Average Recall     (AR) @[ IoU=0.50:0.95 | area= large | maxDets=100 ] = 0.709")
    assert t.legend.startswith("Lines: COCOeval's summary, mean ± sample std over 3 seeds, as fractions")


def test_a_cocoeval_block_shows_missing_seeds_and_a_lone_seed(fcos):
    _, loaded, cells = fcos
    one = [c for c in cells if c.row != "R50" or c.seed == 0]
    t = render_table("block", loaded.spec, one, _frame(one, _official))
    assert "= 0.379 (paper 0.380)\n" in t.markdown  # one seed of one cell: no std, no n=k/N
    df = _frame(cells, _official)
    df.loc[(df["row"] == "R50") & (df["seed"] == 2), "status"] = "failed"
    t = render_table("block", loaded.spec, cells, df)
    ap = t.markdown.splitlines()[3]
    assert ap.endswith("] = 0.380 ± 0.001 (paper 0.380) n=2/3")  # seeds 0 and 1: 0.379 and 0.380
    assert t.markdown.endswith("```\n\nFewer seeds than cells: R50: seed 2 failed.")


@pytest.mark.slow
def test_a_recorded_test_dev_result_reaches_the_table(fcos, run_cli, tmp_path):
    from harness.track.mlflow_tracker import MLflowTracker

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    path, _, cells = fcos
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ids = {}
    for c in cells:
        if c.row != "FCOS_R_50_FPN_1x":
            continue
        tags = {"harness.run_key": c.run_key, "harness.row": c.row, "harness.dataset": c.dataset,
                "harness.seed": c.seed}
        t = MLflowTracker.start(uri, "fcos", c.id, tags, workspace=tmp_path)
        t.log_metrics({k: v for k, v in _official(c.row, c.seed).items() if k != "testdev.ap"}, 100)
        t.end("FINISHED", None)
        ids[c.seed] = t.run_id
    readme = tmp_path / "README.md"
    readme.write_text("<!-- harness:table official -->\nold\n<!-- /harness:table -->\n")
    code, _, err = run_cli("report", path, "--tracking-uri", uri, "--readme", readme)
    assert code == 0, err
    assert "| FCOS_R_50_FPN_1x | 29.1 (29.3) | No | 71ms (71ms) | 37.2 ± 0.1 (37.1) | 37.4† |" in readme.read_text()
    code, out, err = run_cli("record-testdev", ids[0], "--ap", "37.6", "--tracking-uri", uri)
    assert code == 0 and out.strip() == f"{ids[0]} (FCOS_R_50_FPN_1x/synthetic/0): testdev.ap = 37.6 %", err
    code, _, err = run_cli("report", path, "--tracking-uri", uri, "--readme", readme)
    assert code == 0, err
    assert re.search(r"\| 37\.2 ± 0\.1 \(37\.1\) \| 37\.6 \(37\.4\) \|", readme.read_text())
    # bad input: one line each, exit 2
    for argv, message in ((("nope", "--ap", "37.6"), "RUN_ID: no run 'nope' in "),
                          ((ids[0], "--ap", "0.376"), "--ap: the server's AP in percent, 1 to 100 (37.4), got 0.376")):
        code, _, err = run_cli("record-testdev", *argv, "--tracking-uri", uri)
        assert code == 2 and err.startswith("error: ") and message in err and len(err.splitlines()) == 1, err


def test_the_fcos_spec_carries_both_readmes_values_and_the_official_footnotes():
    # experiments/fcos.yaml: the official README's table digit for digit (README.md@de2d65a) and
    # its footnotes [1]-[4] under the rebuilt table; the unofficial README's 12 COCOeval values
    from tests.conftest import EXPERIMENTS

    loaded = load_spec(EXPERIMENTS / "fcos.yaml")
    paper = {r.label: r.paper for r in loaded.spec.rows}
    assert paper["FCOS_R_50_FPN_1x"] == {"train_mem_gb": 29.3, "test_ms_per_image": 71, "ap": 37.1, "testdev_ap": 37.4}
    assert paper["FCOS_X_101_64x4d_FPN_2x"] == {"train_mem_gb": 77.7, "test_ms_per_image": 140, "ap": 43.0,
                                                "testdev_ap": 43.2}
    assert paper["fcosv1_R50_640"] == PAPER
    cells = expand(loaded)
    t = render_table("official", loaded.spec, cells, _frame(cells, lambda row, seed: {"eval.ap": 0.4}))
    foot = [line for line in t.markdown.splitlines() if line.startswith("[")]
    assert [line[:3] for line in foot] == ["[1]", "[2]", "[3]", "[4]"]
    assert all(line.endswith(" \\") for line in foot[:3]) and foot[3].endswith("/f4fd58966f45e64608c00b072c801de7f86b4f3a)*.")
    multi = {c.row: len(c.config.data.train_min_size) for c in cells}
    assert multi["FCOS_R_50_FPN_1x"] == 1 and multi["FCOS_R_101_FPN_2x"] == 161  # 640..800
    assert "| FCOS_R_101_FPN_2x | — (44.1) | Yes | — (74ms) | 40.0 ± 0 (41.4) | 41.5† |" in t.markdown
