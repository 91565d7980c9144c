"""`data.resize: letterbox`: parity with the unofficial FCOS's square resize (liangheming/fcosv1,
`RandScaleToMax.make_border` in utils/augmentations.py, inverted in eval.py), and the way back."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from harness.data.build import eval_dataset, train_dataset
from harness.data.loader import Collator
from harness.data.records import load_coco
from harness.data.transforms import (
    LETTERBOX_PAD,
    EvalTransform,
    Placement,
    TrainTransform,
    letterbox,
    letterbox_shape,
    to_original,
)
from harness.spec.schema import DataConfig
from harness.train.engine import predict


def original_rule(h: int, w: int, size: int):
    """The original's geometry, transcribed: r = min(size / h, size / w), the scaled sides by
    Python's round, half the padding on each side with the odd pixel at the bottom / right."""
    r = min(size / h, size / w)
    new_w, new_h = int(round(w * r)), int(round(h * r))
    dw, dh = (size - new_w) / 2, (size - new_h) / 2
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    return r, new_w, new_h, left, top, right, bottom


def original_boxes(boxes, r, left, top):
    """`boxes * r`, then x + left and y + top (no clipping)."""
    return [[x1 * r + left, y1 * r + top, x2 * r + left, y2 * r + top] for x1, y1, x2, y2 in boxes]


# (width, height, size): portrait, landscape, square, tiny, odd padding, a long side already at size
SHAPES = [(480, 640, 640), (640, 427, 640), (500, 500, 640), (7, 3, 640), (333, 500, 640),
          (640, 201, 640), (1000, 333, 512), (2, 2, 64)]


def boxes_in(w: int, h: int) -> np.ndarray:
    return np.array([[0, 0, w, h], [w * 0.25, h * 0.1, w * 0.5, h * 0.9], [w - 1.5, h - 1.25, w, h]],
                    dtype=np.float32)


@pytest.mark.parametrize("w, h, size", SHAPES)
def test_geometry_content_and_boxes_follow_the_original(w, h, size):
    r, new_w, new_h, left, top, right, bottom = original_rule(h, w, size)
    assert left + new_w + right == size and top + new_h + bottom == size
    got_h, got_w, p = letterbox_shape(h, w, size)
    assert (got_w, got_h, p.left, p.top) == (new_w, new_h, left, top) and p.scale == r
    colour = (200, 40, 7)
    img, boxes = letterbox(Image.new("RGB", (w, h), colour), boxes_in(w, h), size)
    assert img.size == (size, size)
    arr = np.asarray(img)
    content = np.zeros((size, size), bool)
    content[top:top + new_h, left:left + new_w] = True
    assert (arr[content] == colour).all()  # a flat image stays flat, placed at (left, top)
    assert (arr[~content] == LETTERBOX_PAD).all()
    np.testing.assert_allclose(boxes, original_boxes(boxes_in(w, h).tolist(), r, left, top), rtol=0, atol=1e-4)


@pytest.mark.parametrize("w, h, size", SHAPES)
def test_mapped_back_boxes_are_the_original_boxes(w, h, size):
    gt = boxes_in(w, h)
    tf = EvalTransform(800, size, "torchvision_rgb", resize="letterbox")
    tensor, boxes, _ = tf(Image.new("RGB", (w, h)), gt, np.zeros(len(gt), np.int64))
    assert tuple(tensor.shape) == (3, size, size)
    placement = tf.placement((w, h))
    assert placement == letterbox_shape(h, w, size)[2]
    back = to_original(torch.as_tensor(boxes), (size, size), (w, h), placement)
    np.testing.assert_allclose(back.numpy(), gt, rtol=0, atol=1e-4)
    # the original's eval.py: (x - left) / r, clamped to the image
    r, left, top = placement.scale, placement.left, placement.top
    pred = torch.tensor([[left - 5.0, top + 2.0, left + 30.0, size + 9.0]])
    expect = [max(0.0, -5 / r), 2 / r, min(float(w), 30 / r), min(float(h), (size + 9.0 - top) / r)]
    np.testing.assert_allclose(to_original(pred, (size, size), (w, h), placement)[0].numpy(), expect, rtol=1e-6)


def test_without_a_placement_the_shortest_edge_mapping_is_unchanged():
    pred = torch.tensor([[10.0, 20.0, 150.0, 90.0]])
    assert to_original(pred, (100, 200), (100, 50)).tolist() == to_original(pred, (100, 200), (100, 50), None).tolist()
    assert EvalTransform(32, 64, "torchvision_rgb").placement((100, 50)) is None


