"""The offline synthetic crowded dataset: deterministic scenes of framed cards with digits.

Objects are upright cards (height / width 1.3-1.7, like standing people): a dark frame around
a coloured field carrying one of scikit-learn's bundled handwritten digits (real data, 10
classes; 8x8 scans upscaled and coloured). The box is the card's full extent, also where cards
in front occlude it (like CrowdHuman's full-body boxes); a card whose bottom edge is lower
stands in front, and every card keeps at least 15 % of its area visible, so part of its frame
always shows where it ends. Scenes have smooth textured backgrounds and unlabelled distractor
strokes. Card heights are log-uniform from 16 px to 4/5 of the short side, so they spread over
the FPN levels P3-P7.

Crowd levels: ``none`` keeps objects apart (pairwise IoU < 0.1), ``low`` places them
independently (occasional overlaps), ``high`` places half of them beside an earlier card,
shifted by 15-32 % of its width, so pairs with IoU > 0.5 occur in about 90 % of the images (as
in CrowdHuman, where NMS at 0.5-0.6 removes true positives).

Everything is drawn from ``numpy.random.default_rng([seed, split, index])`` per image: the same
seed gives the same bytes, whatever the number of images. ``GENERATOR`` names the drawing rules;
it is part of the cache key, so a workspace never reuses images drawn by older rules.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES = tuple(f"digit_{i}" for i in range(10))
SPLITS = {"train": 0, "val": 1}
CROWD = {"none": (2, 5), "low": (3, 7), "high": (4, 9)}
GENERATOR = "cards-v2"


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits (1,797 8x8 scans), read from its data file.

    Reading ``sklearn/datasets/data/digits.csv.gz`` directly avoids importing scikit-learn
    (about 3 s); ``load_digits`` is the fallback and gives the same arrays.
    """
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec and spec.origin else None
    if path is not None and path.exists():
        data = np.loadtxt(path, delimiter=",")
        images, target = data[:, :-1].reshape(-1, 8, 8), data[:, -1]
    else:
        from sklearn.datasets import load_digits

        d = load_digits()
        images, target = d.images, d.target
    return (images / 16.0).astype(np.float32), target.astype(np.int64)


@dataclass(frozen=True)
class SynthObject:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    label: int
    ignore: bool = False


