"""Seldon v1 and Gateway API routers' pure halves: readiness, drift, and the applied configuration."""

import re

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from modelops.api.modelversion import ModelVersionSpec
from modelops.api.types import NAME_PATTERN, SEMVER_PATTERN
from modelops.rollout import TrafficIntent
from modelops.routers import gateway_api, seldon
from modelops.routers.base import APPLIED_WEIGHTS, OWNER_ANNOTATION, BackendMisconfigured, VersionUnavailable, unit_name

from ..conftest import model_version_manifest
from .test_kserve_router import owned

VERSIONS = {v: ModelVersionSpec.model_validate(model_version_manifest(version=v)["spec"]) for v in ("1.0.0", "1.1.0")}


def test_release_versions_keep_their_unit_names_and_others_read_alike_with_a_digest():
    assert unit_name("1.2.0") == "v1-2-0"  # the names units of release versions already have
    assert unit_name("10.20.30") == "v10-20-30"
    assert re.fullmatch(r"v1-2-0-rc-1-build-5-[0-9a-f]{10}", unit_name("1.2.0-rc.1+build.5"))


@pytest.mark.parametrize("a, b", [("1.0.0-rc.1", "1.0.0-rc-1"), ("2.0.0+b1", "2.0.0-b1"), ("1.0.0-RC1", "1.0.0-rc1"),
                                  ("1.0.0", "1.0.0--")])
def test_versions_that_read_alike_get_distinct_unit_names(a, b):
    assert unit_name(a) != unit_name(b)


def test_a_seldon_candidate_that_reads_like_stable_is_not_ready_on_stables_predictor():
    stable, candidate = "1.0.0-rc.1", "1.0.0-rc-1"
    versions = {v: ModelVersionSpec.model_validate(model_version_manifest(version=v)["spec"]) for v in (stable, candidate)}
    live = sdep([dict(STABLE, name=unit_name(stable))],
                {f"churn-{unit_name(stable)}-0-model": {"replicas": 1, "availableReplicas": 1}})
    state = seldon.observe(live, versions)
    assert state.ready_versions == {stable} and state.units == {stable: unit_name(stable)}
    config = seldon.config_for(live, TrafficIntent(stable, candidate, 10), versions)
    assert [p["name"] for p in config["spec"]["predictors"]] == [unit_name(stable), unit_name(candidate)]


def test_a_seldon_predictor_named_before_the_digest_is_found_after_an_upgrade_unless_two_versions_read_alike():
    """An operator from before the digest named 1.0.0-rc.1's predictor v1-0-0-rc-1: the upgrade finds it serving
    and keeps it, by that name, rather than replacing stable's predictor with a new one that has still to start."""
    stable, candidate = "1.0.0-rc.1", "1.0.0"
    versions = {v: ModelVersionSpec.model_validate(model_version_manifest(version=v)["spec"]) for v in (stable, candidate)}
    live = sdep([dict(STABLE, name="v1-0-0-rc-1")], {"churn-v1-0-0-rc-1-0-model": {"replicas": 1, "availableReplicas": 1}})
    state = seldon.observe(live, versions)
    assert state.ready_versions == {stable} and state.units == {stable: "v1-0-0-rc-1"}
    assert seldon.config_for(live, TrafficIntent(stable), versions)["spec"]["predictors"] == live["spec"]["predictors"]
    config = seldon.config_for(live, TrafficIntent(stable, candidate, 10), versions)
    assert [(p["name"], p["traffic"], p["replicas"]) for p in config["spec"]["predictors"]] == [
        ("v1-0-0-rc-1", 90, 2), ("v1-0-0", 10, 2)]
    # 1.0.0-RC-1 reads alike: the old name could be either's, so it is neither's.
    alike = {**versions, "1.0.0-RC-1": versions[stable]}
    assert seldon.observe(live, alike).ready_versions == frozenset()
    config = seldon.config_for(live, TrafficIntent(stable), alike)
    assert [p["name"] for p in config["spec"]["predictors"]] == [unit_name(stable)]


_NUMBER = st.integers(0, 10**6).map(str)
_IDENTIFIER = _NUMBER | st.text("0123456789abcXYZ-", min_size=1, max_size=8).filter(lambda t: not t.isdigit())


