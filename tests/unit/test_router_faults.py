"""Routers against a fake cluster: missing ModelVersions, finalizing without recreating, odd objects, field ownership."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from modelops.api.modeldeployment import Serving
from modelops.api.modelversion import ModelVersionSpec
from modelops.rollout import TrafficIntent
from modelops.routers.base import (APPLIED_WEIGHTS, OWNER_ANNOTATION, BackendMisconfigured, BackendNotOwned, Target, VersionUnavailable,
                                   weight_drift)
from modelops.routers.gateway_api import ENDPOINT_SLICES, HTTP_ROUTE, GatewayAPIRouter
from modelops.routers.inference_service import INFERENCE_SERVICE, REVISION_VERSIONS
from tests.sim.fakes import kserve_router
from modelops.routers.seldon import SELDON_DEPLOYMENT, SeldonRouter
from modelops.routers.seldon_v2 import EXPERIMENT, MODEL, OWNER_LABEL, VERSION_ANNOTATION, SeldonV2Router

from ..conftest import model_version_manifest
from ..sim.fakes import merge, record_update, server_side_apply  # as the API server (see tests/sim/fakes.py)
from .test_kserve_router import owned

TIME = "2026-01-01T00:00:00Z"

VERSIONS = {v: ModelVersionSpec.model_validate(model_version_manifest(version=v)["spec"]) for v in ("1.0.0", "1.1.0")}
ROLLBACK, CANARY = TrafficIntent("1.0.0"), TrafficIntent("1.0.0", "1.1.0", 20)


class FakeKube:
    """The Kube calls the routers make, on a dict of objects; every write is recorded.

    Field ownership as the API server keeps it: applies are server-side applies by `modelops`, merge patches
    Updates (tests/sim/fakes.py has the rules)."""

    def __init__(self, *objects: tuple[Any, dict[str, Any]]):
        """The objects given belong to the ModelDeployment `churn` (they carry its owner annotation) and were
        written by the operator, except HTTPRoutes: those are the user's."""
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        for resource, obj in objects:
            self.put(resource, owned_by_churn(obj), "kubectl" if resource is HTTP_ROUTE else "modelops")
        self.calls: list[tuple[str, str, str]] = []
        self.applied: list[tuple[str, dict[str, Any], bool]] = []
        """(name, configuration, force) of every apply."""

    def put(self, resource, obj: dict[str, Any], manager: str = "modelops") -> None:
        obj = {"apiVersion": resource.api_version, "kind": resource.kind, **copy.deepcopy(obj)}
        obj["metadata"].setdefault("resourceVersion", "1")
        obj = owned(obj) if manager == "modelops" else record_update(None, obj, manager, False, TIME)
        self.objects[(resource.plural, obj["metadata"]["name"])] = obj

    def _stored(self, key, obj: dict[str, Any]) -> dict[str, Any]:
        obj["metadata"]["resourceVersion"] = str(int(obj["metadata"].get("resourceVersion") or 0) + 1)
        self.objects[key] = obj
        return copy.deepcopy(obj)

    async def get(self, resource, namespace, name):
        obj = self.objects.get((resource.plural, name))
        return copy.deepcopy(obj)

    async def apply(self, resource, namespace, name, config, *, force=True):
        key = (resource.plural, name)
        live = self.objects.get(key)
        self.calls.append(("apply" if live is not None else "create", resource.kind, name))
        self.applied.append((name, copy.deepcopy(config), force))
        wanted_rv = (config.get("metadata") or {}).get("resourceVersion")
        if live is not None and wanted_rv is not None and wanted_rv != live["metadata"]["resourceVersion"]:
            raise ApiException(status=409, reason="Conflict")
        body = {**config, "apiVersion": resource.api_version, "kind": resource.kind,
                "metadata": {**(config.get("metadata") or {}), "name": name}}
        new = server_side_apply(live, body, "modelops", force, TIME)
        new["metadata"] = {**new["metadata"], "name": name,
                           "resourceVersion": live["metadata"]["resourceVersion"] if live else "0"}
        return self._stored(key, new)

    async def patch(self, resource, namespace, name, patch):
        key = (resource.plural, name)
        self.calls.append(("patch", resource.kind, name))
        self.last_patch = patch
        live = self.objects[key]
        wanted_rv = (patch.get("metadata") or {}).get("resourceVersion")
        if wanted_rv is not None and wanted_rv != live["metadata"]["resourceVersion"]:
            raise ApiException(status=409, reason="Conflict")
        new = merge(live, {**patch, "metadata": {k: v for k, v in (patch.get("metadata") or {}).items()
                                                 if k != "resourceVersion"}})
        return self._stored(key, record_update(live, new, "modelops", False, TIME))

    async def list(self, resource, namespace, label_selector):
        key, value = label_selector.split("=")
        return [copy.deepcopy(o) for (plural, _), o in self.objects.items()
                if plural == resource.plural and ((o["metadata"].get("labels") or {}).get(key) == value)]

    async def delete(self, resource, namespace, name):
        self.calls.append(("delete", resource.kind, name))
        return self.objects.pop((resource.plural, name), None) is not None

    def writes(self, verb: str) -> list[tuple[str, str, str]]:
        return [c for c in self.calls if c[0] == verb]

    def spec(self, resource, name: str = "churn") -> dict[str, Any]:
        return self.objects[(resource.plural, name)]["spec"]


