"""What a spec's runs were made with, read back from the store: their `--set` overrides relative
to the spec and their harness commits.

A run records no command line; it records its resolved config as params (`names.cell_params`)
and its commit in the `harness.git_commit` tag. The overrides of a run are the differences
between its params and those of the spec's own cell (same row, dataset and seed, no overrides),
over the sections that make the run key (`schedule.*`, `train.health.*`, `tracking.*`,
`resources.*` do not): a key whose value differs is `key=<run's value>`; a section the run does
not have (a null option: `model.backbone.pretrain`) is `section=null`. Pasted as `--set`, they
give the run keys of the runs back (`override_hint` checks it before it shows them).
"""

from __future__ import annotations

import json
import shlex
from collections import Counter
from dataclasses import dataclass

from harness.spec.schema import HASHED_SECTIONS


def _compared(params: dict[str, str]) -> dict[str, str]:
    """The params that make the run key: the hashed sections, without the health rules."""
    return {k: v for k, v in params.items()
            if k.split(".", 1)[0] in HASHED_SECTIONS and k != "seed" and not k.startswith("train.health.")}


def _value(text: str) -> str:
    """A param (Python's str of a JSON value) as a `--set` value: lists and mappings as compact
    JSON (one shell word), booleans as YAML's true/false, the rest as logged."""
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, list | dict):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, bool):
        return "true" if value else "false"
    return text


def _null_prefix(key: str, theirs: dict[str, str]) -> str:
    """The shortest dotted prefix of `key` under which the run has no param: the option it left null."""
    parts = key.split(".")
    for i in range(1, len(parts) + 1):
        p = ".".join(parts[:i])
        if not any(t == p or t.startswith(p + ".") for t in theirs):
            return p
    return key


def override_items(spec_params: dict[str, str], run_params: dict[str, str]) -> dict[str, str]:
    """key -> `--set` value: what turns the spec's cell (its params) into the run (its params)."""
    mine, theirs = _compared(spec_params), _compared(run_params)
    items = {k: _value(v) for k, v in theirs.items() if mine.get(k) != v}
    for k in mine:
        if k not in theirs and not _keyless_at_default(k, mine[k]):
            items[_null_prefix(k, theirs)] = "null"
    return dict(sorted(items.items()))


def _keyless_at_default(key: str, text: str) -> bool:
    """Whether `key` is a field added after runs were first made (`KEYLESS_DEFAULTS`) and the
    spec has it at the value that keeps the old behaviour: a run made before the field existed
    has no param for it, and that is not an override."""
    import yaml

    from harness.spec.schema import KEYLESS_DEFAULTS

    parts = key.split(".")
    for pattern, default in KEYLESS_DEFAULTS.items():
        p = pattern.split(".")
        if len(p) == len(parts) and all(a in ("*", b) for a, b in zip(p, parts, strict=True)):
            try:
                return yaml.safe_load(text) == default
            except yaml.YAMLError:
                return False
    return False


def set_string(items: dict[str, str]) -> str:
    """`--set k=v ...` (each item one shell word), '' without items."""
    return ("--set " + " ".join(shlex.quote(f"{k}={v}") for k, v in items.items())) if items else ""


def spec_params(cell) -> dict[str, str]:
    """The params a run of this cell logs (`names.cell_params`, off Slurm)."""
    from harness.track.names import cell_params

    return cell_params(cell.config.model_dump(mode="json"))


def params_of(uri: str, run_ids: list[str]) -> dict[str, dict[str, str]]:
    """run id -> its params ({} for a run that logged none): one read-only query on SQLite,
    `get_run` per run elsewhere."""
    from harness.track.store import sqlite_file

    out: dict[str, dict[str, str]] = {rid: {} for rid in run_ids}
    if not run_ids:
        return out
    path = sqlite_file(uri)
    if path is not None:
        from harness.track.runs import _connect

        con = _connect(path)
        try:
            for i in range(0, len(run_ids), 500):
                chunk = run_ids[i:i + 500]
                marks = ",".join("?" * len(chunk))
                for rid, key, value in con.execute(
                        f"SELECT run_uuid, key, value FROM params WHERE run_uuid IN ({marks})", chunk):
                    out[rid][key] = value
        finally:
            con.close()
        return out
    from harness.track.client import client_for

    client = client_for(uri)
    for rid in run_ids:
        out[rid] = dict(client.get_run(rid).data.params)
    return out


def _spec_cells(loaded) -> dict[tuple, object]:
    """(row, dataset, seed) -> the spec's own cell (no overrides); {} where the spec needs some."""
    from harness.spec import expand
    from harness.spec.errors import UserError

    try:
        return {(c.row, c.dataset, c.seed): c for c in expand(loaded, [])}
    except UserError:
        return {}


@dataclass(frozen=True)
class Provenance:
    """The overrides and commits of a set of finished runs (one table's, a report's)."""

    #: `--set` string -> how many runs were made with it ('' : the spec as written)
    overrides: dict[str, int]
    #: commit -> how many runs
    commits: dict[str, int]
    #: runs whose params are not in the store (their overrides unknown)
    unrecorded: int = 0

    def to_json(self) -> dict:
        return {"overrides": self.overrides, "commits": self.commits, "runs_without_params": self.unrecorded}


