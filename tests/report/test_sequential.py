"""Group-sequential decisions (`harness.report.sequential`): t boundaries checked by an
independent simulation (and the boundary search against published z values), verdicts on
constructed stores, the design's validation, the plan, the JSON round trip, and small simulations of the type-I error and the interval's coverage
through the same code (`bench/decide_calibration.py` runs the large ones)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from harness.report import sequential as sq
from harness.report.claims import decide as interval_verdict
from harness.spec.schema import Claim

ROOT = Path(__file__).resolve().parents[2]
DESIGN = sq.Design((3, 5, 8, 12))
#: the same design without futility stopping, for the tests of what happens at later looks
PLAIN = sq.Design((3, 5, 8, 12), futility=None)


def seeds(values, start=0):
    return {start + i: float(v) for i, v in enumerate(values)}


# ------------------------------------------------------------------ boundaries

# Lan-DeMets O'Brien-Fleming-type boundaries on the z scale, equally spaced looks, one-sided
# 0.025 (e.g. gsDesign's sfLDOF; Jennison & Turnbull 2000, ch. 7)
PUBLISHED_LD_OBF = {
    2: (2.9626, 1.9686),
    3: (3.7103, 2.5114, 1.9930),
    4: (4.3326, 2.9631, 2.3590, 2.0141),
}


@pytest.mark.parametrize("k", sorted(PUBLISHED_LD_OBF))
def test_the_sequential_quantiles_give_the_published_z_boundaries(k):
    """The boundary search `boundaries` runs on t paths, fed canonical normal paths (Brownian
    motion at equally spaced looks) instead: the published z boundaries, within Monte Carlo
    error (10^6 paths)."""
    rng = np.random.default_rng(2025)
    paths = np.cumsum(rng.standard_normal((1_000_000, k)), axis=1) / np.sqrt(np.arange(1, k + 1))
    cum = sq.spent("obrien_fleming", np.arange(1, k + 1) / k, 0.025)
    b = sq.sequential_bounds(paths, cum, lambda j, p: float(stats.norm.isf(p)))
    assert b == pytest.approx(PUBLISHED_LD_OBF[k], abs=0.03)
    assert b[0] == pytest.approx(PUBLISHED_LD_OBF[k][0], abs=2e-4)  # the first look: exact


def _independent_crossings(looks, paired, spending, levels, sims=200_000, seed=4242):
    """Per level: the per-look first-crossing rates of the one-sided t boundaries on whole
    null procedures simulated from per-seed values (not the boundaries' own paths), and the
    spent increments."""
    design = sq.Design(looks, spending=spending)
    a, b = sq.draw(np.random.default_rng(seed), sims, design.cap, 0.0, paired)
    est, se, _, _ = sq.look_tests(a, b, design, paired)
    t = est / se
    out = []
    for level in levels:
        cross = t >= design.bounds(level, paired)
        first = np.where(cross.any(axis=1), cross.argmax(axis=1), -1)
        rates = np.array([np.mean(first == k) for k in range(len(looks))])
        inc = np.diff(np.r_[0.0, sq.spent(spending, design.fractions, level)])
        out.append((level, rates, inc))
    return out


@pytest.mark.parametrize("spending", sq.SPENDING)
@pytest.mark.parametrize("paired", [True, False])
@pytest.mark.parametrize("looks", [(3, 5, 8, 12), (4, 8, 12), (3, 4, 6, 9)])
def test_each_look_spends_its_alpha_by_an_independent_simulation(looks, paired, spending):
    """200,000 null procedures from per-seed normal values through `look_tests` (another seed
    than the boundaries' paths): each look's first-crossing rate is its spent increment, and the
    total the level, within 4 standard errors of both simulations."""
    sims = 200_000
    for level, rates, inc in _independent_crossings(looks, paired, spending, (0.05, 0.05 / 3), sims):
        se = np.sqrt(inc * (1 - inc) / sims + inc / sq.PATHS)
        assert np.all(np.abs(rates - inc) <= 4 * se + 1e-6), (level, rates, inc)
        total_se = math.sqrt(level * (1 - level) / sims + level / sq.PATHS)
        assert abs(rates.sum() - level) <= 4 * total_se, (level, rates.sum())


def test_the_check_can_fail():
    """The same check rejects the z boundaries a normal approximation would use at these seeds
    (the t's heavier tails cross them far too often)."""
    design = sq.Design((3, 5, 8, 12), spending="pocock")
    a, b = sq.draw(np.random.default_rng(4242), 100_000, design.cap, 0.0, True)
    est, se, _, _ = sq.look_tests(a, b, design, True)
    cum = sq.spent("pocock", design.fractions, 0.05)
    paths = np.cumsum(np.random.default_rng(1).standard_normal((400_000, 12)), axis=1)[:, np.array(design.looks) - 1]
    z = sq.sequential_bounds(paths / np.sqrt(design.looks), cum, lambda j, p: float(stats.norm.isf(p)))
    assert np.mean(((est / se) >= z).any(axis=1)) > 0.08


@pytest.mark.parametrize("paired", [True, False])
@pytest.mark.parametrize("spending", sq.SPENDING)
def test_the_first_look_is_the_exact_t_quantile(spending, paired):
    for looks in ((3, 5, 8, 12), (4, 8, 12), (5, 6)):
        for level in (0.05, 0.025, 0.05 / 6):
            df = looks[0] - 1 if paired else 2 * looks[0] - 2
            want = stats.t.isf(float(sq.spent(spending, looks[0] / looks[-1], level)), df)
            assert sq.boundaries(looks, level, spending, paired)[0] == pytest.approx(want, rel=1e-12)


def test_a_tiny_increment_falls_back_to_the_marginal_t_quantile():
    """Where fewer than MIN_CROSSINGS of the paths would cross, the boundary is the marginal t
    quantile of the increment (it spends at most that); elsewhere the joint quantile lies below
    the marginal one (surviving the earlier looks makes crossing rarer)."""
    looks, seen = (3, 5, 8, 12), set()
    for level in (1e-4, 0.05 / 8, 0.05):
        inc = np.diff(np.r_[0.0, sq.spent("obrien_fleming", np.array(looks) / 12, level)])
        b = sq.boundaries(looks, level, "obrien_fleming", True)
        for k in range(1, 4):
            marginal = stats.t.isf(inc[k], looks[k] - 1)
            if int(inc[k] * sq.PATHS) < sq.MIN_CROSSINGS:
                assert b[k] == pytest.approx(marginal, rel=1e-12)
                seen.add("marginal")
            else:
                assert b[k] < marginal
                seen.add("joint")
    assert seen == {"marginal", "joint"}


def test_one_look_is_the_fixed_design():
    assert sq.Design((5,)).bounds(0.05, True) == pytest.approx([stats.t.isf(0.05, 4)])
    assert sq.Design((5,)).bounds(0.05, False) == pytest.approx([stats.t.isf(0.05, 8)])
    assert sq.spent("pocock", 1.0, 0.05) == pytest.approx(0.05)
    assert sq.spent("obrien_fleming", 1.0, 0.05) == pytest.approx(0.05)


def test_the_null_paths_are_deterministic():
    one = sq.null_paths((3, 5, 8, 12), True)
    assert one.shape == (sq.PATHS, 4) and not one.flags.writeable
    sq.null_paths.cache_clear()
    sq.boundaries.cache_clear()
    assert np.array_equal(sq.null_paths((3, 5, 8, 12), True)[:1000], one[:1000])


# ------------------------------------------------------------------ the design


@pytest.mark.parametrize("looks, spending, alpha, message", [
    ((), "pocock", 0.05, "non-empty"),
    ((2, 5, 8), "pocock", 0.05, "first look needs at least 3"),
    ((3, 5, 5, 8), "pocock", 0.05, "increase strictly"),
    ((3, 8, 6), "pocock", 0.05, "increase strictly"),
    ((3, 3), "pocock", 0.05, "at least one new seed"),
    ((3, 5.5), "pocock", 0.05, "whole numbers"),
    ("abc", "pocock", 0.05, "whole numbers"),
    (5, "pocock", 0.05, "non-empty"),
    ((3, 5), "haybittle", 0.05, "spending 'haybittle'"),
    ((3, 5), "pocock", 0.5, "alpha"),
    ((3, 5), "pocock", 0.0, "alpha"),
])
def test_design_validation(looks, spending, alpha, message):
    with pytest.raises(ValueError, match=message):
        sq.Design(looks, alpha, spending)


def test_a_look_may_add_a_single_seed():
    """The t of all seeds so far needs no seeds of its own per look: one new seed is a look."""
    design = sq.Design((3, 4, 5, 8))
    assert design.looks == (3, 4, 5, 8) and len(design.bounds(0.05, True)) == 4
    rng = np.random.default_rng(9)
    h = sq.Hypothesis(1, "a", "b", "superiority", paired=True)
    a, b = seeds(rng.normal(0, 1, 4)), seeds(rng.normal(0, 1, 4))
    r = sq.decide(sq.Design((3, 4, 5, 8), futility=None), [h], [(a, b)])[0]
    assert [lk.seeds for lk in r.looks] == [3, 4] and [lk.df for lk in r.looks] == [2, 3]
    # with the default futility stop the claim goes on to look 2 only if look 1's t reached it
    stopped = sq.decide(design, [h], [(a, b)])[0]
    first = r.looks[0].statistic[0]
    assert (stopped.verdict == sq.FOR_FUTILITY) == (first < sq.FUTILITY)
    assert len(stopped.looks) == (1 if first < sq.FUTILITY else 2)


def test_hypothesis_validation_and_claims_from_the_spec():
    with pytest.raises(ValueError, match="kind"):
        sq.Hypothesis(1, "a", "b", "better")
    with pytest.raises(ValueError, match="equivalence needs"):
        sq.Hypothesis(1, "a", "b", "equivalence")
    h = sq.hypothesis_of(Claim(row="A", vs="A", post="nms", vs_post="nms_free", metric="mmr", expect="worse",
                               margin=0.5), 2)
    assert (h.kind, h.sign, h.margin, h.paired, h.margin_label) == ("non-inferiority", 1, 0.005, True, "0.5")
    h = sq.hypothesis_of(Claim(row="A", vs="B", metric="ap", expect="equivalent", margin=1.0), 3)
    assert (h.kind, h.sign, h.paired) == ("equivalence", 1, False)


# ------------------------------------------------------------------ verdicts on constructed stores


@pytest.mark.parametrize("spending", sq.SPENDING)
@pytest.mark.parametrize("paired", [True, False])
def test_a_huge_effect_is_decided_at_the_first_look(spending, paired):
    """As FCOS with against without NMS (Δ = 40 at σ = 0.3): three seeds suffice. Pocock's first
    boundary is low enough for it at Holm's α / 4 too; O'Brien-Fleming's first boundary at α / 4
    asks a 3-seed paired t for p < 6e-7, t > 900 (docs/statistics.md), so it is tested alone."""
    rng = np.random.default_rng(1)
    design = sq.Design((3, 5, 8, 12), spending=spending)
    big = seeds(40 + rng.normal(0, 0.3, 3))
    small = seeds(rng.normal(0, 0.3, 3))
    other = seeds(rng.normal(0, 0.3, 3))
    hyps = [sq.Hypothesis(1, "fcos", "fcos", "superiority", paired=paired)]
    values = [(big, small)]
    if spending == "pocock":
        hyps += [sq.Hypothesis(2, "a", "b", "superiority"), sq.Hypothesis(3, "a", "c", "two-sided"),
                 sq.Hypothesis(4, "b", "c", "equivalence", margin=0.01)]
        values += [(small, other), (small, other), (other, small)]
    out = sq.decide(design, hyps, values)
    r = out[0]
    assert r.verdict == "holds" and r.seeds == 3 and len(r.looks) == 1
    first = r.looks[0]
    assert first.statistic[0] >= first.boundary and first.df == (2 if paired else 4) and first.verdict == "holds"
    assert first.boundary == pytest.approx(sq.Design(design.looks, first.level, spending).bounds(first.level, paired)[0])
    assert r.low > 0 and r.estimate == pytest.approx(40, abs=1)
    # the others (no effect) go on to look 2 unless their first look's t is below the futility threshold
    for other in out[1:]:
        weak = sq.futility_statistic(other.hypothesis.kind, np.array(other.looks[0].statistic)) < sq.FUTILITY
        assert other.verdict == (sq.FOR_FUTILITY if weak else "continue") and other.stop_look == (1 if weak else None)
    assert sq.plan(design, out).open == tuple(o.hypothesis.number for o in out[1:] if o.verdict == "continue")


def test_rows_with_identical_runs_never_hold():
    """A setting with no effect on training gives bit-identical runs: Δ = 0 at every stage, so
    no look ever shows a difference; paired, no spread: untested, as in the fixed design."""
    rng = np.random.default_rng(0)
    values = seeds(rng.normal(0.4, 0.01, 12))
    for spending, futility in [(s, f) for s in sq.SPENDING for f in (None, sq.FUTILITY)]:
        design = sq.Design((3, 5, 8, 12), spending=spending, futility=futility)
        hyps = [sq.Hypothesis(1, "a", "b", "superiority"), sq.Hypothesis(2, "a", "b", "two-sided"),
                sq.Hypothesis(3, "a", "b", "superiority", paired=True)]
        out = sq.decide(design, hyps, [(values, dict(values))] * 3)
        # t = 0 at every look: below the futility threshold at the first look, or on to the cap
        weak = "inconclusive at cap" if futility is None else sq.FOR_FUTILITY
        assert [r.verdict for r in out] == [weak, weak, "untested"]
        assert [len(r.looks) for r in out[:2]] == [4 if futility is None else 1] * 2
        assert "did not vary" in out[2].untested and out[0].low < 0 < out[0].high
        assert all(lk.statistic[0] == pytest.approx(0.0) for lk in out[0].looks)
        assert sq.plan(design, out).open == ()


def test_a_null_effect_never_holds_on_these_seeds():
    """Two rows from one distribution, on fixed seeds of the generator: nothing holds (a
    regression check on fixed data; generator seed 105 is left out: there the superiority and
    the two-sided claim hold at the cap, as a null does 5 % of the time by design, which the
    simulations below check)."""
    for seed in (100, 101, 102, 103, 104, 106, 107, 108):
        rng = np.random.default_rng(seed)
        a, b = seeds(rng.normal(0.4, 0.01, 12)), seeds(rng.normal(0.4, 0.01, 12))
        hyps = [sq.Hypothesis(1, "a", "b", "superiority"), sq.Hypothesis(2, "a", "b", "two-sided"),
                sq.Hypothesis(3, "a", "b", "superiority", sign=-1)]
        out = sq.decide(DESIGN, hyps, [(a, b)] * 3)
        assert not any(r.holds for r in out), (seed, [r.verdict for r in out])


def test_the_verdict_is_read_from_the_interval():
    """The interval clears the claim's bound exactly when the claim holds, lies past it when
    contradicted (`claims.decide`, the fixed design's reading), on random stores of every kind."""
    rng = np.random.default_rng(7)
    kinds = [("superiority", 0.0), ("non-inferiority", 0.5), ("two-sided", 0.0), ("equivalence", 1.0)]
    seen = set()
    for _ in range(60):
        n = int(rng.integers(3, 13))
        delta = float(rng.choice([-2.0, -0.5, 0.0, 0.5, 2.0]))
        a, b = seeds(rng.normal(delta, 1, n)), seeds(rng.normal(0, 1, n))
        hyps = [sq.Hypothesis(i + 1, "a", "b", k, int(rng.choice([-1, 1])), m, bool(rng.integers(2)))
                for i, (k, m) in enumerate(kinds)]
        # stopped for futility: inconclusive, its interval neither clears the bound nor lies past it
        for r in sq.decide(DESIGN, hyps, [(a, b)] * 4) + sq.decide(PLAIN, hyps, [(a, b)] * 4):
            if r.seeds == 0:
                continue
            h = r.hypothesis
            low, high = (r.low, r.high) if h.sign > 0 else (-r.high, -r.low)
            want = interval_verdict(-math.inf if low is None else low, math.inf if high is None else high,
                                    h.kind, h.margin)
            got = "holds" if r.holds else "contradicted" if r.verdict == "contradicted" else "inconclusive"
            assert got == want, (h, r.verdict, low, high)
            seen.add(got)
    assert seen == {"holds", "contradicted", "inconclusive"}


def test_holm_passes_alpha_on_and_retests_earlier_looks():
    """When one claim holds, the other is re-tested at the larger level over the looks made: in
    the family it holds exactly when it would alone at α once the first held at look 1, and
    never when it would not alone at α; it always holds when it would at α / 2 (Bonferroni)."""
    rng = np.random.default_rng(3)
    n = 4000
    big = sq.Hypothesis(1, "a", "c", "superiority")
    mid = sq.Hypothesis(2, "b", "c", "superiority")
    c = rng.normal(0, 1, (n, 12))
    a = rng.normal(rng.choice([0.0, 30.0], (n, 1)), 1, (n, 12))
    b = rng.normal(1.0, 1, (n, 12))
    fam = sq.decide_arrays(DESIGN, [big, mid], [(a, c), (b, c)])
    alone = sq.decide_arrays(DESIGN, [mid], [(b, c)])
    bonf = sq.decide_arrays(sq.Design(DESIGN.looks, 0.025), [mid], [(b, c)])
    held = fam.status[:, 1] == sq.HOLDS
    assert not np.any(held & (alone.status[:, 0] != sq.HOLDS))
    assert np.all(held[bonf.status[:, 0] == sq.HOLDS])
    first = (fam.status[:, 0] == sq.HOLDS) & (fam.stop[:, 0] == 0)
    assert first.sum() > 1000
    assert np.array_equal(held[first], alone.status[first, 0] == sq.HOLDS)
    assert held.sum() > (bonf.status[:, 0] == sq.HOLDS).sum()


def test_the_family_waits_for_the_claim_behind_and_ignores_seeds_past_the_look():
    """(Without futility stopping, which could stop either claim at look 1 on these seeds.)"""
    rng = np.random.default_rng(4)
    a, b, c = (rng.normal(0, 1, 12) for _ in range(3))
    hyps = [sq.Hypothesis(1, "a", "b", "superiority"), sq.Hypothesis(2, "c", "b", "superiority")]
    out = sq.decide(PLAIN, hyps, [(seeds(a[:7]), seeds(b[:7])), (seeds(c[:4]), seeds(b[:7]))])
    assert [len(r.looks) for r in out] == [1, 1]  # claim 2 has no seeds for look 2: both wait
    again = sq.decide(PLAIN, hyps, [(seeds(a[:5]), seeds(b[:5])), (seeds(c[:3]), seeds(b[:5]))])
    assert [r.to_json()["looks"] for r in out] == [r.to_json()["looks"] for r in again]
    p = sq.plan(PLAIN, out)
    assert (p.look, p.seeds, p.rows) == (2, 5, {"a": 0, "b": 0, "c": 1})


def test_a_shared_row_is_planned_once():
    rng = np.random.default_rng(5)
    base = seeds(rng.normal(0, 1, 3))
    hyps = [sq.Hypothesis(1, "A", "base", "superiority"), sq.Hypothesis(2, "B", "base", "superiority"),
            sq.Hypothesis(3, "A", "B", "equivalence", margin=0.5),
            sq.Hypothesis(4, "C", "base", "superiority")]
    a, b = seeds(rng.normal(0, 1, 3)), seeds(rng.normal(0, 1, 3))
    huge = seeds(100 + rng.normal(0, 1, 3))
    out = sq.decide(PLAIN, hyps, [(a, base), (b, base), (a, b), (huge, base)])
    assert out[3].holds
    p = sq.plan(PLAIN, out)
    assert p.open == (1, 2, 3) and (p.look, p.seeds) == (2, 5)
    assert p.rows == {"A": 2, "base": 2, "B": 2}  # "base" is shared by two open claims: 2 seeds, once
    assert sq.Plan.from_json(json.loads(json.dumps(p.to_json()))) == p


def test_before_the_first_look_every_claim_is_open():
    hyps = [sq.Hypothesis(1, "A", "B", "superiority"), sq.Hypothesis(2, "A", "A", "superiority", paired=True)]
    out = sq.decide(DESIGN, hyps, [({0: 0.4}, {}), ({0: 0.4, 1: 0.41}, {0: 0.3, 1: 0.32})])
    assert [(r.verdict, r.seeds, r.next_seeds, r.low) for r in out] == [("continue", 0, 3, None)] * 2
    assert sq.plan(DESIGN, out) == sq.Plan((1, 2), 1, 3, {"A": 2, "B": 3})


def test_results_round_trip_through_json():
    rng = np.random.default_rng(6)
    a, b = seeds(rng.normal(1, 1, 8)), seeds(rng.normal(0, 1, 10))
    hyps = [sq.Hypothesis(1, "a", "b", "superiority"), sq.Hypothesis(2, "a", "b", "equivalence", -1, 0.5,
                                                                      margin_label="0.5"),
            sq.Hypothesis(3, "a", "b", "two-sided", paired=True)]
    for r in sq.decide(DESIGN, hyps, [(a, b)] * 3):
        text = json.dumps(r.to_json())
        assert "NaN" not in text and "Infinity" not in text
        back = sq.SequentialResult.from_json(json.loads(text))
        assert back == r
    assert sq.Design.from_json(json.loads(json.dumps(DESIGN.to_json()))) == DESIGN


def test_looks_stored_by_the_stagewise_rule_still_load():
    """A result stored by the earlier rule (z statistic and boundary, stage p-values) loads,
    marked as of that rule; a new one names its t statistic, boundary and df."""
    old = {"look": 1, "seeds": 3, "level": 0.025, "boundary": 3.75, "statistic": [1.2, None],
           "stage_p": [0.1, None], "verdict": "continue"}
    lk = sq.Look.from_json(old)
    assert lk.rule == sq.RULE_STAGEWISE and lk.boundary == 3.75 and lk.statistic[0] == 1.2
    assert math.isnan(lk.statistic[1]) and math.isnan(lk.df)
    new = sq.Look(1, 3, 0.05, 75.1, (2.0,), 2.0, "continue")
    assert set(new.to_json()) == {"look", "seeds", "level", "rule", "t", "t_boundary", "df", "t_futility", "verdict"}
    assert new.futility is None and sq.Look.from_json({**new.to_json(), "t_futility": 0.35}).futility == 0.35
    assert sq.Look.from_json(json.loads(json.dumps(new.to_json()))) == new


def test_decide_on_dicts_is_decide_arrays_on_their_values():
    """The store's path (values keyed by seed, in seed order) and the simulations' path agree."""
    rng = np.random.default_rng(8)
    n = 40
    a, b = rng.normal(0.8, 1, (n, 12)), rng.normal(0, 1, (n, 12))
    h = sq.Hypothesis(1, "a", "b", "superiority", paired=True)
    batch = sq.decide_arrays(DESIGN, [h], [(a, b)])
    low, high = batch.interval(0)
    for i in range(n):
        shuffled = list(range(12))[::-1]
        r = sq.decide(DESIGN, [h], [({s: a[i, s] for s in shuffled}, {s: b[i, s] for s in shuffled})])[0]
        assert r.verdict == sq._verdict(h, int(batch.status[i, 0]))
        assert r.seeds == batch.seeds(0)[i]
        assert (r.low, r.high) == pytest.approx((low[i], high[i]))


# ------------------------------------------------------------------ simulations through the same code


@pytest.mark.parametrize("spending", sq.SPENDING)
@pytest.mark.parametrize("kind, paired, delta, margin", [
    ("superiority", True, 0.0, 0.0), ("superiority", False, 0.0, 0.0), ("non-inferiority", False, -1.0, 1.0),
    ("two-sided", False, 0.0, 0.0), ("equivalence", True, 1.0, 1.0),
])
def test_type_one_error_over_all_looks(spending, kind, paired, delta, margin):
    sims = 600
    design = sq.Design((3, 5, 8, 12), spending=spending)
    h = sq.Hypothesis(1, "a", "b", kind, 1, margin, paired)
    batch = sq.decide_arrays(design, [h], [sq.draw(np.random.default_rng(11), sims, design.cap, delta, paired)])
    rate = float(np.mean(batch.status[:, 0] == sq.HOLDS))
    assert rate <= 0.05 + 4 * math.sqrt(0.05 * 0.95 / sims), rate


def test_the_family_wise_error_with_one_false_null():
    """Holm with the spending: a claim that holds passes its α to the other, a true null; the
    family's error stays at α (600 procedures, loose bound)."""
    sims = 600
    rng = np.random.default_rng(12)
    a, b, c = rng.normal(2, 1, (sims, 12)), rng.normal(0, 1, (sims, 12)), rng.normal(0, 1, (sims, 12))
    hyps = [sq.Hypothesis(1, "a", "c", "superiority"), sq.Hypothesis(2, "b", "c", "superiority")]
    batch = sq.decide_arrays(DESIGN, hyps, [(a, c), (b, c)])
    assert np.mean(batch.status[:, 0] == sq.HOLDS) > 0.9
    rate = float(np.mean(batch.status[:, 1] == sq.HOLDS))
    assert rate <= 0.05 + 4 * math.sqrt(0.05 * 0.95 / sims), rate


@pytest.mark.parametrize("kind, margin, nominal", [("superiority", 0.0, 0.90), ("two-sided", 0.0, 0.95),
                                                   ("equivalence", 1.0, 0.90)])
def test_interval_coverage(kind, margin, nominal):
    sims, delta = 600, 0.7
    h = sq.Hypothesis(1, "a", "b", kind, 1, margin, False)
    batch = sq.decide_arrays(DESIGN, [h], [sq.draw(np.random.default_rng(13), sims, 12, delta, False)])
    low, high = batch.interval(0)
    cover = float(np.mean((low < delta) & (delta < high)))
    assert cover >= nominal - 4 * math.sqrt(nominal * (1 - nominal) / sims), cover


def test_seeds_saved_against_the_fixed_design():
    s = sq.savings(PLAIN, "superiority", paired=False, effect=2.0, sims=1500)
    assert s.power > 0.97 and s.fixed_seeds >= 10 and s.ratio < 0.8 and s.futile == 0
    # the futility stop costs a little power at 2σ (the fixed design of that power is shorter) and saves seeds
    f = sq.savings(DESIGN, "superiority", paired=False, effect=2.0, sims=1500)
    assert 0 < f.futile < 0.05 and f.power > 0.95 and f.mean_seeds < s.mean_seeds and f.ratio < 1
    assert sq.savings(DESIGN, "superiority", paired=True, effect=0.0, sims=300).fixed_seeds is None
    assert json.loads(json.dumps(s.to_json()))["mean_seeds"] == pytest.approx(s.mean_seeds)


@pytest.mark.slow
def test_the_calibration_benchmark_runs_quick():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "bench/decide_calibration.py", "--quick", "--looks", "3,5,8,12"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "largest type-I error" in out.stdout and "family" in out.stdout


# ------------------------------------------------------------------ futility stopping


@pytest.mark.parametrize("spending", sq.SPENDING)
@pytest.mark.parametrize("kind, paired, margin", [("superiority", False, 0.0), ("non-inferiority", True, 0.5),
                                                  ("two-sided", False, 0.0), ("equivalence", True, 1.0)])
def test_futility_stops_an_open_claim_below_the_threshold_at_an_interim_look_only(spending, kind, paired, margin):
    """Every procedure: stopped for futility exactly at the first interim look where the claim,
    still open after that look's efficacy and contradiction checks, has its futility statistic
    (t; two-sided |t|; equivalence the smaller t) below the threshold; never at the cap; and
    every earlier interim look it passed had the statistic at or above it."""
    design = sq.Design((3, 5, 8, 12), spending=spending)
    h = sq.Hypothesis(1, "a", "b", kind, 1, margin, paired)
    values = [sq.draw(np.random.default_rng(21), 2000, 12, 0.4, paired)]
    batch = sq.decide_arrays(design, [h], values)
    plain = sq.decide_arrays(sq.Design(design.looks, spending=spending, futility=None), [h], values)
    weak = sq.futility_statistic(kind, batch.stats[0]) < sq.FUTILITY  # (N, K)
    status, stop = batch.status[:, 0], batch.stop[:, 0]
    futile = status == sq.FUTILE
    assert futile.mean() > 0.05 and np.all(stop[futile] < 3)
    assert np.all(weak[futile, stop[futile]])
    for i in np.flatnonzero(futile):
        assert not weak[i, :stop[i]].any()  # it passed every earlier interim look
        assert plain.stop[i, 0] == -1 or plain.stop[i, 0] > stop[i]  # still open there without the stop
    # where the claim was not stopped for futility, it reached the verdict the plain design reaches
    kept = ~futile
    assert np.array_equal(status[kept], plain.status[kept, 0]) and np.array_equal(stop[kept], plain.stop[kept, 0])
    # a claim open at an interim look was never below the threshold there
    for k in range(3):
        passed = stop > k
        assert not weak[passed, k].any()
    # at the cap nothing stops for futility: a weak last look is inconclusive at cap
    capped = status == sq.CAPPED
    assert capped.any() and np.all(stop[capped] == 3)


def test_futility_null_reproduces_the_verdicts_without_it():
    """`futility: null`: no claim stops for futility, and a family's verdicts, looks and levels
    are the procedure's without the stop; a threshold no interim t reaches below changes nothing."""
    rng = np.random.default_rng(22)
    a, b, c = rng.normal(0.6, 1, (3000, 12)), rng.normal(0.3, 1, (3000, 12)), rng.normal(0, 1, (3000, 12))
    hyps = [sq.Hypothesis(1, "a", "c", "superiority"), sq.Hypothesis(2, "b", "c", "two-sided"),
            sq.Hypothesis(3, "a", "b", "equivalence", margin=1.0)]
    values = [(a, c), (b, c), (a, b)]
    for spending in sq.SPENDING:
        plain = sq.decide_arrays(sq.Design((3, 5, 8, 12), spending=spending, futility=None), hyps, values)
        assert not np.any(plain.status == sq.FUTILE)
        low = sq.decide_arrays(sq.Design((3, 5, 8, 12), spending=spending, futility=-10.0), hyps, values)
        never = np.all([sq.futility_statistic(h.kind, z)[:, :3].min(axis=1) >= -10
                        for h, z in zip(hyps, low.stats, strict=True)], axis=0)
        assert never.mean() > 0.99
        for x in ("status", "stop", "level", "made"):
            assert np.array_equal(getattr(plain, x)[never], getattr(low, x)[never]), x


@pytest.mark.parametrize("spending", sq.SPENDING)
@pytest.mark.parametrize("kind, paired, delta, margin", [
    ("superiority", True, 0.0, 0.0), ("superiority", False, 0.0, 0.0), ("non-inferiority", False, -1.0, 1.0),
    ("two-sided", False, 0.0, 0.0), ("equivalence", True, 1.0, 1.0), ("equivalence", False, 1.0, 1.0),
])
def test_futility_only_lowers_the_type_one_error_and_saves_seeds_under_the_null(spending, kind, paired, delta,
                                                                               margin):
    """Non-binding: on the same draws every procedure that holds with the futility stop holds
    without it (the boundaries are the same), so the type-I error can only fall; the mean seeds
    under the null fall."""
    sims = 4000
    values = [sq.draw(np.random.default_rng(23), sims, 12, delta, paired)]
    h = sq.Hypothesis(1, "a", "b", kind, 1, margin, paired)
    with_ = sq.decide_arrays(sq.Design((3, 5, 8, 12), spending=spending), [h], values)
    without = sq.decide_arrays(sq.Design((3, 5, 8, 12), spending=spending, futility=None), [h], values)
    held, held_plain = with_.status[:, 0] == sq.HOLDS, without.status[:, 0] == sq.HOLDS
    assert not np.any(held & ~held_plain)
    assert held.mean() <= held_plain.mean() <= 0.05 + 4 * math.sqrt(0.05 * 0.95 / sims)
    assert with_.seeds(0).mean() < without.seeds(0).mean() - 1  # at least one seed per side saved on average


def test_a_futile_claim_gets_no_seeds_but_its_shared_row_does():
    """Claim 1 (A against base, no difference: t = 0) stops for futility at look 1; claim 2 (B
    against base) is open: the plan names B and base, not A."""
    base = seeds([0.0, 0.1, -0.1])
    a = seeds([0.0, 0.11, -0.11])
    b = seeds([1.0, 1.5, 0.8])
    hyps = [sq.Hypothesis(1, "A", "base", "superiority"), sq.Hypothesis(2, "B", "base", "superiority")]
    out = sq.decide(DESIGN, hyps, [(a, base), (b, base)])
    assert out[0].looks[0].statistic[0] == pytest.approx(0.0, abs=1e-9)
    assert out[0].verdict == sq.FOR_FUTILITY and out[0].stop_look == 1 and out[0].next_seeds is None
    assert not out[0].holds and not out[0].is_open and out[0].low < 0 < out[0].high  # inconclusive, with its interval
    assert out[0].looks[0].futility == sq.FUTILITY and out[0].looks[0].verdict == sq.FOR_FUTILITY
    assert out[1].verdict == "continue" and out[1].looks[0].statistic[0] >= sq.FUTILITY
    assert sq.plan(DESIGN, out) == sq.Plan((2,), 2, 5, {"B": 2, "base": 2})
    # once B holds, the futile claim is not re-tested at the higher Holm level: it keeps its verdict
    more_b, more_base = seeds([1.0, 1.5, 0.8, 1.2, 1.1]), seeds([0.0, 0.1, -0.1, 0.05, -0.05])
    later = sq.decide(DESIGN, hyps, [(a, more_base), (more_b, more_base)])
    assert later[0].verdict == sq.FOR_FUTILITY and later[0].level == pytest.approx(0.025)


def test_results_without_the_futility_fields_still_load():
    """JSON stored before futility stopping: no `stop_look` (a decided result gets its last
    look), no `t_futility` (None), a design without `futility` (none)."""
    rng = np.random.default_rng(24)
    a, b = seeds(rng.normal(3, 1, 12)), seeds(rng.normal(0, 1, 12))
    r = sq.decide(PLAIN, [sq.Hypothesis(1, "a", "b", "superiority")], [(a, b)])[0]
    assert r.verdict == "holds" and r.stop_look == len(r.looks)
    old = r.to_json()
    del old["stop_look"]
    for lk in old["looks"]:
        del lk["t_futility"]
    back = sq.SequentialResult.from_json(json.loads(json.dumps(old)))
    assert back == r and back.stop_look == len(r.looks)
    design = DESIGN.to_json()
    assert design["futility"] == sq.FUTILITY and sq.Design.from_json(design) == DESIGN
    del design["futility"]
    assert sq.Design.from_json(design).futility is None


@pytest.mark.parametrize("futility, message", [(math.inf, "futility inf"), ("high", "futility 'high'"),
                                               (True, "futility True")])
def test_a_bad_futility_threshold_is_refused(futility, message):
    with pytest.raises(ValueError, match=message):
        sq.Design((3, 5), futility=futility)


def test_a_claim_held_through_a_raised_holm_level_names_the_look_that_crossed():
    # claim 2 (t 5.10 at look 1) misses its look-1 boundary at α/2; claim 1 holds at look 2, claim 2
    # is re-tested at α over looks 1-2 and holds on look 1's t: the result says so, the output too
    from harness.report.decide import TableDecision, lines

    d = sq.Design((3, 5, 8), 0.05, "pocock", None)
    h1 = sq.Hypothesis(1, "a", "c", "superiority", 1, 0.0, True)
    h2 = sq.Hypothesis(2, "b", "c", "superiority", 1, 0.0, True)
    c = {i: 0.0 for i in range(5)}
    a = {0: 1.0, 1: 1.2, 2: 0.3, 3: 1.1, 4: 1.0}
    b = {0: 1.0, 1: 1.4, 2: 0.7, 3: -1.5, 4: -0.9}
    r1, r2 = sq.decide(d, [h1, h2], [(a, c), (b, c)])
    assert r1.verdict == "holds" and r1.crossed_look is None
    look1 = r2.looks[0]
    assert look1.verdict == "continue" and look1.statistic[0] < look1.boundary  # missed at α/2
    assert r2.verdict == "holds" and r2.stop_look == 2 and r2.level == pytest.approx(0.05)
    assert r2.crossed_look == 1 and look1.statistic[0] >= r2.crossed_boundary
    assert r2.crossed_boundary == pytest.approx(float(d.bounds(0.05, True)[0]))
    assert sq.SequentialResult.from_json(json.loads(json.dumps(r2.to_json()))) == r2
    claims = [Claim(row="a", vs="c", metric="ap50", expect="better"), Claim(row="b", vs="c", metric="ap50", expect="better")]
    out = "\n".join(lines(TableDecision("t", d, claims, [r1, r2], sq.plan(d, [r1, r2]), list(range(8)), {}, {})))
    assert f"look 1's t crossed that level's boundary ±{r2.crossed_boundary:.2f}" in out


def test_an_untested_claim_has_no_interval():
    d = sq.Design((3, 5, 8))
    for paired, a, b in ((False, {0: .5, 1: .5, 2: .5}, {0: .4, 1: .41, 2: .42}),
                         (True, {0: .5, 1: .6, 2: .7}, {0: .4, 1: .5, 2: .6})):
        (r,) = sq.decide(d, [sq.Hypothesis(1, "r", "v", "superiority", 1, 0.0, paired)], [(a, b)])
        assert r.verdict == "untested" and r.low is None and r.high is None and not r.disjoint, r


def test_disjoint_repeated_intervals_are_flagged():
    # paired differences whose first 3 seeds nearly agree (a narrow look-1 interval) and whose
    # later looks move away from it: the looks' intervals do not intersect (found by simulation)
    from harness.report.decide import TableDecision, lines

    d = sq.Design((3, 5, 8, 12), 0.05, "pocock")
    h = sq.Hypothesis(1, "r", "v", "equivalence", 1, 1.0, True)
    a = [-1.2338, -1.9366, -1.2498, 2.2418, 0.0958, -0.4722, -2.1654, 0.3596, 0.1866, 0.5621, 0.5304, 3.3583]
    b = [-0.2447, -1.0073, -0.2966, 0.8776, -0.1013, -0.6055, -0.2392, -1.032, 0.1865, 0.9186, 1.0194, 1.815]
    (r,) = sq.decide(d, [h], [(dict(enumerate(a)), dict(enumerate(b)))])
    batch = sq.decide_arrays(d, [h], [(np.array([a]), np.array([b]))])
    last = r.stop_look
    lo, hi = sq.rci(batch.est[0], batch.se[0], d.bounds(r.level, True))
    assert lo[0, :last].max() > hi[0, :last].min()  # the looks' intervals miss each other
    assert r.disjoint and bool(batch.disjoint(0)[0])
    assert (r.low, r.high) == pytest.approx((lo[0, last - 1], hi[0, last - 1]))  # the last look's
    out = "\n".join(lines(TableDecision("t", d, [Claim(row="r", vs="v", metric="ap50", expect="equivalent", margin=1.0)],
                                        [r], sq.plan(d, [r]), list(range(12)), {}, {})))
    assert "the looks' intervals do not intersect: the last look's" in out
    (plain,) = sq.decide(d, [h], [({i: 0.1 * i for i in range(12)}, {i: 0.1 * i + 0.05 * (i % 3) for i in range(12)})])
    assert not plain.disjoint


def test_a_row_that_holds_its_share_of_a_paired_look_gets_no_cells():
    from harness.report.decide import TableDecision

    d = sq.Design((3, 5, 8), 0.05, "obrien_fleming", None)
    rng = np.random.default_rng(1)
    a = {i: float(rng.normal()) for i in range(8)}
    b = {i: float(rng.normal()) for i in range(5)}
    res = sq.decide(d, [sq.Hypothesis(1, "a", "b", "superiority", 1, 0.0, True)], [(a, b)])
    assert res[0].is_open
    td = TableDecision("t", d, [None], res, sq.plan(d, res), list(range(8)), {"a": 8, "b": 5}, {})
    assert td.next_cells() == {"b": [5, 6, 7]}


def test_the_boundaries_quoted_in_the_docs_are_the_codes():
    text = " ".join((Path(__file__).resolve().parents[2] / "docs" / "statistics.md").read_text().split())
    for spending in sq.SPENDING:
        for looks in ((3, 5, 8, 12), (4, 8, 12)):
            d = sq.Design(looks, 0.05, spending)
            for paired in (True, False):
                quoted = ", ".join(f"{c:.2f}" for c in d.bounds(0.05, paired))
                assert quoted in text, (spending, looks, paired, quoted)
