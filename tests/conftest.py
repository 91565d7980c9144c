import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"

MINI_SPEC = """\
name: mini
base:
  model:
    num_classes: 3
    backbone: {name: tiny}
    predictor:
      assigner: {name: poto}
  data:
    name: synthetic
    synthetic: {num_train: 4, num_val: 2}
  train: {max_iter: 10, base_lr: 0.01}
  eval: {nms: false}
axes:
  assigner:
    fcos: {model.predictor.assigner: {name: fcos}, eval.nms: true}
    poto: {}
rows:
  - {label: A, assigner: fcos}
  - {label: B, assigner: poto}
seeds: [0, 1]
"""


@pytest.fixture(scope="session", autouse=True)
def _history_cache(tmp_path_factory):
    """Reports cache plot histories by run id ($HARNESS_CACHE): tests use their own folder, never
    the user's ~/.cache."""
    old = os.environ.get("HARNESS_CACHE")
    os.environ["HARNESS_CACHE"] = str(tmp_path_factory.mktemp("history-cache"))
    yield
    if old is None:
        os.environ.pop("HARNESS_CACHE", None)
    else:
        os.environ["HARNESS_CACHE"] = old


@pytest.fixture
def mini_spec(tmp_path):
    """Write a spec (the minimal one, or `text`) and return its path."""

    def write(text: str = MINI_SPEC, name: str = "spec.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


@pytest.fixture
def run_cli(capsys):
    """Run the CLI in this process; returns (exit code, stdout, stderr)."""
    from harness.cli import main

    def run(*argv: str):
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def python() -> str:
    return sys.executable
