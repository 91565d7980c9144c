"""The quickstart's claims: one-sided paired / Welch tests against scipy, Holm, honest verdicts."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from harness.report.build import phenomena
from harness.report.stats import compare

A, B = [0.50, 0.60, 0.55], [0.40, 0.45, 0.52]


def test_paired_matches_scipy():
    c = compare(A, B, paired=True)
    r = stats.ttest_rel(A, B, alternative="greater")
    assert c.p == pytest.approx(r.pvalue, rel=1e-12)
    lo, hi = stats.ttest_rel(A, B).confidence_interval()
    assert (c.ci_low, c.ci_high) == pytest.approx((lo, hi), rel=1e-12)
    assert compare(A, B, paired=True, sign=-1).p == pytest.approx(stats.ttest_rel(A, B, alternative="less").pvalue)


def test_welch_matches_scipy_with_a_margin():
    c = compare(A, B, paired=False, margin=0.03)
    r = stats.ttest_ind(np.array(A) + 0.03, B, equal_var=False, alternative="greater")
    assert c.p == pytest.approx(r.pvalue, rel=1e-12)
    lo, hi = stats.ttest_ind(A, B, equal_var=False).confidence_interval()
    assert (c.ci_low, c.ci_high) == pytest.approx((lo, hi), rel=1e-12)
    assert c.delta == pytest.approx(np.mean(A) - np.mean(B))


def test_too_few_values_are_not_tested():
    c = compare([0.5], [0.4, 0.3], paired=False)
    assert c.delta == pytest.approx(0.15) and math.isnan(c.p) and math.isnan(c.ci_low)
    assert compare([], [], paired=True).n_a == 0


def frame(values: dict[tuple[str, str], list[float]]) -> pd.DataFrame:
    recs = {}
    for (row, key), vals in values.items():
        for seed, v in enumerate(vals):
            recs.setdefault((row, seed), {"row": row, "seed": seed, "status": "finished"})[key] = v
    return pd.DataFrame(list(recs.values()))


def test_verdicts():
    df = frame({
        ("FCOS", "eval.nms.ap50"): [0.76, 0.77, 0.75], ("FCOS", "eval.nms_free.ap50"): [0.52, 0.55, 0.53],
        ("FCOS", "eval.nms.recall"): [0.90, 0.91, 0.89],
        ("POTO", "eval.nms_free.ap50"): [0.70, 0.80, 0.75], ("POTO", "eval.nms_free.recall"): [0.97, 0.97, 0.98],
    })
    lines = phenomena(df, ["FCOS", "POTO"])
    text = dict(line.split(": ", 1) for line in lines)
    assert text["- FCOS without NMS is below FCOS with NMS (AP50; the same runs, paired by seed)"].startswith("**observed**")
    assert "paired t" in lines[0] and "Holm" in lines[0]
    # POTO 75.0 vs FCOS+NMS 76.0: inside the 3-point margin, but too noisy to be significant
    assert "**same direction, not significant**" in lines[1] and "Δ -1.0" in lines[1]
    assert "**observed**" in lines[2]
    assert not any("p = 0.000" in line for line in lines)
    assert len(lines) == 4  # the 3DMF and Aux claims need their rows


def test_claim_against_the_data_and_small_n():
    df = frame({("POTO", "eval.nms_free.ap50"): [0.70, 0.71, 0.69], ("POTO+3DMF", "eval.nms_free.ap50"): [0.60, 0.61],
                ("FCOS", "eval.nms.ap50"): [0.9, 0.9, 0.91], ("FCOS", "eval.nms_free.ap50"): [0.5, 0.5, 0.52]})
    lines = phenomena(df, ["FCOS", "POTO", "POTO+3DMF"])
    three_dmf = next(line for line in lines if "POTO + 3DMF without NMS" in line)
    assert "**untested** (n = 2/3" in three_dmf and "Δ -9.5" in three_dmf
    within = next(line for line in lines if "within 3" in line)
    assert "**not observed**" in within


def test_reproduction_table_against_intervals():
    from harness.report.build import redact
    from harness.report.tables import reproduction_table
    from harness.spec import load_spec

    spec = load_spec("experiments/quickstart.yaml").spec
    ref = frame({("FCOS", "eval.nms.ap50"): [0.76, 0.77, 0.75], ("POTO", "eval.nms.ap50"): [0.70, 0.71, 0.72]})
    other = frame({("FCOS", "eval.nms.ap50"): [0.76, 0.765], ("POTO", "eval.nms.ap50"): [0.80, 0.81, 0.79]})
    md, inside, compared = reproduction_table("quickstart", spec, ref, other)
    assert (inside, compared) == (1, 2)
    assert "76.2 in [73.5, 78.5] ✓ (n=2)" in md and "80.0 in [68.5, 73.5] ✗" in md
    assert redact("http://alice:s3cret@host:5000/x") == "http://host:5000/x"
    assert redact("sqlite:////tmp/fresh1/mlflow.db") == "sqlite: fresh1/mlflow.db"


def test_convergence_check():
    from harness.report.build import convergence_check

    recs = []
    for seed, (a, b) in enumerate([(1.0, 0.5), (1.0, 1.2)]):
        recs += [{"row": "POTO", "seed": seed, "key": "train.total_loss", "step": s, "value": v}
                 for s, v in ((20, 2.0), (300, a), (600, b))]
        recs += [{"row": "POTO", "seed": seed, "key": "eval.nms_free.ap50", "step": s, "value": 0.5} for s in (300, 600)]
    text = convergence_check(pd.DataFrame(recs), ["POTO"], "eval.nms_free.ap50")
    assert text == "Convergence: 1 of 2 finished cells end with a lower training loss than at their first evaluation: not POTO seed 1 (1 -> 1.2)."


def test_identical_cells():
    from harness.report.build import identical_cells

    a = pd.DataFrame([{"run_key": "k1", "status": "finished", "eval.ap50": 0.5},
                      {"run_key": "k2", "status": "finished", "eval.ap50": 0.6},
                      {"run_key": "k3", "status": "failed", "eval.ap50": float("nan")}])
    b = pd.DataFrame([{"run_key": "k1", "status": "finished", "eval.ap50": 0.5},
                      {"run_key": "k2", "status": "finished", "eval.ap50": 0.6000001},
                      {"run_key": "k3", "status": "finished", "eval.ap50": 0.1}])
    assert identical_cells(a, b) == (1, 2)