def owned_by_churn(obj: dict[str, Any]) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    obj["metadata"]["annotations"] = {**(obj["metadata"].get("annotations") or {}), OWNER_ANNOTATION: "churn"}
    return obj


def target(serving: dict[str, Any]) -> Target:
    return Target("ml", "churn", Serving.model_validate(serving))


KSERVE = target({"backend": "kserve"})
SELDON = target({"backend": "seldon"})
SELDON_V2 = target({"backend": "seldonV2"})
GATEWAY = target({"backend": "gatewayAPI",
                  "gatewayAPI": {"route": "churn", "services": {"1.0.0": "churn-v1", "1.1.0": "churn-v2"}, "port": 8080}})


def run(router, tgt: Target, intent: TrafficIntent, versions, *, create: bool = True) -> bool:
    async def go() -> bool:
        state = await router.observe(tgt, versions, intent)
        return await router.apply(tgt, intent, versions, state, create=create)
    return asyncio.run(go())


def isvc(version: str, *, percent: int | None = None, latest="r2", rolled="r1", model: dict | None = None):
    predictor: dict[str, Any] = {"model": model or {"modelFormat": {"name": "sklearn"},
                                                   "storageUri": VERSIONS[version].artifact.uri}}
    if percent is not None:
        predictor["canaryTrafficPercent"] = percent
    # r1 was learned to serve 1.0.0 when it was the latest revision (the router records it).
    return {"metadata": {"name": "churn", "generation": 2, "annotations": {REVISION_VERSIONS: '{"r1": "1.0.0"}'}},
            "spec": {"predictor": predictor},
            "status": {"observedGeneration": 2, "components": {"predictor": {
                "latestCreatedRevision": latest, "latestReadyRevision": latest, "latestRolledoutRevision": rolled}}}}


def sdep(*predictors: tuple[str, int]):
    return {"metadata": {"name": "churn", "resourceVersion": "7"},
            "spec": {"predictors": [{"name": name, "traffic": traffic, "replicas": 1,
                                     "graph": {"name": "model", "implementation": "SKLEARN_SERVER",
                                               "modelUri": f"s3://somewhere/{name}"}} for name, traffic in predictors]}}


def model(name: str, version: str, server: str | None = None):
    spec: dict[str, Any] = {"storageUri": f"s3://models/fraud/{version}", "requirements": ["sklearn"]}
    if server:
        spec["server"] = server
    return {"metadata": {"name": name, "generation": 1, "labels": {OWNER_LABEL: "churn"},
                         "annotations": {VERSION_ANNOTATION: version}}, "spec": spec}


