"""driftTest: the test's arithmetic, its verdicts and refusals, how it is measured, and its error rates by
simulation (tests/unit/drift_sim.py) against the threshold on a drift score it is recommended over."""

from __future__ import annotations

import math
from datetime import datetime, timezone

import numpy as np
import pytest

from modelops.analysis.drift import MIN_EXPECTED, DriftFinding, chi_square_sf, judge_drift, power_divergence
from modelops.analysis.evaluate import Measurement, evaluate
from modelops.analysis.measure import measure
from modelops.analysis.prometheus import _by_labels, _Failure
from modelops.analysis.promql import Subject
from modelops.analysis.sequential import Unresolvable
from modelops.api.modeldeployment import Check, Verdict
from modelops.routers.base import CONTRACT_TEMPLATES

from . import drift_sim as sim

AT = "2026-01-01T00:00:00Z"
DRIFT = Check.model_validate({"name": "drift", "template": "driftTest"})


def shares(feature: str, values: list[float]) -> dict[tuple[str, str], float]:
    return {(feature, str(i)): v for i, v in enumerate(values)}


# --- the arithmetic ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("statistic", [0.5, 3.0, 9.0, 11.0, 25.0, 60.0, 200.0])
def test_the_chi_square_tail_is_the_closed_form_for_an_even_df(statistic):
    """For 10 degrees of freedom Q = exp(-x/2) * sum_{k<5} (x/2)^k / k!: both the series (x/2 < 6) and the
    continued fraction (beyond) meet it."""
    half = statistic / 2
    exact = math.exp(-half) * sum(half ** k / math.factorial(k) for k in range(5))
    assert chi_square_sf(statistic, 10) == pytest.approx(exact, rel=1e-9, abs=1e-300)


def test_the_chi_square_tail_at_known_quantiles():
    assert chi_square_sf(3.841459, 1) == pytest.approx(0.05, rel=1e-5)
    assert chi_square_sf(27.877165, 9) == pytest.approx(0.001, rel=1e-5)
    assert chi_square_sf(0.0, 3) == 1.0


def test_power_one_is_pearsons_statistic_and_the_test_uses_two_thirds_over_both_samples():
    observed, expected = np.array([10.0, 30.0, 0.0, 60.0]), np.array([25.0, 25.0, 25.0, 25.0])
    assert power_divergence(observed, expected, 1.0).sum() == pytest.approx(((observed - expected) ** 2 / expected).sum())
    reference = np.array([300.0, 300.0, 0.0, 200.0])  # bin 2 is empty on both sides: left out
    table = np.stack([observed, reference])[:, [0, 1, 3]]
    cells = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    found = judge_drift(shares("x", list(observed)), shares("x", list(reference)), confidence=0.95, looks=1).features[0]
    assert found.bins == 3 and found.smallest_expected == pytest.approx(cells.min())
    assert found.statistic == pytest.approx(power_divergence(table, cells).sum())
    assert found.statistic != pytest.approx(power_divergence(table, cells, 1.0).sum())
    assert found.p_value == pytest.approx(chi_square_sf(found.statistic, 2))


# --- verdicts, and what cannot be judged ---------------------------------------------------------------------------

def test_alpha_is_split_over_looks_and_features():
    reference = {**shares("a", [1, 1]), **shares("b", [1, 1]), **shares("c", [1, 1])}
    live = {**shares("a", [50, 50]), **shares("b", [50, 50]), **shares("c", [50, 50])}
    assert judge_drift(live, reference, confidence=0.95, looks=60).alpha == pytest.approx(0.05 / 180)


