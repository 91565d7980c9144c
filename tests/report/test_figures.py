"""The report's figures: rendered at 150 dpi or more, each under its own alt text with a caption,
from runs whose evaluation metrics are named by postprocess only (eval.nms.*, eval.nms_free.*:
`eval.ap` is the row's headline mode), with intervals clipped to the metric's range."""

import re
import warnings

import pytest
from PIL import Image

from harness.report.plots import interval
from harness.spec import expand, load_spec

SPEC = """\
name: figs
description: Two rows, metrics logged by postprocess only.
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
  main: {title: Results, layout: defcn_coco}
rows:
  - {label: FCOS, table: main, baseline: true, method: fcos, assignment: one-to-many}
  - {label: POTO, table: main, method: poto, assignment: one-to-one}
seeds: [0, 1, 2]
"""


@pytest.fixture
def store(tmp_path):
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    spec = tmp_path / "figs.yaml"
    spec.write_text(SPEC)
    ws = tmp_path / "ws"
    ws.mkdir()
    client = MlflowClient(f"sqlite:///{ws / 'mlflow.db'}")
    exp = client.create_experiment("figs", artifact_location=(ws / "art").as_uri())
    for c in expand(load_spec(spec)):
        run = client.create_run(exp, tags={"harness.run_key": c.run_key, "harness.row": c.row}, run_name=c.id)
        nms, free = (0.40 + c.seed / 100, 0.30) if c.row == "FCOS" else (0.38, 0.39 + c.seed / 100)
        metrics = []
        for step, scale in ((2, 0.5), (5, 1.0)):
            metrics += [Metric("eval.nms.ap", scale * nms, 0, step), Metric("eval.nms_free.ap", scale * free, 0, step),
                        Metric("eval.nms.ar100", 0.6, 0, step), Metric("eval.nms_free.ar100", 0.6, 0, step)]
        metrics += [Metric("train.total_loss", v, 0, s) for s, v in ((1, 2.0), (5, 1.0 + c.seed))]
        client.log_batch(run.info.run_id, metrics=metrics)
        client.set_terminated(run.info.run_id, "FINISHED")
    return spec, ws


def test_figures_have_captions_and_are_print_quality(store, run_cli, tmp_path):
    spec, ws = store
    out = tmp_path / "reports" / "figs.md"
    code, _, err = run_cli("report", spec, "--workspace", ws, "--out", out)
    assert code == 0, err
    text = out.read_text()
    # eval.ap is the headline mode of each row: NMS for FCOS (41.0 mean), NMS-free for POTO (40.0)
    assert re.search(r"\| FCOS \| one-to-many \| .*41\.0 ± 1\.0", text), text
    assert re.search(r"\| POTO \| one-to-one \| .*40\.0 ± 1\.0", text), text
    images = re.findall(r"!\[([^\]]+)\]\(([^)]+)\)\n\n\*([^*]+)\*", text)
    assert [p for _, p, _ in images] == [f"figs_main_{k}.png" for k in ("convergence", "seeds", "nms", "claims", "loss")]
    assert len({alt for alt, _, _ in images}) == len(images)  # no two figures share an alt text
    assert all(len(caption) > 60 for _, _, caption in images)
    assert "one thin line per seed" in images[-1][2] and "one line per seed" in images[2][2]
    for _, png, _ in images:
        with Image.open(out.parent / png) as im:
            assert im.info["dpi"][0] >= 150 and im.size[0] >= 600, (png, im.info["dpi"], im.size)


def test_intervals_are_clipped_to_the_metric_range():
    lo, hi = interval([0.99, 0.60, 0.98])  # unclipped: about 35.9 to 145.4
    assert hi == 100.0 and 0.0 < lo < 60.0
    lo, hi = interval([0.01, 0.30, 0.02])
    assert lo == 0.0 and hi < 100.0
    assert all(v != v for v in interval([0.5]))  # one seed: no interval
