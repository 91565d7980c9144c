"""The evaluators as data: per `eval.metrics`, the metrics it reports, the one a table, the live
display and the health rule lead with, the detections file it reads and how it scores. Callers
ask `evaluator(name)` instead of comparing `eval.metrics` with a name.

`score(predictions, info, val_records, backend=...)` scores one postprocess's predictions of
the val set (`harness.train.engine.predict`: per image its id and boxes, scores and labels in
original pixels) against the dataset's ground truth (`info`: `DatasetInfo`; `val_records`:
the val images, whose sizes CrowdHuman clips to) and returns the metrics (fractions; CrowdHuman
adds its counts) with the detections file's records. `evaluate_files(gt, dets, backend=...,
images=...)` scores files (`harness evaluate`): COCO uses the backend, CrowdHuman the image folder
for sizes neither file gives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from harness.evaluation.coco import evaluate_coco
from harness.evaluation.crowdhuman import evaluate_images, images_from_records
from harness.evaluation.files import evaluate_coco_files, evaluate_crowdhuman_files
from harness.spec.schema import EVALUATOR_METRICS


@dataclass(frozen=True)
class Evaluator:
    name: str  # the value of eval.metrics
    metrics: tuple[str, ...]  # what it reports (harness.spec.schema.EVALUATOR_METRICS)
    headline_metric: str  # COCO's mAP, CrowdHuman's AP50: the papers' headline numbers
    ext: str  # the detections file of a postprocess: detections_<mode>.<ext>
    score: Callable[..., tuple[dict[str, float], list[dict]]]
    evaluate_files: Callable[..., dict]


def coco_results(preds: list[dict], label_to_category: list[int]) -> list[dict]:
    """Predictions -> COCO results records (xywh boxes, the dataset's category ids)."""
    res = []
    for p in preds:
        for (x1, y1, x2, y2), s, lab in zip(p["boxes"], p["scores"], p["labels"], strict=True):
            res.append({"image_id": p["image_id"], "category_id": label_to_category[lab],
                        "bbox": [x1, y1, x2 - x1, y2 - y1], "score": s})
    return res


def odgt_results(preds: list[dict]) -> list[dict]:
    """Predictions -> odgt records (one per image, xywh `dtboxes` tagged person)."""
    return [{"ID": p["image_id"], "dtboxes": [{"box": [x1, y1, x2 - x1, y2 - y1], "score": s, "tag": 1}
                                             for (x1, y1, x2, y2), s in zip(p["boxes"], p["scores"], strict=True)]}
            for p in preds]


def _score_coco(preds: list[dict], info, val_records, *, backend: str) -> tuple[dict, list[dict]]:
    results = coco_results(preds, info.label_to_category)
    return evaluate_coco(info.gt, results, backend), results


def _score_crowdhuman(preds: list[dict], info, val_records, *, backend: str) -> tuple[dict, list[dict]]:
    results = odgt_results(preds)
    sizes = {r.image_id: r.size for r in val_records}
    gt = [{**rec, "width": sizes[rec["ID"]][0], "height": sizes[rec["ID"]][1]} for rec in info.gt]
    return evaluate_images(images_from_records(gt, {r["ID"]: r for r in results})).as_dict(), results


def _coco_files(gt: str, dets: str, *, backend: str, images: str | None) -> dict:
    return evaluate_coco_files(gt, dets, backend)


def _crowdhuman_files(gt: str, dets: str, *, backend: str, images: str | None) -> dict:
    return evaluate_crowdhuman_files(gt, dets, images)


EVALUATORS = {e.name: e for e in (
    Evaluator("coco", EVALUATOR_METRICS["coco"], headline_metric="ap", ext="json", score=_score_coco,
              evaluate_files=_coco_files),
    Evaluator("crowdhuman", EVALUATOR_METRICS["crowdhuman"], headline_metric="ap50", ext="odgt",
              score=_score_crowdhuman, evaluate_files=_crowdhuman_files),
)}


def evaluator(name: str) -> Evaluator:
    """The evaluator `eval.metrics` names."""
    return EVALUATORS[name]
