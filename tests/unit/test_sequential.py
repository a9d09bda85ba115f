"""Sequential comparisons with stable: their error rates over simulated rollouts, the histogram statistic's
properties, and what a sequential check's verdict says."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, strategies as st

from modelops.analysis.evaluate import Measurement, evaluate, limit_bounds
from modelops.analysis.measure import measure
from modelops.analysis.promql import Subject, TemplateQuery
from modelops.analysis.sequential import (MIN_SAMPLES, Finding, Proportion, Unresolvable, compare_proportions,
                                          samples_to_locate, tail_above)
from modelops.api.modeldeployment import Check, CheckTemplate, ModelDeploymentSpec, ModelDeploymentStatus, Verdict
from modelops.rollout import check_window

from . import sequential_sim as sim

AT = "2026-01-01T00:00:00.000Z"


@pytest.fixture(scope="module")
def simulated():
    summaries = {s.scenario: s for s in sim.report()}
    print("\n" + "\n".join(s.line() for s in summaries.values()))
    return summaries


@pytest.mark.statistics
def test_equal_versions_are_rolled_back_at_most_one_minus_confidence_of_the_time(simulated):
    for name, summary in simulated.items():
        if " = " in name:
            confidence = 0.99 if "0.99" in name else 0.95
            assert summary.rolled_back <= 1 - confidence, summary


@pytest.mark.statistics
def test_a_five_percent_accuracy_drop_is_caught_and_the_median_samples_are_reported(simulated):
    for name in ("accuracy 0.90 -> 0.855 (5 % drop), tolerance 0 %", "accuracy 0.90 -> 0.855 (5 % drop), tolerance 1 %"):
        caught = simulated[name]
        assert caught.rolled_back >= 0.95 and caught.passed <= 0.01, caught
        assert caught.median_samples is not None and caught.median_samples <= 1500, caught


@pytest.mark.statistics
def test_slower_latencies_are_caught_at_the_median_and_in_the_tail_and_equal_ones_pass(simulated):
    for name in ("latency p50 100 ms -> 120 ms, tolerance 10 %",
                 "latency p95, narrow (sigma 0.1, buckets 10 % apart), 100 ms -> 130 ms, tolerance 10 %",
                 "latency p95, slowest 10 % of requests 3x slower (median unchanged), tolerance 10 %"):
        assert simulated[name].rolled_back >= 0.95, simulated[name]
    alike = simulated["latency p50 100 ms = 100 ms, tolerance 10 %"]
    assert alike.passed >= 0.9 and alike.rolled_back == 0, alike


@pytest.mark.statistics
def test_equal_rates_within_the_tolerance_pass_in_time(simulated):
    assert simulated["accuracy 0.90 = 0.90, tolerance 2 %"].passed >= 0.5


# --- the histogram statistic ------------------------------------------------------------------------------

BOUNDS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, math.inf)
counts = st.lists(st.integers(0, 500), min_size=len(BOUNDS), max_size=len(BOUNDS)).filter(lambda c: sum(c) > 0)


def histogram(per_bucket: list[int]) -> tuple[tuple[float, float], ...]:
    running, out = 0, []
    for le, c in zip(BOUNDS, per_bucket):
        running += c
        out.append((le, float(running)))
    return tuple(out)


@given(counts, counts)
def test_the_tail_is_read_as_exact_counts_at_a_bound_both_histograms_have(a, b):
    tail = tail_above(histogram(a), histogram(b), 0.95)
    assert tail.bound in BOUNDS
    below = BOUNDS.index(tail.bound) + 1
    assert (tail.candidate.hits, tail.candidate.total) == (sum(a[below:]), sum(a))
    assert (tail.stable.hits, tail.stable.total) == (sum(b[below:]), sum(b))


def test_the_bound_is_the_one_nearest_stables_quantile():
    stable = histogram([0, 100, 700, 150, 40, 10, 0])  # 90 % above 0.05, 20 % above 0.1, 5 % above 0.25
    assert tail_above(stable, stable, 0.95).bound == 0.25
    assert tail_above(stable, stable, 0.5).bound == 0.1


def test_buckets_out_of_order_and_extrapolated_counts_are_read_as_a_histogram():
    # increase() extrapolates each bucket on its own: a bound's count may come out a hair below its neighbour's.
    messy = ((math.inf, 100.0), (0.1, 50.2), (0.05, 50.3), (float("nan"), 3.0))
    tail = tail_above(messy, messy, 0.5)
    assert tail.bound == 0.05 and tail.candidate.hits == pytest.approx(100 - 50.3)


def test_histograms_of_other_buckets_or_units_are_not_compared():
    seconds = ((0.1, 50.0), (0.25, 95.0), (math.inf, 100.0))
    milliseconds = ((100.0, 50.0), (250.0, 95.0), (math.inf, 100.0))
    with pytest.raises(Unresolvable, match="different buckets .*other units or another metric generation"):
        tail_above(milliseconds, seconds, 0.95)


def test_buckets_too_coarse_for_the_quantile_prove_nothing_within_but_slower_is_slower():
    # A narrow distribution around 100 ms in the default layout: half above 0.1, nothing above 0.25.
    narrow = ((0.05, 0.0), (0.1, 500.0), (0.25, 1000.0), (math.inf, 1000.0))
    assert "no bucket bound lies near stable's p95: the nearest, le=0.1, has 50.0%" in tail_above(narrow, narrow, 0.95).too_far
    status = evaluate(P95, Measurement(0.1, 0.1, 1000, buckets=narrow, baseline_buckets=narrow), AT)
    assert status.verdict is Verdict.Error and "add bucket bounds around that latency" in status.message
    slow = ((0.05, 0.0), (0.1, 0.0), (0.25, 0.0), (math.inf, 1000.0))
    status = evaluate(P95, Measurement(0.3, 0.1, 1000, buckets=slow, baseline_buckets=narrow), AT)
    assert status.verdict is Verdict.Fail and "vs 50% of stable's slower than 0.1s" in status.message


def test_a_version_without_a_single_error_is_not_taken_as_certain():
    none_failed = Proportion(0, 40)
    evidence = compare_proportions(none_failed, Proportion(0, 40), tolerance=0, higher_is_better=False, confidence=0.95)
    assert evidence.finding is Finding.undecided and evidence.high > evidence.low


# --- a sequential check's verdict --------------------------------------------------------------------------

ACCURACY = Check.model_validate({"name": "accuracy", "template": "accuracy", "maxDropPercent": 1,
                                 "sequential": {"confidence": 0.95}})
P95 = Check.model_validate({"name": "p95", "template": "latencyP95", "maxIncreasePercent": 10, "sequential": {}})


def test_too_few_samples_on_either_side_is_not_enough_evidence():
    status = evaluate(ACCURACY, Measurement(0.5, 0.9, MIN_SAMPLES - 1, baseline_samples=10_000), AT)
    assert status.verdict is Verdict.Undecided and status.message.startswith("not enough evidence yet")
    assert f"{MIN_SAMPLES} each needed" in status.message


def test_a_clearly_worse_accuracy_fails_naming_the_tolerance_and_the_confidence():
    status = evaluate(ACCURACY, Measurement(0.80, 0.95, 2000, baseline_samples=8000), AT)
    assert status.verdict is Verdict.Fail
    assert "more than 1% below stable, with 95% confidence, 2000 and 8000 samples" in status.message
    assert (status.value, status.baseline) == (0.80, 0.95)
    assert status.limit == "at most 1% below stable; sequential test, 95% confidence"


def test_an_equal_accuracy_with_much_evidence_passes_and_with_little_waits():
    assert evaluate(ACCURACY, Measurement(0.95, 0.95, 200_000, baseline_samples=800_000), AT).verdict is Verdict.Pass
    waiting = evaluate(ACCURACY, Measurement(0.95, 0.95, 100, baseline_samples=400), AT)
    assert waiting.verdict is Verdict.Undecided and waiting.message.startswith("not enough evidence yet: 0.95 vs stable")


def test_a_value_that_is_no_proportion_is_an_error_not_a_verdict():
    ratio = Check.model_validate({"name": "lift", "query": "x", "sampleQuery": "n", "maxDropPercent": 5,
                                  "sequential": {}})
    assert evaluate(ratio, Measurement(1.7, 0.9, 1000, baseline_samples=1000), AT).verdict is Verdict.Error


def test_the_latency_verdict_compares_the_histograms_not_the_quantiles():
    fast, slow = histogram([0, 0, 380, 20, 0, 0, 0]), histogram([0, 0, 0, 0, 400, 0, 0])
    # Quantiles that would pass a threshold of +10 %; the histograms say otherwise.
    status = evaluate(P95, Measurement(0.1, 0.1, 400, buckets=slow, baseline_buckets=fast, baseline_samples=4000), AT)
    assert status.verdict is Verdict.Undecided and f"{samples_to_locate(0.95)} of stable's needed" in status.message
    fast = histogram([0, 0, 3800, 200, 0, 0, 0])
    status = evaluate(P95, Measurement(0.1, 0.1, 400, buckets=slow, baseline_buckets=fast), AT)
    assert status.verdict is Verdict.Fail
    assert ("100% of the candidate's requests vs 5% of stable's slower than 0.1s, the bucket bound nearest stable's "
            "p95: more than 10% above stable's share") in status.message


def test_the_p95_check_catches_a_regression_of_the_slowest_requests_that_the_median_misses():
    stable = histogram([0, 500, 2000, 2300, 180, 20, 0])  # 50 % above 0.1, 4 % above 0.25
    slow_tail = histogram([0, 500, 2000, 2100, 100, 200, 100])  # the same median; 8 % above 0.25
    p50 = Check.model_validate({"name": "p50", "template": "latencyP50", "maxIncreasePercent": 10, "sequential": {}})
    assert evaluate(P95, Measurement(0.2, 0.2, 5000, buckets=slow_tail, baseline_buckets=stable), AT).verdict is Verdict.Fail
    assert evaluate(p50, Measurement(0.08, 0.08, 5000, buckets=slow_tail, baseline_buckets=stable), AT).verdict is Verdict.Pass


def test_histograms_that_cannot_be_compared_are_an_error_not_a_verdict():
    seconds = ((0.1, 500.0), (0.25, 950.0), (math.inf, 1000.0))
    milliseconds = ((100.0, 500.0), (250.0, 950.0), (math.inf, 1000.0))
    status = evaluate(P95, Measurement(120.0, 0.12, 1000, buckets=milliseconds, baseline_buckets=seconds), AT)
    assert status.verdict is Verdict.Error and "different buckets" in status.message


def test_a_sequential_check_has_no_threshold_for_the_dashboards():
    assert limit_bounds(ACCURACY, 0.9) == {}


# --- what a sequential check measures ----------------------------------------------------------------------

class Recording:
    def __init__(self, buckets=((0.1, 50.0), (math.inf, 100.0))):
        self.asked: list[str] = []
        self.histograms: list[str] = []
        self._buckets = buckets

    async def query(self, promql, at, *, batch=None):
        self.asked.append(promql)
        return 0.9 if promql.startswith("value") else 1000.0

    async def buckets(self, promql, at):
        self.histograms.append(promql)
        return self._buckets


VALUE, SAMPLES = 'value{v="{{version}}"}', 'samples{v="{{version}}"}'
TEMPLATES = {CheckTemplate.accuracy: TemplateQuery(VALUE, SAMPLES),
             CheckTemplate.latencyP95: TemplateQuery(VALUE, SAMPLES, 'buckets{v="{{version}}"}[{{window}}]'),
             CheckTemplate.meanLatency: TemplateQuery(VALUE, SAMPLES)}


def subject(version: str, window: str = "1m") -> Subject:
    return Subject("ns", "m", version, version, "obj", window)


@pytest.mark.asyncio
async def test_a_sequential_proportion_counts_both_versions_samples():
    provider = Recording()
    measured = await measure(provider, ACCURACY, TEMPLATES, subject("2"), subject("1"), datetime.now(timezone.utc))
    assert sorted(provider.asked) == ['samples{v="1"}', 'samples{v="2"}', 'value{v="1"}', 'value{v="2"}']
    assert (measured.samples, measured.baseline_samples) == (1000, 1000) and provider.histograms == []


@pytest.mark.asyncio
async def test_a_sequential_latency_check_reads_both_histograms_over_its_window():
    provider = Recording()
    measured = await measure(provider, P95, TEMPLATES, subject("2", "15m"), subject("1", "15m"),
                             datetime.now(timezone.utc))
    assert sorted(provider.histograms) == ['buckets{v="1"}[15m]', 'buckets{v="2"}[15m]']
    assert measured.buckets == measured.baseline_buckets == ((0.1, 50.0), (math.inf, 100.0))


@pytest.mark.asyncio
async def test_a_latency_template_without_a_histogram_is_an_error_of_that_check():
    mean = Check.model_validate({"name": "mean", "template": "meanLatency", "maxIncreasePercent": 10,
                                 "sequential": {}})
    measured = await measure(Recording(), mean, TEMPLATES, subject("2"), subject("1"), datetime.now(timezone.utc))
    assert measured.error is not None and "no latency histogram" in measured.error


def test_a_sequential_check_looks_at_everything_since_the_candidate_began_serving():
    spec = ModelDeploymentSpec.model_validate({"model": "m", "version": "1.1.0", "serving": {"backend": "kserve"},
                                               "analysis": {"interval": "30s", "checks": [ACCURACY.model_dump(by_alias=True, exclude_none=True)]}})
    began = datetime(2026, 1, 1, tzinfo=timezone.utc)
    status = ModelDeploymentStatus(canary_version="1.1.0", stable_version="1.0.0", analysis_since=AT)
    plain = Check.model_validate({"name": "errors", "template": "errorRate", "max": 0.1})
    assert check_window(spec, status, ACCURACY, began + timedelta(minutes=12, seconds=0.4)) == "721s"
    assert check_window(spec, status, ACCURACY, began + timedelta(seconds=5)) == "30s"
    assert check_window(spec, status, plain, began + timedelta(minutes=12)) == "30s"


def test_an_infinite_bucket_count_is_an_error_not_evidence():
    broken = ((0.1, 50.0), (math.inf, math.inf))
    status = evaluate(P95, Measurement(0.1, 0.1, 400, buckets=broken, baseline_buckets=histogram([0, 0, 400, 0, 0, 0, 0])), AT)
    assert status.verdict is Verdict.Error and "a count that is no number" in status.message


def test_a_histogram_answer_is_read_by_le_and_anything_else_is_refused():
    from modelops.analysis.prometheus import MAX_BUCKETS, _buckets, _Failure

    def series(le, value):
        return {"metric": {"le": le}, "value": [0, value]}

    assert _buckets("vector", [series("+Inf", "9"), series("0.1", "NaN"), series("0.05", "4")]) == \
        ((0.05, 4.0), (math.inf, 9.0))  # sorted by le, a NaN count dropped
    for kind, result, words in [("scalar", [0, "1"], "buckets by le expected"),
                                ("vector", [{"metric": {}, "value": [0, "1"]}], "without a numeric le"),
                                ("vector", [series("fast", "1")], "without a numeric le"),
                                ("vector", [series(str(i), "1") for i in range(MAX_BUCKETS + 1)], "buckets expected")]:
        with pytest.raises(_Failure, match=words):
            _buckets(kind, result)
