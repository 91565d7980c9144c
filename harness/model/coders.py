"""Box coders: how a predictor's regression output becomes boxes (and, for anchors, back)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from harness.model.box_ops import decode_deltas, encode_deltas, ltrb_to_boxes


class LtrbCoder:
    """Distances (l, t, r, b) from the location; `activation(conv output, stride)` makes them."""

    uses_anchors = False

    def __init__(self, activation: Callable[[torch.Tensor, int], torch.Tensor]):
        self.activation = activation

    def activate(self, x: torch.Tensor, stride: int) -> torch.Tensor:
        return self.activation(x, stride)

    def decode(self, reg: torch.Tensor, points: torch.Tensor, anchors: torch.Tensor | None) -> torch.Tensor:
        return ltrb_to_boxes(points, reg)

    def ltrb(self, reg: torch.Tensor) -> torch.Tensor | None:
        return reg


class DeltaCoder:
    """(dx, dy, dw, dh) against an anchor (detectron2 Box2BoxTransform / mmdet DeltaXYWH)."""

    uses_anchors = True

    def activate(self, x: torch.Tensor, stride: int) -> torch.Tensor:
        return x

    def decode(self, reg: torch.Tensor, points: torch.Tensor, anchors: torch.Tensor | None) -> torch.Tensor:
        return decode_deltas(anchors, reg)

    def encode(self, anchors: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        return encode_deltas(anchors, boxes)

    def ltrb(self, reg: torch.Tensor) -> torch.Tensor | None:
        return None


#: box_coder name -> coder (schema's PredictorConfig.box_coder)
BOX_CODERS = {
    "ltrb_relu": LtrbCoder(lambda x, s: F.relu(x) * s),  # cvpods: ReLU(scale * conv) * stride
    "ltrb_clamp": LtrbCoder(lambda x, s: x.clamp(min=0) * s),  # DATE one-to-one
    "ltrb_exp": LtrbCoder(lambda x, s: x.float().exp()),  # mmdet FCOS, norm_on_bbox False
    "anchor_delta": DeltaCoder(),
}
