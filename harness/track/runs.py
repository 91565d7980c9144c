"""Reading and amending runs in the store: the only rule for which run counts for a run key,
and the few writes the scheduler and the sweep make outside a training process."""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

from harness.track.store import read_only, sqlite_file  # noqa: F401 - read_only: part of this module's API

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
    finished_runs: int = 0  # FINISHED runs with this key (more than 1: the latest counts)
    commit: str = ""  # the `harness.git_commit` tag
    #: every FINISHED run of this key as (run id, git commit, start time in ms), latest first
    finished: tuple[tuple[str, str, int], ...] = ()
    #: the `harness.platform` tag: processor and kernels, threads, torch (train/platform.py)
    platform: str = ""


#: The rule that picks one run per key, as reports state it.
#: tags of the harness's own runs that train no cell (a sweep's parent run, a spec's decision record)
BOOKKEEPING = frozenset({"harness.sweep_parent", "harness.decision", "harness.report_table"})
COUNTING_RULE = "the latest FINISHED run (by start time) counts; without one, the latest run"


@dataclass(frozen=True)
class Listing:
    """One paginated search of an experiment: the run that counts per run key, and how many
    runs were not made by the harness (no `harness.run_key` tag)."""

    experiment_exists: bool
    runs: dict[str, RunInfo]
    total: int = 0
    untagged: int = 0


def list_runs(uri: str, experiment: str) -> Listing:
    """run key -> the run that counts for it, read with one paginated search.

    The rule (the only one in the harness): a key's latest FINISHED run if it has one, else its
    latest run by start time. A finished cell stays finished when a later attempt at the same key
    fails or is still running; `harness run --rerun` is how a user asks for it again.
    """
    path = sqlite_file(uri)
    found = _sqlite_runs(path, experiment) if path is not None else _mlflow_runs(uri, experiment)
    if found is None:
        return Listing(False, {})
    out: dict[str, RunInfo] = {}
    finished: dict[str, list[tuple[str, str, int]]] = {}
    total = untagged = 0
    for run_id, status, start, tags, metrics in found:
        total += 1
        key = tags.get("harness.run_key")
        if not key:
            untagged += not (tags.keys() & BOOKKEEPING)  # a sweep's parent, a decision record: ours
            continue
        hb = tags.get("harness.heartbeat")
        try:
            attempt = int(tags.get("harness.attempt", "1"))
        except ValueError:
            attempt = 1
        info = RunInfo(run_id, status, start or 0, tags.get("harness.failure"),
                       _float(hb), attempt, metrics, commit=tags.get("harness.git_commit", ""),
                       platform=tags.get("harness.platform", ""))
        done = finished.setdefault(key, [])
        if info.status == "FINISHED":
            done.append((info.run_id, info.commit, info.start_time))
        prev = out.get(key)
        if prev is None or _counts_more(info, prev):
            out[key] = info
    runs = {k: replace(v, finished_runs=len(finished[k]),
                       finished=tuple(sorted(finished[k], key=lambda f: (-f[2], f[0]))))
            for k, v in out.items()}
    return Listing(True, runs, total, untagged)


def _connect(path: str):
    """A read-only connection (SQLite refuses every write through it)."""
    import sqlite3
    from urllib.parse import quote

    return sqlite3.connect(f"file:{quote(str(Path(path).resolve()))}?mode=ro", uri=True)


def _mlflow_runs(uri: str, experiment: str):
    """(run id, status, start ms, tags, final metrics) of the experiment's active runs, through
    MLflow's paginated search; None without the experiment."""
    from mlflow import MlflowClient, search_runs, set_tracking_uri

    from harness.track.client import quiet_store_logs

    quiet_store_logs()
    set_tracking_uri(uri)
    if MlflowClient(uri).get_experiment_by_name(experiment) is None:
        return None
    return [(r.info.run_id, r.info.status, r.info.start_time, dict(r.data.tags), dict(r.data.metrics))
            for r in search_runs(experiment_names=[experiment], output_format="list")]


