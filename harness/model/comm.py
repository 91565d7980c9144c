"""Loss normalisers averaged across processes under DDP (identity in one process)."""

from __future__ import annotations

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def mean_across_processes(value: torch.Tensor) -> torch.Tensor:
    """all_reduce(sum) / world_size, so that with DDP's gradient averaging a loss normalised by
    it equals the single-process loss summed over the whole batch / the batch's total."""
    if world_size() == 1:
        return value
    value = value.detach().clone()
    dist.all_reduce(value)
    return value / world_size()
