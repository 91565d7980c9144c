"""COCO instances json and COCO results json, validated with file and record in errors."""

from __future__ import annotations

import json
from pathlib import Path

from harness.formats.checks import box_problem, is_number
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
        cat_ids.add(cat["id"])
    ann_ids = set()
    for i, ann in enumerate(data["annotations"]):
        where = f"annotations[{i}]"
        if not isinstance(ann, dict):
            raise DataError(Problem(path, None, where, "must be an object"))
        if ann.get("image_id") not in image_ids:
            raise DataError(Problem(path, None, f"{where}.image_id", f"unknown image id {ann.get('image_id')!r}"))
        if ann.get("category_id") not in cat_ids:
            raise DataError(Problem(path, None, f"{where}.category_id", f"unknown category id {ann.get('category_id')!r}"))
        problem = box_problem(ann.get("bbox"))
        if problem:
            raise DataError(Problem(path, None, f"{where}.bbox", problem))
        if "id" in ann:
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
    image_ids = {im["id"] for im in gt["images"]}
    cat_ids = {c["id"] for c in gt["categories"]}
    for i, r in enumerate(results):
        where = f"[{i}]"
        if not isinstance(r, dict):
            raise DataError(Problem(path, None, where, "must be an object"))
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
