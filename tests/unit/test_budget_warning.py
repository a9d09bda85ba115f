"""An Undecided sequential check whose budget left cannot be expected to reach a verdict says so, in its status and
in one Warning event per rollout, and its verdict stays what it was."""

from datetime import timedelta

import numpy as np
import pytest

from modelops.analysis.evaluate import Measurement, budget_warning, evaluate, spend_budget
from modelops.analysis.sequential import Proportion, samples_to_within
from modelops.api.modeldeployment import Check, Verdict
from modelops.rollout import AnalysisReport
from modelops.rollout.values import rfc3339

from .rollout_sim import Sim, make_spec
from .sequential_sim import STABLE_SHARE, decisions

AT = "2026-01-01T00:00:00.000Z"
BAND = (0.75, 1.0)
"""The simulated median samples to "within", as a share of the estimate: the estimate is where the contrast's
expected value clears the bound, and the wandering contrast clears it a little sooner in half the rollouts."""
# (stable's rate, tolerance, higher is better, alpha, the candidate's samples a look)
ROWS = [(0.97, 0.01, True, 0.05, 100), (0.9, 0.02, True, 0.05, 50), (0.01, 0.1, False, 0.05, 3000),
        (0.9, 0.05, True, 0.01, 10)]


def _estimate(rate, tolerance, higher, alpha, stable_per_candidate=STABLE_SHARE):
    many = 1e9  # stable's rate known well: the simulation draws both versions at that rate
    return samples_to_within(Proportion(rate * many, many), tolerance=tolerance, higher_is_better=higher, alpha=alpha,
                             stable_per_candidate=stable_per_candidate)


def _median_to_within(rate, tolerance, higher, alpha, per_look, estimate):
    """Median candidate samples at which a candidate equal to stable is proven within, over 2,000 rollouts looked
    at every `per_look` samples up to four times the estimate (one not proven by then counts as never)."""
    simulated = decisions(rate, rate, tolerance=tolerance, higher_is_better=higher, alpha=alpha,
                          looks=int(4 * estimate / per_look) + 1, per_look=per_look, rollouts=2000, seed=7)
    return float(np.median(np.where(np.isnan(simulated.passed_samples), np.inf, simulated.passed_samples)))


@pytest.mark.parametrize("rate, tolerance, higher, alpha, per_look", ROWS)
def test_the_estimate_is_the_simulated_median_to_within_and_a_broken_estimate_is_not(rate, tolerance, higher, alpha,
                                                                                     per_look):
    estimate = _estimate(rate, tolerance, higher, alpha)
    median = _median_to_within(rate, tolerance, higher, alpha, per_look, estimate)
    assert BAND[0] * estimate <= median <= BAND[1] * estimate, (median, estimate)
    # Estimates that forget stable's noise, or take three times the alpha, come out too low for the simulation.
    for broken in (_estimate(rate, tolerance, higher, alpha, stable_per_candidate=1e12),
                   _estimate(rate, tolerance, higher, 3 * alpha)):
        assert median > BAND[1] * broken, (median, broken)


def test_no_tolerance_is_never_proven_within():
    assert _estimate(0.9, 0.0, True, 0.05) == float("inf")


def errors(**sequential) -> Check:
    return Check.model_validate({"name": "errors", "template": "errorRate", "maxIncreasePercent": 10,
                                 "sequential": sequential})


def first_minute(check: Check, per_second: float, weight: float = 0.1, seconds: float = 60):
    """An Undecided look after `seconds` of a candidate at `weight` of `per_second` requests, 1 % errors on both
    sides, with its budget spent as the engine spends it."""
    n_c, n_s = round(per_second * seconds * weight), round(per_second * seconds * (1 - weight))
    judged = evaluate(check, Measurement(0.01, 0.01, n_c, baseline_samples=n_s), AT)
    assert judged.verdict is Verdict.Undecided
    return spend_budget(check, judged, seconds, evidence_seconds=seconds, split=1)


