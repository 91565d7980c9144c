"""The synthetic dataset: deterministic bytes, real crowding, sizes over the FPN levels."""

import hashlib
import json

import numpy as np

from harness.data.synthetic import _iou, ensure_dataset, write_split


def digest(folder):
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.name.encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def boxes_per_image(coco):
    out = {}
    for a in coco["annotations"]:
        x, y, w, h = a["bbox"]
        out.setdefault(a["image_id"], []).append((x, y, x + w, y + h))
    return out


def max_pair_iou(boxes):
    return max((_iou(a, b) for i, a in enumerate(boxes) for b in boxes[:i]), default=0.0)


def test_same_seed_same_bytes(tmp_path):
    write_split(tmp_path / "a", "train", 12, seed=3)
    write_split(tmp_path / "b", "train", 12, seed=3)
    write_split(tmp_path / "c", "train", 12, seed=4)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert digest(tmp_path / "a") != digest(tmp_path / "c")


def test_an_image_does_not_depend_on_the_count(tmp_path):
    write_split(tmp_path / "a", "train", 3, seed=0)
    write_split(tmp_path / "b", "train", 8, seed=0)
    assert (tmp_path / "a/train/000002.png").read_bytes() == (tmp_path / "b/train/000002.png").read_bytes()


def test_crowd_levels(tmp_path):
    high = json.loads(write_split(tmp_path / "h", "train", 30, crowd="high").read_text())
    none = json.loads(write_split(tmp_path / "n", "train", 30, crowd="none").read_text())
    high_ious = [max_pair_iou(b) for b in boxes_per_image(high).values()]
    none_ious = [max_pair_iou(b) for b in boxes_per_image(none).values()]
    assert sum(i > 0.5 for i in high_ious) >= 20  # most crowded images have an IoU > 0.5 pair
    assert max(none_ious) < 0.1


def test_sizes_spread_over_fpn_levels_and_all_classes(tmp_path):
    coco = json.loads(write_split(tmp_path, "train", 60).read_text())
    sides = np.array([max(a["bbox"][2], a["bbox"][3]) for a in coco["annotations"]])
    assert (sides < 64).any() and ((sides >= 64) & (sides < 128)).any() and (sides >= 128).any()
    assert {a["category_id"] for a in coco["annotations"]} == set(range(1, 11))
    assert all(128 <= im["width"] <= 320 and 128 <= im["height"] <= 320 for im in coco["images"])


def test_odgt_with_ignore_regions(tmp_path):
    lines = [json.loads(x) for x in write_split(tmp_path, "val", 20, fmt="odgt", ignore_regions=True).read_text().splitlines()]
    tags = [b["tag"] for rec in lines for b in rec["gtboxes"]]
    assert "mask" in tags and "person" in tags
    assert all("width" in rec and "height" in rec for rec in lines)


def test_ensure_dataset_generates_once(tmp_path):
    kw = dict(num_train=4, num_val=2, seed=0, crowd="low", fmt="coco", min_size=128, max_size=160,
              ignore_regions=False)
    first = ensure_dataset(tmp_path, **kw)
    stamp = (first / "train.json").stat().st_mtime_ns
    again = ensure_dataset(tmp_path, **kw)
    assert again == first and (first / "train.json").stat().st_mtime_ns == stamp
    assert not [p for p in first.parent.iterdir() if p.name.startswith(".tmp")]


def test_cli_synth(run_cli, tmp_path):
    code, out, err = run_cli("data", "synth", "--out", tmp_path, "--images", 8, "--format", "odgt")
    assert code == 0, err
    assert (tmp_path / "train.odgt").exists() and len(list((tmp_path / "val").glob("*.png"))) == 2


def test_cards_are_upright_and_never_hidden(tmp_path):
    from harness.data.synthetic import _place, _visible_fractions

    rng = np.random.default_rng(0)
    for _ in range(60):
        w, h = (int(v) for v in rng.integers(96, 161, 2))
        boxes = _place(rng, w, h, "high")
        assert 1 <= len(boxes) <= 9
        # drawn back to front: every card keeps at least 15 % of its area visible
        assert min(_visible_fractions(boxes, w, h)) >= 0.15
        for x1, y1, x2, y2 in boxes:
            assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
            assert (y2 - y1) / (x2 - x1) <= 1.7 + 1e-6  # upright (clipped only by the image)


def test_visible_fractions_by_hand():
    from harness.data.synthetic import _visible_fractions

    back, front = (0, 0, 10, 10), (5, 0, 15, 10)
    assert _visible_fractions([back, front], 20, 20) == [0.5, 1.0]
    assert _visible_fractions([front, back], 20, 20) == [0.5, 1.0]
    assert _visible_fractions([back, (0, 0, 10, 10)], 20, 20) == [0.0, 1.0]
