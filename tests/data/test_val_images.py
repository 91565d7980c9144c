"""`data.val_images`: a declared subset of the val split, for evaluation only."""

import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from harness.data.build import load_datasets
from harness.data.records import load_coco, load_crowdhuman
from harness.data.synthetic import write_split
from harness.evaluation.kinds import evaluator
from harness.spec import expand, load_spec, parse_set
from harness.spec.errors import DataError, SpecError
from harness.spec.matrix import hashed_config, run_key
from harness.spec.schema import DataConfig
from tests.conftest import MINI_SPEC
from tests.data.test_records_transforms import make_images

SYNTH = {"num_train": 1, "num_val": 5, "min_size": 64, "max_size": 96, "seed": 3}


# ------------------------------------------------------------------ schema and run keys


def test_run_key_unchanged_without_val_images_and_new_with_them(mini_spec):
    spec = load_spec(mini_spec(MINI_SPEC.replace("num_val: 2", "num_val: 1200")))
    plain = expand(spec)
    assert "val_images" not in hashed_config(plain[0].config)["data"]  # keyless at null
    subset = expand(spec, [parse_set("data.val_images=[400,800]")])
    assert subset[0].config.data.val_images == (400, 800)
    assert subset[0].config.model_dump(mode="json")["data"]["val_images"] == [400, 800]
    assert hashed_config(subset[0].config)["data"]["val_images"] == [400, 800]
    assert [c.run_key for c in plain] != [c.run_key for c in subset]
    other = expand(spec, [parse_set("data.val_images=[800,1200]")])
    assert {c.run_key for c in other}.isdisjoint(c.run_key for c in subset)
    # a YAML list in the spec file is the same setting as --set
    in_file = load_spec(mini_spec(MINI_SPEC.replace("num_val: 2}", "num_val: 1200}\n    val_images: [400, 800]")))
    assert [c.run_key for c in expand(in_file)] == [c.run_key for c in subset]
    assert run_key(plain[0].config) == plain[0].run_key


def data_config(**kw):
    return DataConfig.model_validate({"name": "synthetic", "synthetic": SYNTH, **kw})


@pytest.mark.parametrize("value, message", [
    ([3, 3], r"\[3, 3\].*0 <= start < stop"),
    ([4, 2], r"\[4, 2\].*0 <= start < stop"),
    ([-1, 2], r"\[-1, 2\].*0 <= start < stop"),
    ([2, 6], r"\[2, 6\].*num_val 5"),
    ([1], r"expected \[start, stop\], got \[1\]"),
])
def test_schema_rejects_bad_ranges(value, message):
    with pytest.raises(ValidationError, match=message) as exc:
        data_config(val_images=value)
    assert [e["loc"] for e in exc.value.errors()] == [("val_images",)]
    assert data_config(val_images=[0, 5]).val_images == (0, 5)


def test_a_bad_range_names_the_override(mini_spec):
    with pytest.raises(SpecError, match=r"data\.val_images.*num_val 2"):
        expand(load_spec(mini_spec()), [parse_set("data.val_images=[0,3]")])


# ------------------------------------------------------------------ synthetic


@pytest.mark.parametrize("fmt", ["coco", "odgt"])
def test_synthetic_subset_is_those_images_of_the_full_generation(tmp_path, fmt):
    ext, loader = (".json", load_coco) if fmt == "coco" else (".odgt", load_crowdhuman)
    write_split(tmp_path / "full", "val", 5, seed=3, fmt=fmt, min_size=64, max_size=96)
    full, full_info = loader(tmp_path / "full" / f"val{ext}", tmp_path / "full" / "val")
    cfg = data_config(synthetic={**SYNTH, "format": fmt}, val_images=[2, 5])
    data = load_datasets(cfg, tmp_path / "cache")
    assert len(data.val) == 3 and len(data.info.gt if fmt == "odgt" else data.info.gt["images"]) == 3
    folder = next((tmp_path / "cache" / "synthetic").iterdir())
    assert folder.name.endswith("-val2-5")
    assert sorted(p.name for p in (folder / "val").iterdir()) == ["000002.png", "000003.png", "000004.png"]
    for sub, ref in zip(data.val, full[2:5], strict=True):
        assert sub.image_id == ref.image_id  # COCO id i + 1, odgt ID '00000i'
        assert Path(sub.file).name == Path(ref.file).name  # {i:06d}.png
        with open(sub.file, "rb") as a, open(ref.file, "rb") as b:
            assert a.read() == b.read()
        np.testing.assert_array_equal(sub.boxes, ref.boxes)
        np.testing.assert_array_equal(sub.labels, ref.labels)
        assert sub.size == ref.size
    if fmt == "odgt":
        assert data.info.gt == full_info.gt[2:5]
    else:
        assert data.info.gt["images"] == full_info.gt["images"][2:5]
    # the full dataset keeps its cache folder and its images
    whole = load_datasets(data_config(synthetic={**SYNTH, "format": fmt}), tmp_path / "cache")
    assert len(whole.val) == 5
    assert sorted(p.name for p in (tmp_path / "cache" / "synthetic").iterdir()) == [folder.name[:-len("-val2-5")],
                                                                                    folder.name]


# ------------------------------------------------------------------ COCO and CrowdHuman files


