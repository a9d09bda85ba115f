"""A sequential check without enough evidence yet is Undecided: it holds the step, counts toward neither
noDataLimit nor failureLimit, and its budget (maxDuration, maxSamples) ends the wait as onBudget says."""

from datetime import timedelta

from modelops.analysis.evaluate import Measurement, evaluate, outcome, spend_budget
from modelops.api.modeldeployment import Check, ModelDeploymentSpec, ModelDeploymentStatus, Outcome, Phase, Verdict
from modelops.rollout import AnalysisReport
from modelops.rollout.plan import progress_deadline
from modelops.rollout.values import parse_rfc3339, rfc3339

from .rollout_sim import Sim, make_spec

AT = "2026-01-01T00:00:00.000Z"
# Error rates of 1 % on both sides: far from a verdict either way with a few thousand requests.
UNDECIDED = Measurement(0.01, 0.01, 1000, baseline_samples=4000)
WORSE = Measurement(0.5, 0.01, 1000, baseline_samples=4000)
NO_DATA = Measurement(None)


def errors(**sequential) -> dict:
    return {"name": "errors", "template": "errorRate", "maxIncreasePercent": 10, "sequential": sequential}


def rolling_out(sequential: dict, **analysis) -> Sim:
    sim = Sim(make_spec(checks=[errors(**sequential)], pause="10s",
                        analysis={"noDataLimit": 1, "failureLimit": 1, **analysis}))
    sim.step()
    sim.spec = sim.spec.model_copy(update={"version": "1.1.0"})
    sim.step()
    return sim


def look(sim: Sim, measured: Measurement, seconds: float = 10):
    sim.now += timedelta(seconds=seconds)
    results = tuple(evaluate(c, measured, rfc3339(sim.now)) for c in sim.spec.analysis.checks)
    return sim.step(AnalysisReport(sim.now, results))


def test_not_enough_evidence_is_undecided_not_no_data():
    status = evaluate(Check.model_validate(errors()), UNDECIDED, AT)
    assert status.verdict is Verdict.Undecided and status.message.startswith("not enough evidence yet: 0.01 vs stable")


def test_an_undecided_check_holds_the_step_without_counting_toward_no_data_or_failure_limits():
    """noDataLimit 1 and failureLimit 1: under the old counting the first undecided analysis rolled back."""
    sim = rolling_out({})
    for _ in range(30):
        d = look(sim, UNDECIDED)
        assert (d.status.phase, d.status.canary_weight) == (Phase.Progressing, 10)
        assert (d.status.consecutive_no_data, d.status.consecutive_failures) == (0, 0)
        assert d.status.last_outcome is Outcome.Undecided
    check = sim.status.checks[0]
    assert check.verdict is Verdict.Undecided
    # the evidence so far, and what is left of the default budget (1h) after 300 s since the candidate began serving
    assert "0.01 vs stable 0.01, 1000 and 4000 samples; budget left: 55m of maxDuration 1h" in check.message


def test_missing_data_beside_an_undecided_check_still_counts():
    checks = [Check.model_validate(errors()), Check.model_validate({"name": "p", "query": "q", "max": 1})]
    results = [evaluate(checks[0], UNDECIDED, AT), evaluate(checks[1], NO_DATA, AT)]
    assert outcome(checks, results) is Outcome.Inconclusive
    assert outcome(checks[:1], results[:1]) is Outcome.Undecided
    assert outcome(checks, [results[0], evaluate(checks[1], Measurement(2.0), AT)]) is Outcome.Failed


def test_an_undecided_check_passes_once_its_duration_is_spent_by_default():
    sim = rolling_out({"maxDuration": "30s"})
    assert look(sim, UNDECIDED).status.canary_weight == 10
    assert look(sim, UNDECIDED).status.canary_weight == 10
    d = look(sim, UNDECIDED)  # 30 s since the candidate began serving
    check = d.status.checks[0]
    assert (check.verdict, d.status.canary_weight) == (Verdict.Pass, 50)
    assert check.message.startswith("undecided when its budget (maxDuration 30s) was spent, passes (onBudget Pass)")


def test_on_budget_fail_fails_an_undecided_check_at_its_sample_budget():
    sim = rolling_out({"maxSamples": 2000, "onBudget": "Fail"})
    d = look(sim, UNDECIDED)
    assert d.status.phase is Phase.Progressing
    assert "budget left: 59m50s of maxDuration 1h and 1000 of maxSamples 2000 samples" in d.status.checks[0].message
    d = look(sim, Measurement(0.01, 0.01, 2000, baseline_samples=8000))
    assert d.status.phase is Phase.RolledBack
    assert "undecided when its budget (maxSamples 2000) was spent, fails (onBudget Fail)" in d.status.history[-1].reason


def test_evidence_of_worse_fails_within_the_budget_and_a_spent_budget_never_hides_it():
    sim = rolling_out({"maxDuration": "10s"})
    assert look(sim, WORSE).status.phase is Phase.RolledBack
    check = Check.model_validate(errors(maxDuration="10s"))
    judged = evaluate(check, WORSE, AT)
    assert spend_budget(check, judged, 3600) == judged


def test_the_progress_deadline_allows_for_the_longest_undecided_budget():
    spec = ModelDeploymentSpec.model_validate({
        "model": "m", "version": "2.0.0", "serving": {"backend": "kserve"},
        "strategy": {"steps": [{"weight": 10, "pause": "2m"}]},
        "analysis": {"interval": "1m", "failureLimit": 2, "noDataLimit": 3,
                     "checks": [errors(maxDuration="30m"), {**errors(), "name": "other"}]}})
    status = ModelDeploymentStatus(phase=Phase.Progressing, stable_version="1.0.0", canary_version="2.0.0",
                                   current_step=0, step_started_at=AT)
    # pause 2m + first window 1m + the longest budget 1h (the default) + (3 + 2 + 1) analyses of 1m
    assert progress_deadline(spec, status) == parse_rfc3339(AT) + timedelta(minutes=69)
