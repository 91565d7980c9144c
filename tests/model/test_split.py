"""The Predictor's parts: box coders, anchors, and a criterion chosen once (no string dispatch
while training)."""

import inspect

import torch

from harness.model import head
from harness.model.anchors import RetinaAnchors, SquareAnchors, square_anchors
from harness.model.coders import BOX_CODERS
from harness.model.points import make_grid


def test_no_string_dispatch_in_forward_or_losses():
    for fn in (head.Predictor.forward, head.Predictor.losses, head.Predictor.assign_image):
        src = inspect.getsource(fn)
        assert "box_coder" not in src and "==" not in src and " in (" not in src, fn.__name__


def test_coders_round_trip_and_activations():
    pts = torch.tensor([[10.0, 10.0]])
    ltrb = torch.tensor([[2.0, 3.0, 4.0, 5.0]])
    assert BOX_CODERS["ltrb_relu"].decode(ltrb, pts, None).tolist() == [[8.0, 7.0, 14.0, 15.0]]
    assert BOX_CODERS["ltrb_relu"].activate(torch.tensor([-1.0, 2.0]), 8).tolist() == [0.0, 16.0]
    assert BOX_CODERS["ltrb_clamp"].activate(torch.tensor([-1.0, 2.0]), 8).tolist() == [0.0, 16.0]
    assert BOX_CODERS["ltrb_exp"].activate(torch.tensor([0.0]), 8).tolist() == [1.0]
    delta = BOX_CODERS["anchor_delta"]
    anchors = torch.tensor([[0.0, 0.0, 16.0, 16.0]])
    boxes = torch.tensor([[2.0, 1.0, 20.0, 12.0]])
    assert torch.allclose(delta.decode(delta.encode(anchors, boxes), pts, anchors), boxes, atol=1e-5)
    assert delta.ltrb(boxes) is None and BOX_CODERS["ltrb_relu"].ltrb(ltrb) is ltrb


def test_anchor_generators():
    g = make_grid([(2, 2), (1, 1)], [8, 16])
    sq = SquareAnchors(4.0)
    assert torch.equal(sq.boxes(g), square_anchors(g, 4.0)) and sq.valid(g, (8, 8)) is None
    ra = RetinaAnchors(4.0, 3, (0.5, 1.0, 2.0), valid_pad=8)
    assert ra.per_location == 9 and ra.boxes(g).shape == (5 * 9, 4)
    # an 8 x 8 image in a 16 x 16 batch: at stride 8 only location (0, 0) is valid, at 16 it is
    v = ra.valid(g, (8, 8)).reshape(5, 9)
    assert v[:, 0].tolist() == [True, False, False, False, True] and (v == v[:, :1]).all()


def test_the_predictor_receives_its_parts_built_and_keeps_its_state_dict_names():
    from harness.model.anchors import RetinaAnchors
    from harness.model.filter3d import MaxFilter3D
    from tests.model import predictor

    pred = predictor(None, centerness="cls", filter="3dmf", filter_score="logit", loss={"l1_weight": 5.0})
    assert pred.coder is BOX_CODERS["ltrb_relu"] and pred.anchor_gen is None and pred.num_anchors == 1
    assert isinstance(pred.filter, MaxFilter3D) and pred.filter_logit and not pred.ctr_on_reg
    assert list(pred.criterion.terms) == ["loss_cls", "loss_box", "loss_ctr", "loss_l1"]
    # checkpoints load by these names, in this order: output convs, then the 3DMF
    assert [k for k in pred.state_dict()] == [
        "cls_score.weight", "cls_score.bias", "box_pred.weight", "box_pred.bias", "ctr_pred.weight", "ctr_pred.bias",
        "filter.conv.weight", "filter.conv.bias", "filter.norm.weight", "filter.norm.bias", "filter.filter.weight",
        "filter.filter.bias"]
    retina = predictor(None, assigner={"name": "max_iou"}, box_coder="anchor_delta", anchors={})
    assert isinstance(retina.anchor_gen, RetinaAnchors) and retina.num_anchors == 9 and retina.filter is None
    assert retina.cls_score.out_channels == 2 * 9 and list(retina.criterion.terms) == ["loss_cls", "loss_box"]
