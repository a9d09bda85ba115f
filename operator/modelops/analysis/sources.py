"""Which Prometheus a deployment's analysis may query, and with whose credentials (pure).

Administrators declare ClusterMetricProviders, each with the namespaces that may use it;
a deployment names one (or gets `default`). Its credentials are read from the operator's own
namespace. An inline `analysis.prometheus` is honoured only when the operator was started
with inline providers allowed; its credentials then come from the deployment's namespace.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..api.metricprovider import ClusterMetricProviderSpec, selects
from ..api.modeldeployment import DEFAULT_PROVIDER, Analysis, PrometheusConfig
from .provider import ProviderError


@dataclass(frozen=True)
class Source:
    label: str
    """How errors name it: `provider <name>` or `inline Prometheus`; never a response body."""
    config: PrometheusConfig
    secrets_namespace: str


def resolve(analysis: Analysis, namespace: str, namespace_labels: dict[str, str] | None,
            providers: dict[str, ClusterMetricProviderSpec], operator_namespace: str, allow_inline: bool) -> Source:
    """The source for one deployment; ProviderError("forbidden") says why there is none."""
    if analysis.prometheus is not None:
        if not allow_inline:
            raise ProviderError("forbidden", "analysis.prometheus is not allowed by this operator: name a "
                                "ClusterMetricProvider in analysis.provider (ask your cluster administrator)")
        return Source("inline Prometheus", analysis.prometheus, namespace)
    name = analysis.provider or DEFAULT_PROVIDER
    provider = providers.get(name)
    if provider is None:
        raise ProviderError("forbidden", f"analysis.provider: no ClusterMetricProvider named {name!r}")
    if namespace_labels is None or not selects(provider.namespace_selector, namespace_labels):
        raise ProviderError("forbidden", f"analysis.provider: ClusterMetricProvider {name!r} "
                            f"does not admit namespace {namespace}")
    return Source(f"provider {name}", provider.prometheus, operator_namespace)
