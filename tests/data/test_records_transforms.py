"""COCO / CrowdHuman records, transforms and loaders."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from harness.data.build import expand_path
from harness.data.loader import DetectionDataset, TrainingSampler, train_loader
from harness.data.records import load_coco, load_crowdhuman
from harness.data.transforms import (
    EvalTransform,
    TrainTransform,
    hflip,
    resize,
    resize_shape,
    to_original,
)
from harness.spec.errors import DataError


def make_images(folder, names, size=(64, 48)):
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        Image.new("RGB", size, (10, 20, 30)).save(folder / n)


def test_coco_records(tmp_path):
    make_images(tmp_path / "img", ["a.png", "b.png"])
    gt = {"images": [{"id": 7, "file_name": "a.png", "width": 64, "height": 48},
                     {"id": 9, "file_name": "b.png", "width": 64, "height": 48}],
          "categories": [{"id": 5, "name": "five"}, {"id": 2, "name": "two"}],
          "annotations": [
              {"id": 1, "image_id": 7, "category_id": 5, "bbox": [1, 2, 10, 20], "iscrowd": 0, "area": 200},
              {"id": 2, "image_id": 7, "category_id": 2, "bbox": [5, 5, 5, 5], "iscrowd": 1, "area": 25},
              {"id": 3, "image_id": 7, "category_id": 2, "bbox": [0, 0, 4, 4], "iscrowd": 0, "area": 16}]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    records, info = load_coco(tmp_path / "gt.json", tmp_path / "img")
    assert [r.image_id for r in records] == [7, 9]  # the image without boxes is kept
    assert info.label_to_category == [2, 5] and info.class_names == ["two", "five"]
    a = records[0]
    assert a.boxes.tolist() == [[1, 2, 11, 22], [0, 0, 4, 4]] and a.labels.tolist() == [1, 0]
    assert a.ignore.tolist() == [[5, 5, 10, 10]]  # iscrowd: not a target
    assert a.size == (64, 48)


def test_mmdet_gt_filter_drops_sub_pixel_and_outside_boxes(tmp_path):
    # DATE's mmdet CocoDataset: a 0.5 px wide box, a box outside the image and one with
    # area 0 are dropped (crowd boxes too); detectron2/cvpods keep any w, h > 0
    make_images(tmp_path / "img", ["a.png"])
    gt = {"images": [{"id": 7, "file_name": "a.png", "width": 64, "height": 48}],
          "categories": [{"id": 1, "name": "one"}],
          "annotations": [
              {"id": 1, "image_id": 7, "category_id": 1, "bbox": [1, 2, 10, 20], "iscrowd": 0, "area": 200},
              {"id": 2, "image_id": 7, "category_id": 1, "bbox": [3, 3, 0.5, 8], "iscrowd": 0, "area": 4},
              {"id": 3, "image_id": 7, "category_id": 1, "bbox": [70, 3, 5, 8], "iscrowd": 0, "area": 40},
              {"id": 4, "image_id": 7, "category_id": 1, "bbox": [3, 3, 5, 8], "iscrowd": 0, "area": 0},
              {"id": 5, "image_id": 7, "category_id": 1, "bbox": [9, 9, 5, 0.9], "iscrowd": 1, "area": 4}]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (kept,), _ = load_coco(tmp_path / "gt.json", tmp_path / "img")
    assert len(kept.boxes) == 4 and len(kept.ignore) == 1
    (mm,), _ = load_coco(tmp_path / "gt.json", tmp_path / "img", gt_filter="mmdet")
    assert mm.boxes.tolist() == [[1, 2, 11, 22]] and len(mm.ignore) == 0
    lines = [{"ID": "x", "width": 64, "height": 48, "gtboxes": [
        {"tag": "person", "fbox": [1, 1, 10, 30]}, {"tag": "person", "fbox": [20, 20, 0.5, 10]}]}]
    (tmp_path / "a.odgt").write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert len(load_crowdhuman(tmp_path / "a.odgt", tmp_path)[0][0].boxes) == 2
    assert load_crowdhuman(tmp_path / "a.odgt", tmp_path, gt_filter="mmdet")[0][0].boxes.tolist() == [[1, 1, 11, 31]]


def test_crowdhuman_records_and_lazy_sizes(tmp_path):
    make_images(tmp_path / "Images", ["x.jpg"], size=(80, 60))
    lines = [{"ID": "x", "gtboxes": [
        {"tag": "person", "fbox": [1, 1, 10, 30]},
        {"tag": "mask", "fbox": [20, 20, 10, 10]},
        {"tag": "person", "fbox": [40, 5, 10, 30], "extra": {"ignore": 1}}]}]
    (tmp_path / "a.odgt").write_text("".join(json.dumps(x) + "\n" for x in lines))
    records, info = load_crowdhuman(tmp_path / "a.odgt", tmp_path / "Images")
    (r,) = records
    assert r.boxes.tolist() == [[1, 1, 11, 31]] and r.labels.tolist() == [0]
    assert len(r.ignore) == 2
    assert r._width is None and r.size == (80, 60)  # read from the JPEG header on demand
    assert info.kind == "crowdhuman" and info.class_names == ["person"]


def test_malformed_annotation_names_file_and_line(tmp_path):
    (tmp_path / "a.odgt").write_text('{"ID": "x", "gtboxes": []}\nnot json\n')
    with pytest.raises(DataError, match=r"a.odgt:2: malformed JSON"):
        load_crowdhuman(tmp_path / "a.odgt", tmp_path)


def test_missing_image_file(tmp_path):
    ds = DetectionDataset(load_coco_single(tmp_path), EvalTransform(32, 64, "torchvision_rgb"))
    with pytest.raises(DataError, match="missing image file"):
        ds[0]


def load_coco_single(tmp_path):
    gt = {"images": [{"id": 1, "file_name": "gone.png", "width": 10, "height": 10}],
          "categories": [{"id": 1, "name": "a"}], "annotations": []}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    return load_coco(tmp_path / "gt.json", tmp_path)[0]


@pytest.mark.parametrize("h, w, short, cap, expected", [
    (480, 640, 800, 1333, (800, 1067)),
    (100, 1000, 800, 1333, (133, 1333)),
    (640, 480, 800, 1333, (1067, 800)),
    (200, 200, 160, 320, (160, 160)),
])
def test_resize_shape(h, w, short, cap, expected):
    assert resize_shape(h, w, short, cap) == expected


def test_flip_and_resize_move_boxes():
    img = Image.new("RGB", (100, 50))
    boxes = np.array([[10, 5, 30, 25]], dtype=np.float32)
    out, fb = hflip(img, boxes)
    assert fb.tolist() == [[70, 5, 90, 25]]
    out, rb = resize(img, boxes, 100, 1000)
    assert out.size == (200, 100) and rb.tolist() == [[20, 10, 60, 50]]


def test_to_original_inverts_resize_and_clips():
    pred = torch.tensor([[20.0, 10, 60, 50], [-5, -5, 300, 300]])
    back = to_original(pred, (100, 200), (100, 50))
    assert back.tolist() == [[10, 5, 30, 25], [0, 0, 100, 50]]


def test_normalisation_formats():
    img = Image.new("RGB", (4, 4), (255, 0, 0))
    caffe = EvalTransform(4, 4, "caffe_bgr")(img, np.zeros((0, 4)), np.zeros(0))[0]
    assert caffe[:, 0, 0].tolist() == pytest.approx([-103.53, -116.28, 255 - 123.675])
    tv = EvalTransform(4, 4, "torchvision_rgb")(img, np.zeros((0, 4)), np.zeros(0))[0]
    assert tv[0, 0, 0].item() == pytest.approx((1 - 0.485) / 0.229, rel=1e-5)


def test_sampler_is_deterministic_sharded_and_resumable():
    one = list(zip(range(40), TrainingSampler(10, seed=3), strict=False))
    one = [x for _, x in one]
    assert one == [x for _, x in zip(range(40), TrainingSampler(10, seed=3), strict=False)]
    r0 = [x for _, x in zip(range(20), TrainingSampler(10, seed=3, rank=0, world_size=2), strict=False)]
    r1 = [x for _, x in zip(range(20), TrainingSampler(10, seed=3, rank=1, world_size=2), strict=False)]
    assert sorted(r0[:2] + r1[:2]) == sorted(one[:4])  # one iteration: 2 x 2 images == 1 x 4
    resumed = [x for _, x in zip(range(10), TrainingSampler(10, seed=3, start=6), strict=False)]
    assert resumed == one[6:16]
    assert {i for i, _ in one[:10]} == set(range(10))  # an epoch visits every image once


def test_train_loader_batches(tmp_path):
    make_images(tmp_path / "img", [f"{i}.png" for i in range(5)], size=(70, 50))
    gt = {"images": [{"id": i, "file_name": f"{i}.png", "width": 70, "height": 50} for i in range(5)],
          "categories": [{"id": 1, "name": "a"}],
          "annotations": [{"id": i + 1, "image_id": i, "category_id": 1, "bbox": [5, 5, 20, 20],
                           "iscrowd": 0, "area": 400} for i in range(5)]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    records, _ = load_coco(tmp_path / "gt.json", tmp_path / "img")
    ds = DetectionDataset(records, TrainTransform((40, 48), 100, 0.5, "torchvision_rgb"))
    batch = next(iter(train_loader(ds, 2, seed=0)))
    assert batch["images"].shape[0] == 2 and batch["images"].shape[2] % 32 == 0
    assert all(t["boxes"].shape == (1, 4) for t in batch["targets"])
    again = next(iter(train_loader(ds, 2, seed=0, num_workers=1)))
    assert torch.equal(batch["images"], again["images"])  # workers do not change the data


def test_expand_path(monkeypatch):
    monkeypatch.setenv("HX_ROOT", "/data/x")
    assert expand_path("${HX_ROOT}/a") == "/data/x/a"
    monkeypatch.delenv("HX_ROOT")
    assert expand_path("${HX_ROOT:-datasets/x}/a") == "datasets/x/a"
    with pytest.raises(DataError, match="HX_ROOT is not set"):
        expand_path("${HX_ROOT}")
