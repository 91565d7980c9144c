"""Training speed (a benchmark, not a test): prints times and ratios measured in one process.

1. Our FCOS row vs torchvision's FCOS, same ResNet-50 FPN, image size and batch, on the CPU:
   seconds per training step (forward + backward + SGD step), alternating the two models.
2. Harness overhead at the quickstart size: data wait + logging (a real SQLite MLflow store)
   + bookkeeping, as a share of the iteration.

    python bench/train_speed.py [--steps 5] [--size 320] [--batch 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
warnings.filterwarnings("ignore")

import torch  # noqa: E402
import torchvision  # noqa: E402

from harness.data.build import load_datasets, train_dataset  # noqa: E402
from harness.data.loader import train_loader  # noqa: E402
from harness.model.build import build_from_config  # noqa: E402
from harness.spec import expand, load_spec, parse_set  # noqa: E402
from harness.track.mlflow_tracker import MLflowTracker, default_tracking_uri  # noqa: E402
from harness.train.engine import WindowMeter, train_step  # noqa: E402
from harness.train.optim import build_optimizer  # noqa: E402


def ours_vs_torchvision(steps: int, size: int, batch: int) -> None:
    cell = next(c for c in expand(load_spec("experiments/coco_ablation.yaml"), [
        parse_set("model.backbone.weights=null"), parse_set("model.backbone.input_format=torchvision_rgb")])
        if c.row == "FCOS")
    ours = build_from_config(cell.config)
    tv = torchvision.models.detection.fcos_resnet50_fpn(weights=None, weights_backbone=None, num_classes=80,
                                                        min_size=size, max_size=size, trainable_backbone_layers=3)
    images = torch.randn(batch, 3, size, size)
    boxes = torch.tensor([[20.0, 30, 120, 200], [150, 40, 300, 260], [60, 60, 90, 100]])
    labels = torch.tensor([3, 7, 11])
    targets = [{"boxes": boxes, "labels": labels} for _ in range(batch)]
    opt_ours = torch.optim.SGD([p for p in ours.parameters() if p.requires_grad], lr=0.001, momentum=0.9)
    opt_tv = torch.optim.SGD([p for p in tv.parameters() if p.requires_grad], lr=0.001, momentum=0.9)

    def step_ours():
        loss = sum(ours(images, [(size, size)] * batch, targets).values())
        opt_ours.zero_grad()
        loss.backward()
        opt_ours.step()

    def step_tv():
        loss = sum(tv(list(images), targets).values())
        opt_tv.zero_grad()
        loss.backward()
        opt_tv.step()

    ours.train()
    tv.train()
    step_ours()
    step_tv()  # warm-up
    t_ours = t_tv = 0.0
    for _ in range(steps):
        t = time.perf_counter()
        step_ours()
        t_ours += time.perf_counter() - t
        t = time.perf_counter()
        step_tv()
        t_tv += time.perf_counter() - t
    print(f"ResNet-50 FPN, {batch} x {size}px, CPU: ours {t_ours / steps:.2f} s/step, torchvision FCOS "
          f"{t_tv / steps:.2f} s/step, ratio ours/torchvision {t_ours / t_tv:.2f} (target <= 1.0)")


def overhead(iters: int) -> None:
    cell = next(c for c in expand(load_spec("experiments/quickstart.yaml")) if c.row == "POTO+3DMF+Aux")
    cfg = cell.config
    with tempfile.TemporaryDirectory() as ws:
        data = load_datasets(cfg.data, os.path.join(ws, "cache"))
        torch.manual_seed(0)
        model = build_from_config(cfg)
        opt = build_optimizer(model, cfg.train, cfg.train.base_lr)
        loader = iter(train_loader(train_dataset(cfg.data, data.train, cfg.model.backbone.input_format),
                                   cfg.train.ims_per_batch, seed=0))
        tracker = MLflowTracker.start(default_tracking_uri(ws), "bench", "overhead", {}, workspace=ws)
        meter = WindowMeter()
        t_data = t_step = t_log = 0.0
        t_all = time.perf_counter()
        for it in range(1, iters + 1):
            t = time.perf_counter()
            batch = next(loader)
            t_data += time.perf_counter() - t
            t = time.perf_counter()
            values = train_step(model, batch, opt, None, iteration=it)
            t_step += time.perf_counter() - t
            t = time.perf_counter()
            meter.add(values)
            if it % cfg.tracking.log_period == 0:
                tracker.log_metrics(meter.means(), step=it)
                tracker.flush()
            t_log += time.perf_counter() - t
        total = time.perf_counter() - t_all
        tracker.end("FINISHED")
    other = total - t_data - t_step - t_log
    print(f"quickstart ({cfg.train.ims_per_batch} images/iter, {iters} iterations): {1000 * total / iters:.0f} ms/iter; "
          f"data wait {100 * t_data / total:.1f}%, logging {100 * t_log / total:.1f}%, other "
          f"{100 * other / total:.1f}% -> harness overhead {100 * (total - t_step) / total:.1f}% (target <= 5%)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--iters", type=int, default=60)
    args = ap.parse_args()
    overhead(args.iters)
    ours_vs_torchvision(args.steps, args.size, args.batch)


if __name__ == "__main__":
    main()
