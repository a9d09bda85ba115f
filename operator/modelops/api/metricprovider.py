"""ClusterMetricProvider: a metric source an administrator declares, and which namespaces may use it.

Cluster-scoped, so only whoever may create cluster-scoped objects (an administrator) says
where the operator sends queries and with which credentials; tenants name a provider from
`spec.analysis.provider` and cannot change where it points.
"""

from __future__ import annotations

from enum import Enum

from typing import Annotated

from pydantic import AfterValidator, ConfigDict, Field, model_validator

from .base import ApiModel, StatusModel
from .modeldeployment import PrometheusConfig
from .modelversion import Condition

# Kubernetes' own rules for label selectors (apimachinery's ValidateLabelSelector): a key is a qualified name, an
# optional DNS subdomain prefix of at most 253 characters and a name of at most 63; a value at most 63 characters.
LABEL_KEY_PATTERN = (r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                     r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$"
MAX_KEY_PREFIX = 253
KEY_PREFIX_RULE = {"rule": f"self.indexOf('/') <= {MAX_KEY_PREFIX}",
                   "message": f"a label key's prefix is at most {MAX_KEY_PREFIX} characters"}


def _short_prefix(key: str) -> str:
    if key.find("/") > MAX_KEY_PREFIX:
        raise ValueError(f"{key[:40]!r}...: {KEY_PREFIX_RULE['message']}")
    return key


LabelKey = Annotated[str, Field(pattern=LABEL_KEY_PATTERN, max_length=MAX_KEY_PREFIX + 1 + 63,
                                json_schema_extra={"x-kubernetes-validations": [KEY_PREFIX_RULE]}),
                     AfterValidator(_short_prefix)]
LabelValue = Annotated[str, Field(pattern=LABEL_VALUE_PATTERN, max_length=63)]


class SelectorOperator(str, Enum):
    In = "In"
    NotIn = "NotIn"
    Exists = "Exists"
    DoesNotExist = "DoesNotExist"


VALUES_RULE = {
    "rule": "self.operator in ['In', 'NotIn'] ? has(self.values) && size(self.values) > 0"
            " : !has(self.values) || size(self.values) == 0",
    "message": "values must be given when operator is In or NotIn, and may not be when it is Exists or DoesNotExist",
}


class SelectorRequirement(ApiModel):
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [VALUES_RULE]})  # wherever it is used

    key: LabelKey
    operator: SelectorOperator
    values: list[LabelValue] = Field(default_factory=list, max_length=64)
    """For In and NotIn: the label values (at least one); empty for Exists and DoesNotExist."""

    @model_validator(mode="after")
    def _values_fit_the_operator(self) -> SelectorRequirement:
        if (self.operator in (SelectorOperator.In, SelectorOperator.NotIn)) != bool(self.values):
            raise ValueError(f"key {self.key!r}, operator {self.operator.value}: {VALUES_RULE['message']}")
        return self


class LabelSelector(ApiModel):
    """As Kubernetes has it: every matchLabels pair and every expression must hold; `{}` selects all."""

    match_labels: dict[LabelKey, LabelValue] = Field(default_factory=dict, max_length=64)
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
