"""3DMF wiring, losses and their normalisers, postprocess, backbones and weights files."""

import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harness.model.assign.common import AssignInput
from harness.model.backbone import ResNetBackbone, TinyBackbone, WeightsError, load_weights_file
from harness.model.filter3d import MaxFilter3D
from harness.model.fpn import FPN
from harness.model.head import Towers
from harness.model.losses import centerness_target, sigmoid_focal
from harness.model.points import make_grid
from harness.model.postprocess import both
from tests.model import predictor

SIZES = [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]


def feats(c=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, c, h, w, generator=g) for h, w in SIZES]


def test_3dmf_shapes():
    m = MaxFilter3D(channels=8, gn_groups=4)
    out = m(feats())
    assert [tuple(o.shape) for o in out] == [(1, 1, h, w) for h, w in SIZES]


def test_3dmf_max_over_scales_and_space_uses_the_conv_features():
    m = MaxFilter3D(channels=8, gn_groups=4)
    f = feats()
    conv = [m.conv(x) for x in f]
    pooled = m.max_pool(f)
    for lvl in range(5):
        neigh = [conv[k] if k == lvl else F.interpolate(conv[k], size=conv[lvl].shape[-2:], mode="bilinear",
                                                         align_corners=False)
                 for k in range(max(0, lvl - 1), min(4, lvl + 1) + 1)]
        expect = F.max_pool2d(torch.stack(neigh).max(0).values, 3, stride=1, padding=1)
        assert torch.allclose(pooled[lvl], expect, atol=1e-6)