def _sqlite_runs(path: str, experiment: str):
    """The same listing as `_mlflow_runs`, read from the SQLite file in three queries over a
    read-only connection: MLflow's search builds full run objects (every param) and took 6-10 s
    for 1,000 runs; a report needs the harness tags and final metrics only. MLflow's own tables:
    runs, tags (harness.* only), latest_metrics (the value at the highest step, as search returns)."""
    con = _connect(path)
    try:
        exp = con.execute("SELECT experiment_id FROM experiments WHERE name = ? ORDER BY experiment_id",
                          (experiment,)).fetchone()
        if exp is None:
            return None
        runs = con.execute("SELECT run_uuid, status, start_time FROM runs WHERE experiment_id = ? "
                           "AND lifecycle_stage = 'active' ORDER BY start_time DESC, run_uuid", exp).fetchall()
        tags: dict[str, dict[str, str]] = {r[0]: {} for r in runs}
        metrics: dict[str, dict[str, float]] = {r[0]: {} for r in runs}
        for rid, key, value in con.execute(
                "SELECT t.run_uuid, t.key, t.value FROM tags t JOIN runs r ON r.run_uuid = t.run_uuid "
                "WHERE r.experiment_id = ? AND r.lifecycle_stage = 'active' AND t.key LIKE 'harness.%'", exp):
            tags[rid][key] = value
        for rid, key, value, is_nan in con.execute(
                "SELECT m.run_uuid, m.key, m.value, m.is_nan FROM latest_metrics m JOIN runs r "
                "ON r.run_uuid = m.run_uuid WHERE r.experiment_id = ? AND r.lifecycle_stage = 'active'", exp):
            metrics[rid][key] = float("nan") if is_nan else float(value)
    finally:
        con.close()
    return [(rid, status, start, tags[rid], metrics[rid]) for rid, status, start in runs]


def read_listing(uri: str, experiment: str, name: str, what: str = "--tracking-uri") -> Listing:
    """`list_runs` for read commands: a store MLflow cannot read, or one without the experiment,
    is a one-line error naming it (name: the store as messages show it)."""
    from harness.spec.errors import Problem, UserError

    try:
        listing = list_runs(uri, experiment)
    except Exception as exc:  # MLflow's and SQLAlchemy's errors: not an MLflow store, unreachable
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(Problem(name, None, what, f"cannot read this tracking store: {first[:200]}")) from None
    if not listing.experiment_exists:
        raise UserError(Problem(name, None, what, f"no experiment {experiment!r} in this store (nothing of "
                                "this spec ran here: wrong --workspace or --tracking-uri?)"))
    return listing


def runs_by_key(uri: str, experiment: str) -> dict[str, RunInfo]:
    """run key -> the run that counts for it (`list_runs`); {} without the experiment."""
    return list_runs(uri, experiment).runs


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def _counts_more(new: RunInfo, old: RunInfo) -> bool:
    new_done, old_done = new.status == "FINISHED", old.status == "FINISHED"
    if new_done != old_done:
        return new_done
    return new.start_time > old.start_time


def metric_history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) of one metric of one run, by step."""
    from mlflow import MlflowClient

    return sorted((m.step, m.value) for m in MlflowClient(uri).get_metric_history(run_id, key))


#: Up to ?2 points per run of metric ?1, evenly spaced in steps between the run's first and last
#: (each target step rounds up to the next logged one), read with seeks in MLflow's
#: (run_uuid, key, step) index: a scan of every logged point (1.5 M rows for 1,000 runs) is what
#: made reports slow.
_SAMPLE = """WITH RECURSIVE
 ids(id) AS (VALUES {marks}),
 r(run_uuid, lo, hi) AS (SELECT id,
    (SELECT MIN(step) FROM metrics INDEXED BY index_metrics_run_uuid_key_step WHERE run_uuid = ids.id AND key = ?1),
    (SELECT MAX(step) FROM metrics INDEXED BY index_metrics_run_uuid_key_step WHERE run_uuid = ids.id AND key = ?1)
    FROM ids),
 t(run_uuid, i, lo, hi) AS (SELECT run_uuid, 0, lo, hi FROM r WHERE lo IS NOT NULL
    UNION ALL SELECT run_uuid, i + 1, lo, hi FROM t WHERE i + 1 < ?2),
 s(run_uuid, step) AS (SELECT DISTINCT run_uuid, (SELECT MIN(step) FROM metrics INDEXED BY index_metrics_run_uuid_key_step
    WHERE run_uuid = t.run_uuid AND key = ?1 AND step >= t.lo + (t.hi - t.lo) * t.i / MAX(?2 - 1, 1)) FROM t)
