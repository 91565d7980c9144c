"""Hand-crafted rules: FCOS, ATSS, Anchor, Center (not prediction-aware)."""

from __future__ import annotations

import torch

from harness.model.anchors import square_anchors
from harness.model.assign.common import (
    BACKGROUND,
    INF,
    AssignInput,
    center_prior,
    inside_box,
    ltrb_deltas,
)
from harness.model.box_ops import area, pairwise_iou


def _in_ranges(max_delta: torch.Tensor, level: torch.Tensor, ranges) -> torch.Tensor:
    r = torch.as_tensor(ranges, dtype=max_delta.dtype, device=max_delta.device)[level]  # [R, 2]
    return (max_delta >= r[None, :, 0]) & (max_delta <= r[None, :, 1])


def _min_area(candidates: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Per location, the candidate GT of smallest area (lowest index on ties), else -1."""
    areas = area(boxes)[:, None].expand_as(candidates).clone()
    areas[~candidates] = INF
    best, idx = areas.min(dim=0)
    idx[best == INF] = BACKGROUND
    return idx


@torch.no_grad()
def assign_fcos(inp: AssignInput, *, center_radius: float | None = 1.5, scale_ranges) -> torch.Tensor:
    """FCOS: inside the (clipped) center box or, without radius, the GT; max(l, t, r, b) in the
    level's range (inclusive); ambiguity -> GT of minimal area. Shapes: -> [R]."""
    if inp.num_gt == 0:
        return inp.background()
    g = inp.grid
    if center_radius is None:
        inside = inside_box(g.points, inp.gt_boxes)
    else:
        inside = center_prior(g.points, g.strides, inp.gt_boxes, center_radius)
    max_delta = ltrb_deltas(g.points, inp.gt_boxes).max(dim=-1).values  # [G, R]
    return _min_area(inside & _in_ranges(max_delta, g.level, scale_ranges), inp.gt_boxes)


@torch.no_grad()
def assign_atss(inp: AssignInput, *, topk: int = 9, anchor_scale: float = 8.0) -> torch.Tensor:
    """ATSS: per level the top-k locations nearest the GT centre; IoU of their square anchors
    (side anchor_scale * stride) >= mean + std over the candidates, location strictly inside the
    GT (smallest ltrb distance > 0, as cvpods/DeFCN; the official ATSS code uses > 0.01); a
    location with several GTs -> the GT of max IoU. -> [R]."""
    if inp.num_gt == 0:
        return inp.background()
    g = inp.grid
    boxes = inp.gt_boxes
    ious = pairwise_iou(square_anchors(g, anchor_scale), boxes)  # [R, G]
    gcx = (boxes[:, 0] + boxes[:, 2]) / 2.0
    gcy = (boxes[:, 1] + boxes[:, 3]) / 2.0
    dist = ((g.points[:, None, 0] - gcx[None]) ** 2 + (g.points[:, None, 1] - gcy[None]) ** 2).sqrt()
    candidates, start = [], 0
    for n in g.counts:
        k = min(topk, n)
        _, idx = dist[start:start + n].topk(k, dim=0, largest=False)
        candidates.append(idx + start)
        start += n
    cand = torch.cat(candidates, dim=0)  # [C, G]
    cand_ious = ious.gather(0, cand)
    thresh = cand_ious.mean(0) + cand_ious.std(0)
    is_pos = cand_ious >= thresh[None]
    cx, cy = g.points[cand, 0], g.points[cand, 1]
    lt_rb = torch.stack([cx - boxes[None, :, 0], cy - boxes[None, :, 1],
                         boxes[None, :, 2] - cx, boxes[None, :, 3] - cy], dim=-1)
    is_pos &= lt_rb.min(dim=-1).values > 0
    ious_inf = torch.full_like(ious, -INF)
    cols = torch.arange(inp.num_gt, device=ious.device)[None].expand_as(cand)
    ious_inf[cand[is_pos], cols[is_pos]] = ious[cand[is_pos], cols[is_pos]]
    best, idx = ious_inf.max(dim=1)
    idx[best == -INF] = BACKGROUND
    return idx


@torch.no_grad()
def assign_anchor(inp: AssignInput, *, anchor_scale: float = 4.0) -> torch.Tensor:
    """Anchor: each GT takes the one square anchor of max IoU over all levels (an IoU-0 best
    anchor still counts); a location claimed by several GTs keeps the GT of max IoU. -> [R]."""
    if inp.num_gt == 0:
        return inp.background()
    ious = pairwise_iou(inp.gt_boxes, square_anchors(inp.grid, anchor_scale))  # [G, R]
    _, best = ious.topk(1, dim=1)
    marked = torch.full_like(ious, -INF)
    rows = torch.arange(inp.num_gt, device=ious.device)
    marked[rows, best[:, 0]] = ious[rows, best[:, 0]]
    val, idx = marked.max(dim=0)
    idx[val == -INF] = BACKGROUND
    return idx


@torch.no_grad()
def assign_center(inp: AssignInput, *, scale_ranges) -> torch.Tensor:
    """Center: per level the location nearest the GT centre, kept if its max(l, t, r, b) is in
    the level's range; ambiguity -> minimal area. -> [R]. The distances are cvpods/DeFCN's
    `torch.cdist(centres, level locations)` with top-1 along the locations: cdist's rounding
    depends on the operand order and sizes, and it decides near and exact ties."""
    if inp.num_gt == 0:
        return inp.background()
    g = inp.grid
    boxes = inp.gt_boxes
    centers = torch.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], -1)
    chosen = torch.zeros(inp.num_gt, g.points.shape[0], dtype=torch.bool, device=boxes.device)
    start = 0
    rows = torch.arange(inp.num_gt, device=boxes.device)
    for n in g.counts:
        dist = torch.cdist(centers, g.points[start:start + n])  # [G, n]
        _, idx = dist.topk(1, dim=1, largest=False)
        chosen[rows, idx[:, 0] + start] = True
        start += n
    max_delta = ltrb_deltas(g.points, boxes).max(dim=-1).values
    return _min_area(chosen & _in_ranges(max_delta, g.level, scale_ranges), boxes)
