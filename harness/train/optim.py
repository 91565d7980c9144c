"""Optimisers and schedules (cvpods / detectron2 defaults, mmdet AdamW for DATE).

- SGD, momentum 0.9, weight decay 1e-4 except on norm layers (weight_decay_norm, 0 by default).
- AdamW with the backbone's lr multiplied by backbone_lr_mult (DATE: 0.1), grad clipping.
- LR: linear warmup from warmup_factor over warmup_iters, then x gamma at each step.
- Linear scaling rule (cvpods): a total batch B != reference_batch scales lr by B / ref and the
  iteration counts (max_iter, steps, checkpoint and eval periods) by ref / B; the warm-up keeps
  its length in iterations, as in cvpods.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import torch
from torch import nn

NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm, nn.SyncBatchNorm)


@dataclass(frozen=True)
class Schedule:
    base_lr: float
    max_iter: int
    steps: tuple[int, ...]
    warmup_iters: int
    checkpoint_period: int
    eval_period: int
    scale: float  # B / reference_batch (1.0: nothing changed)


def scaled_schedule(train, eval_period: int) -> Schedule:
    f = train.ims_per_batch / train.reference_batch if train.scale_rule == "linear" else 1.0
    if f == 1.0:
        return Schedule(train.base_lr, train.max_iter, tuple(train.steps), train.warmup_iters,
                        train.checkpoint_period, eval_period, 1.0)

    def it(n: int) -> int:
        return max(1, int(round(n / f)))

    max_iter = it(train.max_iter)
    return Schedule(train.base_lr * f, max_iter, tuple(min(it(s), max_iter - 1) for s in train.steps),
                    train.warmup_iters, it(train.checkpoint_period),
                    it(eval_period) if eval_period else 0, f)


def param_groups(model: nn.Module, *, lr: float, weight_decay: float, weight_decay_norm: float,
                 backbone_lr_mult: float) -> list[dict]:
    groups: dict[tuple, list] = {}
    seen = set()
    for mod_name, module in model.named_modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            wd = weight_decay_norm if isinstance(module, NORM_TYPES) else weight_decay
            full = f"{mod_name}.{name}"
            mult = backbone_lr_mult if full.startswith(("backbone.", "module.backbone.")) else 1.0
            groups.setdefault((wd, mult), []).append(p)
    return [{"params": ps, "weight_decay": wd, "lr": lr * mult, "lr_mult": mult}
            for (wd, mult), ps in sorted(groups.items())]


def build_optimizer(model: nn.Module, train, lr: float) -> torch.optim.Optimizer:
    groups = param_groups(model, lr=lr, weight_decay=train.weight_decay,
                          weight_decay_norm=train.weight_decay_norm, backbone_lr_mult=train.backbone_lr_mult)
    if train.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=train.momentum)
    return torch.optim.AdamW(groups, lr=lr)


def lr_factor(it: int, *, warmup_iters: int, warmup_factor: float, steps: tuple[int, ...], gamma: float) -> float:
    """Multiplier of the base lr at iteration `it` (0-based), detectron2's WarmupMultiStepLR."""
    warm = 1.0
    if it < warmup_iters:
        alpha = it / warmup_iters
        warm = warmup_factor * (1 - alpha) + alpha
    return warm * gamma ** bisect.bisect_right(list(steps), it)


def build_scheduler(optimizer, sched: Schedule, train) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: lr_factor(it, warmup_iters=sched.warmup_iters, warmup_factor=train.warmup_factor,
                                        steps=sched.steps, gamma=train.gamma))
