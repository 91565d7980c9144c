"""Training health: when a run counts as diverged, as two small pure rules.

`HealthMonitor.update` sees the total loss of every iteration, `check_eval` the number of
headline detections of every evaluation; each returns None, or the reason ("diverged: ...
at iteration N") that ends the run FAILED. Nothing here logs or touches torch: train/run
raises `Unhealthy` with the reason and talks to the tracker. The monitor's state travels in
the checkpoint (`state_dict` / `load_state_dict`), so a resumed run flags exactly where an
uninterrupted one would. The rules and their defaults are documented in
harness/spec/schema.py (HealthConfig).
"""

from __future__ import annotations

import math


class Unhealthy(RuntimeError):
    """A health rule flagged the run; the message is the reason ("diverged: ...")."""


class HealthMonitor:
    """The loss-ratio rule (EMA of the total loss vs its running minimum) and the
    zero-detections rule.

    enabled: False = never flags. ema: smoothing factor of the loss EMA. loss_ratio, window:
    flagged when the EMA stays above loss_ratio x its running minimum for `window` consecutive
    iterations. min_iter: first iteration whose EMA enters the minimum (and can be flagged).
    dets_from: first iteration at which an evaluation with zero detections is divergence
    (None = that rule is off).
    """

    def __init__(self, *, enabled: bool = True, ema: float = 0.98, loss_ratio: float = 4.0, window: int = 20,
                 min_iter: int = 0, dets_from: int | None = None, min_ap: float | None = None):
        if not 0.0 <= ema < 1.0:
            raise ValueError(f"ema must be in [0, 1), got {ema}")
        if loss_ratio <= 1.0 or window < 1:
            raise ValueError(f"loss_ratio must be > 1 and window >= 1, got {loss_ratio}, {window}")
        self.enabled, self.ema, self.loss_ratio, self.window = enabled, ema, loss_ratio, window
        self.min_iter, self.dets_from, self.min_ap = min_iter, dets_from, min_ap
        self.smoothed: float | None = None  # the loss EMA
        self.minimum: float | None = None  # its running minimum since min_iter
        self.above = 0  # consecutive iterations with smoothed > loss_ratio * minimum

    def update(self, iteration: int, total_loss: float) -> str | None:
        """Feed the total loss of `iteration` (1-based, every iteration in order)."""
        if not self.enabled:
            return None
        if not math.isfinite(total_loss):
            return f"diverged: non-finite total loss {total_loss} at iteration {iteration}"
        x = float(total_loss)
        self.smoothed = x if self.smoothed is None else self.ema * self.smoothed + (1.0 - self.ema) * x
        if iteration < self.min_iter:
            return None
        if self.minimum is None or self.smoothed < self.minimum:
            self.minimum = self.smoothed
        if self.minimum > 0.0 and self.smoothed > self.loss_ratio * self.minimum:
            self.above += 1
        else:
            self.above = 0
        if self.above >= self.window:
            return (f"diverged: total loss EMA {self.smoothed:.4g} > {self.loss_ratio:g} x its minimum "
                    f"{self.minimum:.4g} for {self.window} iterations at iteration {iteration}")
        return None

    def check_eval(self, iteration: int, n_dets: int) -> str | None:
        """Check an evaluation at `iteration` whose headline postprocess returned `n_dets`
        detections on the whole val set."""
        if not self.enabled or self.dets_from is None or iteration < self.dets_from or n_dets > 0:
            return None
        return (f"diverged: 0 detections on the whole val set (rule from iteration {self.dets_from}) "
                f"at iteration {iteration}")

    def check_quality(self, iteration: int, ap: float) -> str | None:
        """Check the headline AP (a fraction) of an evaluation at `iteration` (from dets_from on,
        like the zero-detections rule): below min_ap the detections are noise."""
        if (not self.enabled or self.dets_from is None or self.min_ap is None or iteration < self.dets_from
                or not math.isfinite(ap) or ap >= self.min_ap):
            return None
        return (f"diverged: headline AP {100 * ap:.2f} % < {100 * self.min_ap:g} % (rule from iteration "
                f"{self.dets_from}) at iteration {iteration}")

    def state_dict(self) -> dict:
        """Plain numbers (loadable with torch.load(weights_only=True))."""
        return {"smoothed": self.smoothed, "minimum": self.minimum, "above": self.above}

    def load_state_dict(self, state: dict | None) -> None:
        """Restore; None or {} (a checkpoint written before health existed) starts afresh."""
        state = state or {}
        self.smoothed, self.minimum = state.get("smoothed"), state.get("minimum")
        self.above = int(state.get("above", 0))


def build_monitor(health, *, max_iter: int, warmup_iters: int) -> HealthMonitor:
    """The monitor of a `train.health` section (HealthConfig) for a run's schedule."""
    dets_from = None
    if health.dets_after is not None:
        dets_from = max(warmup_iters, math.ceil(health.dets_after * max_iter), health.dets_min_iter)
    return HealthMonitor(enabled=health.enabled, ema=health.ema, loss_ratio=health.loss_ratio,
                         window=health.window, min_iter=health.min_iter, dets_from=dets_from,
                         min_ap=health.min_ap)
