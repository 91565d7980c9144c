"""Real servers for the tests, on free loopback ports in temporary directories: `mlflow server`
(optionally its basic-auth app) and PostgreSQL (the image's initdb / pg_ctl)."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ENV = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """`mlflow server -w 1` on a SQLite store in `root`; stop() kills it, start() brings it back on
    the same port with the same store."""

    def __init__(self, root: Path, port: int | None = None, *, app: str | None = None, env: dict | None = None):
        self.root, self.port, self.app = Path(root), port or free_port(), app
        self.env = {**ENV, **(env or {})}
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log = self.root / "server.log"

    def start(self, timeout: float = 120) -> MlflowServer:
        self.root.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{self.root / 'server.db'}",
               "--artifacts-destination", str(self.root / "artifacts"), "--host", "127.0.0.1",
               "--port", str(self.port), "-w", "1"] + (["--app-name", self.app] if self.app else [])
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True, cwd=self.root)
        deadline = time.time() + timeout
        while True:
            try:
                with urllib.request.urlopen(self.uri + "/health", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                pass
            if self.proc.poll() is not None or time.time() > deadline:
                self.stop()
                raise RuntimeError(f"mlflow server did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.25)

    def stop(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=30)
        self.proc = None


def postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class Postgres:
    """A throwaway PostgreSQL cluster in `root` on a free loopback port. initdb refuses root, so
    as root the cluster belongs to the `postgres` user (runuser)."""

    def __init__(self, root: Path, bindir: Path):
        self.root, self.bin, self.port = Path(root), bindir, free_port()
        self.data = self.root / "data"
        self.as_user = os.geteuid() == 0
        self.user = "postgres" if self.as_user else os.environ.get("USER", "postgres")

    def _run(self, *args: str, **kw) -> subprocess.CompletedProcess:
        cmd = list(args)
        if self.as_user:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)

    def start(self) -> Postgres:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.as_user:
            shutil.chown(self.root, "postgres", "postgres")
        out = self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", self.user, "-A", "trust",
                        "--no-sync", "-E", "UTF8")
        if out.returncode:
            raise RuntimeError(f"initdb failed: {out.stderr[-2000:]}")
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100"
        out = self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", opts, "-l", str(self.root / "pg.log"),
                        "-w", "-t", "60", "start")
        if out.returncode:
            raise RuntimeError(f"pg_ctl start failed: {out.stderr[-2000:]} {self._log()}")
        return self

    def createdb(self, name: str) -> str:
        out = self._run(str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, name)
        if out.returncode:
            raise RuntimeError(f"createdb {name} failed: {out.stderr}")
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{name}"

    def _log(self) -> str:
        log = self.root / "pg.log"
        return log.read_text()[-2000:] if log.exists() else ""

    def stop(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")


def wait_for(predicate, timeout: float, what: str, poll: float = 0.1):
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(poll)


__all__ = ["ENV", "MlflowServer", "Postgres", "free_port", "postgres_bin", "urllib", "wait_for"]