def test_bins_or_features_on_one_side_only_cannot_be_compared_and_say_which():
    reference = shares("brightness", [500, 500])
    with pytest.raises(Unresolvable, match=r"feature 'brightness': bins '2' have no reference count"):
        judge_drift(shares("brightness", [10, 10, 10]), reference, confidence=0.95, looks=1)
    with pytest.raises(Unresolvable, match=r"bins '1' have no live count"):
        judge_drift(shares("brightness", [10]), reference, confidence=0.95, looks=1)
    with pytest.raises(Unresolvable, match=r"features 'contrast' have live counts but no reference counts"):
        judge_drift({**shares("brightness", [10, 10]), **shares("contrast", [1, 2])}, reference, confidence=0.95, looks=1)
    with pytest.raises(Unresolvable, match=r"its reference counts no input"):
        judge_drift(shares("brightness", [10, 10]), shares("brightness", [0, 0]), confidence=0.95, looks=1)
    with pytest.raises(Unresolvable, match=r"-1, not a count"):
        judge_drift(shares("brightness", [10, -1]), reference, confidence=0.95, looks=1)


def test_cells_expecting_too_few_inputs_give_no_verdict_however_skewed():
    reference = shares("x", [500, 450, 50])
    few = judge_drift(shares("x", [0, 0, 50]), reference, confidence=0.95, looks=1)  # bin 2 expects 50 * 100 / 1050
    assert few.finding is DriftFinding.undecided and few.features[0].p_value is None
    assert few.features[0].smallest_expected == pytest.approx(50 * 100 / 1050) and 50 * 100 / 1050 < MIN_EXPECTED
    enough = judge_drift(shares("x", [0, 0, 60]), reference, confidence=0.95, looks=1)  # 60 * 110 / 1060 = 6.2
    assert enough.finding is DriftFinding.drifted
    assert judge_drift(shares("x", [0, 0]), shares("x", [5, 5]), confidence=0.95,
                       looks=1).finding is DriftFinding.undecided


@pytest.mark.parametrize("bins, reference, verdict, words", [
    ({}, shares("x", [1000, 1000]), Verdict.NoData, "no live inputs counted"),
    (shares("x", [50, 50]), {}, Verdict.Error, "no reference counts published"),
    (shares("x", [50, 50, 0]), shares("x", [1000, 1000]), Verdict.Error, "feature 'x': bins '2' have no reference count"),
    (shares("x", [3, 3]), shares("x", [1000, 1000]), Verdict.NoData, "too few inputs to test"),
    (shares("x", [10, 290]), shares("x", [1000, 1000]), Verdict.Fail, "differ from the reference in 'x' (p = "),
    (shares("x", [148, 152]), shares("x", [1000, 1000]), Verdict.Pass, "no feature's live inputs differ"),
])
def test_a_drift_check_judges_the_binned_counts(bins, reference, verdict, words):
    status = evaluate(DRIFT, Measurement(None, bins=bins, reference_bins=reference), AT)
    assert status.verdict is verdict and words in status.message
    assert "chi-square test against the reference, 95% confidence over 60 analyses" in status.limit


def test_a_drift_checks_value_is_its_smallest_p_value_and_its_samples_the_inputs():
    bins = {**shares("a", [148, 152]), **shares("b", [100, 200])}
    reference = {**shares("a", [1000, 1000]), **shares("b", [1000, 1000])}
    status = evaluate(DRIFT, Measurement(None, bins=bins, reference_bins=reference), AT)
    assert status.samples == 300
    assert status.value == pytest.approx(judge_drift(shares("b", [100, 200]), shares("b", [1000, 1000]), confidence=0.95,
                                                     looks=1).features[0].p_value)
    fewer = Check.model_validate({"name": "drift", "template": "driftTest", "minSamples": 301})
    assert evaluate(fewer, Measurement(None, bins=bins, reference_bins=reference), AT).verdict is Verdict.NoData


def test_the_drift_test_settings_are_used():
    lenient = Check.model_validate({"name": "drift", "template": "driftTest",
                                    "driftTest": {"confidence": 0.8, "looks": 1}})
    bins, reference = shares("x", [130, 170]), shares("x", [100_000, 100_000])  # p = 0.021: below 0.2, above 0.05 / 60
    assert evaluate(lenient, Measurement(None, bins=bins, reference_bins=reference), AT).verdict is Verdict.Fail
    assert evaluate(DRIFT, Measurement(None, bins=bins, reference_bins=reference), AT).verdict is Verdict.Pass


# --- what it measures ----------------------------------------------------------------------------------------------

