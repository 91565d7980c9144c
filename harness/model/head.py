"""Shared towers and predictors (sets of output convs with their assignment and losses).

Towers: cls and reg, each num_convs x (conv3x3 + GN + ReLU), shared across levels; the
per-level learnable scales live here too, so that DATE's two predictors share them.
A predictor holds cls / box (/ centerness, / 3DMF filter) convs, received built with its
coder, anchors, assigner and criterion, and knows how to turn its outputs into matching
scores, boxes and losses.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

from harness.model import losses as L
from harness.model.anchors import RetinaAnchors, SquareAnchors
from harness.model.assign.common import BACKGROUND, IGNORE, AssignInput
from harness.model.coders import DeltaCoder, LtrbCoder
from harness.model.comm import mean_across_processes
from harness.model.criterion import Criterion, Matched
from harness.model.filter3d import MaxFilter3D
from harness.model.points import Grid


def _init_conv(conv: nn.Conv2d, bias: float = 0.0) -> None:
    nn.init.normal_(conv.weight, std=0.01)
    nn.init.constant_(conv.bias, bias)


class Scale(nn.Module):
    def __init__(self, init: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class Towers(nn.Module):
    def __init__(self, *, channels: int, num_convs: int = 4, norm: str = "gn", gn_groups: int = 32, num_levels: int = 5):
        super().__init__()

        def tower():
            layers = []
            for _ in range(num_convs):
                conv = nn.Conv2d(channels, channels, 3, padding=1)
                _init_conv(conv)
                layers.append(conv)
                if norm == "gn":
                    layers.append(nn.GroupNorm(gn_groups, channels))
                layers.append(nn.ReLU(inplace=True))
            return nn.Sequential(*layers)

        self.cls_tower, self.reg_tower = tower(), tower()
        self.scales = nn.ModuleList([Scale(1.0) for _ in range(num_levels)])

    def forward(self, feats: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        return [self.cls_tower(f) for f in feats], [self.reg_tower(f) for f in feats]


def _flatten(maps: list[torch.Tensor], per_loc: int) -> torch.Tensor:
    """[B, A*C, H, W] per level -> [B, sum(H*W*A), C] (level, row-major location, anchor)."""
    out = []
    for m in maps:
        b, ac, h, w = m.shape
        out.append(m.view(b, -1, per_loc, h, w).permute(0, 3, 4, 1, 2).reshape(b, -1, per_loc))
    return torch.cat(out, dim=1)


class OutputConvs(NamedTuple):
    """A predictor's output convs: classes and boxes per anchor, centerness per location (None
    without centerness)."""

    cls_score: nn.Conv2d
    box_pred: nn.Conv2d
    ctr_pred: nn.Conv2d | None


def output_convs(*, channels: int, num_classes: int, per_location: int, prior_prob: float,
                 centerness: bool) -> OutputConvs:
    """The output convs, created and initialised in this order, before a predictor's 3DMF: for a
    seed the order fixes the initial weights, so it is the one every run and checkpoint was made
    with. The cls bias starts at the prior (sigmoid(bias) = prior_prob)."""
    cls_score = nn.Conv2d(channels, num_classes * per_location, 3, padding=1)
    box_pred = nn.Conv2d(channels, 4 * per_location, 3, padding=1)
    _init_conv(cls_score, -math.log((1 - prior_prob) / prior_prob))
    _init_conv(box_pred)
    ctr_pred = None
    if centerness:
        ctr_pred = nn.Conv2d(channels, 1, 3, padding=1)
        _init_conv(ctr_pred)
    return OutputConvs(cls_score, box_pred, ctr_pred)


class Predictor(nn.Module):
    """Output convs on the shared towers plus the rule that trains them. Every piece comes built
    (harness/model/build.py, from the predictor's settings): the convs, the box coder, the
    anchors (None: anchor-free), the assigner, the criterion and the 3DMF filter with its score
    rule (filter_logit: DATE's logit, else DeFCN's product)."""

    def __init__(self, *, num_classes: int, convs: OutputConvs, coder: LtrbCoder | DeltaCoder,
                 assign: Callable[[AssignInput], torch.Tensor], criterion: Criterion,
                 anchors: SquareAnchors | RetinaAnchors | None = None, ctr_on_reg: bool = False,
                 filter: MaxFilter3D | None = None, filter_logit: bool = False, use_scales: bool = True):
        super().__init__()
        self.num_classes = num_classes
        self.assign = assign
        self.coder = coder
        self.use_scales = use_scales
        self.anchor_gen = anchors
        self.num_anchors = anchors.per_location if anchors is not None else 1
        # registered in this order: the state dict's names and order (checkpoints) stay the same
        self.cls_score, self.box_pred, self.ctr_pred = convs
        self.ctr_on_reg = ctr_on_reg
        self.filter = filter
        self.filter_logit = filter_logit
        self.criterion = criterion

    # ------------------------------------------------------------------ forward

    def forward(self, cls_feats, reg_feats, scales, strides) -> dict[str, torch.Tensor | None]:
        cls = [self.cls_score(f) for f in cls_feats]
        reg = []
        for lvl, f in enumerate(reg_feats):
            x = self.box_pred(f)
            if self.use_scales:
                x = scales[lvl](x)
            reg.append(self.coder.activate(x, strides[lvl]))
        out = {"cls": _flatten(cls, self.num_classes), "reg": _flatten(reg, 4), "ctr": None, "filter": None}
        if self.ctr_pred is not None:
            src = reg_feats if self.ctr_on_reg else cls_feats
            out["ctr"] = _flatten([self.ctr_pred(f) for f in src], 1)[..., 0]
        if self.filter is not None:
            out["filter"] = _flatten(self.filter(reg_feats), 1)[..., 0]
        return out

    def anchors(self, grid: Grid) -> torch.Tensor | None:
        return self.anchor_gen.boxes(grid) if self.anchor_gen is not None else None

    def valid_anchors(self, grid: Grid, image_size: tuple[int, int]) -> torch.Tensor | None:
        """mmdet's anchor valid flags [R * A] for one image (RetinaNet anchors); None = all valid."""
        return self.anchor_gen.valid(grid, image_size) if self.anchor_gen is not None else None

    def decode(self, reg: torch.Tensor, grid: Grid, anchors: torch.Tensor | None) -> torch.Tensor:
        """[N, 4] regression output of one image -> boxes."""
        return self.coder.decode(reg, grid.points, anchors)

    def score_logits(self, out: dict, i: int | None = None) -> torch.Tensor:
        """DATE's 3DMF (filter_score 'logit'): inverse_sigmoid(sigmoid(cls) * sigmoid(filter),
        eps=1e-5), the logits its loss, assignment and inference use; else the cls logits."""
        cls = out["cls"] if i is None else out["cls"][i]
        if not self.filter_logit:
            return cls
        filt = out["filter"] if i is None else out["filter"][i]
        return L.inverse_sigmoid(cls.sigmoid() * filt.sigmoid()[..., None], eps=1e-5)

    def scores(self, out: dict, i: int) -> torch.Tensor:
        """Probabilities used by matching and inference (before centerness): [N, K]."""
        if self.filter_logit:
            return self.score_logits(out, i).sigmoid()
        prob = out["cls"][i].sigmoid()
        if out["filter"] is not None:
            prob = prob * out["filter"][i].sigmoid()[:, None]
        return prob

    # ------------------------------------------------------------------- losses

    def assign_image(self, out: dict, grid: Grid, tgt: dict, i: int, image_size, anchors) -> torch.Tensor:
        """The no_grad assignment of image i -> [N] GT index, BACKGROUND or IGNORE."""
        reg = out["reg"][i].detach()
        pred_boxes = self.decode(reg, grid, anchors)
        inp = AssignInput(grid=grid, gt_boxes=tgt["boxes"], gt_labels=tgt["labels"],
                          scores=self.scores(out, i).detach(), cls_logits=self.score_logits(out, i).detach(),
                          pred_boxes=pred_boxes, pred_ltrb=self.coder.ltrb(reg),
                          anchors=anchors, image_size=tuple(image_size))
        valid = self.valid_anchors(grid, image_size)
        if valid is None or bool(valid.all()):
            return self.assign(inp)
        # mmdet: invalid anchors take no part in the assignment and get weight 0
        inp.scores, inp.cls_logits, inp.pred_boxes = inp.scores[valid], inp.cls_logits[valid], pred_boxes[valid]
        inp.anchors = anchors[valid]
        idx = torch.full((valid.shape[0],), IGNORE, dtype=torch.long, device=valid.device)
        idx[valid] = self.assign(inp)
        return idx

    def losses(self, out: dict, grid: Grid, targets: list[dict], image_sizes) -> tuple[dict, list[torch.Tensor]]:
        """Assignment (no_grad) and the normalised losses; returns the per-image assignments."""
        anchors = self.anchors(grid)
        assigned = [self.assign_image(out, grid, tgt, i, image_sizes[i], anchors) for i, tgt in enumerate(targets)]
        boxes = [self.decode(out["reg"][i], grid, anchors) for i in range(len(targets))]
        matched = Matched(out=out, grid=grid, targets=targets, image_sizes=image_sizes, gt_idx=torch.stack(assigned),
                          boxes=boxes, anchors=anchors, score_logits=self.score_logits, coder=self.coder)
        return self.criterion(matched), assigned

    # ----------------------------------------------------------------- inference

    @torch.no_grad()
    def candidates(self, out: dict, grid: Grid, i: int, score_thresh: float, topk: int,
                   topk_cap: str = "locations", topk_by: str = "cls"):
        """Per level: threshold the scores, keep the top-k; final score sqrt(p * ctr) with
        centerness. The top-k ranks p (topk_by 'cls') or p * ctr ('cls_ctr': the official
        FCOS's threshold-then-top-k by cls x ctr; the same ranking as the final score). Returns boxes [M, 4], scores [M], labels [M] (all levels). The cap is
        min(topk, locations of the level) with topk_cap 'locations' (cvpods, although the scores
        are flattened over locations x classes), topk with 'candidates' (mmdet's nms_pre)."""
        anchors = self.anchors(grid)
        prob = self.scores(out, i)
        boxes_all, scores_all, labels_all = [], [], []
        start = 0
        for n in grid.counts:
            n_a = n * self.num_anchors
            p = prob[start:start + n_a].flatten()
            keep = torch.nonzero(p > score_thresh).flatten()
            cap = min(topk, n) if topk_cap == "locations" else topk
            if topk_by == "cls_ctr" and out["ctr"] is not None:
                prod = p[keep] * out["ctr"][i][keep // self.num_classes + start].sigmoid()
                prod, order = prod.sort(descending=True)
                keep, vals = keep[order[:cap]], torch.sqrt(prod[:cap])
                loc = keep // self.num_classes + start
            else:
                vals, order = p[keep].sort(descending=True)
                keep, vals = keep[order[:cap]], vals[:cap]
                loc = keep // self.num_classes + start
                if out["ctr"] is not None:
                    vals = torch.sqrt(vals * out["ctr"][i][loc].sigmoid())
            labels = keep % self.num_classes
            boxes = self.coder.decode(out["reg"][i][loc], grid.points[loc], anchors[loc] if anchors is not None else None)
            boxes_all.append(boxes)
            scores_all.append(vals)
            labels_all.append(labels)
            start += n_a
        return torch.cat(boxes_all), torch.cat(scores_all), torch.cat(labels_all)


def aux_losses(out: dict, grid: Grid, targets: list[dict], boxes: list[torch.Tensor], *,
               assign: Callable[[AssignInput], torch.Tensor], weight: float, focal_alpha: float = 0.25,
               focal_gamma: float = 2.0) -> dict:
    """DeFCN's auxiliary one-to-many loss: focal on the raw (unfiltered) cls logits, targets from
    the Aux assignment on sigmoid(cls) and the predicted boxes, / max(1, N_aux); no box loss."""
    cls_t = torch.zeros_like(out["cls"])
    n_pos = 0
    for i, tgt in enumerate(targets):
        inp = AssignInput(grid=grid, gt_boxes=tgt["boxes"], gt_labels=tgt["labels"],
                          scores=out["cls"][i].detach().sigmoid(), pred_boxes=boxes[i])
        idx = assign(inp)
        p = idx != BACKGROUND
        cls_t[i, p, tgt["labels"][idx[p]]] = 1.0
        n_pos += int(p.sum())
    norm = mean_across_processes(torch.tensor(float(n_pos), device=cls_t.device)).clamp(min=1.0)
    focal = L.sigmoid_focal(out["cls"], cls_t, focal_alpha, focal_gamma)
    return {"loss_aux": weight * focal.sum() / norm}
