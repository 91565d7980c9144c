"""Statistics against hand-computed values."""

import math

import numpy as np
import pytest

from harness.report.stats import direction, holm, pooled_std, prediction_interval, summarize, welch


def test_summary_mean_std_and_t_interval():
    s = summarize([0.390, 0.393, 0.387])
    assert s.n == 3 and s.mean == pytest.approx(0.39)
    assert s.std == pytest.approx(0.003)  # deviations -0.003... sum of squares 1.8e-5 / 2
    half = 4.302652729911275 * 0.003 / math.sqrt(3)  # t(0.975, 2)
    assert s.ci_low == pytest.approx(0.39 - half) and s.ci_high == pytest.approx(0.39 + half)


def test_summary_edge_cases():
    assert summarize([]).n == 0 and math.isnan(summarize([]).mean)
    one = summarize([0.5, float("nan")])
    assert one.n == 1 and one.mean == 0.5 and math.isnan(one.std)


def test_welch_against_hand_computation():
    a, b = [1.0, 2.0, 3.0], [2.0, 4.0, 6.0, 8.0]
    # t = (2 - 5) / sqrt(1/3 + 6.6667/4) = -2.1213; Welch df = 4.0268...
    from scipy import stats

    t = (2 - 5) / math.sqrt(1 / 3 + (20 / 3) / 4)
    v1, v2 = 1 / 3, (20 / 3) / 4
    df = (v1 + v2) ** 2 / (v1 ** 2 / 2 + v2 ** 2 / 3)
    assert welch(a, b) == pytest.approx(2 * stats.t.sf(abs(t), df))
    assert math.isnan(welch([1.0], [2.0, 3.0]))


def test_holm():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, float("nan"), 0.01])[0] == pytest.approx(0.5)
    assert math.isnan(holm([0.5, float("nan")])[1])
    assert holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])


def test_pooled_std_and_direction():
    assert pooled_std([[1.0, 3.0], [2.0, 2.0, 2.0]]) == pytest.approx(math.sqrt(2 / 3))
    assert direction("eval.mmr") == -1 and direction("eval.nms.ap") == 1


def test_prediction_interval_covers_a_rerun_95_percent_of_the_time():
    # simulated through the report's own function: a store of n seeds, a faithful rerun of m
    # seeds from the same distribution; its mean must land inside 95 % of the time. The 95 %
    # t-interval of the mean (what the reproduction section used before) covers far less.
    rng = np.random.default_rng(0)
    trials = 4000
    for n, m in ((3, 3), (3, 1), (5, 2)):
        inside = ci_inside = 0
        for _ in range(trials):
            ref, new = rng.normal(50, 1.3, n), rng.normal(50, 1.3, m).mean()
            lo, hi = prediction_interval(ref, m)
            inside += lo <= new <= hi
            s = summarize(ref)
            ci_inside += s.ci_low <= new <= s.ci_high
        assert abs(inside / trials - 0.95) < 0.012, (n, m, inside / trials)  # 3.5 binomial SEs
        assert ci_inside / trials < 0.92, (n, m, ci_inside / trials)


def test_prediction_interval_by_hand():
    lo, hi = prediction_interval([0.390, 0.393, 0.387], 2)
    half = 4.302652729911275 * 0.003 * math.sqrt(1 / 3 + 1 / 2)
    assert (lo, hi) == pytest.approx((0.39 - half, 0.39 + half))
    assert all(math.isnan(x) for x in prediction_interval([0.5], 3))
    assert all(math.isnan(x) for x in prediction_interval([0.5, 0.6], 0))
