"""A predictor's losses as named terms: each term is a function of the matched batch, picked
by name when the predictor is built (no string dispatch while training). Every term returns its
weighted, normalised value; the dict keeps the order loss_cls, loss_box, loss_ctr, loss_l1."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F

from harness.model import losses as L
from harness.model.assign.common import IGNORE
from harness.model.box_ops import box_cxcywh
from harness.model.comm import mean_across_processes
from harness.model.points import Grid


@dataclass
class Matched:
    """One batch after assignment: outputs, targets and the positives (flattened over images)."""

    out: dict
    grid: Grid
    targets: list[dict]
    image_sizes: list
    gt_idx: torch.Tensor  # [B, N]: GT index, BACKGROUND or IGNORE
    boxes: list[torch.Tensor]  # decoded boxes per image, with gradients
    anchors: torch.Tensor | None
    score_logits: Callable[[dict], torch.Tensor]
    coder: object = None  # the predictor's box coder (l1_delta encodes GT boxes with it)

    @cached_property
    def pos(self) -> torch.Tensor:
        return self.gt_idx >= 0

    @cached_property
    def num_pos(self) -> torch.Tensor:
        return mean_across_processes(self.pos.sum().float()).clamp(min=1.0)

    @cached_property
    def local_pos(self) -> torch.Tensor:
        """This process's positives (no average over processes, no floor)."""
        return self.pos.sum().float()

    def _cat(self, per_image) -> torch.Tensor:
        return torch.cat([per_image(i) for i in range(len(self.targets))])

    @cached_property
    def pred_boxes(self) -> torch.Tensor:
        return self._cat(lambda i: self.boxes[i][self.pos[i]])

    @cached_property
    def gt_boxes(self) -> torch.Tensor:
        return torch.cat([t["boxes"][self.gt_idx[i, self.pos[i]]] for i, t in enumerate(self.targets)])

    @cached_property
    def ctr_targets(self) -> torch.Tensor:
        pts = self._cat(lambda i: self.grid.points[self.pos[i]])
        gt = self.gt_boxes
        return L.centerness_target(torch.cat([pts - gt[:, :2], gt[:, 2:] - pts], dim=-1))


# -------------------------------------------------------------------- classification


def _cls_targets(m: Matched) -> torch.Tensor:
    cls_t = torch.zeros_like(m.out["cls"])
    for i, tgt in enumerate(m.targets):
        p = m.pos[i]
        cls_t[i, p, tgt["labels"][m.gt_idx[i, p]]] = 1.0
    return cls_t


def focal_on_logits(m: Matched, alpha: float, gamma: float) -> torch.Tensor:
    """Sigmoid focal over every location and class, ignored anchors excluded (summed)."""
    valid = m.gt_idx != IGNORE
    return L.sigmoid_focal(m.score_logits(m.out)[valid], _cls_targets(m)[valid], alpha, gamma).sum()


def focal_on_product(m: Matched, alpha: float, gamma: float) -> torch.Tensor:
    """DeFCN's 3DMF: focal on p = sigmoid(cls) * sigmoid(filter) (summed)."""
    valid = m.gt_idx != IGNORE
    probs = m.out["cls"].sigmoid() * m.out["filter"].sigmoid()[..., None]
    return L.sigmoid_focal_on_probs(probs[valid], _cls_targets(m)[valid], alpha, gamma).sum()


# ------------------------------------------------------------------------------ boxes

#: box loss name -> per-positive loss [P] (`smooth`: neg_log_iou's iou_smooth)
BOX_LOSSES: dict[str, Callable[[Matched, float], torch.Tensor]] = {
    "giou": lambda m, smooth: L.giou_loss(m.pred_boxes, m.gt_boxes),
    "neg_log_iou": lambda m, smooth: L.neg_log_iou_loss(m.pred_boxes, m.gt_boxes, smooth=smooth),
    "l1_delta": lambda m, smooth: (m._cat(lambda i: m.out["reg"][i][m.pos[i]])
                           - m.coder.encode(m._cat(lambda i: m.anchors[m.pos[i]]), m.gt_boxes)).abs().sum(-1),
}


def box_by_positives(m: Matched, per: torch.Tensor, weight: float, ctr_norm_min: float,
                     local: bool = False) -> torch.Tensor:
    return weight * per.sum() / (m.local_pos.clamp(min=1.0) if local else m.num_pos)


def box_by_centerness(m: Matched, per: torch.Tensor, weight: float, ctr_norm_min: float,
                      local: bool = False) -> torch.Tensor:
    """Each positive weighted by its centerness target, / max(floor, sum of the targets): the
    sum averaged over processes, or this process's own (`local`, the official FCOS)."""
    ctr_t = m.ctr_targets
    total = ctr_t.sum().detach()
    norm = (total if local else mean_across_processes(total)).clamp(min=ctr_norm_min)
    return weight * (per * ctr_t).sum() / norm


#: box_weighting name -> normalised box loss
BOX_WEIGHTINGS = {"none": box_by_positives, "centerness": box_by_centerness}


def centerness_bce(m: Matched) -> torch.Tensor:
    ctr = m._cat(lambda i: m.out["ctr"][i][m.pos[i]])
    return F.binary_cross_entropy_with_logits(ctr, m.ctr_targets, reduction="sum")


def detr_l1(m: Matched) -> torch.Tensor:
    """L1 of (cx, cy, w, h) normalised by each image's size (DATE's one-to-one)."""
    factors = torch.cat([m.pred_boxes.new_tensor([s[1], s[0], s[1], s[0]]).expand(int(m.pos[i].sum()), 4)
                         for i, s in enumerate(m.image_sizes)])
    return (box_cxcywh(m.pred_boxes / factors) - box_cxcywh(m.gt_boxes / factors)).abs().sum()


class Criterion:
    """The loss terms of one predictor, chosen once from its settings."""

    def __init__(self, *, product_focal: bool, focal_alpha: float, focal_gamma: float, cls_weight: float,
                 box_loss: str, box_weight: float, box_weighting: str, ctr_norm_min: float,
                 centerness: bool, ctr_weight: float, l1_weight: float, iou_smooth: float = 0.0,
                 normalizer: str = "mean_positives"):
        focal = focal_on_product if product_focal else focal_on_logits
        box_per, box_norm = BOX_LOSSES[box_loss], BOX_WEIGHTINGS[box_weighting]
        local = normalizer == "per_process_plus_images"
        if local:  # the official FCOS (maskrcnn-benchmark): each process's own counts, + its images
            def cls_norm(m: Matched) -> torch.Tensor:
                return m.local_pos + len(m.targets)

            def pos_norm(m: Matched) -> torch.Tensor:
                return m.local_pos.clamp(min=1.0)
        else:
            def cls_norm(m: Matched) -> torch.Tensor:
                return m.num_pos

            pos_norm = cls_norm
        self.terms: dict[str, Callable[[Matched], torch.Tensor]] = {
            "loss_cls": lambda m: cls_weight * focal(m, focal_alpha, focal_gamma) / cls_norm(m),
            "loss_box": lambda m: box_norm(m, box_per(m, iou_smooth), box_weight, ctr_norm_min, local),
        }
        if centerness:
            self.terms["loss_ctr"] = lambda m: ctr_weight * centerness_bce(m) / pos_norm(m)
        if l1_weight > 0:
            self.terms["loss_l1"] = lambda m: l1_weight * detr_l1(m) / pos_norm(m)

    def __call__(self, m: Matched) -> dict[str, torch.Tensor]:
        return {name: term(m) for name, term in self.terms.items()}
