"""ClusterMetricProvider: a metric source an administrator declares, and which namespaces may use it.

Cluster-scoped, so only whoever may create cluster-scoped objects (an administrator) says
where the operator sends queries and with which credentials; tenants name a provider from
`spec.analysis.provider` and cannot change where it points.
"""

from __future__ import annotations

from enum import Enum

from pydantic import Field

from .base import ApiModel, StatusModel
from .modeldeployment import PrometheusConfig
from .modelversion import Condition

LABEL_KEY_PATTERN = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"


class SelectorOperator(str, Enum):
    In = "In"
    NotIn = "NotIn"
    Exists = "Exists"
    DoesNotExist = "DoesNotExist"


class SelectorRequirement(ApiModel):
    key: str = Field(pattern=LABEL_KEY_PATTERN, max_length=317)
    operator: SelectorOperator
    values: list[str] = Field(default_factory=list, max_length=64)
    """For In and NotIn: the label values; empty for Exists and DoesNotExist."""


class LabelSelector(ApiModel):
    """As Kubernetes has it: every matchLabels pair and every expression must hold; `{}` selects all."""

    match_labels: dict[str, str] = Field(default_factory=dict, max_length=64)
    match_expressions: list[SelectorRequirement] = Field(default_factory=list, max_length=64)


class ClusterMetricProviderSpec(ApiModel):
    prometheus: PrometheusConfig
    """Credentials named here are read from the operator's own namespace, never a tenant's."""
    namespace_selector: LabelSelector
    """Namespaces whose ModelDeployments may use this provider; `{}` allows every namespace."""


class ClusterMetricProviderStatus(StatusModel):
    conditions: list[Condition] = Field(default_factory=list)


def selects(selector: LabelSelector, labels: dict[str, str]) -> bool:
    """Whether a namespace with `labels` is selected (Kubernetes' label selector semantics)."""
    if any(labels.get(key) != value for key, value in selector.match_labels.items()):
        return False
    for requirement in selector.match_expressions:
        present = requirement.key in labels
        holds = {
            SelectorOperator.In: present and labels.get(requirement.key) in requirement.values,
            SelectorOperator.NotIn: not present or labels.get(requirement.key) not in requirement.values,
            SelectorOperator.Exists: present,
            SelectorOperator.DoesNotExist: not present,
        }[requirement.operator]
        if not holds:
            return False
    return True
