"""Inputs shared by the assigners, and the spatial priors."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.model.points import Grid

BACKGROUND = -1
IGNORE = -2
INF = 100000000.0


@dataclass
class AssignInput:
    """One image. R locations (A anchors for anchor-based rules), G GTs, K classes."""

    grid: Grid
    gt_boxes: torch.Tensor  # [G, 4] xyxy
    gt_labels: torch.Tensor  # [G] 0..K-1
    scores: torch.Tensor | None = None  # [R, K] probabilities used for matching
    cls_logits: torch.Tensor | None = None  # [R, K] raw logits
    pred_boxes: torch.Tensor | None = None  # [R, 4] decoded xyxy
    pred_ltrb: torch.Tensor | None = None  # [R, 4] distances (point-based predictors)
    anchors: torch.Tensor | None = None  # [A, 4] (anchor-based predictors)
    image_size: tuple[int, int] | None = None  # (h, w) of the resized image, unpadded

    @property
    def num_gt(self) -> int:
        return int(self.gt_boxes.shape[0])

    def background(self, n: int | None = None) -> torch.Tensor:
        n = self.grid.points.shape[0] if n is None else n
        return torch.full((n,), BACKGROUND, dtype=torch.long, device=self.gt_boxes.device)


def ltrb_deltas(points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """[G, R, 4] distances from every location to the sides of every GT."""
    x, y = points[:, 0], points[:, 1]
    return torch.stack([x[None] - boxes[:, None, 0], y[None] - boxes[:, None, 1],
                        boxes[:, None, 2] - x[None], boxes[:, None, 3] - y[None]], dim=-1)


def inside_box(points: torch.Tensor, boxes: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
    """[G, R]: location strictly inside the GT (all four distances > margin)."""
    return ltrb_deltas(points, boxes).min(dim=-1).values > margin


def center_prior(points: torch.Tensor, strides: torch.Tensor, boxes: torch.Tensor, radius: float) -> torch.Tensor:
    """[G, R]: location strictly inside the center box of radius * stride, clipped to the GT."""
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    r = strides[None, :] * radius
    x1 = torch.max(cx[:, None] - r, boxes[:, None, 0])
    y1 = torch.max(cy[:, None] - r, boxes[:, None, 1])
    x2 = torch.min(cx[:, None] + r, boxes[:, None, 2])
    y2 = torch.min(cy[:, None] + r, boxes[:, None, 3])
    x, y = points[None, :, 0], points[None, :, 1]
    d = torch.stack([x - x1, y - y1, x2 - x, y2 - y], dim=-1)
    return d.min(dim=-1).values > 0