def test_3dmf_equals_max_pool3d_on_the_stack_values_and_gradients():
    """The reference rule (DeFCN): stack the resized levels, max_pool3d (tau+1, k, k), keep the
    level's slice. The separable form must give the same values and gradients."""
    torch.manual_seed(0)
    m = MaxFilter3D(channels=8, gn_groups=4)
    sizes = [(18, 13), (9, 7), (5, 4), (3, 2), (2, 1)]
    f = [torch.randn(2, 8, h, w, requires_grad=True) for h, w in sizes]

    def reference(feats):
        conv = [m.conv(x) for x in feats]
        out = []
        for lvl in range(5):
            lo, hi = max(0, lvl - 1), min(4, lvl + 1)
            stack = torch.stack([conv[k] if k == lvl else F.interpolate(conv[k], size=conv[lvl].shape[-2:],
                                                                        mode="bilinear", align_corners=False)
                                 for k in range(lo, hi + 1)], dim=2)
            out.append(F.max_pool3d(stack, (3, 3, 3), stride=1, padding=(1, 1, 1))[:, :, lvl - lo])
        return out

    ours, ref = m.max_pool(f), reference(f)
    assert all(torch.equal(a, b) for a, b in zip(ours, ref, strict=True))
    weights = [torch.randn_like(a) for a in ours]
    g_ours = torch.autograd.grad(sum((a * w).sum() for a, w in zip(ours, weights, strict=True)), [*f, m.conv.weight])
    g_ref = torch.autograd.grad(sum((b * w).sum() for b, w in zip(ref, weights, strict=True)), [*f, m.conv.weight])
    for a, b in zip(g_ours, g_ref, strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


def test_3dmf_residual_adds_the_tower_feature_then_gn_relu():
    for gn in (True, False):
        m = MaxFilter3D(channels=8, gn_groups=4, norm=gn)
        f = feats()
        pooled = m.max_pool(f)
        for lvl in range(5):
            x = pooled[lvl] + f[lvl]  # residual of the un-convolved feature
            x = F.group_norm(x, 4, m.norm.weight, m.norm.bias) if gn else x
            assert torch.allclose(m(f)[lvl], m.filter(F.relu(x)), atol=1e-6)
        assert isinstance(m.norm, torch.nn.GroupNorm) == gn


def test_focal_loss_values():
    x = torch.tensor([0.0, 2.0])
    t = torch.tensor([1.0, 0.0])
    p = torch.sigmoid(x)
    expected = torch.stack([0.25 * (1 - p[0]) ** 2 * -torch.log(p[0]), 0.75 * p[1] ** 2 * -torch.log(1 - p[1])])
    assert torch.allclose(sigmoid_focal(x, t), expected)


def test_centerness_target():
    assert centerness_target(torch.tensor([[1.0, 2, 3, 2]])).item() == pytest.approx((1 / 3) ** 0.5)


def fixed_assign(mapping):
    def assign(inp: AssignInput):
        out = inp.background()
        for loc, gt in mapping.items():
            out[loc] = gt
        return out
    return assign


def run_losses(pred, mapping_per_image, targets):
    torch.manual_seed(0)
    towers = Towers(channels=8, num_convs=1, gn_groups=4)
    cls_f, reg_f = towers(feats())
    strides = [8, 16, 32, 64, 128]
    out = pred(cls_f, reg_f, towers.scales, strides)
    out = {k: (v.expand(len(targets), *v.shape[1:]) if v is not None else None) for k, v in out.items()}
    grid = make_grid(SIZES, strides)
    calls = iter(mapping_per_image)
    pred.assign = lambda inp: fixed_assign(next(calls))(inp)
    losses, _ = pred.losses(out, grid, targets, [(64, 64)] * len(targets))
    return losses, out, grid


def test_cls_and_box_losses_are_normalised_by_the_batch_positives():
    tgt = [{"boxes": torch.tensor([[0.0, 0, 24, 24]]), "labels": torch.tensor([1])},
           {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]
    pred = predictor(None, loss={"box_weight": 2.0})
    losses, out, grid = run_losses(pred, [{9: 0, 10: 0}, {}], tgt)
    cls_t = torch.zeros_like(out["cls"])
    cls_t[0, 9, 1] = cls_t[0, 10, 1] = 1
    assert losses["loss_cls"].item() == pytest.approx(sigmoid_focal(out["cls"], cls_t).sum().item() / 2, rel=1e-5)
    assert set(losses) == {"loss_cls", "loss_box"}
    # no positives at all: the normaliser is clamped to 1, the box loss is 0
    losses0, out0, _ = run_losses(predictor(None), [{}, {}], [tgt[1], tgt[1]])
    assert losses0["loss_cls"].item() == pytest.approx(sigmoid_focal(out0["cls"], torch.zeros_like(out0["cls"])).sum().item(), rel=1e-5)
    assert losses0["loss_box"].item() == 0.0


def test_centerness_weighted_box_loss_and_ctr_term():
    tgt = [{"boxes": torch.tensor([[0.0, 0, 24, 24]]), "labels": torch.tensor([0])}]
    pred = predictor(None, centerness="reg", loss={"box_weighting": "centerness"})
    losses, out, grid = run_losses(pred, [{9: 0, 0: 0}], tgt)
    assert set(losses) == {"loss_cls", "loss_box", "loss_ctr"}
    pts = grid.points[[0, 9]]
    ltrb = torch.cat([pts - torch.tensor([0.0, 0]), torch.tensor([24.0, 24]) - pts], 1)
    w = centerness_target(ltrb)
    from harness.model.box_ops import ltrb_to_boxes
    from harness.model.losses import giou_loss
    boxes = ltrb_to_boxes(pts, out["reg"][0][[0, 9]])
    per = giou_loss(boxes, torch.tensor([[0.0, 0, 24, 24]]).expand(2, 4))
    assert losses["loss_box"].item() == pytest.approx(((per * w).sum() / w.sum()).item(), rel=1e-5)


def test_nms_and_nms_free_on_the_same_candidates():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 9], [0, 0, 10, 10], [50, 50, 60, 60]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    labels = torch.tensor([0, 0, 1, 0])
    out = both(boxes, scores, labels, nms_thresh=0.6, max_dets=100)
    assert out["nms"][1].tolist() == pytest.approx([0.9, 0.7, 0.6])  # same-class duplicate removed
    assert out["nms_free"][1].tolist() == pytest.approx([0.9, 0.8, 0.7, 0.6])
    capped = both(boxes, scores, labels, nms_thresh=0.6, max_dets=2)
    assert len(capped["nms_free"][0]) == 2 and len(capped["nms"][0]) == 2


def test_tiny_backbone_and_fpn_shapes():
    bb = TinyBackbone(width=8)
    fpn = FPN(in_channels=bb.out_channels, channels=16)
    outs = fpn(bb(torch.randn(1, 3, 128, 96)))
    assert [tuple(o.shape[-2:]) for o in outs] == [(16, 12), (8, 6), (4, 3), (2, 2), (1, 1)]


def test_msra_pkl_weights_are_converted_and_unpickled_safely(tmp_path):
    net = ResNetBackbone(name="resnet18", freeze_at=0)
    blobs = {"conv1_w": np.random.rand(64, 3, 7, 7).astype(np.float32),
             "res_conv1_bn_s": np.full(64, 2.0, np.float32), "res_conv1_bn_b": np.zeros(64, np.float32)}
    assert net.stem[0].weight.shape == (64, 3, 7, 7)
    path = tmp_path / "w.pkl"
    with open(path, "wb") as f:
        pickle.dump({"blobs": blobs}, f)
    state, caffe = load_weights_file(str(path))
    assert caffe and set(state) == {"conv1.weight", "bn1.weight", "bn1.bias"}
    assert torch.equal(state["conv1.weight"], torch.from_numpy(blobs["conv1_w"]))

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump({"blobs": {"x": Evil()}}, f)
    with pytest.raises(WeightsError, match="refusing to unpickle"):
        load_weights_file(str(tmp_path / "evil.pkl"))


def test_resnet_freeze_and_stride_in_1x1(tmp_path):
    net = ResNetBackbone(name="resnet50", freeze_at=2, stride_in_1x1=True)
    assert not any(p.requires_grad for p in net.stem.parameters())
    assert not any(p.requires_grad for p in net.stages[0].parameters())
    assert any(p.requires_grad for p in net.stages[1].parameters())
    assert net.stages[1][0].conv1.stride == (2, 2) and net.stages[1][0].conv2.stride == (1, 1)
    assert [o.shape[1] for o in net(torch.randn(1, 3, 64, 64))] == [512, 1024, 2048]
    # stride_in_1x1 false (FAIR's ResNeXt pkl files, the official FCOS's X-101 configs): the 3x3 strides
    x = ResNetBackbone(name="resnext101_32x8d", freeze_at=2, stride_in_1x1=False)
    first = x.stages[1][0]
    assert first.conv1.stride == (1, 1) and first.conv2.stride == (2, 2) and first.conv2.groups == 32
    tv = tmp_path / "r18.pth"
    import torchvision
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tv)
    ref = torch.load(tv, weights_only=True)
    loaded = ResNetBackbone(name="resnet18", weights=str(tv))
    assert torch.equal(loaded.stages[1][0].conv1.weight, ref["layer2.0.conv1.weight"])
    assert torch.equal(loaded.stem[0].weight, ref["conv1.weight"])


