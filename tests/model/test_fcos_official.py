"""The official FCOS's maskrcnn-benchmark rules (tianzhi0549/FCOS@de2d65a), each against a plain
transcription of the original: locations, the smoothed IoU loss, the loss normalisers, the
pre-NMS candidates, the constant warm-up and the bias lr / decay. Each option's default keeps the
harness's earlier rule, which the transcription tells apart (docs/fcos.md)."""

import bisect

import pytest
import torch
from torch import nn

from harness.model.assign.common import BACKGROUND
from harness.model.build import build_criterion
from harness.model.criterion import Matched
from harness.model.head import Scale, Towers
from harness.model.losses import neg_log_iou_loss
from harness.model.points import make_grid
from harness.spec.schema import PredictorConfig
from harness.train.optim import lr_factor, param_groups
from tests.model import predictor

SIZES = [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]
STRIDES = [8, 16, 32, 64, 128]


# ------------------------------------------------ transcriptions of the original (@de2d65a)


def official_locations(h, w, stride):
    """modeling/rpn/fcos/fcos.py compute_locations_per_level."""
    shifts_x = torch.arange(0, w * stride, step=stride, dtype=torch.float32)
    shifts_y = torch.arange(0, h * stride, step=stride, dtype=torch.float32)
    shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
    return torch.stack((shift_x.reshape(-1), shift_y.reshape(-1)), dim=1) + stride // 2


def official_iou_loss(pred, target, weight=None):
    """layers/iou_loss.py IOULoss.forward on (l, t, r, b)."""
    pred_left, pred_top, pred_right, pred_bottom = pred.unbind(1)
    target_left, target_top, target_right, target_bottom = target.unbind(1)
    target_area = (target_left + target_right) * (target_top + target_bottom)
    pred_area = (pred_left + pred_right) * (pred_top + pred_bottom)
    w_intersect = torch.min(pred_left, target_left) + torch.min(pred_right, target_right)
    h_intersect = torch.min(pred_bottom, target_bottom) + torch.min(pred_top, target_top)
    area_intersect = w_intersect * h_intersect
    area_union = target_area + pred_area - area_intersect
    losses = -torch.log((area_intersect + 1.0) / (area_union + 1.0))
    if weight is not None and weight.sum() > 0:
        return (losses * weight).sum() / weight.sum()
    return losses.mean()


def official_focal(logits, targets, gamma=2.0, alpha=0.25):
    """layers/sigmoid_focal_loss.py sigmoid_focal_loss_cpu (labels 1..K, 0 = background), summed."""
    class_range = torch.arange(1, logits.shape[1] + 1).unsqueeze(0)
    t = targets.unsqueeze(1)
    p = torch.sigmoid(logits)
    term1 = (1 - p) ** gamma * torch.log(p)
    term2 = p ** gamma * torch.log(1 - p)
    return (-(t == class_range).float() * term1 * alpha - ((t != class_range) * (t >= 0)).float() * term2 * (1 - alpha)).sum()


def official_losses(box_cls, box_reg, centerness, labels, reg_targets, num_images):
    """modeling/rpn/fcos/loss.py FCOSLossComputation.__call__ on flattened tensors of one GPU."""
    pos_inds = torch.nonzero(labels > 0).squeeze(1)
    num_pos = pos_inds.numel()
    cls_loss = official_focal(box_cls, labels.int()) / (num_pos + num_images)  # add N to avoid dividing by a zero
    box_reg, reg_targets, centerness = box_reg[pos_inds], reg_targets[pos_inds], centerness[pos_inds]
    if pos_inds.numel() > 0:
        lr, tb = reg_targets[:, [0, 2]], reg_targets[:, [1, 3]]
        ctr_t = torch.sqrt((lr.min(dim=-1)[0] / lr.max(dim=-1)[0]) * (tb.min(dim=-1)[0] / tb.max(dim=-1)[0]))
        reg_loss = official_iou_loss(box_reg, reg_targets, ctr_t)
        centerness_loss = nn.BCEWithLogitsLoss()(centerness, ctr_t)
    else:
        reg_loss, centerness_loss = box_reg.sum(), centerness.sum()
    return cls_loss, reg_loss, centerness_loss