def experiment(weights: dict[str, int]):
    return {"metadata": {"name": "churn-rollout", "labels": {OWNER_LABEL: "churn"}},
            "spec": {"default": "churn", "candidates": [{"name": n, "weight": w} for n, w in weights.items()]}}


def http_route(refs: list[dict[str, Any]]):
    return {"metadata": {"name": "churn", "generation": 1, "resourceVersion": "3"},
            "spec": {"rules": [{"backendRefs": refs}]}}


# 1. A ModelVersion that is gone never raises KeyError.

def test_version_unavailable_is_a_misconfiguration_that_names_the_version():
    error = VersionUnavailable("1.0.0", "InferenceService churn predictor")
    assert isinstance(error, BackendMisconfigured) and error.version == "1.0.0"
    assert "the ModelVersion for 1.0.0 is gone and the backend has no unit serving it" in str(error)


def test_kserve_rollback_without_stable_modelversion_holds_traffic_on_the_rolled_out_revision():
    kube = FakeKube((INFERENCE_SERVICE, isvc("1.1.0", percent=20)))
    only_candidate = {"1.1.0": VERSIONS["1.1.0"]}
    before = kube.spec(INFERENCE_SERVICE)["predictor"]["model"]
    assert not run(kserve_router(kube), KSERVE, ROLLBACK, only_candidate)
    assert kube.spec(INFERENCE_SERVICE)["predictor"] == {"model": before, "canaryTrafficPercent": 0}  # the artifact stays
    assert run(kserve_router(kube), KSERVE, ROLLBACK, only_candidate)  # nothing more to do: rest
    assert run(kserve_router(kube), KSERVE, ROLLBACK, {})  # candidate's ModelVersion gone too


def test_kserve_rollback_without_stable_modelversion_or_rolled_out_revision_is_version_unavailable():
    kube = FakeKube((INFERENCE_SERVICE, isvc("1.1.0", latest="r2", rolled="r2")))
    with pytest.raises(VersionUnavailable, match="1.0.0"):
        run(kserve_router(kube), KSERVE, ROLLBACK, {"1.1.0": VERSIONS["1.1.0"]})
    assert not kube.calls


def test_kserve_candidate_gone_while_the_intent_names_it_is_version_unavailable():
    kube = FakeKube((INFERENCE_SERVICE, isvc("1.1.0", percent=20)))
    with pytest.raises(VersionUnavailable, match="1.1.0"):
        run(kserve_router(kube), KSERVE, TrafficIntent("1.0.0", "1.1.0", 50), {"1.0.0": VERSIONS["1.0.0"]})


def test_kserve_weight_step_needs_no_stable_modelversion():
    kube = FakeKube((INFERENCE_SERVICE, isvc("1.1.0", percent=20)))
    run(kserve_router(kube), KSERVE, TrafficIntent("1.0.0", "1.1.0", 50), {"1.1.0": VERSIONS["1.1.0"]})
    assert kube.spec(INFERENCE_SERVICE)["predictor"]["canaryTrafficPercent"] == 50
    assert kube.writes("apply") == [("apply", "InferenceService", "churn")]


def test_kserve_creating_without_stable_modelversion_is_version_unavailable():
    with pytest.raises(VersionUnavailable, match="creating InferenceService churn"):
        run(kserve_router(FakeKube()), KSERVE, ROLLBACK, {})


def test_seldon_reuses_existing_predictors_without_modelversions():
    kube = FakeKube((SELDON_DEPLOYMENT, sdep(("v1-0-0", 80), ("v1-1-0", 20))))

    def predictors():
        return [(p["name"], p["traffic"]) for p in kube.objects[("seldondeployments", "churn")]["spec"]["predictors"]]

    run(SeldonRouter(kube), SELDON, TrafficIntent("1.0.0", "1.1.0", 50), {})
    assert predictors() == [("v1-0-0", 50), ("v1-1-0", 50)]
    run(SeldonRouter(kube), SELDON, ROLLBACK, {})
    assert predictors() == [("v1-0-0", 100)]


