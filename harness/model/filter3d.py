"""3DMF (DeFCN MaxFiltering): a max over neighbouring scales and a k x k window, with the
un-convolved tower feature added back, GN (optional) and ReLU, then a one-channel conv.

For level l, levels l - tau//2 .. l + tau//2 (those that exist) of G = conv3x3(F) are resized
to level l bilinearly (align_corners False; level l itself is not resampled), stacked along a
depth axis and max-pooled with a (tau + 1, k, k) window, stride 1, padding (tau//2, k//2, k//2)
(padding is -inf), and the depth slice of level l is kept. The residual adds F (not G).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MaxFilter3D(nn.Module):
    def __init__(self, *, channels: int, kernel: int = 3, tau: int = 2, norm: bool = True, gn_groups: int = 32):
        super().__init__()
        self.kernel, self.tau = kernel, tau
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm = nn.GroupNorm(gn_groups, channels) if norm else nn.Identity()
        self.filter = nn.Conv2d(channels, 1, 3, padding=1)
        for conv in (self.conv, self.filter):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.constant_(conv.bias, 0.0)

    def max_pool(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """The 3-D max filter of the convolved features, one map per level."""
        conv = [self.conv(f) for f in feats]
        margin = self.tau // 2
        out = []
        for lvl, f in enumerate(conv):
            lo, hi = max(0, lvl - margin), min(len(conv) - 1, lvl + margin)
            # The kept depth slice of the (tau + 1, k, k) pool sees every stacked level, so the
            # 3-D max is the element-wise max over levels followed by a k x k 2-D max pool: the
            # same values and, away from exact ties, the same gradients as max_pool3d on the
            # stack, at about 60 % of its cost on CPUs (tests/model/test_modules.py).
            x = f
            for k in range(lo, hi + 1):
                if k != lvl:
                    x = torch.maximum(x, F.interpolate(conv[k], size=f.shape[-2:], mode="bilinear",
                                                       align_corners=False))
            out.append(F.max_pool2d(x, self.kernel, stride=1, padding=self.kernel // 2))
        return out

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """Tower features F_l -> filter logits [B, 1, H_l, W_l]."""
        pooled = self.max_pool(feats)
        return [self.filter(F.relu(self.norm(p + f))) for p, f in zip(pooled, feats, strict=True)]
