"""The sweep's confirmation statistics, simulated through the code the report uses
(`harness.sweep.confirm.analyse`), and the spec rules of the two splits and the racing pruner."""

import numpy as np
import pytest

from harness.sweep.confirm import Confirmed, analyse
from harness.sweep.space import min_racing_p

KEY = "eval.nms_free.ap50"


def simulate(rng, n_trials=8, k=2, search=2, confirm=3, effect=0.0, sd=0.02, seed_sd=0.02):
    """One sweep on simulated values: trial 0 the defaults, every trial's true value the same
    except trial 1's (+effect); a seed moves every trial alike (paired), plus noise per run."""
    true = np.full(n_trials, 0.80)
    true[1] += effect
    s_seed, c_seed = rng.normal(0, seed_sd, search), rng.normal(0, seed_sd, confirm)
    s_vals = true[:, None] + s_seed + rng.normal(0, sd, (n_trials, search))
    top = sorted(range(n_trials), key=lambda i: (-s_vals[i].mean(), i))[:k]
    chosen = top + ([0] if 0 not in top else [])
    out = []
    for i in chosen:
        c_vals = true[i] + c_seed + rng.normal(0, sd, confirm)
        out.append(Confirmed(i, {"w": float(i)}, i == 0, dict(enumerate(s_vals[i].tolist())),
                             {100 + j: float(v) for j, v in enumerate(c_vals)}))
    return analyse(out, KEY, maximize=True), top


def test_no_effect_selection_gap_is_positive_and_the_defaults_are_rarely_beaten():
    rng = np.random.default_rng(0)
    gaps, better = [], 0
    sims = 300
    for _ in range(sims):
        result, top = simulate(rng)
        rows = {r["trial"]: r for r in result["trials"]}
        if top[0] != 0:  # the search's winner: its gain over the defaults on search, minus on confirmation
            gaps.append(rows[top[0]]["gain_gap"])
        better += result["better"]
    # the winner's curse: what the search showed is more than what the fresh seeds and images show
    assert np.mean(gaps) > 0 and np.mean(gaps) > 3 * np.std(gaps) / np.sqrt(len(gaps))
    # "better than the defaults" under no effect: the Holm family's error, at most α (+ 3 s.e.)
    assert better / sims <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / sims)


def test_a_real_effect_is_confirmed():
    rng = np.random.default_rng(1)
    # +10 points against a paired per-seed spread of 2.8 (3.5 σ): at 3 seeds and α/2, power about 0.9
    wins = sum(simulate(rng, effect=0.10)[0]["better"] for _ in range(100))
    assert wins >= 80


def test_outcome_and_recommendation():
    base = Confirmed(0, {"w": 1.0}, True, {0: 0.5, 1: 0.52}, {5: 0.50, 6: 0.51, 7: 0.49})
    good = Confirmed(4, {"w": 2.0}, False, {0: 0.6, 1: 0.62}, {5: 0.60, 6: 0.62, 7: 0.61})
    r = analyse([good, base], KEY, maximize=True)
    assert r["better"] and r["winner"] == "trial 4" and r["recommended"]["params"] == {"w": 2.0}
    assert r["tests"][0]["holds"] and "holds" in r["tests"][0]["line"]
    lucky = Confirmed(4, {"w": 2.0}, False, {0: 0.6, 1: 0.62}, {5: 0.49, 6: 0.50, 7: 0.48})
    r = analyse([lucky, base], KEY, maximize=True)
    assert not r["better"] and r["winner"] == "defaults" and r["recommended"]["label"] == "defaults"
    assert r["outcome"].startswith("no better than the defaults")
    assert r["trials"][0]["gain_search"] > 0 > r["trials"][0]["gain_confirm"]


@pytest.mark.parametrize("k", [2, 3, 4, 6])
def test_the_racing_tests_smallest_p_is_two_to_the_minus_k(k):
    assert min_racing_p(k) == pytest.approx(2.0 ** -k)


SWEEP = """\
name: s
experiment: spec.yaml
row: A
{splits}
space:
  train.base_lr: {{type: float, low: 0.009, high: 0.011}}
objective: {{metric: eval.nms_free.mmr, direction: minimize}}
n_trials: 3
overrides: {{data.synthetic.format: odgt, model.num_classes: 1, eval.metrics: crowdhuman,
            data.synthetic.num_val: 12}}
"""


@pytest.mark.parametrize("splits, key, message", [
    ("search: {seeds: [1, 2], val_images: [4, 8]}\nconfirm: {seeds: [2, 3], val_images: [8, 12]}",
     "", "share seeds [2] with the search split"),
    ("search: {seeds: [1, 2], val_images: [4, 9]}\nconfirm: {seeds: [3, 4], val_images: [8, 12]}",
     "", "overlap the search split's [4, 9)"),
    ("seeds: [1]\nconfirm: {seeds: [3, 4], val_images: [8, 12]}", "", "overlap the search split's (the whole"),
    ("search: {seeds: [1], val_images: [4, 8]}\nconfirm: {seeds: [0, 4], val_images: [8, 12]}",
     "confirm.seeds", "share seeds [0] with the table of spec.yaml"),
    ("search: {seeds: [1], val_images: [4, 8]}\nconfirm: {seeds: [3, 4], val_images: [2, 4]}",
     "confirm.val_images", "overlap the images [0, 4) that the table of spec.yaml is scored on"),
    ("search: {seeds: [1, 2, 3], val_images: [4, 8]}\npruner: {type: racing, p_threshold: 0.1}",
     "pruner.type", "the racing pruner can never prune with 3 search seeds"),
    ("seeds: [1]\nsecondary: {metric: eval.nms_free.ap50, direction: maximize}", "",
     "a sweep with a secondary objective cannot prune"),
    ("seeds: [1]\nsecondary: {metric: eval.nms_free.ap75, direction: maximize}\npruner: {type: none}",
     "secondary.metric", "does not produce 'eval.nms_free.ap75'"),
])
def test_split_and_pruner_rules_exit_2_with_one_line(run_cli, tmp_path, splits, key, message):
    from tests.schedule.test_local_faults import write_spec

    write_spec(tmp_path, rows=("A:poto",))
    path = tmp_path / "sweep.yaml"
    path.write_text(SWEEP.format(splits=splits))
    code, _, err = run_cli("sweep", path, "--check", "--workspace", tmp_path / "ws")
    assert code == 2 and message in err, err
    assert key in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "ws").exists()


def test_racing_with_enough_seeds_validates(run_cli, tmp_path):
    from tests.schedule.test_local_faults import write_spec

    write_spec(tmp_path, rows=("A:poto",))
    path = tmp_path / "sweep.yaml"
    path.write_text(SWEEP.format(splits="search: {seeds: [1, 2, 3, 4, 5], val_images: [4, 8]}\n"
                                        "confirm: {seeds: [6, 7, 8], val_images: [8, 12]}\n"
                                        "pruner: {type: racing, p_threshold: 0.1}"))
    code, out, err = run_cli("sweep", path, "--check", "--workspace", tmp_path / "ws")
    assert code == 0 and ": ok" in out, err
