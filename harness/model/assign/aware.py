"""Prediction-aware rules: POTO (Hungarian / argmax), Foreground loss, DeFCN's Aux, DETR-style
Hungarian (DATE's CrowdHuman one-to-one) and max-IoU for RetinaNet anchors (DATE-R)."""

from __future__ import annotations

import torch

from harness.model.assign.common import (
    BACKGROUND,
    IGNORE,
    INF,
    AssignInput,
    center_prior,
    inside_box,
    ltrb_deltas,
)
from harness.model.assign.hungarian import solve_full, solve_restricted
from harness.model.box_ops import (
    aligned_iou_giou,
    box_cxcywh,
    mmdet_roundtrip,
    pairwise_giou,
    pairwise_iou,
)


def _prior(inp: AssignInput, prior: str, center_radius: float) -> torch.Tensor:
    g = inp.grid
    if prior == "center":
        return center_prior(g.points, g.strides, inp.gt_boxes, center_radius)
    return inside_box(g.points, inp.gt_boxes)


def poto_quality(inp: AssignInput, alpha: float, in_prior: torch.Tensor, outside_value: float,
                 box_roundtrip: bool = False) -> torch.Tensor:
    """Q[g, i] = p^(1 - alpha) * IoU^alpha inside the prior, `outside_value` outside: [G, R].
    box_roundtrip (DATE): the predicted boxes go through mmdet's normalised cxcywh first."""
    prob = inp.scores[:, inp.gt_labels].t()  # [G, R]
    pred = mmdet_roundtrip(inp.pred_boxes, inp.image_size) if box_roundtrip else inp.pred_boxes
    iou = pairwise_iou(inp.gt_boxes, pred)
    quality = prob ** (1 - alpha) * iou ** alpha
    return torch.where(in_prior, quality, torch.full_like(quality, outside_value))


def _to_locations(inp: AssignInput, rows, cols) -> torch.Tensor:
    out = inp.background()
    out[torch.as_tensor(cols, dtype=torch.long, device=out.device)] = torch.as_tensor(
        rows, dtype=torch.long, device=out.device)
    return out


@torch.no_grad()
def assign_poto(inp: AssignInput, *, alpha: float = 0.8, prior: str = "center", center_radius: float = 1.5,
                outside_value: float = -1.0, empty_prior: str = "keep", solver: str = "restricted",
                box_roundtrip: bool = False) -> torch.Tensor:
    """POTO: Hungarian (maximise) on Q over all levels jointly. Every GT gets exactly one
    location, even one with an empty prior (reference behaviour, `empty_prior: keep`); with
    `drop` such GTs get none. -> [R]."""
    if inp.num_gt == 0:
        return inp.background()
    in_prior = _prior(inp, prior, center_radius)
    quality = poto_quality(inp, alpha, in_prior, outside_value, box_roundtrip)
    gts = torch.arange(inp.num_gt, device=quality.device)
    if empty_prior == "drop":
        keep = in_prior.any(dim=1)
        quality, in_prior, gts = quality[keep], in_prior[keep], gts[keep]
        if len(gts) == 0:
            return inp.background()
    if solver == "full":
        rows, cols = solve_full(quality, maximize=True)
    else:
        rows, cols = solve_restricted(quality, in_prior, maximize=True)
    return _to_locations(inp, gts.cpu().numpy()[rows], cols)


@torch.no_grad()
def assign_poto_argmax(inp: AssignInput, *, alpha: float = 0.8, prior: str = "center", center_radius: float = 1.5,
                       outside_value: float = -1.0) -> torch.Tensor:
    """POTO with argmax: each GT marks its first maximal location; a location marked by several
    GTs keeps the max quality (lowest GT index on ties); a best value of `outside_value` is
    background (so a GT may end up with no positive). -> [R]."""
    if inp.num_gt == 0:
        return inp.background()
    quality = poto_quality(inp, alpha, _prior(inp, prior, center_radius), outside_value)
    best = quality.argmax(dim=1)
    marked = torch.full_like(quality, -INF)
    rows = torch.arange(inp.num_gt, device=quality.device)
    marked[rows, best] = quality[rows, best]
    val, idx = marked.max(dim=0)
    idx[val <= outside_value] = BACKGROUND
    return idx


