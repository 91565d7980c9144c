"""Locations of the feature maps: (x, y) = ((j + 0.5) * s, (i + 0.5) * s), levels P3..P7."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Grid:
    """The locations of all levels, concatenated level by level (row-major within a level)."""

    points: torch.Tensor  # [R, 2]
    strides: torch.Tensor  # [R]
    level: torch.Tensor  # [R] level index 0..L-1
    sizes: tuple[tuple[int, int], ...]  # (H, W) per level

    @property
    def counts(self) -> list[int]:
        return [h * w for h, w in self.sizes]


def make_grid(sizes: list[tuple[int, int]], strides: list[int], device=None, offset: float = 0.5) -> Grid:
    pts, strs, lvl = [], [], []
    for i, ((h, w), s) in enumerate(zip(sizes, strides, strict=True)):
        ys = (torch.arange(h, dtype=torch.float32, device=device) + offset) * s
        xs = (torch.arange(w, dtype=torch.float32, device=device) + offset) * s
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        pts.append(torch.stack([xx.reshape(-1), yy.reshape(-1)], -1))
        strs.append(torch.full((h * w,), float(s), device=device))
        lvl.append(torch.full((h * w,), i, dtype=torch.long, device=device))
    return Grid(torch.cat(pts), torch.cat(strs), torch.cat(lvl), tuple(sizes))
