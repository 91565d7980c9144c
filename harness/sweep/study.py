"""The Optuna side of `harness sweep`: the study, its search space, ask and tell, pruning, the
recovery of trials a dead driver left running, and the sweep's MLflow parent run.

- Storage: a JournalFileBackend file in the workspace, or `--storage postgresql://...`.
- The row's own values are enqueued as the first trial (the baseline).
- Each trial is the swept row's cells (one per dataset and seed) with the trial's values, each
  with its own run key; `harness.sweep.driver` trains them through the pool.
- Intermediate eval metrics (read from the first cell's MLflow run) are reported to the trial;
  the driver stops a pruned trial's workers, and their runs end KILLED with the reason.
- Resume: the same command continues the study toward n_trials (COMPLETE + PRUNED + RUNNING);
  a trial a dead driver left RUNNING is adopted, with its number, parameters and runs: its cells
  resume from their checkpoints, a finished cell answers at once (its run key is FINISHED), and
  a cell an orphaned worker still trains is waited for. No parameter set is enqueued twice.
- MLflow: one parent run per sweep (study, space, best value and params as they improve); each
  trial's runs are its nested children (`mlflow.parentRunId`) with its trial number.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from harness.report.sweep import write_sweep_report
from harness.schedule.job import SweepLink
from harness.schedule.state import busy, latest_runs, store_locked
from harness.spec.matrix import Cell
from harness.spec.workspace import optuna_journal
from harness.sweep.confirm import Confirmed, analyse
from harness.sweep.space import CONFIRM, SEARCH, Sweep, current_value
from harness.track.names import headline_key
from harness.track.runs import end_run, metric_history, record, sweep_parent
from harness.train.result import CellResult, Outcome

#: this driver, as its trials record it: several drivers may share one study (an RDB storage)
DRIVER = f"{socket.gethostname()}:{os.getpid()}"


def driver_alive(trial) -> bool:
    """Whether the driver of a RUNNING trial still runs: on this host, its process is alive; a
    trial asked a moment ago, before its driver wrote its name, counts as alive too. (A driver on
    another host cannot be asked: its trial is taken as lost, as before several drivers.)"""
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


@dataclass(eq=False)
class Trial:
    """A trial in training: Optuna's trial, its cells, and what was reported of it."""

    trial: object  # optuna.Trial
    cells: list[Cell]
    reported: int = -1  # the last iteration reported to Optuna
    pruned_at: int | None = None
    #: an adopted trial's cells that an orphaned worker still trains: added to the pool once free
    waiting: list[Cell] = field(default_factory=list)

    @property
    def number(self) -> int:
        return self.trial.number


