"""COCO evaluator: equal to pycocotools run by hand, and the fast backend equal to both."""

import contextlib
import copy
import io

import numpy as np
import pytest

from harness.evaluation.coco import METRICS, evaluate_coco


def random_coco(rng, n_images=6, n_cats=3):
    images = [{"id": i + 1, "width": 200, "height": 150, "file_name": f"{i}.png"}
              for i in range(n_images)]
    cats = [{"id": c * 2 + 1, "name": f"c{c}"} for c in range(n_cats)]
    anns, results = [], []
    for im in images:
        for _ in range(int(rng.integers(0, 6))):
            x, y = rng.uniform(0, 150), rng.uniform(0, 100)
            w, h = rng.uniform(2, 120), rng.uniform(2, 100)
            cat = cats[int(rng.integers(0, n_cats))]["id"]
            anns.append({"id": len(anns) + 1, "image_id": im["id"], "category_id": cat,
                         "bbox": [x, y, w, h], "area": w * h,
                         "iscrowd": int(rng.random() < 0.1)})
            for _ in range(int(rng.integers(0, 3))):
                j = rng.normal(0, 4, 4)
                results.append({"image_id": im["id"], "category_id": cat,
                                "bbox": [x + j[0], y + j[1], max(1, w + j[2]), max(1, h + j[3])],
                                "score": float(rng.random())})
        for _ in range(int(rng.integers(0, 3))):
            results.append({"image_id": im["id"], "category_id": cats[0]["id"],
                            "bbox": [*rng.uniform(0, 100, 2), *rng.uniform(5, 50, 2)],
                            "score": float(rng.random())})
    return {"images": images, "annotations": anns, "categories": cats}, results


def pycocotools_by_hand(gt, results):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(copy.deepcopy(results)), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return dict(zip(METRICS, map(float, ev.stats), strict=True))


@pytest.mark.parametrize("seed", range(12))
def test_equals_pycocotools_and_fast_backend(seed):
    gt, results = random_coco(np.random.default_rng(seed))
    if not results:
        pytest.skip("no detections drawn")
    ours = evaluate_coco(gt, results)
    assert ours == pycocotools_by_hand(gt, results)
    # faster-coco-eval computes precision in C++: equal up to the last bit or two (< 1e-12)
    fast = evaluate_coco(gt, results, backend="faster_coco_eval")
    assert fast.keys() == ours.keys()
    assert all(abs(fast[k] - ours[k]) < 1e-12 for k in ours), (fast, ours)


def test_no_detections_gives_zero_ap():
    gt, _ = random_coco(np.random.default_rng(1))
    m = evaluate_coco(gt, [])
    assert m["ap"] == 0.0 and m["ar100"] == 0.0
    assert evaluate_coco(gt, [], backend="faster_coco_eval")["ap"] == 0.0


def test_perfect_detections():
    gt = {"images": [{"id": 1, "width": 100, "height": 100}],
          "categories": [{"id": 1, "name": "a"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 40],
                           "area": 1600, "iscrowd": 0}]}
    res = [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 40], "score": 0.9}]
    m = evaluate_coco(gt, res)
    assert m["ap"] == pytest.approx(1.0) and m["ar100"] == pytest.approx(1.0)
    assert m["aps"] == -1.0  # no small GT: pycocotools' -1 is kept


def test_inputs_are_not_modified():
    gt, results = random_coco(np.random.default_rng(3))
    before = copy.deepcopy((gt, results))
    evaluate_coco(gt, results)
    assert (gt, results) == before
