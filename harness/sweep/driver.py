"""The Optuna ask/tell driver: each trial is a cell (the base row plus the trial's overrides,
with its own run key) trained by a `harness train` worker, several at once.

- Storage: a JournalFileBackend file in the workspace, or `--storage postgresql://...`.
- The row's own values are enqueued as the first trial (the baseline).
- Intermediate eval metrics (read from the trial's MLflow run) are reported to the trial; a
  pruned trial's worker is stopped and its run ends KILLED with the reason.
- Resume: the same command continues the study toward n_trials (COMPLETE + PRUNED); trials left
  RUNNING by a dead driver are marked FAIL and their params re-enqueued; their cells resume from
  their checkpoints, and a finished cell is never trained again (its run key is FINISHED).
- MLflow: one parent run per sweep (study, space, best value and params as they improve); each
  trial a nested child run (`mlflow.parentRunId`) with its trial number.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.report.sweep import write_sweep_report
from harness.schedule.job import Overrides, SweepLink, TrainJob
from harness.schedule.local import Backend, Handle, LocalBackend, discover_gpus
from harness.schedule.state import latest_runs, prepare_store
from harness.spec.matrix import Cell
from harness.spec.workspace import CellPaths, optuna_journal, store_lock
from harness.sweep.space import Sweep, current_value, set_item
from harness.track.mlflow_tracker import (
    check_tracking_uri,
    credentials_to_environment,
)
from harness.track.names import headline_key
from harness.track.runs import end_run, metric_history, record, sweep_parent
from harness.train.exit_codes import ExitCode
from harness.train.lock import is_locked


@dataclass
class Running:
    trial: object  # optuna.Trial
    cells: list[Cell]
    handles: list[Handle]
    reported: int = -1
    pruned_at: int | None = None
    codes: dict[int, int] = field(default_factory=dict)  # handle index -> exit code, once ended


#: this driver, as its trials record it: several drivers may share one study (an RDB storage)
DRIVER = f"{socket.gethostname()}:{os.getpid()}"


def driver_alive(trial) -> bool:
    """Whether the driver of a RUNNING trial still runs: on this host, its process is alive; a
    trial asked a moment ago, before its driver wrote its name, counts as alive too. (A driver on
    another host cannot be asked: its trial is taken as lost, as before several drivers.)"""
    import datetime

    owner = trial.user_attrs.get("driver")
    if owner is None:
        start = trial.datetime_start
        return start is not None and (datetime.datetime.now() - start).total_seconds() < 60
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return int(pid) != os.getpid()


class Driver:
    def __init__(self, sweep: Sweep, *, workspace: str, uri: str, storage: str | None,
                 jobs: int | None, out_dir: str, backend: str = "local"):
        """uri: the store, resolved at the CLI edge (checked in `run`, after the sweep's own checks)."""
        self.sweep, self.spec = sweep, sweep.spec
        self.workspace, self.out_dir = workspace, Path(out_dir)
        self.uri = uri
        self.jobs = jobs or 1
        self.storage_url = credentials_to_environment(storage) if storage else None  # never printed
        self.experiment = sweep.base_cells[0].spec_name
        self.stopping: int | None = None
        if backend == "slurm":
            from harness.schedule.slurm import SlurmBackend

            self.backend: Backend = SlurmBackend(workspace)
        else:  # `jobs` trials at once, each of its cells (seeds) its own process and GPU slot
            self.backend = LocalBackend(self.jobs * len(sweep.base_cells), discover_gpus())
        self.trial_gpus = sum(c.config.resources.gpus for c in sweep.base_cells)

    # ------------------------------------------------------------------ setup

    def study(self):
        import optuna
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        if self.storage_url:
            storage = self.storage_url
        else:
            journal = optuna_journal(self.workspace, self.spec.name)
            journal.parent.mkdir(parents=True, exist_ok=True)
            storage = JournalStorage(JournalFileBackend(str(journal)))
        sampler = optuna.samplers.TPESampler(seed=self.spec.sampler.seed,
                                             n_startup_trials=self.spec.sampler.n_startup_trials)
        pruner = optuna.pruners.MedianPruner(n_startup_trials=self.spec.pruner.n_startup_trials,
                                             n_warmup_steps=self.spec.pruner.n_warmup_steps)
        return optuna.create_study(study_name=self.spec.name, storage=storage, sampler=sampler, pruner=pruner,
                                   direction=self.spec.objective.direction, load_if_exists=True)

    def parent_run(self) -> str:
        from harness.train.lock import CellLock

        lock = CellLock(store_lock(self.workspace))  # two drivers at once: one parent run
        while not lock.acquire():
            time.sleep(0.2)
        try:
            return self._parent_run()
        finally:
            lock.release()

    def _parent_run(self) -> str:
        return sweep_parent(self.uri, self.experiment, self.spec.name, {"harness.spec": self.sweep.file}, {
            "study": self.spec.name, "row": self.spec.row,
            "objective": f"{self.spec.objective.direction} {self.spec.objective.metric}",
            "n_trials": self.spec.n_trials,
            "space": json.dumps({k: v.model_dump(exclude_none=True) for k, v in self.spec.space.items()})[:6000]})

    # ------------------------------------------------------------------ trials

    def cells_for(self, params: dict) -> list[Cell]:
        return self.sweep.trial_cells(params)  # the swept row only, as validated

    def overrides(self, params: dict) -> Overrides:
        items = [set_item(".".join(map(str, o.path)), o.value) for o in self.sweep.fixed]
        items += [set_item(k, v) for k, v in params.items()]
        return Overrides(tuple(items))

    def launch(self, trial, parent: str) -> Running:
        params = dict(trial.params)
        cells = self.cells_for(params)
        link = SweepLink(parent, trial.number, self.spec.name)
        handles = []
        for cell in cells:
            job = TrainJob.for_cell(cell, spec_file=self.sweep.base_file, workspace=self.workspace,
                                    tracking_uri=self.uri, overrides=self.overrides(params), sweep=link)
            handles.append(self.backend.submit(job, cell.config.resources, header=f"trial {trial.number}"))
        trial.set_user_attr("run_keys", [c.run_key for c in cells])
        print(f"trial {trial.number}: started {params}", flush=True)
        return Running(trial, cells, handles)

    def alive(self, r: Running) -> bool:
        """Polls the trial's jobs; True while any of them runs."""
        for i, h in enumerate(r.handles):
            if i not in r.codes:
                code = self.backend.poll(h)
                if code is not None:
                    r.codes[i] = code
        return len(r.codes) < len(r.handles)

    def objective_history(self, cell: Cell) -> list[tuple[int, float]]:
        runs = latest_runs(self.uri, self.experiment)
        info = runs.get(cell.run_key)
        if info is None:
            return []
        key = self.spec.objective.metric  # eval.<name>: the cell's headline mode (harness.track.names)
        return (metric_history(self.uri, info.run_id, key)
                or metric_history(self.uri, info.run_id, headline_key(key, cell.config.eval.nms)))

    def poll(self, r: Running) -> str | None:
        """Report intermediate values, prune; returns 'done' when the workers exited."""
        hist = self.objective_history(r.cells[0])
        last = r.cells[0].config.train.max_iter
        for step, value in hist:
            if step > r.reported and r.pruned_at is None:
                r.trial.report(value, step)
                r.reported = step
                if step < last and r.trial.should_prune() and self.alive(r):
                    r.pruned_at = step
                    for i, h in enumerate(r.handles):
                        if i not in r.codes:
                            self.backend.stop(h)
        return None if self.alive(r) else "done"

    def finish(self, study, r: Running, parent: str) -> None:
        import optuna

        runs = latest_runs(self.uri, self.experiment)
        finished = all(runs.get(c.run_key) is not None and runs[c.run_key].status == "FINISHED" for c in r.cells)
        if r.pruned_at is not None and finished:  # the worker finished before the stop arrived
            r.pruned_at = None
        if r.pruned_at is not None:
            for cell in r.cells:
                info = runs.get(cell.run_key)
                if info is not None:
                    record(self.uri, info.run_id, tags={
                        "harness.failure": f"pruned by Optuna (trial {r.trial.number}) at iteration {r.pruned_at}"})
            study.tell(r.trial, state=optuna.trial.TrialState.PRUNED)
            print(f"trial {r.trial.number}: pruned at iteration {r.pruned_at}", flush=True)
            return
        values = []
        for cell in r.cells:
            info = runs.get(cell.run_key)
            hist = self.objective_history(cell)
            if info is None or info.status != "FINISHED" or not hist:
                study.tell(r.trial, state=optuna.trial.TrialState.FAIL)
                print(f"trial {r.trial.number}: failed ({info.failure if info else 'no run'})", flush=True)
                return
            values.append(hist[-1][1])
        value = sum(values) / len(values)
        study.tell(r.trial, value)
        print(f"trial {r.trial.number}: {self.spec.objective.metric} = {value:.4f}", flush=True)
        best = study.best_trial
        record(self.uri, parent, tags={"best.trial": best.number, **{f"best.{k}": v for k, v in best.params.items()}},
              metrics={"best_value": best.value}, step=r.trial.number)

    def _signal(self, signum, frame):
        self.stopping = signum

    # -------------------------------------------------------------------- loop

    def run(self) -> int:
        import optuna

        check_tracking_uri(self.uri)
        if self.storage_url and self.storage_url.startswith(("postgresql:", "postgresql+")):
            check_tracking_uri(self.storage_url, what="--storage")  # its driver is installed
        prepare_store(self.uri, self.experiment, self.workspace)
        study = self.study()
        parent = self.parent_run()
        states = optuna.trial.TrialState
        for t in study.get_trials(deepcopy=False):
            if t.state == states.RUNNING:  # its driver died: fail it, retry its params
                keys = t.user_attrs.get("run_keys", [])
                if any(is_locked(CellPaths.of(self.workspace, k).lock) for k in keys) or driver_alive(t):
                    continue
                study.tell(t.number, state=states.FAIL)
                study.enqueue_trial(t.params)
                print(f"trial {t.number}: left running by a dead driver; failed and its params re-enqueued")
        if not study.trials:
            study.enqueue_trial({k: current_value(self.sweep.base_cells[0], k) for k in self.spec.space})

        def counted() -> int:  # every driver's: several drivers on one RDB storage share the budget
            return len(study.get_trials(deepcopy=False, states=(states.COMPLETE, states.PRUNED, states.RUNNING)))

        running: list[Running] = []
        old = {s: signal.signal(s, self._signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while counted() < self.spec.n_trials or running:
                if self.stopping is not None:
                    self.backend.wait_stopped([h for r in running for i, h in enumerate(r.handles)
                                               if i not in r.codes])
                    print("stopped: the running trials stay RUNNING in the study; rerun to continue")
                    end_run(self.uri, parent, "KILLED")
                    return ExitCode.killed(self.stopping)
                while (len(running) < self.jobs and counted() < self.spec.n_trials
                       and self.backend.can_start(self.trial_gpus)):
                    trial = study.ask(self.distributions())
                    trial.set_user_attr("driver", DRIVER)
                    if self.surplus(study, trial):  # another driver asked at the same moment
                        break
                    running.append(self.launch(trial, parent))
                time.sleep(1.0)
                for r in list(running):
                    if self.poll(r) == "done":
                        running.remove(r)
                        self.finish(study, r, parent)
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        end_run(self.uri, parent, "FINISHED")
        write_sweep_report(study, self.spec, self.out_dir)
        return 0

    def surplus(self, study, trial) -> bool:
        """Drivers that ask at the same moment can overshoot n_trials: the trials numbered past the
        budget (counting those before them that are running or done) are failed unrun."""
        import optuna

        states = optuna.trial.TrialState
        before = [t for t in study.get_trials(deepcopy=False, states=(states.COMPLETE, states.PRUNED, states.RUNNING))
                  if t.number < trial.number]
        if len(before) < self.spec.n_trials:
            return False
        trial.set_user_attr("surplus", True)
        study.tell(trial, state=states.FAIL)
        return True

    def distributions(self) -> dict:
        import optuna

        out = {}
        for path, p in self.spec.space.items():
            if p.type == "float":
                out[path] = optuna.distributions.FloatDistribution(p.low, p.high, log=p.log, step=p.step)
            elif p.type == "int":
                out[path] = optuna.distributions.IntDistribution(int(p.low), int(p.high), log=p.log,
                                                                 step=int(p.step or 1))
            else:
                out[path] = optuna.distributions.CategoricalDistribution(p.choices)
        return out

__all__ = ["Driver"]
