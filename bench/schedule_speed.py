"""Scheduler speed (a benchmark, not a test): prints numbers measured here.

1. Planning plus dedup of a 1,000-cell spec against an MLflow SQLite store holding 10,000 runs
   (the bench builds the store once in --store-dir; target < 5 s).
2. Scheduler overhead per cell: from the scheduler's decision to the cell's first training
   iteration, model build excluded (target < 10 s; importing torch and mlflow alone ~7 s).

    python bench/schedule_speed.py [--runs 10000] [--cells 1000] [--store-dir /tmp/harness-bench]
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")

SPEC = """\
name: bench
base:
  model: {{num_classes: 10, backbone: {{name: tiny, weights: null, norm: gn, tiny_width: 8,
          input_format: torchvision_rgb, freeze_at: 0}}, fpn: {{channels: 32}}, head: {{num_convs: 1, gn_groups: 8}},
          predictor: {{assigner: {{name: poto}}}}}}
  data: {{name: synthetic, synthetic: {{num_train: 8, num_val: 4, min_size: 96, max_size: 96}},
         train_min_size: [96], train_max_size: 96, test_min_size: 96, test_max_size: 96, num_workers: 0}}
  train: {{max_iter: 3, base_lr: 0.01, ims_per_batch: 2, reference_batch: 2, warmup_iters: 1}}
  eval: {{nms: false}}
  tracking: {{log_period: 1}}
  resources: {{gpus: 0}}
axes:
  lr: {{{lrs}}}
seeds: [{seeds}]
"""


def make_spec(folder: Path, cells: int) -> Path:
    n_lr = max(1, cells // 10)
    lrs = ", ".join(f"v{i}: {{train.base_lr: {0.001 * (i + 1):.4f}}}" for i in range(n_lr))
    path = folder / "bench.yaml"
    path.write_text(SPEC.format(lrs=lrs, seeds=", ".join(str(s) for s in range(10))))
    return path


def build_store(uri: str, cells, n_runs: int) -> None:
    from mlflow import MlflowClient
    from mlflow.entities import RunTag

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("bench")
    have = len(client.search_runs([exp.experiment_id], max_results=50000)) if exp else 0
    if have >= n_runs:
        return
    exp_id = exp.experiment_id if exp else client.create_experiment("bench")
    for i in range(have, n_runs):
        cell = cells[i % len(cells)]
        run = client.create_run(exp_id, tags={"harness.run_key": cell.run_key if i < len(cells) else f"old{i}",
                                              "harness.row": cell.row}, run_name=cell.id)
        client.log_batch(run.info.run_id, tags=[RunTag("harness.attempt", "1")])
        client.set_terminated(run.info.run_id, "FINISHED")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10000)
    ap.add_argument("--cells", type=int, default=1000)
    ap.add_argument("--store-dir", default=str(Path(tempfile.gettempdir()) / "harness-bench"))
    args = ap.parse_args()
    folder = Path(args.store_dir)
    folder.mkdir(parents=True, exist_ok=True)
    spec = make_spec(folder, args.cells)
    uri = f"sqlite:///{folder / 'mlflow.db'}"

    from harness.schedule.state import decide, latest_runs
    from harness.spec import expand, load_spec
    from harness.train.result import CellState
    cells = expand(load_spec(spec))
    t = time.time()
    build_store(uri, cells, args.runs)
    built = time.time() - t

    t = time.perf_counter()
    cells = expand(load_spec(spec))
    t_plan = time.perf_counter() - t
    t = time.perf_counter()
    decisions = decide(cells, latest_runs(uri, "bench"), folder / "ws")
    t_dedup = time.perf_counter() - t
    skipped = sum(d.state is CellState.DONE_EARLIER for d in decisions)
    print(f"plan {len(cells)} cells: {t_plan:.2f} s; dedup against {args.runs} runs: {t_dedup:.2f} s; "
          f"total {t_plan + t_dedup:.2f} s (target < 5 s; {skipped} finished; store built in {built:.0f} s)")

    # overhead per cell: launch one fresh cell through the local pool and read its log
    ws = folder / "ws-overhead"
    from harness.data.build import load_datasets
    from harness.schedule.job import TrainJob
    from harness.schedule.local import LocalBackend
    from harness.schedule.pool import Pool
    from harness.schedule.state import prepare_store

    cell = cells[0]
    ws.mkdir(exist_ok=True)
    uri = f"sqlite:///{ws / 'mlflow.db'}"
    prepare_store(uri, "bench", ws)  # as `harness run` does before any job
    load_datasets(cell.config.data, ws / "cache")  # the dataset exists (generated once per workspace)
    pool = Pool(LocalBackend(1))
    pool.add(cell, TrainJob.for_cell(cell, spec_file=str(spec), workspace=str(ws), tracking_uri=uri, fresh=True))
    t_decide = time.time()
    pool.run()
    log = (ws / cell.run_key / "log.txt").read_text()
    m = re.search(r"first iteration at (\d\d):(\d\d):(\d\d)", log)  # the local clock, to the second
    build = re.search(r"model built in ([0-9.]+) s", log)
    if m:
        decided = time.localtime(t_decide)
        since = (int(m.group(1)) * 3600 + int(m.group(2)) * 60 + int(m.group(3))
                 - (decided.tm_hour * 3600 + decided.tm_min * 60 + decided.tm_sec + t_decide % 1)) % 86400
        overhead = since - (float(build.group(1)) if build else 0.0)
        print(f"scheduler overhead per cell (decision -> first iteration, model build excluded): {overhead:.1f} s "
              f"(target < 10 s)")
    else:
        print("could not find the first-iteration stamp in the log:\n" + log[-2000:])


if __name__ == "__main__":
    main()
