"""File-level evaluation (``harness evaluate``): read, validate, evaluate."""

from __future__ import annotations

from pathlib import Path

from harness.evaluation.coco import evaluate_coco
from harness.evaluation.crowdhuman import evaluate_images, images_from_records
from harness.formats import coco as coco_files
from harness.formats import odgt
from harness.formats.images import image_size
from harness.spec.errors import DataError, Problem


def evaluate_coco_files(gt_path: str, dets_path: str, backend: str = "pycocotools") -> dict:
    gt = coco_files.read_instances(gt_path)
    results = coco_files.read_results(dets_path, gt)
    return evaluate_coco(gt, results, backend)


def evaluate_crowdhuman_files(gt_path: str, dets_path: str, image_dir: str | None = None) -> dict:
    """Image sizes: the GT record's width/height, else the detection record's, else the image
    file ``<image_dir>/<ID>.jpg`` (or .png) header."""
    gt = odgt.read_gt(gt_path)
    dets = odgt.read_dets(dets_path)
    known = {r["ID"] for r in gt}
    by_id = {}
    for rec in dets:
        if rec["ID"] not in known:
            raise DataError(Problem(dets_path, rec["_line"], "ID",
                                    f"detections for unknown image id {rec['ID']!r}"))
        by_id[rec["ID"]] = rec
    for rec in gt:
        dt = by_id.get(rec["ID"])
        needs_size = dt is not None and dt["dtboxes"] and rec["gtboxes"]
        if needs_size and not (("width" in rec or "width" in dt) and ("height" in rec or "height" in dt)):
            if image_dir is None:
                raise DataError(Problem(gt_path, None, rec["ID"],
                                        "no width/height in the GT or detection record; "
                                        "pass --images DIR to read them from the image files"))
            w, h = image_size(_image_file(image_dir, rec["ID"], gt_path))
            rec["width"], rec["height"] = w, h
    return evaluate_images(images_from_records(gt, by_id)).as_dict()


def _image_file(image_dir: str, image_id: str, gt_path: str) -> Path:
    for ext in (".jpg", ".jpeg", ".png"):
        path = Path(image_dir) / f"{image_id}{ext}"
        if path.exists():
            return path
    raise DataError(Problem(gt_path, None, image_id, f"missing image file {Path(image_dir) / image_id}.jpg"))
