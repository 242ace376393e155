"""The statistics behind a verdict: a difference of two arms with its confidence interval, a test of
the claim's direction against its declared margin, a correction for the number of claims, and how
many seeds an inconclusive comparison would need.

Everything here is plain arithmetic on lists of numbers (no records, no pandas), built on scipy's
t-tests and intervals, so that its calibration can be checked on simulated data where the truth is
known (``tests/disco_bench/test_stats.py``).

Conventions: ``diff`` is mean(left) − mean(right). The interval is two-sided at ``CONFIDENCE``; each
directional test is one-sided at ``ALPHA`` = (1 − CONFIDENCE) / 2, so "the lower bound exceeds the
margin" and "the one-sided test rejects" are the same event.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
ALPHA = (1 - CONFIDENCE) / 2  # one-sided level of each directional test
POWER = 0.8  # the power a "seeds needed" estimate aims at
MAX_SEEDS = 1000  # beyond this the estimate says "more than 1000"

PAIRED, WELCH, FIXED = "paired t", "Welch t", "one-sample t (other arm fixed)"

# rule -> how the claim reads in a table
RULE_SYMBOL = {"greater": ">", "less": "<", "non_inferior": "≥", "equivalent": "≈"}


@dataclass(frozen=True)
class Difference:
    """mean(left) − mean(right) with its interval and the test that gave it. The numeric fields are
    floats for one comparison, or arrays for a batch of them (``batch``: same arithmetic)."""

    diff: Any
    low: Any
    high: Any
    method: str  # PAIRED, WELCH or FIXED
    df: Any
    n_left: int
    n_right: int
    sd: Any  # the spread the interval was built from: of the paired differences, or pooled per arm

    def p_above(self, bound: float) -> Any:
        """One-sided p-value of H0: true diff ≤ bound against H1: true diff > bound."""
        return _p(self, bound, "greater")

    def p_below(self, bound: float) -> Any:
        """One-sided p-value of H0: true diff ≥ bound against H1: true diff < bound."""
        return _p(self, bound, "less")


def batch(left: np.ndarray, right: np.ndarray, method: str) -> Difference:
    """Comparisons of many pairs of arms at once: ``left`` (k, n) and ``right`` (k, m) hold k
    comparisons, one per row, by ``method`` (for FIXED, ``right`` is (k, 1): the fixed value).
    scipy's t-tests and intervals, vectorised over the rows."""
    a, b = np.atleast_2d(left).astype(float), np.atleast_2d(right).astype(float)
    if method == PAIRED:
        d = a - b
        res = stats.ttest_1samp(d, 0.0, axis=-1)
        ci = res.confidence_interval(CONFIDENCE)
        return Difference(
            d.mean(-1), ci.low, ci.high, PAIRED, res.df, a.shape[1], b.shape[1], d.std(-1, ddof=1)
        )
    if method == FIXED:
        fixed = b[:, 0]
        res = stats.ttest_1samp(a, fixed[:, None], axis=-1)  # one fixed value per row
        ci = res.confidence_interval(CONFIDENCE)  # of the left arm's mean: shift it by the fixed value
        sd = a.std(-1, ddof=1)
        return Difference(
            a.mean(-1) - fixed, ci.low - fixed, ci.high - fixed, FIXED, res.df, a.shape[1], 1, sd
        )
    res = stats.ttest_ind(a, b, axis=-1, equal_var=False)
    ci = res.confidence_interval(CONFIDENCE)
    pooled = np.sqrt((a.var(-1, ddof=1) + b.var(-1, ddof=1)) / 2)
    return Difference(a.mean(-1) - b.mean(-1), ci.low, ci.high, WELCH, res.df, a.shape[1], b.shape[1], pooled)


def _one(d: Difference, flip: bool = False) -> Difference:
    """The single comparison of a batch of one, as floats (``flip``: left and right swapped back)."""
    f = lambda x: float(np.asarray(x).reshape(-1)[0])  # noqa: E731
    if flip:
        return Difference(-f(d.diff), -f(d.high), -f(d.low), d.method, f(d.df), d.n_right, d.n_left, f(d.sd))
    return Difference(f(d.diff), f(d.low), f(d.high), d.method, f(d.df), d.n_left, d.n_right, f(d.sd))


def difference(left, right, pair_by: tuple[list, list] | None = None) -> Difference | None:
    """The difference of means with its ``CONFIDENCE`` interval, or None when no interval exists.

    ``pair_by``: the seeds of each arm's values. When both arms have the same seeds (each once) the
    values are paired by seed (paired t: the seed's shared initialisation, data order and
    augmentation draws cancel); otherwise Welch's t. An arm with a single value whose other arm has
    two or more is taken as a fixed reference (a one-sample t of the other arm against it): the
    comparison is then about that one checkpoint (a teacher), not about its method.
    """
    a, b = np.asarray(list(left), dtype=float), np.asarray(list(right), dtype=float)
    if len(a) == 0 or len(b) == 0 or (len(a) < 2 and len(b) < 2):
        return None
    if pair_by is not None and len(a) >= 2 and _pairable(*pair_by):
        order_a = np.argsort([str(s) for s in pair_by[0]], kind="stable")
        order_b = np.argsort([str(s) for s in pair_by[1]], kind="stable")
        return _one(batch(a[order_a][None], b[order_b][None], PAIRED))
    if len(b) == 1:
        return _one(batch(a[None], b[None], FIXED))
    if len(a) == 1:
        return _one(batch(b[None], a[None], FIXED), flip=True)
    return _one(batch(a[None], b[None], WELCH))


