"""Optimisers and schedules (cvpods / detectron2 defaults, mmdet AdamW for DATE).

- SGD, momentum 0.9, weight decay 1e-4 except on norm layers (weight_decay_norm, 0 by default).
- AdamW with the backbone's lr multiplied by backbone_lr_mult (DATE: 0.1), grad clipping.
- Adam (the unofficial FCOS): torch Adam, L2 weight decay on the weights of non-norm layers only.
- LR: linear warmup from warmup_factor over warmup_iters, then x gamma at each step (`step`), or
  the unofficial FCOS's cosine decay within each interval between steps (`cosine`).
- Epoch schedules: max_iter = epochs x ceil(training images / ims_per_batch), steps x the same.
- Linear scaling rule (cvpods): a total batch B != reference_batch scales lr by B / ref and the
  iteration counts (max_iter, steps, checkpoint and eval periods) by ref / B; the warm-up keeps
  its length in iterations, as in cvpods.
"""

from __future__ import annotations

import bisect
import math
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
    iters_per_epoch: int = 0  # train.epochs: ceil(training images / ims_per_batch); 0: max_iter given


def iters_per_epoch(num_train: int, ims_per_batch: int) -> int:
    """Iterations of one pass over the training set: the last, short batch counts (the original's
    DataLoader keeps it, drop_last False; DistributedSampler pads each process's share, and
    ceil(ceil(n / W) / b) = ceil(n / (W b)))."""
    return math.ceil(num_train / ims_per_batch)


def scaled_schedule(train, eval_period: int, num_train: int | None = None) -> Schedule:
    """The schedule a cell trains; `num_train` (the training images after filtering) is needed
    for `train.epochs`, which fixes max_iter and the steps from it (not rescaled: an epoch is
    already counted in batches of ims_per_batch; the lr and the periods follow the rule)."""
    f = train.ims_per_batch / train.reference_batch if train.scale_rule == "linear" else 1.0
    cap = 0 if train.lr_schedule == "cosine" else 1  # cosine: a step may sit at max_iter

    def it(n: int) -> int:
        return n if f == 1.0 else max(1, int(round(n / f)))

    if train.epochs is not None:
        if num_train is None:
            raise ValueError("train.epochs needs the number of training images")
        ipe = iters_per_epoch(num_train, train.ims_per_batch)
        max_iter = ipe * train.epochs
        steps = tuple(min(s * ipe, max_iter - cap) for s in train.steps)
    else:
        ipe, max_iter = 0, it(train.max_iter)
        steps = tuple(train.steps) if f == 1.0 else tuple(min(it(s), max_iter - cap) for s in train.steps)
    return Schedule(train.base_lr * f, max_iter, steps, train.warmup_iters, it(train.checkpoint_period),
                    it(eval_period) if eval_period else 0, f, ipe)


def param_groups(model: nn.Module, *, lr: float, weight_decay: float, weight_decay_norm: float,
                 backbone_lr_mult: float, weights_only: bool = False, bias_lr_factor: float = 1.0,
                 weight_decay_bias: float | None = None) -> list[dict]:
    """Parameter groups by weight decay and lr multiplier. weights_only (adam): only parameters
    named `weight` are decayed (norm layers' at weight_decay_norm); biases and the rest (FCOS
    scales) get none, as the unofficial FCOS's split_params. Parameters named `bias` then take
    lr x bias_lr_factor and, unless None, weight_decay_bias (maskrcnn-benchmark's
    BIAS_LR_FACTOR / WEIGHT_DECAY_BIAS: 2 and 0 in the official FCOS)."""
    groups: dict[tuple, list] = {}
    seen = set()
    for mod_name, module in model.named_modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            wd = weight_decay_norm if isinstance(module, NORM_TYPES) else weight_decay
            if weights_only and name != "weight":
                wd = 0.0
            full = f"{mod_name}.{name}"
            mult = backbone_lr_mult if full.startswith(("backbone.", "module.backbone.")) else 1.0
            if name == "bias":
                mult *= bias_lr_factor
                wd = wd if weight_decay_bias is None else weight_decay_bias
            groups.setdefault((wd, mult), []).append(p)
    return [{"params": ps, "weight_decay": wd, "lr": lr * mult, "lr_mult": mult}
            for (wd, mult), ps in sorted(groups.items())]


def build_optimizer(model: nn.Module, train, lr: float) -> torch.optim.Optimizer:
    groups = param_groups(model, lr=lr, weight_decay=train.weight_decay, weight_decay_norm=train.weight_decay_norm,
                          backbone_lr_mult=train.backbone_lr_mult, weights_only=train.optimizer == "adam",
                          bias_lr_factor=train.bias_lr_factor, weight_decay_bias=train.weight_decay_bias)
    if train.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=train.momentum)
    if train.optimizer == "adam":  # L2: weight_decay x w is added to the gradient (torch Adam)
        return torch.optim.Adam(groups, lr=lr)
    return torch.optim.AdamW(groups, lr=lr)


def lr_factor(it: int, *, warmup_iters: int, warmup_factor: float, steps: tuple[int, ...], gamma: float,
              warmup_method: str = "linear") -> float:
    """Multiplier of the base lr at iteration `it` (0-based), detectron2's WarmupMultiStepLR;
    warmup_method 'constant': warmup_factor throughout the warm-up (maskrcnn-benchmark's)."""
    warm = 1.0
    if it < warmup_iters:
        alpha = 0.0 if warmup_method == "constant" else it / warmup_iters
        warm = warmup_factor * (1 - alpha) + alpha
    return warm * gamma ** bisect.bisect_right(list(steps), it)


def cosine_factor(it: int, *, warmup_iters: int, warmup_factor: float, steps: tuple[int, ...], gamma: float,
                  final: float, warmup_method: str = "linear") -> float:
    """Multiplier of the base lr at iteration `it` (0-based) of the unofficial FCOS's
    IterWarmUpCosineDecayMultiStepLRAdjust (solver/ddp_mix_solver.py, utils/optims_utils.py).

    Linear warm-up from warmup_factor (the original: 0) over warmup_iters; then the boundaries
    b_0 = warmup_iters < b_1 < ... (the steps) cut the run into intervals: in the k-th,
    lr = gamma^k x (final + (1 - final) x (1 + cos(pi t / T)) / 2) with t = it - b_k and
    T = b_(k+1) - b_k; after the last boundary the lr stays at gamma^k (no steps: constant)."""
    if it < warmup_iters:
        alpha = 0.0 if warmup_method == "constant" else it / warmup_iters
        return warmup_factor * (1 - alpha) + alpha
    bounds = sorted({warmup_iters, *steps})
    k = bisect.bisect_right(bounds, it) - 1
    if k == len(bounds) - 1:
        return gamma ** k
    t, total = it - bounds[k], bounds[k + 1] - bounds[k]
    return gamma ** k * ((1 + math.cos(t * math.pi / total)) / 2 * (1 - final) + final)


def build_scheduler(optimizer, sched: Schedule, train) -> torch.optim.lr_scheduler.LambdaLR:
    if train.lr_schedule == "cosine":
        def factor(it: int) -> float:
            return cosine_factor(it, warmup_iters=sched.warmup_iters, warmup_factor=train.warmup_factor,
                                 steps=sched.steps, gamma=train.gamma, final=train.cosine_final,
                                 warmup_method=train.warmup_method)
    else:
        def factor(it: int) -> float:
            return lr_factor(it, warmup_iters=sched.warmup_iters, warmup_factor=train.warmup_factor,
                             steps=sched.steps, gamma=train.gamma, warmup_method=train.warmup_method)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
