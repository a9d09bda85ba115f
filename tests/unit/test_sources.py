"""Which Prometheus a deployment may query: administrators decide, tenants only choose among what they are given."""

import pytest

from modelops.analysis.provider import ProviderError
from modelops.analysis.sources import resolve
from modelops.api.metricprovider import ClusterMetricProviderSpec, LabelSelector, selects
from modelops.api.modeldeployment import Analysis


def provider(address="https://prometheus.monitoring:9090", **selector):
    return ClusterMetricProviderSpec.model_validate({
        "prometheus": {"address": address, "bearerTokenSecret": {"name": "prom-token", "key": "token"}},
        "namespaceSelector": selector})


PROVIDERS = {"default": provider(), "ml": provider("https://ml-prometheus:9090", matchLabels={"team": "ml"})}


@pytest.mark.parametrize("selector, labels, expected", [
    ({}, {}, True),
    ({"matchLabels": {"team": "ml"}}, {"team": "ml", "env": "prod"}, True),
    ({"matchLabels": {"team": "ml"}}, {"team": "web"}, False),
    ({"matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "staging"]}]}, {"env": "prod"}, True),
    ({"matchExpressions": [{"key": "env", "operator": "In", "values": ["prod"]}]}, {}, False),
    ({"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["dev"]}]}, {}, True),
    ({"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["dev"]}]}, {"env": "dev"}, False),
    ({"matchExpressions": [{"key": "sandbox", "operator": "Exists"}]}, {"sandbox": ""}, True),
    ({"matchExpressions": [{"key": "sandbox", "operator": "DoesNotExist"}]}, {"sandbox": "1"}, False),
])
def test_label_selectors_mean_what_kubernetes_means(selector, labels, expected):
    assert selects(LabelSelector.model_validate(selector), labels) is expected


def analysis(**fields):
    return Analysis.model_validate({"checks": [{"name": "e", "query": "up", "max": 1}], **fields})


def test_the_default_provider_with_credentials_from_the_operators_namespace():
    source = resolve(analysis(), "team-a", {"team": "web"}, PROVIDERS, "modelops-system", allow_inline=False)
    assert (source.label, source.config.address, source.secrets_namespace) == (
        "provider default", "https://prometheus.monitoring:9090", "modelops-system")


def test_a_provider_admits_only_its_namespaces():
    assert resolve(analysis(provider="ml"), "ml-prod", {"team": "ml"}, PROVIDERS, "ops", False).label == "provider ml"
    with pytest.raises(ProviderError, match="does not admit namespace web") as refused:
        resolve(analysis(provider="ml"), "web", {"team": "web"}, PROVIDERS, "ops", False)
    assert refused.value.kind == "forbidden"
    with pytest.raises(ProviderError, match="does not admit"):
        resolve(analysis(provider="ml"), "gone", None, PROVIDERS, "ops", False)  # namespace labels unknown


def test_an_unknown_provider_is_named():
    with pytest.raises(ProviderError, match="no ClusterMetricProvider named 'nope'"):
        resolve(analysis(provider="nope"), "team-a", {}, PROVIDERS, "ops", False)


def test_inline_prometheus_only_when_the_operator_allows_it():
    inline = analysis(prometheus={"address": "http://10.0.0.1:9090",
                                  "bearerTokenSecret": {"name": "t", "key": "k"}})
    with pytest.raises(ProviderError, match="not allowed by this operator") as refused:
        resolve(inline, "team-a", {}, PROVIDERS, "ops", allow_inline=False)
    assert refused.value.kind == "forbidden"
    allowed = resolve(inline, "team-a", {}, PROVIDERS, "ops", allow_inline=True)
    assert (allowed.label, allowed.secrets_namespace) == ("inline Prometheus", "team-a")


def test_provider_and_inline_exclude_each_other():
    with pytest.raises(ValueError, match="exclude each other"):
        analysis(provider="ml", prometheus={"address": "http://x:9090"})