def _pairable(seeds_a: list, seeds_b: list) -> bool:
    return len(seeds_a) == len(set(seeds_a)) and sorted(map(str, seeds_a)) == sorted(map(str, seeds_b))


def _p(d: Difference, bound: float, alternative: str) -> Any:
    # the standard error the interval was built from (its half-width over the t quantile)
    se = (np.asarray(d.high) - np.asarray(d.low)) / 2 / stats.t.ppf(1 - ALPHA, d.df)
    gap = np.asarray(d.diff) - bound
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(se > 0, gap / np.where(se > 0, se, 1), np.sign(gap) * np.inf)
    p = stats.t.sf(t, d.df) if alternative == "greater" else stats.t.cdf(t, d.df)
    # no spread at all: the data decide with certainty (a tie is no evidence either way)
    p = np.where((se > 0) | (gap != 0), p, 1.0)
    return float(p) if np.ndim(p) == 0 else p


@dataclass(frozen=True)
class RuleTest:
    """A claim's two one-sided questions: does it hold (p_holds), is it refuted (p_fails)."""

    p_holds: float
    p_fails: float
    reading: str  # how "holds" and "does not hold" were decided, in words


def rule_test(d: Difference, rule: str, margin: float = 0.0) -> RuleTest:
    """The p-values of a rule with its declared margin (margin ≥ 0, in the metric's units).

    - ``greater``: holds if diff > margin; does not hold if diff < margin (direction or size refuted).
    - ``less``: holds if diff < −margin; does not hold if diff > −margin.
    - ``non_inferior`` (≥): holds if diff > −margin; does not hold if diff < −margin.
    - ``equivalent`` (≈, two one-sided tests): holds if −margin < diff < margin; does not hold if
      the difference lies outside the band on either side.
    """
    if rule == "greater":
        return RuleTest(d.p_above(margin), d.p_below(margin), f"lower bound > {margin:g}")
    if rule == "less":
        return RuleTest(d.p_below(-margin), d.p_above(-margin), f"upper bound < {-margin:g}")
    if rule == "non_inferior":
        return RuleTest(d.p_above(-margin), d.p_below(-margin), f"lower bound > {-margin:g}")
    if rule == "equivalent":
        holds = np.maximum(d.p_above(-margin), d.p_below(margin))
        fails = np.minimum(d.p_above(margin), d.p_below(-margin))
        return RuleTest(holds, fails, f"interval inside ±{margin:g}")
    raise ValueError(f"unknown rule {rule!r}")


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment (family-wise error at the level the adjusted values are read at):
    the k-th smallest of m p-values is multiplied by m − k + 1, then made non-decreasing."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def seeds_needed(d: Difference, rule: str, margin: float = 0.0, alpha: float = ALPHA) -> int | None:
    """Seeds per arm at which, if the observed difference and spread were the truth, the claim's
    test would reject at ``alpha`` with ``POWER``: None when the observed difference is on the
    wrong side of the margin (no number of seeds helps), ``MAX_SEEDS + 1`` beyond ``MAX_SEEDS``.
    (Passing ALPHA / m, the Bonferroni level of m tests, gives seeds that suffice under Holm's
    correction whatever the row's rank.)"""
    if rule == "greater":
        effect = d.diff - margin
    elif rule == "less":
        effect = -margin - d.diff
    elif rule == "non_inferior":
        effect = d.diff + margin
    elif rule == "equivalent":
        effect = margin - abs(d.diff)
    else:
        raise ValueError(f"unknown rule {rule!r}")
    if effect <= 0:
        return None
    if d.sd == 0:
        return 2
    # per-arm variance of one seed's contribution: paired and fixed use the spread of one sample,
    # Welch the two arms' (pooled) spread twice
    spread = d.sd**2 * (2 if d.method == WELCH else 1)
    # start a little below the normal approximation, then step up with the t distribution
    z = stats.norm.ppf(1 - alpha) + stats.norm.ppf(POWER)
    guess = math.ceil(spread * (z / effect) ** 2)
    if guess > MAX_SEEDS:
        return MAX_SEEDS + 1
    for n in range(max(2, guess - 2), MAX_SEEDS + 1):
        df = n - 1 if d.method != WELCH else 2 * n - 2
        se = math.sqrt(spread / n)
        critical = stats.t.ppf(1 - alpha, df)
        if rule == "equivalent":
            # both one-sided tests must reject: P(both) ≥ P(lower) + P(upper) − 1, each side's power
            # at its own distance from the band's edge
            power = sum(stats.nct.sf(critical, df, (margin + s * d.diff) / se) for s in (1, -1)) - 1
        else:
            power = stats.nct.sf(critical, df, effect / se)
        if power >= POWER:
            return n
    return MAX_SEEDS + 1
