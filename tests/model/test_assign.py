"""Assigners on hand-written tensors: zero-GT images, empty priors, competing GTs, ties."""

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from harness.model.assign.aware import (
    assign_aux,
    assign_detr_hungarian,
    assign_fg_loss,
    assign_max_iou,
    assign_poto,
    assign_poto_argmax,
    poto_quality,
)
from harness.model.assign.common import AssignInput, center_prior
from harness.model.assign.hungarian import solve_restricted
from harness.model.assign.static import assign_anchor, assign_atss, assign_center, assign_fcos
from harness.model.box_ops import mmdet_roundtrip, pairwise_iou
from harness.model.points import make_grid
from harness.spec.schema import FCOS_RANGES

STRIDES = [8, 16, 32, 64, 128]


def grid64():
    return make_grid([(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)], STRIDES)


def inp(boxes, labels=None, **kw):
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    labels = torch.zeros(len(boxes), dtype=torch.long) if labels is None else torch.tensor(labels)
    return AssignInput(grid=kw.pop("grid", grid64()), gt_boxes=boxes, gt_labels=labels, **kw)


def positives(idx):
    return {int(i): int(g) for i, g in enumerate(idx) if g >= 0}


def test_grid_locations():
    g = grid64()
    assert g.points[:2].tolist() == [[4, 4], [12, 4]]
    assert g.points[64].tolist() == [8, 8] and g.strides[64] == 16
    assert g.counts == [64, 16, 4, 1, 1]


# --------------------------------------------------------------------------- FCOS


def test_fcos_zero_gt():
    assert (assign_fcos(inp([]), scale_ranges=FCOS_RANGES) == -1).all()


def test_fcos_center_sampling_and_ranges():
    idx = assign_fcos(inp([[0, 0, 16, 16]]), scale_ranges=FCOS_RANGES)
    # P3 locations (4,4), (12,4), (4,12), (12,12); P4's (8,8) has max delta 8, not in [64,128]
    assert positives(idx) == {0: 0, 1: 0, 8: 0, 9: 0}


def test_fcos_center_box_is_clipped_and_strict():
    # center (24, 24), radius 12 -> [12, 12, 36, 36] (inside the box [8, 8, 40, 40]):
    # x = 12 and x = 36 lie exactly on its border and are out (strict); x = 20, 28 are in
    idx = assign_fcos(inp([[8, 8, 40, 40]]), scale_ranges=FCOS_RANGES)
    cols = sorted({i % 8 for i in positives(idx)})
    assert cols == [2, 3]
    # a box narrower than the center box: the clip to the box decides
    idx = assign_fcos(inp([[10, 0, 22, 64]]), scale_ranges=FCOS_RANGES)
    assert sorted({i % 8 for i in positives(idx)}) == [1, 2]


def test_fcos_min_area_wins_then_lowest_index():
    big, small = [0, 0, 32, 32], [0, 0, 24, 24]
    idx = assign_fcos(inp([big, small]), scale_ranges=FCOS_RANGES)
    assert idx[9] == 1  # (12, 12) is in both: the smaller GT
    same = assign_fcos(inp([small, small]), scale_ranges=FCOS_RANGES)
    assert set(positives(same).values()) == {0}


def test_fcos_ranges_inclusive_at_both_ends():
    # location (68, 68) of a 136 x 136 image at P3 ... use a level-free check: max delta exactly 64
    g = make_grid([(1, 1)] * 2, [8, 16])
    box = [[-60, -60, 4 + 64, 4 + 64]]  # point (4, 4) (P3) and (8, 8) (P4)
    i = inp(box, grid=g)
    idx = assign_fcos(i, center_radius=None, scale_ranges=[(-1, 64), (64, 128)])
    assert idx[0] == 0  # max delta 64 at P3: upper bound included


def test_fcos_without_radius_uses_the_box():
    idx = assign_fcos(inp([[8, 8, 40, 40]]), center_radius=None, scale_ranges=FCOS_RANGES)
    assert len(positives(idx)) == 16  # all P3 locations 12..36 x 12..36