SELECT m.run_uuid, m.step, m.value, m.is_nan FROM s CROSS JOIN metrics AS m INDEXED BY index_metrics_run_uuid_key_step
WHERE m.run_uuid = s.run_uuid AND m.key = ?1 AND m.step = s.step"""


def histories(uri: str, run_ids: list[str], keys: list[str], *, max_points: int = 100,
              cache_dir: str | Path | None = None) -> dict[tuple[str, str], list[tuple[int, float]]]:
    """(run id, key) -> up to max_points (step, value) of the metric's history, evenly sampled
    in the store's own query (first and last point kept), for plots.

    Pass only finished runs: with cache_dir, each run's histories are kept in one JSON file
    named by its run id (a finished run never changes) and read from there next time.
    """
    import json

    out: dict[tuple[str, str], list[tuple[int, float]]] = {}
    todo = []
    cache = Path(cache_dir) if cache_dir else None
    for rid in run_ids:
        hit = None
        if cache is not None:
            with contextlib.suppress(OSError, ValueError):
                hit = json.loads((cache / f"{rid}.json").read_text())
        if hit is not None and hit.get("max_points") == max_points and set(keys) <= set(hit["keys"]):
            for k in keys:
                out[(rid, k)] = [tuple(p) for p in hit["keys"][k]]
        else:
            todo.append(rid)
    if not todo:
        return out
    fetched: dict[str, dict[str, list]] = {rid: {k: [] for k in keys} for rid in todo}
    path = sqlite_file(uri)
    if path is not None:  # one query per key and 500 runs: index seeks only (see _SAMPLE)
        con = _connect(path)
        try:
            for k in keys:
                for i in range(0, len(todo), 500):
                    chunk = todo[i:i + 500]
                    marks = ",".join(f"(?{j + 3})" for j in range(len(chunk)))
                    for rid, step, value, is_nan in con.execute(_SAMPLE.format(marks=marks), (k, max_points, *chunk)):
                        fetched[rid][k].append((int(step), float("nan") if is_nan else float(value)))
        finally:
            con.close()
    else:
        from mlflow import MlflowClient

        client = MlflowClient(uri)
        for rid in todo:
            for k in keys:
                pts = sorted((m.step, m.value) for m in client.get_metric_history(rid, k))
                stride = max(1, -(-len(pts) // max_points))
                fetched[rid][k] = [p for i, p in enumerate(pts) if i % stride == 0 or i == len(pts) - 1]
    for rid, by_key in fetched.items():
        for k, pts in by_key.items():
            out[(rid, k)] = sorted(pts)
        if cache is not None:
            with contextlib.suppress(OSError):
                cache.mkdir(parents=True, exist_ok=True)
                tmp = cache / f".{rid}.{os.getpid()}.tmp"
                tmp.write_text(json.dumps({"max_points": max_points,
                                           "keys": {k: sorted(v) for k, v in by_key.items()}}))
                tmp.replace(cache / f"{rid}.json")
    return out


def write(client, run_id: str, *, params: dict | None = None, tags: dict | None = None,
          metrics: dict | None = None, step: int = 0) -> None:
    """One batch of params, tags and metrics (values as given; strings for params and tags)."""
    from mlflow.entities import Metric, Param, RunTag

    now = int(time.time() * 1000)
    client.log_batch(run_id, params=[Param(k, str(v)) for k, v in (params or {}).items()],
                     tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()],
                     metrics=[Metric(k, float(v), now, step) for k, v in (metrics or {}).items()])


def record(uri: str, run_id: str, *, params: dict | None = None, tags: dict | None = None,
           metrics: dict | None = None, step: int = 0) -> None:
    """`write` to a run of the store at `uri` (callers outside `track/` hold no MLflow client)."""
    from harness.track.client import client_for

    write(client_for(uri), run_id, params=params, tags=tags, metrics=metrics, step=step)


def record_testdev(uri: str, run_id: str, ap: float) -> str:
    """Record the COCO test-dev server's AP (a fraction) on a cell's run, as the metric
    `TESTDEV_AP` (a later record replaces it in the report); returns the run's `row/dataset/seed`.
    A run the store does not hold, or one that trains no cell, is refused in one line."""
    from mlflow.exceptions import MlflowException

    from harness.spec.errors import Problem, UserError
    from harness.track.client import client_for
    from harness.track.names import TESTDEV_AP
    from harness.track.store import display

    client = client_for(uri)
    try:
        tags = client.get_run(run_id).data.tags
    except MlflowException:
        raise UserError(Problem(None, None, "RUN_ID", f"no run {run_id!r} in {display(uri)}")) from None
    if "harness.run_key" not in tags:
        raise UserError(Problem(None, None, "RUN_ID", f"run {run_id!r} trains no cell (no harness.run_key tag)"))
    write(client, run_id, metrics={TESTDEV_AP: ap})
    return "/".join(tags.get(f"harness.{k}", "?") for k in ("row", "dataset", "seed"))


def record_artifacts(uri: str, run_id: str, files: list) -> None:
    """Log files ((path, artifact folder or None) pairs) to a run of the store at `uri`."""
    from harness.track.client import client_for

    client = client_for(uri)
    for path, folder in files:
        client.log_artifact(run_id, str(path), folder)


def end_run(uri: str, run_id: str, status: str) -> None:
    """Set a run's final status (FINISHED, FAILED, KILLED)."""
    from harness.track.client import client_for

    client_for(uri).set_terminated(run_id, status=status)


