"""POTO's Hungarian step (a benchmark, not a test): the restricted solve vs the full matrix.

One image at 800 x 1333 (R = 21,824 locations over P3-P7), G GTs with POTO's center prior;
prints ms per image for G in {10, 50, 150}, the speed-up, that both reach the same optimum,
and how often the two solves pick the same location for GTs whose prior is empty.

    python bench/assign_speed.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.optimize import linear_sum_assignment  # noqa: E402

from harness.model.assign.aware import poto_quality  # noqa: E402
from harness.model.assign.common import AssignInput, center_prior  # noqa: E402
from harness.model.assign.hungarian import solve_restricted  # noqa: E402
from harness.model.points import make_grid  # noqa: E402

STRIDES = [8, 16, 32, 64, 128]


def problem(g: int, seed: int):
    h, w = 800, 1344  # padded to a multiple of 32
    sizes = [((h + s - 1) // s, (w + s - 1) // s) for s in STRIDES]
    grid = make_grid(sizes, STRIDES)
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, [w - 20, h - 20], (g, 2))
    wh = np.exp(rng.uniform(np.log(4), np.log(500), (g, 2)))  # tiny ones have empty priors
    boxes = torch.tensor(np.concatenate([xy, np.minimum(xy + wh, [w, h])], 1), dtype=torch.float32)
    r = grid.points.shape[0]
    inp = AssignInput(grid=grid, gt_boxes=boxes, gt_labels=torch.zeros(g, dtype=torch.long),
                      scores=torch.rand(r, 1, generator=torch.Generator().manual_seed(seed)),
                      pred_boxes=torch.cat([grid.points - 20, grid.points + 20], 1))
    prior = center_prior(grid.points, grid.strides, boxes, 1.5)
    return poto_quality(inp, 0.8, prior, -1.0), prior


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    same_empty = total_empty = 0
    for g in (10, 50, 150):
        t_full = t_restr = 0.0
        for rep in range(args.repeats):
            q, prior = problem(g, seed=rep)
            t = time.perf_counter()
            fr, fc = linear_sum_assignment(q.numpy(), maximize=True)
            t_full += time.perf_counter() - t
            t = time.perf_counter()
            rr, rc = solve_restricted(q, prior, maximize=True)
            t_restr += time.perf_counter() - t
            qn = q.numpy()
            assert abs(qn[fr, fc].sum() - qn[rr, rc].sum()) < 1e-4
            empty = ~prior.any(dim=1).numpy()
            full_choice, restr_choice = dict(zip(fr, fc, strict=True)), dict(zip(rr, rc, strict=True))
            for gi in np.flatnonzero(empty):
                total_empty += 1
                same_empty += full_choice[gi] == restr_choice[gi]
        r = q.shape[1]
        print(f"G={g:4d} R={r}: full {1000 * t_full / args.repeats:8.1f} ms/image, restricted "
              f"{1000 * t_restr / args.repeats:6.1f} ms/image, speed-up {t_full / t_restr:6.1f}x, same optimum")
    print(f"GTs with an empty prior: {total_empty}; restricted picks the full solve's location for "
          f"{same_empty} ({100 * same_empty / max(1, total_empty):.0f}%)")


if __name__ == "__main__":
    main()