# ---------------------------------------------------------------------- ATSS etc.


def test_atss_picks_near_center_inside_box():
    idx = assign_atss(inp([[0, 0, 30, 30]]), topk=9, anchor_scale=8.0)
    pos = positives(idx)
    assert pos and all(v == 0 for v in pos.values())
    g = grid64()
    for i in pos:
        x, y = g.points[i].tolist()
        assert 0.01 < x < 29.99 and 0.01 < y < 29.99
    assert (assign_atss(inp([]), topk=9) == -1).all()


def test_atss_inside_means_ltrb_above_zero_as_cvpods():
    # the location (4, 4) lies 0.005 px inside the box's top-left corner: inside for cvpods/DeFCN
    # (min ltrb > 0), outside for the official ATSS code's > 0.01
    idx = assign_atss(inp([[3.995, 3.995, 12.5, 12.5]]), topk=9, anchor_scale=8.0)
    assert idx[0] == 0
    assert positives(idx) == {0: 0, 1: 0, 8: 0, 9: 0}


def test_anchor_one_best_anchor_per_gt_even_iou_zero():
    idx = assign_anchor(inp([[0, 0, 30, 30], [100, 100, 101, 101]]), anchor_scale=4.0)
    pos = positives(idx)
    assert sorted(pos.values()) == [0, 1]
    assert (assign_anchor(inp([]), anchor_scale=4.0) == -1).all()


def test_center_nearest_location_per_level_in_range():
    idx = assign_center(inp([[0, 0, 24, 24]]), scale_ranges=FCOS_RANGES)
    # center (12, 12): nearest P3 location is (12, 12) = index 9 (max delta 12, in range);
    # nearest P4 (8, 8) has max delta 16, not in [64, 128]; higher levels not either
    assert positives(idx) == {9: 0}


def center_as_cvpods(points, counts, level, boxes, ranges):
    """DeFCN's Center rule transcribed step by step (its `get_ground_truth`): per level
    `cdist(GT centres, level locations)` and top-1 along the locations, the range check on
    max(l, t, r, b), area = inf outside, then the minimum area over the GTs."""
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    chosen = torch.zeros(len(boxes), len(points), dtype=torch.bool)
    base = 0
    for n in counts:
        _, top = torch.cdist(centres, points[base:base + n]).topk(1, dim=1, largest=False)
        chosen.scatter_(1, base + top, True)
        base += n
    deltas = torch.stack([points[None, :, 0] - boxes[:, None, 0], points[None, :, 1] - boxes[:, None, 1],
                          boxes[:, None, 2] - points[None, :, 0], boxes[:, None, 3] - points[None, :, 1]], -1)
    max_delta = deltas.max(dim=2).values
    r = torch.tensor(ranges, dtype=torch.float32)[level]
    cared = (max_delta >= r[None, :, 0]) & (max_delta <= r[None, :, 1])
    areas = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))[:, None].repeat(1, len(points))
    areas[~cared | ~chosen] = float("inf")
    best, idx = areas.min(dim=0)
    idx[best == float("inf")] = -1
    return idx