def official_candidates(box_cls, box_reg, centerness, locations, pre_nms_thresh, pre_nms_top_n):
    """modeling/rpn/fcos/inference.py forward_for_single_feature_map, one image, flattened:
    threshold on cls, then the top pre_nms_top_n by cls x ctr. Returns boxes, cls x ctr, labels 1..K."""
    box_cls = box_cls.sigmoid()
    centerness = centerness.sigmoid()
    candidate_inds = box_cls > pre_nms_thresh
    top_n = int(candidate_inds.sum().clamp(max=pre_nms_top_n))
    box_cls = box_cls * centerness[:, None]
    per_box_cls = box_cls[candidate_inds]
    nonzero = candidate_inds.nonzero()
    per_box_loc, per_class = nonzero[:, 0], nonzero[:, 1] + 1
    per_reg, per_loc = box_reg[per_box_loc], locations[per_box_loc]
    if candidate_inds.sum().item() > top_n:
        per_box_cls, top_k = per_box_cls.topk(top_n, sorted=False)
        per_class, per_reg, per_loc = per_class[top_k], per_reg[top_k], per_loc[top_k]
    boxes = torch.stack([per_loc[:, 0] - per_reg[:, 0], per_loc[:, 1] - per_reg[:, 1],
                         per_loc[:, 0] + per_reg[:, 2], per_loc[:, 1] + per_reg[:, 3]], dim=1)
    return boxes, per_box_cls, per_class


def official_lr(last_epoch, *, base_lr, milestones, gamma, warmup_factor, warmup_iters, warmup_method):
    """solver/lr_scheduler.py WarmupMultiStepLR.get_lr."""
    factor = 1
    if last_epoch < warmup_iters:
        if warmup_method == "constant":
            factor = warmup_factor
        elif warmup_method == "linear":
            alpha = float(last_epoch) / warmup_iters
            factor = warmup_factor * (1 - alpha) + alpha
    return base_lr * factor * gamma ** bisect.bisect_right(milestones, last_epoch)


def official_param_settings(model, *, base_lr, weight_decay, bias_lr_factor, weight_decay_bias):
    """solver/build.py make_optimizer: one (lr, weight decay) per parameter."""
    out = {}
    for key, value in model.named_parameters():
        if not value.requires_grad:
            continue
        lr, wd = base_lr, weight_decay
        if "bias" in key:
            lr, wd = base_lr * bias_lr_factor, weight_decay_bias
        out[key] = (lr, wd)
    return out


# --------------------------------------------------------------------------------- tests


def test_locations_are_the_originals_offset_by_half_a_stride():
    # arange(0, w s, s) + s // 2 is the harness's (j + 0.5) s for the even strides 8..128
    grid = make_grid(SIZES, STRIDES)
    expected = torch.cat([official_locations(h, w, s) for (h, w), s in zip(SIZES, STRIDES, strict=True)])
    assert torch.equal(grid.points, expected)


