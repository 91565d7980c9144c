"""The workspace layout, in one place.

A workspace holds one directory per cell, named by the cell's run key::

    <workspace>/<run_key>/lock                  held while a process trains the cell
    <workspace>/<run_key>/log.txt               the job's stdout and stderr, every attempt appended
    <workspace>/<run_key>/progress.json         the trainer's progress, for the live table and status
    <workspace>/<run_key>/job.json              the cell as the scheduler planned it (the worker's input)
    <workspace>/<run_key>/result.json           how the worker's launch ended (its answer)
    <workspace>/<run_key>/checkpoint.pt         the last checkpoint (resume point)
    <workspace>/<run_key>/config.yaml           the resolved config (also an MLflow artifact)
    <workspace>/<run_key>/eval.json             the last evaluation's metrics
    <workspace>/<run_key>/detections_<kind>.<ext>  the last evaluation's detections

    <workspace>/<run_key>/spool.jsonl           tracking writes not yet sent (spool.sent: how far;
                                                unsynced: the cell ended while its store was away)

and, beside the cells, ``.store.lock`` (held while the store is created or migrated), ``mlflow.db`` (the default SQLite store), ``cache/`` (built datasets),
``optuna/`` (sweep journals) and ``slurm/`` (submitit's folders).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CellPaths:
    """The files of one cell in a workspace."""

    workspace: Path
    run_key: str

    @classmethod
    def of(cls, workspace: str | Path, run_key: str) -> CellPaths:
        return cls(Path(workspace), run_key)

    @property
    def dir(self) -> Path:
        return self.workspace / self.run_key

    @property
    def lock(self) -> Path:
        return self.dir / "lock"

    @property
    def log(self) -> Path:
        return self.dir / "log.txt"

    @property
    def progress(self) -> Path:
        """The trainer's progress (iteration, total, ETA, loss), replaced about once a second."""
        return self.dir / "progress.json"

    @property
    def unsynced(self) -> Path:
        """Present while tracking writes of a finished cell wait in its spool (`harness sync`)."""
        return self.dir / "unsynced"

    @property
    def job(self) -> Path:
        """The resolved cell the scheduler planned (config, run key, sweep link): what a worker
        started with `harness train --job` trains, never a re-read of the spec."""
        return self.dir / "job.json"

    @property
    def result(self) -> Path:
        """The worker's answer to its job (`harness.train.result`): outcome, signal, reason,
        iteration, metrics. Removed by the scheduler before each launch."""
        return self.dir / "result.json"

    @property
    def checkpoint(self) -> Path:
        return self.dir / "checkpoint.pt"

    def set_aside(self, stamp: int) -> Path:
        """Where `--fresh` moves an earlier checkpoint (`checkpoint.<unix time>.old.pt`)."""
        return self.dir / f"checkpoint.{stamp}.old.pt"

    @property
    def spool(self) -> Path:
        """Tracking writes that have not reached the store yet (`track/spool.py`)."""
        return self.dir / "spool.jsonl"

    @property
    def cache(self) -> Path:
        return cache_folder(self.workspace)

    @property
    def config(self) -> Path:
        return self.dir / "config.yaml"

    @property
    def eval_json(self) -> Path:
        return self.dir / "eval.json"

    def detections(self, kind: str, ext: str) -> Path:
        """``detections_<kind>.<ext>``: kind is nms or nms_free, ext json (COCO) or odgt."""
        return self.dir / f"detections_{kind}.{ext}"

    def make(self) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        return self.dir


def slurm_folder(workspace: str | Path, job_id: str = "%j") -> Path:
    """Where submitit keeps its scripts, logs and result pickles (``%j``: the Slurm job id)."""
    return Path(workspace) / "slurm" / job_id


def cache_folder(workspace: str | Path) -> Path:
    """The workspace's caches (datasets' image indices, the backbone pre-training)."""
    return Path(workspace) / "cache"


def artifacts_folder(workspace: str | Path) -> Path:
    """Where a SQLite store's runs keep their artifacts (`mlartifacts`, as `mlflow server`)."""
    return Path(workspace) / "mlartifacts"


def optuna_journal(workspace: str | Path, study: str) -> Path:
    return Path(workspace) / "optuna" / f"{study}.journal"


def store_lock(workspace: str | Path) -> Path:
    """Held while the SQLite store is created or migrated, and while a sweep finds its parent run."""
    return Path(workspace) / ".store.lock"
