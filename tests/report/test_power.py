"""Power of the claims' tests: statsmodels' noncentral t where it applies, simulation through the
report's own decision (`claims.claim_decision`) where it does not (Welch's random df, TOST)."""

import math

import numpy as np
import pytest
from statsmodels.stats.power import TTestPower

from harness.report import power as pw
from harness.report.claims import claim_decision


@pytest.mark.parametrize("n", [3, 5, 10])
@pytest.mark.parametrize("effect", [0.0, 0.5, 1.5])
def test_paired_power_is_statsmodels_noncentral_t(n, effect):
    one = pw.power(effect, n, n, paired=True, kind="one-sided", alpha=0.05)
    assert one == pytest.approx(TTestPower().power(effect, n, 0.05, alternative="larger"), abs=2e-4)
    two = pw.power(effect, n, n, paired=True, kind="two-sided", alpha=0.01)
    assert two == pytest.approx(TTestPower().power(effect, n, 0.01, alternative="two-sided"), abs=2e-4)
    # a margin shifts the null: non-inferiority at margin m is superiority at effect + m
    assert pw.power(effect - 1, n, n, paired=True, kind="one-sided", alpha=0.05, margin=1.0) == pytest.approx(one)


@pytest.mark.parametrize("kind, margin, effect", [("one-sided", 0.0, 2.0), ("equivalence", 2.5, 0.3),
                                                  ("two-sided", 0.0, -2.0)])
def test_welch_and_tost_power_match_simulated_decisions(kind, margin, effect):
    rng = np.random.default_rng(5)
    sims, n = 3000, 3
    claim_kind = {"one-sided": "superiority", "equivalence": "equivalence", "two-sided": "two-sided"}[kind]
    held = sum(claim_decision(list(rng.normal(effect, 1, n)), list(rng.normal(0, 1, n)), paired=False, kind=claim_kind,
                          sign=1, margin=margin, level=0.05).verdict == "holds" for _ in range(sims))
    printed = pw.power(effect, n, n, paired=False, kind=kind, alpha=0.05, margin=margin)
    assert abs(held / sims - printed) < 3.5 * math.sqrt(printed * (1 - printed) / sims) + 1e-3, (held / sims, printed)


def test_welch_power_at_three_seeds_is_below_the_pooled_t():
    # Welch's df is random and at most 2n - 2: less power than the pooled t's noncentral t
    from statsmodels.stats.power import TTestIndPower

    welch = pw.power(2.0, 3, 3, paired=False, kind="one-sided", alpha=0.05)
    assert welch == pytest.approx(0.577, abs=0.002) and welch < TTestIndPower().power(2.0, 3, 0.05, alternative="larger") - 0.05


def test_detectable_effect_and_seeds_needed_invert_the_power():
    for paired, alpha in ((False, 0.05), (False, 0.05 / 6), (True, 0.01)):
        mde = pw.min_detectable(3, 3, paired=paired, kind="one-sided", alpha=alpha)
        assert pw.power(mde, 3, 3, paired=paired, kind="one-sided", alpha=alpha) == pytest.approx(0.8, abs=1e-3)
        n = pw.seeds_needed(0.7, paired=paired, kind="one-sided", alpha=alpha)
        assert pw.power(0.7, n, n, paired=paired, kind="one-sided", alpha=alpha) >= 0.8
        assert pw.power(0.7, n - 1, n - 1, paired=paired, kind="one-sided", alpha=alpha) < 0.8
    # the numbers: about 2.7 seed-stds at α with 3 seeds a side, about 5.2 after Holm over 6
    assert pw.min_detectable(3, 3, paired=False, kind="one-sided", alpha=0.05) == pytest.approx(2.71, abs=0.02)
    assert pw.min_detectable(3, 3, paired=False, kind="one-sided", alpha=0.05 / 6) == pytest.approx(5.24, abs=0.03)
    assert pw.seeds_needed(-0.5, paired=False, kind="one-sided", alpha=0.05) is None  # wrong side: never
    assert math.isnan(pw.min_detectable(3, 3, paired=False, kind="equivalence", alpha=0.05, margin=1.0))
