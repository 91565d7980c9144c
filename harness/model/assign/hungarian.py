"""Hungarian solves: on the full [G, R] matrix, and an exactly equivalent restricted one.

POTO's matrix has a constant value (-1 in DeFCN, 0 in DATE) at every location outside every
GT's prior. All those columns are identical, so an optimal matching uses at most G of them and
it does not matter which: solving on the prior columns plus G stand-ins for "outside every
prior" has the same optimum. The stand-ins are the G lowest-index locations outside every
prior, in index order (what the full solve tends to pick among equal columns). The restricted
matrix is usually ~100x smaller and is copied to the host once per image.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment


def _finite(value: torch.Tensor, maximize: bool) -> np.ndarray:
    """Non-finite entries (diverged predictions) become the worst value, so that the solve
    still runs and the non-finite loss is what reports the divergence."""
    worst = -1e8 if maximize else 1e8
    return torch.nan_to_num(value, nan=worst, posinf=1e8, neginf=-1e8).cpu().numpy()


def solve_full(value: torch.Tensor, maximize: bool) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of an optimal assignment of the [G, R] matrix."""
    return linear_sum_assignment(_finite(value, maximize), maximize=maximize)


def solve_restricted(value: torch.Tensor, in_prior: torch.Tensor, maximize: bool) -> tuple[np.ndarray, np.ndarray]:
    """Same optimum as `solve_full` when every column outside `in_prior` (any GT) is constant.

    value: [G, R]; in_prior: [G, R] bool. Returns (rows, cols) with cols in [0, R).
    """
    g, r = value.shape
    used = in_prior.any(dim=0)
    prior_cols = torch.nonzero(used).flatten()
    free_cols = torch.nonzero(~used).flatten()[:g]
    cols = torch.cat([prior_cols, free_cols]).sort().values  # keep the original column order
    rows, sub = linear_sum_assignment(_finite(value[:, cols], maximize), maximize=maximize)
    return rows, cols.cpu().numpy()[sub]
