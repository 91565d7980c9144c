"""What a run shows in MLflow besides its curves: the params that identify its cell, the tags of
its axis values, and the names of its evaluation metrics.

Metric names. Every evaluation is scored twice, from the same predictions: with NMS and without
(`eval.nms.<name>`, `eval.nms_free.<name>`). Only those two names go to MLflow, so a column of
the runs table never mixes the two modes. `eval.<name>` without a mode means the cell's headline
mode (`eval.nms` of its config: NMS for FCOS, NMS-free for the one-to-one rows); readers resolve
it with `headline_key` / `with_headline`. Runs logged before this rule also carry `eval.<name>`
itself, with the same value. One function, `eval_key(mode, name)`, writes every such name, for
the writer (`logged_eval_metrics`) and the readers (reports, claims, plots, sweeps) alike, and
`parse_eval_key` reads one back. Values are fractions (0-1), as the evaluators return them;
reports print percent. Counts (`n_images`, `n_valid_gt`, `n_dets`) are not metrics: they are in
the run's `eval.json` artifact.
"""

from __future__ import annotations

from typing import Any

from harness.spec.schema import headline_mode

MODES = ("nms", "nms_free")
COUNTS = frozenset({"n_images", "n_valid_gt", "n_dets"})


def eval_key(mode: str | None, name: str) -> str:
    """The name of an evaluation metric in MLflow and in reports: `eval.<mode>.<name>`; without a
    mode, `eval.<name>`, the cell's headline mode."""
    return f"eval.{mode}.{name}" if mode else f"eval.{name}"


def parse_eval_key(key: str) -> tuple[str | None, str] | None:
    """`eval.<mode>.<name>` -> (mode, name), `eval.<name>` -> (None, name); None for any other key."""
    parts = key.split(".")
    if len(parts) == 3 and parts[0] == "eval" and parts[1] in MODES:
        return parts[1], parts[2]
    return (None, parts[1]) if len(parts) == 2 and parts[0] == "eval" else None


def logged_eval_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """An evaluation's values (`<mode>.<name>`, `harness.train.engine.score`) as MLflow metrics:
    `eval.<mode>.<name>` only, no counts."""
    out = {}
    for key, value in metrics.items():
        mode, _, name = key.rpartition(".")
        if mode in MODES and name not in COUNTS:
            out[eval_key(mode, name)] = value
    return out


def headline_key(key: str, nms: bool) -> str:
    """`eval.ap` -> `eval.nms.ap` or `eval.nms_free.ap` (the cell's headline mode, `eval.nms`);
    other keys as given."""
    parsed = parse_eval_key(key)
    return eval_key(headline_mode(nms), parsed[1]) if parsed and parsed[0] is None else key


def with_headline(metrics: dict[str, float], mode: str) -> dict[str, float]:
    """The final metrics of a run plus `eval.<name>` for each `eval.<mode>.<name>` of its headline
    mode (kept as logged where the run has it already)."""
    out = dict(metrics)
    for key, value in metrics.items():
        parsed = parse_eval_key(key)
        if parsed and parsed[0] == mode:
            out.setdefault(eval_key(None, parsed[1]), value)
    return out


def axis_tags(picks: dict[str, str]) -> dict[str, str]:
    """`harness.axis.<axis>` = the value the cell picks (searchable and groupable in the UI)."""
    return {f"harness.axis.{axis}": value for axis, value in picks.items()}


def cell_params(config: dict[str, Any], *, slurm: bool = False) -> dict[str, str]:
    """The params that identify a cell: its resolved config, flattened, minus what does not apply.

    Left out: unset options and sections (null values: no `model.aux` on a row without Aux, no
    `data.train` on synthetic data), `resources.slurm.*` off Slurm, a predictor's 3DMF options
    when it has no 3DMF, `train.momentum` with AdamW. The full config stays the run's
    `config.yaml` artifact.
    """
    from harness.track.mlflow_tracker import flatten

    flat = flatten(config)
    drop = set()
    for key, value in flat.items():
        if value == "None" or (not slurm and key.startswith("resources.slurm.")):
            drop.add(key)
        elif key.endswith(".filter") and value == "none":
            drop.update(f"{key}_{opt}" for opt in ("kernel", "tau", "score"))
    if flat.get("train.optimizer") == "adamw":
        drop.add("train.momentum")
    return {k: v for k, v in flat.items() if k not in drop}