def test_seldon_creating_a_missing_predictor_without_its_modelversion_is_version_unavailable():
    kube = FakeKube((SELDON_DEPLOYMENT, sdep(("v1-0-0", 100))))
    with pytest.raises(VersionUnavailable, match="1.1.0"):
        run(SeldonRouter(kube), SELDON, CANARY, {"1.0.0": VERSIONS["1.0.0"]})
    assert not kube.calls


def test_seldon_observes_predictors_of_the_last_intent_without_modelversions():
    live = sdep(("v1-0-0", 80), ("v1-1-0", 20))
    live["status"] = {"deploymentStatus": {"churn-v1-0-0-0-model": {"replicas": 1, "availableReplicas": 1},
                                           "churn-v1-1-0-0-model": {"replicas": 1, "availableReplicas": 1}}}
    state = asyncio.run(SeldonRouter(FakeKube((SELDON_DEPLOYMENT, live))).observe(SELDON, {}, CANARY))
    assert state.ready_versions == {"1.0.0", "1.1.0"} and state.units == {"1.0.0": "v1-0-0", "1.1.0": "v1-1-0"}


def test_seldon_v2_existing_models_need_no_modelversions():
    kube = FakeKube((MODEL, model("churn", "1.0.0")), (MODEL, model("churn-v1-1-0", "1.1.0")),
                    (EXPERIMENT, experiment({"churn": 80, "churn-v1-1-0": 20})))
    assert not run(SeldonV2Router(kube), SELDON_V2, TrafficIntent("1.0.0", "1.1.0", 50), {})
    assert kube.writes("apply") == [("apply", "Experiment", "churn-rollout")] and not kube.writes("create")
    assert not run(SeldonV2Router(kube), SELDON_V2, ROLLBACK, {})
    assert set(kube.objects) == {("models", "churn")}


def test_seldon_v2_mirror_step_keeps_all_traffic_on_stable_and_mirrors_to_the_candidate_until_the_next_step():
    kube = FakeKube((MODEL, model("churn", "1.0.0")), (MODEL, model("churn-v1-1-0", "1.1.0")))
    run(SeldonV2Router(kube), SELDON_V2, TrafficIntent("1.0.0", "1.1.0", 0, mirror=40), {})
    spec = kube.objects[("experiments", "churn-rollout")]["spec"]
    assert spec == {"default": "churn", "candidates": [{"name": "churn", "weight": 100}],
                    "mirror": {"name": "churn-v1-1-0", "percent": 40}}
    run(SeldonV2Router(kube), SELDON_V2, TrafficIntent("1.0.0", "1.1.0", 10), {})
    spec = kube.objects[("experiments", "churn-rollout")]["spec"]
    assert not spec.get("mirror") and spec["candidates"] == [{"name": "churn", "weight": 90},
                                                            {"name": "churn-v1-1-0", "weight": 10}]
    run(SeldonV2Router(kube), SELDON_V2, TrafficIntent("1.0.0", "1.1.0", 0, mirror=40), {})
    run(SeldonV2Router(kube), SELDON_V2, ROLLBACK, {})  # one delete takes the mirror and the split away
    assert set(kube.objects) == {("models", "churn")}


def test_seldon_v2_creating_or_updating_a_model_without_its_modelversion_is_version_unavailable():
    with pytest.raises(VersionUnavailable, match="1.0.0"):
        run(SeldonV2Router(FakeKube()), SELDON_V2, ROLLBACK, {})
    kube = FakeKube((MODEL, model("churn", "1.0.0")))
    with pytest.raises(VersionUnavailable, match="Model churn-v1-1-0"):
        run(SeldonV2Router(kube), SELDON_V2, CANARY, {"1.0.0": VERSIONS["1.0.0"]})
    with pytest.raises(VersionUnavailable, match="Model churn\\b"):  # promotion rewrites the stable Model
        run(SeldonV2Router(kube), SELDON_V2, TrafficIntent("1.1.0"), {"1.0.0": VERSIONS["1.0.0"]})
    assert not kube.calls