def _ltrb_pairs(n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(n, 4, generator=g) * 60 + 0.5
    pred = torch.rand(n, 4, generator=g) * 60 + 0.01
    pred[:10] = target[:10]  # perfect boxes: loss 0
    pred[10:20] = 1e-3  # tiny predictions: IoU near 0, where the +1 matters most
    pts = torch.rand(n, 2, generator=g) * 100 + 100
    def boxes(ltrb):
        return torch.cat([pts - ltrb[:, :2], pts + ltrb[:, 2:]], dim=1)
    return pred, target, boxes(pred), boxes(target)


def test_smoothed_iou_loss_is_the_originals():
    pred, target, pred_boxes, gt_boxes = _ltrb_pairs()
    per = neg_log_iou_loss(pred_boxes, gt_boxes, smooth=1.0)
    weight = torch.rand(len(pred))
    assert (per * weight).sum() / weight.sum() == pytest.approx(official_iou_loss(pred, target, weight).item(), rel=1e-5)
    for i in range(len(pred)):
        assert per[i].item() == pytest.approx(official_iou_loss(pred[i:i + 1], target[i:i + 1]).item(), rel=1e-5, abs=1e-6)
    # the default (smooth 0, mmdet's clamp) is another rule: it differs where IoU is small
    plain = neg_log_iou_loss(pred_boxes, gt_boxes)
    assert (plain[10:20] - per[10:20]).abs().min() > 1.0


def _batch(seed=0, k=3, positives=True):
    """Two images of outputs, GTs and an assignment (each positive strictly inside its GT)."""
    g = torch.Generator().manual_seed(seed)
    grid = make_grid(SIZES, STRIDES)
    r = len(grid.points)
    gts = [torch.tensor([[4.0, 6.0, 70.0, 50.0], [20.0, 10.0, 60.0, 62.0]]), torch.tensor([[0.0, 0.0, 30.0, 40.0]])]
    labels = [torch.tensor([0, 2]), torch.tensor([1])]
    gt_idx = torch.full((2, r), BACKGROUND, dtype=torch.long)
    if positives:
        for i, boxes in enumerate(gts):
            for j, b in enumerate(boxes):
                x, y = grid.points[:, 0], grid.points[:, 1]
                inside = (x > b[0]) & (x < b[2]) & (y > b[1]) & (y < b[3]) & (grid.level == 0)
                gt_idx[i, inside & (torch.rand(r, generator=g) < 0.7)] = j
    out = {"cls": torch.randn(2, r, k, generator=g, requires_grad=True),
           "reg": (torch.randn(2, r, 4, generator=g) * 0.5 + 2.5).exp().requires_grad_(),
           "ctr": torch.randn(2, r, generator=g, requires_grad=True), "filter": None}
    boxes = [torch.cat([grid.points - out["reg"][i][:, :2], grid.points + out["reg"][i][:, 2:]], dim=1) for i in range(2)]
    targets = [{"boxes": b, "labels": lab} for b, lab in zip(gts, labels, strict=True)]
    return Matched(out=out, grid=grid, targets=targets, image_sizes=[(64, 64), (64, 64)], gt_idx=gt_idx, boxes=boxes,
                   anchors=None, score_logits=lambda o: o["cls"])


def _official_of(m: Matched):
    cls, reg, ctr, labels, reg_t = [], [], [], [], []
    for i, t in enumerate(m.targets):
        idx = m.gt_idx[i]
        lab = torch.zeros(len(idx), dtype=torch.long)
        lab[idx >= 0] = t["labels"][idx[idx >= 0]] + 1
        gt = t["boxes"][idx.clamp(min=0)]
        pts = m.grid.points
        cls.append(m.out["cls"][i]), reg.append(m.out["reg"][i]), ctr.append(m.out["ctr"][i])
        labels.append(lab), reg_t.append(torch.cat([pts - gt[:, :2], gt[:, 2:] - pts], dim=1))
    return official_losses(torch.cat(cls), torch.cat(reg), torch.cat(ctr), torch.cat(labels), torch.cat(reg_t),
                           len(m.targets))


OFFICIAL_LOSS = {"box": "neg_log_iou", "box_weighting": "centerness", "ctr_norm_min": 1e-6, "iou_smooth": 1.0,
                 "normalizer": "per_process_plus_images"}


@pytest.mark.parametrize("positives", [True, False])
def test_loss_normalisers_are_the_originals(positives):
    m = _batch(positives=positives)
    crit = build_criterion(PredictorConfig.model_validate(
        {"assigner": {"name": "fcos", "center_radius": None}, "centerness": "cls", "loss": OFFICIAL_LOSS}))
    ours = crit(m)
    cls, reg, ctr = _official_of(m)
    assert ours["loss_cls"].item() == pytest.approx(cls.item(), rel=1e-5)
    assert ours["loss_box"].item() == pytest.approx(reg.item(), rel=1e-5, abs=1e-7)
    assert ours["loss_ctr"].item() == pytest.approx(ctr.item(), rel=1e-5, abs=1e-7)
    # gradients too (the weights are no part of the graph in either)
    g_ours = torch.autograd.grad(sum(ours.values()), [m.out["cls"], m.out["reg"], m.out["ctr"]], allow_unused=True)
    m2 = _batch(positives=positives)
    g_orig = torch.autograd.grad(sum(_official_of(m2)), [m2.out["cls"], m2.out["reg"], m2.out["ctr"]], allow_unused=True)
    for a, b in zip(g_ours, g_orig, strict=True):
        if a is None or b is None:
            assert (a is None or not a.abs().sum()) and (b is None or not b.abs().sum())
            continue
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)
    # the default normaliser divides the focal sum by max(1, positives), without the + images
    default = build_criterion(PredictorConfig.model_validate(
        {"assigner": {"name": "fcos"}, "centerness": "cls", "loss": {**OFFICIAL_LOSS, "normalizer": "mean_positives"}}))
    n = int(m.pos.sum())
    assert default(m)["loss_cls"].item() == pytest.approx(cls.item() * (n + 2) / max(n, 1), rel=1e-5)


