"""Mirror and match steps: what the engine sends the candidate, what a rollback takes away, which checks count
(step kinds, dry runs), and which backends refuse which steps."""

import re
from datetime import timedelta

import pytest
from pydantic import ValidationError

from modelops.analysis.evaluate import evaluate
from modelops.api.crd import model_deployment_crd
from modelops.api.modeldeployment import (KSERVE_FULL_OVERRIDE_RULE, KSERVE_FULL_WEIGHT_RULE, ModelDeploymentSpec, Outcome, Phase, TrafficOverride,
                                          full_weight_refusal)
from modelops.rollout import AnalysisReport, TrafficIntent, checks_in_effect

from .rollout_sim import MEASURED, Sim, make_spec

COHORT = {"match": {"headers": [{"name": "x-cohort", "value": "testers"}]}}
GATEWAY = {"backend": "gatewayAPI", "gatewayAPI": {"route": "fraud", "services": {"1.0.0": "fraud-v1", "1.1.0": "fraud-v2"}}}
AGREEMENT = {"name": "agreement", "template": "shadowAgreement", "min": 0.97}
ERRORS = {"name": "errors", "query": "up", "max": 0.05}


def rolling_out(steps=({"mirror": 100}, COHORT, 10, 50), **options) -> Sim:
    sim = Sim(make_spec(steps=steps, serving=GATEWAY, **options))
    sim.step()
    sim.set(version="1.1.0")
    return sim


def test_a_healthy_candidate_walks_mirror_cohort_weights_then_is_promoted():
    sim = rolling_out()
    intents = [sim.decisions[-1].intent]
    while sim.status.phase is not Phase.Stable:
        intents.append(sim.tick("Pass").intent)
        assert len(intents) < 30
    distinct = [i for n, i in enumerate(intents) if n == 0 or i != intents[n - 1]]
    assert distinct == [
        TrafficIntent("1.0.0", "1.1.0", 0, mirror=100),
        TrafficIntent("1.0.0", "1.1.0", 0, match=(("x-cohort", "testers"),)),
        TrafficIntent("1.0.0", "1.1.0", 10),
        TrafficIntent("1.0.0", "1.1.0", 50),
        TrafficIntent("1.1.0"),
    ]
    steps = [e.message for d in sim.decisions for e in d.events if e.reason == "StepAdvanced"]
    assert steps == ["1.1.0: step 1/4 mirroring 100% of stable's requests",
                     "1.1.0: step 2/4 for the cohort x-cohort: testers", "1.1.0: step 3/4 at 10%", "1.1.0: step 4/4 at 50%"]


@pytest.mark.parametrize("rollback", ["Immediate", "Progressive"])
@pytest.mark.parametrize("failing_step", [0, 1])
def test_a_failure_in_a_mirror_or_match_step_restores_stable_and_removes_both_in_one_intent(failing_step, rollback):
    sim = rolling_out(analysis={"failureLimit": 1}, strategy={"rollback": rollback})
    while sim.status.current_step != failing_step:
        sim.tick("Pass")
    d = sim.tick("Fail")
    assert d.status.phase is Phase.RolledBack
    assert d.intent == TrafficIntent("1.0.0")  # one write: no weight, no mirror, no cohort on the candidate
    assert (d.status.canary_mirror, d.status.canary_match) == (0, [])


def test_progressive_rollback_steps_back_over_weights_only():
    sim = rolling_out(steps=({"mirror": 50}, 10, 50), analysis={"failureLimit": 1}, strategy={"rollback": "Progressive"})
    while sim.status.canary_weight != 50:
        sim.tick("Pass")
    sim.tick("Fail")
    assert (sim.status.phase, sim.decisions[-1].intent) == (Phase.RollingBack, TrafficIntent("1.0.0", "1.1.0", 50))
    assert sim.tick("Pass").intent == TrafficIntent("1.0.0", "1.1.0", 10)
    assert sim.tick("Pass").intent == TrafficIntent("1.0.0")  # never back into mirroring
    assert sim.status.phase is Phase.RolledBack


def test_a_candidate_not_ready_gets_no_copies_and_no_cohort():
    sim = Sim(make_spec(steps=(COHORT, 50), serving=GATEWAY))
    sim.ready = {"1.0.0"}
    sim.step()
    d = sim.set(version="1.1.0")
    assert d.intent == TrafficIntent("1.0.0", "1.1.0", 0) and d.status.waiting_since is not None


