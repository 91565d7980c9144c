"""Evaluation speed (a benchmark, not a test): prints times and ratios measured in one run.

- COCO: 5,000 images x 100 detections, pycocotools vs faster-coco-eval (same numbers).
- CrowdHuman: 4,370 images x 500 detections (the val set's size), our evaluator, one core.

    python bench/eval_speed.py [--coco-images 5000] [--ch-images 4370] [--skip-coco]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from harness.evaluation.coco import evaluate_coco  # noqa: E402
from harness.evaluation.crowdhuman import CHImage, evaluate_images  # noqa: E402


def coco_problem(n_images: int, dets_per_image: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    cats = [{"id": i + 1, "name": str(i)} for i in range(80)]
    images, anns, results = [], [], []
    for i in range(n_images):
        images.append({"id": i + 1, "width": 640, "height": 480})
        n = int(rng.integers(1, 15))
        xy = rng.uniform(0, 500, (n, 2))
        wh = rng.uniform(4, 200, (n, 2))
        cls = rng.integers(1, 81, n)
        for k in range(n):
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(cls[k]),
                         "bbox": [*xy[k], *wh[k]], "area": float(wh[k].prod()), "iscrowd": 0})
        src = rng.integers(0, n, dets_per_image)
        jit = rng.normal(0, 6, (dets_per_image, 4))
        for k in range(dets_per_image):
            g = src[k]
            cat = int(cls[g]) if rng.random() < 0.7 else int(rng.integers(1, 81))
            results.append({"image_id": i + 1, "category_id": cat,
                            "bbox": [xy[g, 0] + jit[k, 0], xy[g, 1] + jit[k, 1],
                                     max(1.0, wh[g, 0] + jit[k, 2]), max(1.0, wh[g, 1] + jit[k, 3])],
                            "score": float(rng.random())})
    return {"images": images, "annotations": anns, "categories": cats}, results


def crowdhuman_problem(n_images: int, dets_per_image: int, seed: int = 0) -> list[CHImage]:
    rng = np.random.default_rng(seed)
    images = []
    for i in range(n_images):
        W, H = 1000.0, 750.0
        n = int(rng.integers(5, 40))
        xy = rng.uniform(0, [W - 50, H - 100], (n, 2))
        wh = rng.uniform([10, 30], [150, 400], (n, 2))
        gt = np.concatenate([xy, xy + wh], 1)
        labels = np.where(rng.random(n) < 0.1, -1, 1)
        src = rng.integers(0, n, dets_per_image)
        d = gt[src] + rng.normal(0, 8, (dets_per_image, 4))
        d[:, 2:] = np.maximum(d[:, 2:], d[:, :2] + 1)
        im = CHImage(str(i), W, H, gt, labels, d, rng.random(dets_per_image), True)
        images.append(im)
    return images


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--coco-images", type=int, default=5000)
    ap.add_argument("--ch-images", type=int, default=4370)
    ap.add_argument("--skip-coco", action="store_true")
    args = ap.parse_args()

    images = crowdhuman_problem(args.ch_images, 500)
    t = time.perf_counter()
    r = evaluate_images(images)
    dt_ch = time.perf_counter() - t
    print(f"CrowdHuman {args.ch_images} images x 500 dets: {dt_ch:.1f} s "
          f"(target < 30 s; AP {r.ap:.4f}, mMR {r.mmr:.4f}, recall {r.recall:.4f})")

    if args.skip_coco:
        return
    gt, results = coco_problem(args.coco_images, 100)
    t = time.perf_counter()
    slow = evaluate_coco(gt, results, "pycocotools")
    dt_slow = time.perf_counter() - t
    t = time.perf_counter()
    fast = evaluate_coco(gt, results, "faster_coco_eval")
    dt_fast = time.perf_counter() - t
    worst = max(abs(slow[k] - fast[k]) for k in slow)
    print(f"COCO {args.coco_images} images x 100 dets: pycocotools {dt_slow:.1f} s, "
          f"faster-coco-eval {dt_fast:.1f} s, ratio {dt_slow / dt_fast:.1f}x, "
          f"max |difference| {worst:.1e} (AP {slow['ap']:.4f})")


if __name__ == "__main__":
    main()