def test_low_traffic_says_the_duration_cannot_reach_a_verdict_and_stays_undecided():
    """10 req/s, 10 % to the candidate: 60 of its requests a minute, 3,600 by the hour; about 140,000 needed."""
    status = first_minute(errors(), 10)
    assert status.verdict is Verdict.Undecided
    assert status.budget_warning is not None
    assert status.budget_warning.startswith("cannot reach a verdict within maxDuration 1h at this traffic: a candidate "
                                            "as good as stable needs about 140,000 samples")
    assert status.budget_warning.endswith(", about 3,600 expected; onBudget Pass will decide")
    assert status.message.endswith("; budget left: 59m of maxDuration 1h; " + status.budget_warning)
    fail = first_minute(errors(onBudget="Fail"), 10)
    assert fail.verdict is Verdict.Undecided and fail.budget_warning.endswith("onBudget Fail will decide")


def test_enough_traffic_says_nothing():
    """1,000 req/s, 10 % to the candidate: 6,000 a minute, 360,000 by the hour."""
    status = first_minute(errors(), 1000)
    assert status.verdict is Verdict.Undecided and status.budget_warning is None
    assert status.message.endswith("; budget left: 59m of maxDuration 1h")


def test_a_longer_duration_or_a_larger_share_reaches_it():
    assert first_minute(errors(maxDuration="48h"), 10).budget_warning is None
    # Half to each version: stable's noise weighs as much as the candidate's, so about 250,000 are needed.
    assert "about 250,000 samples" in first_minute(errors(), 100, weight=0.5).budget_warning  # 180,000 by the hour
    assert first_minute(errors(), 200, weight=0.5).budget_warning is None  # 360,000


def test_a_sample_budget_below_the_need_is_named():
    """Nine of stable's samples to each of the candidate's: about 120,000 needed."""
    status = first_minute(errors(maxSamples=20000), 1000)
    assert status.budget_warning == ("cannot reach a verdict within maxSamples 20000: a candidate as good as stable "
                                     "needs about 120,000 samples to be proven within the tolerance; onBudget Pass "
                                     "will decide")
    assert first_minute(errors(maxSamples=130000), 1000).budget_warning is None


def test_the_split_alpha_needs_more_samples():
    judged = evaluate(errors(), Measurement(0.01, 0.01, 6000, baseline_samples=54000), AT)
    alone, shared = (budget_warning(errors(maxSamples=130000), judged, 60, 60, split) for split in (1, 3))
    assert alone is None and shared is not None and "about 150,000 samples" in shared


def test_too_little_evidence_or_a_latency_check_says_nothing():
    check = errors()
    few = evaluate(check, Measurement(0.01, 0.01, 20, baseline_samples=200), AT)
    assert few.verdict is Verdict.Undecided and budget_warning(check, few, 60, 60, 1) is None
    assert budget_warning(check, evaluate(check, Measurement(0.01, 0.01, 600, baseline_samples=5400), AT), 60, 0, 1) \
        is None  # no evidence time yet (a grading delay not yet past)
    latency = Check.model_validate({"name": "p95", "template": "latencyP95", "maxIncreasePercent": 5,
                                    "sequential": {}})
    buckets = ((0.1, 5.0), (0.5, 50.0), (float("inf"), 60.0))
    judged = evaluate(latency, Measurement(0.2, 0.2, buckets=buckets, baseline_buckets=buckets), AT)
    assert judged.verdict is Verdict.Undecided and budget_warning(latency, judged, 60, 60, 1) is None


def test_one_warning_event_per_rollout_and_the_verdicts_unchanged():
    sim = Sim(make_spec(checks=[errors().model_dump(by_alias=True, exclude_none=True)], pause="10s",
                        analysis={"interval": "1m"}))
    sim.step()
    sim.spec = sim.spec.model_copy(update={"version": "1.1.0"})
    sim.step()
    starved = Measurement(0.01, 0.01, 600, baseline_samples=5400)  # a minute at 10 req/s, 10 % to the candidate
    for minute in range(1, 6):
        sim.now += timedelta(minutes=1)
        results = tuple(evaluate(c, starved, rfc3339(sim.now)) for c in sim.spec.analysis.checks)
        d = sim.step(AnalysisReport(sim.now, results))
        assert d.status.checks[0].verdict is Verdict.Undecided and d.status.checks[0].budget_warning
        assert d.status.checks[0].budget_warned
    warnings = [e for d in sim.decisions for e in d.events if e.reason == "BudgetTooSmall"]
    assert len(warnings) == 1 and warnings[0].type == "Warning" and warnings[0].version == "1.1.0"
    assert warnings[0].message.startswith("errors: cannot reach a verdict within maxDuration 1h at this traffic")
    assert sim.status.canary_weight == 10 and sim.status.consecutive_failures == 0