def test_center_ties_go_as_cvpods_on_this_machine():
    # GT centres exactly between two locations of a level (in x, in y or both), at y or x offsets
    # that are not exact in binary (10.6 = 12 - 1.4): the distances tie in exact arithmetic and
    # cdist's rounding, which depends on the CPU's kernels and on the operand order and sizes,
    # decides the nearest location. So the expected index is never hard-coded: the rule must pick
    # what DeFCN's own computation picks on the same machine, for every problem.
    g = make_grid([(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)], STRIDES)
    gen = torch.Generator().manual_seed(0)
    ranges = [(-1, 16), (16, 32), (32, 64), (64, 128), (128, float("inf"))]
    for problem in range(300):
        boxes = []
        for _ in range(1 + problem % 6):
            stride = STRIDES[int(torch.randint(0, 3, (1,), generator=gen))]
            cx = stride * float(torch.randint(1, 128 // stride, (1,), generator=gen))  # a midpoint
            cy = stride / 2 + float(torch.randint(0, 128 // stride, (1,), generator=gen)) * stride
            off = float(torch.rand(1, generator=gen)) * stride / 2
            cy += off if problem % 2 else -off
            if problem % 3 == 0:
                cx, cy = cy, cx
            w, h = (float(v) for v in torch.rand(2, generator=gen) * 60 + 2)
            boxes.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
        i = inp(boxes, grid=g)
        expected = center_as_cvpods(g.points, g.counts, g.level, i.gt_boxes, ranges)
        assert torch.equal(assign_center(i, scale_ranges=ranges), expected), problem


def test_center_exact_binary_tie_goes_as_cvpods():
    # centre (40, 12): exactly 4 px from the P3 locations (36, 12) = 12 and (44, 12) = 13, a tie
    # that is exact in binary whatever cdist's kernel; which of the two cvpods' top-1 keeps is
    # torch's, so the rule is compared with the transcription, and one of the two must win
    g = grid64()
    i = inp([[37.0, 9.0, 43.0, 15.0]], grid=g)
    idx = assign_center(i, scale_ranges=FCOS_RANGES)
    assert set(positives(idx)) <= {12, 13} and len(positives(idx)) == 1
    assert torch.equal(idx, center_as_cvpods(g.points, g.counts, g.level, i.gt_boxes, FCOS_RANGES))


# --------------------------------------------------------------------------- POTO


def poto_inputs(boxes, scores, pred_boxes, labels=None):
    i = inp(boxes, labels)
    r = i.grid.points.shape[0]
    i.scores = torch.as_tensor(scores, dtype=torch.float32).reshape(r, -1)
    i.pred_boxes = torch.as_tensor(pred_boxes, dtype=torch.float32).reshape(r, 4)
    return i


def perfect_preds(box):
    g = grid64()
    return torch.tensor(box, dtype=torch.float32).expand(g.points.shape[0], 4).clone()


def test_poto_zero_gt():
    r = grid64().points.shape[0]
    i = poto_inputs([], torch.rand(r, 1), torch.rand(r, 4))
    assert (assign_poto(i) == -1).all() and (assign_poto_argmax(i) == -1).all()


def test_poto_takes_the_best_quality_in_the_prior():
    r = grid64().points.shape[0]
    scores = torch.full((r, 1), 0.1)
    scores[9] = 0.9
    i = poto_inputs([[0, 0, 24, 24]], scores, perfect_preds([0, 0, 24, 24]))
    assert positives(assign_poto(i)) == {9: 0}
    assert positives(assign_poto(i, solver="full")) == {9: 0}
    assert positives(assign_poto_argmax(i)) == {9: 0}


def test_poto_empty_prior_keep_and_drop():
    r = grid64().points.shape[0]
    # a 1-pixel GT between locations: no location strictly inside its (clipped) center box
    i = poto_inputs([[1, 1, 2, 2]], torch.rand(r, 1), torch.rand(r, 4) * 10)
    assert not center_prior(i.grid.points, i.grid.strides, i.gt_boxes, 1.5).any()
    kept = positives(assign_poto(i, empty_prior="keep"))
    assert kept == {0: 0}  # the lowest-index location, as the full solve does
    assert positives(assign_poto(i, solver="full")) == {0: 0}
    assert positives(assign_poto(i, empty_prior="drop")) == {}
    assert positives(assign_poto_argmax(i)) == {}  # argmax: a best value of -1 is background


def test_poto_two_gts_competing_for_one_location():
    r = grid64().points.shape[0]
    a, b = [0, 0, 24, 24], [0, 0, 25, 25]
    scores = torch.full((r, 1), 0.05)
    scores[9] = 0.99  # best for both GTs
    scores[0] = 0.5
    preds = perfect_preds(a)
    i = poto_inputs([a, b], scores, preds)
    pos = positives(assign_poto(i))
    assert sorted(pos.values()) == [0, 1] and len(pos) == 2  # one-to-one: both GTs matched
    assert 9 in pos
    arg = positives(assign_poto_argmax(i))
    assert len(arg) == 1 and 9 in arg  # argmax: one GT loses its only location


def test_poto_quality_formula_and_outside_value():
    r = grid64().points.shape[0]
    i = poto_inputs([[0, 0, 24, 24]], torch.full((r, 1), 0.5), perfect_preds([0, 0, 12, 24]))
    prior = center_prior(i.grid.points, i.grid.strides, i.gt_boxes, 1.5)
    q = poto_quality(i, 0.8, prior, -1.0)
    assert q[0, 9].item() == pytest.approx(0.5 ** 0.2 * 0.5 ** 0.8)
    assert (q[~prior] == -1).all()
    assert (poto_quality(i, 0.8, prior, 0.0)[~prior] == 0).all()


@pytest.mark.parametrize("seed", range(60))
def test_restricted_solve_has_the_full_optimum(seed):
    rng = np.random.default_rng(seed)
    g, r = int(rng.integers(1, 12)), int(rng.integers(20, 200))
    in_prior = torch.from_numpy(rng.random((g, r)) < rng.uniform(0.01, 0.2))
    in_prior[: int(rng.integers(0, g + 1))] = False if rng.random() < 0.3 else in_prior[:1]
    if rng.random() < 0.5:  # GTs competing for the same few locations
        in_prior[:, :] = False
        in_prior[:, : int(rng.integers(1, 3))] = True
    value = torch.from_numpy(rng.random((g, r))).float()
    if rng.random() < 0.3:
        value = (value * 4).round() / 4  # ties
    outside = float(rng.choice([-1.0, 0.0]))
    value = torch.where(in_prior, value, torch.full_like(value, outside))
    full_r, full_c = linear_sum_assignment(value.numpy(), maximize=True)
    rows, cols = solve_restricted(value, in_prior, maximize=True)
    assert len(rows) == g == len(set(cols.tolist()))
    assert value.numpy()[rows, cols].sum() == pytest.approx(value.numpy()[full_r, full_c].sum(), abs=1e-5)


# ------------------------------------------------------------------ other one-to-one


def test_fg_loss_prefers_the_prior_and_matches_every_gt():
    g = grid64()
    r = g.points.shape[0]
    i = inp([[0, 0, 24, 24], [32, 32, 64, 64]], [0, 1])
    i.cls_logits = torch.zeros(r, 2)
    i.pred_ltrb = torch.full((r, 4), 8.0)
    idx = assign_fg_loss(i)
    pos = positives(idx)
    assert sorted(pos.values()) == [0, 1]
    for loc, gt in pos.items():
        assert center_prior(g.points, g.strides, i.gt_boxes, 1.5)[gt, loc]
    assert (assign_fg_loss(inp([]), ) == -1).all()


def test_detr_hungarian_matches_the_predicted_box():
    r = grid64().points.shape[0]
    i = inp([[0, 0, 20, 20], [30, 30, 60, 60]], [0, 0])
    i.cls_logits = torch.zeros(r, 1)
    i.pred_boxes = torch.tensor([[100.0, 100, 110, 110]]).expand(r, 4).clone()
    i.pred_boxes[5] = torch.tensor([0.0, 0, 20, 20])
    i.pred_boxes[40] = torch.tensor([30.0, 30, 60, 60])
    i.image_size = (64, 64)
    assert positives(assign_detr_hungarian(i)) == {5: 0, 40: 1}


def test_max_iou_thresholds_ignore_and_low_quality():
    anchors = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 20], [0, 0, 10, 13], [50, 50, 60, 60.]])
    i = inp([[0, 0, 10, 10], [48, 48, 70, 70]])
    i.anchors = anchors
    idx = assign_max_iou(i)
    # anchor 0: IoU 1 -> GT 0; anchor 1: IoU .5 -> positive; anchor 2: IoU .77 -> positive;
    # anchor 3: IoU 100/484 = .21 < .4 but it is GT 1's best anchor -> positive (low quality)
    assert idx.tolist() == [0, 0, 0, 1]
    j = inp([[0, 0, 10, 10]])
    j.anchors = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 22.], [30, 30, 40, 40]])
    assert assign_max_iou(j).tolist() == [0, -2, -1]  # IoU .45: ignored