def test_gateway_needs_no_modelversions():
    kube = FakeKube((HTTP_ROUTE, http_route([{"name": "churn-v1", "port": 8080, "weight": 100}])))
    run(GatewayAPIRouter(kube), GATEWAY, CANARY, {})
    refs = kube.objects[("httproutes", "churn")]["spec"]["rules"][0]["backendRefs"]
    assert [(r["name"], r["weight"]) for r in refs] == [("churn-v1", 80), ("churn-v2", 20)]


def test_gateway_readiness_lists_the_endpoint_slices_of_each_service_of_the_models_rules_once():
    route = http_route([{"name": "churn-v1", "port": 8080, "weight": 80}, {"name": "churn-v2", "port": 8080, "weight": 20}])
    pin = {"matches": [{"headers": [{"name": "x-cohort", "value": "testers"}]}], "backendRefs": [{"name": "churn-v1"}]}
    route["spec"]["rules"] = [pin, *route["spec"]["rules"], copy.deepcopy(route["spec"]["rules"][0])]
    route["status"] = {"parents": [{"conditions": [{"type": t, "status": "True", "observedGeneration": 1}
                                                   for t in ("Accepted", "ResolvedRefs")]}]}
    kube = FakeKube((HTTP_ROUTE, route))
    kube.put(ENDPOINT_SLICES, {"metadata": {"name": "churn-v1-x", "labels": {"kubernetes.io/service-name": "churn-v1"}},
                               "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": True}}]})
    kube.put(ENDPOINT_SLICES, {"metadata": {"name": "churn-v2-x", "labels": {"kubernetes.io/service-name": "churn-v2"}},
                               "endpoints": [{"addresses": ["10.0.0.2"], "conditions": {"ready": False}}]})
    listed = []
    plain_list = kube.list

    async def counting_list(resource, namespace, label_selector):
        listed.append((resource.plural, namespace, label_selector))
        return await plain_list(resource, namespace, label_selector)

    kube.list = counting_list
    state = asyncio.run(GatewayAPIRouter(kube).observe(GATEWAY, VERSIONS, CANARY))
    assert state.ready_versions == {"1.0.0"}  # 1.1.0's Service has an endpoint, not a ready one
    assert listed == [("endpointslices", "ml", "kubernetes.io/service-name=churn-v1"),
                      ("endpointslices", "ml", "kubernetes.io/service-name=churn-v2")]


# 3. A new artifact does not inherit the old one's runtime or server.

def test_seldon_v2_promotion_clears_the_old_server():
    kube = FakeKube((MODEL, model("churn", "1.0.0", server="mlserver-custom")), (MODEL, model("churn-v1-1-0", "1.1.0")))
    run(SeldonV2Router(kube), SELDON_V2, TrafficIntent("1.1.0"), VERSIONS)
    stable = kube.objects[("models", "churn")]
    assert stable["spec"] == {"storageUri": VERSIONS["1.1.0"].artifact.uri, "requirements": ["sklearn"]}
    assert stable["metadata"]["annotations"][VERSION_ANNOTATION] == "1.1.0"


def test_seldon_v2_promotion_sets_the_new_server():
    with_runtime = ModelVersionSpec.model_validate(
        model_version_manifest(version="1.1.0", artifact={"uri": "s3://m/1.1.0", "digest": "sha256:" + "cd" * 32,
                                                          "format": "onnx", "runtime": "triton"})["spec"])
    kube = FakeKube((MODEL, model("churn", "1.0.0", server="mlserver")))
    run(SeldonV2Router(kube), SELDON_V2, TrafficIntent("1.1.0"), {"1.1.0": with_runtime})
    assert kube.objects[("models", "churn")]["spec"]["server"] == "triton"


# 4. Finalizing (create=False) never recreates a backend object.

@pytest.mark.parametrize("router, tgt", [(kserve_router, KSERVE), (SeldonRouter, SELDON),
                                         (SeldonV2Router, SELDON_V2), (GatewayAPIRouter, GATEWAY)])
def test_finalizing_leaves_a_gone_object_gone(router, tgt):
    kube = FakeKube()
    assert run(router(kube), tgt, ROLLBACK, VERSIONS, create=False)
    assert run(router(kube), tgt, CANARY, VERSIONS, create=False)
    assert not kube.calls


