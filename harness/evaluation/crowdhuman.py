"""CrowdHuman evaluation in body mode, identical to the official toolkit.

The rule (CrowdDet ``APMRToolkits`` = cvpods
``crowdhumantools``), reproduced operation for operation so that the numbers are bit-identical:

- GT box = ``fbox`` (x, y, w, h -> x1, y1, x2, y2). Label = index of the tag in
  ``['background', 'person']`` (so 1 for a person, 0 for the rare 'background' tag), else -1;
  ``extra.ignore != 0`` -> -1. ``N_valid = #GT - #(label == -1)``, ``N_img = #GT records``.
- Per image: detections and GTs are clipped (x1 to [0, W-1], x2 to [0, W], same for y); the
  detections are sorted by score (stable, descending), the GTs by label (stable, descending:
  valid first, each group in file order). Each detection in turn takes the unmatched valid GT of
  largest IoU if it is > 0.5 (the first one on ties) -> true positive; otherwise, the first
  non-valid GT with IoA > 0.5 swallows it (dropped); otherwise it is a false positive.
  IoU = inter / (area_d + area_g - inter + 1e-6), IoA = inter / (area_d + 1e-6).
- The (score, tp) pairs of all images (in GT file order) are sorted by score (stable, desc).
  AP = trapezoid over the raw (recall, precision) points, no (0, 1) anchor; recall = recall at
  the last detection; mMR = exp(mean log miss rate) at the first point whose FPPI reaches each
  of 9 reference values (the last point if never reached).
- Where the official code crashes, we do the natural thing: an image without a detection
  record has no detections, an image without GT has zero valid GTs (its detections are false
  positives), no detections at all gives AP 0, recall 0 and mMR NaN.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

#: The official FPPI reference points (rounded; not np.logspace(-2, 0, 9)).
FPPI_REFS = (0.0100, 0.0178, 0.03160, 0.0562, 0.1000, 0.1778, 0.3162, 0.5623, 1.000)
CLASS_NAMES = ("background", "person")
EPS = 1e-6
THRESH = 0.5


@dataclass
class CHImage:
    """One image: GT boxes (x1, y1, x2, y2) with labels, detections with scores."""

    id: str
    width: float | None
    height: float | None
    gt_boxes: np.ndarray  # [G, 4] float64, xyxy
    gt_labels: np.ndarray  # [G] int: 1 person, 0 'background' tag, -1 ignore
    dt_boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))  # [D, 4] xyxy
    dt_scores: np.ndarray = field(default_factory=lambda: np.zeros((0,)))  # [D]
    has_dets: bool = False


def gt_label(box: dict) -> int:
    """Body-mode label of one ``gtboxes`` entry."""
    tag = box.get("tag")
    label = CLASS_NAMES.index(tag) if tag in CLASS_NAMES else -1
    extra = box.get("extra")
    if isinstance(extra, dict) and extra.get("ignore", 0) != 0:
        label = -1
    return label


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    boxes = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    boxes[:, 2:4] += boxes[:, :2]
    return boxes


def _clip(boxes: np.ndarray, height: float, width: float) -> np.ndarray:
    boxes = boxes.copy()
    boxes[:, 0] = np.minimum(np.maximum(boxes[:, 0], 0), width - 1)
    boxes[:, 1] = np.minimum(np.maximum(boxes[:, 1], 0), height - 1)
    boxes[:, 2] = np.maximum(np.minimum(boxes[:, 2], width), 0)
    boxes[:, 3] = np.maximum(np.minimum(boxes[:, 3], height), 0)
    return boxes


def _overlaps(dt: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """IoU and IoA [D, G], with the official eps and operation order."""
    iw = np.minimum(dt[:, None, 2], gt[None, :, 2]) - np.maximum(dt[:, None, 0], gt[None, :, 0])
    ih = np.minimum(dt[:, None, 3], gt[None, :, 3]) - np.maximum(dt[:, None, 1], gt[None, :, 1])
    inter = np.maximum(0, iw) * np.maximum(0, ih)
    dt_area = (dt[:, 2] - dt[:, 0]) * (dt[:, 3] - dt[:, 1])
    gt_area = (gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1])
    iou = inter / (dt_area[:, None] + gt_area[None, :] - inter + EPS)
    ioa = inter / (dt_area[:, None] + EPS)
    return iou, ioa


def match_image(img: CHImage, thresh: float = THRESH) -> tuple[np.ndarray, np.ndarray]:
    """Caltech-style greedy matching of one image.

    Returns the scores and the true-positive flags of the detections that count (in score
    order); detections swallowed by an ignore region are left out.
    """
    n_dt = len(img.dt_scores)
    if n_dt == 0:
        return np.zeros(0), np.zeros(0, dtype=bool)
    order = np.argsort(-img.dt_scores, kind="stable")
    scores = img.dt_scores[order]
    if len(img.gt_labels) == 0:
        return scores, np.zeros(n_dt, dtype=bool)
    if img.width is None or img.height is None:
        raise ValueError(f"image {img.id}: width/height unknown (needed to clip boxes)")
    dt = _clip(img.dt_boxes[order], img.height, img.width)
    gt_order = np.argsort(-img.gt_labels, kind="stable")
    labels = img.gt_labels[gt_order]
    gt = _clip(img.gt_boxes[gt_order], img.height, img.width)
    iou, ioa = _overlaps(dt, gt)
    n_valid = int((labels > 0).sum())  # valid GTs come first after the sort
    iou_valid = np.nan_to_num(iou[:, :n_valid], nan=-np.inf)
    swallowed = (ioa[:, n_valid:] > thresh).any(axis=1)
    tp = np.zeros(n_dt, dtype=bool)
    if n_valid:
        taken = np.zeros(n_valid, dtype=bool)
        for i in np.flatnonzero((iou_valid > thresh).any(axis=1)):
            row = np.where(taken, -np.inf, iou_valid[i])
            j = int(np.argmax(row))  # first maximum: the official strict '>' scan
            if row[j] > thresh:
                tp[i] = True
                taken[j] = True
    keep = tp | ~swallowed
    return scores[keep], tp[keep]


@dataclass(frozen=True)
class CHResult:
    ap: float
    mmr: float
    recall: float
    n_images: int
    n_valid_gt: int
    n_dets: int
    curve: dict = field(default_factory=dict, repr=False, compare=False)

    def as_dict(self) -> dict:
        return {"ap50": self.ap, "mmr": self.mmr, "recall": self.recall,
                "n_images": self.n_images, "n_valid_gt": self.n_valid_gt, "n_dets": self.n_dets}


def evaluate_images(images: Sequence[CHImage]) -> CHResult:
    """AP, mMR and recall over a set of images (in GT file order)."""
    n_gt = sum(len(im.gt_labels) for im in images)
    n_ign = sum(int((im.gt_labels == -1).sum()) for im in images)
    n_valid = n_gt - n_ign
    n_images = len(images)
    all_scores, all_tp = [], []
    for im in images:
        s, t = match_image(im)
        all_scores.append(s)
        all_tp.append(t)
    scores = np.concatenate(all_scores) if all_scores else np.zeros(0)
    tps = np.concatenate(all_tp) if all_tp else np.zeros(0, dtype=bool)
    order = np.argsort(-scores, kind="stable")
    tps = tps[order]
    n_dets = sum(len(im.dt_scores) for im in images)
    if len(tps) == 0:
        # no detection anywhere: the curve is the single point (FPPI 0, miss rate 1), so every
        # reference FPPI samples a miss rate of 1 and mMR is 100 % (the toolkit crashes here)
        return CHResult(0.0, 1.0, 0.0, n_images, n_valid, n_dets)
    tp = np.cumsum(tps, dtype=np.float64)
    fp = np.cumsum(~tps, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = tp / (tp + (n_valid - tp))
        precision = tp / (tp + fp)
    missrate = 1.0 - recall
    fppi = fp / n_images
    # AP: the official loop adds (r_i - r_{i-1}) * (p_{i-1} + p_i) / 2 one term at a time.
    terms = (recall[1:] - recall[:-1]) * ((precision[:-1] + precision[1:]) / 2)
    ap = float(np.cumsum(terms)[-1]) if len(terms) else 0.0
    samples = []
    for ref in FPPI_REFS:
        hits = np.flatnonzero(fppi >= ref)
        samples.append(missrate[hits[0]] if len(hits) else missrate[-1])
    with np.errstate(divide="ignore"):
        mmr = float(np.exp(np.log(np.array(samples)).mean()))
    curve = {"recall": recall, "precision": precision, "fppi": fppi, "missrate": missrate}
    return CHResult(ap, mmr, float(recall[-1]), n_images, n_valid, n_dets, curve)


def images_from_records(gt_records: Iterable[dict],
                        dt_records: dict[str, dict] | None = None) -> list[CHImage]:
    """Build images from parsed odgt records (validated beforehand); GT order is kept."""
    images = []
    dt_records = dt_records or {}
    for rec in gt_records:
        boxes = [b["fbox"] for b in rec.get("gtboxes", [])]
        labels = [gt_label(b) for b in rec.get("gtboxes", [])]
        dt = dt_records.get(rec["ID"])
        width = rec.get("width", dt.get("width") if dt else None)
        height = rec.get("height", dt.get("height") if dt else None)
        im = CHImage(rec["ID"], width, height, xywh_to_xyxy(boxes),
                     np.array(labels, dtype=np.int64))
        if dt is not None:
            det = dt.get("dtboxes", [])
            im.dt_boxes = xywh_to_xyxy([d["box"] for d in det])
            im.dt_scores = np.array([d["score"] for d in det], dtype=np.float64)
            im.has_dets = True
        images.append(im)
    return images
