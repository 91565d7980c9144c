"""Reading and amending runs in the store: the only rule for which run counts for a run key,
and the few writes the scheduler and the sweep make outside a training process."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"sqlalchemy.*")


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    status: str  # MLflow's: RUNNING, FINISHED, FAILED, KILLED, SCHEDULED
    start_time: int  # ms
    failure: str | None = None  # the `harness.failure` tag
    heartbeat: float | None = None  # the `harness.heartbeat` tag (seconds since the epoch)
    attempt: int = 1
    metrics: dict[str, float] = field(default_factory=dict)  # final values


def runs_by_key(uri: str, experiment: str) -> dict[str, RunInfo]:
    """run key -> the run that counts for it, read with one paginated search.

    The rule (the only one in the harness): a key's latest FINISHED run if it has one, else its
    latest run by start time. A finished cell stays finished when a later attempt at the same key
    fails or is still running; `harness run --rerun` is how a user asks for it again.
    """
    from mlflow import MlflowClient, search_runs, set_tracking_uri

    set_tracking_uri(uri)
    if MlflowClient(uri).get_experiment_by_name(experiment) is None:
        return {}
    out: dict[str, RunInfo] = {}
    for run in search_runs(experiment_names=[experiment], output_format="list"):
        tags = run.data.tags
        key = tags.get("harness.run_key")
        if not key:
            continue
        hb = tags.get("harness.heartbeat")
        info = RunInfo(run.info.run_id, run.info.status, run.info.start_time or 0, tags.get("harness.failure"),
                       float(hb) if hb else None, int(tags.get("harness.attempt", "1")), dict(run.data.metrics))
        prev = out.get(key)
        if prev is None or _counts_more(info, prev):
            out[key] = info
    return out


def _counts_more(new: RunInfo, old: RunInfo) -> bool:
    new_done, old_done = new.status == "FINISHED", old.status == "FINISHED"
    if new_done != old_done:
        return new_done
    return new.start_time > old.start_time


def metric_history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) of one metric of one run, by step."""
    from mlflow import MlflowClient

    return sorted((m.step, m.value) for m in MlflowClient(uri).get_metric_history(run_id, key))


def write(client, run_id: str, *, params: dict | None = None, tags: dict | None = None,
          metrics: dict | None = None, step: int = 0) -> None:
    """One batch of params, tags and metrics (values as given; strings for params and tags)."""
    from mlflow.entities import Metric, Param, RunTag

    now = int(time.time() * 1000)
    client.log_batch(run_id, params=[Param(k, str(v)) for k, v in (params or {}).items()],
                     tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()],
                     metrics=[Metric(k, float(v), now, step) for k, v in (metrics or {}).items()])


def end_killed(uri: str, run_id: str, reason: str) -> None:
    """End a run that no process will finish as KILLED, with the reason in `harness.failure`."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    write(client, run_id, tags={"harness.failure": reason})
    client.set_terminated(run_id, status="KILLED")