def _focal_cost_sum(logits: torch.Tensor, labels: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """Σ over all K classes of sigmoid focal loss, one-hot target c_g: [G, R] via [G, R, K]."""
    g = labels.shape[0]
    x = logits[None].expand(g, -1, -1)
    t = torch.zeros_like(x)
    t[torch.arange(g), :, labels] = 1.0
    p = torch.sigmoid(x)
    ce = torch.nn.functional.binary_cross_entropy_with_logits(x, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * (1 - p_t) ** gamma
    loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return loss.sum(dim=-1)


@torch.no_grad()
def assign_fg_loss(inp: AssignInput, *, center_radius: float = 1.5, giou_weight: float = 2.0,
                   outside_cost: float = 1e8, focal_alpha: float = 0.25, focal_gamma: float = 2.0) -> torch.Tensor:
    """Foreground loss: Hungarian (minimise) on focal (summed over all classes of the [G, R, K]
    tensor) + giou_weight * GIoU loss of the predicted vs target ltrb, outside the clipped
    center prior -> `outside_cost`. -> [R]."""
    if inp.num_gt == 0:
        return inp.background()
    g = inp.grid
    cls_cost = _focal_cost_sum(inp.cls_logits, inp.gt_labels, focal_alpha, focal_gamma)
    target = ltrb_deltas(g.points, inp.gt_boxes)  # [G, R, 4]
    pred = inp.pred_ltrb[None].expand_as(target)
    as_box = lambda d: torch.cat([-d[..., :2], d[..., 2:]], dim=-1).reshape(-1, 4)  # noqa: E731
    _, giou = aligned_iou_giou(as_box(pred), as_box(target))
    cost = cls_cost + giou_weight * (1 - giou.reshape(target.shape[:2]))
    in_prior = center_prior(g.points, g.strides, inp.gt_boxes, center_radius)
    cost = torch.where(in_prior, cost, torch.full_like(cost, outside_cost))
    rows, cols = solve_full(cost, maximize=False)
    return _to_locations(inp, rows, cols)


@torch.no_grad()
def assign_aux(inp: AssignInput, *, topk: int = 9, alpha: float = 0.8) -> torch.Tensor:
    """DeFCN's Aux: Q' = p^(1-alpha) * IoU^alpha on the unfiltered scores; per level the top-k
    locations by Q' (torch.topk); positive if Q' >= mean + std of the candidates and strictly
    inside the GT; a location with several GTs -> max Q'. -> [R]."""
    if inp.num_gt == 0:
        return inp.background()
    g = inp.grid
    prob = inp.scores[:, inp.gt_labels].t()
    quality = prob ** (1 - alpha) * pairwise_iou(inp.gt_boxes, inp.pred_boxes) ** alpha  # [G, R]
    cand = torch.zeros_like(quality, dtype=torch.bool)
    start = 0
    rows = torch.arange(inp.num_gt, device=quality.device)[:, None]
    for n in g.counts:
        _, idx = quality[:, start:start + n].topk(min(topk, n), dim=1)
        cand[rows, idx + start] = True
        start += n
    cand_q = quality[cand].reshape(inp.num_gt, -1)
    thresh = cand_q.mean(dim=1) + cand_q.std(dim=1)
    pos = cand & (quality >= thresh[:, None]) & inside_box(g.points, inp.gt_boxes)
    masked = torch.where(pos, quality, torch.full_like(quality, -INF))
    val, idx = masked.max(dim=0)
    idx[val == -INF] = BACKGROUND
    return idx


@torch.no_grad()
def assign_detr_hungarian(inp: AssignInput, *, cls_weight: float = 2.0, l1_weight: float = 5.0,
                          giou_weight: float = 2.0, focal_alpha: float = 0.25, focal_gamma: float = 2.0) -> torch.Tensor:
    """mmdet HungarianAssigner: minimise cls_weight * FocalCost + l1_weight * L1 of (cx, cy, w, h)
    normalised by the image size + giou_weight * (-GIoU) of the boxes back from the normalised
    cxcywh (mmdet's round trip). No spatial prior. -> [R]."""
    if inp.num_gt == 0:
        return inp.background()
    eps = 1e-12
    p = inp.cls_logits.sigmoid()
    neg = -(1 - p + eps).log() * (1 - focal_alpha) * p.pow(focal_gamma)
    pos = -(p + eps).log() * focal_alpha * (1 - p).pow(focal_gamma)
    cls_cost = (pos[:, inp.gt_labels] - neg[:, inp.gt_labels]) * cls_weight  # [R, G]
    h, w = inp.image_size
    factor = inp.gt_boxes.new_tensor([w, h, w, h])
    l1 = torch.cdist(box_cxcywh(inp.pred_boxes / factor), box_cxcywh(inp.gt_boxes / factor), p=1) * l1_weight
    giou = -pairwise_giou(mmdet_roundtrip(inp.pred_boxes, inp.image_size), inp.gt_boxes) * giou_weight
    cost = cls_cost + l1 + giou  # [R, G]
    cols, rows = solve_full(cost, maximize=False)
    return _to_locations(inp, rows, cols)


@torch.no_grad()
def assign_max_iou(inp: AssignInput, *, pos_iou: float = 0.5, neg_iou: float = 0.4, min_pos_iou: float = 0.0) -> torch.Tensor:
    """mmdet MaxIoUAssigner on anchors: negative below neg_iou, positive from pos_iou, ignored
    between; then every GT also takes all anchors at its own max IoU (if >= min_pos_iou; the
    last such GT wins, as mmdet's loop over GTs). -> [A]."""
    anchors = inp.anchors
    if inp.num_gt == 0:
        return inp.background(anchors.shape[0])
    ious = pairwise_iou(inp.gt_boxes, anchors)  # [G, A]
    max_iou, argmax = ious.max(dim=0)
    out = torch.full_like(argmax, IGNORE)
    out[(max_iou >= 0) & (max_iou < neg_iou)] = BACKGROUND
    out[max_iou >= pos_iou] = argmax[max_iou >= pos_iou]
    gt_max = ious.max(dim=1).values
    low = (ious == gt_max[:, None]) & (gt_max >= min_pos_iou)[:, None]  # [G, A]
    any_low = low.any(dim=0)
    last = inp.num_gt - 1 - low.flip(0).int().argmax(dim=0)
    out[any_low] = last[any_low]
    return out
