"""Shared setup for end-to-end training tests: tiny models on tiny synthetic data."""

from __future__ import annotations

import warnings
from pathlib import Path

TINY = """\
model.backbone: {{name: tiny, weights: null, norm: gn, tiny_width: 8, input_format: torchvision_rgb, freeze_at: 0,
                 pretrain: null}}
model.fpn.channels: 32
model.head: {{num_convs: 1, gn_groups: 8}}
model.num_classes: {num_classes}
data:
  name: synthetic
  synthetic: {{num_train: 8, num_val: 4, min_size: {size}, max_size: {size}, format: {fmt}, crowd: high, seed: 0}}
  train_min_size: [{size}]
  train_max_size: {size}
  test_min_size: {size}
  test_max_size: {size}
  num_workers: 0
train: {{max_iter: {iters}, steps: [], warmup_iters: 1, ims_per_batch: {batch}, reference_batch: {batch},
        checkpoint_period: {ckpt}}}
eval: {{period: {eval_period}, metrics: {metrics}}}
tracking: {{log_period: 1}}
"""


def tiny_overrides(tmp: Path, *, fmt: str = "coco", iters: int = 2, batch: int = 2, size: int = 96,
                   ckpt: int = 1, eval_period: int = 0, extra: str = "") -> Path:
    path = tmp / f"tiny_{fmt}_{iters}_{batch}_{size}_{ckpt}_{eval_period}_{abs(hash(extra))}.yaml"
    path.write_text(TINY.format(num_classes=10 if fmt == "coco" else 1, fmt=fmt, iters=iters, batch=batch,
                                size=size, ckpt=ckpt, eval_period=eval_period,
                                metrics="coco" if fmt == "coco" else "crowdhuman") + extra)
    return path


def runs(workspace: Path, experiment: str):
    import mlflow

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    mlflow.set_tracking_uri(f"sqlite:///{workspace.resolve() / 'mlflow.db'}")
    return mlflow.search_runs(experiment_names=[experiment])


def history(workspace: Path, run_id: str, key: str) -> list[tuple[int, float]]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{workspace.resolve() / 'mlflow.db'}")
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
