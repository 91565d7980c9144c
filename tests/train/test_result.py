"""`result.json`: the one answer of a launch, and what an exit status alone says."""

import signal

import pytest

from harness.train.exit_codes import ExitCode
from harness.train.result import (
    CellResult,
    CellState,
    Outcome,
    clear_result,
    launch_result,
    read_result,
    write_result,
)


@pytest.mark.parametrize("result", [
    CellResult(Outcome.FINISHED, iteration=600, run_id="abc", metrics={"ap50": 0.81, "nms.ap50": 0.8}),
    CellResult(Outcome.KILLED, "killed by SIGTERM at iteration 42", signal.SIGTERM, 42, "abc"),
    CellResult(Outcome.BAD_INPUT, "data.train: annotation file not found"),
])
def test_a_result_reads_back_as_written(tmp_path, result):
    write_result(tmp_path / "result.json", result)
    assert read_result(tmp_path / "result.json") == result
    assert launch_result(tmp_path / "result.json", 99) == result  # the file wins over the exit status
    clear_result(tmp_path / "result.json")
    assert read_result(tmp_path / "result.json") is None
    clear_result(tmp_path / "result.json")  # nothing to clear is fine


def test_exit_codes_and_states_follow_the_outcome():
    killed = CellResult(Outcome.KILLED, "x", signal.SIGTERM)
    assert killed.exit_code == 128 + signal.SIGTERM and killed.state is CellState.KILLED
    assert killed.describe() == "killed by SIGTERM: x" and Outcome.KILLED.retried
    assert CellResult(Outcome.DIVERGED, "diverged: loss nan").exit_code == ExitCode.DIVERGED
    assert CellResult(Outcome.UNHEALTHY).diverged and not Outcome.UNHEALTHY.retried
    assert CellResult(Outcome.BAD_INPUT).exit_code == 2 and not Outcome.BAD_INPUT.retried
    assert CellResult(Outcome.BUSY).state is CellState.ELSEWHERE and not Outcome.BUSY.retried
    assert CellResult(Outcome.CRASH).state is CellState.FAILED and Outcome.CRASH.retried
    assert CellResult(Outcome.FINISHED, "ignored").describe() == "finished"


@pytest.mark.parametrize("code, outcome, signum", [
    (0, Outcome.FINISHED, None), (1, Outcome.CRASH, None), (2, Outcome.BAD_INPUT, None),
    (3, Outcome.DIVERGED, None), (4, Outcome.UNHEALTHY, None), (75, Outcome.BUSY, None),
    (137, Outcome.KILLED, 9), (-9, Outcome.KILLED, 9), (-15, Outcome.KILLED, 15), (42, Outcome.CRASH, None),
])
def test_a_worker_that_wrote_no_result_is_read_from_its_exit_status(tmp_path, code, outcome, signum):
    result = launch_result(tmp_path / "absent.json", code)
    assert result.outcome is outcome and result.signal == signum
    assert result.exit_code == (128 + signum if signum else code if code != 42 else 1)


@pytest.mark.parametrize("text", ["{", "[]", '{"version": 2, "outcome": "finished"}', '{"version": 1}',
                                  '{"version": 1, "outcome": "exploded"}'])
def test_a_result_file_that_is_not_one_is_no_result(tmp_path, text):
    (tmp_path / "result.json").write_text(text)
    assert read_result(tmp_path / "result.json") is None
    assert launch_result(tmp_path / "result.json", 3).outcome is Outcome.DIVERGED