def test_a_pinned_weight_replaces_the_mirror():
    sim = rolling_out()
    assert sim.status.canary_mirror == 100
    d = sim.set(traffic_override=TrafficOverride(weight=5, reason="see it with real users"))
    assert d.intent == TrafficIntent("1.0.0", "1.1.0", 5)


def test_the_agreement_check_counts_in_mirror_steps_only_unless_told_otherwise():
    sim = rolling_out(checks=[dict(AGREEMENT, min=0), ERRORS, dict(ERRORS, name="latency", stepKinds=["weight"])])
    seen = []
    while sim.status.phase is not Phase.Stable and len(seen) < 30:
        seen.append((sim.status.current_step, tuple(c.name for c in checks_in_effect(sim.spec, sim.status))))
        sim.tick("Pass")
    assert sorted(set(seen)) == [
        (0, ("agreement", "errors")), (1, ("errors",)), (2, ("errors", "latency")), (3, ("errors", "latency"))]


def test_results_of_checks_not_in_effect_do_not_decide():
    sim = rolling_out(steps=(COHORT, 50), checks=[AGREEMENT, ERRORS], analysis={"failureLimit": 1})
    d = sim.tick("Pass")  # 0.01 breaks the agreement limit, but a match step mirrors nothing: it cannot fail it
    assert d.status.phase is Phase.Progressing and d.status.last_outcome.value == "Passed"
    sim = rolling_out(steps=({"mirror": 100}, 50), checks=[AGREEMENT, ERRORS], analysis={"failureLimit": 1})
    assert sim.tick("Pass").status.phase is Phase.RolledBack  # the control: in a mirror step it does


def spec(backend: str, *steps) -> dict:
    serving = GATEWAY if backend == "gatewayAPI" else {"backend": backend}
    return {"model": "fraud", "version": "1.0.0", "serving": serving, "strategy": {"steps": list(steps)}}


@pytest.mark.parametrize("backend, steps, words", [
    ("kserve", [{"mirror": 100}, {"weight": 10}], "strategy.steps \\[0\\]: the kserve backend cannot carry them: KServe"),
    ("kserve", [COHORT], "no request mirroring and no header routing"),
    ("seldon", [{"mirror": 50}], "mirror: 100 only"),
    ("seldon", [{"mirror": 100}, COHORT], "strategy.steps \\[1\\]: the seldon backend"),
    ("seldonV2", [COHORT, {"weight": 20}], "route no header cohort"),
])
def test_a_step_the_backend_cannot_carry_is_refused_naming_the_step_and_why(backend, steps, words):
    with pytest.raises(ValidationError, match=words):
        ModelDeploymentSpec.model_validate(spec(backend, *steps))


@pytest.mark.parametrize("backend, steps", [
    ("seldon", [{"mirror": 100}, {"weight": 50}]),
    ("seldonV2", [{"mirror": 30}, {"weight": 50}]),
    ("gatewayAPI", [{"mirror": 5}, COHORT, {"weight": 10}, {"mirror": 100}, {"weight": 50}]),
])
def test_steps_the_backend_can_carry_mix_freely(backend, steps):
    ModelDeploymentSpec.model_validate(spec(backend, *steps))


@pytest.mark.parametrize("step, words", [
    ({"weight": 10, "mirror": 10}, "exactly one of weight, mirror or match"),
    ({"pause": "1m"}, "exactly one of weight, mirror or match"),
    ({"mirror": 0}, "greater than or equal to 1"),
    ({"match": {"headers": []}}, "at least 1 item"),
    ({"match": {"headers": [{"name": "X-A", "value": "1"}, {"name": "x-a", "value": "2"}]}}, "each header is named once"),
    ({"match": {"headers": [{"name": "bad header", "value": "1"}]}}, "should match pattern"),
])
def test_malformed_steps_are_refused(step, words):
    with pytest.raises(ValidationError, match=words):
        ModelDeploymentSpec.model_validate(spec("gatewayAPI", step))