def coco_gt(n=5):
    # image ids out of order in the file: positions follow the ascending ids
    ids = [40, 10, 30, 50, 20][:n]
    images = [{"id": i, "file_name": f"{i}.png", "width": 64, "height": 48} for i in ids]
    anns = []
    for i in ids:
        for k in range(i // 10):
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": 1 + k % 2,
                         "bbox": [2 + 5 * k, 3 + 2 * k, 12 + k, 20 - k], "iscrowd": 0, "area": 200})
    return {"images": images, "annotations": anns, "info": {"description": "tiny"},
            "categories": [{"id": 1, "name": "one"}, {"id": 2, "name": "two"}]}


def odgt_gt(n=5):
    return [{"ID": f"im{k}", "width": 64, "height": 48, "gtboxes": [
        {"tag": "person", "fbox": [2 + 4 * j, 3 + j, 12, 30]} for j in range(k + 1)]
        + [{"tag": "mask", "fbox": [40, 30, 10, 10]}]} for k in range(n)]


def write_dataset(root, kind, n=5):
    if kind == "coco":
        gt = coco_gt(n)
        make_images(root / "val", [im["file_name"] for im in gt["images"]], size=(64, 48))
        (root / "val.json").write_text(json.dumps(gt))
        return gt
    lines = odgt_gt(n)
    make_images(root / "val", [f"{x['ID']}.png" for x in lines], size=(64, 48))
    (root / "val.odgt").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return lines


def file_config(root, kind, val_images):
    split = {"images": "val", "annotations": "val.json" if kind == "coco" else "val.odgt"}
    return DataConfig.model_validate({"name": kind, "root": str(root), "train": split, "val": split,
                                      "val_images": val_images, "filter_empty": False})


def test_coco_subset_cuts_records_and_gt(tmp_path):
    gt = write_dataset(tmp_path, "coco")
    data = load_datasets(file_config(tmp_path, "coco", [1, 3]), tmp_path)
    assert [r.image_id for r in data.val] == [20, 30]  # positions 1, 2 of ids 10 20 30 40 50
    assert sorted(im["id"] for im in data.info.gt["images"]) == [20, 30]
    assert {a["image_id"] for a in data.info.gt["annotations"]} == {20, 30}
    assert len(data.info.gt["annotations"]) == 2 + 3
    assert data.info.gt["categories"] == gt["categories"] and data.info.gt["info"] == gt["info"]
    assert len(data.train) == 5  # training is unchanged
    full = load_datasets(file_config(tmp_path, "coco", None), tmp_path)
    assert len(full.val) == 5 and len(full.info.gt["images"]) == 5


def test_crowdhuman_subset_cuts_records_and_gt(tmp_path):
    lines = write_dataset(tmp_path, "crowdhuman")
    data = load_datasets(file_config(tmp_path, "crowdhuman", [3, 5]), tmp_path)
    assert [r.image_id for r in data.val] == ["im3", "im4"]
    assert data.info.gt == lines[3:5]
    assert len(data.train) == 5


@pytest.mark.parametrize("kind", ["coco", "crowdhuman"])
def test_a_range_past_the_split_is_a_data_error(tmp_path, kind):
    write_dataset(tmp_path, kind)
    with pytest.raises(DataError, match=r"data\.val_images.*\[2, 6\].*6 val images.*has 5") as exc:
        load_datasets(file_config(tmp_path, kind, [2, 6]), tmp_path)
    assert len(exc.value.problems) == 1 and Path(exc.value.problems[0].file).stem == "val"


# ------------------------------------------------------------------ evaluation


def predictions(records):
    """Imperfect detections: GT boxes shifted, a missed box per image, a false positive."""
    rng = np.random.default_rng(0)
    out = []
    for r in records:
        boxes = [[float(v) + float(rng.uniform(-2, 2)) for v in b] for b in r.boxes.tolist()[1:]]
        boxes.append([30.0, 20.0, 45.0, 40.0])
        scores = [float(s) for s in rng.uniform(0.1, 1.0, len(boxes))]
        labels = [int(v) for v in r.labels.tolist()[1:]] + [0]
        out.append({"image_id": r.image_id, "boxes": boxes, "scores": scores, "labels": labels})
    return out


@pytest.mark.parametrize("kind", ["coco", "crowdhuman"])
def test_scoring_the_subset_equals_scoring_a_file_of_those_images(tmp_path, kind):
    gt = write_dataset(tmp_path / "all", kind)
    data = load_datasets(file_config(tmp_path / "all", kind, [1, 4]), tmp_path)
    # the same images in a file of their own
    if kind == "coco":
        ids = {20, 30, 40}
        cut = {**gt, "images": [im for im in gt["images"] if im["id"] in ids],
               "annotations": [a for a in gt["annotations"] if a["image_id"] in ids]}
        (tmp_path / "cut").mkdir()
        (tmp_path / "cut" / "val.json").write_text(json.dumps(cut))
    else:
        (tmp_path / "cut").mkdir()
        (tmp_path / "cut" / "val.odgt").write_text("".join(json.dumps(x) + "\n" for x in gt[1:4]))
    (tmp_path / "cut" / "val").symlink_to(tmp_path / "all" / "val")
    alone = load_datasets(file_config(tmp_path / "cut", kind, None), tmp_path)
    assert [r.image_id for r in data.val] == [r.image_id for r in alone.val]
    preds = predictions(data.val)
    score = evaluator(kind).score
    subset, _ = score(preds, data.info, data.val, backend="pycocotools")
    reference, _ = score(preds, alone.info, alone.val, backend="pycocotools")
    assert subset == reference
    # and the whole split scores differently: the subset really is what was scored
    whole = load_datasets(file_config(tmp_path / "all", kind, None), tmp_path)
    full_preds = predictions(whole.val)
    assert score(full_preds, whole.info, whole.val, backend="pycocotools")[0] != subset
