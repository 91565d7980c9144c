"""CrowdHuman evaluator: hand-worked cases and a naive transcription of the rule."""

import math

import numpy as np
import pytest

from harness.evaluation.crowdhuman import (
    FPPI_REFS,
    CHImage,
    evaluate_images,
    images_from_records,
    match_image,
)


def image(gts, dets=(), ignore=(), w=100, h=100, iid="a"):
    """gts/ignore: xyxy boxes; dets: (x1, y1, x2, y2, score)."""
    boxes = list(gts) + list(ignore)
    labels = [1] * len(gts) + [-1] * len(ignore)
    im = CHImage(iid, w, h, np.array(boxes, dtype=float).reshape(-1, 4), np.array(labels))
    if dets:
        d = np.array(dets, dtype=float)
        im.dt_boxes, im.dt_scores, im.has_dets = d[:, :4], d[:, 4], True
    return im


def test_perfect_detections():
    im = image([(0, 0, 10, 10), (20, 20, 40, 40)], [(0, 0, 10, 10, .9), (20, 20, 40, 40, .8)])
    r = evaluate_images([im])
    # the trapezoid starts between the first and second detections: (1.0 - 0.5) * 1.0
    assert r.ap == pytest.approx(0.5) and r.recall == 1.0 and r.mmr == 0.0
    assert (r.n_images, r.n_valid_gt, r.n_dets) == (1, 2, 2)


def test_single_detection_gives_ap_zero():
    r = evaluate_images([image([(0, 0, 10, 10)], [(0, 0, 10, 10, .9)])])
    assert r.ap == 0.0 and r.recall == 1.0


def test_only_false_positives():
    im = image([(0, 0, 10, 10)], [(50, 50, 60, 60, .9), (70, 70, 80, 80, .8)])
    r = evaluate_images([im])
    assert r.ap == 0.0 and r.recall == 0.0 and r.mmr == 1.0


def test_ignore_region_swallows_a_detection():
    im = image([(0, 0, 10, 10)], [(50, 50, 60, 60, .95), (0, 0, 10, 10, .9)],
               ignore=[(45, 45, 70, 70)])
    scores, tp = match_image(im)
    assert list(scores) == [.9] and list(tp) == [True]  # the one in the ignore box is dropped
    r = evaluate_images([im])
    assert r.n_valid_gt == 1 and r.recall == 1.0


def test_valid_match_beats_ignore_region():
    # IoA with the ignore region is 1, but the valid GT (listed after it) still wins
    im = CHImage("a", 100, 100, np.array([[0, 0, 50, 50], [0, 0, 10, 10.]]), np.array([-1, 1]))
    im.dt_boxes, im.dt_scores = np.array([[0, 0, 10, 10.]]), np.array([.9])
    assert list(match_image(im)[1]) == [True]


def test_detection_between_two_overlapping_gts_takes_the_best_iou():
    gts = [(0, 0, 10, 10), (2, 0, 12, 10)]
    det = (1.5, 0, 11.5, 10, .9)  # IoU 0.8 with the second... check both
    im = image(gts, [det, (0, 0, 10, 10, .8)])
    scores, tp = match_image(im)
    assert list(tp) == [True, True]  # first det takes GT 2 (higher IoU), second takes GT 1


def test_duplicates_are_false_positives():
    im = image([(0, 0, 10, 10)], [(0, 0, 10, 10, .9), (0, 0, 10, 10, .8), (0, 0, 10, 10, .7)])
    scores, tp = match_image(im)
    assert list(tp) == [True, False, False]


def test_image_without_gt_and_image_without_detections():
    empty_gt = image([], [(0, 0, 10, 10, .9)], iid="x")
    no_dets = image([(0, 0, 10, 10)], iid="y")
    r = evaluate_images([image([(0, 0, 10, 10)], [(0, 0, 10, 10, .5)]), empty_gt, no_dets])
    assert r.n_images == 3 and r.n_valid_gt == 2 and r.n_dets == 2
    assert r.recall == 0.5
    # pooled: FP (.9): r=0, p=0; TP (.5): r=.5, p=.5 -> AP = (.5 - 0) * (0 + .5) / 2
    assert r.ap == 0.125


def test_no_detections_at_all():
    r = evaluate_images([image([(0, 0, 10, 10)])])
    assert r.ap == 0.0 and r.recall == 0.0 and r.mmr == 1.0  # every GT missed at every FPPI


def test_boundary_at_exactly_half():
    # IoU = 50 / (100 + 50 - 50 + 1e-6) is just below 0.5 -> not matched (strict '>' with eps)
    im = image([(0, 0, 10, 10)], [(0, 0, 10, 5, .9)])
    assert list(match_image(im)[1]) == [False]
    # IoA = 50 / (100 + 1e-6) < 0.5: not swallowed by an ignore region of half its size
    im = image([], [(0, 0, 10, 10, .9)], ignore=[(0, 0, 10, 5)])
    assert len(match_image(im)[0]) == 1


def test_clipping_uses_width_minus_one_for_x1():
    im = image([(0, 0, 10, 10)], [(-5, -5, 10, 10, .9)], w=10, h=10)
    assert list(match_image(im)[1]) == [True]


def test_records_background_tag_and_extra_ignore():
    gt = [{"ID": "a", "width": 50, "height": 50, "gtboxes": [
        {"tag": "person", "fbox": [0, 0, 10, 10]},
        {"tag": "mask", "fbox": [20, 20, 10, 10]},
        {"tag": "person", "fbox": [30, 30, 5, 5], "extra": {"ignore": 1}},
        {"tag": "background", "fbox": [40, 0, 5, 5]},
    ]}]
    (im,) = images_from_records(gt, {})
    assert list(im.gt_labels) == [1, -1, -1, 0]
    assert evaluate_images([im]).n_valid_gt == 2  # the 'background' tag counts, as officially


