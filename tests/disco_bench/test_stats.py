"""The statistics behind a verdict: intervals and p-values against hand-computed references, Holm's
adjustment by hand, and calibration on simulated comparisons where the truth is known (a fixed
generator; every rate below is over 2,000 simulated comparisons)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from disco_bench.claims import FAILS, HOLDS, INCONCLUSIVE, reproduced_on, verdicts
from disco_bench.stats import (
    ALPHA,
    FIXED,
    PAIRED,
    WELCH,
    batch,
    difference,
    holm,
    rule_test,
    seeds_needed,
)

SIMS = 2000


def test_welch_interval_by_hand():
    # a = 70, 72, 74 (sd 2), b = 60, 61, 62 (sd 1): se² = 4/3 + 1/3, Welch df = (5/3)² / ((4/3)²/2 + (1/3)²/2)
    d = difference([70, 72, 74], [60, 61, 62])
    se, df = math.sqrt(5 / 3), (5 / 3) ** 2 / ((4 / 3) ** 2 / 2 + (1 / 3) ** 2 / 2)
    assert d.method == WELCH and d.diff == pytest.approx(11.0) and d.df == pytest.approx(df)
    from scipy.stats import t

    half = t.ppf(0.975, df) * se
    assert (d.low, d.high) == (pytest.approx(11 - half), pytest.approx(11 + half))
    assert d.p_above(0) == pytest.approx(t.sf(11 / se, df))


def test_pairs_are_matched_by_seed_not_by_position():
    # right 60, 62, 64 for seeds 0, 1, 2: every difference is 10 (sd 0)
    d = difference([70, 72, 74], [60, 62, 64], pair_by=([0, 1, 2], [0, 1, 2]))
    assert d.method == PAIRED and d.diff == pytest.approx(10.0) and d.sd == pytest.approx(0.0)
    # the same values listed for seeds 2, 1, 0: differences 70-64, 72-62, 74-60 = 6, 10, 14 (sd 4)
    d = difference([70, 72, 74], [60, 62, 64], pair_by=([0, 1, 2], [2, 1, 0]))
    assert d.diff == pytest.approx(10.0) and d.sd == pytest.approx(4.0)
    half = 4.302652729749464 * 4 / math.sqrt(3)  # t(0.975, 2) × sd / √n
    assert (d.low, d.high) == (pytest.approx(10 - half), pytest.approx(10 + half))
    assert difference([1, 2], [1, 2, 3], pair_by=([0, 1], [0, 1, 2])).method == WELCH  # other seeds: Welch


def test_a_single_checkpoint_is_a_fixed_reference_on_either_side():
    left = difference([80], [60, 61, 62])
    right = difference([60, 61, 62], [80])
    assert left.method == right.method == FIXED
    assert (left.diff, left.low, left.high) == pytest.approx((-right.diff, -right.high, -right.low))
    half = 4.302652729749464 * 1 / math.sqrt(3)
    assert (left.low, left.high) == (pytest.approx(19 - half), pytest.approx(19 + half))
    assert difference([80], [60]) is None  # one value each: no interval


@pytest.mark.parametrize(
    ("rule", "margin", "left", "right", "holds", "fails"),
    [
        ("greater", 0, (70, 72, 74), (60, 61, 62), True, False),
        ("greater", 0, (60, 61, 62), (70, 72, 74), False, True),
        ("greater", 20, (70, 72, 74), (60, 61, 62), False, True),  # better, but by less than 20
        ("less", 0, (60, 61, 62), (70, 72, 74), True, False),
        ("non_inferior", 2, (71.9, 72, 72.1), (72.4, 72.5, 72.6), True, False),  # −0.5 with a margin of 2
        ("non_inferior", 2, (60, 61, 62), (70, 72, 74), False, True),
        ("equivalent", 2, (71.9, 72, 72.1), (71.8, 72, 72.2), True, False),
        ("equivalent", 2, (60, 61, 62), (70, 72, 74), False, True),
    ],
)
def test_each_rule_reads_its_margin(rule, margin, left, right, holds, fails):
    t = rule_test(difference(left, right), rule, margin)
    assert (t.p_holds < ALPHA, t.p_fails < ALPHA) == (holds, fails)


def test_holm_by_hand():
    # sorted 0.01, 0.02, 0.03, 0.5 -> ×4, ×3, ×2, ×1 = 0.04, 0.06, 0.06, 0.5 (made non-decreasing)
    assert holm([0.03, 0.5, 0.01, 0.02]) == pytest.approx([0.06, 0.5, 0.04, 0.06])
    assert holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])  # 0.8 × 2 caps at 1; the larger may not be smaller
    assert verdicts([0.001, 0.02, 0.9], [0.9, 0.9, 0.001]) == (
        [HOLDS, INCONCLUSIVE, FAILS],
        pytest.approx([0.003, 0.04, 0.9]),
        pytest.approx([1.0, 1.0, 0.003]),
    )


def test_seeds_needed_grows_with_noise_and_is_none_on_the_wrong_side():
    small = seeds_needed(difference([1.0, 1.2, 1.1], [0.0, 0.1, 0.2]), "greater")
    large = seeds_needed(difference([1.0, 3.0, -1.0], [0.0, 1.0, -1.0]), "greater")
    assert 2 <= small < large
    assert seeds_needed(difference([0.0, 0.1, 0.2], [1.0, 1.2, 1.1]), "greater") is None
    # the estimate is the n at which the t-test's power reaches 80 %: check it by simulation
    d = difference([0.0, 1.0, 2.0, 3.0], [0.0, 0.0, 0.0, 0.0])  # Welch: diff 1.5, sd 1.29 / 0
    n = seeds_needed(d, "greater")
    rng = np.random.default_rng(7)
    spread = d.sd  # Welch's pooled per-arm spread, which the estimate assumed for each arm
    a = rng.normal(d.diff, spread, size=(SIMS, n))
    b = rng.normal(0.0, spread, size=(SIMS, n))
    power = float(np.mean(batch(a, b, WELCH).p_above(0.0) < ALPHA))
    assert 0.75 <= power <= 0.9


# --- calibration -----------------------------------------------------------------------------------


def _arms(rng, n: int, true_diff: float, paired: bool) -> tuple[np.ndarray, np.ndarray]:
    """SIMS comparisons of two arms of n seeds; a seed's shared part (initialisation, data order)
    moves both arms of a paired design alike."""
    shared = rng.normal(0.0, 1.0, size=(SIMS, n)) if paired else 0.0
    left = shared + rng.normal(true_diff, 1.0, size=(SIMS, n))
    right = shared + rng.normal(0.0, 1.0, size=(SIMS, n))
    return left, right


@pytest.mark.parametrize("paired", [False, True], ids=["welch", "paired"])
@pytest.mark.parametrize("n", [3, 10])
def test_with_no_true_difference_greater_holds_at_most_5_percent(n, paired):
    left, right = _arms(np.random.default_rng(100 + n), n, 0.0, paired)
    d = batch(left, right, PAIRED if paired else WELCH)
    rate = float(np.mean(rule_test(d, "greater").p_holds < ALPHA))
    assert rate <= 0.05


@pytest.mark.parametrize("paired", [False, True], ids=["welch", "paired"])
def test_with_no_true_difference_reproduced_on_two_datasets_at_most_1_percent(paired):
    rng = np.random.default_rng(11)
    method = PAIRED if paired else WELCH
    on_a = rule_test(batch(*_arms(rng, 3, 0.0, paired), method), "greater")
    on_b = rule_test(batch(*_arms(rng, 3, 0.0, paired), method), "greater")
    reproduced = 0
    for pa, fa, pb, fb in zip(on_a.p_holds, on_a.p_fails, on_b.p_holds, on_b.p_fails, strict=True):
        found, _, _ = verdicts([pa, pb], [fa, fb])  # one claim on two datasets: a board of two rows
        reproduced += reproduced_on(dict(zip("ab", found, strict=True)))
    assert reproduced / SIMS <= 0.01


@pytest.mark.parametrize(("paired", "n"), [(False, 20), (True, 40)], ids=["welch-20", "paired-40"])
def test_a_true_difference_of_three_standard_errors_holds_at_least_80_percent(paired, n):
    """Three standard errors of the difference: σ√(2/n) for Welch's two independent arms, σ_d/√n for
    pairs (σ_d = √2 here). The t-test's power at three standard errors grows with its degrees of
    freedom: about 39 % at 3 seeds (df 2), 76-81 % at 10, 81-83 % from 20 Welch / 40 paired."""
    se = math.sqrt(2 / n)
    left, right = _arms(np.random.default_rng(200 + n), n, 3 * se, paired)
    d = batch(left, right, PAIRED if paired else WELCH)
    assert float(np.mean(rule_test(d, "greater").p_holds < ALPHA)) >= 0.80


@pytest.mark.parametrize(("paired", "n"), [(True, 3), (True, 10), (False, 10), (False, 3)])
def test_the_interval_covers_the_true_difference_95_percent(n, paired):
    """Paired and one-sample intervals are exact t intervals; Welch's is approximate and, with 3 seeds
    per arm of equal spread, conservative (it covers about 96.5 %: its degrees of freedom are
    underestimated), which errs towards "inconclusive", never towards a false verdict."""
    true = 1.7
    left, right = _arms(np.random.default_rng(300 + n), n, true, paired)
    d = batch(left, right, PAIRED if paired else WELCH)
    coverage = float(np.mean((d.low <= true) & (true <= d.high)))
    if paired or n >= 10:
        assert abs(coverage - 0.95) <= 0.015
    else:
        assert 0.95 - 0.015 <= coverage <= 0.975


def test_the_one_sample_interval_against_a_fixed_teacher_covers_95_percent():
    """A teacher checkpoint is a fixed value: the interval is the other arm's mean's, shifted by it."""
    rng = np.random.default_rng(301)
    teacher = np.full((SIMS, 1), 80.0)
    for n in (3, 10):
        students = rng.normal(70.0, 2.0, size=(SIMS, n))
        d = batch(students, teacher, FIXED)
        assert d.diff.shape == (SIMS,)
        coverage = float(np.mean((d.low <= -10.0) & (d.high >= -10.0)))
        assert abs(coverage - 0.95) <= 0.015


def test_seeds_needed_for_equivalence_reach_80_percent_power_with_both_sides():
    """Equivalence needs both one-sided tests to reject: at a difference near 0 each side alone has
    more power than the pair, so the estimate must be the pair's (checked by simulation)."""
    d = difference([0.0, 0.5, -0.5, 0.2, -0.2], [0.1, 0.5, -0.5, 0.2, -0.2])  # Welch: diff -0.02
    n = seeds_needed(d, "equivalent", 1.0)
    rng = np.random.default_rng(17)
    a = rng.normal(d.diff, d.sd, size=(SIMS, n))
    b = rng.normal(0.0, d.sd, size=(SIMS, n))
    power = float(np.mean(rule_test(batch(a, b, WELCH), "equivalent", 1.0).p_holds < ALPHA))
    assert 0.78 <= power <= 0.95
    # one seed fewer falls short: the estimate is the smallest that reaches it
    a, b = a[:, : n - 1], b[:, : n - 1]
    assert float(np.mean(rule_test(batch(a, b, WELCH), "equivalent", 1.0).p_holds < ALPHA)) < 0.8


def test_equivalence_needs_both_sides_inside_the_margin():
    rng = np.random.default_rng(5)
    left, right = _arms(rng, 10, 0.0, False)
    d = batch(left, right, WELCH)
    # a true difference of 0 well inside ±2 (σ 1, 10 seeds): equivalence shown almost always
    assert float(np.mean(rule_test(d, "equivalent", 2.0).p_holds < ALPHA)) >= 0.9
    # a true difference exactly at the margin: equivalence claimed at most 5 % of the time
    left, right = _arms(rng, 10, 2.0, False)
    assert float(np.mean(rule_test(batch(left, right, WELCH), "equivalent", 2.0).p_holds < ALPHA)) <= 0.05
