"""What a run shows in MLflow after `harness run`: the experiment's kind and description, the
axis values as tags, params that identify the cell (none that do not apply), evaluation metrics
named by their postprocess only, and counts kept out of the metrics (in eval.json)."""

import json
import warnings

import pytest

from tests.train.helpers import runs

pytestmark = pytest.mark.slow

SPEC = """\
name: pages
description: POTO on tiny synthetic scenes (what MLflow shows)
base:
  model:
    num_classes: 1
    backbone: {name: tiny, weights: null, norm: gn, tiny_width: 8, input_format: torchvision_rgb, freeze_at: 0}
    fpn: {channels: 32}
    head: {num_convs: 1, gn_groups: 8}
    predictor: {assigner: {name: poto}}
  data:
    name: synthetic
    synthetic: {num_train: 8, num_val: 4, min_size: 64, max_size: 64, format: odgt, seed: 0}
    train_min_size: [64]
    train_max_size: 64
    test_min_size: 64
    test_max_size: 64
    num_workers: 0
  train: {max_iter: 2, base_lr: 0.01, optimizer: adamw, ims_per_batch: 2, reference_batch: 2, warmup_iters: 1}
  eval: {nms: false, metrics: crowdhuman}
  tracking: {log_period: 1}
  resources: {gpus: 0, slurm: {partition: gpu, cpus: 2}}
axes:
  method:
    poto: {model.predictor.assigner.alpha: 0.7}
rows:
  - {label: POTO, method: poto}
seeds: [0]
"""


def test_mlflow_pages(run_cli, tmp_path):
    spec = tmp_path / "pages.yaml"
    spec.write_text(SPEC)
    ws = tmp_path / "ws"
    code, out, err = run_cli("run", spec, "--workspace", ws, "--jobs", "1")
    assert code == 0, out + err
    assert f"mlflow ui --backend-store-uri sqlite:///{ws.resolve() / 'mlflow.db'}" in out  # the next steps
    assert f"harness report {spec} --workspace {ws}" in out

    from mlflow import MlflowClient

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    client = MlflowClient(tracking_uri=f"sqlite:///{ws.resolve() / 'mlflow.db'}")
    exp = client.get_experiment_by_name("pages")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # not the GenAI view
    assert exp.tags["mlflow.note.content"] == "POTO on tiny synthetic scenes (what MLflow shows)"

    r = runs(ws, "pages").iloc[0]
    assert r["status"] == "FINISHED"
    assert r["tags.harness.axis.method"] == "poto" and r["tags.harness.headline"] == "nms_free"

    params = {k[len("params."):] for k in r.index if k.startswith("params.") and isinstance(r[k], str)}
    assert {"seed", "train.base_lr", "train.optimizer", "model.predictor.assigner.alpha", "model.predictor.filter",
            "data.synthetic.num_train", "eval.nms"} <= params
    assert r["params.model.predictor.assigner.alpha"] == "0.7"
    noise = [p for p in params if p.startswith(("resources.slurm.", "schedule.", "model.aux", "model.o2m",
                                                "data.train.", "data.val.", "model.predictor.filter_"))
             or p in ("train.momentum", "model.predictor.anchors", "data.train", "data.val", "model.aux", "model.o2m")]
    assert noise == [], noise
    assert all(r[f"params.{p}"] != "None" for p in params)

    metrics = {k[len("metrics."):] for k in r.index if k.startswith("metrics.") and r[k] == r[k]}
    evals = {m for m in metrics if m.startswith("eval.")}
    assert {"eval.nms.ap50", "eval.nms_free.ap50", "eval.nms.mmr", "eval.nms_free.recall"} <= evals
    assert all(m.startswith(("eval.nms.", "eval.nms_free.")) for m in evals), evals  # one mode per name
    assert not [m for m in evals if m.rsplit(".", 1)[1] in ("n_images", "n_valid_gt", "n_dets")]

    (run_dir,) = [d for d in ws.iterdir() if (d / "eval.json").exists()]
    counts = json.loads((run_dir / "eval.json").read_text())
    assert counts["nms_free.n_images"] == 4 and counts["headline"] == "nms_free"
    assert any(a.path == "eval.json" for a in client.list_artifacts(r["run_id"]))
