"""An exponential moving average of a model's weights (`train.ema`).

The rule of the unofficial FCOS (its `utils/model_utils.py` ModelEMA, after YOLOv5 and timm):
after each optimizer step, `updates` grows by one and every floating-point entry of the state
dict (parameters and buffers such as BatchNorm's running statistics) becomes
v = d v + (1 - d) w, with d = decay x (1 - exp(-updates / ramp)). Integer buffers
(`num_batches_tracked`) keep the value they had when the copy was made.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


class WeightEMA:
    """A frozen copy of the model in eval mode, averaged by `update(model)`."""

    def __init__(self, model: nn.Module, *, decay: float, ramp: float):
        self.decay, self.ramp = decay, ramp
        self.updates = 0
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def decay_at(self, updates: int) -> float:
        return self.decay * (1 - math.exp(-updates / self.ramp))

    def reset(self, model: nn.Module) -> None:
        """Start again from the model's weights (after they were replaced, before any update)."""
        self.model.load_state_dict(model.state_dict())
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.decay_at(self.updates)
        current = model.state_dict()
        for name, v in self.model.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d)
                v.add_((1.0 - d) * current[name].detach())

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.updates = int(state["updates"])