def test_weighted_steps_increase_among_themselves_whatever_lies_between():
    with pytest.raises(ValidationError, match="weights of weighted steps must be strictly increasing, got \\[50, 10\\]"):
        ModelDeploymentSpec.model_validate(spec("gatewayAPI", {"weight": 50}, {"mirror": 100}, {"weight": 10}))


def test_a_dry_run_check_is_measured_and_shown_but_never_decides():
    trial = dict(ERRORS, name="trial", dryRun=True)
    sim = Sim(make_spec(checks=[ERRORS, trial], analysis={"failureLimit": 1}))
    sim.step()
    sim.set(version="1.1.0")
    results = (evaluate(sim.spec.analysis.checks[0], MEASURED["Pass"], "t"),
               evaluate(sim.spec.analysis.checks[1], MEASURED["Fail"], "t"))
    sim.now += timedelta(seconds=10)
    d = sim.step(AnalysisReport(sim.now, results))
    assert d.status.phase is Phase.Progressing and d.status.last_outcome is Outcome.Passed  # the trial decided nothing
    assert [(c.name, c.verdict.value, c.dry_run) for c in d.status.checks] == [("errors", "Pass", False),
                                                                             ("trial", "Fail", True)]
    assert [e.reason for e in d.events if e.type == "Warning"] == ["DryRunCheckFailed"]
    # the control: the same measurement without dryRun rolls back
    sim = Sim(make_spec(checks=[ERRORS, dict(trial, dryRun=False)], analysis={"failureLimit": 1}))
    sim.step()
    sim.set(version="1.1.0")
    sim.now += timedelta(seconds=10)
    results = (evaluate(sim.spec.analysis.checks[0], MEASURED["Pass"], "t"),
               evaluate(sim.spec.analysis.checks[1], MEASURED["Fail"], "t"))
    assert sim.step(AnalysisReport(sim.now, results)).status.phase is Phase.RolledBack


@pytest.mark.parametrize("strategy, words", [
    ({"type": "HotSwap"}, "strategy.type HotSwap is refused: on the kserve backend a candidate never takes 100 %"),
    ({"steps": [{"weight": 10}, {"weight": 100}]}, "strategy.steps \\[1\\]: weight 100 is refused: on the kserve backend"),
])
def test_kserve_refuses_a_candidate_at_100_percent_before_promotion_naming_the_field(strategy, words):
    """KServe rolls out the revision that takes all traffic; a rollback after that keeps the candidate serving until
    stable's revision has started again. Refused by the API server's rule and, for a spec stored before it, by the
    round (full_weight_refusal: not a model validator, so that such a spec still parses)."""
    stored = ModelDeploymentSpec.model_validate({**spec("kserve"), "strategy": strategy})
    assert re.search(words, full_weight_refusal(stored))
    rule = next(r for r in model_deployment_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
                ["spec"]["x-kubernetes-validations"] if r == KSERVE_FULL_WEIGHT_RULE)
    assert "HotSwap" in rule["rule"] and "s.weight < 100" in rule["rule"]


def test_kserve_refuses_a_traffic_override_of_100_percent_naming_the_field():
    """An SRE's pin at 100 % makes KServe roll the candidate's revision out just as a step of 100 does."""
    stored = ModelDeploymentSpec.model_validate({**spec("kserve", {"weight": 10}), "trafficOverride": {"weight": 100, "reason": "r"}})
    assert full_weight_refusal(stored).startswith("trafficOverride.weight 100 is refused: on the kserve backend")
    pinned_below = ModelDeploymentSpec.model_validate({**spec("kserve", {"weight": 10}), "trafficOverride": {"weight": 99, "reason": "r"}})
    assert full_weight_refusal(pinned_below) is None
    rules = model_deployment_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
        "x-kubernetes-validations"]
    assert KSERVE_FULL_OVERRIDE_RULE in rules


@pytest.mark.parametrize("backend, strategy", [
    ("kserve", {"steps": [{"weight": 10}, {"weight": 99}]}),
    ("gatewayAPI", {"type": "HotSwap"}),
    ("seldon", {"steps": [{"weight": 50}, {"weight": 100}]}),
])
def test_other_backends_and_steps_below_100_are_not_refused(backend, strategy):
    assert full_weight_refusal(ModelDeploymentSpec.model_validate({**spec(backend), "strategy": strategy})) is None
