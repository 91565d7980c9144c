"""What a cell's log says in words: the clock time of its events and its final evaluation."""

from __future__ import annotations

import time

from harness.track.names import COUNTS, MODES


def clock(t: float | None = None) -> str:
    """A time of day as the log prints it: the local clock, `11:32:05`."""
    return time.strftime("%H:%M:%S", time.localtime(time.time() if t is None else t))


def evaluation_line(cell_id: str, metrics: dict[str, float], headline: str, main_metric: str = "") -> str:
    """The final evaluation in percent: every metric of the headline postprocess, the other one's
    main metric (`main_metric`); counts left out, a metric without ground truth (-1) as n/a."""
    if not metrics:
        return f"{cell_id}: no evaluation"

    def shown(name: str, v) -> str:
        return f"{name} {100 * v:.2f} %" if isinstance(v, float) and v >= 0 else f"{name} n/a"

    parts = []
    for mode in sorted(MODES, key=lambda m: m != headline):
        values = [(k.partition(".")[2], v) for k, v in metrics.items()
                  if k.partition(".")[0] == mode and k.partition(".")[2] not in COUNTS
                  and (mode == headline or k.partition(".")[2] == main_metric)]
        if values:
            parts.append(f"{mode}{' (headline)' if mode == headline else ''}: "
                         + ", ".join(shown(name, v) for name, v in values))
    return f"{cell_id}: final evaluation: " + "; ".join(parts)


def schedule_lines(cell_id: str, train, sched) -> list[str]:
    """What the schedule derived from the config: the linear scaling rule's lr and length, and
    max_iter and steps from `train.epochs`."""
    lines = []
    if sched.scale != 1.0:
        lines.append(f"{cell_id}: linear scaling rule: batch {train.ims_per_batch} vs reference "
                     f"{train.reference_batch}: lr {train.base_lr} -> {sched.base_lr:g}, max_iter "
                     f"{train.max_iter} -> {sched.max_iter}")
    if sched.iters_per_epoch:
        lines.append(f"{cell_id}: {train.epochs} epochs of {sched.iters_per_epoch} iterations: max_iter "
                     f"{sched.max_iter}, steps {list(sched.steps)}")
    return lines
