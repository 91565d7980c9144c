"""`data.train_extra`: more training splits appended to `data.train` (the official FCOS's COCO 2014
train + valminusminival), and the new data fields keeping every run key at their defaults."""

import json

import pytest
from pydantic import ValidationError

from harness.data.build import load_datasets
from harness.spec import expand, load_spec, parse_set
from harness.spec.errors import DataError
from harness.spec.matrix import hashed_config
from harness.spec.schema import DataConfig
from tests.conftest import MINI_SPEC
from tests.data.test_records_transforms import make_images

CATEGORIES = [{"id": 1, "name": "one"}, {"id": 7, "name": "seven"}]


def write_coco(path, folder, ids, categories=CATEGORIES, boxes=True):
    """A tiny instances file: one 64 x 48 image per id (named <id>.png) with one box of category 7."""
    make_images(path.parent / folder, [f"{i}.png" for i in ids])
    gt = {"images": [{"id": i, "file_name": f"{i}.png", "width": 64, "height": 48} for i in ids],
          "categories": categories,
          "annotations": [{"id": 100 + i, "image_id": i, "category_id": 7, "bbox": [1, 2, 10, i],
                           "iscrowd": 0, "area": 10 * i} for i in ids] if boxes else []}
    path.write_text(json.dumps(gt))


def coco_2014(tmp_path, valminusminival_ids=(5, 9)):
    ann = tmp_path / "annotations"
    ann.mkdir()
    write_coco(ann / "instances_train2014.json", "../train2014", [1, 3])
    write_coco(ann / "instances_valminusminival2014.json", "../val2014", list(valminusminival_ids))
    write_coco(ann / "instances_minival2014.json", "../val2014", [2])
    return DataConfig.model_validate({
        "name": "coco", "root": str(tmp_path),
        "train": {"images": "train2014", "annotations": "annotations/instances_train2014.json"},
        "train_extra": [{"images": "val2014", "annotations": "annotations/instances_valminusminival2014.json"}],
        "val": {"images": "val2014", "annotations": "annotations/instances_minival2014.json"}})


def test_train_and_valminusminival_are_concatenated_in_order(tmp_path):
    data = load_datasets(coco_2014(tmp_path), tmp_path / "cache")
    assert [r.image_id for r in data.train] == [1, 3, 5, 9]
    assert [r.file.split("/")[-2:] for r in data.train] == [["train2014", "1.png"], ["train2014", "3.png"],
                                                            ["val2014", "5.png"], ["val2014", "9.png"]]
    assert [r.labels.tolist() for r in data.train] == [[1]] * 4  # category 7 is label 1 in both files
    assert [r.boxes[0, 3] for r in data.train] == [2 + 1, 2 + 3, 2 + 5, 2 + 9]
    assert [r.image_id for r in data.val] == [2]
    assert data.info.annotation_file.endswith("instances_minival2014.json")


def test_an_image_id_in_two_files_is_refused_in_one_line(tmp_path):
    with pytest.raises(DataError) as exc:
        load_datasets(coco_2014(tmp_path, valminusminival_ids=(5, 3)), tmp_path / "cache")
    text = str(exc.value)
    assert "\n" not in text.strip()
    assert "instances_valminusminival2014.json" in text and "data.train_extra[0]" in text
    assert "image id 3 is also in data.train" in text


def test_other_categories_and_missing_files_are_refused(tmp_path):
    cfg = coco_2014(tmp_path)
    write_coco(tmp_path / "annotations" / "instances_valminusminival2014.json", "../val2014", [5],
               categories=[*CATEGORIES, {"id": 9, "name": "nine"}])
    with pytest.raises(DataError, match=r"data.train_extra\[0\]: its categories differ from data.train's"):
        load_datasets(cfg, tmp_path / "cache")
    (tmp_path / "annotations" / "instances_valminusminival2014.json").unlink()
    with pytest.raises(DataError, match=r"data.train_extra\[0\].annotations: annotation file not found"):
        load_datasets(cfg, tmp_path / "cache")


def test_empty_images_of_an_extra_split_are_filtered_like_the_rest(tmp_path):
    cfg = coco_2014(tmp_path)
    write_coco(tmp_path / "annotations" / "instances_valminusminival2014.json", "../val2014", [5, 9], boxes=False)
    assert [r.image_id for r in load_datasets(cfg, tmp_path / "cache").train] == [1, 3]


def test_synthetic_data_has_no_extra_split():
    with pytest.raises(ValidationError, match="train_extra needs files"):
        DataConfig.model_validate({"name": "synthetic", "synthetic": {"num_train": 1, "num_val": 1},
                                   "train_extra": [{"images": "a", "annotations": "b.json"}]})


def test_new_data_fields_are_keyless_at_their_defaults(mini_spec):
    spec = load_spec(mini_spec(MINI_SPEC))
    plain = expand(spec)
    data = hashed_config(plain[0].config)["data"]
    assert not {"train_extra", "resize", "letterbox_size"} & set(data)
    boxed = expand(spec, [parse_set("data.resize=letterbox"), parse_set("data.letterbox_size=640")])
    assert hashed_config(boxed[0].config)["data"]["resize"] == "letterbox"
    assert hashed_config(boxed[0].config)["data"]["letterbox_size"] == 640
    assert {c.run_key for c in boxed}.isdisjoint(c.run_key for c in plain)
