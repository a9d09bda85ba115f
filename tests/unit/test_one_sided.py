"""The one-sided bounds of the sequential checks: the closed-form boundary against the exact mixture, its coverage,
and the error rates of whole simulated rollouts at the tolerated edge (false rollback at most alpha / 2, false
"within" at most alpha), on a long horizon, for rare events, for several checks at once and for latencies (narrow ones,
and a regression of the tail alone); with alpha tripled the same assertions fail. Fixed seeds, 4,000 rollouts a
row."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.stats import sprt_samples
from modelops.analysis.evaluate import Measurement, alpha_split, evaluate, sequential_checks
from modelops.analysis.sequential import WITHIN_MIXING, WORSE_MIXING, boundary, tail_above
from modelops.api.modeldeployment import Check, Verdict

from . import sequential_sim as sim

pytestmark = pytest.mark.statistics

ALPHA = 0.05
AT = "2026-01-01T00:00:00.000Z"


# --- the boundary ----------------------------------------------------------------------------------------------

def mixture(s: float, n: float, rho: float) -> float:
    """The half-normal mixture of exp(l s - l^2 n / 2) over l >= 0, precision rho: the exact one-sided mixture."""
    total = n + rho
    x = s / math.sqrt(total)
    return 2 * math.sqrt(rho / total) * math.exp(x * x / 2) * 0.5 * (1 + math.erf(x / math.sqrt(2)))


@pytest.mark.parametrize("rho", [WORSE_MIXING, WITHIN_MIXING])
@pytest.mark.parametrize("alpha", [0.2, 0.05, 0.01, 0.001])
def test_the_closed_form_boundary_lies_just_beyond_the_exact_mixtures(alpha, rho):
    for n in (1, 10, 50, 1_000, 10**6):
        crossing = boundary(n, alpha, rho) * math.sqrt(n)  # the bound on the sum: z(n) standard errors of n samples
        assert mixture(crossing, n, rho) >= 1 / alpha  # so the chance of ever reaching it is at most alpha (Ville)
        assert mixture(0.85 * crossing, n, rho) < 1 / alpha  # and not far beyond the exact boundary


def test_a_random_walk_crosses_the_boundary_at_most_alpha_of_the_time_and_with_alpha_tripled_more():
    rng = np.random.default_rng(5)
    sums = rng.standard_normal((4000, 3000), dtype=np.float32).cumsum(axis=1)
    n = np.arange(1, 3001)

    def crossed(alpha: float, rho: float) -> float:
        edge = np.array([boundary(k, alpha, rho) for k in n]) * np.sqrt(n)
        return float((sums >= edge).any(axis=1).mean())

    for rho in (WORSE_MIXING, WITHIN_MIXING):
        assert crossed(ALPHA, rho) <= ALPHA
        assert crossed(3 * ALPHA, rho) > ALPHA


# --- whole rollouts at the tolerated edge -------------------------------------------------------------------------

EDGE_ROWS = {
    # name: stable's rate, the candidate's, keyword arguments of sim.decisions
    "accuracy 0.90 at a 2 % drop, 1,000 looks": (0.90, 0.90 * 0.98, dict(tolerance=0.02, higher_is_better=True,
                                                                         looks=1000)),
    "error rate 0.1 % at a 10 % increase, 1,000 looks of 500": (0.001, 0.0011, dict(
        tolerance=0.10, higher_is_better=False, looks=1000, per_look=500)),
    "error rate 0.02 % at a 10 % increase, 1,000 looks of 500": (0.0002, 0.00022, dict(
        tolerance=0.10, higher_is_better=False, looks=1000, per_look=500)),
    "three accuracy checks, each at a 2 % drop, 300 looks": (0.90, 0.90 * 0.98, dict(
        tolerance=0.02, higher_is_better=True, looks=300, checks=3)),
}
BETTER_ROWS = {
    "accuracy 0.90 = 0.90, tolerance 2 %, 1,000 looks": (0.90, 0.90, dict(tolerance=0.02, higher_is_better=True,
                                                                          looks=1000)),
}

# Latency: log-normal requests with a median of 100 ms. Narrow ones in buckets 10 % apart (the usual layouts have no
# bound near their p95, which evaluate refuses); "at the edge" is a candidate whose share above every bound is 1.1x
# stable's, so exactly at a 10 % tolerance whichever bound the check picks. 200 looks of 150 requests.
NARROW = {sigma: sim.bucket_probabilities(sim.FINE_BUCKETS, 0.1, sigma) for sigma in (0.1, 0.2)}
WIDE = sim.bucket_probabilities(sim.PROMETHEUS_BUCKETS, 0.1, 0.5)
LATENCY = dict(quantile=0.95, tolerance=0.10, looks=200, per_look=150)
LATENCY_EDGE_ROWS = {
    f"latency p95, sigma {sigma}, 10 % more requests above every bound, tolerance 10 %, 200 looks":
        (NARROW[sigma], sim.tail_scaled(NARROW[sigma], 1.1), LATENCY) for sigma in (0.1, 0.2)
}
LATENCY_BETTER_ROWS = {
    "latency p95, sigma 0.5 in the default buckets, equal, tolerance 10 %, 200 looks": (WIDE, WIDE, LATENCY),
}


def broken_promises(rows: dict, alpha: float, *, edge: bool, simulate=sim.decisions, seed: int = 0) -> list[str]:
    """The rows whose rollouts, judged with bounds at `alpha`, break the promises made for ALPHA: a false rollback
    at most ALPHA / 2, and (at the edge) a false "within" at most ALPHA. `simulate`: sim.decisions (rows of rates)
    or sim.latency_decisions (rows of bucket chances)."""
    broken = []
    for offset, (name, (stable, candidate, options)) in enumerate(rows.items()):
        found = simulate(stable, candidate, alpha=alpha, rollouts=4000, seed=seed + offset, **options)
        if found.rolled_back > ALPHA / 2 or (edge and found.passed > ALPHA):
            broken.append(f"{name}: rolled back {found.rolled_back:.2%}, passed {found.passed:.2%}")
    return broken


def test_at_the_edge_a_candidate_is_rolled_back_at_most_half_alpha_and_passed_at_most_alpha_of_the_time():
    assert broken_promises(EDGE_ROWS, ALPHA, edge=True) == []
    assert broken_promises(BETTER_ROWS, ALPHA, edge=False) == []


def test_at_the_latency_edge_the_same_promises_hold():
    latency = sim.latency_decisions
    assert broken_promises(LATENCY_EDGE_ROWS, ALPHA, edge=True, simulate=latency, seed=10) == []
    assert broken_promises(LATENCY_BETTER_ROWS, ALPHA, edge=False, simulate=latency, seed=20) == []


def test_with_alpha_tripled_the_same_promises_are_broken():
    """The suite can fail: bounds three times too loose break it on the long horizon, with several checks and for
    narrow latencies."""
    broken = broken_promises(EDGE_ROWS, 3 * ALPHA, edge=True)
    assert any(name.startswith("accuracy 0.90 at a 2 % drop, 1,000 looks") for name in broken), broken
    assert any(name.startswith("three accuracy checks") for name in broken), broken
    narrowest = dict(list(LATENCY_EDGE_ROWS.items())[:1])
    broken = broken_promises(narrowest, 3 * ALPHA, edge=True, simulate=sim.latency_decisions, seed=10)
    assert len(broken) == 1 and broken[0].startswith("latency p95, sigma 0.1,"), broken


def test_a_tail_only_regression_is_caught():
    """The slowest 10 % of requests 3x slower, the median unchanged: the p95 check rolls it back."""
    slower = sim.bucket_probabilities(sim.PROMETHEUS_BUCKETS, 0.1, 0.5, tail=0.10, tail_factor=3.0)
    found = sim.latency_decisions(WIDE, slower, quantile=0.95, tolerance=0.10, alpha=ALPHA, looks=60, rollouts=4000,
                                  seed=30)
    assert found.rolled_back >= 0.95


def test_the_simulated_tails_are_what_tail_above_reads():
    rng = np.random.default_rng(31)
    sizes = rng.integers(30, 3000, size=(2, 200))  # from few requests, where the bound picked varies, to many
    below_c = rng.multinomial(sizes[0], sim.tail_scaled(NARROW[0.2], 1.1)).cumsum(axis=1).astype(float)
    below_s = rng.multinomial(sizes[1], NARROW[0.2]).cumsum(axis=1).astype(float)
    chosen, above_c, above_s = sim.tails(below_c, below_s, 0.95)
    assert len(set(chosen.tolist())) > 1
    for r in range(200):
        tail = tail_above(tuple(zip(sim.FINE_BUCKETS, below_c[r])), tuple(zip(sim.FINE_BUCKETS, below_s[r])), 0.95)
        assert (tail.bound, tail.candidate.hits, tail.stable.hits) == (sim.FINE_BUCKETS[chosen[r]], above_c[r],
                                                                      above_s[r])


# --- missed detections and speed --------------------------------------------------------------------------------

@pytest.mark.parametrize("stable, candidate, tolerance, higher", [(0.97, 0.92, 0.01, True), (0.01, 0.03, 0.10, False)],
                         ids=["accuracy 0.97 -> 0.92", "errors 1 % -> 3 %"])
def test_a_worse_candidate_is_rolled_back_within_one_and_a_half_times_walds_sprt(stable, candidate, tolerance, higher):
    ideal = sprt_samples(stable, candidate, tolerance=tolerance, higher_is_better=higher,
                         stable_per_candidate=sim.STABLE_SHARE)
    found = sim.decisions(stable, candidate, tolerance=tolerance, higher_is_better=higher, alpha=ALPHA,
                          looks=math.ceil(5 * ideal), per_look=1, rollouts=4000, seed=7)
    assert found.rolled_back >= 1 - ALPHA
    assert np.nanmedian(found.samples) <= 1.5 * ideal


def test_a_healthy_candidate_is_proven_within_on_a_long_horizon():
    found = sim.decisions(0.90, 0.90, tolerance=0.02, higher_is_better=True, alpha=ALPHA, looks=1000,
                          rollouts=4000, seed=8)
    assert found.passed >= 0.95


# --- several checks --------------------------------------------------------------------------------

ERRORS = {"name": "errors", "template": "errorRate", "maxIncreasePercent": 10, "sequential": {}}


def test_alpha_is_split_over_the_sequential_checks_that_decide_the_analysis():
    checks = [Check.model_validate({**ERRORS, "name": name}) for name in ("a", "b", "c")]
    dry = Check.model_validate({**ERRORS, "name": "tried", "dryRun": True})
    plain = Check.model_validate({"name": "p", "query": "q", "max": 1})
    assert sequential_checks(checks + [dry, plain]) == 3
    assert [alpha_split(c, 3) for c in (checks[0], dry)] == [3, 4]
    assert alpha_split(checks[0], 0) == 1
    # Worse at one check's 95 %, not at 98.33 %: the split says so, and the verdict follows it.
    measured = Measurement(0.022, 0.01, 2000, baseline_samples=8000)
    alone = evaluate(checks[0], measured, AT)
    shared = evaluate(checks[0], measured, AT, sequential_checks=3)
    assert alone.verdict is Verdict.Fail and "with 95% confidence, 2000" in alone.message
    assert shared.verdict is Verdict.Undecided
    assert evaluate(checks[0], Measurement(0.03, 0.01, 2000, baseline_samples=8000), AT, sequential_checks=3).message \
        .endswith("more than 10% above stable, with 98.3333% confidence (95% split over 3 sequential checks), "
                  "2000 and 8000 samples")