def run_tags(cell, *, spec_file: str | None, attempt: int, world: int, platform: str, commit: str,
             workspace: str, sweep: dict | None = None) -> dict[str, Any]:
    """The tags a cell's run starts with: what identifies it (run key, row, dataset, seed, axis
    values), where it ran (host, world size, platform, Slurm job, commit) and, for a sweep
    trial, its place in the sweep (a nested child of the sweep's run). workspace: `workspace_tag`.
    MLflow's own source tags too (`SOURCE_TAGS`), so that its UI shows the commit and the program."""
    import os

    tags = {"harness.run_key": cell.run_key, "harness.row": cell.row, "harness.dataset": cell.dataset,
            "harness.seed": cell.seed, "harness.spec": spec_file or "", "harness.git_commit": commit,
            "harness.attempt": attempt, "harness.spec_name": cell.spec_name,
            "harness.host": os.uname().nodename, "harness.world_size": world, "harness.platform": platform,
            "harness.workspace": workspace,
            "harness.headline": cell.config.eval.headline, **axis_tags(cell.picks),
            **source_tags("harness train", commit)}
    if os.environ.get("SLURM_JOB_ID"):
        tags["harness.slurm_job"] = os.environ["SLURM_JOB_ID"]
    if sweep:
        tags.update({"mlflow.parentRunId": sweep["parent_run"], "harness.trial": sweep["trial"],
                     "harness.sweep": sweep["sweep"], "harness.sweep_phase": sweep.get("phase", "search")})
    return tags


#: tags only a live run needs: dropped when it ends FINISHED (`spool.Sender`)
LIVE_ONLY_TAGS = ("harness.heartbeat",)


def source_tags(program: str, commit: str) -> dict[str, str]:
    """MLflow's source tags: its runs table's Source column and the run page's commit."""
    tags = {"mlflow.source.name": program, "mlflow.source.type": "LOCAL"}
    if commit and commit != "unknown":
        tags["mlflow.source.git.commit"] = commit
    return tags


def workspace_tag(workspace) -> str:
    """`host:/absolute/workspace`: which workspace's lock guards a run (`runs.end_abandoned`)."""
    import os
    from pathlib import Path

    return f"{os.uname().nodename}:{Path(workspace).resolve()}"


def run_params(cell, sched) -> dict[str, str]:
    """`cell_params` of the cell's config, plus the schedule actually trained where the linear
    scaling rule changed it (`schedule.*`)."""
    import os

    params = cell_params(cell.config.model_dump(mode="json"), slurm=bool(os.environ.get("SLURM_JOB_ID")))
    if sched.scale != 1.0:
        params.update({"schedule.lr": sched.base_lr, "schedule.max_iter": sched.max_iter,
                       "schedule.steps": list(sched.steps), "schedule.warmup_iters": sched.warmup_iters,
                       "schedule.linear_scale": sched.scale})
    if sched.iters_per_epoch:  # train.epochs: the iterations the training set's size made
        params.update({"schedule.max_iter": sched.max_iter, "schedule.steps": list(sched.steps),
                       "schedule.iters_per_epoch": sched.iters_per_epoch})
    return params


#: Measured cost of a run (`harness/train/evaluation.py`), one name per device kind so that a
#: column never mixes a GPU number with a CPU one. `memory`: peak training memory in GiB summed
#: over the processes (CUDA: `torch.cuda.max_memory_allocated`; CPU: peak resident set size,
#: `ru_maxrss`); `time`: model forward + post-processing per test image in milliseconds.
PERF_KEYS = {"cuda": {"memory": "perf.train_mem_gb", "time": "perf.test_ms_per_image"},
             "cpu": {"memory": "perf.cpu.train_rss_gb", "time": "perf.cpu.test_ms_per_image"}}
#: The COCO test-dev server's AP of a run (a fraction), recorded by `harness record-testdev`.
TESTDEV_AP = "testdev.ap"


def perf_metrics(device: str, *, memory_gb: float, ms_per_image: float | None) -> dict[str, float]:
    """A run's measured cost under its device's names (`PERF_KEYS`; every device but CUDA is
    measured as a CPU); no time when no image was timed."""
    keys = PERF_KEYS["cuda" if device == "cuda" else "cpu"]
    out = {keys["memory"]: memory_gb}
    if ms_per_image is not None:
        out[keys["time"]] = ms_per_image
    return out