def provenance(loaded, cells, uri: str, runs: dict) -> dict[str, Provenance]:
    """table -> the Provenance of its counted FINISHED runs (`runs`: run key -> RunInfo); key ''
    for all the report's runs together."""
    spec = _spec_cells(loaded)
    counted = [(c, runs[c.run_key]) for c in cells if c.run_key in runs and runs[c.run_key].status == "FINISHED"]
    params = params_of(uri, sorted({r.run_id for _, r in counted}))
    per: dict[str, tuple[Counter, Counter, list]] = {}
    for c, r in counted:
        table = (c.meta.table if c.meta else None) or ""
        base = spec.get((c.row, c.dataset, c.seed))
        got = params.get(r.run_id) or {}
        for name in {table, ""}:
            o, m, u = per.setdefault(name, (Counter(), Counter(), [0]))
            m[r.commit or "unknown"] += 1
            if not got or base is None:
                u[0] += 1
            else:
                o[set_string(override_items(spec_params(base), got))] += 1
    return {name: Provenance(dict(o.most_common()), dict(m.most_common()), u[0]) for name, (o, m, u) in per.items()}


def describe(p: Provenance) -> list[str]:
    """The lines a report's header gives a Provenance."""
    out = []
    if len(p.overrides) == 1:
        (sets,) = p.overrides
        out.append(f"Made with `{sets}` (overrides relative to the spec, read from the runs' params)." if sets
                   else "Made with the spec as written (no overrides, read from the runs' params).")
    elif p.overrides:
        out.append("The runs were made with different overrides (relative to the spec, read from their params): "
                   + "; ".join(f"`{s or 'none'}` ({n} run{'s' * (n != 1)})" for s, n in p.overrides.items()) + ".")
    if p.unrecorded:
        out.append(f"{p.unrecorded} run(s) logged no params: their overrides are unknown.")
    commits = [f"`{c[:10]}`" + (f" ({n} runs)" if len(p.commits) > 1 else "") for c, n in p.commits.items()]
    if len(commits) == 1:
        out.append(f"Harness commit {commits[0]}.")
    elif commits:
        out.append("The runs were made at different harness commits: " + ", ".join(commits) + ".")
    return out


def override_hint(loaded, cells, uri: str, runs: dict) -> str | None:
    """One line for cells without a run under their key while runs of the same row, dataset and
    seed exist under other keys: the complete `--set` string (relative to the spec) of the runs
    that cover most of them, and how many cells that string finds. None when there is nothing to say."""
    from mlflow import MlflowClient, search_runs, set_tracking_uri

    from harness.spec import expand, parse_set
    from harness.spec.errors import UserError

    missing = [c for c in cells if c.run_key not in runs]
    if not missing:
        return None
    set_tracking_uri(uri)
    if MlflowClient(uri).get_experiment_by_name(loaded.spec.name) is None:
        return None
    mine = {c.run_key for c in cells}
    wanted = {(c.row, c.dataset, str(c.seed)) for c in missing}
    best: dict[tuple, object] = {}
    for run in search_runs(experiment_names=[loaded.spec.name], output_format="list"):
        t = run.data.tags
        ident = (t.get("harness.row"), t.get("harness.dataset"), t.get("harness.seed"))
        if ident not in wanted or t.get("harness.run_key") in mine or not run.data.params:
            continue
        prev = best.get(ident)
        rank = (run.info.status == "FINISHED", run.info.start_time or 0)
        if prev is None or rank > (prev.info.status == "FINISHED", prev.info.start_time or 0):
            best[ident] = run
    if not best:
        return None
    spec = _spec_cells(loaded)
    sets: Counter = Counter()
    latest: dict[str, int] = {}
    for (row, dataset, seed), run in best.items():
        base = spec.get((row, dataset, int(seed)))
        if base is None:
            continue
        s = set_string(override_items(spec_params(base), run.data.params))
        sets[s] += 1
        latest[s] = max(latest.get(s, 0), run.info.start_time or 0)
    if not sets:
        return None
    chosen = max(sets, key=lambda s: (sets[s], latest[s]))
    others = len(sets) - 1
    head = (f"{len(missing)} of {len(cells)} cells have no run under their run key, but {len(best)} have runs "
            "made with other overrides")
    if not chosen:
        return head + " (none relative to the spec: pass no --set/--set-file to see them)"
    try:
        found = sum(c.run_key in runs for c in expand(loaded, [parse_set(x) for x in shlex.split(chosen)[1:]]))
    except UserError:
        found = 0
    tail = f"; {others} other set(s) of overrides in the store too" if others else ""
    if not found:
        return (f"{head}: {chosen} (read from their params) does not give their run keys back: another version "
                f"of the spec or of the harness made them{tail}")
    total = len(expand(loaded, [parse_set(x) for x in shlex.split(chosen)[1:]]))
    return f"{head}; to see them pass exactly (instead of any --set/--set-file): {chosen}  ({found} of {total} cells have runs){tail}"
