"""COCO instances and results files: hostile numbers, ids and missing keys are one clear error."""

import json

import pytest

from harness.formats.coco import read_instances, read_results
from harness.spec.errors import DataError


def gt(**ann):
    a = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 20], "area": 200, "iscrowd": 0}
    a.update(ann)
    a = {k: v for k, v in a.items() if v is not ...}
    return {"images": [{"id": 1, "width": 64, "height": 48}], "categories": [{"id": 1, "name": "a"}],
            "annotations": [a]}


@pytest.mark.parametrize("data, where, message", [
    (gt(bbox=[1, 2, 1e300, 20]), "annotations[0].bbox", "below 1e+12"),
    (gt(image_id=[1]), "annotations[0].image_id", "an id is an integer or a string"),
    (gt(category_id=True), "annotations[0].category_id", "an id is an integer or a string"),
    (gt(id=...), "annotations[0].id", "missing 'id'"),
    (gt(area=...), "annotations[0].area", "missing 'area'"),
    (gt(iscrowd=...), "annotations[0].iscrowd", "missing 'iscrowd'"),
    (gt(iscrowd=2), "annotations[0]", "iscrowd 0 or 1"),
])
def test_bad_instances(tmp_path, data, where, message):
    p = tmp_path / "gt.json"
    p.write_text(json.dumps(data))
    with pytest.raises(DataError) as exc:
        read_instances(p)
    text = str(exc.value)
    assert where in text and message in text and str(p) in text and "\n" not in text


def test_unreadable_numbers(tmp_path):
    p = tmp_path / "gt.json"
    data = json.dumps(gt()).replace('"area": 200', '"area": ' + "9" * 5000)
    p.write_text(data)
    with pytest.raises(DataError) as exc:
        read_instances(p)
    assert "unreadable JSON" in str(exc.value)
    p.write_text(json.dumps(gt()).replace('"area": 200', '"area": 1e400'))  # json reads inf
    with pytest.raises(DataError) as exc:
        read_instances(p)
    assert "annotations[0]" in str(exc.value)


def test_empty_results_file_is_an_error(tmp_path):
    p = tmp_path / "dt.json"
    p.write_text("[]")
    with pytest.raises(DataError) as exc:
        read_results(p, gt())
    assert "no detections" in str(exc.value)
