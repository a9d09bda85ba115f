"""The split the cluster tier's Gateway stand-in (tests/cluster/model_pods.py) publishes from an HTTPRoute: Gateway
API's weights (weight / sum, 1 when unset, 0 none), rule precedence, and the shares a Gateway answers itself."""

from __future__ import annotations

from ..cluster.model_pods import NO_BACKEND, gateway_split

PODS = {"v1": ["10.213.0.5"], "v2": ["10.213.0.9", "10.213.0.7"]}
SERVICES = {"v1", "v2", "idle"}


def route(*rules: dict) -> dict:
    return {"spec": {"rules": list(rules)}}


def refs(*pairs: tuple[str, int | None]) -> list[dict]:
    return [{"name": name, "port": 80, **({} if weight is None else {"weight": weight})} for name, weight in pairs]


def split_of(*rules: dict) -> list[tuple[str, int, str]]:
    return [(t["unit"], t["percent"], t["url"]) for t in gateway_split(route(*rules), SERVICES, PODS)]


def test_weights_are_relative_unset_is_one_and_zero_gets_nothing():
    assert split_of({"backendRefs": refs(("v1", 3), ("v2", 1))}) == [
        ("v1", 3, "http://10.213.0.5:8080"), ("v2", 1, "http://10.213.0.7:8080")]  # the first ready pod by address
    assert split_of({"backendRefs": refs(("v1", None), ("v2", None))}) == [
        ("v1", 1, "http://10.213.0.5:8080"), ("v2", 1, "http://10.213.0.7:8080")]
    assert split_of({"backendRefs": refs(("v1", 100), ("v2", 0))}) == [("v1", 100, "http://10.213.0.5:8080")]


def test_a_share_without_a_ready_pod_or_service_keeps_its_weight_and_is_answered_by_the_gateway():
    assert split_of({"backendRefs": refs(("v1", 80), ("idle", 20))}) == [
        ("v1", 80, "http://10.213.0.5:8080"), ("idle", 20, NO_BACKEND)]
    assert split_of({"backendRefs": refs(("v1", 50), ("gone", 50))})[1] == ("gone", 50, NO_BACKEND)
    assert split_of({"backendRefs": refs(("v1", 0), ("v2", 0))}) == [("no-backend", 1, NO_BACKEND)]


def test_the_request_takes_the_rule_gateway_api_precedence_gives_it():
    docs = {"matches": [{"path": {"type": "PathPrefix", "value": "/docs"}}], "backendRefs": refs(("v2", None))}
    pinned = {"matches": [{"headers": [{"name": "x-cohort", "value": "testers"}]}], "backendRefs": refs(("v2", None))}
    model = {"backendRefs": refs(("v1", 90), ("v2", 10))}
    assert [unit for unit, _, _ in split_of(docs, pinned, model)] == ["v1", "v2"]
    longer = {"matches": [{"path": {"type": "PathPrefix", "value": "/v1/models"}}], "backendRefs": refs(("v2", 1))}
    assert split_of(model, longer) == [("v2", 1, "http://10.213.0.7:8080")]
    assert split_of(docs) == []
