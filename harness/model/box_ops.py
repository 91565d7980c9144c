"""Box arithmetic shared by assigners, losses and postprocessing (x1, y1, x2, y2 unless said)."""

from __future__ import annotations

import torch

EPS32 = torch.finfo(torch.float32).eps


def area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def pairwise_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU [N, M] (detectron2 rule: 0 where the boxes do not intersect)."""
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area(a)[:, None] + area(b)[None, :] - inter
    return torch.where(inter > 0, inter / union, torch.zeros(1, dtype=inter.dtype, device=inter.device))


def pairwise_giou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Generalized IoU [N, M] (mmdet bbox_overlaps mode 'giou', eps 1e-6)."""
    eps = 1e-6
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = (area(a)[:, None] + area(b)[None, :] - inter).clamp(min=eps)
    iou = inter / union
    elt = torch.min(a[:, None, :2], b[None, :, :2])
    erb = torch.max(a[:, None, 2:], b[None, :, 2:])
    ewh = (erb - elt).clamp(min=0)
    enclose = (ewh[..., 0] * ewh[..., 1]).clamp(min=eps)
    return iou - (enclose - union) / enclose


def ltrb_to_boxes(points: torch.Tensor, ltrb: torch.Tensor) -> torch.Tensor:
    """Distances (l, t, r, b) from points (x, y) -> boxes."""
    return torch.cat([points - ltrb[..., :2], points + ltrb[..., 2:]], dim=-1)


def boxes_to_ltrb(points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Boxes [..., 4] -> distances from points [..., 2] (negative outside the box)."""
    return torch.cat([points - boxes[..., :2], boxes[..., 2:] - points], dim=-1)


def aligned_iou_giou(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """IoU and GIoU of aligned box pairs [N, 4] (cvpods iou_loss, no smoothing)."""
    pred_area = (pred[:, 2] - pred[:, 0]).clamp(min=0) * (pred[:, 3] - pred[:, 1]).clamp(min=0)
    tgt_area = (target[:, 2] - target[:, 0]).clamp(min=0) * (target[:, 3] - target[:, 1]).clamp(min=0)
    w = (torch.min(pred[:, 2], target[:, 2]) - torch.max(pred[:, 0], target[:, 0])).clamp(min=0)
    h = (torch.min(pred[:, 3], target[:, 3]) - torch.max(pred[:, 1], target[:, 1])).clamp(min=0)
    inter = w * h
    union = tgt_area + pred_area - inter
    iou = inter / union.clamp(min=EPS32)
    gw = torch.max(pred[:, 2], target[:, 2]) - torch.min(pred[:, 0], target[:, 0])
    gh = torch.max(pred[:, 3], target[:, 3]) - torch.min(pred[:, 1], target[:, 1])
    enclose = gw * gh
    giou = iou - (enclose - union) / enclose.clamp(min=EPS32)
    return iou, giou


def box_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], -1)


def mmdet_roundtrip(boxes: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """xyxy pixels -> normalised (cx, cy, w, h) -> xyxy pixels, in mmdet's order of operations
    (DATE's predictors hand normalised cxcywh boxes to their assigners, which convert back):
    rounding then decides near-ties of the matching costs as in the original."""
    h, w = image_size
    factor = boxes.new_tensor([w, h, w, h])
    cx, cy, bw, bh = box_cxcywh(boxes / factor).unbind(-1)
    return torch.stack([cx - 0.5 * bw, cy - 0.5 * bh, cx + 0.5 * bw, cy + 0.5 * bh], -1) * factor


# ------------------------------------------------------------------- anchor deltas

#: detectron2 Box2BoxTransform clamp of dw/dh: log(1000 / 16)
SCALE_CLAMP = 4.135166556742356


def encode_deltas(anchors: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """(dx, dy, dw, dh) with weights (1, 1, 1, 1) / stds 1 (detectron2 / mmdet DeltaXYWH)."""
    aw, ah = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    ax, ay = anchors[:, 0] + 0.5 * aw, anchors[:, 1] + 0.5 * ah
    bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    bx, by = boxes[:, 0] + 0.5 * bw, boxes[:, 1] + 0.5 * bh
    return torch.stack([(bx - ax) / aw, (by - ay) / ah, torch.log(bw / aw), torch.log(bh / ah)], -1)


def decode_deltas(anchors: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    aw, ah = anchors[..., 2] - anchors[..., 0], anchors[..., 3] - anchors[..., 1]
    ax, ay = anchors[..., 0] + 0.5 * aw, anchors[..., 1] + 0.5 * ah
    dx, dy = deltas[..., 0], deltas[..., 1]
    dw, dh = deltas[..., 2].clamp(max=SCALE_CLAMP), deltas[..., 3].clamp(max=SCALE_CLAMP)
    cx, cy = dx * aw + ax, dy * ah + ay
    w, h = torch.exp(dw) * aw, torch.exp(dh) * ah
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], -1)
