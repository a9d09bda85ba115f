"""Counts that vary more from one interval to the next than independent samples would (errors in bursts): a
sequential check's variance allows for the spread it has seen, never below the binomial one, and the spread
survives a look that measured nothing."""

from __future__ import annotations

import numpy as np
import pytest

from modelops.analysis.evaluate import Measurement, evaluate
from modelops.analysis.sequential import Proportion, fold

from .undecided_sim import AT, Bursts, Scenario, documented_check, rolled_back

pytestmark = pytest.mark.statistics

ROLLOUTS = 4000
HEALTHY = Scenario("errors 1 % = 1 %, 1,000 req/s", "errors", 1000, 0.01, 0.01)
WORSE = Scenario("errors 1 % -> 3 %, 1,000 req/s", "errors", 1000, 0.01, 0.03)
BURSTS = Bursts(chance=0.01, factor=10.0)
"""A tenfold error rate in 1 % of minutes, each version's minutes on their own."""


def folded(hits: np.ndarray, totals: np.ndarray):
    intervals = None
    for h, n in zip(hits.cumsum(), totals.cumsum()):
        intervals = fold(intervals, float(h), float(n))
    return intervals


def test_the_spread_is_the_batch_means_variance_of_the_rate():
    rng = np.random.default_rng(7)
    totals = rng.integers(100, 5000, size=40)
    hits = rng.binomial(totals, 0.02) * rng.choice([1, 10], p=[0.9, 0.1], size=40)
    intervals = folded(hits, totals)
    p = hits.sum() / totals.sum()
    direct = 40 / 39 * ((hits - p * totals) ** 2).sum() / totals.sum() ** 2
    assert intervals.looks == 40
    assert intervals.rate_variance(float(totals.sum())) == pytest.approx(direct, rel=1e-9)


def test_the_variance_is_the_binomial_one_without_spread_and_never_below_it():
    totals = np.full(30, 1000)
    even = folded(totals // 100, totals)  # exactly 1 % every interval: no spread at all
    binomial = Proportion(300, 30000).variance_term
    assert even.rate_variance(30000) == pytest.approx(0.0, abs=1e-15)
    assert Proportion(300, 30000, even).variance_term == binomial
    bursty = folded(np.array([10] * 29 + [1000]), totals)
    assert Proportion(1290, 30000, bursty).variance_term > 20 * Proportion(1290, 30000).variance_term
    assert Proportion(1290, 30000, folded(np.array([10]), np.array([1000]))).variance_term == pytest.approx(
        Proportion(1290, 30000).variance_term)  # one interval shows no spread: binomial


def test_a_look_without_new_samples_adds_no_interval_but_moves_the_next_ones_start():
    intervals = fold(fold(None, 10, 1000), 20, 2000)
    same = fold(intervals, 20, 2000)
    assert same == intervals
    lower = fold(intervals, 5, 500)  # counts that went back: nothing to count, the next interval starts there
    assert (lower.looks, lower.hits, lower.total, lower.sum_total) == (2, 5, 500, 2000)
    assert fold(lower, 15, 1500).sum_total == 3000


def test_a_sequential_check_carries_its_intervals_across_looks_that_measured_nothing():
    check = documented_check("errors")
    first = evaluate(check, Measurement(0.01, 0.01, 1000, baseline_samples=9000), AT)
    assert first.candidate_intervals.looks == first.stable_intervals.looks == 1
    failed = evaluate(check, Measurement(None, error="timeout"), AT, first)
    empty = evaluate(check, Measurement(None), AT, failed)
    assert (empty.candidate_intervals, empty.stable_intervals) == (first.candidate_intervals, first.stable_intervals)
    second = evaluate(check, Measurement(0.02, 0.01, 2000, baseline_samples=18000), AT, empty)
    assert second.candidate_intervals.looks == 2
    assert (second.candidate_intervals.hits, second.candidate_intervals.sum_hits_squared) == pytest.approx(
        (40, 10 ** 2 + 30 ** 2))
    threshold = check.model_copy(update={"sequential": None})
    assert evaluate(threshold, Measurement(0.01, 0.01, 1000, baseline_samples=9000), AT, first).candidate_intervals is None


@pytest.fixture(scope="module")
def bursty_rollouts():
    """The documented errors check over whole rollouts with bursty errors on both versions."""
    return {"healthy": rolled_back(HEALTHY.run(ROLLOUTS, 11, bursts=BURSTS)),
            "worse": rolled_back(WORSE.run(ROLLOUTS, 12, bursts=BURSTS)),
            "healthy, binomial variance": rolled_back(HEALTHY.run(ROLLOUTS, 13, bursts=BURSTS, binomial_only=True))}


def test_bursty_errors_roll_a_healthy_candidate_back_rarely_and_a_worse_one_always(bursty_rollouts):
    assert bursty_rollouts["healthy"] <= 0.05
    assert bursty_rollouts["worse"] >= 0.95


def test_the_binomial_variance_alone_rolls_healthy_bursty_candidates_back(bursty_rollouts):
    """The same bound fails without the intervals' spread: the simulation can tell the two apart."""
    assert bursty_rollouts["healthy, binomial variance"] > 0.05