# ---------------------------------------------------------------------------- Aux


def test_aux_threshold_and_inside_box():
    r = grid64().points.shape[0]
    i = poto_inputs([[0, 0, 24, 24]], torch.full((r, 1), 0.5), perfect_preds([0, 0, 24, 24]))
    idx = assign_aux(i, topk=9, alpha=0.8)
    pos = positives(idx)
    g = i.grid
    assert pos
    for loc in pos:  # strictly inside the GT
        x, y = g.points[loc].tolist()
        assert 0 < x < 24 and 0 < y < 24


def test_aux_all_zero_quality_makes_every_inside_candidate_positive():
    r = grid64().points.shape[0]
    i = poto_inputs([[0, 0, 24, 24]], torch.zeros(r, 1), perfect_preds([0, 0, 24, 24]))
    pos = positives(assign_aux(i, topk=9, alpha=0.8))
    # threshold mean + std = 0: every candidate (torch.topk's choice among ties) inside is positive
    g, expected, start = i.grid, set(), 0
    for n in g.counts:
        for j in torch.zeros(n).topk(min(9, n)).indices.tolist():
            x, y = g.points[start + j].tolist()
            if 0 < x < 24 and 0 < y < 24:
                expected.add(start + j)
        start += n
    assert set(pos) == expected and expected
    assert (assign_aux(poto_inputs([], torch.zeros(r, 1), torch.zeros(r, 4))) == -1).all()