def test_candidates_are_thresholded_then_ranked_by_cls_times_ctr():
    pred = predictor(None, num_classes=3, centerness="cls", box_coder="ltrb_exp")
    torch.manual_seed(0)
    towers = Towers(channels=8, num_convs=1, gn_groups=4)
    cls_f, reg_f = towers([torch.randn(1, 8, h, w) for h, w in SIZES])
    out = pred(cls_f, reg_f, towers.scales, STRIDES)
    out["cls"] = torch.randn_like(out["cls"]) - 1.0  # a spread of scores around the threshold
    out["ctr"] = torch.randn_like(out["ctr"]) * 2
    grid = make_grid(SIZES, STRIDES)
    topk = 7  # binds on P3 and P4
    boxes, scores, labels = pred.candidates(out, grid, 0, 0.05, topk, topk_cap="candidates", topk_by="cls_ctr")
    want_b, want_s, want_l = [], [], []
    start = 0
    for n in grid.counts:
        sl = slice(start, start + n)
        b, s, lab = official_candidates(out["cls"][0, sl], out["reg"][0, sl], out["ctr"][0, sl], grid.points[sl], 0.05, topk)
        want_b.append(b), want_s.append(s), want_l.append(lab - 1)
        start += n
    want_b, want_s, want_l = torch.cat(want_b), torch.cat(want_s), torch.cat(want_l)

    def rows(b, s, lab):
        return sorted(zip(lab.tolist(), [round(v, 5) for v in s.tolist()], [tuple(round(x, 3) for x in r) for r in b.tolist()],
                          strict=True))

    # the harness reports sqrt(cls x ctr), the original cls x ctr: the same order
    assert rows(boxes, scores ** 2, labels) == rows(want_b, want_s, want_l)
    assert len(scores) < (out["cls"][0].sigmoid() > 0.05).sum()  # the cap did bind
    # the default ranks by cls alone: another selection on these outputs
    _, s_cls, _ = pred.candidates(out, grid, 0, 0.05, topk, topk_cap="candidates")
    assert sorted(s_cls.tolist()) != sorted(scores.tolist())


@pytest.mark.parametrize("method", ["constant", "linear"])
def test_warm_up_is_the_originals(method):
    # WarmupMultiStepLR at last_epoch = it (the harness counts completed iterations; the original
    # steps its scheduler before each iteration, so its iteration i runs at last_epoch i + 1)
    for it in [0, 1, 250, 498, 499, 500, 501, 59999, 60000, 80000, 89999]:
        want = official_lr(it, base_lr=0.01, milestones=[60000, 80000], gamma=0.1, warmup_factor=1 / 3,
                           warmup_iters=500, warmup_method=method)
        got = 0.01 * lr_factor(it, warmup_iters=500, warmup_factor=1 / 3, steps=(60000, 80000), gamma=0.1,
                               warmup_method=method)
        assert got == pytest.approx(want, rel=1e-12), it


class _Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3)
        self.gn = nn.GroupNorm(2, 4)
        self.scales = nn.ModuleList([Scale(1.0) for _ in range(2)])
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


def test_bias_lr_and_decay_are_the_originals():
    model = _Head()
    groups = param_groups(model, lr=0.01, weight_decay=1e-4, weight_decay_norm=1e-4, backbone_lr_mult=1.0,
                          bias_lr_factor=2.0, weight_decay_bias=0.0)
    ours = {}
    names = {id(p): n for n, p in model.named_parameters()}
    for g in groups:
        for p in g["params"]:
            ours[names[id(p)]] = (g["lr"], g["weight_decay"])
    want = official_param_settings(model, base_lr=0.01, weight_decay=1e-4, bias_lr_factor=2.0, weight_decay_bias=0.0)
    assert ours == want
    assert ours["conv.bias"] == (0.02, 0.0) and ours["scales.0.scale"] == (0.01, 1e-4)
    # the defaults leave biases to their layer's rule at the base lr
    plain = param_groups(model, lr=0.01, weight_decay=1e-4, weight_decay_norm=0.0, backbone_lr_mult=1.0)
    assert {(g["lr"], g["weight_decay"]) for g in plain} == {(0.01, 1e-4), (0.01, 0.0)}


def test_the_official_rows_use_these_rules():
    from harness.spec import expand, load_spec
    from tests.conftest import EXPERIMENTS

    for c in expand(load_spec(EXPERIMENTS / "fcos.yaml")):
        cfg = c.config
        official = c.row.startswith("FCOS_")
        loss = cfg.model.predictor.loss
        assert (loss.iou_smooth, loss.normalizer) == ((1.0, "per_process_plus_images") if official
                                                      else (0.0, "mean_positives"))
        assert (cfg.train.warmup_method, cfg.train.bias_lr_factor, cfg.train.weight_decay_bias) == (
            ("constant", 2.0, 0.0) if official else ("linear", 1.0, None))
        assert cfg.eval.topk_by == "cls_ctr" and cfg.eval.topk_cap == "candidates"