@st.composite
def semvers(draw) -> str:
    """Versions as SEMVER_PATTERN allows them, rich in what a unit name loses: case, '.', '-', '+'."""
    version = ".".join(draw(st.lists(_NUMBER, min_size=3, max_size=3)))
    if draw(st.booleans()):
        version += "-" + ".".join(draw(st.lists(_IDENTIFIER, min_size=1, max_size=4)))
    if draw(st.booleans()):
        version += "+" + ".".join(draw(st.lists(st.text("0123456789aZ-", min_size=1, max_size=6), min_size=1,
                                                max_size=3)))
    return version


def _look_alike(version: str, data) -> str:
    """`version` with some of what a unit name loses changed: a letter's case, a '.', '-' or '+' swapped."""
    chars = list(version)
    for i in data.draw(st.lists(st.integers(0, len(chars) - 1), max_size=3)):
        chars[i] = {".": "-", "-": ".", "+": "-"}.get(chars[i], chars[i].swapcase())
    return "".join(chars)


@given(semvers(), st.data())
def test_distinct_versions_never_share_a_unit_name(version, data):
    other = data.draw(semvers() | st.just(_look_alike(version, data)))
    assume(other != version and re.fullmatch(SEMVER_PATTERN, other))
    assert unit_name(version) != unit_name(other)


@given(semvers() | st.text("0123456789.aZ+-", min_size=5, max_size=128).map(lambda t: "1.0.0-" + t))
def test_unit_names_are_dns_labels(version):
    name = unit_name(version)
    assert re.fullmatch(NAME_PATTERN, name) and len(name) <= 63, name


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


def parents(generation):
    return [{"conditions": [{"type": "Accepted", "status": "True", "observedGeneration": generation},
                            {"type": "ResolvedRefs", "status": "True", "observedGeneration": generation}]}]