@pytest.mark.parametrize("router, tgt", [(kserve_router, KSERVE), (SeldonRouter, SELDON), (SeldonV2Router, SELDON_V2)])
def test_creating_is_the_default_and_is_an_apply_without_force(router, tgt):
    kube = FakeKube()
    assert not run(router(kube), tgt, ROLLBACK, VERSIONS)
    assert kube.writes("create") and all(not force for _, _, force in kube.applied)


def test_gateway_never_creates_its_route():
    with pytest.raises(BackendMisconfigured, match="HTTPRoute churn not found"):
        run(GatewayAPIRouter(FakeKube()), GATEWAY, ROLLBACK, VERSIONS)


def test_gateway_finalizing_leaves_a_route_that_is_no_longer_ours():
    kube = FakeKube((HTTP_ROUTE, http_route([{"name": "someone-else", "port": 80}])))
    assert run(GatewayAPIRouter(kube), GATEWAY, ROLLBACK, VERSIONS, create=False)
    assert not kube.calls


def test_seldon_v2_finalizing_creates_no_model_and_still_removes_the_candidate():
    kube = FakeKube((MODEL, model("churn-v1-1-0", "1.1.0")), (EXPERIMENT, experiment({"churn": 80, "churn-v1-1-0": 20})))
    assert not run(SeldonV2Router(kube), SELDON_V2, ROLLBACK, VERSIONS, create=False)
    assert not kube.writes("create") and not kube.objects


def test_finalizing_still_moves_traffic_off_the_candidate_of_a_live_object():
    kube = FakeKube((INFERENCE_SERVICE, isvc("1.1.0", percent=20)))
    run(kserve_router(kube), KSERVE, ROLLBACK, VERSIONS, create=False)
    assert kube.writes("apply") and kube.spec(INFERENCE_SERVICE)["predictor"]["canaryTrafficPercent"] == 0


# 5. Odd backend objects read as absent or unknown.

def test_weight_drift_ignores_an_unreadable_record():
    obj = {"metadata": {"annotations": {APPLIED_WEIGHTS: "not json"}}}
    assert weight_drift(obj, {"a": 1}, "x") == ()
    assert weight_drift({"metadata": {"annotations": None}}, {"a": 1}, "x") == ()
    assert weight_drift({"metadata": {}}, {"a": 1}, "x") == ()


def test_seldon_v2_odd_models_and_experiments():
    stable = model("churn", "1.0.0")
    stable["metadata"]["annotations"] = None
    stable["status"] = None
    odd = experiment({})
    odd["spec"] = None
    odd["metadata"]["annotations"] = {APPLIED_WEIGHTS: "{"}
    kube = FakeKube((MODEL, stable), (EXPERIMENT, odd))
    state = asyncio.run(SeldonV2Router(kube).observe(SELDON_V2, VERSIONS, CANARY))
    assert state.ready_versions == frozenset() and state.drift == ()


# --- ownership: a deployment drives only objects that name it ---------------------------------------------------


def foreign(obj: dict[str, Any], owner: str | None) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    obj["metadata"]["annotations"] = {OWNER_ANNOTATION: owner} if owner else {}
    return obj


@pytest.mark.parametrize("owner, words", [(None, "not driven by any ModelDeployment"),
                                          ("team-b-fraud", "driven by ModelDeployment team-b-fraud")])