def test_assigners_never_track_gradients():
    r = grid64().points.shape[0]
    scores = torch.rand(r, 1, requires_grad=True)
    preds = perfect_preds([0, 0, 24, 24]).requires_grad_()
    i = poto_inputs([[0, 0, 24, 24]], scores, preds)
    i.scores, i.pred_boxes = scores, preds
    out = assign_poto(i)
    assert not out.requires_grad and out.dtype == torch.long


def test_date_poto_near_tie_goes_through_the_mmdet_box_roundtrip():
    # two predictions 2e-5 px apart whose raw xyxy boxes have exactly the same float32 IoU with
    # the GT (IoU takes only min, max, -, x and /: the same bits on every CPU), so DeFCN's raw
    # boxes tie and the solver's lowest index (18) wins; back from normalised cxcywh, as DATE's
    # assigner sees them, 19 leads by a few ulps in IoU, far more than a vectorised pow's 1 ulp
    g = grid64()
    r = g.points.shape[0]
    pred = torch.tensor([[0.0, 0, 1, 1]]).repeat(r, 1)
    pred[18] = torch.tensor([9.287493705749512, 9.971630096435547, 40.41671371459961, 44.02312088012695])
    pred[19] = torch.tensor([9.287513732910156, 9.971622467041016, 40.416717529296875, 44.02313232421875])
    i = inp([[10.0, 10.0, 40.0, 44.0]], scores=torch.full((r, 1), 0.5), pred_boxes=pred, image_size=(61, 77))
    iou = pairwise_iou(i.gt_boxes, pred[18:20])
    assert iou[0, 0] == iou[0, 1]
    trip = pairwise_iou(i.gt_boxes, mmdet_roundtrip(pred[18:20], (61, 77)))
    assert trip[0, 1] > trip[0, 0]
    assert positives(assign_poto(i, outside_value=0.0, box_roundtrip=True)) == {19: 0}
    assert positives(assign_poto(i, outside_value=0.0)) == {18: 0}  # DeFCN: the raw boxes
