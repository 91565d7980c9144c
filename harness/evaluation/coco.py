"""COCO bbox evaluation through pycocotools' COCOeval (or faster-coco-eval, same numbers).

Returns the 12 numbers of ``COCOeval.summarize`` as fractions, under the names
``ap ap50 ap75 aps apm apl ar1 ar10 ar100 ars arm arl``; the tables' mAP is ``ap`` and their
mAR is ``ar100`` (AR@100, all areas). A value pycocotools reports as -1 (no GT in that area
range) is kept as -1, exactly as the official tool prints it. faster-coco-eval accumulates
precision in C++ and agrees with pycocotools to within 1e-12 (its precision array differs in
the last bit), which no table can show.
"""

from __future__ import annotations

import contextlib
import copy
import io

from harness.spec.schema import EVALUATOR_METRICS

METRICS = EVALUATOR_METRICS["coco"]  # COCOeval.summarize's order
BACKENDS = ("pycocotools", "faster_coco_eval")


def _empty_results(gt_cls, gt):
    dt = gt_cls()
    dt.dataset = {"images": copy.deepcopy(gt.dataset["images"]),
                  "categories": copy.deepcopy(gt.dataset["categories"]), "annotations": []}
    dt.createIndex()
    return dt


def evaluate_coco(gt: dict, results: list[dict], backend: str = "pycocotools") -> dict[str, float]:
    """Evaluate validated COCO results against a validated instances dict."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown COCO backend {backend!r} (known: {', '.join(BACKENDS)})")
    gt = copy.deepcopy(gt)
    results = copy.deepcopy(results)  # loadRes writes into the records
    with contextlib.redirect_stdout(io.StringIO()):
        if backend == "pycocotools":
            from pycocotools.coco import COCO
            from pycocotools.cocoeval import COCOeval as Eval
        else:
            from faster_coco_eval import COCO
            from faster_coco_eval import COCOeval_faster as Eval
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(results) if results else _empty_results(COCO, coco_gt)
        ev = Eval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {name: float(v) for name, v in zip(METRICS, ev.stats[:12], strict=True)}
