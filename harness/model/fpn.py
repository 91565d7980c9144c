"""FPN P3-P7: lateral 1x1 + output 3x3 on C3-C5 (no norm, sum fuse, nearest top-down),
P6 = conv3x3/2 on P5 (the output), P7 = conv3x3/2 on ReLU(P6).

cvpods and mmdet (add_extra_convs='on_output', relu_before_extra_convs) share this topology;
they differ in initialisation: cvpods' c2_xavier_fill (kaiming_uniform a=1) vs mmdet's xavier
uniform. Biases start at 0 in both.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FPN(nn.Module):
    strides = (8, 16, 32, 64, 128)

    def __init__(self, *, in_channels: tuple[int, ...], channels: int = 256, init: str = "cvpods"):
        super().__init__()
        self.lateral = nn.ModuleList([nn.Conv2d(c, channels, 1) for c in in_channels])
        self.output = nn.ModuleList([nn.Conv2d(channels, channels, 3, padding=1) for _ in in_channels])
        self.p6 = nn.Conv2d(channels, channels, 3, stride=2, padding=1)
        self.p7 = nn.Conv2d(channels, channels, 3, stride=2, padding=1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                if init == "cvpods":
                    nn.init.kaiming_uniform_(m.weight, a=1)
                else:
                    nn.init.xavier_uniform_(m.weight)
                nn.init.constant_(m.bias, 0)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        lat = [conv(f) for conv, f in zip(self.lateral, feats, strict=True)]
        for i in range(len(lat) - 1, 0, -1):
            lat[i - 1] = lat[i - 1] + F.interpolate(lat[i], size=lat[i - 1].shape[-2:], mode="nearest")
        outs = [conv(x) for conv, x in zip(self.output, lat, strict=True)]
        p6 = self.p6(outs[-1])
        p7 = self.p7(F.relu(p6))
        return [*outs, p6, p7]
