"""`TrainJob`: the one description of a training job, written once and read once."""


import json
from dataclasses import replace
from pathlib import Path

import pytest

from harness.cli import build_parser
from harness.schedule.job import Overrides, SweepLink, TrainJob
from harness.spec import SpecError, expand, load_spec

FULL = TrainJob(spec_file="/x/spec.yaml", row="POTO+3DMF", dataset="synthetic", seed=2, workspace="/w",
                tracking_uri="http://127.0.0.1:5000", overrides=Overrides(("train.base_lr=0.01", "eval.nms=true"),
                                                                          ("/x/a.yaml", "/x/b.yaml")),
                fresh=True, sweep=SweepLink("abc123", 7, "lr_sweep"))


@pytest.mark.parametrize("job", [
    FULL,
    TrainJob(spec_file="s.yaml", row="A", dataset=None, seed=None, workspace="runs", tracking_uri=None),
    TrainJob(spec_file="s.yaml", row="A", dataset="coco", seed=0, workspace="runs", tracking_uri="sqlite:///x.db",
             resume=True),
])
def test_argv_round_trips(job):
    assert TrainJob.from_argv(job.argv()) == job


def test_the_cli_parses_what_the_job_writes():
    args = build_parser().parse_args(FULL.argv())
    assert args.command == "train" and TrainJob.from_args(args) == FULL


def test_command_uses_torchrun_only_for_multi_gpu_cells():
    assert FULL.command(1)[1:3] == ["-m", "harness"]
    cmd = FULL.command(4)
    assert cmd[1:4] == ["-m", "torch.distributed.run", "--standalone"] and "4" in cmd
    assert cmd[cmd.index("harness") + 1:] == FULL.argv()


def test_requeued_job_never_starts_over():
    assert FULL.without_fresh().fresh is False and FULL.without_fresh().sweep == FULL.sweep


def test_from_argv_refuses_another_command():
    with pytest.raises(ValueError):
        TrainJob.from_argv(["run", "spec.yaml"])
    with pytest.raises(SpecError, match="give SPEC and --row"):
        TrainJob.from_argv(["train", "spec.yaml"])


def test_job_for_a_cell_picks_that_cell(tmp_path):
    cells = expand(load_spec("experiments/quickstart.yaml"))
    cell = cells[4]
    job = TrainJob.for_cell(cell, spec_file="experiments/quickstart.yaml", workspace=str(tmp_path),
                            tracking_uri=None)
    assert job.cell().run_key == cell.run_key
    assert job.paths().dir == tmp_path / cell.run_key


def test_overrides_keep_the_command_line_order(tmp_path):
    f = tmp_path / "o.yaml"
    f.write_text("train: {base_lr: 0.5}\n")
    ov = Overrides.of(["train.base_lr=0.25"], [str(f)])
    assert ov.files == (str(f.resolve()),)
    parsed = ov.parsed()
    assert [o.value for o in parsed] == [0.5, 0.25]  # the file first, the items after: the item wins


def test_a_planned_cell_travels_whole_in_its_job_file(tmp_path):
    # the worker trains the config the scheduler planned, not whatever the spec says later
    spec = tmp_path / "spec.yaml"
    spec.write_text(Path("experiments/quickstart.yaml").read_text())
    cell = expand(load_spec(spec))[4]
    job = TrainJob.for_cell(cell, spec_file=str(spec), workspace=str(tmp_path / "ws"), tracking_uri=None,
                            sweep=SweepLink("abc", 3, "s"))
    job.paths().make()
    job.write_job()
    assert job.argv()[:3] == ["train", "--job", str(tmp_path / "ws" / cell.run_key / "job.json")]
    spec.write_text(spec.read_text().replace("base_lr: 0.002", "base_lr: 0.5"))  # edited after planning
    back = TrainJob.from_argv(job.argv())
    assert replace(back, planned=None) == replace(job, planned=None)
    assert back.cell().config == cell.config and back.cell().run_key == cell.run_key and back.cell().id == cell.id
    assert TrainJob.from_argv(job.without_fresh().argv()).sweep == SweepLink("abc", 3, "s")


def test_a_job_file_whose_key_is_not_its_config_is_refused(tmp_path, run_cli):
    cell = expand(load_spec("experiments/quickstart.yaml"))[0]
    job = TrainJob.for_cell(cell, spec_file="experiments/quickstart.yaml", workspace=str(tmp_path), tracking_uri=None)
    job.paths().make()
    path = job.write_job()
    data = json.loads(path.read_text())
    data["cell"]["config"]["train"]["base_lr"] = 0.5  # edited by hand: the key no longer matches
    path.write_text(json.dumps(data))
    code, _, err = run_cli("train", "--job", path, "--workspace", tmp_path)
    assert code == 2 and "run_key: the job's key" in err and "nothing trained" in err and len(err.splitlines()) == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["job.json"]
    code, _, err = run_cli("train", "experiments/quickstart.yaml", "--job", path, "--workspace", tmp_path)
    assert code == 2 and "a job file is the whole cell: drop SPEC" in err
    path.write_text("{")
    code, _, err = run_cli("train", "--job", path, "--workspace", tmp_path)
    assert code == 2 and "--job: not JSON" in err