class Study:
    """One sweep's Optuna study and MLflow parent run."""

    def __init__(self, sweep: Sweep, *, workspace: str, uri: str, storage: str | None):
        self.sweep, self.spec = sweep, sweep.spec
        self.workspace, self.uri, self.storage = workspace, uri, storage
        self.experiment = sweep.base_cells[0].spec_name
        self.study = None  # optuna.Study, once opened
        self.parent = ""  # the parent run's id, once opened

    # ------------------------------------------------------------------ opening

    def open(self) -> list[Trial]:
        """Load (or create) the study and the parent run; enqueue the baseline in a new study;
        the trials a dead driver left running, adopted (`_recover`)."""
        self.study = self._load()
        with store_locked(self.workspace):  # two drivers at once: one parent run
            self.parent = self._parent_run()
        adopted = self._recover()
        if not self.study.trials:
            self.study.enqueue_trial({k: current_value(self.sweep.base_cells[0], k) for k in self.spec.space})
        return adopted

    def _load(self):
        import optuna
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        if self.storage:
            storage = self.storage
        else:
            journal = optuna_journal(self.workspace, self.spec.name)
            journal.parent.mkdir(parents=True, exist_ok=True)
            storage = JournalStorage(JournalFileBackend(str(journal)))
        sampler = optuna.samplers.TPESampler(seed=self.spec.sampler.seed,
                                             n_startup_trials=self.spec.sampler.n_startup_trials)
        p = self.spec.pruner
        if p.type == "racing":
            pruner = optuna.pruners.WilcoxonPruner(p_threshold=p.p_threshold, n_startup_steps=p.n_startup_steps)
        elif p.type == "median":
            pruner = optuna.pruners.MedianPruner(n_startup_trials=p.n_startup_trials, n_warmup_steps=p.n_warmup_steps)
        else:
            pruner = optuna.pruners.NopPruner()
        return optuna.create_study(study_name=self.spec.name, storage=storage, sampler=sampler, pruner=pruner,
                                   directions=[o.direction for o in self.spec.objectives], load_if_exists=True)

    def _parent_run(self) -> str:
        return sweep_parent(self.uri, self.experiment, self.spec.name, {"harness.spec": self.sweep.file}, {
            "study": self.spec.name, "row": self.spec.row,
            "objective": "; ".join(f"{o.direction} {o.metric}" for o in self.spec.objectives),
            "n_trials": self.spec.n_trials,
            "space": json.dumps({k: v.model_dump(exclude_none=True) for k, v in self.spec.space.items()})[:6000]})

    def _recover(self) -> list[Trial]:
        """The trials a dead driver left RUNNING, adopted: the same trial number, parameters and
        cells (so the same run keys and MLflow runs), never a re-enqueued copy. Their cells go
        back to the pool: a finished one answers at once, a cut one resumes from its checkpoint,
        and one an orphaned worker still trains is waited for (`Trial.waiting`)."""
        import optuna
        from optuna.trial import TrialState

        adopted = []
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if driver_alive(t):
                continue  # its driver still runs it
            if "run_keys" not in t.user_attrs:  # its driver died before it had cells: nothing ran
                self.study.tell(t.number, state=TrialState.FAIL)
                continue
            cells = self.sweep.trial_cells(dict(t.params), SEARCH)
            if [c.run_key for c in cells] != t.user_attrs["run_keys"]:  # the spec changed: not the same cells
                self.study.tell(t.number, state=TrialState.FAIL)
                print(f"trial {t.number}: left running by a dead driver, and its cells are not the spec's any more: "
                      "failed", flush=True)
                continue
            trial = optuna.trial.Trial(self.study, t._trial_id)
            trial.set_user_attr("driver", DRIVER)
            reported = max(t.intermediate_values, default=-1)
            adopted.append(Trial(trial, cells, reported=reported,
                                 waiting=[c for c in cells if busy(self.workspace, c.run_key)]))
            print(f"trial {t.number}: left running by a dead driver; continued {dict(t.params)}", flush=True)
        return adopted

    # ------------------------------------------------------------------ ask

    def counted(self) -> int:
        """Trials that use up the budget, every driver's (drivers on one RDB storage share it)."""
        from optuna.trial import TrialState

        states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
        return len(self.study.get_trials(deepcopy=False, states=states))

    def wants_more(self) -> bool:
        return self.counted() < self.spec.n_trials

    def ask(self) -> Trial | None:
        """The next trial and its cells; None when another driver took the last of the budget."""
        trial = self.study.ask(self.distributions())
        trial.set_user_attr("driver", DRIVER)
        if self.surplus(trial):
            return None
        cells = self.sweep.trial_cells(dict(trial.params), SEARCH)  # the swept row only, as validated
        trial.set_user_attr("run_keys", [c.run_key for c in cells])
        print(f"trial {trial.number}: started {dict(trial.params)}", flush=True)
        return Trial(trial, cells)

    def link(self, trial: Trial | int, phase: str = SEARCH) -> SweepLink:
        """Where a trial's runs hang in MLflow: under the parent run, with the trial's number."""
        number = trial if isinstance(trial, int) else trial.number
        return SweepLink(self.parent, number, self.spec.name, phase)

    @property
    def racing(self) -> bool:
        return self.spec.pruner.type == "racing"

    def surplus(self, trial) -> bool:
        """Drivers that ask at the same moment can overshoot n_trials: the trials numbered past the
        budget (counting those before them that are running or done) are failed unrun."""
        from optuna.trial import TrialState

        states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
        before = [t for t in self.study.get_trials(deepcopy=False, states=states) if t.number < trial.number]
        if len(before) < self.spec.n_trials:
            return False
        trial.set_user_attr("surplus", True)
        self.study.tell(trial, state=TrialState.FAIL)
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

    # ------------------------------------------------------------------ report, tell

    def objective_history(self, cell: Cell, key: str | None = None) -> list[tuple[int, float]]:
        info = latest_runs(self.uri, self.experiment).get(cell.run_key)
        if info is None:
            return []
        key = key or self.spec.objective.metric  # eval.<name>: the cell's headline mode (harness.track.names)
        return (metric_history(self.uri, info.run_id, key)
                or metric_history(self.uri, info.run_id, headline_key(key, cell.config.eval.nms)))

    def final_value(self, cell: Cell, key: str | None = None) -> float | None:
        """The cell's final value of the objective (or of `key`), if its run logged one."""
        hist = self.objective_history(cell, key)
        return hist[-1][1] if hist else None

    def race(self, t: Trial, done: int) -> bool:
        """Racing: report the final values of the trial's first `done` seeds (step = the seed's
        position in the search split); True when Optuna's Wilcoxon pruner stops the trial now."""
        for i, cell in enumerate(t.cells[:done]):
            if i <= t.reported:
                continue
            value = self.final_value(cell)
            if value is None:
                return False
            t.trial.report(value, i)
            t.reported = i
        if done < len(t.cells) and t.trial.should_prune():
            t.pruned_at = done
            return True
        return False

    def report(self, t: Trial, running: bool) -> bool:
        """Report the trial's new intermediate values (its first cell's); True when Optuna prunes
        it now, while its workers still run (the caller stops them)."""
        if self.racing or self.spec.secondary is not None:  # per seed / Optuna keeps no curves of two objectives
            return False
        last = t.cells[0].config.train.max_iter or math.inf  # train.epochs: known to the worker only
        for step, value in self.objective_history(t.cells[0]):
            if step <= t.reported or t.pruned_at is not None:
                continue
            t.trial.report(value, step)
            t.reported = step
            if step < last and running and t.trial.should_prune():
                t.pruned_at = step
                return True
        return False

    def tell(self, t: Trial, results: list[CellResult]) -> None:
        """Tell Optuna how the trial ended: pruned, failed (with its first failed cell's reason),
        or the mean of its cells' final objective values, recorded as the parent's best."""
        from optuna.trial import TrialState

        if t.pruned_at is not None and not self.racing and all(r.outcome is Outcome.FINISHED for r in results):
            t.pruned_at = None  # the workers finished before the stop arrived
        if t.pruned_at is not None:
            self._record_pruned(t, results)
            self.study.tell(t.trial, state=TrialState.PRUNED)
            where = f"after {t.pruned_at} of {len(t.cells)} seeds" if self.racing else f"at iteration {t.pruned_at}"
            print(f"trial {t.number}: pruned {where}", flush=True)
            return
        values = []
        for cell, result in zip(t.cells, results, strict=True):
            hist = self.objective_history(cell) if result.outcome is Outcome.FINISHED else []
            if not hist:
                reason = result.describe() if result.outcome is not Outcome.FINISHED else "no objective logged"
                self.study.tell(t.trial, state=TrialState.FAIL)
                print(f"trial {t.number}: failed ({reason})", flush=True)
                return
            values.append(hist[-1][1])
        value = sum(values) / len(values)
        if self.spec.secondary is not None:
            self._tell_both(t, values)
            return
        if self.racing:  # every seed a step: the incumbent the race compares with has them all
            for i, v in enumerate(values):
                if i > t.reported:
                    t.trial.report(v, i)
        t.trial.set_user_attr("values", {str(c.seed): v for c, v in zip(t.cells, values, strict=True)})
        self.study.tell(t.trial, value)
        print(f"trial {t.number}: {self.spec.objective.metric} = {value:.4f}", flush=True)
        best = self.study.best_trial
        record(self.uri, self.parent, tags={"best.trial": best.number,
                                            **{f"best.{k}": v for k, v in best.params.items()}},
               metrics={"best_value": best.value}, step=t.number)

    def _tell_both(self, t: Trial, values: list[float]) -> None:
        """A two-objective trial: the mean of each objective over its seeds (a seed without the
        second metric fails the trial)."""
        from optuna.trial import TrialState

        key = self.spec.secondary.metric
        second = [self.final_value(c, key) for c in t.cells]
        if any(v is None for v in second):
            self.study.tell(t.trial, state=TrialState.FAIL)
            print(f"trial {t.number}: failed (no {key} logged)", flush=True)
            return
        seeds = [str(c.seed) for c in t.cells]
        t.trial.set_user_attr("values", dict(zip(seeds, values, strict=True)))
        t.trial.set_user_attr("values2", dict(zip(seeds, second, strict=True)))
        means = [sum(values) / len(values), sum(second) / len(second)]
        self.study.tell(t.trial, means)
        print(f"trial {t.number}: {self.spec.objective.metric} = {means[0]:.4f}, {key} = {means[1]:.4f}", flush=True)
        record(self.uri, self.parent, tags={"pareto.trials": ",".join(str(b.number) for b in self.study.best_trials)},
               step=t.number)

    def _record_pruned(self, t: Trial, results: list[CellResult]) -> None:
        """The reason on each of the trial's runs (its workers ended them KILLED by SIGTERM)."""
        runs = latest_runs(self.uri, self.experiment)
        for cell, result in zip(t.cells, results, strict=False):  # racing: the seeds run so far
            run_id = result.run_id or (runs[cell.run_key].run_id if cell.run_key in runs else None)
            if run_id is not None:
                where = f"after {t.pruned_at} seeds" if self.racing else f"at iteration {t.pruned_at}"
                if self.racing and result.outcome is Outcome.FINISHED:
                    continue  # a seed that finished before the race stopped the trial keeps its run as it is
                record(self.uri, run_id, tags={"harness.failure": f"pruned by Optuna (trial {t.number}) {where}"})

    # ------------------------------------------------------------------ confirmation

    def defaults(self) -> dict:
        return {k: current_value(self.sweep.base_cells[0], k) for k in self.spec.space}

    def to_confirm(self) -> list[Confirmed]:
        """The top_k complete trials of the search (best first) and the defaults (their own
        trial's number when a trial ran them, else -1), each with its per-seed search values."""
        from optuna.trial import TrialState

        trials = self.study.get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        sign = -1 if self.spec.objective.direction == "maximize" else 1
        front = set()
        if self.spec.secondary is not None:  # the Pareto front first, then the rest, by the objective
            front = {t.number for t in self.study.best_trials}
        top = sorted(complete, key=lambda t: (t.number not in front, sign * t.values[0], t.number))
        top = top[:self.spec.confirm.top_k]
        defaults = self.defaults()
        base = next((t for t in trials if dict(t.params) == defaults), None)
        out = [Confirmed(t.number, dict(t.params), t is base, _search_values(t)) for t in top]
        if base is None or base not in top:
            out.append(Confirmed(-1 if base is None else base.number, defaults, True,
                                 _search_values(base) if base is not None else {}))
        return out

    def confirm_cells(self, c: Confirmed) -> list[Cell]:
        return self.sweep.trial_cells(c.params, CONFIRM)

    def read_confirmation(self, confirmed: list[Confirmed]) -> dict:
        """Each confirmed trial's confirmation values from the store, analysed; recorded on the
        sweep's parent run (the winner, the outcome)."""
        runs = latest_runs(self.uri, self.experiment)
        for c in confirmed:
            for cell in self.confirm_cells(c):
                info = runs.get(cell.run_key)
                value = self.final_value(cell) if info is not None and info.status == "FINISHED" else None
                if value is not None:
                    c.confirm[cell.seed] = value
                    c.run_ids[cell.seed] = info.run_id
                    if self.spec.secondary is not None:
                        second = self.final_value(cell, self.spec.secondary.metric)
                        if second is not None:
                            c.confirm2[cell.seed] = second
        result = analyse(confirmed, self.spec.objective.metric, self.spec.objective.direction == "maximize")
        record(self.uri, self.parent, tags={"confirm.winner": str(result["winner"]),
                                            "confirm.outcome": result["outcome"][:500]})
        return result

    # ------------------------------------------------------------------ end

    def end(self, status: str, out_dir: Path | None = None, confirmation: dict | None = None) -> None:
        """End the parent run (FINISHED: with the sweep's report in out_dir; KILLED: stopped)."""
        end_run(self.uri, self.parent, status)
        if out_dir is not None:
            write_sweep_report(self.study, self.sweep, out_dir, confirmation)


def _search_values(trial) -> dict[int, float]:
    """A trial's per-seed search values (seed -> value), as `tell` recorded them."""
    return {int(k): float(v) for k, v in (trial.user_attrs.get("values") or {}).items()}