class Binned:
    def __init__(self, answers):
        self.asked: list[tuple[str, tuple[str, ...]]] = []
        self.answers = answers

    async def query(self, promql, at, *, batch=None):
        raise AssertionError(f"a drift test asks for no single value, got {promql}")

    async def series(self, promql, at, labels):
        self.asked.append((promql, labels))
        return self.answers["reference" if "model_reference_bin_count" in promql else "live"]


@pytest.mark.asyncio
async def test_a_drift_test_reads_the_candidates_bins_and_reference_by_feature_and_bin():
    provider = Binned({"live": {("x", "0"): 148.0, ("x", "1"): 152.0}, "reference": {("x", "0"): 50, ("x", "1"): 50}})
    candidate, stable = Subject("ns", "m", "2.0.0", "v2", "obj", "1m"), Subject("ns", "m", "1.0.0", "v1", "obj", "1m")
    measured = await measure(provider, DRIFT, CONTRACT_TEMPLATES, candidate, stable, datetime.now(timezone.utc))
    assert measured.bins == {("x", "0"): 148.0, ("x", "1"): 152.0} and measured.reference_bins[("x", "1")] == 50
    assert {labels for _, labels in provider.asked} == {("feature", "bin")} and len(provider.asked) == 2
    assert all('version="2.0.0"' in promql and "1.0.0" not in promql for promql, _ in provider.asked)
    assert any(" offset 1m" in promql for promql, _ in provider.asked)


def test_binned_series_are_read_by_their_labels_and_anything_else_is_refused():
    def series(labels, value):
        return {"metric": labels, "value": [0, value]}

    assert _by_labels("vector", [series({"feature": "x", "bin": "0"}, "3"), series({"feature": "x", "bin": "1"}, "NaN")],
                      ("feature", "bin")) == {("x", "0"): 3.0}
    for result, words in [([series({"feature": "x"}, "1")], "without the labels feature, bin"),
                          ([series({"feature": "x", "bin": "0"}, "1")] * 2, "two series for"),
                          ([0, "1"], "an instant vector of series by feature, bin")]:
        with pytest.raises(_Failure, match=words):
            _by_labels("scalar" if words.startswith("an instant") else "vector", result, ("feature", "bin"))


# --- error rates, by simulation (drift_sim's docstring states the setting) -----------------------------------------

def within_alpha(failed: np.ndarray, alpha: float = 1 - sim.CONFIDENCE) -> bool:
    """The share failed is consistent with at most `alpha`: under 2.33 standard errors above it (a 1 % chance of
    saying otherwise when exactly alpha fail)."""
    return failed.mean() <= alpha + 2.33 * math.sqrt(alpha * (1 - alpha) / len(failed))


@pytest.mark.statistics
def test_without_drift_at_most_alpha_of_rollouts_fail_and_forgetting_looks_or_features_would_fail_more():
    simulated = sim.rollouts(1, 5000, sim.LOOKS)
    assert within_alpha(sim.rolled_back(simulated, sim.Judge()))
    assert not within_alpha(sim.rolled_back(simulated, sim.Judge(looks=1)))
    assert not within_alpha(sim.rolled_back(simulated, sim.Judge(per_feature=True)))


@pytest.mark.statistics
def test_a_shift_of_a_quarter_standard_deviation_is_caught_within_ten_looks_and_an_overspent_alpha_would_miss_it():
    simulated = sim.rollouts(2, 2000, 10, shift=sim.SHIFT)
    assert sim.rolled_back(simulated, sim.Judge()).mean() >= 0.95
    assert sim.rolled_back(simulated, sim.Judge(looks=100_000)).mean() < 0.95


@pytest.mark.statistics
def test_a_threshold_on_the_demo_detectors_score_fails_rollouts_without_drift():
    """The caveat the documentation states for driftScore: its false alarms depend on the score's noise."""
    assert sim.score_rollouts(3, 400, 0.3, 50.0, count=100) > 0.5
    assert sim.score_rollouts(3, 100, 0.3, count=100) > 0.5
    assert sim.score_rollouts(3, 400, 0.25, count=100) < 0.05
