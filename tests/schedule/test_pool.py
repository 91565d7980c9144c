"""The pool decides from each launch's result.json (the exit status only when there is none):
retries, final outcomes, stopping; the Slurm backend reads the same answer. The workers here are
small Python scripts standing in for `harness train` (no training), so these tests are fast."""

import pickle
import signal
import sys
import time
from types import SimpleNamespace

import pytest

from harness.schedule.backend import Handle, Submission
from harness.schedule.job import TrainJob
from harness.schedule.local import LocalBackend
from harness.schedule.pool import Pool
from harness.schedule.slurm import SlurmBackend, SlurmCell
from harness.spec import expand, load_spec
from harness.train.result import CellResult, CellState, Outcome, read_result, write_result

#: a stand-in worker: argv[1] is its job file; every launch appends to `launches` beside it, and
#: launch N does what ACTIONS[N - 1] says (the last one from then on): "answer OUTCOME CODE"
#: writes result.json then exits with CODE; "kill9" dies by SIGKILL before answering; "wait"
#: waits for SIGTERM, then answers killed
WORKER = """\
import json, os, pathlib, signal, sys, time
cell = pathlib.Path(sys.argv[1]).parent
with open(cell / "launches", "a") as f:
    f.write("x")
n = len((cell / "launches").read_text())
actions = os.environ["ACTIONS"].split(",")
action = actions[min(n, len(actions)) - 1].split()
def answer(outcome, code, sig=None):
    (cell / "result.json").write_text(json.dumps({"version": 1, "outcome": outcome, "message": f"launch {n}",
                                                  "signal": sig}))
    sys.exit(code)
if action[0] == "kill9":
    os.kill(os.getpid(), signal.SIGKILL)
if action[0] == "wait":
    signal.signal(signal.SIGTERM, lambda *a: answer("killed", 128 + 15, 15))
    while True:
        time.sleep(0.05)
answer(action[1], int(action[2]))
"""


@pytest.fixture
def cells(mini_spec):
    return expand(load_spec(mini_spec()))


@pytest.fixture
def worker(monkeypatch):
    """Launches run WORKER instead of `harness train`; set the actions of each launch."""
    monkeypatch.setattr(TrainJob, "command", lambda self, gpus=0: [sys.executable, "-c", WORKER, self.job_file])

    def actions(*steps: str) -> None:
        monkeypatch.setenv("ACTIONS", ",".join(steps))

    return actions


def launched(cell_dir, timeout=30.0) -> None:
    """Wait until the worker of the cell started."""
    deadline = time.time() + timeout
    while not (cell_dir / "launches").exists():
        assert time.time() < deadline, "the worker did not start"
        time.sleep(0.02)


def run_pool(cells, ws, jobs=1, fresh=False):
    events = []
    pool = Pool(LocalBackend(jobs, gpus=[]), on_event=lambda state, cell, attempt, log, where: events.append(
        (cell.row, cell.seed, state, attempt)))
    tasks = [pool.add(c, TrainJob.for_cell(c, spec_file="spec.yaml", workspace=str(ws), tracking_uri="sqlite://",
                                           fresh=fresh)) for c in cells]
    pool.run(poll_s=0.02)
    return tasks, events


@pytest.mark.parametrize("outcome, code, retried", [
    ("crash", 1, True),
    ("killed", 143, True),  # a kill that did not come from this pool (preemption, the OOM killer)
    ("bad_input", 1, False),  # the answer decides, not the exit status
    ("diverged", 3, False),
    ("unhealthy", 4, False),
    ("busy", 75, False),
])
def test_the_pool_retries_what_result_json_says_is_worth_it(tmp_path, cells, worker, outcome, code, retried):
    worker(f"answer {outcome} {code}", "answer finished 0")
    (task,), events = run_pool(cells[:1], tmp_path, fresh=True)
    if retried:
        assert task.state is CellState.FINISHED and task.attempt == 2
        assert [e[2] for e in events] == [CellState.RUNNING, CellState.RETRYING, CellState.RUNNING,
                                          CellState.FINISHED]
        assert not task.job.fresh  # the retry resumes from the checkpoint
    else:
        assert task.state is Outcome(outcome).state and task.attempt == 1
        assert task.result == CellResult(Outcome(outcome), "launch 1")
        assert [e[2] for e in events] == [CellState.RUNNING, Outcome(outcome).state]


def test_max_attempts_bounds_the_retries(tmp_path, cells, worker):
    worker("answer crash 1")
    (task,), _ = run_pool(cells[:1], tmp_path)
    assert task.state is CellState.FAILED and task.attempt == cells[0].config.resources.max_attempts == 2
    assert task.result.message == "launch 2"


def test_a_worker_killed_9_before_it_answers_is_read_from_its_exit_status(tmp_path, cells, worker):
    worker("kill9", "answer finished 0")
    cell = cells[0]
    (tmp_path / cell.run_key).mkdir()
    write_result(tmp_path / cell.run_key / "result.json", CellResult(Outcome.FINISHED))  # an earlier launch's
    (task,), events = run_pool([cell], tmp_path)
    assert [e[2] for e in events] == [CellState.RUNNING, CellState.RETRYING, CellState.RUNNING, CellState.FINISHED]
    assert task.state is CellState.FINISHED and task.attempt == 2 and task.result.message == "launch 2"

    worker("kill9")  # every launch: killed, retried, killed again
    (task,), _ = run_pool([cells[1]], tmp_path)
    assert task.state is CellState.KILLED and task.attempt == 2
    assert task.result.outcome is Outcome.KILLED and task.result.signal == signal.SIGKILL
    assert "without writing its result" in task.result.message


