"""Shared towers and predictors (sets of output convs with their assignment and losses).

Towers: cls and reg, each num_convs x (conv3x3 + GN + ReLU), shared across levels; the
per-level learnable scales live here too, so that DATE's two predictors share them.
A predictor adds cls / box (/ centerness, / 3DMF filter) convs and knows how to turn its
outputs into matching scores, boxes and losses.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from harness.model import losses as L
from harness.model.assign.common import BACKGROUND, IGNORE, AssignInput
from harness.model.box_ops import box_cxcywh, decode_deltas, encode_deltas, ltrb_to_boxes
from harness.model.comm import mean_across_processes
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


def retina_anchors(grid: Grid, octave_base_scale: float, scales_per_octave: int, ratios: list[float]) -> torch.Tensor:
    """mmdet AnchorGenerator (center_offset 0): anchors centred at (j * s, i * s), [R * A, 4]."""
    scales = torch.tensor([octave_base_scale * 2 ** (i / scales_per_octave) for i in range(scales_per_octave)])
    ratios_t = torch.tensor(ratios)
    h_ratios = ratios_t.sqrt()
    w_ratios = 1 / h_ratios
    base = grid.strides[:, None]  # [R, 1]
    ws = (w_ratios[:, None] * scales[None, :]).reshape(-1)[None] * base  # [R, A]
    hs = (h_ratios[:, None] * scales[None, :]).reshape(-1)[None] * base
    centers = grid.points - grid.strides[:, None] * 0.5
    cx, cy = centers[:, :1], centers[:, 1:]
    anchors = torch.stack([cx - 0.5 * ws, cy - 0.5 * hs, cx + 0.5 * ws, cy + 0.5 * hs], dim=-1)
    return anchors.reshape(-1, 4)


class Predictor(nn.Module):
    """Output convs on the shared towers plus the rule that trains them."""

    def __init__(self, *, num_classes: int, channels: int, assign: Callable[[AssignInput], torch.Tensor],
                 box_coder: str = "ltrb_relu", centerness: str = "none", filter: str = "none",
                 filter_kernel: int = 3, filter_tau: int = 2, filter_score: str = "product", gn_groups: int = 32,
                 use_scales: bool = True,
                 prior_prob: float = 0.01, square_anchor_scale: float | None = None,
                 retina_anchors: dict | None = None, anchor_valid_pad: int | None = None, focal_alpha: float = 0.25, focal_gamma: float = 2.0,
                 cls_weight: float = 1.0, box_loss: str = "giou", box_weight: float = 1.0,
                 box_weighting: str = "none", l1_weight: float = 0.0, ctr_weight: float = 1.0,
                 ctr_norm_min: float = 1.0):
        super().__init__()
        self.num_classes = num_classes
        self.assign = assign
        self.box_coder, self.centerness, self.filter_kind = box_coder, centerness, filter
        self.filter_score = filter_score
        self.use_scales = use_scales
        self.square_anchor_scale, self.retina = square_anchor_scale, retina_anchors
        self.anchor_valid_pad = anchor_valid_pad
        self.num_anchors = len(retina_anchors["ratios"]) * retina_anchors["scales_per_octave"] if retina_anchors else 1
        a = self.num_anchors
        self.cls_score = nn.Conv2d(channels, num_classes * a, 3, padding=1)
        self.box_pred = nn.Conv2d(channels, 4 * a, 3, padding=1)
        _init_conv(self.cls_score, -math.log((1 - prior_prob) / prior_prob))
        _init_conv(self.box_pred)
        self.ctr_pred = None
        if centerness != "none":
            self.ctr_pred = nn.Conv2d(channels, 1, 3, padding=1)
            _init_conv(self.ctr_pred)
        self.filter = None
        if filter != "none":
            self.filter = MaxFilter3D(channels=channels, kernel=filter_kernel, tau=filter_tau,
                                      norm=filter == "3dmf", gn_groups=gn_groups)
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma
        self.cls_weight, self.box_loss, self.box_weight = cls_weight, box_loss, box_weight
        self.box_weighting, self.l1_weight, self.ctr_weight = box_weighting, l1_weight, ctr_weight
        self.ctr_norm_min = ctr_norm_min

    # ------------------------------------------------------------------ forward

    def forward(self, cls_feats, reg_feats, scales, strides) -> dict[str, torch.Tensor | None]:
        cls = [self.cls_score(f) for f in cls_feats]
        reg = []
        for lvl, f in enumerate(reg_feats):
            x = self.box_pred(f)
            if self.use_scales:
                x = scales[lvl](x)
            if self.box_coder in ("ltrb_relu", "ltrb_clamp"):
                x = (F.relu(x) if self.box_coder == "ltrb_relu" else x.clamp(min=0)) * strides[lvl]
            elif self.box_coder == "ltrb_exp":
                x = x.float().exp()
            reg.append(x)
        out = {"cls": _flatten(cls, self.num_classes), "reg": _flatten(reg, 4), "ctr": None, "filter": None}
        if self.ctr_pred is not None:
            src = reg_feats if self.centerness == "reg" else cls_feats
            out["ctr"] = _flatten([self.ctr_pred(f) for f in src], 1)[..., 0]
        if self.filter is not None:
            out["filter"] = _flatten(self.filter(reg_feats), 1)[..., 0]
        return out

    def anchors(self, grid: Grid) -> torch.Tensor | None:
        if self.retina is not None:
            return retina_anchors(grid, **self.retina)
        if self.square_anchor_scale is not None:
            half = grid.strides[:, None] * self.square_anchor_scale / 2
            return torch.cat([grid.points - half, grid.points + half], dim=-1)
        return None

    def valid_anchors(self, grid: Grid, image_size: tuple[int, int]) -> torch.Tensor | None:
        """mmdet's valid flags [R * A]: per level, the locations within ceil(pad / stride) rows
        and columns, pad = the image's own size rounded up to `anchor_valid_pad`; None = all."""
        if self.retina is None or self.anchor_valid_pad is None:
            return None
        d = self.anchor_valid_pad
        pad_h, pad_w = (-(-int(image_size[0]) // d) * d, -(-int(image_size[1]) // d) * d)
        flags = []
        for (h, w), s in zip(grid.sizes, grid.strides.unique_consecutive().tolist(), strict=True):
            s = int(s)
            rows = torch.arange(h, device=grid.points.device) < min(-(-pad_h // s), h)
            cols = torch.arange(w, device=grid.points.device) < min(-(-pad_w // s), w)
            flags.append((rows[:, None] & cols[None, :]).reshape(-1))
        return torch.cat(flags).repeat_interleave(self.num_anchors)

    def decode(self, reg: torch.Tensor, grid: Grid, anchors: torch.Tensor | None) -> torch.Tensor:
        """[N, 4] regression output of one image -> boxes."""
        if self.box_coder == "anchor_delta":
            return decode_deltas(anchors, reg)
        return ltrb_to_boxes(grid.points, reg)

    def score_logits(self, out: dict, i: int | None = None) -> torch.Tensor:
        """DATE's 3DMF (filter_score 'logit'): inverse_sigmoid(sigmoid(cls) * sigmoid(filter),
        eps=1e-5), the logits its loss, assignment and inference use; else the cls logits."""
        cls = out["cls"] if i is None else out["cls"][i]
        if out["filter"] is None or self.filter_score != "logit":
            return cls
        filt = out["filter"] if i is None else out["filter"][i]
        return L.inverse_sigmoid(cls.sigmoid() * filt.sigmoid()[..., None], eps=1e-5)

    def scores(self, out: dict, i: int) -> torch.Tensor:
        """Probabilities used by matching and inference (before centerness): [N, K]."""
        if out["filter"] is not None and self.filter_score == "logit":
            return self.score_logits(out, i).sigmoid()
        prob = out["cls"][i].sigmoid()
        if out["filter"] is not None:
            prob = prob * out["filter"][i].sigmoid()[:, None]
        return prob

    # ------------------------------------------------------------------- losses

    def losses(self, out: dict, grid: Grid, targets: list[dict], image_sizes) -> tuple[dict, list[torch.Tensor]]:
        """Assignment (no_grad) and the normalised losses; returns the per-image assignments."""
        anchors = self.anchors(grid)
        assigned, boxes = [], []
        for i, tgt in enumerate(targets):
            pred_boxes = self.decode(out["reg"][i].detach(), grid, anchors)
            inp = AssignInput(grid=grid, gt_boxes=tgt["boxes"], gt_labels=tgt["labels"],
                              scores=self.scores(out, i).detach(), cls_logits=self.score_logits(out, i).detach(),
                              pred_boxes=pred_boxes,
                              pred_ltrb=out["reg"][i].detach() if self.box_coder != "anchor_delta" else None,
                              anchors=anchors, image_size=tuple(image_sizes[i]))
            valid = self.valid_anchors(grid, image_sizes[i])
            if valid is None or bool(valid.all()):
                assigned.append(self.assign(inp))
            else:  # mmdet: invalid anchors take no part in the assignment and get weight 0
                inp.scores, inp.cls_logits, inp.pred_boxes = inp.scores[valid], inp.cls_logits[valid], pred_boxes[valid]
                inp.anchors = anchors[valid]
                idx = torch.full((valid.shape[0],), IGNORE, dtype=torch.long, device=valid.device)
                idx[valid] = self.assign(inp)
                assigned.append(idx)
            boxes.append(self.decode(out["reg"][i], grid, anchors))
        gt_idx = torch.stack(assigned)  # [B, N]
        pos = gt_idx >= 0
        num_pos = mean_across_processes(pos.sum().float()).clamp(min=1.0)

        # classification: focal over every location and class (ignored anchors excluded)
        cls_t = torch.zeros_like(out["cls"])
        for i, tgt in enumerate(targets):
            p = pos[i]
            cls_t[i, p, tgt["labels"][gt_idx[i, p]]] = 1.0
        valid = gt_idx != IGNORE
        if out["filter"] is not None and self.filter_score == "product":
            probs = out["cls"].sigmoid() * out["filter"].sigmoid()[..., None]
            focal = L.sigmoid_focal_on_probs(probs[valid], cls_t[valid], self.focal_alpha, self.focal_gamma)
        else:
            focal = L.sigmoid_focal(self.score_logits(out)[valid], cls_t[valid], self.focal_alpha, self.focal_gamma)
        result = {"loss_cls": self.cls_weight * focal.sum() / num_pos}

        # regression on positives
        pred_b = torch.cat([boxes[i][pos[i]] for i in range(len(targets))])
        gt_b = torch.cat([t["boxes"][gt_idx[i, pos[i]]] for i, t in enumerate(targets)])
        if self.box_loss == "l1_delta":
            anc = torch.cat([anchors[pos[i]] for i in range(len(targets))])
            reg = torch.cat([out["reg"][i][pos[i]] for i in range(len(targets))])
            per = (reg - encode_deltas(anc, gt_b)).abs().sum(-1)
        elif self.box_loss == "giou":
            per = L.giou_loss(pred_b, gt_b)
        else:
            per = L.neg_log_iou_loss(pred_b, gt_b)
        ctr_t = None
        if self.ctr_pred is not None or self.box_weighting == "centerness":
            pts = torch.cat([grid.points[pos[i]] for i in range(len(targets))])
            ltrb = torch.cat([pts - gt_b[:, :2], gt_b[:, 2:] - pts], dim=-1)
            ctr_t = L.centerness_target(ltrb)
        if self.box_weighting == "centerness":
            norm = mean_across_processes(ctr_t.sum().detach()).clamp(min=self.ctr_norm_min)
            result["loss_box"] = self.box_weight * (per * ctr_t).sum() / norm
        else:
            result["loss_box"] = self.box_weight * per.sum() / num_pos
        if self.ctr_pred is not None:
            ctr = torch.cat([out["ctr"][i][pos[i]] for i in range(len(targets))])
            bce = F.binary_cross_entropy_with_logits(ctr, ctr_t, reduction="sum")
            result["loss_ctr"] = self.ctr_weight * bce / num_pos
        if self.l1_weight > 0:
            factors = torch.cat([pred_b.new_tensor([s[1], s[0], s[1], s[0]]).expand(int(pos[i].sum()), 4)
                                 for i, s in enumerate(image_sizes)])
            l1 = (box_cxcywh(pred_b / factors) - box_cxcywh(gt_b / factors)).abs().sum()
            result["loss_l1"] = self.l1_weight * l1 / num_pos
        return result, assigned

    # ----------------------------------------------------------------- inference

    @torch.no_grad()
    def candidates(self, out: dict, grid: Grid, i: int, score_thresh: float, topk: int,
                   topk_cap: str = "locations"):
        """Per level: threshold the scores, keep the top-k; final score sqrt(p * ctr) with
        centerness. Returns boxes [M, 4], scores [M], labels [M] (all levels). The cap is
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
            vals, order = p[keep].sort(descending=True)
            cap = min(topk, n) if topk_cap == "locations" else topk
            keep, vals = keep[order[:cap]], vals[:cap]
            loc = keep // self.num_classes + start
            labels = keep % self.num_classes
            reg = out["reg"][i][loc]
            if self.box_coder == "anchor_delta":
                boxes = decode_deltas(anchors[loc], reg)
            else:
                boxes = ltrb_to_boxes(grid.points[loc], reg)
            if out["ctr"] is not None:
                vals = torch.sqrt(vals * out["ctr"][i][loc].sigmoid())
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
