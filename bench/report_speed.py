"""Report speed (a benchmark, not a test): `harness report` over 1,000 finished runs whose
training loss has 1,500 points each (logged every 20 iterations over 30k), beside the time to
list the same runs.

The table needs only the run listing; histories are read for the plots only, down-sampled in the
store's query, and cached on disk by run id (a finished run never changes). Printed: the store
build time, the listing, the stdout-only report (no plots, no histories), the report with plots
on a cold history cache and again on a warm one. Target: the cold report <= 10 s on 2 cores.

    python bench/report_speed.py [--runs 1000] [--points 1500] [--store-dir /tmp/harness-report-bench]

The store is built once in --store-dir (runs logged through the harness's own tracker: params,
tags, metrics in batches of 1,000) and reused by later calls.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")

ROWS = ("FCOS", "POTO", "POTO+3DMF", "POTO+3DMF+Aux", "DATE-F")


def make_spec(folder: Path, runs: int) -> Path:
    """The quickstart spec with as many seeds as it takes to reach `runs` cells (5 rows)."""
    root = Path(__file__).resolve().parents[1]
    text = (root / "experiments" / "quickstart.yaml").read_text()
    seeds = math.ceil(runs / len(ROWS))
    text = text.replace("seeds: [0, 1, 2]", f"seeds: [{', '.join(str(s) for s in range(seeds))}]")
    text = text.replace("name: quickstart", "name: report_bench")
    path = folder / "report_bench.yaml"
    path.write_text(text)
    return path


def build_store(uri: str, workspace: Path, cells, points: int) -> None:
    from harness.spec.matrix import hashed_config
    from harness.track.mlflow_tracker import MLflowTracker, flatten

    base = {"FCOS": 0.83, "POTO": 0.84, "POTO+3DMF": 0.835, "POTO+3DMF+Aux": 0.83, "DATE-F": 0.842}
    for i, c in enumerate(cells):
        tags = {"harness.run_key": c.run_key, "harness.row": c.row, "harness.dataset": c.dataset,
                "harness.seed": c.seed, "harness.git_commit": "bench", "harness.attempt": 1}
        tracker = MLflowTracker.start(uri, "report_bench", c.id, tags, workspace=workspace)
        tracker.log_params(flatten(hashed_config(c.config)))
        every = 20
        for k in range(points):
            step = (k + 1) * every
            tracker.log_metrics({"train.total_loss": 2.0 * math.exp(-step / 8000) + 0.01 * ((k * 7 + i) % 11)}, step)
            if step % 5000 == 0 or k == points - 1:
                noise = 0.004 * (((i * 13 + k) % 7) - 3)
                m = base[c.row] + noise
                tracker.log_metrics({"eval.nms.ap50": m, "eval.nms_free.ap50": m - (0.25 if c.row == "FCOS" else 0),
                                     "eval.nms.mmr": 0.45 - noise, "eval.nms_free.mmr": 0.55 - noise,
                                     "eval.nms.recall": 0.93 + noise, "eval.nms_free.recall": 0.98 + noise / 4,
                                     "eval.ap50": m}, step)
        tracker.end("FINISHED")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--points", type=int, default=1500)
    ap.add_argument("--store-dir", default=os.path.join(tempfile.gettempdir(), "harness-report-bench"))
    args = ap.parse_args()

    from harness.spec import expand, load_spec
    from harness.track.runs import list_runs

    folder = Path(args.store_dir) / f"r{args.runs}_p{args.points}"
    folder.mkdir(parents=True, exist_ok=True)
    spec = make_spec(folder, args.runs)
    loaded = load_spec(spec)
    cells = expand(loaded)[: args.runs]
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    if not (folder / "done").exists():
        from harness.track.mlflow_tracker import client_for, ensure_experiment

        if (folder / "mlflow.db").exists():
            (folder / "mlflow.db").unlink()
        ensure_experiment(client_for(uri), "report_bench", uri, folder)
        t = time.perf_counter()
        build_store(uri, folder, cells, args.points)
        (folder / "done").write_text("ok\n")
        print(f"store: {len(cells)} runs x {args.points} loss points built in {time.perf_counter() - t:.1f} s "
              f"(once; reused from {folder})")

    from harness.report.build import report
    from harness.track.runs import _mlflow_runs

    t = time.perf_counter()
    n = len(_mlflow_runs(uri, "report_bench"))
    t_list = time.perf_counter() - t
    print(f"listing through MLflow's search_runs: {n} runs in {t_list:.2f} s (the reference)")
    t = time.perf_counter()
    listing = list_runs(uri, "report_bench")
    print(f"listing as the report reads it (read-only SQLite, harness tags and final metrics): "
          f"{len(listing.runs)} runs in {time.perf_counter() - t:.2f} s")

    out = folder / "reports" / "report_bench.md"
    cache = folder / "history-cache"
    shutil.rmtree(cache, ignore_errors=True)
    os.environ["HARNESS_CACHE"] = str(cache)
    timings = {}
    for name, kwargs in (("report, stdout only (no plots)", {"out": None}),
                         ("report with plots, cold history cache", {"out": str(out)}),
                         ("report with plots, warm history cache", {"out": str(out)})):
        t = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            code = report(loaded, cells, uri=uri, out=kwargs["out"], readme=None, check=False)
        timings[name] = time.perf_counter() - t
        assert code == 0, f"{name}: exit {code}"
        if "cold" in name:
            cached = len(list(cache.glob("*.json")))
            print(f"history cache: {cached} runs, {sum(f.stat().st_size for f in cache.glob('*.json')) / 1e6:.1f} MB")
    shutil.rmtree(cache, ignore_errors=True)
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "harness", "report", str(spec), "--tracking-uri", uri,
                           "--out", str(out)], capture_output=True, text=True, env=dict(os.environ))
    timings["`harness report --out` as a new process (imports included), cold cache"] = time.perf_counter() - t
    assert proc.returncode == 0, proc.stderr
    for name, secs in timings.items():
        print(f"{name}: {secs:.2f} s ({secs / t_list:.2f}x the listing)")
    worst = max(timings.values())
    print(f"slowest report {worst:.2f} s: {'within' if worst <= 10 else 'OVER'} the 10 s target")


if __name__ == "__main__":
    main()
