"""The operator's metrics helpers: no NaN ever exported, one-hot phases, limits as numbers, counts of
promotions and rollbacks from real engine decisions, and every series of a deleted deployment gone."""

from __future__ import annotations

import itertools
import math
from datetime import datetime, timezone

import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from modelops import metrics
from modelops.analysis.evaluate import Measurement, evaluate, limit_bounds
from modelops.api.modeldeployment import Check, CheckStatus, Phase, Request, Verdict

from .rollout_sim import Sim, make_spec

AT = "2026-01-01T00:00:00Z"
_numbers = itertools.count(1)


@pytest.fixture
def ns():
    """A namespace of the test's own: the registry is process-wide."""
    return f"metrics-{next(_numbers)}"


def value(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def series(ns: str, deployment: str = "fraud") -> list[tuple[str, dict[str, str], float]]:
    """Every exported sample of one deployment, as a scrape would see it."""
    text = generate_latest(REGISTRY).decode()
    return [(s.name, s.labels, s.value) for f in text_string_to_metric_families(text) for s in f.samples
            if s.labels.get("namespace") == ns and s.labels.get("deployment") == deployment]


def check(**kw) -> Check:
    return Check.model_validate({"name": "c", "query": "up", **kw})


def raw(name: str, value: float | None, baseline: float | None = None) -> CheckStatus:
    """A result as the helper could be handed one, unvalidated (so NaN and Inf get through)."""
    return CheckStatus.model_construct(name=name, verdict=Verdict.NoData, value=value, baseline=baseline,
                                       samples=None, limit="", message="", time=AT)


# --- limits as numbers (evaluate.limit_bounds) ------------------------------------------------------


@pytest.mark.parametrize("limits, baseline, bounds", [
    ({"max": 0.05}, None, {"max": 0.05}),
    ({"min": 0.9, "max": 1}, 0.5, {"min": 0.9, "max": 1}),
    ({"maxDropPercent": 5}, 0.93, {"min": pytest.approx(0.8835)}),
    ({"maxIncreasePercent": 50}, 0.10, {"max": pytest.approx(0.15)}),
    ({"maxDropPercent": 10}, -1.0, {"min": pytest.approx(-1.1)}),  # below a negative baseline, not above
    ({"maxDropPercent": 5}, None, {}),  # relative without stable's value: no bound in effect
    ({"maxDropPercent": 5}, math.inf, {}),  # nor with a non-finite one (evaluate ignores it too)
    ({"maxDropPercent": 5}, math.nan, {}),
    ({"max": 0.2, "maxIncreasePercent": 50}, None, {"max": 0.2}),
    # Two bounds of a kind: the tighter one is the one in effect.
    ({"min": 0.5, "maxDropPercent": 5}, 0.93, {"min": pytest.approx(0.8835)}),
    ({"min": 0.9, "maxDropPercent": 50}, 0.93, {"min": 0.9}),
    ({"max": 0.2, "maxIncreasePercent": 50}, 0.10, {"max": pytest.approx(0.15)}),
    ({"max": 0.1, "maxIncreasePercent": 50}, 0.10, {"max": 0.1}),
])
def test_limit_bounds_are_the_numbers_evaluate_holds_values_against(limits, baseline, bounds):
    assert limit_bounds(check(**limits), baseline) == bounds


@pytest.mark.parametrize("limits, measured", [
    ({"maxDropPercent": 5}, Measurement(0.88, baseline=0.93)),
    ({"maxDropPercent": 5}, Measurement(0.89, baseline=0.93)),
    ({"min": 0.5, "max": 0.9, "maxIncreasePercent": 10}, Measurement(0.6, baseline=0.55)),
    ({"min": 0.5, "max": 0.9, "maxIncreasePercent": 10}, Measurement(0.61, baseline=0.55)),
])
def test_a_value_fails_exactly_when_it_is_beyond_a_bound(limits, measured):
    c = check(**limits)
    result = evaluate(c, measured, AT)
    bounds = limit_bounds(c, result.baseline)
    beyond = measured.value < bounds.get("min", -math.inf) or measured.value > bounds.get("max", math.inf)
    assert (result.verdict is Verdict.Fail) == beyond, (result.message, bounds)


# --- check values and limits --------------------------------------------------------------------


def test_a_measured_value_and_its_limits_are_exported(ns):
    checks = [check(name="errors", max=0.05), check(name="accuracy", maxDropPercent=5, min=0.5)]
    results = [evaluate(checks[0], Measurement(0.01), AT), evaluate(checks[1], Measurement(0.9, baseline=0.93), AT)]
    metrics.show_analysis(ns, "fraud", "1.1.0", checks, results, 0.2)
    assert value("modelops_check_value", namespace=ns, deployment="fraud", check="errors", version="1.1.0") == 0.01
    assert value("modelops_check_value", namespace=ns, deployment="fraud", check="accuracy", version="1.1.0") == 0.9
    assert value("modelops_check_limit", namespace=ns, deployment="fraud", check="errors", bound="max") == 0.05
    assert value("modelops_check_limit", namespace=ns, deployment="fraud", check="errors", bound="min") is None
    assert value("modelops_check_limit", namespace=ns, deployment="fraud", check="accuracy",
                 bound="min") == pytest.approx(0.8835)
    assert "0.8835" in results[1].limit  # the number is the one the words say
    assert value("modelops_check_verdicts_total", namespace=ns, deployment="fraud", check="errors", verdict="Pass") == 1
    for verdict in ("Fail", "NoData", "Error"):  # there from 0 on, so that increase() sees the first one
        assert value("modelops_check_verdicts_total", namespace=ns, deployment="fraud", check="errors",
                     verdict=verdict) == 0
    assert value("modelops_analyses_total", namespace=ns, deployment="fraud") == 1


@pytest.mark.parametrize("missing", [None, math.nan, math.inf, -math.inf])
def test_a_value_that_is_not_a_number_has_no_series_never_nan(ns, missing):
    c = check(name="errors", max=0.05)
    metrics.show_analysis(ns, "fraud", "1.1.0", [c], [raw("errors", 0.02)], 0.1)
    assert value("modelops_check_value", namespace=ns, deployment="fraud", check="errors", version="1.1.0") == 0.02
    metrics.show_analysis(ns, "fraud", "1.1.0", [c], [raw("errors", missing)], 0.1)
    assert value("modelops_check_value", namespace=ns, deployment="fraud", check="errors", version="1.1.0") is None
    assert value("modelops_check_limit", namespace=ns, deployment="fraud", check="errors", bound="max") == 0.05
    assert not [s for s in series(ns) if not math.isfinite(s[2])], series(ns)


def test_a_relative_limit_without_stables_value_has_no_series(ns):
    c = check(name="accuracy", maxDropPercent=5)
    metrics.show_analysis(ns, "fraud", "1.1.0", [c], [raw("accuracy", 0.9, baseline=0.93)], 0.1)
    assert value("modelops_check_limit", namespace=ns, deployment="fraud", check="accuracy", bound="min") is not None
    metrics.show_analysis(ns, "fraud", "1.1.0", [c], [raw("accuracy", 0.9, baseline=None)], 0.1)
    assert value("modelops_check_limit", namespace=ns, deployment="fraud", check="accuracy", bound="min") is None
    metrics.show_analysis(ns, "fraud", "1.1.0", [c], [evaluate(c, Measurement(0.9, baseline=math.inf), AT)], 0.1)
    assert value("modelops_check_limit", namespace=ns, deployment="fraud", check="accuracy", bound="min") is None


def test_series_of_a_previous_candidate_or_a_removed_check_go(ns):
    a, b = check(name="a", max=1), check(name="b", min=0)
    metrics.show_analysis(ns, "fraud", "1.1.0", [a, b], [raw("a", 0.5), raw("b", 0.5)], 0.1)
    metrics.show_analysis(ns, "fraud", "1.2.0", [a], [raw("a", 0.7)], 0.1)
    values = {(s[1]["check"], s[1]["version"]): s[2] for s in series(ns) if s[0] == "modelops_check_value"}
    limits = {(s[1]["check"], s[1]["bound"]) for s in series(ns) if s[0] == "modelops_check_limit"}
    assert values == {("a", "1.2.0"): 0.7} and limits == {("a", "max")}


def test_forgetting_checks_leaves_other_deployments_alone(ns):
    c = check(name="errors", max=0.05)
    metrics.show_analysis(ns, "fraud", "1.1.0", [c], [raw("errors", 0.01)], 0.1)
    metrics.show_analysis(ns, "other", "1.1.0", [c], [raw("errors", 0.01)], 0.1)
    metrics.forget_checks(ns, "fraud")
    assert not [s for s in series(ns) if s[0] in ("modelops_check_value", "modelops_check_limit")]
    assert [s for s in series(ns, "other") if s[0] == "modelops_check_value"]  # another deployment's stay
    metrics.forget_checks(ns, "fraud")  # again: nothing to remove, no error


def test_analysis_duration_is_a_histogram(ns):
    for seconds in (0.005, 0.02, 0.3, 3, 45):
        metrics.show_analysis(ns, "fraud", "1.1.0", [], [], seconds)
    bucket = lambda le: value("modelops_analysis_duration_seconds_bucket", namespace=ns, deployment="fraud", le=le)
    assert (bucket("0.01"), bucket("0.025"), bucket("0.5"), bucket("5.0"), bucket("30.0"), bucket("+Inf")) == (1, 2, 3, 4, 4, 5)
    assert value("modelops_analysis_duration_seconds_count", namespace=ns, deployment="fraud") == 5
    assert value("modelops_analysis_duration_seconds_sum", namespace=ns, deployment="fraud") == pytest.approx(48.325)


# --- phase and traffic ------------------------------------------------------------------------


def phases(ns: str) -> dict[str, float]:
    return {s[1]["phase"]: s[2] for s in series(ns) if s[0] == "modelops_phase"}


def test_phase_is_one_hot(ns):
    metrics.show_phase(ns, "fraud", Phase.Progressing)
    assert phases(ns) == {p.value: (1.0 if p is Phase.Progressing else 0.0) for p in Phase}
    metrics.show_phase(ns, "fraud", Phase.RolledBack)
    assert phases(ns) == {p.value: (1.0 if p is Phase.RolledBack else 0.0) for p in Phase}
    assert sum(phases(ns).values()) == 1


def test_no_phase_yet_is_all_zero(ns):
    metrics.show_phase(ns, "fraud", None)
    assert set(phases(ns)) == {p.value for p in Phase} and sum(phases(ns).values()) == 0


def test_traffic_per_version_follows_the_split(ns):
    def split() -> dict[str, float]:
        return {s[1]["version"]: s[2] for s in series(ns) if s[0] == "modelops_traffic_weight_percent"}

    metrics.show_traffic(ns, "fraud", {"1.0.0": 100})
    assert split() == {"1.0.0": 100}
    metrics.show_traffic(ns, "fraud", {"1.0.0": 80, "1.1.0": 20})
    assert split() == {"1.0.0": 80, "1.1.0": 20}
    metrics.show_traffic(ns, "fraud", {"1.1.0": 100, "1.0.0": 0})
    assert split() == {"1.1.0": 100}


# --- promotions and rollbacks, from the engine's own decisions ----------------------------------------


def counted(ns: str, sim: Sim, *steps) -> None:
    """Run decisions through the engine, counting each as the round does after persisting it."""
    for step in steps:
        before = sim.status
        after = step(sim).status
        metrics.count_outcomes(ns, "fraud", before, after)


def outcomes(ns: str) -> dict[tuple[str, str], float]:
    """The counts that are not 0."""
    return {(s[0], s[1]["reason"]): s[2] for s in series(ns)
            if s[0] in ("modelops_promotions_total", "modelops_rollbacks_total") and s[2]}


def test_counts_are_exported_from_zero_before_anything_happens(ns):
    sim = rolling_out()
    counted(ns, sim, lambda s: s.tick("Pass"))
    zeros = {(s[0], s[1]["reason"]): s[2] for s in series(ns)
             if s[0] in ("modelops_promotions_total", "modelops_rollbacks_total")}
    assert zeros == {(name, reason): 0 for name in ("modelops_promotions_total", "modelops_rollbacks_total")
                     for reason in ("automatic", "manual")}


def rolling_out(**spec) -> Sim:
    sim = Sim(make_spec(**spec))
    sim.step()
    sim.set(version="1.1.0")
    return sim


def test_an_automatic_promotion_counts_once(ns):
    sim = rolling_out(pause="10s")
    counted(ns, sim, *[lambda s: s.tick("Pass")] * 8)
    assert sim.status.phase is Phase.Stable and sim.status.stable_version == "1.1.0"
    counted(ns, sim, lambda s: s.step(), lambda s: s.tick("Pass"))  # replays and idle rounds add nothing
    assert outcomes(ns) == {("modelops_promotions_total", "automatic"): 1}


def test_an_immediate_rollback_counts_once(ns):
    sim = rolling_out(analysis={"failureLimit": 2})
    counted(ns, sim, lambda s: s.tick("Fail"), lambda s: s.tick("Fail"), lambda s: s.tick("Fail"))
    assert sim.status.phase is Phase.RolledBack
    assert outcomes(ns) == {("modelops_rollbacks_total", "automatic"): 1}


def test_a_progressive_rollback_counts_once_when_it_starts(ns):
    sim = rolling_out(steps=(10, 25, 50), pause="10s", strategy={"rollback": "Progressive"},
                      analysis={"failureLimit": 1})
    counted(ns, sim, lambda s: s.tick("Pass"), lambda s: s.tick("Pass"), lambda s: s.tick("Fail"))
    assert sim.status.phase is Phase.RollingBack
    assert outcomes(ns) == {("modelops_rollbacks_total", "automatic"): 1}
    counted(ns, sim, *[lambda s: s.tick("Pass")] * 4)
    assert sim.status.phase is Phase.RolledBack
    assert outcomes(ns) == {("modelops_rollbacks_total", "automatic"): 1}


def request(action: str, rid: str, **kw) -> Request:
    return Request.model_validate({"id": rid, "action": action, "reason": "testing", "actor": "sre", **kw})


def test_requests_count_as_manual(ns):
    sim = rolling_out(pause="1h")
    counted(ns, sim, lambda s: s.tick("Pass"), lambda s: s.set(request=request("Promote", "p1")))
    assert sim.status.stable_version == "1.1.0"
    counted(ns, sim, lambda s: s.set(version="1.2.0"), lambda s: s.tick("Pass"),
            lambda s: s.set(request=request("Abort", "a1")))
    assert sim.status.phase is Phase.RolledBack
    counted(ns, sim, lambda s: s.set(version="1.1.0"), lambda s: s.set(request=request("Rollback", "r1")))
    assert sim.status.stable_version == "1.0.0"
    assert outcomes(ns) == {("modelops_promotions_total", "manual"): 1, ("modelops_rollbacks_total", "manual"): 2}


# --- errors, and forgetting a deleted deployment ---------------------------------------------------


def test_reconcile_errors_are_counted_per_deployment_and_reason(ns):
    metrics.count_error(ns, "fraud", "ApiError")
    metrics.count_error(ns, "fraud", "ApiError")
    metrics.count_error(ns, "fraud", "Timeout")
    assert value("modelops_reconcile_errors_total", namespace=ns, deployment="fraud", reason="ApiError") == 2
    assert value("modelops_reconcile_errors_total", namespace=ns, deployment="fraud", reason="Timeout") == 1


def everything(ns: str, deployment: str) -> None:
    c = check(name="errors", max=0.05)
    metrics.show_analysis(ns, deployment, "1.1.0", [c], [evaluate(c, Measurement(0.5), AT)], 0.3)
    metrics.show_phase(ns, deployment, Phase.Progressing)
    metrics.show_traffic(ns, deployment, {"1.0.0": 80, "1.1.0": 20})
    metrics.CANARY_WEIGHT.labels(ns, deployment).set(20)
    metrics.STATUS_PATCHES.labels(ns, deployment).inc()
    metrics.DECISIONS.labels(ns, deployment, "StepAdvanced").inc()
    metrics.PROMOTIONS.labels(ns, deployment, "automatic").inc()
    metrics.ROLLBACKS.labels(ns, deployment, "manual").inc()
    metrics.count_error(ns, deployment, "Conflict")
    metrics.show_progress_deadline(ns, deployment, datetime(2026, 1, 1, tzinfo=timezone.utc))


def test_forget_removes_every_series_of_the_deployment_and_no_other(ns):
    everything(ns, "fraud")
    everything(ns, "other")
    names = {s[0] for s in series(ns)}
    assert {"modelops_check_value", "modelops_check_limit", "modelops_phase", "modelops_traffic_weight_percent",
            "modelops_analysis_duration_seconds_bucket", "modelops_reconcile_errors_total",
            "modelops_progress_deadline_timestamp_seconds", "modelops_rollbacks_total",
            "modelops_promotions_total"} <= names
    other = series(ns, "other")
    metrics.forget(ns, "fraud")
    assert series(ns) == []
    assert series(ns, "other") == other
    metrics.forget(ns, "fraud")  # twice (release, then the daemon's end): harmless
    # Shown again later (a new deployment of the same name): no stale memory of the old series.
    c = check(name="errors", max=0.05)
    metrics.show_analysis(ns, "fraud", "2.0.0", [c], [raw("errors", 0.01)], 0.1)
    assert {(s[1]["check"], s[1]["version"]) for s in series(ns) if s[0] == "modelops_check_value"} == {("errors", "2.0.0")}


def test_analysis_lag_is_the_time_since_the_analysis_fell_due(ns):
    """Due 10 s (the window) after the candidate took traffic, or an interval after the last analysis."""
    from modelops.api.modeldeployment import ModelDeploymentStatus

    spec = make_spec()
    started = ModelDeploymentStatus(canary_version="1.1.0", stable_version="1.0.0", canary_weight=10,
                                    analysis_since="2026-01-01T00:00:00Z")
    metrics.show_analysis_lag(ns, "fraud", spec, started, datetime(2026, 1, 1, 0, 0, 10, 300000, tzinfo=timezone.utc))
    later = started.model_copy(update={"last_analysis_at": "2026-01-01T00:00:30Z"})
    metrics.show_analysis_lag(ns, "fraud", spec, later, datetime(2026, 1, 1, 0, 0, 42, tzinfo=timezone.utc))
    assert value("modelops_analysis_lag_seconds_count", namespace=ns, deployment="fraud") == 2
    assert value("modelops_analysis_lag_seconds_sum", namespace=ns, deployment="fraud") == pytest.approx(2.3)
    assert value("modelops_analysis_lag_seconds_bucket", namespace=ns, deployment="fraud", le="0.5") == 1
    metrics.show_analysis_lag(ns, "fraud", spec, ModelDeploymentStatus(stable_version="1.0.0"),
                              datetime(2026, 1, 1, tzinfo=timezone.utc))  # nothing running: nothing observed
    assert value("modelops_analysis_lag_seconds_count", namespace=ns, deployment="fraud") == 2


def test_the_last_drills_seconds_to_fallback_is_a_gauge_and_goes_with_the_deployment(ns):
    from .test_drill import drilling

    world = drilling()
    spec = world.spec
    metrics.show_decision(ns, "fraud", spec, world.status, world.status)
    assert value("modelops_drill_seconds_to_fallback", namespace=ns, deployment="fraud") is None  # none finished
    done = world.until(lambda d: d.status.drill is None)
    metrics.show_decision(ns, "fraud", spec, world.inputs[-1][1], done.status)
    assert value("modelops_drill_seconds_to_fallback", namespace=ns, deployment="fraud") == 1.0
    assert value("modelops_phase", namespace=ns, deployment="fraud", phase="Drilling") == 0
    metrics.forget(ns, "fraud")
    assert value("modelops_drill_seconds_to_fallback", namespace=ns, deployment="fraud") is None
