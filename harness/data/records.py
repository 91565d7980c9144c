"""Dataset records: one per image, boxes in original pixels (x1, y1, x2, y2).

- COCO (through pycocotools): ``iscrowd=1`` boxes are not training targets (kept as ignore
  regions); category ids map to contiguous labels 0..K-1 (sorted by id) and back.
- CrowdHuman ``.odgt``: the box is ``fbox``; ``tag != 'person'`` or ``extra.ignore != 0`` are
  ignore regions, removed from the training targets. Sizes come from the image headers (the
  official files carry none), read lazily and cached.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.formats import coco as coco_files
from harness.formats import odgt
from harness.formats.images import image_size
from harness.spec.errors import DataError, Problem


@dataclass
class ImageRecord:
    image_id: int | str
    file: str
    boxes: np.ndarray  # [N, 4] float32 xyxy, training targets
    labels: np.ndarray  # [N] int64, contiguous 0..K-1
    ignore: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    _width: int | None = None
    _height: int | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height); read from the image header when the annotation had none."""
        if self._width is None or self._height is None:
            self._width, self._height = image_size(self.file)
        return self._width, self._height


@dataclass
class DatasetInfo:
    """What evaluation needs to map predictions back: the GT and the label -> id mapping."""

    kind: str  # "coco" or "crowdhuman"
    annotation_file: str
    class_names: list[str]
    label_to_category: list[int] | None = None  # COCO: contiguous label -> category id
    gt: object = None  # COCO: the instances dict; CrowdHuman: the odgt records


def _xywh_to_xyxy(b) -> list[float]:
    return [b[0], b[1], b[0] + b[2], b[1] + b[3]]


def _arr(boxes) -> np.ndarray:
    return np.array(boxes, dtype=np.float32).reshape(-1, 4)


def mmdet_keeps(x1: float, y1: float, w: float, h: float, width: float | None, height: float | None,
                area: float | None = None) -> bool:
    """mmdet 2.25's CocoDataset rule for a GT box (DATE's loader): dropped when it does not
    overlap the image, when its area is <= 0, or when w < 1 or h < 1 (crowd boxes too)."""
    if width is not None and height is not None:
        inter_w = max(0.0, min(x1 + w, width) - max(x1, 0.0))
        inter_h = max(0.0, min(y1 + h, height) - max(y1, 0.0))
        if inter_w * inter_h == 0:
            return False
    if area is not None and area <= 0:
        return False
    return not (w < 1 or h < 1)


def load_coco(annotations: str | Path, image_dir: str | Path, *,
              gt_filter: str = "positive") -> tuple[list[ImageRecord], DatasetInfo]:
    """COCO instances -> records. gt_filter 'positive' (detectron2/cvpods): non-crowd boxes
    with w, h > 0; 'mmdet' (DATE): `mmdet_keeps` on every box, `ignore` annotations skipped."""
    from pycocotools.coco import COCO

    annotations = str(annotations)
    data = coco_files.read_instances(annotations)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = data
        coco.createIndex()
    cat_ids = sorted(coco.getCatIds())
    to_label = {c: i for i, c in enumerate(cat_ids)}
    records = []
    for img_id in sorted(coco.getImgIds()):
        info = coco.imgs[img_id]
        anns = coco.imgToAnns.get(img_id, [])
        if gt_filter == "mmdet":
            anns = [a for a in anns if not a.get("ignore", False)
                    and mmdet_keeps(*a["bbox"], info["width"], info["height"], a.get("area"))]
            keep = [a for a in anns if not a.get("iscrowd", 0)]
        else:
            keep = [a for a in anns if not a.get("iscrowd", 0) and a["bbox"][2] > 0 and a["bbox"][3] > 0]
        crowd = [a for a in anns if a.get("iscrowd", 0)]
        records.append(ImageRecord(
            image_id=img_id,
            file=str(Path(image_dir) / info.get("file_name", f"{img_id}.jpg")),
            boxes=_arr([_xywh_to_xyxy(a["bbox"]) for a in keep]),
            labels=np.array([to_label[a["category_id"]] for a in keep], dtype=np.int64),
            ignore=_arr([_xywh_to_xyxy(a["bbox"]) for a in crowd]),
            _width=int(info["width"]), _height=int(info["height"]),
        ))
    names = [coco.cats[c].get("name", str(c)) for c in cat_ids]
    return records, DatasetInfo("coco", annotations, names, cat_ids, data)


def load_crowdhuman(annotations: str | Path, image_dir: str | Path, *,
                    gt_filter: str = "positive") -> tuple[list[ImageRecord], DatasetInfo]:
    """odgt -> records (full-body boxes). gt_filter 'positive': valid boxes with w, h > 0;
    'mmdet' (DATE, which trains on the odgt converted to COCO): `mmdet_keeps` on every box."""
    annotations = str(annotations)
    gt = odgt.read_gt(annotations)
    records = []
    for rec in gt:
        keep, ignore = [], []
        for b in rec["gtboxes"]:
            if gt_filter == "mmdet" and not mmdet_keeps(*b["fbox"], rec.get("width"), rec.get("height")):
                continue
            extra = b.get("extra", {})
            valid = b["tag"] == "person" and extra.get("ignore", 0) == 0
            (keep if valid else ignore).append(_xywh_to_xyxy(b["fbox"]))
        file = Path(image_dir) / f"{rec['ID']}.jpg"
        if not file.exists() and (Path(image_dir) / f"{rec['ID']}.png").exists():
            file = Path(image_dir) / f"{rec['ID']}.png"
        boxes = _arr(keep)
        boxes = boxes[(boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])]
        records.append(ImageRecord(
            image_id=rec["ID"], file=str(file), boxes=boxes,
            labels=np.zeros(len(boxes), dtype=np.int64), ignore=_arr(ignore),
            _width=rec.get("width"), _height=rec.get("height"),
        ))
    return records, DatasetInfo("crowdhuman", annotations, ["person"], None, gt)


def check_images_exist(records: list[ImageRecord], annotation_file: str) -> None:
    """A missing image is an error before training starts, naming the first few."""
    missing = [r.file for r in records if not Path(r.file).exists()]
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise DataError(Problem(annotation_file, None, "", f"missing image files: {shown}"))
