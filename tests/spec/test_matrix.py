"""Cells and run keys of the experiment files."""

import json

import pytest

from harness.spec import expand, load_spec, parse_set, run_key
from harness.spec.matrix import hashed_config
from tests.conftest import EXPERIMENTS


@pytest.mark.parametrize("name, n_cells, n_rows", [
    ("coco_ablation", 39, 13), ("crowdhuman", 21, 7), ("date", 18, 6), ("quickstart", 15, 5), ("fcos", 15, 5),
])
def test_experiment_files(name, n_cells, n_rows):
    cells = expand(load_spec(EXPERIMENTS / f"{name}.yaml"))
    assert len(cells) == n_cells
    assert len({c.run_key for c in cells}) == n_cells
    assert len({c.row for c in cells}) == n_rows
    assert len({c.id for c in cells}) == n_cells


def test_keys_are_stable_and_depend_on_the_config():
    spec = load_spec(EXPERIMENTS / "coco_ablation.yaml")
    first = [c.run_key for c in expand(spec)]
    again = [c.run_key for c in expand(load_spec(EXPERIMENTS / "coco_ablation.yaml"))]
    assert first == again
    changed = [c.run_key for c in expand(spec, [parse_set("train.base_lr=0.02")])]
    assert all(a != b for a, b in zip(first, changed, strict=True))


def test_volatile_sections_are_not_hashed():
    spec = load_spec(EXPERIMENTS / "quickstart.yaml")
    base = expand(spec)
    other = expand(spec, [parse_set("resources.gpus=4"), parse_set("tracking.log_period=1")])
    assert [c.run_key for c in base] == [c.run_key for c in other]
    assert other[0].config.resources.gpus == 4
    assert "resources" not in hashed_config(base[0].config)


def test_run_key_is_sha256_of_canonical_json():
    import hashlib

    cell = expand(load_spec(EXPERIMENTS / "quickstart.yaml"))[0]
    payload = {"schema_version": 1, "config": hashed_config(cell.config)}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    assert run_key(cell.config) == hashlib.sha256(text.encode()).hexdigest() == cell.run_key


def test_rows_follow_the_published_rules():
    cells = {c.row: c.config for c in expand(load_spec(EXPERIMENTS / "coco_ablation.yaml"))}
    assert cells["FCOS"].model.predictor.centerness == "reg"
    assert cells["FCOS"].eval.nms and not cells["POTO"].eval.nms
    assert cells["POTO"].model.predictor.assigner.alpha == 0.8
    assert cells["POTO"].model.predictor.loss.box_weight == 2.0
    assert cells["POTO-argmax"].model.predictor.assigner.name == "poto_argmax"
    assert cells["POTO+3DMF-woGN"].model.predictor.filter == "3dmf_wo_gn"
    assert cells["POTO+3DMF+Aux"].model.aux is not None
    assert cells["POTO-9x"].train.max_iter == 810000
    assert cells["Anchor"].model.predictor.box_coder == "anchor_delta"
    ch = {c.row: c.config for c in expand(load_spec(EXPERIMENTS / "crowdhuman.yaml"))}
    assert ch["POTO"].model.predictor.assigner.prior == "box"
    assert ch["POTO"].eval.max_dets == 500 and ch["POTO"].eval.metrics == "crowdhuman"
    assert ch["DATE-R50-F"].model.predictor.assigner.name == "detr_hungarian"
    assert ch["DATE-R50-R"].model.o2m.assigner.name == "max_iou"
    assert ch["DATE-R50-R"].train.optimizer == "adamw"
    date = {c.row: c.config for c in expand(load_spec(EXPERIMENTS / "date.yaml"))}
    assert date["DATE-R50-F-12e"].model.predictor.assigner.outside_value == 0.0
    assert date["DATE-R101-F-36e"].model.backbone.name == "resnet101"
    assert date["DATE-R50-F-36e"].data.augment == "detr"


def test_every_experiment_spec_plans():
    # every spec shipped in experiments/ (sweeps aside: tests/sweep/test_sweep_specs.py) expands
    specs = [p for p in sorted(EXPERIMENTS.glob("*.yaml")) if not p.name.startswith("sweep")]
    assert len(specs) >= 5
    for path in specs:
        assert expand(load_spec(path)), path


def test_the_decision_spec_reads_the_quickstarts_cells():
    # experiments/quickstart_decide.yaml decides claims on the quickstart's own runs: the same
    # experiment, the same run keys for its rows and seeds; the added seeds are new numbers
    from harness.report.decide import cells_to_decide

    quick = {(c.row, c.seed): c.run_key for c in expand(load_spec(EXPERIMENTS / "quickstart.yaml"))}
    loaded = load_spec(EXPERIMENTS / "quickstart_decide.yaml")
    assert loaded.spec.name == "quickstart"
    cells = cells_to_decide(loaded)
    assert {c.seed for c in cells} == set(range(8))
    shared = [c for c in cells if c.seed < 3]
    assert len(shared) == 9 and all(quick[(c.row, c.seed)] == c.run_key for c in shared)