def endpoint_slice(service, *ready):
    """An EndpointSlice of `service` with one endpoint per entry of `ready` (None: no ready field at all)."""
    return {"metadata": {"name": f"{service}-abcde", "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4", "ports": [{"port": 8080}],
            "endpoints": [{"addresses": [f"10.0.0.{i + 1}"], **({} if r is None else {"conditions": {"ready": r}})}
                          for i, r in enumerate(ready)]}


SERVING = {"emb-v1": [endpoint_slice("emb-v1", True)], "emb-v2": [endpoint_slice("emb-v2", True)]}


def test_gateway_readiness_follows_the_implementations_verdict_and_a_step_does_not_flap_it():
    refs = [{"backendRefs": [{"name": "emb-v1", "weight": 90}, {"name": "emb-v2", "weight": 10}]}]
    assert gateway_api.observe(route(refs, parents(3)), SERVICES, SERVING).ready_versions == {"1.0.0", "1.1.0"}
    # the operator's own write made generation 3; the Gateway still routes by its verdict on 2 until it catches up
    assert gateway_api.observe(route(refs, parents(2)), SERVICES, SERVING).ready_versions == {"1.0.0", "1.1.0"}
    # a ref new in generation 3 whose Service has no endpoint is not ready, whatever generation 2 said
    assert gateway_api.observe(route(refs, parents(2)), SERVICES, {"emb-v1": SERVING["emb-v1"]}).ready_versions == {"1.0.0"}
    refused = [{"conditions": [{"type": "Accepted", "status": "True", "observedGeneration": 3},
                               {"type": "ResolvedRefs", "status": "False", "observedGeneration": 3}]}]
    assert gateway_api.observe(route(refs, refused), SERVICES, SERVING).ready_versions == frozenset()
    assert gateway_api.observe(route(refs, []), SERVICES, SERVING).ready_versions == frozenset()  # no verdict yet


def test_gateway_version_is_ready_only_with_a_ready_endpoint_behind_its_service():
    refs = [{"backendRefs": [{"name": "emb-v1", "weight": 100}, {"name": "emb-v2", "weight": 0}]}]
    live = route(refs, parents(3))  # Accepted and ResolvedRefs for this generation: both Services exist

    def ready(v2_slices):
        return gateway_api.observe(live, SERVICES, {"emb-v1": SERVING["emb-v1"], "emb-v2": v2_slices}).ready_versions

    assert ready([]) == {"1.0.0"}  # no EndpointSlice: no pod behind the Service
    assert ready([endpoint_slice("emb-v2")]) == {"1.0.0"}  # a slice without endpoints
    assert ready([endpoint_slice("emb-v2", False, False)]) == {"1.0.0"}  # pods there, none ready
    assert ready([endpoint_slice("emb-v2", False), endpoint_slice("emb-v2", True)]) == {"1.0.0", "1.1.0"}
    assert ready([endpoint_slice("emb-v2", None)]) == {"1.0.0", "1.1.0"}  # nil ready is "true" (discovery/v1)
    assert ready([endpoint_slice("emb-v1", True)]) == {"1.0.0"}  # another Service's slice says nothing of emb-v2
    # a ready endpoint does not make a route the Gateway has not resolved ready
    unresolved = [{"conditions": [{"type": "Accepted", "status": "True", "observedGeneration": 3},
                                  {"type": "ResolvedRefs", "status": "False", "observedGeneration": 3}]}]
    assert gateway_api.observe(route(refs, unresolved), SERVICES, SERVING).ready_versions == frozenset()


TESTERS = {"matches": [{"path": {"type": "PathPrefix", "value": "/"}, "headers": [{"name": "x-cohort", "value": "testers"}]}],
           "backendRefs": [{"name": "emb-v1", "port": 8080}]}
DEFAULT = {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
           "backendRefs": [{"name": "emb-v1", "port": 8080, "weight": 100}]}


def test_gateway_pinned_rule_is_left_alone_through_a_rollout_and_a_promotion():
    live = route([TESTERS, DEFAULT, OTHER_RULE], parents(3))
    for intent in (TrafficIntent("1.0.0", "1.1.0", 10), TrafficIntent("1.0.0", "1.1.0", 50), TrafficIntent("1.1.0")):
        rules = gateway_api.config_for(live, intent, SERVICES, 8080)["spec"]["rules"]
        assert rules[0] == TESTERS and rules[2] == OTHER_RULE  # refs and weights as the user wrote them
        live = route(rules, parents(3))
    assert live["spec"]["rules"][1]["backendRefs"] == [{"name": "emb-v2", "port": 8080, "weight": 100}]
    # the pin is not the model's: neither its readiness nor its weight counts
    live["metadata"]["annotations"] = {APPLIED_WEIGHTS: '{"emb-v2":100}'}
    state = gateway_api.observe(live, SERVICES, SERVING)
    assert state.ready_versions == {"1.1.0"} and state.units == {"1.1.0": "emb-v2"} and state.drift == ()
    assert gateway_api.served_services(live, {"emb-v1", "emb-v2"}) == {"emb-v2"}


def test_gateway_pins_by_query_parameter_or_method_are_left_alone_and_no_matches_is_the_default():
    by_query = {"matches": [{"queryParams": [{"name": "cohort", "value": "a"}]}], "backendRefs": [{"name": "emb-v2"}]}
    by_method = {"matches": [{"method": "PUT"}], "backendRefs": [{"name": "emb-v1", "weight": 3}]}
    default = {"backendRefs": [{"name": "emb-v1", "weight": 100}]}
    live = route([by_query, by_method, default])
    assert gateway_api.model_rules(live, {"emb-v1", "emb-v2"}) == [2]
    rules = gateway_api.config_for(live, TrafficIntent("1.0.0", "1.1.0", 20), SERVICES, 80)["spec"]["rules"]
    assert rules[:2] == [by_query, by_method]
    assert rules[2]["backendRefs"] == [{"name": "emb-v1", "weight": 80}, {"name": "emb-v2", "port": 80, "weight": 20}]


def test_gateway_every_path_only_rule_of_the_model_carries_the_split():
    api = {"matches": [{"path": {"type": "PathPrefix", "value": "/v1"}}], "backendRefs": [{"name": "emb-v1"}]}
    rules = gateway_api.config_for(route([DEFAULT, api]), TrafficIntent("1.0.0", "1.1.0", 30), SERVICES, 80)["spec"]["rules"]
    assert [[(r["name"], r["weight"]) for r in rule["backendRefs"]] for rule in rules] == \
        [[("emb-v1", 70), ("emb-v2", 30)]] * 2


@pytest.mark.parametrize("rule, words", [
    ({"name": "testers", "matches": [{"headers": [{"name": "x-cohort", "value": "testers"}]}],
      "backendRefs": [{"name": "emb-v1", "weight": 50}, {"name": "emb-v2", "weight": 50}]},
     r"HTTPRoute embedder rule 0 \(testers\) selects by headers/queryParams/method and routes to several"),
    ({"matches": [{"path": {"value": "/"}}, {"headers": [{"name": "x-cohort", "value": "testers"}]}],
      "backendRefs": [{"name": "emb-v2"}]},
     r"HTTPRoute embedder rule 0 routes to \['emb-v2'\] with matches that select by path alone and others"),
])
def test_gateway_ambiguous_rule_is_reported_naming_it_and_left_alone_while_the_model_rule_is_driven(rule, words):
    live = route([rule, DEFAULT], parents(3))
    state = gateway_api.observe(live, SERVICES, SERVING)
    assert len(state.refused) == 1 and re.match(words, state.refused[0])
    assert state.units == {"1.0.0": "emb-v1"}  # read from the model's own rule only
    rules = gateway_api.config_for(live, TrafficIntent("1.0.0"), SERVICES, 80)["spec"]["rules"]
    assert rules[0] == rule  # never written
    assert rules[1]["backendRefs"] == [{"name": "emb-v1", "port": 8080, "weight": 100}]
    with pytest.raises(BackendMisconfigured, match="no rule routing .* by path alone.*" + words):
        gateway_api.config_for(route([rule], parents(1)), TrafficIntent("1.0.0"), SERVICES, 80)


def test_gateway_pins_are_reported_by_version():
    live = route([TESTERS, DEFAULT, OTHER_RULE], parents(3))
    assert gateway_api.observe(live, SERVICES, SERVING).pins == {"1.0.0": ("HTTPRoute embedder rule 0",)}


def test_gateway_route_with_pins_only_is_misconfigured():
    with pytest.raises(BackendMisconfigured, match="no rule routing .* by path alone"):
        gateway_api.config_for(route([TESTERS, OTHER_RULE]), TrafficIntent("1.0.0"), SERVICES, 80)


def test_seldon_readiness_matches_a_predictors_own_deployments_only():
    versions = {v: ModelVersionSpec.model_validate(model_version_manifest(version=v)["spec"])
                for v in ("1.0.0", "1.0.0-rc.1", "1.0.0-1")}
    rc, one = unit_name("1.0.0-rc.1"), unit_name("1.0.0-1")
    status = {"churn-v1-0-0-0-model": {"replicas": 1, "availableReplicas": 0},
              f"churn-{rc}-0-model": {"replicas": 1, "availableReplicas": 1},
              f"churn-{one}-0-model": {"replicas": 1, "availableReplicas": 1}}
    live = sdep([dict(STABLE, traffic=80), dict(STABLE, name=rc, traffic=20)], status)
    assert seldon.observe(live, versions).ready_versions == {"1.0.0-rc.1"}
    # 1.0.0-1's deployment is <sdep>-v1-0-0-<1-...-0-model> too: it belongs to the longest predictor
    live = sdep([dict(STABLE, traffic=80), dict(STABLE, name=one, traffic=20)], status)
    assert seldon.observe(live, versions).ready_versions == {"1.0.0-1"}
    # a predictor without any deployment of its own is not ready
    assert seldon.observe(sdep([STABLE], {f"churn-{rc}-0-model": status[f"churn-{rc}-0-model"]}),
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
    """BACKEND_TEMPLATES and ROUTED_TEMPLATES (what admission accepts) and each router's TEMPLATES (what it can
    query) say the same."""
    from modelops.api.modeldeployment import BACKEND_TEMPLATES, ROUTED_BACKENDS, ROUTED_TEMPLATES
    from modelops.routers.registry import ROUTERS

    accepted = {backend: allowed | (ROUTED_TEMPLATES if backend in ROUTED_BACKENDS else frozenset())
                for backend, allowed in BACKEND_TEMPLATES.items()}
    assert {backend: frozenset(router.templates) for backend, router in ROUTERS.items()} == accepted


AUDIT = {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "audit-log", "port": 9000}}}
REWRITE = {"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/v2"}}}