def test_date_3dmf_logit_clamps_the_product_below_1e5():
    # DATE's 3DMF trains focal on inverse_sigmoid(sigmoid(cls) * sigmoid(filter), eps=1e-5):
    # a product below 1e-5 counts as 1e-5 in the loss and the scores; DeFCN's focal on the
    # product uses the product itself
    grid = make_grid(SIZES, [8, 16, 32, 64, 128])
    r = grid.points.shape[0]
    tgt = [{"boxes": torch.zeros(0, 4, dtype=torch.float64), "labels": torch.zeros(0, dtype=torch.long)}]
    results = {}
    for kind in ("logit", "product"):
        pred = predictor(fixed_assign({}), filter="3dmf", filter_score=kind).double()
        cls = torch.full((1, r, 2), -30.0, dtype=torch.float64)
        out = {"cls": cls, "filter": torch.zeros(1, r, dtype=torch.float64),
               "reg": torch.ones(1, r, 4, dtype=torch.float64), "ctr": None}
        losses, _ = pred.losses(out, grid, tgt, [(64, 64)])
        results[kind] = (losses["loss_cls"].item(), pred.scores(out, 0).min().item())
    p = torch.tensor(1e-5, dtype=torch.float64)
    per = 0.75 * p ** 2 * -torch.log1p(-p)  # focal of a negative at probability 1e-5
    loss, score = results["logit"]
    assert loss == pytest.approx(r * 2 * per.item(), rel=1e-4)
    assert score == pytest.approx(1e-5, rel=1e-4)
    loss, score = results["product"]
    assert loss < 1e-30 and score < 1e-12


