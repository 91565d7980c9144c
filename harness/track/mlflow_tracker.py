"""MLflow tracking: experiment = spec name, run = cell, batched metrics, resumable runs."""

from __future__ import annotations

import contextlib
import os
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import Any, Protocol

from harness.spec.errors import Problem, UserError
from harness.spec.workspace import artifacts_folder
from harness.track.client import client_for
from harness.track.store import kind, sqlite_file, sqlite_uri, without_credentials

warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"sqlalchemy.*")
warnings.filterwarnings("ignore", message=r".*declarative_base.*")

MAX_PARAM = 6000  # MLflow's value limit (characters)
MAX_KEY = 250
PARAMS_PER_BATCH = 100
METRICS_PER_BATCH = 1000


class Tracker(Protocol):
    run_id: str | None

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def flush(self) -> None: ...
    def set_tags(self, tags: dict[str, Any]) -> None: ...
    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None: ...
    def end(self, status: str, reason: str | None = None) -> None: ...


class NullTracker:
    """For ranks other than 0 and for dry runs: records nothing."""

    run_id = None

    def log_metrics(self, metrics, step):
        pass

    def flush(self):
        pass

    def set_tags(self, tags):
        pass

    def log_artifact(self, path, artifact_path=None):
        pass

    def end(self, status, reason=None):
        pass


def default_tracking_uri(workspace: str | Path) -> str:
    return sqlite_uri(Path(workspace) / "mlflow.db")


def _default_postgres_driver() -> str:
    """SQLAlchemy's driver for a plain postgresql:// URL (psycopg since SQLAlchemy 2.1)."""
    try:
        from sqlalchemy.engine.url import make_url

        return make_url("postgresql://h/db").get_dialect().driver
    except Exception:
        return "psycopg"


def check_tracking_uri(uri: str, timeout: float = 5.0, what: str = "--tracking-uri") -> None:
    """Fail fast and clearly when the store cannot be used (before any training)."""
    if kind(uri) == "server":
        base = uri.rstrip("/")
        try:
            with urllib.request.urlopen(base + "/health", timeout=timeout) as resp:
                if resp.status != 200:
                    raise OSError(f"HTTP {resp.status}")
            # /health can answer while the tracking API fails (its database down): ask the API
            # too; any answer below 500 (a 404 for the made-up name included) means it works
            probe = urllib.request.Request(
                base + "/api/2.0/mlflow/experiments/get-by-name?experiment_name=harness-health-probe",
                headers=_auth_header())
            try:
                with urllib.request.urlopen(probe, timeout=timeout):
                    pass
            except urllib.error.HTTPError as err:
                if err.code in (401, 403):
                    given = "the credentials in MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD were refused"
                    raise UserError(Problem(None, None, what, (
                        f"the MLflow server at {without_credentials(uri)} asks for a login (HTTP {err.code}): "
                        + (given if _auth_header() else "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"))
                    )) from None
                if err.code >= 500:
                    raise OSError(f"its tracking API answers HTTP {err.code}") from None
        except (OSError, urllib.error.URLError) as exc:
            raise UserError(Problem(None, None, what,
                                    f"cannot reach the MLflow server at {without_credentials(uri)}: "
                                    f"{str(exc).replace(uri, without_credentials(uri))}")) from None
    elif kind(uri) == "postgresql":
        import importlib.util

        driver = uri.split(":", 1)[0].partition("+")[2] or _default_postgres_driver()
        module = {"psycopg2cffi": "psycopg2cffi", "asyncpg": "asyncpg"}.get(driver, driver)
        if importlib.util.find_spec(module) is None:
            raise UserError(Problem(None, None, what,
                                    f"{without_credentials(uri)}: the PostgreSQL driver '{module}' is not installed "
                                    f"(install harness[postgres]"
                                    + ("" if module == "psycopg" else f", or pip install {module}") + ")"))
    elif (path := sqlite_path(uri)) is not None:
        if path.is_file():
            with open(path, "rb") as f:
                head = f.read(16)
            if head and head != b"SQLite format 3\x00":
                raise UserError(Problem(str(path), None, what,
                                        "not a SQLite database (corrupt or another kind of file)"))
            if head and not _is_mlflow_sqlite(path):
                raise UserError(Problem(str(path), None, what,
                                        "not an MLflow database (a corrupt SQLite file, or another program's)"))
        elif path.exists():
            raise UserError(Problem(str(path), None, what, "not a file"))
    elif kind(uri) == "file":
        raise UserError(Problem(None, None, what,
                                f"{uri}: MLflow 3 refuses the file store; use sqlite:///PATH or http://HOST:PORT"))


