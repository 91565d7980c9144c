"""Postprocess: class-wise NMS, or NMS-free (sort and cap), on the same candidates."""

from __future__ import annotations

import torch
from torchvision.ops import batched_nms


def nms_free(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, max_dets: int):
    order = scores.argsort(descending=True, stable=True)[:max_dets]
    return boxes[order], scores[order], labels[order]


def class_nms(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, iou: float, max_dets: int):
    keep = batched_nms(boxes.float(), scores.float(), labels, iou)[:max_dets]
    return boxes[keep], scores[keep], labels[keep]


def both(boxes, scores, labels, *, nms_thresh: float, max_dets: int) -> dict[str, tuple]:
    """The detections of one image with NMS and without it."""
    return {"nms": class_nms(boxes, scores, labels, nms_thresh, max_dets),
            "nms_free": nms_free(boxes, scores, labels, max_dets)}
