"""The four model-level details where cvpods/DeFCN decide (each test fails under the old rule):
the per-level candidate cap, the FCOS box-loss normaliser, empty boxes after mapping back, and a
warm-up that the linear scaling rule leaves alone."""

import pytest
import torch

from harness.model.box_ops import ltrb_to_boxes
from harness.model.head import Towers
from harness.model.losses import centerness_target, giou_loss
from harness.model.points import make_grid
from harness.spec.schema import TrainConfig
from harness.train.engine import predict
from harness.train.optim import scaled_schedule
from tests.model import predictor

SIZES = [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]
STRIDES = [8, 16, 32, 64, 128]


def outputs(pred, k):
    torch.manual_seed(0)
    towers = Towers(channels=8, num_convs=1, gn_groups=4)
    cls_f, reg_f = towers([torch.randn(1, 8, h, w) for h, w in SIZES])
    return pred(cls_f, reg_f, towers.scales, STRIDES), make_grid(SIZES, STRIDES)


def test_per_level_cap_is_the_levels_locations_not_its_candidates():
    # 2 classes, every score above the threshold: cvpods keeps min(1000, H*W) per level
    # (86 over the 5 levels), not min(1000, H*W*K) (172)
    pred = predictor(None, prior_prob=0.9)
    out, grid = outputs(pred, 2)
    boxes, scores, labels = pred.candidates(out, grid, 0, score_thresh=0.05, topk=1000)
    assert len(scores) == 64 + 16 + 4 + 1 + 1
    assert len(pred.candidates(out, grid, 0, 0.05, 1000, topk_cap="candidates")[1]) == 2 * 86
    # the kept ones are each level's best: P3's 64 of its 128 are its top 64
    p3 = out["cls"][0, :64].sigmoid().flatten().sort(descending=True).values[:64]
    assert scores[:64].sort(descending=True).values.tolist() == pytest.approx(p3.tolist())


def test_fcos_box_loss_normaliser_is_at_least_one():
    # one positive whose centerness target is 0.2: cvpods divides by max(1, 0.2) = 1, so the
    # loss is 0.2 x GIoU loss; a floor of 1e-6 would divide by 0.2
    pred = predictor(None, num_classes=1, centerness="reg", loss={"box_weighting": "centerness"})
    out, grid = outputs(pred, 1)

    def assign(inp):
        idx = inp.background()
        idx[0] = 0  # location (4, 4) in the box [0, 0, 24, 24]: ltrb (4, 4, 20, 20)
        return idx
    pred.assign = assign
    gt = torch.tensor([[0.0, 0, 24, 24]])
    losses, _ = pred.losses(out, grid, [{"boxes": gt, "labels": torch.tensor([0])}], [(64, 64)])
    ctr = centerness_target(torch.tensor([[4.0, 4, 20, 20]]))
    assert ctr.item() == pytest.approx(0.2)
    per = giou_loss(ltrb_to_boxes(grid.points[:1], out["reg"][0, :1]), gt)
    assert losses["loss_box"].item() == pytest.approx((per * ctr).item(), rel=1e-5)
    mm = predictor(assign, num_classes=1, centerness="reg",
                   loss={"box_weighting": "centerness", "ctr_norm_min": 1e-6})
    mm.load_state_dict(pred.state_dict())
    out2, _ = outputs(mm, 1)
    losses2, _ = mm.losses(out2, grid, [{"boxes": gt, "labels": torch.tensor([0])}], [(64, 64)])
    assert losses2["loss_box"].item() == pytest.approx(per.item(), rel=1e-5)  # mmdet: / 0.2


class _FixedDetections(torch.nn.Module):
    """A model whose detections are given: one inside the image, one that clipping empties."""

    def detect(self, images, image_sizes):
        boxes = torch.tensor([[10.0, 10, 30, 30], [70.0, 5, 90, 20]])  # the second is right of x = 64
        d = (boxes, torch.tensor([0.9, 0.8]), torch.tensor([0, 0]))
        return [{"nms": d, "nms_free": d}]


def test_detections_left_empty_by_clipping_are_dropped():
    batch = {"images": torch.zeros(1, 3, 64, 64), "image_sizes": [(64, 64)], "orig_sizes": [(64, 64)],
             "image_ids": [1]}
    out = predict(_FixedDetections(), [batch], torch.device("cpu"))
    assert [p["boxes"] for p in out["nms_free"]] == [[[10.0, 10.0, 30.0, 30.0]]]
    assert out["nms"][0]["scores"] == pytest.approx([0.9])
    kept = predict(_FixedDetections(), [batch], torch.device("cpu"), drop_empty=False)
    assert kept["nms_free"][0]["boxes"][1] == [64.0, 5.0, 64.0, 20.0]  # mmdet keeps it


def test_linear_scaling_leaves_the_warmup_alone():
    # a schedule written for 16 images run at 8: lr / 2, iterations x 2, warm-up unchanged
    train = TrainConfig(max_iter=90000, ims_per_batch=8, reference_batch=16, base_lr=0.01,
                        steps=[60000, 80000], warmup_iters=1000)
    s = scaled_schedule(train, 0)
    assert (s.base_lr, s.max_iter, s.steps) == (0.005, 180000, (120000, 160000))
    assert s.warmup_iters == 1000