# ------------------------------------------------------------------ naive reference


def naive(images):
    """The rule written as plainly as possible: loops over every detection-GT pair."""
    scorelist, n_gt, n_ign = [], 0, 0
    for im in images:
        n_gt += len(im.gt_labels)
        n_ign += int(sum(1 for lab in im.gt_labels if lab == -1))
        if len(im.dt_scores) == 0:
            continue
        dts = sorted([(list(b), s) for b, s in zip(im.dt_boxes, im.dt_scores, strict=True)],
                     key=lambda x: x[1], reverse=True)
        gts = sorted([(list(b), lab) for b, lab in zip(im.gt_boxes, im.gt_labels, strict=True)],
                     key=lambda x: x[1], reverse=True)
        W, H = im.width, im.height

        def clip(b, W=W, H=H):
            return [min(max(b[0], 0), W - 1), min(max(b[1], 0), H - 1),
                    max(min(b[2], W), 0), max(min(b[3], H), 0)]

        dts = [(clip(b), s) for b, s in dts]
        gts = [(clip(b), lab) for b, lab in gts]
        matched = [False] * len(gts)
        for d, s in dts:
            best, pos = 0.5, -1
            for j, (g, lab) in enumerate(gts):
                if matched[j]:
                    continue
                iw = min(d[2], g[2]) - max(d[0], g[0])
                ih = min(d[3], g[3]) - max(d[1], g[1])
                inter = max(0, iw) * max(0, ih)
                da = (d[2] - d[0]) * (d[3] - d[1])
                ga = (g[2] - g[0]) * (g[3] - g[1])
                if lab > 0:
                    ov = inter / (da + ga - inter + 1e-6)
                    if ov > best:
                        best, pos = ov, j
                else:
                    if pos >= 0:
                        break
                    if inter / (da + 1e-6) > 0.5:
                        best, pos = inter / (da + 1e-6), j
            if pos >= 0:
                if gts[pos][1] > 0:
                    matched[pos] = True
                    scorelist.append((s, 1))
            else:
                scorelist.append((s, 0))
    scorelist.sort(key=lambda x: x[0], reverse=True)
    total = n_gt - n_ign
    tp = fp = 0.0
    rec, prec, fppi, mr = [], [], [], []
    for _, t in scorelist:
        tp, fp = tp + (t == 1), fp + (t == 0)
        rec.append(tp / (tp + (total - tp)))
        prec.append(tp / (tp + fp))
        fppi.append(fp / len(images))
        mr.append(1 - rec[-1])
    ap = 0
    for i in range(1, len(rec)):
        ap += (rec[i] - rec[i - 1]) * ((prec[i - 1] + prec[i]) / 2)
    samples = []
    for ref in FPPI_REFS:
        idx = next((k for k, f in enumerate(fppi) if f >= ref), len(fppi) - 1)
        if idx >= 0:
            samples.append(mr[idx])
    with np.errstate(divide="ignore"):
        mmr = float(np.exp(np.log(np.array(samples)).mean())) if samples else 1.0  # no detections: MR 1
    return ap, mmr, (rec[-1] if rec else 0.0)


def random_problem(rng, n_images):
    images = []
    for k in range(n_images):
        W, H = int(rng.integers(40, 120)), int(rng.integers(40, 120))
        n_gt = int(rng.integers(0, 8))
        xy = rng.uniform(-10, [W, H, W, H], size=(n_gt, 4)).round(int(rng.integers(0, 2)))
        gts = np.concatenate([np.minimum(xy[:, :2], xy[:, 2:]), np.maximum(xy[:, :2], xy[:, 2:])], 1)
        labels = rng.choice([1, 1, 1, -1, 0], size=n_gt) if n_gt else np.zeros(0, int)
        im = CHImage(str(k), W, H, gts.reshape(-1, 4), labels.astype(int))
        if rng.random() < 0.9:
            n_dt = int(rng.integers(0, 15))
            # detections near GTs (to make matches and exact ties) plus random ones
            src = gts[rng.integers(0, n_gt, n_dt)] if n_gt else rng.uniform(0, 50, (n_dt, 4))
            jitter = rng.choice([0, 0, 1, 2.5, 5], size=(n_dt, 4))
            d = src + jitter * rng.choice([-1, 1], size=(n_dt, 4))
            d = np.concatenate([np.minimum(d[:, :2], d[:, 2:]), np.maximum(d[:, :2], d[:, 2:])], 1)
            scores = rng.choice([0.9, 0.5, 0.3], size=n_dt) if rng.random() < 0.3 else rng.random(n_dt)
            im.dt_boxes, im.dt_scores, im.has_dets = d.reshape(-1, 4), scores.astype(float), True
        images.append(im)
    return images


@pytest.mark.parametrize("seed", range(300))
def test_equals_the_naive_rule(seed):
    rng = np.random.default_rng(seed)
    images = random_problem(rng, int(rng.integers(1, 6)))
    if sum(len(i.gt_labels) for i in images) - sum(int((i.gt_labels == -1).sum()) for i in images) == 0:
        return
    ap, mmr, recall = naive(images)
    r = evaluate_images(images)
    assert r.ap == ap
    assert r.recall == recall
    assert (math.isnan(r.mmr) and math.isnan(mmr)) or r.mmr == mmr
