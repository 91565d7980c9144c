"""Run keys: pinned for the five experiment files, and stable under schema growth."""

import json
from pathlib import Path

from harness.spec import expand, load_spec
from harness.spec.matrix import digest, hashed_config, run_key
from harness.spec.schema import KEYLESS_DEFAULTS
from tests.spec.data.make_run_keys import ROOT, current_keys

PINNED = Path(__file__).with_name("data") / "run_keys.json"


def test_the_experiment_files_keep_their_run_keys():
    # a refactor must not change a key: finished runs would stop counting. A change meant to
    # make new keys rewrites the file with tests/spec/data/make_run_keys.py
    pinned = json.loads(PINNED.read_text())
    now = current_keys()
    assert set(now) == set(pinned)
    for spec, keys in pinned.items():
        changed = sorted(c for c in keys if now[spec].get(c) != keys[c])
        assert not changed and set(now[spec]) == set(keys), f"{spec}: run keys changed for {changed[:5]}"


def cell(spec: str, row: str):
    return next(c for c in expand(load_spec(ROOT / "experiments" / f"{spec}.yaml")) if c.row == row)


def test_a_new_field_at_its_old_behaviour_keeps_the_keys_of_finished_runs():
    # pretend `box_roundtrip` (and `ctr_norm_min` under any predictor) were added after runs
    # existed: registered with their old-behaviour value, a config at that value hashes exactly
    # as the config before the field existed; another value makes a new key
    grown = {**KEYLESS_DEFAULTS, "model.predictor.assigner.box_roundtrip": False, "model.*.loss.ctr_norm_min": 1.0}
    poto = cell("coco_ablation", "POTO").config
    before = hashed_config(poto)
    del before["model"]["predictor"]["assigner"]["box_roundtrip"]
    del before["model"]["predictor"]["loss"]["ctr_norm_min"]
    assert run_key(poto, grown) == digest(before) != run_key(poto)
    date = cell("date", "DATE-R50-F-12e").config  # box_roundtrip true, o2m ctr_norm_min 1e-6
    kept = hashed_config(date, grown)
    assert kept["model"]["predictor"]["assigner"]["box_roundtrip"] is True
    assert kept["model"]["o2m"]["loss"]["ctr_norm_min"] == 1e-6
    assert "ctr_norm_min" not in kept["model"]["predictor"]["loss"]  # the wildcard reached it
    # a section that is absent (no o2m) is no error
    assert "o2m" not in hashed_config(poto, grown)["model"] or hashed_config(poto, grown)["model"]["o2m"] is None


def test_channels_last_is_keyless_at_false_and_a_new_key_when_true():
    # train.channels_last came after runs were finished: off, a config hashes as before the field
    # existed; on, the arithmetic order changes the last bits, so the run is a new one
    poto = cell("coco_ablation", "POTO").config
    assert poto.train.channels_last is False
    assert "channels_last" not in hashed_config(poto)["train"]
    on = poto.model_copy(update={"train": poto.train.model_copy(update={"channels_last": True})})
    assert hashed_config(on)["train"]["channels_last"] is True
    assert run_key(on) != run_key(poto)
