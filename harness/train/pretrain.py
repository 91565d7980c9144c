"""Detection pre-training of the tiny backbone (model.backbone.pretrain), cached per workspace.

A ResNet row starts from an ImageNet checkpoint that is the same for every seed; the tiny CPU
backbone has none, and a fresh random draw per seed moved the quickstart's one-to-one rows by
±3 AP50 between seeds. `pretrain` gives the tiny backbone the same role as the checkpoint: one
FCOS detector is trained on synthetic scenes of its own (another generator seed, so none of the
cell's training or validation images), and every cell that names the same pre-training loads its
backbone. The pre-training has a recipe of its own (`model.backbone.pretrain`), so rows and
sweep trials that differ in their predictor, losses or optimizer share one cache file, whose name
is the run key of the pre-training's config.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

import torch

from harness.data.build import load_datasets, train_dataset
from harness.data.loader import train_loader
from harness.data.synthetic import synthetic_kind
from harness.model.build import build_from_config
from harness.spec.matrix import run_key
from harness.spec.schema import Config, SynthConfig
from harness.train.engine import NonFiniteLoss, to_device, train_step
from harness.train.optim import build_optimizer, build_scheduler, scaled_schedule

#: The one-to-many rule of the pre-training detector: the FCOS baseline's (center sampling 1.5,
#: GIoU weighted by the centerness target, centerness branch on the regression tower).
FCOS_PREDICTOR = {"assigner": {"name": "fcos", "center_radius": 1.5}, "centerness": "reg",
                  "loss": {"box": "giou", "box_weight": 1.0, "box_weighting": "centerness"}}


def pretrain_config(cfg: Config) -> Config:
    """The config of the pre-training run a cell's backbone comes from.

    From the cell: the backbone (name, width, norm), the synthetic generator's scene settings
    (sizes, crowding, format), the training transforms and the memory layout. Everything else
    comes from `model.backbone.pretrain`: the images (`num_images` scenes of generator seed
    `data_seed`), the seed, the detector (FCOS, cvpods FPN, GroupNorm towers) and the recipe.
    So cells that differ in their predictor, loss, optimizer or schedule share one pre-training,
    as they would share an ImageNet checkpoint.
    """
    pre = cfg.model.backbone.pretrain
    if pre is None:
        raise ValueError("the cell's backbone has no pretrain section")
    synth = cfg.data.synthetic or SynthConfig()
    _, classes = synthetic_kind(synth.format)
    d = cfg.data
    return Config.model_validate({
        "seed": pre.seed,
        "model": {"num_classes": classes,
                  "backbone": cfg.model.backbone.model_dump(mode="json", exclude={"pretrain"}),
                  "fpn": {"name": "cvpods", "channels": pre.fpn_channels},
                  "head": {"num_convs": pre.head_convs, "norm": "gn", "gn_groups": pre.gn_groups},
                  "predictor": FCOS_PREDICTOR},
        "data": {"name": "synthetic", "num_workers": 0,
                 "synthetic": {**synth.model_dump(mode="json"), "seed": pre.data_seed,
                               "num_train": pre.num_images, "num_val": 1},
                 "train_min_size": list(d.train_min_size), "train_max_size": d.train_max_size,
                 "flip_prob": d.flip_prob, "augment": d.augment, "size_divisibility": d.size_divisibility,
                 "filter_empty": d.filter_empty, "gt_filter": d.gt_filter},
        "train": {"max_iter": pre.iters, "ims_per_batch": pre.ims_per_batch,
                  "reference_batch": pre.ims_per_batch, "optimizer": pre.optimizer, "base_lr": pre.base_lr,
                  "weight_decay": pre.weight_decay, "clip_grad_norm": pre.clip_grad_norm,
                  "warmup_iters": pre.warmup_iters, "steps": list(pre.steps), "checkpoint_period": pre.iters,
                  "channels_last": cfg.train.channels_last},
        "eval": {"period": 0, "nms": True, "metrics": "crowdhuman" if synth.format == "odgt" else "coco"},
    })


def pretrained_backbone(cfg: Config, cache_dir: str | Path, *, device=None,
                        log=print) -> tuple[dict[str, torch.Tensor], str]:
    """The pre-trained backbone's state dict and its cache file; trains it on first use.

    Parallel cells wait on a lock file while one of them trains; the file appears atomically.
    The caller's random state is left as it was.
    """
    pcfg = pretrain_config(cfg)
    key = run_key(pcfg)
    folder = Path(cache_dir) / "pretrain"
    final = folder / f"{key[:24]}.pt"
    if not final.exists():
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"{key[:24]}.lock", "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log(f"waiting for another cell's pre-training of the tiny backbone ({final})")
                fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if not final.exists():
                    t0 = time.time()
                    log(f"pre-training the tiny backbone ({pcfg.train.max_iter} iterations of FCOS on "
                        f"{pcfg.data.synthetic.num_train} synthetic images, seed {pcfg.seed}; "
                        f"cached for every cell of this workspace)")
                    dev = torch.device(device or "cpu")
                    with torch.random.fork_rng(devices=[dev.index or 0] if dev.type == "cuda" else []):
                        state = _pretrain(pcfg, cache_dir, dev)
                    tmp = folder / f".{final.name}.{os.getpid()}.tmp"
                    torch.save(state, tmp)
                    (folder / f"{key[:24]}.json").write_text(
                        json.dumps(pcfg.model_dump(mode="json"), indent=1, sort_keys=True) + "\n")
                    os.replace(tmp, final)
                    log(f"pre-training done in {time.time() - t0:.0f} s: {final}")
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
    return torch.load(final, map_location="cpu", weights_only=True), str(final)


def _pretrain(pcfg: Config, cache_dir: str | Path, device: torch.device) -> dict[str, torch.Tensor]:
    data = load_datasets(pcfg.data, cache_dir)
    torch.manual_seed(pcfg.seed)
    model = build_from_config(pcfg).to(device)
    if pcfg.train.channels_last:
        model = model.to_channels_last()
    sched = scaled_schedule(pcfg.train, 0)
    optimizer = build_optimizer(model, pcfg.train, sched.base_lr)
    scheduler = build_scheduler(optimizer, sched, pcfg.train)
    loader = iter(train_loader(train_dataset(pcfg.data, data.train, pcfg.model.backbone.input_format),
                               pcfg.train.ims_per_batch, seed=pcfg.seed,
                               divisibility=pcfg.data.size_divisibility))
    model.train()
    for it in range(1, sched.max_iter + 1):
        try:  # one process, no collective: under DDP the other ranks wait for the cache file
            train_step(model, to_device(next(loader), device), optimizer, None, iteration=it,
                       clip_grad_norm=pcfg.train.clip_grad_norm, collective=False)
        except NonFiniteLoss as exc:
            raise NonFiniteLoss(f"pre-training {exc.term}", exc.iteration, exc.value) from None
        scheduler.step()
    return {k: v.detach().cpu().contiguous() for k, v in model.backbone.state_dict().items()}
