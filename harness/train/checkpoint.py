"""Checkpoints: written atomically (temp file + os.replace), read with weights_only=True."""

from __future__ import annotations

import os
import random
import warnings
from pathlib import Path

import numpy as np
import torch

from harness.formats.atomic import NoSpace, check_space, free_bytes, is_no_space


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(tuple(state["numpy"]))
    st = state["python"]
    random.setstate((st[0], tuple(st[1]), st[2]))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(path: str | Path, *, model, optimizer, scheduler, scaler, iteration: int, run_id: str | None,
         run_key: str, health: dict | None = None, ema: dict | None = None) -> None:
    """health: the HealthMonitor's state (plain numbers); checkpoints without it still load.
    ema: the weight average's state (train.ema), saved only when it is on."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else {}, "iteration": iteration,
        "run_id": run_id or "", "run_key": run_key, "rng": _plain(rng_state()), "health": dict(health or {}),
    }
    if ema is not None:
        state["ema"] = ema
    need = _nbytes(state)
    check_space(path, need, "the checkpoint")  # a full disk is one readable line, not torch's "unexpected pos"
    tmp = path.with_name(path.name + f"{TMP_MARK}{os.getpid()}")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except BaseException as exc:  # a full disk, a signal: never leave the temporary file behind
        tmp.unlink(missing_ok=True)
        if not isinstance(exc, NoSpace) and (is_no_space(exc) or _short_of(path, need)):
            raise NoSpace(path, need, "the checkpoint") from exc
        raise


#: a save in progress writes `checkpoint.pt<TMP_MARK><pid>` beside the checkpoint
TMP_MARK = ".tmp"


def leftovers(path: str | Path) -> list[Path]:
    """Temporary files of saves a kill -9 interrupted (remove them while holding the cell's lock)."""
    path = Path(path)
    return sorted(path.parent.glob(f"{path.name}{TMP_MARK}*"))


def _nbytes(obj) -> int:
    """About what `torch.save` writes for `obj`: its tensors' bytes."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_nbytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(_nbytes(v) for v in obj)
    return 0


def _short_of(path: Path, need: int) -> bool:
    """torch's zip writer reports a full disk as a position mismatch: ask the device."""
    free = free_bytes(path)
    return free is not None and free < need


def _plain(state: dict) -> dict:
    """numpy's RNG state as tensors/lists so that weights_only loading accepts it."""
    kind, keys, pos, has_gauss, cached = state["numpy"]
    py = state["python"]
    return {"torch": state["torch"], "cuda": state["cuda"],
            "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(cached)],
            "python": [py[0], list(py[1]), py[2]]}


def load(path: str | Path) -> dict:
    with warnings.catch_warnings():  # torch warns about the pickle protocol of a foreign file
        warnings.simplefilter("ignore")
        state = torch.load(path, map_location="cpu", weights_only=True)
    kind, keys, pos, has_gauss, cached = state["rng"]["numpy"]
    state["rng"]["numpy"] = (kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached)
    return state