def _auth_header() -> dict[str, str]:
    """Basic auth from MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD, as MLflow sends it."""
    import base64

    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if not user or password is None:
        return {}
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def credentials_to_environment(uri: str) -> str:
    """A URI's user and password moved out of it: into MLFLOW_TRACKING_USERNAME / _PASSWORD for a
    server, into PGPASSWORD for PostgreSQL (its user stays: it is not a secret). The URI that comes
    back is what every later step sees, prints, logs and hands to its jobs (which inherit the
    environment), so the password never appears in a command line, a log, a param or a tag."""
    from urllib.parse import unquote, urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.password is None and not (parts.username and kind(uri) == "server"):
        return uri
    host = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    if kind(uri) == "server":
        os.environ["MLFLOW_TRACKING_USERNAME"] = unquote(parts.username or "")
        os.environ["MLFLOW_TRACKING_PASSWORD"] = unquote(parts.password or "")
        return urlunsplit(parts._replace(netloc=host))
    if kind(uri) == "postgresql":
        os.environ["PGPASSWORD"] = unquote(parts.password or "")
        return urlunsplit(parts._replace(netloc=f"{parts.username}@{host}" if parts.username else host))
    return uri


def _is_mlflow_sqlite(path: Path) -> bool:
    """Whether a SQLite file holds MLflow's tables (read-only; an empty file is a new store)."""
    import sqlite3

    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        finally:
            con.close()
    except sqlite3.Error:
        return False
    # any of MLflow's first tables: a store being created by another process has only some of them
    return not tables or bool(tables & {"experiments", "runs", "metrics", "params", "tags", "alembic_version"})


def sqlite_path(uri: str) -> Path | None:
    """The file of a SQLite tracking URI; None for any other store (`track.store.sqlite_file`)."""
    return sqlite_file(uri)


def resolve_tracking_uri(tracking_uri: str | None, workspace: str | Path, *, check: bool = True) -> str:
    """The one place that defaults the tracking URI (the workspace's SQLite store) and checks it;
    credentials in it move to the environment (credentials_to_environment). The default store
    is created with its workspace; a SQLite file named by the user must be in a folder that exists
    (a typo in the path is not a new store)."""
    uri = credentials_to_environment(tracking_uri) if tracking_uri else default_tracking_uri(workspace)
    if check and tracking_uri and (path := sqlite_path(uri)) is not None:
        folder = path.parent
        if not folder.is_dir():
            raise UserError(Problem(str(folder), None, "--tracking-uri",
                                    "no such directory for the SQLite store; nothing was created"))
    if check:
        check_tracking_uri(uri)
    return uri


def check_store_exists(uri: str, what: str = "--tracking-uri") -> None:
    """For commands that only read (status, report): a SQLite store that does not exist is a
    wrong path, not an empty store; opening it would create it and report nothing."""
    path = sqlite_path(uri)
    if path is not None and not path.is_file():
        raise UserError(Problem(str(path), None, what,
                                "no tracking store here (wrong --workspace or --tracking-uri?); "
                                "nothing was created"))


