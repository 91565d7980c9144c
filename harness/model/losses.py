"""Losses: sums over the batch; the predictor divides by the normaliser (docs/architecture.md rule 7:
math only, returns tensors)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from harness.model.box_ops import aligned_iou_giou


def _focal(ce: torch.Tensor, p: torch.Tensor, targets: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss


def sigmoid_focal(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Elementwise sigmoid focal loss on logits (detectron2 / cvpods rule)."""
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return _focal(ce, torch.sigmoid(logits), targets, alpha, gamma)


def sigmoid_focal_on_probs(probs: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Focal loss on probabilities (3DMF: p = sigmoid(cls) * sigmoid(filter))."""
    return _focal(F.binary_cross_entropy(probs, targets, reduction="none"), probs, targets, alpha, gamma)


def inverse_sigmoid(p: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """mmdet's inverse_sigmoid: log(max(p, eps) / max(1 - p, eps)) with p clamped to [0, 1]."""
    p = p.clamp(min=0, max=1)
    return torch.log(p.clamp(min=eps) / (1 - p).clamp(min=eps))


def giou_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - GIoU of aligned boxes [N, 4] -> [N]."""
    return 1 - aligned_iou_giou(pred, target)[1]


def neg_log_iou_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-6, smooth: float = 0.0) -> torch.Tensor:
    """-log IoU of aligned boxes -> [N]. smooth 0: mmdet's IoULoss, -log(IoU.clamp(min=eps));
    smooth s > 0: the official FCOS's IOULoss (maskrcnn-benchmark), -log((I + s) / (U + s))."""
    if smooth <= 0:
        return -aligned_iou_giou(pred, target)[0].clamp(min=eps).log()
    wh = (torch.min(pred[:, 2:], target[:, 2:]) - torch.max(pred[:, :2], target[:, :2])).clamp(min=0)
    inter = wh[:, 0] * wh[:, 1]
    area_p = (pred[:, 2] - pred[:, 0]) * (pred[:, 3] - pred[:, 1])
    area_t = (target[:, 2] - target[:, 0]) * (target[:, 3] - target[:, 1])
    return -torch.log((inter + smooth) / (area_p + area_t - inter + smooth))


def centerness_target(ltrb: torch.Tensor) -> torch.Tensor:
    """sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b)) -> [N]."""
    lr, tb = ltrb[:, [0, 2]], ltrb[:, [1, 3]]
    return torch.sqrt((lr.min(-1).values / lr.max(-1).values) * (tb.min(-1).values / tb.max(-1).values))
