"""Rewrite run_keys.json, the pinned run keys of the five experiment files.

Run it only when a change is meant to make new keys (a new behaviour, or a SCHEMA_VERSION bump):
    python tests/spec/data/make_run_keys.py
"""

import json
from pathlib import Path

from harness.spec import expand, load_spec

ROOT = Path(__file__).resolve().parents[3]
SPECS = ("coco_ablation", "crowdhuman", "date", "quickstart", "fcos")


def current_keys() -> dict[str, dict[str, str]]:
    return {name: {f"{c.row}/{c.dataset}/{c.seed}": c.run_key
                   for c in expand(load_spec(ROOT / "experiments" / f"{name}.yaml"))}
            for name in SPECS}


if __name__ == "__main__":
    out = Path(__file__).with_name("run_keys.json")
    out.write_text(json.dumps(current_keys(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {out}")