def test_a_signal_stops_the_running_jobs_and_leaves_the_queue_pending(tmp_path, cells, worker):
    worker("wait")
    events = []
    pool = Pool(LocalBackend(1, gpus=[]), on_event=lambda state, cell, *a, **k: events.append((cell.id, state)))
    tasks = [pool.add(c, TrainJob.for_cell(c, spec_file="s", workspace=str(tmp_path), tracking_uri="sqlite://"))
             for c in cells[:2]]
    pool.step()
    assert [t.state for t in tasks] == [CellState.RUNNING, CellState.PENDING]
    launched(tmp_path / cells[0].run_key)
    pool.stopping = signal.SIGTERM  # what the handler of `signals()` sets
    pool.run(poll_s=0.02)
    assert tasks[0].state is CellState.KILLED and tasks[0].attempt == 1  # stopped on purpose: not retried
    assert tasks[0].result.signal == signal.SIGTERM
    assert tasks[1].state is CellState.PENDING and tasks[1].attempt == 0
    assert not pool.busy and events[-1] == (cells[0].id, CellState.KILLED)


def test_a_stopped_task_is_final(tmp_path, cells, worker):
    """A pruned trial's cells: the running one ends KILLED and is not retried; the queued one is
    never launched."""
    worker("wait")
    pool = Pool(LocalBackend(1, gpus=[]))
    running, queued = [pool.add(c, TrainJob.for_cell(c, spec_file="s", workspace=str(tmp_path),
                                                     tracking_uri="sqlite://")) for c in cells[:2]]
    pool.step()
    launched(tmp_path / cells[0].run_key)
    pool.stop(running)
    pool.stop(queued)
    assert queued.state is CellState.KILLED and queued.attempt == 0
    while pool.busy:
        pool.step()
        time.sleep(0.02)
    assert running.state is CellState.KILLED and running.attempt == 1


# ---------------------------------------------------------------------------- Slurm, without Slurm


def slurm_handle(tmp_path, cell, pickled=None):
    """A handle of a job that left squeue; its submitit result file holds `pickled`."""
    result_pickle = tmp_path / "7_result.pkl"
    if pickled is not None:
        result_pickle.write_bytes(pickle.dumps(pickled))
    job = TrainJob.for_cell(cell, spec_file="s", workspace=str(tmp_path), tracking_uri="sqlite://")
    job.paths().make()
    sjob = SimpleNamespace(job_id="7", paths=SimpleNamespace(result_pickle=result_pickle))
    return job, Handle(Submission(job, cell.config.resources), tmp_path / "7_log.out", slurm_job=sjob)


@pytest.fixture
def squeue(monkeypatch):
    """What squeue says: job id -> state."""
    states: dict[str, str] = {}
    monkeypatch.setattr("harness.schedule.slurm.squeue", lambda ids: {i: states[i] for i in ids if i in states})
    return states


def test_the_slurm_poll_reads_result_json_first(tmp_path, cells, squeue):
    job, handle = slurm_handle(tmp_path, cells[0], ("error", "Traceback ...\nRuntimeError: harness train exited with 2"))
    backend = SlurmBackend(str(tmp_path), refresh_s=0.0)
    backend.live.append(handle)
    squeue["7"] = "PENDING"
    assert backend.poll(handle) is None and not backend.started(handle)
    squeue["7"] = "RUNNING"
    assert backend.poll(handle) is None and backend.started(handle)
    del squeue["7"]
    write_result(job.paths().result, CellResult(Outcome.BAD_INPUT, "model.num_classes: 3"))
    assert backend.poll(handle) == CellResult(Outcome.BAD_INPUT, "model.num_classes: 3")
    job.paths().result.unlink()  # no answer: submitit's result file
    assert backend.poll(handle).outcome is Outcome.CRASH


def test_the_slurm_poll_without_an_answer_reads_submitits_result(tmp_path, cells, squeue):
    _, handle = slurm_handle(tmp_path, cells[0], ("success", 75))
    assert SlurmBackend(str(tmp_path)).poll(handle).outcome is Outcome.BUSY
    _, handle = slurm_handle(tmp_path / "x", cells[1])  # cancelled before it could write anything
    assert SlurmBackend(str(tmp_path)).poll(handle) == CellResult.from_exit(128 + signal.SIGKILL)


def test_a_slurm_job_answers_for_a_worker_that_could_not(tmp_path, cells):
    """torchrun's rank 0 killed: the job's own callable writes what the exit status says, so the
    login node reads it from result.json; a requeued job clears the last launch's answer."""
    job = TrainJob.for_cell(cells[0], spec_file="s", workspace=str(tmp_path), tracking_uri="sqlite://")
    job.paths().make()
    write_result(job.paths().result, CellResult(Outcome.FINISHED))
    cell = SlurmCell(job, gpus=0)
    cell.job = SimpleNamespace(paths=job.paths, execute=lambda: 128 + signal.SIGKILL)
    with pytest.raises(RuntimeError, match="exited with 137"):
        cell()
    assert read_result(job.paths().result) == CellResult.from_exit(128 + signal.SIGKILL)
    cell.job = SimpleNamespace(paths=job.paths, execute=lambda: 0)
    assert cell() == 0 and read_result(job.paths().result) is None
