"""`harness train` with bad input (issue 17): everything is checked before the lock, the data cache
or the MLflow run exist; a corrupt checkpoint says how to go on; errors never echo the environment."""

import os
import pickle

import pytest

from tests.conftest import EXPERIMENTS
from tests.train.helpers import runs, tiny_overrides

QUICK = EXPERIMENTS / "quickstart.yaml"


def files_under(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def test_a_bad_weights_path_writes_nothing_and_shows_no_environment(run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", os.environ["PATH"] + ":/opt/s3cr3t/bin")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    over = tiny_overrides(tmp_path, extra="model.backbone.name: resnet18\nmodel.backbone.norm: frozen_bn\nmodel.backbone.weights: '${HOME}/x-${PATH}.pkl'\n")
    ws = tmp_path / "ws"
    code, _, err = run_cli("train", QUICK, "--row", "POTO", "--workspace", ws, "--set-file", over)
    assert code == 2
    # the preflight names the file as written, with the variable unexpanded where it would echo the environment
    assert err.count("\n") == 1 and "model.backbone.weights" in err and "x-${PATH}.pkl" in err, err
    assert "s3cr3t" not in err
    assert not ws.exists()  # no lock, no data cache, no MLflow store


def test_a_data_root_from_a_token_variable_is_not_echoed(run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_TEST_TOKEN", "tok-s3cr3t")
    over = tiny_overrides(tmp_path, extra="data.name: coco\ndata.root: 'd/${HARNESS_TEST_TOKEN}'\n"
                                          "data.train: {images: i, annotations: a.json}\n"
                                          "data.val: {images: i, annotations: a.json}\n")
    code, _, err = run_cli("train", QUICK, "--row", "POTO", "--workspace", tmp_path / "ws", "--set-file", over)
    assert code == 2 and err.count("\n") == 1
    assert "d/${HARNESS_TEST_TOKEN}" in err and "data.root" in err and "s3cr3t" not in err
    assert not (tmp_path / "ws").exists()


def test_a_weights_pickle_asking_for_a_terabyte_is_one_line(run_cli, tmp_path):
    bomb = tmp_path / "w.pkl"
    bomb.write_bytes(b"\x80\x02cnumpy._core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
                     b"\x8a\x06\x00\x00\x00\x00\x00\x01\x85C\x01b\x87R.")
    over = tiny_overrides(tmp_path, extra=f"model.backbone.name: resnet18\nmodel.backbone.norm: frozen_bn\nmodel.backbone.weights: {bomb}\n")
    code, _, err = run_cli("train", QUICK, "--row", "POTO", "--workspace", tmp_path / "ws", "--set-file", over)
    assert code == 2 and err.count("\n") == 1
    assert "shape (1099511627776,) of int8 needs more bytes than the file's 69" in err
    assert not (tmp_path / "ws").exists()


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


@pytest.mark.slow
def test_a_corrupt_checkpoint_is_one_line_saying_how_to_go_on(run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    over = tiny_overrides(tmp_path, iters=1)
    ws = tmp_path / "ws"
    args = ("train", QUICK, "--row", "POTO", "--workspace", ws, "--set-file", over)
    code, _, err = run_cli(*args)
    assert code == 0, err
    (ckpt,) = ws.glob("*/checkpoint.pt")
    good = ckpt.read_bytes()
    (ckpt.parent / "lock").unlink()
    for bad in (good[: len(good) // 2], b"", pickle.dumps({"model": _Evil(), "iteration": 1})):
        ckpt.write_bytes(bad)
        before = files_under(ws)
        code, _, err = run_cli(*args)
        assert code == 2 and err.count("\n") == 1, err
        assert err.startswith(f"error: {ckpt}: cannot resume from this checkpoint (")
        assert "move the file aside" in err and "--fresh" in err
        assert files_under(ws) == before and not (tmp_path / "PWNED").exists()  # not even the lock
    code, _, err = run_cli(*args, "--fresh")  # the way on: the bad file is set aside, the cell starts over
    assert code == 0, err
    assert len(list(ckpt.parent.glob("checkpoint.*.old.pt"))) == 1
    assert list(runs(ws, "quickstart")["status"]) == ["FINISHED", "FINISHED"]
