"""Seldon v1 and Gateway API routers' pure halves: readiness, drift, and the applied configuration."""

import pytest

from modelops.api.modelversion import ModelVersionSpec
from modelops.rollout import TrafficIntent
from modelops.routers import gateway_api, seldon
from modelops.routers.base import APPLIED_WEIGHTS, OWNER_ANNOTATION, BackendMisconfigured, VersionUnavailable, unit_name

from ..conftest import model_version_manifest
from .test_kserve_router import owned

VERSIONS = {v: ModelVersionSpec.model_validate(model_version_manifest(version=v)["spec"]) for v in ("1.0.0", "1.1.0")}


def test_unit_names_are_dns_labels():
    assert unit_name("1.2.0-rc.1+build.5") == "v1-2-0-rc-1-build-5"


def sdep(predictors, deployment_status=None, annotations=None):
    return {"metadata": {"name": "churn", "resourceVersion": "7", "annotations": annotations or {}},
            "spec": {"predictors": predictors}, "status": {"deploymentStatus": deployment_status or {}}}


STABLE = {"name": "v1-0-0", "traffic": 100, "replicas": 2, "componentSpecs": [{"spec": {"containers": []}}],
          "graph": {"name": "model", "implementation": "SKLEARN_SERVER", "modelUri": VERSIONS["1.0.0"].artifact.uri}}


def test_seldon_candidate_predictor_is_shaped_like_stable_and_weights_sum_to_100():
    config = seldon.config_for(sdep([STABLE]), TrafficIntent("1.0.0", "1.1.0", 25), VERSIONS)
    stable, candidate = config["spec"]["predictors"]
    assert (stable["traffic"], candidate["traffic"]) == (75, 25)
    assert candidate["name"] == "v1-1-0" and candidate["replicas"] == 2 and candidate["componentSpecs"]
    assert candidate["graph"]["modelUri"] == VERSIONS["1.1.0"].artifact.uri
    assert config["metadata"]["resourceVersion"] == "7"  # a precondition: predictors are copied from that read
    assert config["metadata"]["annotations"] == {APPLIED_WEIGHTS: '{"v1-0-0":75,"v1-1-0":25}'}


def test_seldon_promotion_leaves_one_predictor():
    both = [dict(STABLE, traffic=50), dict(STABLE, name="v1-1-0", traffic=50)]
    config = seldon.config_for(sdep(both), TrafficIntent("1.1.0"), VERSIONS)
    assert [(p["name"], p["traffic"]) for p in config["spec"]["predictors"]] == [("v1-1-0", 100)]


