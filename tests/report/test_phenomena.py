"""Declared claims: one-sided paired / Welch tests against scipy, Holm over the claims, honest verdicts."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from harness.report.claims import evaluate, line
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
            recs.setdefault((row, seed), {"row": row, "dataset": "synthetic", "seed": seed,
                                          "status": "finished"})[key] = v
    return pd.DataFrame(list(recs.values()))


def quickstart_claims():
    from harness.spec import load_spec

    return load_spec("experiments/quickstart.yaml").spec.tables["quickstart"].claims


def test_the_quickstart_declares_its_claims():
    claims = quickstart_claims()
    first = claims[0]
    assert (first.row, first.post, first.vs, first.vs_post, first.expect) == ("FCOS", "nms_free", "FCOS", "nms", "worse")
    poto = claims[1]  # the paper's claim: POTO without NMS against FCOS with NMS
    assert (poto.row, poto.post, poto.vs, poto.vs_post, poto.margin) == ("POTO", "nms_free", "FCOS", "nms", 3)


def test_verdicts_against_scipy():
    df = frame({
        ("FCOS", "eval.nms.ap50"): [0.76, 0.77, 0.75], ("FCOS", "eval.nms_free.ap50"): [0.52, 0.55, 0.53],
        ("FCOS", "eval.nms.recall"): [0.90, 0.91, 0.89],
        ("POTO", "eval.nms_free.ap50"): [0.70, 0.80, 0.75], ("POTO", "eval.nms_free.recall"): [0.97, 0.97, 0.98],
    })
    results = evaluate(quickstart_claims(), df)
    lines = [line(r) for r in results]
    # paired for the same runs, one-sided "worse"
    ref = stats.ttest_rel([0.52, 0.55, 0.53], [0.76, 0.77, 0.75], alternative="less").pvalue
    assert results[0].paired and results[0].p == pytest.approx(ref, rel=1e-12)
    assert "**holds**" in lines[0] and "one-sided paired t" in lines[0] and "Holm" in lines[0]
    assert results[0].mark == "✓"  # worse, as claimed: the claim holds
    # POTO 75.0 vs FCOS+NMS 76.0: inside the 3-point margin, but too noisy to be shown
    ni = stats.ttest_ind(np.array([0.70, 0.80, 0.75]) + 0.03, [0.76, 0.77, 0.75], equal_var=False,
                         alternative="greater").pvalue
    assert results[1].p == pytest.approx(ni, rel=1e-12) and results[1].kind == "non-inferiority"
    assert "**inconclusive**" in lines[1] and "Δ -1.0" in lines[1] and results[1].mark == ""
    assert not results[1].paired
    assert "**holds**" in lines[2] and results[2].mark == "✓"
    # the 3DMF and Aux claims have no runs: they still count in Holm's family (6 claims)
    assert "not enough finished runs" in lines[3] and results[3].untested
    ps = [r.p for r in results if not r.untested]
    m = len(results)
    assert min(r.p_holm for r in results if not r.untested) == pytest.approx(min(1.0, m * min(ps)))
    assert not any("p = 0.000" in x for x in lines)


def test_no_test_below_three_seeds_or_with_identical_seeds():
    df = frame({("POTO", "eval.nms_free.ap50"): [0.70, 0.71, 0.69], ("POTO+3DMF", "eval.nms_free.ap50"): [0.60, 0.61],
                ("FCOS", "eval.nms.ap50"): [0.9, 0.9, 0.9], ("FCOS", "eval.nms_free.ap50"): [0.5, 0.5, 0.52]})
    results = evaluate(quickstart_claims(), df)
    three_dmf = next(r for r in results if r.claim.row == "POTO+3DMF")
    assert three_dmf.untested.startswith("n = 2/3") and three_dmf.mark == ""
    assert "**untested: n = 2/3: a test needs 3 seeds per side**" in line(three_dmf) and "Δ -9.5" in line(three_dmf)
    within = results[1]  # FCOS with NMS gave 0.9 on every seed: not replicates
    assert "identical values" in within.untested and within.mark == "" and math.isnan(within.p_holm)


def test_contradicted_two_sided_and_direction():
    from harness.spec.schema import Claim

    df = frame({("A", "eval.ap"): [0.30, 0.31, 0.29], ("B", "eval.ap"): [0.40, 0.41, 0.42],
                ("A", "eval.mmr"): [0.40, 0.41, 0.42], ("B", "eval.mmr"): [0.50, 0.52, 0.51]})
    better, differs, mmr = evaluate([Claim(row="A", vs="B", metric="ap"),
                                     Claim(row="A", vs="B", metric="ap", expect="differs"),
                                     Claim(row="A", vs="B", metric="mmr")], df)
    assert better.verdict == "contradicted" and better.mark == ""  # A is clearly below B
    two = stats.ttest_ind([0.30, 0.31, 0.29], [0.40, 0.41, 0.42], equal_var=False).pvalue
    assert differs.p == pytest.approx(two, rel=1e-9) and differs.verdict == "holds" and differs.high < 0
    assert mmr.verdict == "holds" and mmr.mark == "✓"  # lower mMR is better


def test_equivalence_is_two_one_sided_tests():
    from harness.spec.schema import Claim

    a, b = [0.500, 0.503, 0.498, 0.501], [0.499, 0.502, 0.500, 0.497]
    df = frame({("A", "eval.ap"): a, ("B", "eval.ap"): b})
    (eq,) = evaluate([Claim(row="A", vs="B", metric="ap", expect="equivalent", margin=1.0)], df)
    lower = stats.ttest_ind(np.array(a) + 0.01, b, equal_var=False, alternative="greater").pvalue
    upper = stats.ttest_ind(np.array(a) - 0.01, b, equal_var=False, alternative="less").pvalue
    assert eq.p == pytest.approx(max(lower, upper), rel=1e-9)
    assert eq.verdict == "equivalent within ±1" and eq.holds and -0.01 < eq.low < eq.high < 0.01
    assert eq.interval_name == "90% CI" and math.isfinite(eq.power_at_zero)
    (far,) = evaluate([Claim(row="A", vs="B", metric="ap", expect="equivalent", margin=0.05)], df)
    assert far.verdict == "inconclusive"  # ±0.05 points: the interval is wider than the margin


def test_interval_and_verdict_never_disagree():
    # random families of claims of every kind: the verdict must be readable from the printed
    # interval and the claim's bound, whatever Holm's step order did
    from harness.report.claims import decide
    from harness.spec.schema import Claim

    rng = np.random.default_rng(3)
    kinds = [{"expect": "better"}, {"expect": "worse"}, {"expect": "better", "margin": 1.0},
             {"expect": "differs"}, {"expect": "equivalent", "margin": 1.5}]
    seen = set()
    for trial in range(150):
        rows = {f"R{i}": rng.normal(0.5 + rng.normal(0, 0.01), 0.01, rng.integers(3, 7)) for i in range(4)}
        df = frame({(k, "eval.ap"): list(v) for k, v in rows.items()})
        claims = [Claim(row=f"R{i}", vs=f"R{(i + 1) % 4}", metric="ap", **kinds[(trial + i) % 5]) for i in range(4)]
        for r in evaluate(claims, df, plan=False):
            verdict = "holds" if r.holds else r.verdict
            seen.add(verdict)
            lo, hi = (r.low, r.high) if r.sign > 0 else (-r.high, -r.low)  # the claim's direction
            assert decide(lo, hi, r.kind, r.claim.margin / 100) == verdict, (trial, r.verdict)
            assert (r.p_holm < 0.05) == r.holds, (trial, r.p_holm, r.verdict)
    assert seen == {"holds", "inconclusive", "contradicted"}


def test_a_null_effect_holds_at_most_alpha_of_the_time():
    # two rows with the same true mean, 3 seeds each, a one-sided claim between them and four
    # other (true) claims in the family: over repeated stores the null claim holds <= 5 %
    from harness.spec.schema import Claim

    rng = np.random.default_rng(11)
    claims = [Claim(row="A", vs="B", metric="ap")] + [Claim(row="C", vs="B", metric="ap")] * 4
    holds = 0
    trials = 2000
    for _ in range(trials):
        df = frame({("A", "eval.ap"): list(rng.normal(0.5, 0.01, 3)), ("B", "eval.ap"): list(rng.normal(0.5, 0.01, 3)),
                    ("C", "eval.ap"): list(rng.normal(0.6, 0.01, 3))})
        holds += evaluate(claims, df, plan=False)[0].verdict == "holds"
    assert holds / trials <= 0.05 + 2.6 * math.sqrt(0.05 * 0.95 / trials), holds / trials


def test_points_never_show_minus_zero():
    from harness.report.claims import points
    from harness.report.tables import fmt_std

    assert points(-0.0004) == "0.0" and points(0.0004) == "0.0" and points(-0.012) == "-1.2"
    assert fmt_std(0.0) == "0" and fmt_std(1e-17) == "0" and fmt_std(0.0003) == "0.03" and fmt_std(0.004) == "0.4"


def test_reproduction_table_against_intervals():
    from harness.report.tables import reproduction_table
    from harness.spec import load_spec
    from harness.track.store import short as redact

    spec = load_spec("experiments/quickstart.yaml").spec
    ref = frame({("FCOS", "eval.nms.ap50"): [0.76, 0.77, 0.75], ("POTO", "eval.nms.ap50"): [0.70, 0.71, 0.72]})
    other = frame({("FCOS", "eval.nms.ap50"): [0.76, 0.765], ("POTO", "eval.nms.ap50"): [0.80, 0.81, 0.79]})
    md, inside, compared = reproduction_table("quickstart", spec, ref, other)
    assert (inside, compared) == (1, 2)
    # prediction intervals for a mean of m new seeds: 0.76 ± t(0.975, 2) · 0.01 · sqrt(1/3 + 1/m)
    t = 4.302652729911275
    lo2, hi2 = 76 - t * math.sqrt(1 / 3 + 1 / 2), 76 + t * math.sqrt(1 / 3 + 1 / 2)
    lo3, hi3 = 71 - t * math.sqrt(2 / 3), 71 + t * math.sqrt(2 / 3)
    assert f"76.2 in [{lo2:.1f}, {hi2:.1f}] ✓ (n=2)" in md and f"80.0 in [{lo3:.1f}, {hi3:.1f}] ✗" in md
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
