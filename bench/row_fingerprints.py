"""Fingerprints of every experiment row: losses, gradients and detections, as SHA-256 of their bytes.

A refactoring of the model or the training code must leave every row bit-identical. Run this
before and after on the same machine and compare:

    OMP_WAIT_POLICY=PASSIVE python bench/row_fingerprints.py --out before.json
    ... change the code ...
    OMP_WAIT_POLICY=PASSIVE python bench/row_fingerprints.py --compare before.json

Each row of every experiment file (tiny backbone, as tests/model/test_rows.py) is built from seed
0, takes one forward/backward pass on fixed images and targets, and detects on the same images.
The fingerprints depend on the CPU's kernels: compare runs of one machine only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.model.build import build_from_config  # noqa: E402
from harness.spec import expand, load_spec, parse_set  # noqa: E402

TINY = ["model.backbone.name=tiny", "model.backbone.weights=null", "model.backbone.norm=gn",
        "model.backbone.pretrain=null", "model.fpn.channels=32", "model.head.gn_groups=8",
        "model.head.num_convs=2", "eval.score_thresh=0.0"]
SPECS = ("quickstart", "coco_ablation", "crowdhuman", "date")


def _digest(tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().contiguous().cpu()
        h.update(str((tuple(t.shape), str(t.dtype))).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def _sets(spec: str) -> list[str]:
    cfg = next(iter(expand(load_spec(ROOT / "experiments" / f"{spec}.yaml")))).config
    return [s for s in TINY if not (s.startswith("model.backbone.pretrain") and cfg.model.backbone.pretrain is None)]


def row_cells(specs=SPECS):
    for spec in specs:
        seen = set()
        for cell in expand(load_spec(ROOT / "experiments" / f"{spec}.yaml"), [parse_set(s) for s in _sets(spec)]):
            if cell.row not in seen:
                seen.add(cell.row)
                yield f"{spec}:{cell.row}", cell


def fingerprint(cell) -> dict[str, str]:
    torch.manual_seed(0)
    model = build_from_config(cell.config)
    k = cell.config.model.num_classes
    g = torch.Generator().manual_seed(1)
    images = torch.rand(2, 3, 128, 160, generator=g)
    targets = [{"boxes": torch.tensor([[10.0, 20, 60, 90], [30, 30, 100, 110], [32, 28, 98, 112]]),
                "labels": torch.tensor([0, k - 1, 0])},
               {"boxes": torch.tensor([[40.0, 10, 70, 100]]), "labels": torch.tensor([0])}]
    sizes = [(128, 160), (120, 150)]
    losses = model(images, sizes, targets)
    sum(losses.values()).backward()
    out = {f"loss.{name}": _digest([v]) for name, v in sorted(losses.items())}
    out["grads"] = _digest([p.grad for p in model.parameters() if p.grad is not None])
    model.eval()
    with torch.no_grad():
        dets = model.detect(images, sizes)
    for key in sorted(dets[0]):
        out[f"detect.{key}"] = _digest([t for d in dets for t in d[key]])
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="write the fingerprints here (JSON)")
    ap.add_argument("--compare", type=Path, help="compare with fingerprints written earlier; exit 1 on a difference")
    ap.add_argument("--specs", nargs="*", default=list(SPECS))
    args = ap.parse_args(argv)
    prints = {name: fingerprint(cell) for name, cell in row_cells(args.specs)}
    print(f"{len(prints)} rows fingerprinted")
    if args.out:
        args.out.write_text(json.dumps(prints, indent=1, sort_keys=True) + "\n")
    if args.compare:
        before = json.loads(args.compare.read_text())
        differ = sorted(name for name in set(before) | set(prints) if before.get(name) != prints.get(name))
        for name in differ:
            print(f"DIFFERENT {name}: {before.get(name)} -> {prints.get(name)}")
        print(f"{len(prints) - len(differ)} of {len(prints)} rows bit-identical")
        return 1 if differ else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