def test_date_r_anchors_beyond_the_images_own_padded_size_are_left_out():
    # a 64 x 64 batch holding a 24 x 24 image: mmdet pads that image to 32 x 32 only, so its
    # anchors at P3 rows/columns >= 4 (P4 >= 2, P5 >= 1) are invalid: no assignment, no loss
    import functools

    from harness.model.assign.aware import assign_max_iou
    from harness.model.assign.common import IGNORE
    retina = {"octave_base_scale": 4.0, "scales_per_octave": 3, "ratios": [0.5, 1.0, 2.0]}
    assigner = {"name": "max_iou", "pos_iou": 0.5, "neg_iou": 0.4}
    tgt = [{"boxes": torch.tensor([[0.0, 0, 24, 24]]), "labels": torch.tensor([0])}] * 2
    results = {}
    for pad in (32, None):
        pred = predictor(functools.partial(assign_max_iou, pos_iou=0.5, neg_iou=0.4), assigner=assigner,
                         box_coder="anchor_delta", anchors={**retina, "valid_pad": pad})
        torch.manual_seed(0)
        towers = Towers(channels=8, num_convs=1, gn_groups=4)
        cls_f, reg_f = towers([f.expand(2, *f.shape[1:]) for f in feats()])
        out = pred(cls_f, reg_f, towers.scales, [8, 16, 32, 64, 128])
        grid = make_grid(SIZES, [8, 16, 32, 64, 128])
        losses, assigned = pred.losses(out, grid, tgt, [(64, 64), (24, 24)])
        results[pad] = (losses["loss_cls"].item(), assigned)
    _, (big, small) = results[32]
    a = 9
    p3 = small[:64 * a].reshape(8, 8, a)
    assert (p3[4:] == IGNORE).all() and (p3[:, 4:] == IGNORE).all() and (p3[:4, :4] != IGNORE).any()
    p4 = small[64 * a:80 * a].reshape(4, 4, a)
    assert (p4[2:] == IGNORE).all() and (p4[:2, :2] != IGNORE).any()
    assert not (big == IGNORE).all() and torch.equal(big, results[None][1][0])  # full-size image: unchanged
    assert int((small == IGNORE).sum()) > int((results[None][1][1] == IGNORE).sum())
    assert results[32][0] != pytest.approx(results[None][0], rel=1e-6)


def test_weights_arrays_larger_than_the_file_are_refused_before_numpy_allocates_them(tmp_path):
    """A 69-byte pickle asking numpy for a 1 TiB array (and its variants) is one clear error."""
    cases = {
        # _reconstruct(ndarray, (2**40,), b'b'): numpy allocates the shape before any data arrives
        "reconstruct": (b"\x80\x02cnumpy._core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
                        b"\x8a\x06\x00\x00\x00\x00\x00\x01\x85C\x01b\x87R.", "needs more bytes than the file's 69"),
        "objects": (pickle.dumps({"blobs": {"conv1_w": np.array([1, None], dtype=object)}}, protocol=4),
                    "an array of Python objects"),
        "truncated": (pickle.dumps({"blobs": {"conv1_w": np.ones((64, 3, 7, 7), np.float32)}})[:200],
                      "unreadable weights file"),
        "not a mapping": (pickle.dumps([1, 2]), "not a mapping of names to arrays"),
    }
    for name, (raw, message) in cases.items():
        path = tmp_path / f"{name}.pkl"
        path.write_bytes(raw)
        with pytest.raises(WeightsError) as exc:
            load_weights_file(str(path))
        assert message in str(exc.value) and str(path) in str(exc.value) and "\n" not in str(exc.value), name
    garbage = tmp_path / "w.pth"
    garbage.write_bytes(b"PK\x03\x04 not a torch file")
    with pytest.raises(WeightsError, match="unreadable weights file"):
        load_weights_file(str(garbage))
