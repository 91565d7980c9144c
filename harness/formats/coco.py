"""COCO instances json and COCO results json, validated with file and record in errors."""

from __future__ import annotations

import json
from pathlib import Path

from harness.formats.checks import box_problem, is_id, is_number
from harness.spec.errors import DataError, Problem


def read_json(path: str | Path):
    path = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(Problem(path, None, "", f"cannot read file: {exc}")) from None
    if not text.strip():
        raise DataError(Problem(path, None, "", "empty file"))
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(Problem(path, exc.lineno, "", f"malformed JSON: {exc.msg} (column {exc.colno})")) from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer of more than 4,300 digits; deep nesting
        raise DataError(Problem(path, None, "", f"unreadable JSON: {str(exc).splitlines()[0][:120]}")) from None



def validate_instances(data, path: str) -> dict:
    """Check the parts of an instances json the harness relies on."""
    if not isinstance(data, dict):
        raise DataError(Problem(path, None, "", "an instances file must be a JSON object"))
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(Problem(path, None, key, f"missing '{key}' list"))
    image_ids = set()
    for i, im in enumerate(data["images"]):
        if not isinstance(im, dict) or "id" not in im:
            raise DataError(Problem(path, None, f"images[{i}]", "image without 'id'"))
        if not is_id(im["id"]):
            raise DataError(Problem(path, None, f"images[{i}].id", f"an id is an integer or a string, got {im['id']!r}"))
        for key in ("width", "height"):
            if not is_number(im.get(key)) or im[key] <= 0:
                raise DataError(Problem(path, None, f"images[{i}].{key}", f"must be a positive number, got {im.get(key)!r}"))
        if im["id"] in image_ids:
            raise DataError(Problem(path, None, f"images[{i}].id", f"duplicate image id {im['id']!r}"))
        image_ids.add(im["id"])
    cat_ids = set()
    for i, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or "id" not in cat:
            raise DataError(Problem(path, None, f"categories[{i}]", "category without 'id'"))
        if not is_id(cat["id"]):
            raise DataError(Problem(path, None, f"categories[{i}].id", f"an id is an integer or a string, got {cat['id']!r}"))
        cat_ids.add(cat["id"])
    ann_ids = set()
    for i, ann in enumerate(data["annotations"]):
        where = f"annotations[{i}]"
        if not isinstance(ann, dict):
            raise DataError(Problem(path, None, where, "must be an object"))
        for key in ("image_id", "category_id"):
            if not is_id(ann.get(key)):
                raise DataError(Problem(path, None, f"{where}.{key}", f"an id is an integer or a string, got {ann.get(key)!r}"))
        if ann.get("image_id") not in image_ids:
            raise DataError(Problem(path, None, f"{where}.image_id", f"unknown image id {ann.get('image_id')!r}"))
        if ann.get("category_id") not in cat_ids:
            raise DataError(Problem(path, None, f"{where}.category_id", f"unknown category id {ann.get('category_id')!r}"))
        problem = box_problem(ann.get("bbox"))
        if problem:
            raise DataError(Problem(path, None, f"{where}.bbox", problem))
        for key in ("id", "area", "iscrowd"):  # pycocotools needs all three to evaluate
            if key not in ann:
                raise DataError(Problem(path, None, f"{where}.{key}", f"missing '{key}' (pycocotools needs it)"))
        if not is_id(ann["id"]):
            raise DataError(Problem(path, None, f"{where}.id", f"an id is an integer or a string, got {ann['id']!r}"))
        if not is_number(ann["area"]) or ann["iscrowd"] not in (0, 1) or isinstance(ann["iscrowd"], float):
            raise DataError(Problem(path, None, where, f"area must be a number and iscrowd 0 or 1, got "
                                                       f"{ann['area']!r}, {ann['iscrowd']!r}"))
        if ann["id"] in ann_ids:
            raise DataError(Problem(path, None, f"{where}.id", f"duplicate annotation id {ann['id']!r}"))
        ann_ids.add(ann["id"])
    return data


def read_instances(path: str | Path) -> dict:
    path = str(path)
    return validate_instances(read_json(path), path)


def validate_results(results, path: str, gt: dict) -> list[dict]:
    """Check a COCO results list against its GT: known images and categories, sane boxes."""
    if not isinstance(results, list):
        raise DataError(Problem(path, None, "", "a results file must be a JSON list"))
    if not results:
        raise DataError(Problem(path, None, "", "no detections (an empty results list)"))
    image_ids = {im["id"] for im in gt["images"]}
    cat_ids = {c["id"] for c in gt["categories"]}
    for i, r in enumerate(results):
        where = f"[{i}]"
        if not isinstance(r, dict):
            raise DataError(Problem(path, None, where, "must be an object"))
        for key in ("image_id", "category_id"):
            if not is_id(r.get(key)):
                raise DataError(Problem(path, None, f"{where}.{key}", f"an id is an integer or a string, got {r.get(key)!r}"))
        if r.get("image_id") not in image_ids:
            raise DataError(Problem(path, None, f"{where}.image_id", f"detection for unknown image id {r.get('image_id')!r}"))
        if r.get("category_id") not in cat_ids:
            raise DataError(Problem(path, None, f"{where}.category_id", f"unknown category id {r.get('category_id')!r}"))
        problem = box_problem(r.get("bbox"))
        if problem:
            raise DataError(Problem(path, None, f"{where}.bbox", problem))
        if not is_number(r.get("score")):
            raise DataError(Problem(path, None, f"{where}.score", f"must be a finite number, got {r.get('score')!r}"))
    return results


def read_results(path: str | Path, gt: dict) -> list[dict]:
    path = str(path)
    return validate_results(read_json(path), path, gt)
