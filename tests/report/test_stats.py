"""Statistics against hand-computed values."""

import math

import pytest

from harness.report.stats import direction, holm, pooled_std, summarize, welch


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