@dataclass(frozen=True)
class Attempt:
    """A run a worker is about to resume: its status, attempt number, the run key it is tagged
    with, and the last step of its training loss (what an earlier attempt logged already)."""

    status: str
    attempt: int
    run_key: str | None
    last_step: int


def previous_attempt(uri: str, run_id: str) -> Attempt:
    from harness.track.client import client_for

    client = client_for(uri)
    run = client.get_run(run_id)
    try:
        attempt = int(run.data.tags.get("harness.attempt", "1"))
    except ValueError:
        attempt = 1
    steps = [m.step for m in client.get_metric_history(run_id, "train.total_loss")]
    return Attempt(run.info.status, attempt, run.data.tags.get("harness.run_key"), max(steps, default=0))


def end_abandoned(uri: str, experiment: str, run_key: str, *, workspace: str, keep: str, reason: str) -> list[str]:
    """End KILLED, with `reason`, every RUNNING run of `run_key` started from `workspace` (its
    `harness.workspace` tag: host and folder) but `keep`. Called by a worker that holds the
    cell's lock, so no live process of that workspace writes them: a worker killed before its
    first checkpoint leaves its run RUNNING, and the retry starts a new one."""
    from harness.track.client import client_for

    client = client_for(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    found = client.search_runs([exp.experiment_id], f"tags.`harness.run_key` = '{run_key}' and "
                                                    "attributes.status = 'RUNNING'")
    ended = []
    for run in found:
        if run.info.run_id != keep and run.data.tags.get("harness.workspace") == workspace:
            write(client, run.info.run_id, tags={"harness.failure": reason})
            client.set_terminated(run.info.run_id, status="KILLED")
            ended.append(run.info.run_id)
    return ended


def sweep_parent(uri: str, experiment: str, name: str, tags: dict, params: dict) -> str:
    """The sweep's parent run: the one tagged `harness.sweep_parent = name` (set RUNNING again),
    else a new one with these tags and params."""
    return named_run(uri, experiment, "harness.sweep_parent", name, run_name=f"sweep:{name}", tags=tags,
                     params=params)


def named_run(uri: str, experiment: str, tag: str, name: str, *, run_name: str, tags: dict | None = None,
              params: dict | None = None) -> str:
    """The run tagged `tag = name` in the experiment (set RUNNING again), else a new one (the
    experiment too) with these tags and params: a sweep's parent run, a spec's decision record."""
    from harness.track.client import client_for

    client = client_for(uri)
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp is not None else client.create_experiment(experiment)
    found = client.search_runs([exp_id], f"tags.`{tag}` = '{name}'")
    if found:
        client.update_run(found[0].info.run_id, status="RUNNING")
        return found[0].info.run_id
    run = client.create_run(exp_id, run_name=run_name, tags={tag: name, **(tags or {})})
    write(client, run.info.run_id, params=params or {})
    return run.info.run_id


def run_tags_of(uri: str, run_id: str) -> dict[str, str]:
    from harness.track.client import client_for

    return dict(client_for(uri).get_run(run_id).data.tags)


def end_killed(uri: str, run_id: str, reason: str) -> None:
    """End a run that no process will finish as KILLED, with the reason in `harness.failure`."""
    from harness.track.client import client_for

    client = client_for(uri)
    write(client, run_id, tags={"harness.failure": reason})
    client.set_terminated(run_id, status="KILLED")


def explain_missing(cells, uri: str, experiment: str, runs: dict[str, RunInfo] | None = None) -> list[str]:
    """Cells without a run for their key, for which runs of the same row, dataset and seed exist
    under other keys (other overrides, or another version of the spec): one line per cell (at
    most 5), naming up to 3 differing config keys, and a summary line first. [] when none."""
    from mlflow import MlflowClient, search_runs, set_tracking_uri

    from harness.spec.matrix import hashed_config
    from harness.track.names import cell_params

    runs = runs_by_key(uri, experiment) if runs is None else runs
    missing = [c for c in cells if c.run_key not in runs]
    if not missing:
        return []
    set_tracking_uri(uri)
    if MlflowClient(uri).get_experiment_by_name(experiment) is None:
        return []
    by_cell: dict[tuple, object] = {}
    for run in search_runs(experiment_names=[experiment], output_format="list"):
        t = run.data.tags
        ident = (t.get("harness.row"), t.get("harness.dataset"), t.get("harness.seed"))
        prev = by_cell.get(ident)
        done = run.info.status == "FINISHED"
        if prev is None or (done, run.info.start_time or 0) > (prev.info.status == "FINISHED", prev.info.start_time or 0):
            by_cell[ident] = run
    lines = []
    for c in missing:
        run = by_cell.get((c.row, c.dataset, str(c.seed)))
        if run is None:
            continue
        mine = cell_params(hashed_config(c.config))  # what a run logs as params (no nulls)
        theirs = run.data.params
        diff = [f"{k} {theirs[k]} there, {v} here" for k, v in sorted(mine.items()) if k in theirs and theirs[k] != v]
        diff += [f"{k} {v} here, absent there" for k, v in sorted(mine.items()) if k not in theirs][: max(0, 3 - len(diff))]
        lines.append(f"{c.id}: run {run.info.run_id[:8]} ({run.info.status.lower()}) has another run key"
                     + (f": {'; '.join(diff[:3])}" if diff else ""))
    if not lines:
        return []
    head = (f"{len(lines)} cell(s) have no run for their run key, but runs of the same row, dataset and seed "
            "exist under other keys (other --set/--set-file overrides, or another version of the spec); "
            "pass the same overrides to see them:")
    return [head, *lines[:5]] + ([f"... and {len(lines) - 5} more"] if len(lines) > 5 else [])
