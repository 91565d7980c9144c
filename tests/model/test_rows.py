"""Every row of the four experiment files builds, trains a step and infers (tiny backbone)."""

import math

import pytest
import torch

from harness.model.build import build_from_config
from harness.spec import expand, load_spec, parse_set
from tests.conftest import EXPERIMENTS

TINY = ["model.backbone.name=tiny", "model.backbone.weights=null", "model.backbone.norm=gn",
        "model.fpn.channels=32", "model.head.gn_groups=8", "model.head.num_convs=2"]


def rows():
    out = []
    for spec in ("coco_ablation", "crowdhuman", "date", "fcos"):
        seen = set()
        for cell in expand(load_spec(EXPERIMENTS / f"{spec}.yaml"), [parse_set(s) for s in TINY]):
            if cell.row not in seen:
                seen.add(cell.row)
                out.append(pytest.param(cell, id=f"{spec}:{cell.row}"))
    return out


def expected_terms(spec_row: str) -> set[str]:
    """The loss terms each published rule has (written out, not derived from the config)."""
    spec, row = spec_row.split(":", 1)
    if row.startswith("DATE"):
        retina = row.split("-")[2] == "R"  # DATE-R50-R...: RetinaNet one-to-many branch
        o2m = {"o2m.loss_cls", "o2m.loss_box"} | (set() if retina else {"o2m.loss_ctr"})
        return {"loss_cls", "loss_box", "loss_l1"} | o2m
    terms = {"loss_cls", "loss_box"}
    if row in ("FCOS", "ATSS") or spec == "fcos":  # every FCOS README row has centerness
        terms.add("loss_ctr")
    if row.endswith("Aux"):
        terms.add("loss_aux")
    return terms


@pytest.mark.parametrize("cell", rows())
def test_row_trains_and_infers(cell, request):
    torch.manual_seed(0)
    model = build_from_config(cell.config)
    k = cell.config.model.num_classes
    images = torch.randn(2, 3, 128, 160)
    targets = [
        {"boxes": torch.tensor([[10.0, 20, 60, 90], [30, 30, 100, 110], [32, 28, 98, 112]]),
         "labels": torch.tensor([0, k - 1, 0])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},  # no boxes
    ]
    sizes = [(128, 160), (120, 150)]
    losses = model(images, sizes, targets)
    assert set(losses) == expected_terms(request.node.callspec.id)
    assert all(math.isfinite(v.item()) for v in losses.values()), losses
    sum(losses.values()).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    model.eval()
    dets = model.detect(images, sizes)
    assert len(dets) == 2
    for d in dets:
        for key in ("nms", "nms_free"):
            boxes, scores, labels = d[key]
            assert boxes.shape[1] == 4 and len(scores) == len(labels) <= cell.config.eval.max_dets
            assert (scores[:-1] >= scores[1:]).all() if key == "nms_free" else True


@pytest.mark.parametrize("row", ["FCOS", "POTO+3DMF+Aux", "DATE-F"])
def test_channels_last_is_the_same_detector_in_another_memory_layout(row):
    # train.channels_last only reorders memory: the losses, the gradients and the detections of
    # the same weights agree with the contiguous model to float rounding
    cell = next(c for c in expand(load_spec(EXPERIMENTS / "quickstart.yaml")) if c.row == row)
    # an untrained head scores about its prior (0.01): keep every detection so that each row's
    # detections are compared, not an empty list
    cfg = cell.config.model_copy(update={"eval": cell.config.eval.model_copy(update={"score_thresh": 0.0})})
    torch.manual_seed(0)
    plain = build_from_config(cfg)
    nhwc = build_from_config(cfg)
    nhwc.load_state_dict(plain.state_dict())
    nhwc.to_channels_last()
    convs = [m.weight for m in nhwc.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    images = torch.rand(2, 3, 128, 160)
    targets = [{"boxes": torch.tensor([[10.0, 20, 60, 90], [30, 30, 100, 110]]), "labels": torch.tensor([0, 0])},
               {"boxes": torch.tensor([[40.0, 10, 70, 100]]), "labels": torch.tensor([0])}]
    sizes = [(128, 160), (120, 150)]
    la, lb = plain(images, sizes, targets), nhwc(images, sizes, targets)
    assert set(la) == set(lb)
    for k in la:
        assert torch.allclose(la[k], lb[k], rtol=1e-4, atol=1e-5), (k, la[k], lb[k])
    sum(la.values()).backward()
    sum(lb.values()).backward()
    for (name, pa), pb in zip(plain.named_parameters(), nhwc.parameters(), strict=True):
        if pa.grad is not None:
            assert torch.allclose(pa.grad, pb.grad, rtol=1e-3, atol=1e-5), name
    plain.eval()
    nhwc.eval()
    for da, db in zip(plain.detect(images, sizes), nhwc.detect(images, sizes), strict=True):
        for key in ("nms", "nms_free"):
            n = min(len(da[key][1]), len(db[key][1]), 20)  # the top detections: no ties decided by rounding
            assert n == 20, (key, len(da[key][1]), len(db[key][1]))
            gaps = (da[key][1][:n][:-1] - da[key][1][:n][1:]).min()
            assert (da[key][1][:n] - db[key][1][:n]).abs().max() < gaps / 10  # the order is not a rounding's
            assert torch.allclose(da[key][1][:n], db[key][1][:n], atol=1e-5)
            assert torch.allclose(da[key][0][:n], db[key][0][:n], atol=1e-3)


def test_row_fingerprints_script_compares_the_rows_it_fingerprints(tmp_path, capsys):
    # bench/row_fingerprints.py is how a refactoring shows every row bit-identical: a rerun of
    # the same code matches, and one changed digest is found and fails the comparison
    import importlib.util
    import json

    from tests.conftest import ROOT

    loaded = importlib.util.spec_from_file_location("row_fingerprints", ROOT / "bench" / "row_fingerprints.py")
    script = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(script)
    out = tmp_path / "prints.json"
    assert script.main(["--specs", "quickstart", "--out", str(out)]) == 0
    prints = json.loads(out.read_text())
    assert len(prints) >= 4 and all({"grads", "detect.nms", "detect.nms_free"} <= set(p) for p in prints.values())
    assert script.main(["--specs", "quickstart", "--compare", str(out)]) == 0
    first = sorted(prints)[0]
    prints[first]["grads"] = "0" * 16
    out.write_text(json.dumps(prints))
    assert script.main(["--specs", "quickstart", "--compare", str(out)]) == 1
    assert f"DIFFERENT {first}" in capsys.readouterr().out