@pytest.mark.parametrize("router, tgt, resource, obj", [
    (kserve_router, KSERVE, INFERENCE_SERVICE, isvc("1.0.0")),
    (SeldonRouter, SELDON, SELDON_DEPLOYMENT, sdep(("v1-0-0", 100))),
    (GatewayAPIRouter, GATEWAY, HTTP_ROUTE, http_route([{"name": "churn-v1", "port": 8080, "weight": 100}])),
    (SeldonV2Router, SELDON_V2, EXPERIMENT, experiment({"churn": 80, "churn-v1-1-0": 20})),
])
def test_an_object_that_does_not_name_the_deployment_is_never_written(router, tgt, resource, obj, owner, words):
    kube = FakeKube((MODEL, model("churn", "1.0.0")))
    kube.objects[(resource.plural, obj["metadata"]["name"])] = foreign(obj, owner)
    with pytest.raises(BackendNotOwned, match=f"{resource.kind} .* is {words}: annotate it {OWNER_ANNOTATION}=churn"):
        run(router(kube), tgt, ROLLBACK, VERSIONS)
    assert not kube.calls  # nothing created, patched or deleted


def test_objects_the_operator_creates_name_their_deployment():
    kube = FakeKube()
    run(kserve_router(kube), KSERVE, ROLLBACK, VERSIONS)
    assert kube.objects[("inferenceservices", "churn")]["metadata"]["annotations"][OWNER_ANNOTATION] == "churn"


def test_a_model_with_the_owner_label_but_not_the_annotation_is_not_deleted():
    kube = FakeKube((MODEL, model("churn", "1.0.0")))
    kube.objects[("models", "team-b-model")] = foreign(model("team-b-model", "3.0.0"), None)  # labelled churn's
    run(SeldonV2Router(kube), SELDON_V2, ROLLBACK, VERSIONS)
    assert ("models", "team-b-model") in kube.objects and not kube.writes("delete")


# --- field ownership: creation is an apply without force; an apply carries all the operator keeps ------------------


def test_an_object_created_by_someone_else_between_the_read_and_the_create_is_refused_not_taken():
    """The read showed nothing; meanwhile another writer created it with other values: the apply without force is a
    409 conflict (as a POST's AlreadyExists was), never a silent takeover."""
    theirs = isvc("1.0.0")
    theirs["metadata"]["annotations"] = {OWNER_ANNOTATION: "team-b-fraud"}

    class Racing(FakeKube):
        reads = 0

        async def get(self, resource, namespace, name):
            obj = await super().get(resource, namespace, name)
            self.reads += 1
            if self.reads == 2:  # the router's read before it creates: absent, and created right after
                self.put(resource, theirs, "kubectl")
            return obj

    kube = Racing()
    with pytest.raises(ApiException) as refused:
        run(kserve_router(kube), KSERVE, ROLLBACK, VERSIONS)
    assert refused.value.status == 409
    assert kube.objects[("inferenceservices", "churn")]["metadata"]["annotations"][OWNER_ANNOTATION] == "team-b-fraud"


