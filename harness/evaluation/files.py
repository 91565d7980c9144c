"""File-level evaluation (``harness evaluate``): read, validate, evaluate; and the COCO test-dev
server's upload file (``harness evaluate coco --testdev``)."""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

from harness.evaluation.coco import evaluate_coco
from harness.evaluation.crowdhuman import evaluate_images, images_from_records
from harness.formats import coco as coco_files
from harness.formats import odgt
from harness.formats.atomic import write_text_atomic
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


#: The COCO server's name for a bbox results file on test-dev 2017 (cocodataset.org, "Upload"):
#: `[type]_[testset]_[alg]_results.json`, zipped on its own.
TESTDEV_RESULTS = "detections_test-dev2017_{alg}_results.json"
ALG_NAME = re.compile(r"^[A-Za-z0-9-]+$")


def testdev_upload(info_path: str, dets_path: str, out: str, alg: str) -> tuple[str, int, int, int]:
    """Write the COCO server's upload file: a zip holding `TESTDEV_RESULTS` for `alg`, the
    detections (`detections_<mode>.json` of a run that predicted the test-dev images: original
    category ids, xywh boxes, scores) checked against test-dev's image info (`--gt`:
    image_info_test-dev2017.json, images and categories without annotations). Returns (the file
    name inside the zip, detections, images with detections, images of the image info)."""
    if not ALG_NAME.match(alg):
        raise DataError(Problem(None, None, "--alg", f"letters, digits and '-' only (the server splits the file name "
                                                     f"on '_'), got {alg!r}"))
    if not out.endswith(".zip"):
        raise DataError(Problem(None, None, "--testdev", f"the upload file is a .zip, got {out!r}"))
    info = coco_files.read_json(info_path)
    if not isinstance(info, dict) or not isinstance(info.get("images"), list):
        raise DataError(Problem(info_path, None, "images", "not an image info file (no 'images' list)"))
    if info.get("annotations"):
        raise DataError(Problem(info_path, None, "annotations", "has annotations: a labelled split's instances file, "
                                                                "not test-dev's image info (image_info_test-dev2017.json)"))
    gt = coco_files.validate_instances({**info, "annotations": []}, info_path)
    dets = coco_files.read_json(dets_path)
    known = {im["id"] for im in gt["images"]}
    if isinstance(dets, list):
        foreign = {r.get("image_id") for r in dets if isinstance(r, dict)} - known
        if foreign:
            raise DataError(Problem(dets_path, None, "image_id", f"{len(foreign)} image id(s) not in {info_path} "
                                                                 f"(e.g. {sorted(foreign, key=str)[0]!r}): detections "
                                                                 "of another image set, not test-dev's"))
    results = coco_files.validate_results(dets, dets_path, gt)
    records = [{"image_id": r["image_id"], "category_id": r["category_id"], "bbox": list(r["bbox"]),
                "score": r["score"]} for r in results]
    name = TESTDEV_RESULTS.format(alg=alg)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(name, json.dumps(records, allow_nan=False))
    write_text_atomic(out, buf.getvalue())
    return name, len(records), len({r["image_id"] for r in records}), len(known)
