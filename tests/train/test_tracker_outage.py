"""A tracking server that goes away mid-run: training goes on, nothing is lost (issue 16).

One real `mlflow server`, two cells training against it at once. The server is killed while both
train and comes back about 20 s later. The long cell trains through the outage and its run ends
FINISHED with every step and its original timestamps; the short cell ends during the outage,
leaves its spool on disk marked unsynced, and `harness sync` sends it; training it again trains
nothing."""

import re
import subprocess
import sys
import threading
import time
import warnings

import pytest

from tests.conftest import EXPERIMENTS
from tests.servers import ENV, MlflowServer, wait_for
from tests.train.helpers import tiny_overrides

pytestmark = pytest.mark.slow
QUICK = EXPERIMENTS / "quickstart.yaml"
LONG, SHORT = 300, 40
OUTAGE_S = 20
NO_HEALTH = "train.health.enabled: false\n"  # tiny runs this short are far from healthy AP


class Train:
    """`harness train` in a subprocess; its output lines are read as they come."""

    def __init__(self, *args, env):
        self.t0 = time.time()
        self.proc = subprocess.Popen([sys.executable, "-m", "harness", "train", *map(str, args)], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self.iteration = 0
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)
            m = re.search(r"iter (\d+)/", line)
            if m:
                self.iteration = int(m.group(1))

    def wait(self, timeout=300) -> tuple[int, str, float]:
        code = self.proc.wait(timeout=timeout)
        self.reader.join(timeout=10)
        return code, "".join(self.lines), time.time() - self.t0


def test_a_server_killed_mid_run_loses_nothing_and_stalls_nothing(tmp_path, run_cli):
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    server = MlflowServer(tmp_path / "server").start()
    ws = tmp_path / "ws"
    short_env = {**ENV, "HARNESS_SYNC_WAIT_S": "2"}  # ends during the outage; gives up waiting at once
    common = ("--workspace", ws, "--tracking-uri", server.uri)
    try:
        long = Train(QUICK, "--row", "POTO", "--set-file", tiny_overrides(tmp_path, iters=LONG, ckpt=200, extra=NO_HEALTH), *common,
                     env=ENV)
        short = Train(QUICK, "--row", "FCOS", "--set-file", tiny_overrides(tmp_path, iters=SHORT, ckpt=20, extra=NO_HEALTH), *common,
                      env=short_env)
        wait_for(lambda: long.iteration >= 20 and short.iteration >= 1, 120, "both cells to train")
        t_kill = time.time()
        server.stop()  # SIGKILL, the whole process group
        wait_for(lambda: short.proc.poll() is not None, 120, "the short cell to end during the outage")
        short_code, short_out, _ = short.wait()
        time.sleep(max(0.0, OUTAGE_S - (time.time() - t_kill)))
        server.start()
        t_back = time.time()
        code, out, wall = long.wait()
    finally:
        for t in ("long", "short"):
            proc = locals().get(t)
            if proc is not None and proc.proc.poll() is None:
                proc.proc.kill()
    try:
        assert code == 0, out[-3000:]
        assert "tracking store unreachable" in out and "training goes on" in out
        # the short cell ended while the server was away: trained, spool left on disk, marked
        assert short_code == 0, short_out[-3000:]
        assert "marked unsynced" in short_out
        unsynced = list(ws.glob("*/unsynced"))
        assert len(unsynced) == 1 and (unsynced[0].parent / "spool.jsonl").is_file()
        assert not (ws / "mlflow.db").exists()  # a remote store: nothing local

        from mlflow import MlflowClient

        client = MlflowClient(server.uri)
        exp = client.get_experiment_by_name("quickstart")
        runs = {r.data.tags["harness.row"]: r for r in client.search_runs([exp.experiment_id])}
        run = runs["POTO"]
        assert run.info.status == "FINISHED"
        history = sorted((m.step, m.timestamp) for m in client.get_metric_history(run.info.run_id, "train.total_loss"))
        steps = [s for s, _ in history]
        assert steps == list(range(1, LONG + 1))  # every step, once
        stamps = [t / 1000 for _, t in history]
        assert stamps == sorted(stamps)
        # original timestamps: steps trained while the server was away carry their own time
        during = [s for s, t in history if t_kill + 1 < t / 1000 < t_back - 1]
        assert len(during) >= 20, len(during)
        # training wall time: no more than the pace before the outage would take, plus the outage
        before = [t for t in stamps if t < t_kill]
        assert len(before) >= 20
        pace = (before[-1] - before[0]) / (len(before) - 1)
        span = stamps[-1] - stamps[0]
        outage = t_back - t_kill
        assert span <= pace * (LONG - 1) + outage + 5, (span, pace * (LONG - 1), outage)
        print(f"\noutage {outage:.1f} s; training span {span:.1f} s vs {pace * (LONG - 1):.1f} s at the pace "
              f"before it; {len(during)} steps trained while the server was away; process wall {wall:.1f} s")

        # the short cell: RUNNING on the server until `harness sync` sends its spool
        assert runs["FCOS"].info.status == "RUNNING"
        short_set = ("--set-file", tiny_overrides(tmp_path, iters=SHORT, ckpt=20, extra=NO_HEALTH))
        code, out, err = run_cli("status", QUICK, *short_set, *common)
        assert code == 0 and "1 unsynced (harness sync)" in out, out + err
        code, out, err = run_cli("sync", QUICK, *short_set, *common)
        assert code == 0 and "nothing left unsynced" in out, out + err
        assert not list(ws.glob("*/unsynced")) and not list(ws.glob("*/spool.jsonl"))
        fcos = client.get_run(runs["FCOS"].info.run_id)
        assert fcos.info.status == "FINISHED" and "eval.nms.ap50" in fcos.data.metrics
        steps = sorted(m.step for m in client.get_metric_history(fcos.info.run_id, "train.total_loss"))
        assert steps == list(range(1, SHORT + 1))
        code, out, err = run_cli("train", QUICK, "--row", "FCOS", *short_set, *common)
        assert code == 0 and "already finished" in out, out + err
        assert len(client.search_runs([exp.experiment_id])) == 2  # nothing trained twice
    finally:
        server.stop()
