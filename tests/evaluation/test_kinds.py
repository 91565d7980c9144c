"""The evaluator table: each evaluator reports exactly its metrics (CrowdHuman also its counts),
writes its detections file's records, leads with its headline metric; `score` names the values
by postprocess."""

from types import SimpleNamespace

import pytest

from harness.evaluation.kinds import EVALUATORS, evaluator
from harness.spec.schema import METRICS
from harness.track.names import COUNTS

BOXES = [[10.0, 10.0, 50.0, 40.0], [60.0, 60.0, 70.0, 90.0]]  # a hit and a miss, xyxy


def dataset(name: str):
    """(predictions of one postprocess, DatasetInfo stand-in, val records) of a one-image set."""
    if name == "coco":
        gt = {"images": [{"id": 1, "width": 100, "height": 100, "file_name": "1.png"}],
              "annotations": [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [10, 10, 40, 30], "area": 1200,
                               "iscrowd": 0}],
              "categories": [{"id": 7, "name": "a"}]}
        return ([{"image_id": 1, "boxes": BOXES, "scores": [0.9, 0.3], "labels": [0, 0]}],
                SimpleNamespace(gt=gt, label_to_category=[7]), [])
    gt = [{"ID": "a", "gtboxes": [{"tag": "person", "fbox": [10, 10, 40, 30]}]}]
    return ([{"image_id": "a", "boxes": BOXES, "scores": [0.9, 0.3], "labels": [0, 0]}], SimpleNamespace(gt=gt),
            [SimpleNamespace(image_id="a", size=(100, 100))])


@pytest.mark.parametrize("name", ["coco", "crowdhuman"])
def test_an_evaluator_scores_its_metrics_and_writes_its_records(name):
    ev = evaluator(name)
    preds, info, val = dataset(name)
    values, records = ev.score(preds, info, val, backend="pycocotools")
    assert tuple(k for k in values if k not in COUNTS) == ev.metrics and ev.headline_metric in ev.metrics
    if name == "coco":
        assert (ev.headline_metric, ev.ext, values["ap"]) == ("ap", "json", pytest.approx(1.0))
        assert records[0] == {"image_id": 1, "category_id": 7, "bbox": [10.0, 10.0, 40.0, 30.0], "score": 0.9}
    else:
        assert (ev.headline_metric, ev.ext, values["recall"]) == ("ap50", "odgt", 1.0)
        assert records == [{"ID": "a", "dtboxes": [{"box": [10.0, 10.0, 40.0, 30.0], "score": 0.9, "tag": 1},
                                                   {"box": [60.0, 60.0, 10.0, 30.0], "score": 0.3, "tag": 1}]}]


def test_the_spec_knows_every_metric_of_every_evaluator_and_no_other():
    assert set(METRICS) == {m for ev in EVALUATORS.values() for m in ev.metrics}


def test_score_names_each_value_by_postprocess_and_the_headline_also_plainly():
    from harness.train.engine import score

    preds, info, val = dataset("crowdhuman")
    out, files = score({"nms": preds, "nms_free": preds[:0]}, info, val, metrics="crowdhuman",
                       backend="pycocotools", headline="nms_free")
    assert set(files) == {"nms", "nms_free"} and files["nms_free"] == []
    assert {k for k in out if "." in k} == {f"{m}.{n}" for m in ("nms", "nms_free")
                                            for n in ("ap50", "mmr", "recall", *COUNTS)}
    assert {k: out[k] for k in out if "." not in k} == {k[len("nms_free."):]: v for k, v in out.items()
                                                       if k.startswith("nms_free.")}
