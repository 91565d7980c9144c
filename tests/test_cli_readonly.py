"""A place that cannot be written is one line naming it (exit 2), never a traceback: a read-only
workspace for `run` and `train`, a read-only README folder or report folder for `report`."""

import os
import shlex
import shutil
import subprocess
import sys

import pytest

from tests.conftest import EXPERIMENTS

QUICK = EXPERIMENTS / "quickstart.yaml"


def _namespaces() -> bool:
    return bool(shutil.which("unshare")) and subprocess.run(
        ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"], capture_output=True).returncode == 0


pytestmark = pytest.mark.skipif(not _namespaces(), reason="needs unshare and tmpfs mounts (user namespaces)")


def test_unwritable_places_are_one_line_each(tmp_path):
    ro, store = tmp_path / "ro", tmp_path / "store"
    ro.mkdir()
    store.mkdir()
    from mlflow import MlflowClient

    MlflowClient(f"sqlite:///{store / 'mlflow.db'}").create_experiment("quickstart")  # a store without runs
    readme = "# x\\n\\n<!-- harness:table quickstart -->\\nold\\n<!-- /harness:table -->\\n"
    harness = " ".join(shlex.quote(a) for a in (sys.executable, "-m", "harness"))
    commands = {
        "run": f"run {QUICK} --workspace {ro}/ws",
        "train": f"train {QUICK} --row FCOS --workspace {ro}",
        "readme": f"report {QUICK} --workspace {store} --readme {ro}/README.md --allow-empty",
        "out": f"report {QUICK} --workspace {store} --out {ro}/reports/q.md --allow-empty",
    }
    script = [f"mount -t tmpfs tmpfs {ro}", f"printf '{readme}' > {ro}/README.md", f"mount -o remount,ro {ro}"]
    script += [f"{harness} {cmd} > {tmp_path}/{name}.out 2> {tmp_path}/{name}.err; echo $? > {tmp_path}/{name}.rc"
               for name, cmd in commands.items()]
    subprocess.run(["unshare", "-rm", "sh", "-c", " && ".join(script[:3]) + "; " + "; ".join(script[3:])],
                   env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}, check=True, timeout=300)
    expect = {"run": f"{ro}/ws", "train": f"{ro}/", "readme": f"{ro}/README.md", "out": f"{ro}/reports"}
    for name, where in expect.items():
        err = (tmp_path / f"{name}.err").read_text()
        assert (tmp_path / f"{name}.rc").read_text().strip() == "2", (name, err)
        assert err.startswith(f"error: {where}") and "cannot be written (Read-only file system)" in err, (name, err)
        assert len(err.splitlines()) == 1 and "Traceback" not in err, (name, err)
