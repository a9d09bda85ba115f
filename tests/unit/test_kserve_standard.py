"""The kserve router in KServe's Standard mode: the candidate as a spec.canary entry, the split on the HTTPRoute."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest

from modelops.api.modeldeployment import ModelDeploymentSpec
from modelops.api.modelversion import ModelVersionSpec
from modelops.rollout import TrafficIntent
from modelops.routers.base import BackendMisconfigured, unit_name
from modelops.routers.gateway_api import ENDPOINT_SLICES, HTTP_ROUTE, SERVICE_NAME_LABEL
from modelops.routers.inference_service import DEPLOYMENT_MODE, INFERENCE_SERVICE, VERSION_MODELS
from modelops.routers.kserve import SERVERLESS, STANDARD, KServeRouter, driven_mode
from tests.sim.fakes import kserve_router
from modelops.routers.kserve_standard import config_standard, layout, predictor_service, route_intent

from ..conftest import model_version_manifest
from .test_kserve_router import owned
from .test_router_faults import FakeKube, run, target

RC = "1.2.0-rc.1"
VERSIONS = {v: ModelVersionSpec.model_validate(model_version_manifest(version=v)["spec"]) for v in ("1.0.0", "1.1.0", RC)}
ROUTED = target({"backend": "kserve", "kserve": {"httpRoute": {"name": "churn-route"}}})
UNROUTED = target({"backend": "kserve"})


def model_of(version: str) -> dict[str, Any]:
    return {"modelFormat": {"name": "sklearn"}, "storageUri": VERSIONS[version].artifact.uri}


def configured(live: dict[str, Any], intent: TrafficIntent, versions: dict[str, ModelVersionSpec] = VERSIONS):
    return config_standard(live, layout(live, versions), intent, versions)


def entry(version: str, percent: int) -> dict[str, Any]:
    return {"predictor": {"name": unit_name(version), "model": model_of(version)}, "trafficPercent": percent}


def standard(stable: str = "1.0.0", *canaries: tuple[str, int], ready: tuple[str, ...] = (), generation: int = 2,
             address: str | None = None, mode: dict[str, str] | None = None, name: str | None = None,
             annotations: dict[str, str] | None = None) -> dict[str, Any]:
    """A Standard-mode InferenceService `churn`: `stable` in the predictor (named `name`), one canary entry per
    (version, percent); KServe reports ready whichever of stable and those versions `ready` names, its address the
    Service `address` (by default stable's as named)."""
    predictor: dict[str, Any] = {"model": model_of(stable)}
    if name:
        predictor["name"] = name
    spec: dict[str, Any] = {"predictor": predictor}
    if canaries:
        spec["canary"] = [entry(v, p) for v, p in canaries]
    mode = {"annotation": "Standard"} if mode is None else mode
    status: dict[str, Any] = {"address": {"url": f"http://{address or predictor_service('churn', name)}.ml.svc"},
                              "conditions": [
        {"type": "PredictorReady", "status": "True" if stable in ready else "False"}],
        "canaryStatuses": [{"name": unit_name(v), "ready": v in ready, "trafficPercent": p} for v, p in canaries]}
    if "status" in mode:
        status["deploymentMode"] = mode["status"]
    meta_annotations = {**({DEPLOYMENT_MODE: mode["annotation"]} if "annotation" in mode else {}), **(annotations or {})}
    return {"metadata": {"name": "churn", "generation": generation, "resourceVersion": "41",
                         "annotations": meta_annotations}, "spec": spec, "status": status}


def route(weights: dict[str, int]) -> dict[str, Any]:
    """The user's HTTPRoute, accepted and resolved by its Gateway, one path-only rule with those Service weights."""
    return {"metadata": {"name": "churn-route", "generation": 1, "resourceVersion": "3"},
            "spec": {"rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                                "backendRefs": [{"name": s, "port": 80, "weight": w} for s, w in weights.items()]}]},
            "status": {"parents": [{"conditions": [{"type": "Accepted", "status": "True"},
                                                   {"type": "ResolvedRefs", "status": "True"}]}]}}


def endpoints(service: str, ready: bool = True) -> dict[str, Any]:
    return {"metadata": {"name": f"{service}-abcde", "labels": {SERVICE_NAME_LABEL: service}},
            "endpoints": [{"conditions": {"ready": ready}}]}


def cluster(isvc: dict[str, Any], weights: dict[str, int], *ready_services: str) -> FakeKube:
    return FakeKube((INFERENCE_SERVICE, isvc), (HTTP_ROUTE, route(weights)),
                    *[(ENDPOINT_SLICES, endpoints(s)) for s in ready_services])


def live_weights(kube: FakeKube) -> dict[str, int]:
    [rule] = kube.objects[("httproutes", "churn-route")]["spec"]["rules"]
    return {r["name"]: r["weight"] for r in rule["backendRefs"]}


# Mode detection.

@pytest.mark.parametrize("mode, routed, driven", [
    ({}, False, SERVERLESS), ({"annotation": "Knative"}, False, SERVERLESS),
    ({"annotation": "Standard"}, True, STANDARD), ({"annotation": "RawDeployment"}, True, STANDARD),
    ({"annotation": "Knative", "status": "Standard"}, True, STANDARD),  # KServe's recorded mode wins
])
def test_the_mode_is_read_as_kserve_resolves_it_and_each_is_driven_its_way(mode, routed, driven):
    assert driven_mode(standard(mode=mode), routed) == driven


def test_standard_mode_without_a_route_is_refused_naming_the_field_and_why():
    with pytest.raises(BackendMisconfigured) as refused:
        driven_mode(standard(mode={"status": "Standard"}), routed=False)
    words = str(refused.value)
    assert "Standard deployment mode (status.deploymentMode)" in words
    assert "sends no request to spec.canary" in words and "serving.kserve.httpRoute" in words


@pytest.mark.parametrize("mode, words", [({}, "remove serving.kserve.httpRoute"),
                                         ({"annotation": "ModelMesh"}, "serverless (Knative) and Standard mode only")])
def test_a_route_on_serverless_and_modelmesh_in_any_case_are_refused(mode, words):
    with pytest.raises(BackendMisconfigured, match=re.escape(words)):
        driven_mode(standard(mode=mode), routed=True)


def test_without_a_route_nothing_is_written_and_the_split_is_never_claimed():
    kube = cluster(standard("1.0.0", ready=("1.0.0",)), {"churn-predictor": 100}, "churn-predictor")
    with pytest.raises(BackendMisconfigured, match="serving.kserve.httpRoute"):
        run(kserve_router(kube), UNROUTED, TrafficIntent("1.0.0", "1.1.0", 10), VERSIONS)
    assert kube.writes("apply") == [] and kube.writes("patch") == []


# The canary entry.

def test_a_candidate_is_one_canary_entry_named_after_its_unit_with_its_artifact_and_its_weight():
    live = owned(standard("1.0.0", ready=("1.0.0",)))
    config = configured(live, TrafficIntent("1.0.0", "1.1.0", 10))
    assert config["spec"]["canary"] == [entry("1.1.0", 10)]
    assert config["metadata"]["resourceVersion"] == "41"
    assert set(json.loads(config["metadata"]["annotations"][VERSION_MODELS])) == {"1.0.0", "1.1.0"}
    assert config["spec"]["predictor"]["model"] == model_of("1.0.0")  # stable's own, as the operator owned it


def test_an_entry_already_carrying_the_intent_needs_no_write_and_a_new_weight_does():
    live = owned(standard("1.0.0", ("1.1.0", 10), ready=("1.0.0", "1.1.0"),
                          annotations={VERSION_MODELS: json.dumps({"1.0.0": model_of("1.0.0"),
                                                                   "1.1.0": model_of("1.1.0")})}))
    assert configured(live, TrafficIntent("1.0.0", "1.1.0", 10)) is None
    assert configured(live, TrafficIntent("1.0.0", "1.1.0", 25))["spec"]["canary"] == [entry("1.1.0", 25)]


def test_an_entry_as_kserves_webhook_round_trips_it_needs_no_write_and_an_entry_changed_otherwise_does():
    """KServe's defaulting webhook re-encodes the object from its Go structs, adding the models' `name: ""` and
    `resources: {}` (seen on its controller v0.20.0): that is the operator's entry, or no step would ever be seen
    carried, and the model it recorded (rewriting the annotation would restart every predictor's pods: KServe
    copies the InferenceService's annotations into them). A value that is not empty is a difference."""
    models = {VERSION_MODELS: json.dumps({"1.0.0": model_of("1.0.0"), "1.1.0": model_of("1.1.0")})}
    live = owned(standard("1.0.0", ("1.1.0", 10), ready=("1.0.0", "1.1.0"), annotations=models))
    live["spec"]["canary"][0]["predictor"]["model"].update(name="", resources={})
    live["spec"]["predictor"]["model"].update(name="", resources={})  # recorded as written, not rewritten
    assert configured(live, TrafficIntent("1.0.0", "1.1.0", 10)) is None
    live["spec"]["canary"][0]["predictor"]["model"]["runtime"] = "another-runtime"
    assert configured(live, TrafficIntent("1.0.0", "1.1.0", 10))["spec"]["canary"] == [entry("1.1.0", 10)]


def test_a_rollback_removes_the_entry():
    live = owned(standard("1.0.0", ("1.1.0", 10), ready=("1.0.0", "1.1.0")))
    config = configured(live, TrafficIntent("1.0.0"))
    assert config is not None and "canary" not in config["spec"]  # left out of the apply: the API server removes it


def test_the_candidates_entry_needs_no_modelversion_once_written():
    live = owned(standard("1.0.0", ("1.1.0", 10), ready=("1.0.0", "1.1.0"),
                          annotations={VERSION_MODELS: json.dumps({"1.1.0": model_of("1.1.0")})}))
    config = configured(live, TrafficIntent("1.0.0", "1.1.0", 25), {"1.0.0": VERSIONS["1.0.0"]})
    assert config["spec"]["canary"] == [entry("1.1.0", 25)]


# Promotion.

def test_promotion_names_the_predictor_after_the_entry_with_its_model_and_removes_the_entry():
    live = owned(standard("1.0.0", ("1.1.0", 50), ready=("1.0.0", "1.1.0")))
    config = configured(live, TrafficIntent("1.1.0"))
    assert config["spec"]["predictor"] == {"name": "v1-1-0", "model": model_of("1.1.0")}
    assert "canary" not in config["spec"]


def test_after_promotion_stable_is_ready_only_once_kserves_status_names_its_service():
    """status.observedGeneration is stable's Deployment's generation (1 for a Deployment made as a canary), no
    InferenceService generation: a gate on it never opened after a promotion, seen on KServe's controller."""
    promoted = standard("1.1.0", ready=("1.1.0",), name="v1-1-0", generation=7, address="churn-predictor")
    promoted["status"]["observedGeneration"] = 1
    assert layout(promoted, VERSIONS).ready == frozenset()  # a status from before the promotion
    promoted["status"]["address"]["url"] = "http://churn-v1-1-0-predictor.ml.svc.cluster.local"
    assert layout(promoted, VERSIONS).ready == {"1.1.0"}
    assert layout(promoted, VERSIONS).services["1.1.0"] == "churn-v1-1-0-predictor"


def test_a_promoted_predictor_whose_model_was_reverted_under_its_name_gets_stables_model_back_in_place():
    """A manifest from before the promotion re-applied (or an edit) puts 1.0.0's model on the Deployment named
    v1-1-0: staging 1.1.0 as an entry of that same name is what KServe's validation refuses."""
    reverted = owned(standard("1.0.0", ready=("1.0.0",), name="v1-1-0"))
    config = configured(reverted, TrafficIntent("1.1.0"))
    assert config["spec"]["predictor"] == {"name": "v1-1-0", "model": model_of("1.1.0")}
    assert "canary" not in config["spec"]
    assert route_intent(TrafficIntent("1.1.0"), layout(reverted, VERSIONS)) == TrafficIntent("1.0.0")


# Unit names.

def test_a_prerelease_version_gets_its_digest_named_unit_and_is_read_back_from_it():
    live = owned(standard("1.0.0", ready=("1.0.0",)))
    [written] = configured(live, TrafficIntent("1.0.0", RC, 0))["spec"]["canary"]
    assert written["predictor"]["name"] == unit_name(RC) and unit_name(RC).startswith("v1-2-0-rc-1-")
    found = layout(standard("1.0.0", (RC, 0)), VERSIONS)
    assert list(found.canaries) == [RC] and found.services[RC] == f"churn-{unit_name(RC)}-predictor"


def test_an_entry_that_is_no_version_of_the_deployment_is_refused_not_removed():
    live = standard("1.0.0")
    live["spec"]["canary"] = [{"predictor": {"name": "someones-test", "model": model_of("1.1.0")}, "trafficPercent": 0}]
    with pytest.raises(BackendMisconfigured, match=r"spec.canary\[0\] \(someones-test\) is no version"):
        layout(live, VERSIONS)


def test_a_predictor_service_name_over_63_characters_is_refused_before_any_write():
    live = owned(standard("1.0.0"))
    live["metadata"]["name"] = "n" * 50
    with pytest.raises(BackendMisconfigured, match="longer than 63"):
        configured(live, TrafficIntent("1.0.0", "1.1.0", 0))


# The route.

def test_the_route_names_the_candidate_only_once_kserve_reports_its_canary_ready():
    intent = TrafficIntent("1.0.0", "1.1.0", 0)
    assert route_intent(intent, layout(standard("1.0.0", ("1.1.0", 0), ready=("1.0.0",)), VERSIONS)) == \
        TrafficIntent("1.0.0")
    assert route_intent(intent, layout(standard("1.0.0", ("1.1.0", 0), ready=("1.0.0", "1.1.0")), VERSIONS)) == intent


def test_a_rollout_step_a_rollback_and_a_promotion_through_the_router():
    """The entry is written at 0 %, the route names the candidate once KServe has it ready, a step's weight is the
    route's and the entry's; a rollback puts the route all on stable before the entry goes; promotion puts it on the
    candidate's Service before the predictor is renamed."""
    kube = cluster(owned(standard("1.0.0", ready=("1.0.0",))), {"churn-predictor": 100},
                   "churn-predictor", "churn-v1-1-0-predictor")
    router = kserve_router(kube)
    assert not run(router, ROUTED, TrafficIntent("1.0.0", "1.1.0", 0), VERSIONS)
    assert kube.spec(INFERENCE_SERVICE)["canary"] == [entry("1.1.0", 0)]
    assert live_weights(kube) == {"churn-predictor": 100}  # KServe has not reported the canary ready
    state = asyncio_observe(router, TrafficIntent("1.0.0", "1.1.0", 0))
    assert state.ready_versions == {"1.0.0"}

    report_ready(kube, "1.0.0", "1.1.0")
    run(router, ROUTED, TrafficIntent("1.0.0", "1.1.0", 0), VERSIONS)
    assert live_weights(kube) == {"churn-predictor": 100, "churn-v1-1-0-predictor": 0}
    state = asyncio_observe(router, TrafficIntent("1.0.0", "1.1.0", 0))
    assert state.ready_versions == {"1.0.0", "1.1.0"}
    assert state.units == {"1.0.0": "churn-predictor", "1.1.0": "churn-v1-1-0-predictor"}

    run(router, ROUTED, TrafficIntent("1.0.0", "1.1.0", 10), VERSIONS)
    assert live_weights(kube) == {"churn-predictor": 90, "churn-v1-1-0-predictor": 10}
    assert kube.spec(INFERENCE_SERVICE)["canary"] == [entry("1.1.0", 10)]
    assert run(router, ROUTED, TrafficIntent("1.0.0", "1.1.0", 10), VERSIONS)  # carried: nothing more to write

    # Each Service KServe would delete leaves the route first, and the InferenceService drops it a round later.
    kube.calls.clear()
    run(router, ROUTED, TrafficIntent("1.0.0"), VERSIONS)
    assert live_weights(kube) == {"churn-predictor": 100}
    assert kube.spec(INFERENCE_SERVICE)["canary"] == [entry("1.1.0", 10)]
    run(router, ROUTED, TrafficIntent("1.0.0"), VERSIONS)
    assert "canary" not in kube.spec(INFERENCE_SERVICE)
    assert [c[1] for c in kube.writes("apply")] == ["HTTPRoute", "InferenceService"]

    run(router, ROUTED, TrafficIntent("1.0.0", "1.1.0", 50), VERSIONS)
    report_ready(kube, "1.0.0", "1.1.0")
    run(router, ROUTED, TrafficIntent("1.0.0", "1.1.0", 50), VERSIONS)
    kube.calls.clear()
    run(router, ROUTED, TrafficIntent("1.1.0"), VERSIONS)
    run(router, ROUTED, TrafficIntent("1.1.0"), VERSIONS)
    assert live_weights(kube) == {"churn-v1-1-0-predictor": 100}
    assert kube.spec(INFERENCE_SERVICE)["predictor"] == {"name": "v1-1-0", "model": model_of("1.1.0")}
    assert [c[1] for c in kube.writes("apply")] == ["HTTPRoute", "InferenceService"]


def test_mirror_and_match_steps_are_admitted_on_kserve_only_with_a_route():
    def spec(serving: dict[str, Any]) -> dict[str, Any]:
        return {"model": "churn", "version": "1.1.0", "serving": serving,
                "strategy": {"steps": [{"mirror": 50}, {"match": {"headers": [{"name": "x-cohort", "value": "a"}]}}]}}
    ModelDeploymentSpec.model_validate(spec({"backend": "kserve", "kserve": {"httpRoute": {"name": "r"}}}))
    with pytest.raises(ValueError, match=r"strategy.steps \[0, 1\].*serving.kserve.httpRoute carries them"):
        ModelDeploymentSpec.model_validate(spec({"backend": "kserve"}))


def asyncio_observe(router: KServeRouter, last: TrafficIntent):
    return asyncio.run(router.observe(ROUTED, VERSIONS, last))


def report_ready(kube: FakeKube, *versions: str) -> None:
    """What KServe's reconcile writes to the status: stable's predictor Service as named now, stable's and the
    canaries' readiness."""
    isvc = kube.objects[("inferenceservices", "churn")]
    stable = layout(isvc, VERSIONS).stable
    canaries = isvc["spec"].get("canary") or []
    service = predictor_service("churn", isvc["spec"]["predictor"].get("name"))
    isvc["status"] = {"address": {"url": f"http://{service}.ml.svc.cluster.local"}, "conditions": [
        {"type": "PredictorReady", "status": "True" if stable in versions else "False"}],
        "canaryStatuses": [{"name": e["predictor"]["name"], "ready": any(e["predictor"]["name"] == unit_name(v)
                                                                          for v in versions),
                            "trafficPercent": e["trafficPercent"]} for e in canaries]}


def test_with_a_route_the_knative_templates_are_refused_and_the_contract_ones_accepted():
    """KServe exports no request metrics in Standard mode: errorRate would find no series (NoData, never a verdict)."""
    def spec(template: str, serving: dict[str, Any]) -> dict[str, Any]:
        return {"model": "churn", "version": "1.1.0", "serving": serving,
                "analysis": {"checks": [{"name": "c", "template": template, "max": 0.5}]}}
    routed = {"backend": "kserve", "kserve": {"httpRoute": {"name": "r"}}}
    ModelDeploymentSpec.model_validate(spec("driftScore", routed))
    ModelDeploymentSpec.model_validate(spec("errorRate", {"backend": "kserve"}))
    with pytest.raises(ValueError, match=r"analysis.checks \['c'\]: the kserve backend \(Standard mode"):
        ModelDeploymentSpec.model_validate(spec("errorRate", routed))


def test_a_rollback_to_a_retained_version_runs_it_as_an_entry_before_the_route_moves_and_it_is_promoted():
    """Never written in place: the route would name a Service KServe never makes (all traffic lost), and two versions
    would share one Deployment's name."""
    isvc = owned(standard("1.1.0", ready=("1.1.0",), name="v1-1-0"))
    isvc["metadata"]["annotations"][VERSION_MODELS] = json.dumps({"1.0.0": model_of("1.0.0"),
                                                                  "1.1.0": model_of("1.1.0")})
    kube = cluster(isvc, {"churn-v1-1-0-predictor": 100}, "churn-v1-1-0-predictor", "churn-v1-0-0-predictor")
    router = kserve_router(kube)
    assert not run(router, ROUTED, TrafficIntent("1.0.0"), VERSIONS)
    live = kube.spec(INFERENCE_SERVICE)
    assert live["predictor"] == {"name": "v1-1-0", "model": model_of("1.1.0")}
    assert live["canary"] == [entry("1.0.0", 0)]
    assert live_weights(kube) == {"churn-v1-1-0-predictor": 100}  # the version running keeps serving
    report_ready(kube, "1.1.0", "1.0.0")
    assert not run(router, ROUTED, TrafficIntent("1.0.0"), VERSIONS)
    assert live_weights(kube) == {"churn-v1-0-0-predictor": 100}
    assert kube.spec(INFERENCE_SERVICE)["predictor"]["name"] == "v1-1-0"  # promoted once the route has moved
    assert not run(router, ROUTED, TrafficIntent("1.0.0"), VERSIONS)
    live = kube.spec(INFERENCE_SERVICE)
    assert live["predictor"] == {"name": "v1-0-0", "model": model_of("1.0.0")} and "canary" not in live
    report_ready(kube, "1.0.0")
    assert run(router, ROUTED, TrafficIntent("1.0.0"), VERSIONS)