def _iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _background(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """A smooth colour field with mild low-frequency noise, grain and (sometimes) faint stripes."""
    c0, c1 = rng.uniform(50, 205, 3), rng.uniform(50, 205, 3)
    t = np.linspace(0, 1, w)[None, :, None] if rng.random() < 0.5 else np.linspace(0, 1, h)[:, None, None]
    base = c0 * (1 - t) + c1 * t
    base = np.broadcast_to(base, (h, w, 3)).copy()
    coarse = rng.normal(0, 10, (max(2, h // 16), max(2, w // 16), 3)).astype(np.float32)
    noise = np.stack([np.asarray(Image.fromarray(coarse[..., k]).resize((w, h), Image.BILINEAR))
                      for k in range(3)], -1)
    base += noise + rng.normal(0, 4, (h, w, 3))
    if rng.random() < 0.3:
        period = rng.uniform(6, 24)
        phase = np.sin(np.arange(w)[None, :] * 2 * np.pi / period + np.arange(h)[:, None] * rng.uniform(-0.5, 0.5))
        base += phase[..., None] * rng.uniform(3, 8)
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")


def _distractors(rng: np.random.Generator, draw: ImageDraw.ImageDraw, w: int, h: int) -> None:
    """Unlabelled thin outlines and strokes: edges that are not objects."""
    for _ in range(int(rng.integers(0, 4))):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        r = rng.uniform(3, min(w, h) / 6)
        col = tuple(int(v) for v in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse([x - r, y - r, x + r, y + r], outline=col, width=int(rng.integers(1, 3)))
        else:
            draw.line([x, y, x + rng.uniform(-3, 3) * r, y + rng.uniform(-3, 3) * r], fill=col,
                      width=int(rng.integers(1, 3)))


def _draw_object(rng: np.random.Generator, canvas: Image.Image, box, label: int) -> None:
    """A framed card: a dark border around a coloured field with the digit's glyph."""
    images, targets = _digits()
    choices = np.flatnonzero(targets == label)
    glyph = images[choices[int(rng.integers(0, len(choices)))]]
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    bw, bh = max(1, x2 - x1), max(1, y2 - y1)
    fill = rng.uniform(40, 255, 3)
    ink = 255 - fill + rng.normal(0, 20, 3)  # contrasting colour
    mask = np.asarray(Image.fromarray((glyph * 255).astype(np.uint8)).resize((bw, bh), Image.BILINEAR),
                      dtype=np.float32)[..., None] / 255.0
    patch = fill * (1 - mask) + ink * mask
    border = max(1, int(round(min(bw, bh) / 12)))
    frame = rng.uniform(0, 40, 3)  # a dark frame marks the full extent of the card
    patch[:border], patch[-border:], patch[:, :border], patch[:, -border:] = frame, frame, frame, frame
    canvas.paste(Image.fromarray(np.clip(patch, 0, 255).astype(np.uint8), "RGB"), (x1, y1))


def _visible_fractions(boxes: list[tuple], w: int, h: int) -> list[float]:
    """Visible area fraction of each box when they are drawn in list order (later = in front)."""
    covered = np.zeros((h, w), dtype=bool)
    out = [0.0] * len(boxes)
    for i in range(len(boxes) - 1, -1, -1):
        x1, y1, x2, y2 = (int(round(v)) for v in boxes[i])
        region = covered[y1:y2, x1:x2]
        out[i] = 1.0 - float(region.mean()) if region.size else 0.0
        covered[y1:y2, x1:x2] = True
    return out


def _depth_order(boxes: list[tuple]) -> list[tuple]:
    """Back to front: a card whose bottom edge is lower stands in front (as people in a street)."""
    return sorted(boxes, key=lambda b: (b[3], b[0]))


def _place(rng: np.random.Generator, w: int, h: int, crowd: str) -> list[tuple]:
    """Card boxes in drawing order (back to front).

    Cards are upright with height / width in [1.3, 1.7] (person-like) and heights log-uniform
    from 16 px to 4/5 of the short side. With ``high`` crowding, a card is placed beside an
    existing one with probability 0.5: same size within 10 %, shifted by 15-32 % of its width,
    which gives pairs with IoU between about 0.5 and 0.75. Every card keeps at least 15 % of its
    area visible, so its frame shows where it ends.
    """
    lo, hi = CROWD[crowd]
    n = int(rng.integers(lo, hi + 1))
    short = min(w, h)
    boxes: list[tuple] = []

    def size():
        s = float(np.exp(rng.uniform(np.log(16), np.log(0.8 * short))))
        aspect = float(rng.uniform(1.3, 1.7))
        return min(s / aspect, w - 1.0), min(s, h - 1.0)

    def inside(x, y, bw, bh):
        x = float(np.clip(x, 0, w - bw))
        y = float(np.clip(y, 0, h - bh))
        return (x, y, x + bw, y + bh)

    attempts = 0
    while len(boxes) < n and attempts < 50 * n:
        attempts += 1
        bw, bh = size()
        if crowd == "high" and boxes and rng.random() < 0.5:
            ref = boxes[int(rng.integers(0, len(boxes)))]
            rw, rh = ref[2] - ref[0], ref[3] - ref[1]
            scale = float(rng.uniform(0.9, 1.1))
            bw, bh = min(rw * scale, w - 1.0), min(rh * scale, h - 1.0)
            dx = float(rng.uniform(0.15, 0.32)) * rw * rng.choice([-1, 1])
            dy = float(rng.uniform(0.0, 0.06)) * rh * rng.choice([-1, 1])
            box = inside(ref[0] + dx, ref[1] + dy, bw, bh)
        else:
            box = inside(rng.uniform(0, w - bw), rng.uniform(0, h - bh), bw, bh)
        if crowd == "none" and any(_iou(box, b) >= 0.1 for b in boxes):
            continue
        if any(_iou(box, b) > 0.85 for b in boxes):  # no near duplicates
            continue
        candidate = _depth_order([*boxes, box])
        if min(_visible_fractions(candidate, w, h)) < 0.15:
            continue
        boxes = candidate
    return boxes


def make_scene(seed: int, split: str, index: int, crowd: str, min_size: int, max_size: int,
               ignore_regions: bool = False) -> tuple[Image.Image, list[SynthObject]]:
    """One deterministic scene and its objects."""
    rng = np.random.default_rng([seed, SPLITS[split], index])
    w, h = (int(v) for v in rng.integers(min_size, max_size + 1, 2))
    canvas = _background(rng, w, h)
    _distractors(rng, ImageDraw.Draw(canvas), w, h)
    objects = []
    for box in _place(rng, w, h, crowd):
        label = int(rng.integers(0, len(CLASSES)))
        _draw_object(rng, canvas, box, label)
        objects.append(SynthObject(box, label))
    if ignore_regions and rng.random() < 0.5:
        # a hatched region of tiny unreadable glyphs: annotated as an ignore ("mask") region
        rw, rh = rng.uniform(0.15, 0.35) * w, rng.uniform(0.15, 0.35) * h
        x, y = rng.uniform(0, w - rw), rng.uniform(0, h - rh)
        draw = ImageDraw.Draw(canvas)
        for k in range(int(rw // 4)):
            col = tuple(int(v) for v in rng.integers(0, 256, 3))
            draw.line([x + 4 * k, y, x + 4 * k + rng.uniform(-4, 4), y + rh], fill=col, width=2)
        objects.append(SynthObject((x, y, x + rw, y + rh), 0, ignore=True))
    return canvas, objects


def _coco(records: list[tuple[int, str, int, int, list[SynthObject]]]) -> dict:
    """Image i (the generator's index) has id i + 1, also when only some images are written."""
    images, anns = [], []
    for i, file, w, h, objects in records:
        images.append({"id": i + 1, "file_name": file, "width": w, "height": h})
        for o in objects:
            x1, y1, x2, y2 = (round(v, 2) for v in o.box)
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": o.label + 1,
                         "bbox": [x1, y1, round(x2 - x1, 2), round(y2 - y1, 2)],
                         "area": round((x2 - x1) * (y2 - y1), 2), "iscrowd": int(o.ignore)})
    cats = [{"id": i + 1, "name": name} for i, name in enumerate(CLASSES)]
    return {"images": images, "annotations": anns, "categories": cats}


def _odgt(records: list[tuple[int, str, int, int, list[SynthObject]]]) -> list[dict]:
    lines = []
    for _, file, w, h, objects in records:
        boxes = []
        for k, o in enumerate(objects):
            x1, y1, x2, y2 = (round(v, 2) for v in o.box)
            fbox = [x1, y1, round(x2 - x1, 2), round(y2 - y1, 2)]
            boxes.append({"tag": "mask" if o.ignore else "person", "fbox": fbox, "vbox": fbox,
                          "hbox": [x1, y1, fbox[2], round(fbox[3] / 4, 2)],
                          "head_attr": {"ignore": int(o.ignore), "occ": 0, "unsure": 0},
                          "extra": {"box_id": k, "occ": 0, "ignore": int(o.ignore)}})
        lines.append({"ID": Path(file).stem, "width": w, "height": h, "gtboxes": boxes})
    return lines


def write_split(out_dir: str | Path, split: str, num_images: int, *, seed: int = 0,
                crowd: str = "high", fmt: str = "coco", min_size: int = 128, max_size: int = 320,
                ignore_regions: bool = False, start: int = 0) -> Path:
    """Write ``<out_dir>/<split>/*.png`` and the annotation file; returns the annotation path.

    Images ``start .. num_images - 1`` are written (all by default). Image i keeps its file name
    ``{i:06d}.png`` and its id, so it is the same image, with the same annotations, as image i
    of a full generation.
    """
    if crowd not in CROWD:
        raise ValueError(f"unknown crowd level {crowd!r} (known: {', '.join(CROWD)})")
    if not 0 <= start <= num_images:
        raise ValueError(f"start {start} is not in [0, {num_images}]")
    out_dir = Path(out_dir)
    image_dir = out_dir / split
    image_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(start, num_images):
        img, objects = make_scene(seed, split, i, crowd, min_size, max_size,
                                  ignore_regions and fmt == "odgt")
        file = f"{i:06d}.png"
        img.save(image_dir / file, format="PNG", optimize=False, compress_level=6)
        records.append((i, file, img.width, img.height, objects))
    if fmt == "coco":
        path = out_dir / f"{split}.json"
        path.write_text(json.dumps(_coco(records), sort_keys=True))
    elif fmt == "odgt":
        path = out_dir / f"{split}.odgt"
        path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in _odgt(records)))
    else:
        raise ValueError(f"unknown format {fmt!r} (known: coco, odgt)")
    return path


def synthetic_kind(fmt: str) -> tuple[str, int]:
    """(annotation kind, number of classes) the dataset will have, known without generating it:
    COCO files carry the ten digits, odgt files one class (person) as CrowdHuman."""
    return ("coco", len(CLASSES)) if fmt == "coco" else ("crowdhuman", 1)


def ensure_dataset(cache_dir: str | Path, *, num_train: int, num_val: int, seed: int, crowd: str,
                   fmt: str, min_size: int, max_size: int, ignore_regions: bool,
                   val_range: tuple[int, int] | None = None) -> Path:
    """Generate the dataset into the cache once (atomically: parallel jobs may race).

    `val_range` (start, stop): only val images start..stop-1 are generated (stop <= num_val);
    such a dataset has a cache folder of its own, the full dataset's key is unchanged.
    """
    key = f"{GENERATOR}-{fmt}-{crowd}-s{seed}-n{num_train}-{num_val}-{min_size}-{max_size}-ign{int(ignore_regions)}"
    val_start, val_stop = 0, num_val
    if val_range is not None:
        val_start, val_stop = val_range
        if not 0 <= val_start < val_stop <= num_val:
            raise ValueError(f"val range [{val_start}, {val_stop}) is not inside the {num_val} val images")
        key += f"-val{val_start}-{val_stop}"
    final = Path(cache_dir) / "synthetic" / key
    if (final / "DONE").exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=final.parent))
    try:
        for split, start, stop in (("train", 0, num_train), ("val", val_start, val_stop)):
            write_split(tmp, split, stop, seed=seed, crowd=crowd, fmt=fmt, min_size=min_size,
                        max_size=max_size, ignore_regions=ignore_regions, start=start)
        (tmp / "DONE").write_text("ok\n")
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished first; theirs is identical
            if not (final / "DONE").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
