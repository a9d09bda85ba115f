"""Warm fallbacks (spec.keepWarm): which retained versions the engine asks to keep deployed, what status and the
WarmFallbacks condition say of them, and how KServe's Standard mode carries them as spec.canary entries at 0 %, so
that going back to one is a route write and a rename, never a cold start."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import pytest

from modelops.api.crd import model_deployment_crd
from modelops.api.modeldeployment import KEEP_WARM_RULE, ModelDeploymentSpec, ModelDeploymentStatus, Phase, Request
from modelops.rollout import Observations, TrafficIntent, decide
from modelops.routers.base import KEEPS_NO_WARM, unit_name
from modelops.routers.gateway_api import caught_up
from modelops.routers.inference_service import INFERENCE_SERVICE, VERSION_MODELS
from modelops.routers.kserve_standard import layout, removed_predictors
from modelops.view import versions_line
from tests.sim.fakes import kserve_router

from .rollout_sim import START, Sim, make_spec
from .test_kserve_router import owned
from .test_kserve_standard import ROUTED, VERSIONS, cluster, configured, entry, live_weights, model_of, report_ready, \
    standard
from .test_router_faults import run


# --- the spec ---------------------------------------------------------------------------------------------------

def test_keep_warm_above_retention_is_refused_naming_the_field_and_the_crd_says_so_too():
    with pytest.raises(ValueError, match=r"keepWarm: 3 is more than retention \(2\): only retained versions"):
        make_spec(keepWarm=3)
    assert make_spec(keepWarm=2, retention=2).keep_warm == 2
    spec_schema = model_deployment_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert KEEP_WARM_RULE in spec_schema["x-kubernetes-validations"]
    assert spec_schema["properties"]["keepWarm"]["default"] == 0


# --- the engine ---------------------------------------------------------------------------------------------------

def promoted_twice(keep_warm: int = 1) -> Sim:
    """1.2.0 stable after 1.0.0 then 1.1.0: 1.1.0 and 1.0.0 retained, newest first."""
    sim = Sim(make_spec(strategy={"type": "HotSwap"}, keepWarm=keep_warm))
    sim.step()
    for version in ("1.1.0", "1.2.0"):
        sim.set(version=version)
        sim.tick("Pass")
    assert (sim.status.stable_version, sim.status.retained_versions) == ("1.2.0", ["1.1.0", "1.0.0"])
    return sim


def decided(sim: Sim, **observed) -> ModelDeploymentStatus:
    return decide(sim.spec, sim.status, Observations(frozenset(sim.ready), **observed), sim.now).status


def test_the_newest_retained_versions_are_kept_warm_and_their_readiness_is_the_backends():
    sim = promoted_twice(keep_warm=1)
    status = decided(sim)
    assert [(w.version, w.ready) for w in status.warm_versions] == [("1.1.0", False)]
    [condition] = [c for c in status.conditions if c.type == "WarmFallbacks"]
    assert (condition.status, condition.reason) == ("False", "Starting")
    status = decided(sim, warm_ready=frozenset({"1.1.0", "1.0.0"}))
    assert [(w.version, w.ready) for w in status.warm_versions] == [("1.1.0", True)]
    [condition] = [c for c in status.conditions if c.type == "WarmFallbacks"]
    assert (condition.status, condition.message) == ("True", "warm and ready: 1.1.0")
    decision = decide(sim.spec, status, Observations(frozenset(sim.ready), warm_ready=frozenset({"1.1.0"})), sim.now)
    assert decision.intent == TrafficIntent("1.2.0", warm=("1.1.0",))
    assert decision.status == status  # a fixed point


def test_a_backend_that_keeps_none_warm_is_said_so_and_nothing_is_claimed():
    sim = promoted_twice(keep_warm=2)
    status = decided(sim, keeps_no_warm=KEEPS_NO_WARM)
    assert status.warm_versions == []
    [condition] = [c for c in status.conditions if c.type == "WarmFallbacks"]
    assert (condition.status, condition.reason) == ("False", "NotKept")
    assert KEEPS_NO_WARM in condition.message


def test_without_keep_warm_there_is_no_warm_version_and_no_condition():
    status = decided(promoted_twice(keep_warm=0), warm_ready=frozenset({"1.1.0"}))
    assert status.warm_versions == [] and all(c.type != "WarmFallbacks" for c in status.conditions)


def test_unread_the_backend_keeps_the_readiness_last_seen_and_the_condition_is_unknown():
    sim = promoted_twice()
    sim.status = decided(sim, warm_ready=frozenset({"1.1.0"}))
    status = decide(sim.spec, sim.status, Observations(None), sim.now).status
    assert [(w.version, w.ready) for w in status.warm_versions] == [("1.1.0", True)]
    assert next(c for c in status.conditions if c.type == "WarmFallbacks").status == "Unknown"


def test_a_version_on_its_way_in_or_gone_is_not_kept_warm_beside_itself():
    sim = promoted_twice(keep_warm=2)
    sim.status = decided(sim, warm_ready=frozenset({"1.1.0", "1.0.0"}))
    # A Rollback to 1.1.0: it is stable now, and 1.2.0, retained first, is warm instead.
    rollback = Request(id="r1", action="Rollback", version="1.1.0", reason="bad", actor="sre")
    status = decide(sim.spec.model_copy(update={"request": rollback}), sim.status,
                    Observations(frozenset(sim.ready), warm_ready=frozenset({"1.0.0"})), sim.now).status
    assert (status.stable_version, [w.version for w in status.warm_versions]) == ("1.1.0", ["1.2.0", "1.0.0"])
    # A version whose ModelVersion is gone stays warm only while the backend still holds it.
    gone = Observations(frozenset(sim.ready), available_versions=frozenset({"1.2.0", "1.1.0"}))
    assert [w.version for w in decide(sim.spec, ModelDeploymentStatus(**{**sim.status.model_dump(),
                                                                        "warm_versions": []}),
                                      gone, sim.now).status.warm_versions] == ["1.1.0"]
    # A drill's fallback is routed to: not also warm.
    drill = Request(id="d1", action="Drill", reason="game day", actor="sre")
    status = decide(sim.spec.model_copy(update={"request": drill}), sim.status,
                    Observations(frozenset(sim.ready), warm_ready=frozenset({"1.1.0", "1.0.0"})), sim.now).status
    assert status.phase is Phase.Drilling and [w.version for w in status.warm_versions] == ["1.0.0"]


# --- KServe Standard mode ---------------------------------------------------------------------------------------------

def test_a_warm_version_is_an_entry_at_zero_percent_beside_the_candidates():
    live = owned(standard("1.0.0"))
    config = configured(live, TrafficIntent("1.0.0", "1.1.0", 10, warm=("1.2.0-rc.1",)))
    assert config["spec"]["canary"] == [entry("1.1.0", 10), entry("1.2.0-rc.1", 0)]
    # Stable is never its own warm entry, nor the candidate twice.
    assert configured(live, TrafficIntent("1.0.0", "1.1.0", 10, warm=("1.0.0", "1.1.0")))["spec"]["canary"] == \
        [entry("1.1.0", 10)]


def test_a_warm_version_nothing_can_deploy_is_left_out_not_a_failed_round():
    live = owned(standard("1.0.0"))
    versions = {v: spec for v, spec in VERSIONS.items() if v != "1.1.0"}
    config = configured(live, TrafficIntent("1.0.0", warm=("1.1.0",)), versions)
    assert config is None or "canary" not in config["spec"]


def test_at_rest_with_a_warm_entry_the_round_settles():
    isvc = standard("1.1.0", ("1.0.0", 0), ready=("1.1.0", "1.0.0"), name="v1-1-0",
                    annotations={VERSION_MODELS: json.dumps({v: model_of(v) for v in ("1.0.0", "1.1.0")})})
    kube = cluster(owned(isvc), {"churn-v1-1-0-predictor": 100}, "churn-v1-1-0-predictor")
    run(kserve_router(kube), ROUTED, TrafficIntent("1.1.0", warm=("1.0.0",)), VERSIONS)  # the route's weights owned
    kube.calls.clear()
    assert run(kserve_router(kube), ROUTED, TrafficIntent("1.1.0", warm=("1.0.0",)), VERSIONS)
    assert kube.writes("apply") == []
    state = asyncio.run(kserve_router(kube).observe(ROUTED, VERSIONS, None))
    assert state.warm_ready == {"1.0.0"} and state.keeps_no_warm is None
    assert state.ready_versions == {"1.1.0"}  # warm, not routed: never a version traffic may go to


def test_going_back_to_a_warm_version_is_one_round_and_deletes_nothing():
    """The route moves to the warm entry's Service, running already, and the predictor takes its name in the same
    round; the old stable becomes the warm entry under the name its Deployment already has."""
    isvc = owned(standard("1.1.0", ("1.0.0", 0), ready=("1.1.0", "1.0.0"), name="v1-1-0"))
    isvc["metadata"]["annotations"][VERSION_MODELS] = json.dumps({v: model_of(v) for v in ("1.0.0", "1.1.0")})
    kube = cluster(isvc, {"churn-v1-1-0-predictor": 100}, "churn-v1-1-0-predictor", "churn-v1-0-0-predictor")
    before = json.loads(json.dumps(kube.objects[("inferenceservices", "churn")]))
    kube.calls.clear()
    assert not run(kserve_router(kube), ROUTED, TrafficIntent("1.0.0", warm=("1.1.0",)), VERSIONS)
    assert live_weights(kube) == {"churn-v1-0-0-predictor": 100}
    live = kube.spec(INFERENCE_SERVICE)
    assert live["predictor"] == {"name": "v1-0-0", "model": model_of("1.0.0")}
    assert live["canary"] == [entry("1.1.0", 0)]
    assert removed_predictors(before, {"spec": live}) == set()
    assert [c[1] for c in kube.writes("apply")] == ["HTTPRoute", "InferenceService"]
    report_ready(kube, "1.0.0", "1.1.0")
    assert run(kserve_router(kube), ROUTED, TrafficIntent("1.0.0", warm=("1.1.0",)), VERSIONS)


def test_a_cold_version_is_staged_first_and_its_predecessor_goes_only_once_the_gateway_has_caught_up():
    isvc = owned(standard("1.1.0", ready=("1.1.0",), name="v1-1-0"))
    isvc["metadata"]["annotations"][VERSION_MODELS] = json.dumps({v: model_of(v) for v in ("1.0.0", "1.1.0")})
    kube = cluster(isvc, {"churn-v1-1-0-predictor": 100}, "churn-v1-1-0-predictor", "churn-v1-0-0-predictor")
    router = kserve_router(kube)
    run(router, ROUTED, TrafficIntent("1.0.0"), VERSIONS)
    report_ready(kube, "1.1.0", "1.0.0")
    run(router, ROUTED, TrafficIntent("1.0.0"), VERSIONS)
    route = kube.objects[("httproutes", "churn-route")]
    assert live_weights(kube) == {"churn-v1-0-0-predictor": 100}
    route["metadata"]["generation"] = 2  # the write made a generation the Gateway has not judged yet
    route["spec"]["parentRefs"] = [{"name": "gateway"}]
    for parent in route["status"]["parents"]:
        parent["parentRef"] = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gateway"}
        for condition in parent["conditions"]:
            condition["observedGeneration"] = 1
    assert not caught_up(route)
    for _ in range(3):  # the Gateway may still send requests to stable's Service: KServe must not delete it yet
        run(router, ROUTED, TrafficIntent("1.0.0"), VERSIONS)
        assert kube.spec(INFERENCE_SERVICE)["predictor"]["name"] == "v1-1-0"
    for parent in route["status"]["parents"]:
        for condition in parent["conditions"]:
            condition["observedGeneration"] = route["metadata"]["generation"]
    run(router, ROUTED, TrafficIntent("1.0.0"), VERSIONS)
    assert kube.spec(INFERENCE_SERVICE)["predictor"]["name"] == "v1-0-0"


def test_a_verdict_without_a_generation_a_stale_parent_or_no_route_holds_nothing_back():
    def route(*parents: tuple[str, int | None]) -> dict:
        return {"metadata": {"namespace": "ml", "generation": 4},
                "spec": {"parentRefs": [{"name": "public"}, {"name": "internal", "namespace": "ml"}]},
                "status": {"parents": [{"parentRef": {"name": name}, "conditions": [
                    {"type": "Accepted", **({} if seen is None else {"observedGeneration": seen})}]}
                    for name, seen in parents]}}

    assert caught_up(None)
    assert caught_up(route(("public", None), ("internal", 4)))
    assert not caught_up(route(("public", 4), ("internal", 3)))  # one of the route's Gateways lags
    assert caught_up(route(("public", 4), ("internal", 4), ("removed-gateway", 1)))  # no longer a parent


def test_layout_reads_warm_entries_as_versions_with_their_services():
    isvc = owned(standard("1.1.0", ("1.0.0", 0), ready=("1.0.0",), name="v1-1-0"))
    found = layout(isvc, VERSIONS)
    assert set(found.canaries) == {"1.0.0"} and found.ready == {"1.0.0"}
    assert found.services["1.0.0"] == f"churn-{unit_name('1.0.0')}-predictor"


def test_the_intent_of_a_status_carries_its_warm_versions():
    sim = promoted_twice()
    sim.status = decided(sim, warm_ready=frozenset({"1.1.0"}))
    assert replace(TrafficIntent("1.2.0"), warm=("1.1.0",)) == \
        decide(sim.spec, sim.status, Observations(frozenset(sim.ready)), START).intent


def test_kubectl_modelops_shows_which_retained_versions_are_warm():
    versions = {"stable": "1.2.0", "candidate": None, "fallback": "1.1.0", "failed": None, "desired": "1.2.0",
                "retained": ["1.1.0", "1.0.0"], "warm": [{"version": "1.1.0", "ready": True},
                                                       {"version": "1.0.0", "ready": False}]}
    assert versions_line({"versions": versions}) == \
        "stable 1.2.0, candidate -, fallback 1.1.0, warm 1.1.0 1.0.0 (starting)"


def test_keep_warm_on_a_backend_that_keeps_none_is_a_problem_kubectl_modelops_shows_and_a_starting_one_is_not():
    from datetime import datetime, timezone

    from modelops.view import view

    sim = promoted_twice(keep_warm=1)
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)

    def problems(status: ModelDeploymentStatus) -> list[str]:
        obj = {"metadata": {"name": "fraud", "namespace": "ml"}, "spec": sim.spec.model_dump(by_alias=True),
               "status": status.model_dump(by_alias=True, exclude_none=True)}
        return [p["type"] for p in view(obj, now)["problems"]]

    assert problems(decided(sim, keeps_no_warm=KEEPS_NO_WARM)) == ["WarmFallbacks"]
    assert problems(decided(sim)) == []  # starting: not ready yet, no problem


def test_a_drill_completes_with_warm_versions_and_its_fallback_stays_warm_on_the_way_back():
    """Whether the backend carries a drill's stage is a question of routing: the warm versions of the intent do not
    enter it. Turning back, the fallback is warm again, so its entry stays (at 0 %) instead of being deleted."""
    from modelops.api.modeldeployment import DrillResult

    from .test_drill import World, assert_fixed_points, drill

    sim = promoted_twice(keep_warm=2)
    world = World(sim.spec, sim.status, sim.now)
    world.round(request=drill())
    done = world.until(lambda d: d.status.drill is None, limit=120)
    assert done.status.last_drill.result is DrillResult.Completed, done.status.last_drill
    on_fallback = [d for d in world.decisions if d.status.drill and d.status.drill.returning_at is None]
    assert on_fallback and all(d.intent.warm == ("1.0.0",) for d in on_fallback)  # the fallback is routed to
    returning = [d for d in world.decisions if d.status.drill and d.status.drill.returning_at]
    assert returning and all(d.intent.warm == ("1.1.0", "1.0.0") for d in returning)
    assert_fixed_points(world)


def test_a_spec_the_operator_refuses_keeps_the_warm_versions_and_their_condition():
    from modelops.rollout import fail_safe

    sim = promoted_twice(keep_warm=1)
    status = decided(sim, warm_ready=frozenset({"1.1.0"}))
    stand_in = ModelDeploymentSpec.model_construct(serving=sim.spec.serving, history_limit=20)  # keep_warm 0
    after = fail_safe(stand_in, status, "refused", sim.now).status
    assert after.warm_versions == status.warm_versions
    assert [c for c in after.conditions if c.type == "WarmFallbacks"] == \
        [c for c in status.conditions if c.type == "WarmFallbacks"]


def test_a_warm_version_without_its_modelversion_is_a_fixed_point():
    sim = promoted_twice(keep_warm=1)
    gone = Observations(frozenset(sim.ready), available_versions=frozenset({"1.2.0"}))  # 1.1.0's ModelVersion gone
    status = decide(sim.spec, decided(sim, warm_ready=frozenset({"1.1.0"})), gone, sim.now).status
    assert status.warm_versions == []  # not reported ready: nothing left to keep it from
    assert decide(sim.spec, status, gone, sim.now).status == status
    held = replace(gone, warm_ready=frozenset({"1.1.0"}))
    kept = decide(sim.spec, status, held, sim.now).status
    assert [w.version for w in kept.warm_versions] == ["1.1.0"]  # the backend still holds it, ready
    assert decide(sim.spec, kept, held, sim.now).status == kept


def test_unread_a_backend_adds_no_warm_version():
    sim = promoted_twice(keep_warm=2)
    none_yet = sim.status.model_copy(update={"warm_versions": []})
    assert decide(sim.spec, none_yet, Observations(None), sim.now).status.warm_versions == []
    listed = decided(sim, warm_ready=frozenset({"1.1.0"}))
    assert decide(sim.spec, listed, Observations(None), sim.now).status.warm_versions == listed.warm_versions