def test_the_resize_is_opencv_linear_without_antialiasing():
    # a 4x downscale samples between source pixels 4k+1 and 4k+2 (cv2 INTER_LINEAR): a pattern
    # lit only at 4k+3 vanishes; PIL's antialiased BILINEAR would blur it in
    row = np.zeros((16, 64, 3), np.uint8)
    row[:, 3::4] = 255
    img, _ = letterbox(Image.fromarray(row), np.zeros((0, 4), np.float32), 16)
    assert img.size == (16, 16)
    arr = np.asarray(img)
    assert (arr[6:10] == 0).all()  # content rows 6..9 (4 high, centred), all black
    assert (arr[:6] == LETTERBOX_PAD).all() and (arr[10:] == LETTERBOX_PAD).all()
    # a 2x downscale averages neighbours, rounded like cv2's uint8 result
    two = np.zeros((2, 4, 3), np.uint8)
    two[:, 1::2] = 255
    img, _ = letterbox(Image.fromarray(two), np.zeros((0, 4), np.float32), 2)
    assert (np.asarray(img)[0] == 128).all()


def test_training_letterbox_then_flip_over_the_square():
    w, h, size = 50, 20, 64
    gt = np.array([[0, 0, 10, 20]], np.float32)
    r, _, _, left, top, _, _ = original_rule(h, w, size)
    tf = TrainTransform((size,), size, 1.0, "torchvision_rgb", resize="letterbox")
    tensor, boxes, labels = tf(Image.new("RGB", (w, h)), gt, np.array([0]), np.random.default_rng(0))
    assert tuple(tensor.shape) == (3, size, size) and labels.tolist() == [0]
    x1, y1, x2, y2 = original_boxes(gt.tolist(), r, left, top)[0]
    # the original's LRFlip flips the padded square: x -> size - x
    np.testing.assert_allclose(boxes, [[size - x2, y1, size - x1, y2]], atol=1e-4)
    # the padding is about the mean colour: about 0 once normalised
    assert tensor[:, 0, 0].abs().max() < 0.02
    assert tf.placement((w, h)) is None


def test_schema_needs_the_size_with_letterbox_and_only_then():
    synth = {"name": "synthetic", "synthetic": {"num_train": 1, "num_val": 1}}
    with pytest.raises(ValidationError, match="resize 'letterbox' needs letterbox_size"):
        DataConfig.model_validate({**synth, "resize": "letterbox"})
    with pytest.raises(ValidationError, match="letterbox_size is only used with resize 'letterbox'"):
        DataConfig.model_validate({**synth, "letterbox_size": 640})
    with pytest.raises(ValidationError, match="greater than or equal to 32"):
        DataConfig.model_validate({**synth, "resize": "letterbox", "letterbox_size": 16})
    assert DataConfig.model_validate(synth).resize == "shortest_edge"


class _FixedDetections(torch.nn.Module):
    """Detections given in input pixels: the box the letterbox made of GT [8, 4, 40, 20]."""

    def __init__(self, box):
        super().__init__()
        self.box = box

    def detect(self, images, image_sizes):
        d = (torch.tensor([self.box]), torch.tensor([0.9]), torch.tensor([0]))
        return [{"nms": d, "nms_free": d} for _ in image_sizes]


def test_evaluation_maps_letterboxed_predictions_to_the_original_image(tmp_path):
    (tmp_path / "img").mkdir()
    Image.new("RGB", (48, 30)).save(tmp_path / "img" / "a.png")
    gt = {"images": [{"id": 3, "file_name": "a.png", "width": 48, "height": 30}],
          "categories": [{"id": 1, "name": "one"}],
          "annotations": [{"id": 1, "image_id": 3, "category_id": 1, "bbox": [8, 4, 32, 16], "iscrowd": 0,
                           "area": 512}]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    records, _ = load_coco(tmp_path / "gt.json", tmp_path / "img")
    cfg = DataConfig.model_validate({"name": "coco", "train": {"images": "img", "annotations": "gt.json"},
                                     "val": {"images": "img", "annotations": "gt.json"},
                                     "resize": "letterbox", "letterbox_size": 64})
    item = eval_dataset(cfg, records, "torchvision_rgb")[0]
    assert item["input_size"] == (64, 64) and item["placement"] == Placement(64 / 48, 0, 12)
    assert train_dataset(cfg, records, "torchvision_rgb")[(0, 1)]["input_size"] == (64, 64)
    batch = Collator(32)([item])
    out = predict(_FixedDetections(item["boxes"][0].tolist()), [batch], torch.device("cpu"))
    np.testing.assert_allclose(out["nms"][0]["boxes"], [[8, 4, 40, 20]], atol=1e-4)
