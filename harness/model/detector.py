"""The FCN detector: backbone -> FPN -> shared towers -> predictor(s)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from harness.model.head import Predictor, Towers
from harness.model.points import make_grid
from harness.model.postprocess import both


class FCNDetector(nn.Module):
    """Training: ``forward(images, image_sizes, targets)`` -> dict of losses.
    Inference: ``detect(images, image_sizes)`` -> per image {'nms': ..., 'nms_free': ...} with
    (boxes [M, 4] in input pixels, scores [M], labels [M]). `aux_loss(out, grid, targets, boxes)`:
    DeFCN's auxiliary loss on the predictor's outputs, built with its assigner and weights."""

    def __init__(self, *, backbone: nn.Module, fpn: nn.Module, towers: Towers, predictor: Predictor,
                 o2m: Predictor | None = None, aux_loss: Callable[..., dict] | None = None,
                 score_thresh: float = 0.05, topk_per_level: int = 1000, topk_cap: str = "locations",
                 topk_by: str = "cls", nms_thresh: float = 0.6,
                 max_dets: int = 100):
        super().__init__()
        self.backbone, self.fpn, self.towers = backbone, fpn, towers
        self.predictor, self.o2m = predictor, o2m
        self.aux_loss = aux_loss
        self.score_thresh, self.topk_per_level, self.topk_cap = score_thresh, topk_per_level, topk_cap
        self.topk_by = topk_by
        self.nms_thresh, self.max_dets = nms_thresh, max_dets
        self.strides = list(fpn.strides)
        self.memory_format = torch.contiguous_format

    def to_channels_last(self) -> FCNDetector:
        """Hold conv weights, and take images, in NHWC memory (train.channels_last)."""
        self.memory_format = torch.channels_last
        return self.to(memory_format=torch.channels_last)

    def _features(self, images: torch.Tensor):
        images = images.contiguous(memory_format=self.memory_format)
        pyramid = self.fpn(self.backbone(images))
        cls_f, reg_f = self.towers(pyramid)
        grid = make_grid([tuple(f.shape[-2:]) for f in pyramid], self.strides, device=images.device)
        return cls_f, reg_f, grid

    def forward(self, images: torch.Tensor, image_sizes, targets: list[dict]) -> dict[str, torch.Tensor]:
        cls_f, reg_f, grid = self._features(images)
        scales = self.towers.scales
        out = self.predictor(cls_f, reg_f, scales, self.strides)
        losses, _ = self.predictor.losses(out, grid, targets, image_sizes)
        if self.aux_loss is not None:
            boxes = [self.predictor.decode(out["reg"][i].detach(), grid, None) for i in range(len(targets))]
            losses.update(self.aux_loss(out, grid, targets, boxes))
        if self.o2m is not None:
            out2 = self.o2m(cls_f, reg_f, scales, self.strides)
            more, _ = self.o2m.losses(out2, grid, targets, image_sizes)
            losses.update({f"o2m.{k}": v for k, v in more.items()})
        return losses

    @torch.no_grad()
    def detect(self, images: torch.Tensor, image_sizes) -> list[dict[str, tuple]]:
        cls_f, reg_f, grid = self._features(images)
        out = self.predictor(cls_f, reg_f, self.towers.scales, self.strides)
        results = []
        for i in range(images.shape[0]):
            # boxes are clipped once mapped back to the original image (detector_postprocess)
            boxes, scores, labels = self.predictor.candidates(out, grid, i, self.score_thresh, self.topk_per_level,
                                                                self.topk_cap, self.topk_by)
            results.append(both(boxes, scores, labels, nms_thresh=self.nms_thresh, max_dets=self.max_dets))
        return results
