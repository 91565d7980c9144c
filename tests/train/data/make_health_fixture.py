"""Write tests/train/data/quickstart_loss_histories.json: the loss and detection histories of
healthy quickstart runs, which tests/train/test_health.py replays through the health rules
(train.health) to check that they never flag a healthy run.

    # extract the latest FINISHED run of every quickstart cell found in a store
    python tests/train/data/make_health_fixture.py --workspace runs
    # or first train some cells (one at a time) with per-iteration logging, then extract them
    python tests/train/data/make_health_fixture.py --workspace /tmp/fixture --train POTO/synthetic/0 FCOS/synthetic/0

Format: {"<cell id>": {"iterations": [...], "total_loss": [...], "eval_iterations": [...],
"eval_dets": [...], "eval_ap": [...]}}. `train.total_loss` is a mean over `tracking.log_period` iterations;
`--train` runs with `tracking.log_period=1` (not part of the run key), so its histories are
per iteration. Runs logged every N > 1 iterations give window means (the test feeds each to
the monitor for every iteration of its window); the script says so. eval_dets is the headline
postprocess's number of detections on the whole val set and eval_ap its headline AP (`health.eval_dets`, or
`eval.n_dets` of CrowdHuman-metric runs from before it existed).

A cell's run is looked up by its run key; failing that (a run from before a config change:
the run key hashes the config) the latest FINISHED run with the same row, dataset and seed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
OUT = Path(__file__).resolve().parent / "quickstart_loss_histories.json"


def train(spec: Path, cell_ids: list[str], workspace: Path, uri: str) -> None:
    for cid in cell_ids:
        row, dataset, seed = cid.split("/")
        cmd = [sys.executable, "-m", "harness", "train", str(spec), "--row", row, "--dataset", dataset,
               "--seed", seed, "--workspace", str(workspace), "--tracking-uri", uri,
               "--set", "tracking.log_period=1"]
        print(" ".join(cmd), flush=True)
        code = subprocess.call(cmd, stdout=subprocess.DEVNULL)
        if code:
            sys.exit(f"{cid}: harness train exited with {code}; a healthy run is needed")


def extract(spec: Path, uri: str, wanted: list[str] | None) -> dict:
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    import mlflow
    from mlflow import MlflowClient

    from harness.spec import expand, load_spec

    loaded = load_spec(spec)
    cells = {c.id: c for c in expand(loaded)}
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=[loaded.spec.name], output_format="list")
    runs = sorted((r for r in runs if r.info.status == "FINISHED"), key=lambda r: r.info.start_time)
    client = MlflowClient(uri)
    out = {}
    for cid in wanted or list(cells):
        if cid not in cells:
            sys.exit(f"{cid}: no such cell in {spec}")
        cell = cells[cid]
        same_key = [r for r in runs if r.data.tags.get("harness.run_key") == cell.run_key]
        same_id = [r for r in runs if (r.data.tags.get("harness.row"), r.data.tags.get("harness.dataset"),
                                       r.data.tags.get("harness.seed")) == (cell.row, cell.dataset, str(cell.seed))]
        run = (same_key or same_id or [None])[-1]
        if run is None:
            if wanted:
                sys.exit(f"{cid}: no FINISHED run in {uri}")
            continue
        if not same_key:
            print(f"{cid}: no run with the current run key; using run {run.info.run_id} (an older config)")
        loss = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train.total_loss"))
        dets = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "health.eval_dets"))
        if not dets:
            dets = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "eval.n_dets"))
        if not loss or not dets:
            sys.exit(f"{cid}: run {run.info.run_id} has no train.total_loss or detection count history")
        steps = [s for s, _ in loss]
        if any(b - a != 1 for a, b in zip(steps, steps[1:], strict=False)):
            print(f"{cid}: train.total_loss was logged every {steps[1] - steps[0]} iterations: window means, "
                  "not per-iteration values (train with --train for those)")
        ap_key = "eval.ap" if cell.config.eval.metrics == "coco" else "eval.ap50"
        aps = dict(sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, ap_key)))
        out[cid] = {"iterations": steps, "total_loss": [v for _, v in loss],
                    "eval_iterations": [s for s, _ in dets], "eval_dets": [int(v) for _, v in dets],
                    "eval_ap": [round(aps.get(s, float("nan")), 6) for s, _ in dets]}
        print(f"{cid}: {len(steps)} loss points, evaluations {out[cid]['eval_iterations']} with "
              f"{out[cid]['eval_dets']} detections")
    return out


def dumps(histories: dict) -> str:
    """JSON with one line per list (readable diffs), losses to 6 significant digits."""
    cells = []
    for cid, h in histories.items():
        h = {**h, "total_loss": [float(f"{v:.6g}") for v in h["total_loss"]]}
        lists = ",\n".join(f"    {json.dumps(k)}: {json.dumps(v)}" for k, v in h.items())
        cells.append(f"  {json.dumps(cid)}: {{\n{lists}\n  }}")
    return "{\n" + ",\n".join(cells) + "\n}\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--spec", type=Path, default=ROOT / "experiments" / "quickstart.yaml")
    p.add_argument("--workspace", type=Path, default=Path("runs"))
    p.add_argument("--tracking-uri", default=None, help="default: sqlite:///<workspace>/mlflow.db")
    p.add_argument("--cells", nargs="+", default=None, metavar="ID", help="cell ids (row/dataset/seed); default: all")
    p.add_argument("--train", nargs="+", default=None, metavar="ID",
                   help="train these cells first (one at a time, tracking.log_period=1)")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()
    uri = args.tracking_uri or f"sqlite:///{args.workspace.resolve() / 'mlflow.db'}"
    if args.train:
        train(args.spec, args.train, args.workspace, uri)
    histories = extract(args.spec, uri, args.cells or args.train)
    if not histories:
        sys.exit(f"no FINISHED quickstart run in {uri}")
    args.out.write_text(dumps(histories))
    print(f"wrote {args.out} ({len(histories)} cells)")


if __name__ == "__main__":
    main()