def flatten(d: dict, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = str(v)
    return out


def _clip(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[: limit - 3] + "..."


EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


def prepare_experiment(uri: str, name: str, workspace: str | Path | None, description: str = "") -> str:
    """Create the store (SQLite: whole, see `client_for`) and the experiment; its id."""
    return ensure_experiment(client_for(uri), name, uri, workspace, description)


def ensure_experiment(client, name: str, uri: str, workspace: str | Path | None, description: str = "") -> str:
    """The experiment's id, created on first use (model-development kind, the spec's description)."""
    tags = dict(EXPERIMENT_TAGS, **({"mlflow.note.content": description} if description else {}))
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        for k, v in tags.items():
            if exp.tags.get(k) != v:
                client.set_experiment_tag(exp.experiment_id, k, v)
        return exp.experiment_id
    location = None  # a database store (SQLite, PostgreSQL) keeps artifacts in the workspace
    if kind(uri) != "server" and workspace is not None:
        location = artifacts_folder(Path(workspace).resolve()).as_uri()
    try:
        return client.create_experiment(name, artifact_location=location, tags=tags)
    except Exception:  # created concurrently by another process
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


#: how long a cell's end waits for a tracking server to take the spooled writes before it leaves
#: them on disk (marked `unsynced`) for `harness sync`
SYNC_WAIT_S = float(os.environ.get("HARNESS_SYNC_WAIT_S", "60"))


def _quick_http_retries() -> None:
    """MLflow retries a failed HTTP call for minutes by default; the spool's sender retries on
    its own, so one call gives up within seconds (a user's explicit setting wins)."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")


class MLflowTracker:
    """Writes of one run. With a spool directory (training) every write is appended to the cell's
    spool and sent by a background thread, so the caller never waits on the store; without one
    (tools, tests) writes go straight to the store."""

    def __init__(self, client, run_id: str, spool_dir: str | Path | None = None, *, remote: bool = False):
        from harness.track.spool import Sender, Spool

        self.client, self.run_id = client, run_id
        self._buffer: list = []
        self._ended = False
        self._monitor = None
        self.remote = remote
        self.synced = True
        self._sender = Sender(client, run_id)
        self._spool = Spool(spool_dir, self._sender) if spool_dir is not None else None

    @classmethod
    def start(cls, uri: str, experiment: str, run_name: str, tags: dict[str, Any], *, workspace=None,
              resume_run_id: str | None = None, spool_dir: str | Path | None = None) -> MLflowTracker:
        remote = kind(uri) == "server"
        if remote:
            _quick_http_retries()
        client = client_for(uri)
        if resume_run_id is not None:
            client.update_run(resume_run_id, status="RUNNING")
            tracker = cls(client, resume_run_id, spool_dir, remote=remote)
            tracker.set_tags(tags)
            return tracker
        exp_id = ensure_experiment(client, experiment, uri, workspace)
        run = client.create_run(exp_id, tags={k: str(v) for k, v in tags.items()}, run_name=run_name)
        return cls(client, run.info.run_id, spool_dir, remote=remote)

    def _write(self, op: str, **fields: Any) -> None:
        if self._spool is not None:
            self._spool.append(op, **fields)
        else:
            self._sender.send([{"op": op, "run_id": self.run_id, "ts": int(time.time() * 1000), **fields}])

    def log_params(self, params: dict[str, Any]) -> None:
        self._write("params", data={_clip(k, MAX_KEY): _clip(str(v), MAX_PARAM) for k, v in params.items()})

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        ts = int(time.time() * 1000)
        self._buffer.extend([k, float(v), ts, int(step)] for k, v in metrics.items())
        if len(self._buffer) >= METRICS_PER_BATCH:
            self.flush()

    def flush(self) -> None:
        """Hand the buffered metrics over (to the spool: an append, never a network call)."""
        while self._buffer:
            chunk, self._buffer = self._buffer[:METRICS_PER_BATCH], self._buffer[METRICS_PER_BATCH:]
            self._write("metrics", data=chunk)

    def set_tags(self, tags: dict[str, Any]) -> None:
        if self._ended:  # a late heartbeat after the end record would put a live-only tag back
            return
        self._write("tags", data={k: _clip(str(v), 8000) for k, v in tags.items()})

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._write("artifact", path=str(Path(path).resolve()), artifact_path=artifact_path)

    def start_system_metrics(self) -> None:
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            self._monitor = SystemMetricsMonitor(self.run_id)
            self._monitor.start()
        except Exception as exc:  # optional: never stop training for it
            print(f"system metrics unavailable: {exc}")

    def end(self, status: str, reason: str | None = None) -> None:
        """FINISHED, FAILED or KILLED; a reason is kept in the `harness.failure` tag.

        With a spool, waits for the store to take every write (a remote one at most
        HARNESS_SYNC_WAIT_S); when it does not, `synced` is False and the spool stays on disk,
        marked `unsynced`, until `harness sync` or the next `harness run` sends it."""
        if self._ended:
            return
        self._ended = True
        try:
            self.flush()
        finally:
            if self._monitor is not None:
                with contextlib.suppress(Exception):
                    self._monitor.finish()
            self._write("end", status=status, reason=reason)
            if self._spool is not None:
                self.synced = self._spool.close(SYNC_WAIT_S if self.remote else 600.0)


def sync_cell(cell_dir: str | Path, uri: str) -> int:
    """Send a cell's spooled writes that its store does not have yet (see harness.track.spool);
    the number sent. A store that does not take them is one clear error."""
    from harness.track.spool import pending, sync

    if not pending(cell_dir) and not (Path(cell_dir) / "unsynced").exists():
        return 0
    if kind(uri) == "server":
        _quick_http_retries()
    try:
        return sync(cell_dir, lambda: client_for(uri))
    except Exception as exc:
        raise UserError(Problem(str(Path(cell_dir) / "spool.jsonl"), None, "--tracking-uri",
                                f"cannot send the spooled tracking records to {without_credentials(uri)}: "
                                f"{str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}"
                                .replace(uri, without_credentials(uri)))) from None


def git_commit() -> str:
    """The commit of the harness source tree, or 'unknown'."""
    import subprocess

    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, env={**os.environ, "GIT_DIR": str(root / ".git")})
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
