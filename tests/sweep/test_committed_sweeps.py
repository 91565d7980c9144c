"""The committed sweep reports and the README's sentences about them agree: every number the
README states is the one in the report's JSON."""

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load(name):
    return json.loads((ROOT / "reports" / f"sweep_{name}.json").read_text())


def test_the_loss_weight_sweep_is_confirmed_and_the_readme_says_so():
    d = load("sweep_quickstart")
    readme = (ROOT / "README.md").read_text()
    conf = d["confirmation"]
    winner = next(r for r in conf["trials"] if r["label"] == conf["winner"])
    base = next(r for r in conf["trials"] if r["defaults"])
    test = next(t for t in conf["tests"] if t["label"] == conf["winner"])
    assert conf["better"] and test["holds"]
    p = winner["params"]
    text = (f"{conf['winner']} (classification weight {p['model.predictor.loss.cls_weight']:.2f}, box "
            f"{p['model.predictor.loss.box_weight']:.2f}, aux {p['model.aux.weight']:.2f}, POTO's alpha "
            f"{p['model.predictor.assigner.alpha']:.2f})")
    assert text in readme
    numbers = (f"AP50 without NMS {100 * winner['confirm']['mean']:.1f} against {100 * base['confirm']['mean']:.1f} "
               f"({100 * test['delta']:+.1f} points, 95% CI {100 * test['low']:+.1f} to {100 * test['high']:+.1f}, "
               f"Holm p = {test['p_holm']:.3f})")
    assert numbers in readme
    # search and confirmation side by side in the markdown, with the winner's test
    md = (ROOT / "reports" / "sweep_sweep_quickstart.md").read_text()
    assert "## Search" in md and "## Confirmation" in md and "| gap |" in md and "**holds**" in md
    assert len([t for t in d["trials"] if t["state"] in ("COMPLETE", "PRUNED")]) == d["spec"]["n_trials"]


def test_the_recipe_sweep_numbers_in_the_readme_and_docs():
    d = load("sweep_recipe")
    conf = d["confirmation"]
    winner = next(r for r in conf["trials"] if r["label"] == conf["winner"])
    base = next(r for r in conf["trials"] if r["defaults"])
    test = next(t for t in conf["tests"] if t["label"] == conf["winner"])
    assert winner["params"]["model.backbone.tiny_width"] == 12 and winner["params"]["model.fpn.channels"] == 48
    text = (f"{100 * winner['confirm']['mean']:.1f} against {100 * base['confirm']['mean']:.1f}, "
            f"{100 * test['delta']:+.1f} points, 95% CI {100 * test['low']:+.1f} to {100 * test['high']:+.1f}")
    assert text in (ROOT / "README.md").read_text()
    complete = [t for t in d["trials"] if t["state"] == "COMPLETE"]
    adamw = [100 * t["mean"] for t in complete if t["params"]["train.optimizer"] == "adamw"]
    sgd = sorted(100 * t["mean"] for t in complete if t["params"]["train.optimizer"] == "sgd")
    assert min(adamw) > max(sgd)
    docs = (ROOT / "docs" / "deviations.md").read_text()
    assert f"every completed AdamW trial ({min(adamw):.1f}-{max(adamw):.1f})" in docs
    assert f"both completed SGD trials ({sgd[0]:.1f}, {sgd[1]:.1f})" in docs


@pytest.mark.parametrize("name", ["sweep_quickstart", "sweep_recipe"])
def test_the_committed_sweep_used_the_shipped_spec(name):
    import yaml

    d = load(name)
    spec = yaml.safe_load((ROOT / "experiments" / f"{name}.yaml").read_text())
    for key in ("search", "confirm", "space", "objective", "n_trials", "row"):
        got = d["spec"][key]
        want = spec[key]
        if key in ("search", "confirm"):
            got = {k: v for k, v in got.items() if k in want}
            want = {k: list(v) if isinstance(v, list) else v for k, v in want.items()}
        if key == "space":
            got = {k: {a: b for a, b in v.items() if a in want[k]} for k, v in got.items()}
        assert got == want, key