def test_seldon_applies_nothing_when_it_holds_the_intent_and_keeps_its_identity():
    live = owned(sdep([dict(STABLE, traffic=80), dict(STABLE, name="v1-1-0", traffic=20)],
                      annotations={APPLIED_WEIGHTS: '{"v1-0-0":80,"v1-1-0":20}', OWNER_ANNOTATION: "churn"}))
    live["metadata"]["labels"] = {"app.kubernetes.io/managed-by": "modelops"}
    owned(live)
    assert seldon.config_for(live, TrafficIntent("1.0.0", "1.1.0", 20), VERSIONS) is None
    config = seldon.config_for(live, TrafficIntent("1.0.0", "1.1.0", 50), VERSIONS)
    assert config["metadata"]["annotations"][OWNER_ANNOTATION] == "churn"
    assert config["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "modelops"}


def test_seldon_readiness_and_drift():
    ready = {"churn-v1-0-0-0-model": {"replicas": 1, "availableReplicas": 1},
             "churn-v1-1-0-0-model": {"replicas": 1, "availableReplicas": 0}}
    live = sdep([dict(STABLE, traffic=60), dict(STABLE, name="v1-1-0", traffic=40)], ready,
                {APPLIED_WEIGHTS: '{"v1-0-0":80,"v1-1-0":20}'})
    state = seldon.observe(live, VERSIONS)
    assert state.ready_versions == {"1.0.0"} and state.units == {"1.0.0": "v1-0-0", "1.1.0": "v1-1-0"}
    assert "the operator had set" in state.drift[0]


def route(rules, parents=None, generation=3):
    return {"metadata": {"name": "embedder", "generation": generation, "resourceVersion": "9", "annotations": {}},
            "spec": {"rules": rules}, "status": {"parents": parents or []}}


SERVICES = {"1.0.0": "emb-v1", "1.1.0": "emb-v2"}
OTHER_RULE = {"matches": [{"path": {"value": "/docs"}}], "backendRefs": [{"name": "docs", "port": 80}]}


def test_gateway_weights_touch_only_our_refs():
    live = route([{"backendRefs": [{"name": "emb-v1", "port": 8080, "weight": 100}, {"name": "sidecar", "weight": 0}]},
                  OTHER_RULE])
    config = gateway_api.config_for(live, TrafficIntent("1.0.0", "1.1.0", 10), SERVICES, 8080)
    first, second = config["spec"]["rules"]
    assert first["backendRefs"] == [{"name": "sidecar", "weight": 0}, {"name": "emb-v1", "port": 8080, "weight": 90},
                                    {"name": "emb-v2", "port": 8080, "weight": 10}]
    assert second == OTHER_RULE
    # rules are atomic: the whole list, others' rules copied, conditional on the read; nothing else of the user's
    assert config["metadata"] == {"resourceVersion": "9", "annotations": {APPLIED_WEIGHTS: '{"emb-v1":90,"emb-v2":10}'}}


def test_gateway_applies_nothing_when_the_route_holds_the_intent_and_the_operator_owns_it():
    live = route([{"backendRefs": [{"name": "emb-v1", "weight": 90}, {"name": "emb-v2", "weight": 10}]}, OTHER_RULE])
    live["metadata"]["annotations"] = {APPLIED_WEIGHTS: '{"emb-v1":90,"emb-v2":10}', OWNER_ANNOTATION: "embedder"}
    assert gateway_api.config_for(live, TrafficIntent("1.0.0", "1.1.0", 10), SERVICES, 80) is not None  # not its own yet
    owned(live, skip={("metadata", "annotations", OWNER_ANNOTATION)})
    assert gateway_api.config_for(live, TrafficIntent("1.0.0", "1.1.0", 10), SERVICES, 80) is None


def test_gateway_route_without_our_services_is_misconfigured():
    with pytest.raises(BackendMisconfigured, match="no rule routing"):
        gateway_api.config_for(route([OTHER_RULE]), TrafficIntent("1.0.0"), SERVICES, 80)


def test_gateway_readiness_follows_the_implementation_for_this_generation():
    refs = [{"backendRefs": [{"name": "emb-v1", "weight": 90}, {"name": "emb-v2", "weight": 10}]}]

    def parents(generation):
        return [{"conditions": [{"type": "Accepted", "status": "True", "observedGeneration": generation},
                                {"type": "ResolvedRefs", "status": "True", "observedGeneration": generation}]}]

    assert gateway_api.observe(route(refs, parents(3)), SERVICES).ready_versions == {"1.0.0", "1.1.0"}
    assert gateway_api.observe(route(refs, parents(2)), SERVICES).ready_versions == frozenset()


def test_seldon_readiness_matches_a_predictors_own_deployments_only():
    versions = {v: ModelVersionSpec.model_validate(model_version_manifest(version=v)["spec"])
                for v in ("1.0.0", "1.0.0-rc.1", "1.0.0-1")}
    status = {"churn-v1-0-0-0-model": {"replicas": 1, "availableReplicas": 0},
              "churn-v1-0-0-rc-1-0-model": {"replicas": 1, "availableReplicas": 1},
              "churn-v1-0-0-1-0-model": {"replicas": 1, "availableReplicas": 1}}
    live = sdep([dict(STABLE, traffic=80), dict(STABLE, name="v1-0-0-rc-1", traffic=20)], status)
    assert seldon.observe(live, versions).ready_versions == {"1.0.0-rc.1"}
    # v1-0-0-1's deployment is <sdep>-v1-0-0-<1-0-model> too: it belongs to the longest predictor
    live = sdep([dict(STABLE, traffic=80), dict(STABLE, name="v1-0-0-1", traffic=20)], status)
    assert seldon.observe(live, versions).ready_versions == {"1.0.0-1"}
    # a predictor without any deployment of its own is not ready
    assert seldon.observe(sdep([STABLE], {"churn-v1-0-0-rc-1-0-model": status["churn-v1-0-0-rc-1-0-model"]}),
                          versions).ready_versions == frozenset()


def test_seldon_deployment_without_predictors_reads_as_empty_and_gets_them():
    for odd in ({"metadata": {"name": "churn", "resourceVersion": "7"}, "spec": None, "status": None},
                {"metadata": {"name": "churn", "resourceVersion": "7", "annotations": None},
                 "spec": {"predictors": None}, "status": {"deploymentStatus": None}}):
        state = seldon.observe(odd, VERSIONS)
        assert (state.ready_versions, state.units, state.drift) == (frozenset(), {}, ())
        config = seldon.config_for(odd, TrafficIntent("1.0.0"), VERSIONS)
        assert [(p["name"], p["traffic"]) for p in config["spec"]["predictors"]] == [("v1-0-0", 100)]


def test_seldon_existing_predictor_is_reused_without_its_modelversion():
    both = [dict(STABLE, traffic=90), dict(STABLE, name="v1-1-0", traffic=10)]
    config = seldon.config_for(sdep(both), TrafficIntent("1.0.0", "1.1.0", 30), {})
    assert config["spec"]["predictors"] == [dict(STABLE, traffic=70), dict(STABLE, name="v1-1-0", traffic=30)]
    with pytest.raises(VersionUnavailable, match="1.1.0"):
        seldon.config_for(sdep([STABLE]), TrafficIntent("1.0.0", "1.1.0", 30), {"1.0.0": VERSIONS["1.0.0"]})


def test_gateway_rules_without_backend_refs_are_left_alone():
    redirect = {"matches": [{"path": {"value": "/old"}}], "filters": [{"type": "RequestRedirect"}]}
    nulled = {"backendRefs": None}
    live = route([redirect, nulled, {"backendRefs": [{"name": "emb-v1", "weight": 100}]}])
    assert gateway_api.observe(live, SERVICES).units == {"1.0.0": "emb-v1"}
    rules = gateway_api.config_for(live, TrafficIntent("1.0.0", "1.1.0", 10), SERVICES, 80)["spec"]["rules"]
    assert rules[:2] == [redirect, nulled]
    assert rules[2]["backendRefs"] == [{"name": "emb-v1", "weight": 90}, {"name": "emb-v2", "port": 80, "weight": 10}]


def test_gateway_route_without_rules_or_status_is_nothing_served():
    bare = {"metadata": {"name": "embedder", "resourceVersion": "9"}, "spec": None, "status": None}
    assert gateway_api.observe(bare, SERVICES) == gateway_api.observe(None, SERVICES)
    with pytest.raises(BackendMisconfigured, match="no rule routing"):
        gateway_api.config_for(bare, TrafficIntent("1.0.0"), SERVICES, 80)


def test_the_api_knows_the_built_in_checks_each_router_has():
    """BACKEND_TEMPLATES (what admission accepts) and each router's TEMPLATES (what it can query) say the same."""
    from modelops.api.modeldeployment import BACKEND_TEMPLATES
    from modelops.routers.registry import ROUTERS

    assert {backend: frozenset(router.templates) for backend, router in ROUTERS.items()} == BACKEND_TEMPLATES