def test_every_apply_carries_the_identity_and_bookkeeping_the_operator_keeps():
    kube = FakeKube()
    run(kserve_router(kube), KSERVE, ROLLBACK, VERSIONS)  # created
    for intent in (ROLLBACK, CANARY, TrafficIntent("1.0.0", "1.1.0", 50), TrafficIntent("1.1.0")):
        run(kserve_router(kube), KSERVE, intent, VERSIONS)
        live = kube.objects[("inferenceservices", "churn")]
        assert live["metadata"]["annotations"][OWNER_ANNOTATION] == "churn"
        assert live["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "modelops"}
    assert [force for _, _, force in kube.applied] == [False] + [True] * (len(kube.applied) - 1)


def test_seldon_v2_promotion_keeps_a_server_another_manager_wrote():
    kube = FakeKube((MODEL, model("churn-v1-1-0", "1.1.0")))
    kube.put(MODEL, owned_by_churn(model("churn", "1.0.0", server="mlserver-custom")), "kubectl")
    run(SeldonV2Router(kube), SELDON_V2, TrafficIntent("1.1.0"), VERSIONS)
    stable = kube.objects[("models", "churn")]
    assert stable["spec"]["storageUri"] == VERSIONS["1.1.0"].artifact.uri
    assert stable["spec"]["server"] == "mlserver-custom"  # theirs: the operator owns only what it wrote


def test_gateway_rules_of_others_keep_their_values_and_the_write_is_conditional():
    other = {"matches": [{"path": {"value": "/docs"}}], "backendRefs": [{"name": "docs", "port": 80}]}
    route = http_route([{"name": "churn-v1", "port": 8080, "weight": 100}])
    route["spec"]["rules"].append(other)
    kube = FakeKube((HTTP_ROUTE, route))
    run(GatewayAPIRouter(kube), GATEWAY, CANARY, {})
    rules = kube.objects[("httproutes", "churn")]["spec"]["rules"]
    assert rules[1] == other
    name, config, force = kube.applied[-1]
    assert force and config["metadata"]["resourceVersion"] == route["metadata"]["resourceVersion"]
    assert set(config["metadata"]) == {"annotations", "resourceVersion"} and set(config["spec"]) == {"rules"}


def test_kube_apply_is_a_server_side_apply_as_modelops_and_returns_what_it_created():
    import json as _json

    from modelops.kube import Kube

    sent, answers = [], [(201, {"metadata": {"name": "churn"}}), (200, {"metadata": {"name": "churn", "x": 1}}),
                         (409, {"message": 'Apply failed with 1 conflict: conflict with "kubectl": .spec.x'})]

    class Response:
        def __init__(self, status, body):
            self.status, self.reason, self.headers, self.body = status, "Conflict" if status == 409 else "OK", {}, body
            self.released = False

        async def read(self):
            return _json.dumps(self.body).encode()

        def release(self):
            self.released = True

    class Custom:
        async def patch_namespaced_custom_object(self, *args, **kwargs):
            sent.append((args, kwargs, Response(*answers[len(sent)])))
            return sent[-1][2]

    kube = Kube.__new__(Kube)
    kube._custom, kube._turns = Custom(), asyncio.Semaphore(1)
    # an apply that creates answers 201: the object comes back all the same
    assert asyncio.run(kube.apply(INFERENCE_SERVICE, "ml", "churn", {"metadata": {"annotations": {"a": "1"}}},
                                  force=False)) == {"metadata": {"name": "churn"}}
    assert asyncio.run(kube.apply(INFERENCE_SERVICE, "ml", "churn", {"spec": {}}))["metadata"]["x"] == 1
    with pytest.raises(ApiException) as conflict:
        asyncio.run(kube.apply(INFERENCE_SERVICE, "ml", "churn", {"spec": {}}))
    assert conflict.value.status == 409 and "kubectl" in conflict.value.body.decode()
    (args, unforced, _), (_, forced, _), _ = sent
    assert args == ("serving.kserve.io", "v1beta1", "ml", "inferenceservices", "churn",
                    {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
                     "metadata": {"annotations": {"a": "1"}, "name": "churn"}})
    assert forced["_content_type"] == "application/apply-patch+yaml"
    assert (forced["field_manager"], forced["force"], unforced["force"]) == ("modelops", "true", None)
    assert all(response.released for _, _, response in sent)


def test_kserve_apply_is_conditional_on_the_read_so_a_second_driver_gets_a_conflict():
    """Two operators may briefly both drive one InferenceService (a deployment relabelled to another shard): one
    writes between the other's read and its apply. That apply carries its read's resourceVersion, so the API server
    answers 409 (reconcile.apply_intent reads again) instead of the older decision overwriting the newer one."""
    kube = FakeKube((INFERENCE_SERVICE, isvc("1.0.0", latest="r1", rolled="r1")))
    router = kserve_router(kube)

    async def go() -> None:
        state = await router.observe(KSERVE, VERSIONS, CANARY)
        other = kube.objects[(INFERENCE_SERVICE.plural, "churn")]
        other["metadata"]["resourceVersion"] = str(int(other["metadata"]["resourceVersion"]) + 1)  # the other driver
        with pytest.raises(ApiException) as conflict:
            await router.apply(KSERVE, CANARY, VERSIONS, state)
        assert conflict.value.status == 409
    asyncio.run(go())
    assert kube.applied[-1][1]["metadata"]["resourceVersion"] == "1"
    assert kube.spec(INFERENCE_SERVICE)["predictor"]["model"]["storageUri"] == VERSIONS["1.0.0"].artifact.uri
