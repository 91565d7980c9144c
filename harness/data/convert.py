"""CrowdHuman .odgt -> COCO instances json (full-body boxes; ignore regions as iscrowd=1)."""

from __future__ import annotations

import json
from pathlib import Path

from harness.formats import odgt
from harness.formats.atomic import write_text_atomic
from harness.formats.images import image_size
from harness.spec.errors import DataError, Problem


def _image(image_dir: Path, rid: str, odgt_path: str) -> Path:
    for ext in (".jpg", ".jpeg", ".png"):
        if (image_dir / f"{rid}{ext}").exists():
            return image_dir / f"{rid}{ext}"
    raise DataError(Problem(odgt_path, None, rid, f"missing image file {image_dir / rid}.jpg"))


def crowdhuman_to_coco(odgt_path: str, image_dir: str) -> dict:
    records = odgt.read_gt(odgt_path)
    image_dir_p = Path(image_dir)
    images, anns = [], []
    for i, rec in enumerate(records):
        file = _image(image_dir_p, rec["ID"], odgt_path)
        w, h = (rec["width"], rec["height"]) if "width" in rec and "height" in rec else image_size(file)
        images.append({"id": i + 1, "file_name": file.name, "width": w, "height": h,
                       "crowdhuman_id": rec["ID"]})
        for b in rec["gtboxes"]:
            valid = b["tag"] == "person" and b.get("extra", {}).get("ignore", 0) == 0
            x, y, bw, bh = b["fbox"]
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 1,
                         "bbox": [x, y, bw, bh], "area": bw * bh, "iscrowd": 0 if valid else 1})
    return {"images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "person", "supercategory": "person"}]}


def write_json_atomic(data, out: str | Path) -> None:
    """Write through a temporary file, renamed into place; nothing is left behind on error."""
    out = Path(out)
    if out.is_dir():
        raise DataError(Problem(str(out), None, "--out", "is a directory; give a file name"))
    text = json.dumps(data, allow_nan=False)  # a non-finite number is a bug upstream, never written
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        write_text_atomic(out, text)
    except OSError as exc:
        raise DataError(Problem(str(out), None, "--out", f"cannot write: {exc.strerror}")) from None
