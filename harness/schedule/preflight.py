"""Preflight: what the cells of `harness run`, `harness sweep` and `harness train` need, checked
before any process starts and before anything is written (no workspace, no store).

Checked: the data roots, annotation files and image folders (after `${VAR:-default}` expansion),
the backbone weights files, the backend's commands (sbatch, squeue, srun, scancel for Slurm), the
tracking store (`resolve_tracking_uri`) and the workspace (writable, not full). Existence checks
only: no annotation file is opened, so a run without its data fails in about a second. Every
problem is one line naming the path and the environment variable or config key that sets it; the
lines are deduplicated across cells (21 cells missing the same file: one line). A file that exists
but cannot be used (corrupt, wrong classes) is the worker's bad input, in its result.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

from harness.formats.atomic import free_bytes
from harness.formats.paths import expand_vars, redact
from harness.spec.errors import Problem, UserError

#: commands the Slurm backend runs: submit, poll, stop, and submitit's launcher inside the allocation
SLURM_COMMANDS = ("sbatch", "squeue", "scancel", "srun")
#: below this much free space the workspace's device is full for every purpose (the store, logs,
#: job files); checkpoints are checked again, against their size, when they are written
MIN_FREE = 2 * 2**20

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")


def _names(*templates: str | None) -> list[str]:
    return list(dict.fromkeys(m.group(1) for t in templates for m in _VAR.finditer(t or "")))


def _hint(keys: Sequence[str], what: str, *templates: str | None) -> str:
    """How to fix a path: the variables its templates use, and the `--set` that replaces it."""
    names = _names(*templates)
    unset = [n for n in names if not os.environ.get(n)]
    given = [n for n in names if os.environ.get(n)]
    parts = [f"set {' and '.join(unset)}"] if unset else []
    parts += [f"check {' and '.join(given)}"] if given else []
    return f" ({', or '.join(parts + [' '.join(f'--set {key}={what}' for key in keys)])})"


class _Found:
    """Problems in order of discovery, each line once."""

    def __init__(self) -> None:
        self.problems: dict[str, Problem] = {}

    def add(self, problem: Problem) -> None:
        self.problems.setdefault(str(problem), problem)

    def extend(self, problems: Iterable[Problem]) -> None:
        for p in problems:
            self.add(p)

    def expand(self, template: str, key: str, what: str) -> Path | None:
        try:
            return Path(expand_vars(template, key))
        except UserError as exc:  # a variable without a default, not set
            self.extend(Problem(p.file, p.line, p.path, p.message + _hint([key], what)) for p in exc.problems)
            return None


def _data(cfg, found: _Found) -> None:
    if cfg.name == "synthetic":  # generated into the cache on first use
        return
    root = found.expand(cfg.root, "data.root", "DIR") if cfg.root else Path(".")
    if root is None:
        return
    if not root.is_dir():
        found.add(Problem(redact(str(root), cfg.root), None, "data.root",
                          "no such directory" + _hint(["data.root"], "DIR", cfg.root)))
        return
    missing: dict[Path, tuple[list[str], str, str, tuple]] = {}  # train and val share Images/: one line
    for which in ("train", "val"):
        split = getattr(cfg, which)
        for field, what, is_there, why in (("annotations", "FILE", Path.is_file, "annotation file not found"),
                                           ("images", "DIR", Path.is_dir, "image folder not found")):
            key, template = f"data.{which}.{field}", getattr(split, field)
            path = found.expand(template, key, what)
            if path is None:
                continue
            templates = (template,) if path.is_absolute() else (cfg.root, template)
            path = path if path.is_absolute() else root / path
            if not is_there(path):
                missing.setdefault(path, ([], what, why, templates))[0].append(key)
    for path, (keys, what, why, templates) in missing.items():
        found.add(Problem(redact(str(path), *templates), None, ", ".join(keys), why + _hint(keys, what, *templates)))


def _weights(cfg, found: _Found) -> None:
    template = cfg.model.backbone.weights
    if not template:
        return
    key = "model.backbone.weights"
    path = found.expand(template, key, "FILE")
    if path is not None and not path.is_file():
        found.add(Problem(redact(str(path), template), None, key,
                          ("a folder, not a weights file" if path.is_dir() else "weights file not found")
                          + _hint([key], "FILE", template)))


def backend_problems(backend: str | None) -> list[Problem]:
    """The commands a backend needs that are not on PATH (one line)."""
    if backend != "slurm":
        return []
    missing = [c for c in SLURM_COMMANDS if shutil.which(c) is None]
    if not missing:
        return []
    return [Problem(None, None, "--backend", f"slurm: {', '.join(missing)} not on PATH (is this a Slurm login "
                                             "node?); on this machine use --backend local")]


def _unwritable(folder: Path) -> str | None:
    """Why nothing can be created in `folder` (or where it would be created), or None."""
    p = folder
    while not p.exists() and p != p.parent:
        p = p.parent
    if not p.is_dir():
        return f"{p} is not a folder"
    if os.access(p, os.W_OK | os.X_OK):
        return None
    try:
        read_only = bool(os.statvfs(p).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    return f"cannot be written ({os.strerror(errno.EROFS if read_only else errno.EACCES)})"


def workspace_problems(workspace: str | Path, flag: str = "--workspace") -> list[Problem]:
    """A workspace that cannot be created or written, or whose device is full."""
    folder = Path(workspace)
    where = str(folder).rstrip("/") + "/"
    why = _unwritable(folder)
    if why:
        return [Problem(where, None, flag, why)]
    free = free_bytes(folder)
    if free is not None and free < MIN_FREE:
        return [Problem(where, None, flag, f"no space left on its device ({free / 2**20:.1f} MB free); "
                                           "free some space first")]
    return []


def preflight(cells: Sequence, *, workspace: str | Path, tracking_uri: str | None, backend: str | None = None,
              folders: Sequence[tuple[str | Path, str]] = ()) -> str:
    """Check everything `cells` need before anything starts; the resolved tracking URI.

    Raises `UserError` with one problem per missing thing (deduplicated over the cells). folders:
    other places the command writes, with the flag that names each (a sweep's --out-dir)."""
    from harness.track.mlflow_tracker import resolve_tracking_uri

    found = _Found()
    for cell in cells:
        _data(cell.config.data, found)
        _weights(cell.config, found)
    found.extend(backend_problems(backend))
    uri = ""
    try:
        uri = resolve_tracking_uri(tracking_uri, workspace, check=True)
    except UserError as exc:
        found.extend(exc.problems)
    found.extend(workspace_problems(workspace))
    for folder, flag in folders:
        found.extend(workspace_problems(folder, flag))
    if found.problems:
        raise UserError(list(found.problems.values()))
    return uri


__all__ = ["MIN_FREE", "SLURM_COMMANDS", "backend_problems", "preflight", "workspace_problems"]
