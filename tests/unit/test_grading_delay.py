"""Checks on labels that arrive late (gradingDelay): no verdict before the candidate's own predictions are graded,
no step passed meanwhile nor before its own predictions are, the wait never counted as missing data, and a
sequential check's evidence only of predictions made since the candidate began serving."""

from datetime import datetime, timedelta

from modelops.analysis.evaluate import Measurement, awaiting_labels, evaluate
from modelops.api.modeldeployment import ModelDeploymentStatus, Outcome, Phase, Verdict
from modelops.rollout import AnalysisReport, check_window, grading_until
from modelops.rollout.plan import progress_deadline
from modelops.rollout.values import parse_rfc3339, rfc3339

from .rollout_sim import START, Sim, make_spec

ERRORS = {"name": "errors", "query": "up", "max": 0.05}
ACCURACY = {"name": "accuracy", "template": "accuracy", "min": 0.9, "minSamples": 50, "gradingDelay": "1m"}
ACCURACY_SEQUENTIAL = {"name": "accuracy", "template": "accuracy", "maxDropPercent": 1, "sequential": {}}


def rolling_out(checks=(ERRORS, ACCURACY)) -> Sim:
    spec = make_spec(pause="0s", checks=list(checks), analysis={"noDataLimit": 1, "failureLimit": 1})
    sim = Sim(spec)
    sim.step()
    sim.set(version="1.1.0")
    return sim


def analysis(sim: Sim, errors: float, accuracy: float, seconds: float = 10) -> AnalysisReport:
    """What the shell measures: checks still waiting for labels are not measured, only shown waiting."""
    sim.now += timedelta(seconds=seconds)
    results = []
    for check in sim.spec.analysis.checks:
        until = grading_until(sim.spec, sim.status, check, sim.now)
        if until is not None:
            results.append(awaiting_labels(check, rfc3339(until), rfc3339(sim.now)))
        else:
            value = errors if check.name == "errors" else accuracy
            results.append(evaluate(check, Measurement(value, samples=100), rfc3339(sim.now)))
    return AnalysisReport(sim.now, tuple(results))


def test_no_step_passes_before_the_labels_are_in_and_the_wait_is_no_missing_data():
    sim = rolling_out()
    began = parse_rfc3339(sim.status.analysis_since)
    while sim.now < began + timedelta(seconds=60):  # the window (10 s) and the delay (1 m) have not passed
        d = sim.step(analysis(sim, errors=0.0, accuracy=0.95))
        assert d.status.canary_weight == 10 and d.status.phase is Phase.Progressing
        assert d.status.consecutive_no_data == 0  # noDataLimit 1: one counted wait would have failed it
        waiting = next(c for c in d.status.checks if c.name == "accuracy")
        assert waiting.verdict is Verdict.NoData and "waiting for graded labels" in waiting.message
    d = sim.step(analysis(sim, errors=0.0, accuracy=0.95, seconds=20))
    assert d.status.canary_weight == 50 and "StepAdvanced" in [e.reason for e in d.events]


def test_a_check_that_judges_still_fails_the_rollout_during_the_wait():
    sim = rolling_out()
    d = sim.step(analysis(sim, errors=0.5, accuracy=0.95))
    assert d.status.phase is Phase.RolledBack and "errors" in d.status.history[-1].reason


def test_once_graded_a_drop_in_accuracy_rolls_back():
    sim = rolling_out()
    began = parse_rfc3339(sim.status.analysis_since)
    while sim.status.phase is Phase.Progressing and sim.status.canary_weight == 10:
        sim.step(analysis(sim, errors=0.0, accuracy=0.6))
    assert sim.status.phase is Phase.RolledBack
    assert sim.now >= began + timedelta(seconds=70)  # judged once the window and the delay had passed, not before
    assert "accuracy" in sim.status.history[-1].reason and "0.6 breaks the limit >= 0.9" in sim.status.history[-1].reason


def test_the_progress_deadline_allows_for_the_grading_delay():
    with_delay, without = rolling_out(), rolling_out(checks=[ERRORS])
    assert progress_deadline(with_delay.spec, with_delay.status) - progress_deadline(without.spec, without.status) \
        == timedelta(minutes=1)


def to_second_step(sim: Sim) -> datetime:
    """Passes the first step; the second step's start."""
    while sim.status.canary_weight == 10:
        sim.step(analysis(sim, errors=0.0, accuracy=0.95))
    assert sim.status.canary_weight == 50
    return parse_rfc3339(sim.status.step_started_at)


def test_a_step_passes_only_once_a_window_of_its_own_predictions_is_graded():
    sim = rolling_out()
    started = to_second_step(sim)
    # Counts lag predictions by the delay (1m): the step's own fill the window (10 s) only 70 s after it began.
    while sim.now + timedelta(seconds=10) < started + timedelta(seconds=70):
        d = sim.step(analysis(sim, errors=0.0, accuracy=0.95))
        assert d.status.canary_weight == 50 and d.status.phase is Phase.Progressing
        assert d.status.last_outcome is Outcome.Passed  # judged, and passing: only the step waits
    d = sim.step(analysis(sim, errors=0.0, accuracy=0.95))
    assert d.status.phase is Phase.Stable and d.status.stable_version == "1.1.0"


def test_evidence_from_before_a_weight_change_still_fails_the_rollout():
    sim = rolling_out()
    started = to_second_step(sim)
    d = sim.step(analysis(sim, errors=0.0, accuracy=0.6))
    assert sim.now < started + timedelta(seconds=70) and d.status.phase is Phase.RolledBack


def test_a_sequential_check_with_a_delay_counts_from_the_delay_after_the_candidate_began_serving():
    spec = make_spec(checks=[{**ACCURACY_SEQUENTIAL, "gradingDelay": "10m"}], analysis={"interval": "30s"})
    status = ModelDeploymentStatus(canary_version="1.1.0", stable_version="1.0.0", analysis_since=rfc3339(START))
    check = spec.analysis.checks[0]
    # Before: predictions stable made before the candidate served; after: only those made since.
    assert check_window(spec, status, check, START + timedelta(minutes=22, seconds=0.4)) == "721s"
    assert check_window(spec, status, check, START + timedelta(minutes=10, seconds=5)) == "30s"
