"""Checks on labels that arrive late (gradingDelay): no verdict before the candidate's own predictions are graded,
no step passed meanwhile, and the wait never counted as missing data."""

from datetime import timedelta

from modelops.analysis.evaluate import Measurement, awaiting_labels, evaluate
from modelops.api.modeldeployment import Phase, Verdict
from modelops.rollout import AnalysisReport, grading_until
from modelops.rollout.plan import progress_deadline
from modelops.rollout.values import parse_rfc3339, rfc3339

from .rollout_sim import Sim, make_spec

ERRORS = {"name": "errors", "query": "up", "max": 0.05}
ACCURACY = {"name": "accuracy", "template": "accuracy", "min": 0.9, "minSamples": 50, "gradingDelay": "1m"}


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