def test_gateway_mirror_step_copies_the_model_rules_requests_to_the_candidate_and_keeps_other_filters():
    live = route([TESTERS, dict(DEFAULT, filters=[AUDIT, REWRITE]), OTHER_RULE], parents(3))
    rules = gateway_api.config_for(live, TrafficIntent("1.0.0", "1.1.0", 0, mirror=30), SERVICES, 8080)["spec"]["rules"]
    assert rules[0] == TESTERS and rules[2] == OTHER_RULE and len(rules) == 3
    model = rules[1]
    assert [(r["name"], r["weight"]) for r in model["backendRefs"]] == [("emb-v1", 100), ("emb-v2", 0)]
    assert model["filters"] == [AUDIT, REWRITE, {"type": "RequestMirror", "requestMirror": {
        "backendRef": {"name": "emb-v2", "port": 8080}, "percent": 30}}]
    # the next step's apply (and a rollback's) takes the candidate's mirror away and leaves the audit sink
    for intent in (TrafficIntent("1.0.0", "1.1.0", 10), TrafficIntent("1.0.0")):
        after = gateway_api.config_for(route(rules, parents(3)), intent, SERVICES, 8080)["spec"]["rules"]
        assert after[1]["filters"] == [AUDIT, REWRITE]


def test_gateway_match_step_adds_a_cohort_rule_per_model_rule_that_outranks_it_and_goes_with_the_step():
    api = {"matches": [{"path": {"type": "PathPrefix", "value": "/v1"}}], "backendRefs": [{"name": "emb-v1"}],
           "filters": [REWRITE]}
    live = route([TESTERS, DEFAULT, api], parents(3))
    cohort = (("x-user-group", "beta"), ("x-region", "eu"))
    rules = gateway_api.config_for(live, TrafficIntent("1.0.0", "1.1.0", 0, match=cohort), SERVICES, 8080)["spec"]["rules"]
    assert [r.get("name") for r in rules] == [None, None, "modelops-cohort-0", None, "modelops-cohort-1"]
    headers = [{"type": "Exact", "name": "x-user-group", "value": "beta"}, {"type": "Exact", "name": "x-region", "value": "eu"}]
    assert rules[2]["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}, "headers": headers}]
    assert rules[2]["backendRefs"] == [{"name": "emb-v2", "port": 8080, "weight": 1}] and "filters" not in rules[2]
    assert rules[4]["matches"] == [{"path": {"type": "PathPrefix", "value": "/v1"}, "headers": headers}]
    assert rules[4]["filters"] == [REWRITE]  # the cohort's requests are rewritten as everyone's are
    assert [(r["name"], r["weight"]) for r in rules[1]["backendRefs"]] == [("emb-v1", 100), ("emb-v2", 0)]
    # the cohort rules are the operator's: neither pins nor model rules, and gone with the step
    applied = route(rules, parents(3))
    assert gateway_api.model_rules(applied, {"emb-v1", "emb-v2"}) == [1, 3]
    for intent in (TrafficIntent("1.0.0", "1.1.0", 10), TrafficIntent("1.0.0"), TrafficIntent("1.1.0")):
        after = gateway_api.config_for(applied, intent, SERVICES, 8080)["spec"]["rules"]
        assert [r.get("name") for r in after] == [None, None, None] and after[0] == TESTERS


def test_gateway_match_step_as_the_api_server_stores_it_is_carried():
    """The API server stores a ref with its defaults (group, kind, weight 1): the next round's apply finds the
    cohort rule as it would write it, so the step is seen carried instead of applied again every round."""
    def stored(rules):
        refs = [r for rule in rules for r in rule.get("backendRefs", [])]
        for ref in refs:
            ref.setdefault("group", "")
            ref.setdefault("kind", "Service")
            ref.setdefault("weight", 1)
        return rules

    intent = TrafficIntent("1.0.0", "1.1.0", 0, match=(("x-cohort", "testers"),))
    live = route(stored([dict(DEFAULT)]), parents(3))
    for _ in range(2):  # the step's first apply, then the apply over what that stored
        config = gateway_api.config_for(live, intent, SERVICES, 8080)
        live = owned(route(stored(config["spec"]["rules"]), parents(3)))
        live["metadata"]["annotations"] = config["metadata"]["annotations"]
    assert gateway_api.config_for(owned(live), intent, SERVICES, 8080) is None


def test_seldon_mirror_step_makes_the_candidate_a_shadow_and_any_other_step_makes_it_a_predictor_again():
    config = seldon.config_for(sdep([STABLE]), TrafficIntent("1.0.0", "1.1.0", 0, mirror=100), VERSIONS)
    stable, shadow = config["spec"]["predictors"]
    assert (stable["traffic"], stable.get("shadow")) == (100, None)
    assert (shadow["name"], shadow["traffic"], shadow["shadow"]) == ("v1-1-0", 0, True)
    live = sdep(config["spec"]["predictors"])
    weighted = seldon.config_for(live, TrafficIntent("1.0.0", "1.1.0", 10), VERSIONS)["spec"]["predictors"]
    assert [(p["name"], p["traffic"], "shadow" in p) for p in weighted] == [("v1-0-0", 90, False), ("v1-1-0", 10, False)]
    rolled_back = seldon.config_for(live, TrafficIntent("1.0.0"), VERSIONS)["spec"]["predictors"]
    assert [p["name"] for p in rolled_back] == ["v1-0-0"]
