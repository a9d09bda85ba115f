"""ModelDeployment: one served model and how it moves between its versions."""

from __future__ import annotations

import math
from enum import Enum
from typing import Annotated

from pydantic import AfterValidator, Field, model_validator

from .base import ApiModel, StatusModel
from .modelversion import Condition
from .types import Duration, ObjectName, Reason, SemVer, Text, Weight, duration_seconds


# An empty-object default makes the API server fill in the defaults of the fields inside.
APPLY_NESTED_DEFAULTS = {"default": {}}


class Backend(str, Enum):
    kserve = "kserve"
    seldon = "seldon"
    seldonV2 = "seldonV2"
    gatewayAPI = "gatewayAPI"


class KServeServing(ApiModel):
    name: ObjectName | None = None
    """InferenceService to drive; defaults to the ModelDeployment's name."""


class SeldonServing(ApiModel):
    name: ObjectName | None = None
    """SeldonDeployment to drive; defaults to the ModelDeployment's name."""


class SeldonV2Serving(ApiModel):
    experiment: ObjectName | None = None
    """Experiment that splits traffic during a rollout; defaults to the ModelDeployment's name."""


class GatewayAPIServing(ApiModel):
    route: ObjectName
    """HTTPRoute whose backendRefs carry the weights."""
    services: dict[SemVer, ObjectName] = Field(min_length=1, max_length=64)
    """Service name of each model version, keyed by version."""
    port: int = Field(default=80, ge=1, le=65535)
    """Port of those Services."""


class Serving(ApiModel):
    backend: Backend
    """Which serving system carries the traffic split."""
    kserve: KServeServing | None = None
    seldon: SeldonServing | None = None
    seldon_v2: SeldonV2Serving | None = Field(default=None, alias="seldonV2")
    gateway_api: GatewayAPIServing | None = Field(default=None, alias="gatewayAPI")

    @model_validator(mode="after")
    def _gateway_needs_route(self) -> Serving:
        if self.backend is Backend.gatewayAPI and self.gateway_api is None:
            raise ValueError("serving.gatewayAPI is required when serving.backend is gatewayAPI")
        return self


GATEWAY_NEEDS_ROUTE_RULE = {
    "rule": "self.backend != 'gatewayAPI' || has(self.gatewayAPI)",
    "message": "serving.gatewayAPI is required when serving.backend is gatewayAPI",
}


class Step(ApiModel):
    weight: int = Field(ge=1, le=100)
    """Percent of traffic the candidate gets during this step."""
    pause: Duration = "1m"
    """How long the step lasts at least; it ends once analysis has passed after that."""


class StrategyType(str, Enum):
    Canary = "Canary"
    HotSwap = "HotSwap"


class RollbackMode(str, Enum):
    Immediate = "Immediate"
    Progressive = "Progressive"


def _default_steps() -> list[Step]:
    return [Step(weight=10, pause="1m"), Step(weight=25, pause="2m"), Step(weight=50, pause="2m")]


STEPS_INCREASING_RULE = {
    "rule": "self.map(s, s.weight).isSorted() && self.all(a, self.exists_one(b, b.weight == a.weight))",
    "message": "step weights must be strictly increasing",
}


class Strategy(ApiModel):
    type: StrategyType = StrategyType.Canary
    """Canary walks the steps; HotSwap sends all traffic to the candidate once it is ready and promotes it
    after the first passed analysis (failed analyses roll it back as they would a canary)."""
    steps: list[Step] = Field(
        default_factory=_default_steps,
        min_length=1,
        max_length=20,
        json_schema_extra={"default": [s.to_wire() for s in _default_steps()]},
    )
    """Canary steps; weights strictly increasing, within 1..100. After the last step the candidate is promoted."""
    rollback: RollbackMode = RollbackMode.Immediate
    """Immediate: all traffic back to stable in one write. Progressive: back down the steps, still watched."""
    ready_timeout: Duration = "10m"
    """How long a candidate may stay not ready on the backend before the rollout is rolled back."""

    @model_validator(mode="after")
    def _steps_increase(self) -> Strategy:
        weights = [s.weight for s in self.steps]
        if any(b <= a for a, b in zip(weights, weights[1:])):
            raise ValueError(f"strategy.steps: weights must be strictly increasing, got {weights}")
        return self


class NoDataPolicy(str, Enum):
    Hold = "Hold"
    Fail = "Fail"
    Pass = "Pass"


class CheckTemplate(str, Enum):
    errorRate = "errorRate"
    latencyP50 = "latencyP50"
    latencyP95 = "latencyP95"
    latencyP99 = "latencyP99"
    meanLatency = "meanLatency"


CHECK_SOURCE_RULE = {
    "rule": "has(self.template) != has(self.query)",
    "message": "a check has exactly one of template or query",
}
CHECK_SAMPLES_RULE = {
    "rule": "!has(self.query) || !has(self.minSamples) || self.minSamples == 0 || has(self.sampleQuery)",
    "message": "minSamples on a query check needs a sampleQuery that counts the samples",
}
CHECK_LIMIT_RULE = {
    "rule": "has(self.min) || has(self.max) || has(self.maxDropPercent) || has(self.maxIncreasePercent)",
    "message": "a check needs at least one limit: min, max, maxDropPercent or maxIncreasePercent",
}


class Check(ApiModel):
    name: str = Field(pattern=r"^[a-zA-Z][a-zA-Z0-9_-]*$", max_length=63)
    """Name shown in status and events."""
    template: CheckTemplate | None = None
    """A built-in query for the backend (error rate, latency quantiles)."""
    query: Text(16384, min_length=1) | None = None
    """PromQL returning one value; may use {{namespace}}, {{model}}, {{version}}, {{revision}}, {{window}}."""
    sample_query: Text(16384, min_length=1) | None = None
    """PromQL returning the number of samples behind the value (e.g. requests in the window)."""
    min: float | None = None
    """Fail when the candidate's value is below this."""
    max: float | None = None
    """Fail when the candidate's value is above this."""
    max_drop_percent: float | None = Field(default=None, ge=0)
    """Fail when the candidate is more than this percent below stable, measured in the same window."""
    max_increase_percent: float | None = Field(default=None, ge=0)
    """Fail when the candidate is more than this percent above stable, measured in the same window."""
    no_data: NoDataPolicy = NoDataPolicy.Hold
    """What a missing value means: Hold (wait, fail after analysis.noDataLimit), Fail, or Pass."""
    min_samples: int = Field(default=0, ge=0)
    """Samples the candidate needs in the window before this check gives a verdict."""

    @model_validator(mode="after")
    def _source_and_limits(self) -> Check:
        if (self.template is None) == (self.query is None):
            raise ValueError(f"check {self.name!r}: exactly one of template or query is required")
        if self.query is not None and self.min_samples > 0 and self.sample_query is None:
            raise ValueError(f"check {self.name!r}: minSamples on a query check needs a sampleQuery that counts the samples")
        if self.limits_missing:
            raise ValueError(
                f"check {self.name!r}: needs at least one limit: min, max, maxDropPercent or maxIncreasePercent"
            )
        return self

    @property
    def limits_missing(self) -> bool:
        return all(v is None for v in (self.min, self.max, self.max_drop_percent, self.max_increase_percent))

    @property
    def relative(self) -> bool:
        return self.max_drop_percent is not None or self.max_increase_percent is not None


CHECK_NAMES_UNIQUE_RULE = {
    "rule": "self.all(a, self.exists_one(b, b.name == a.name))",
    "message": "check names must be unique",
}


# The built-in checks each backend has metrics for (the routers' TEMPLATES must say the same; a test holds them equal).
BACKEND_TEMPLATES: dict[Backend, frozenset[CheckTemplate]] = {
    Backend.kserve: frozenset(CheckTemplate),
    Backend.seldon: frozenset(CheckTemplate),
    Backend.seldonV2: frozenset({CheckTemplate.errorRate, CheckTemplate.meanLatency}),
    Backend.gatewayAPI: frozenset(),
}


def _templates_rule() -> dict[str, str]:
    clauses = []
    for backend, allowed in BACKEND_TEMPLATES.items():
        if allowed != frozenset(CheckTemplate):
            names = ", ".join(f"'{t.value}'" for t in sorted(allowed, key=lambda t: t.value))
            clauses.append(f"(self.serving.backend != '{backend.value}' || "
                           f"self.analysis.checks.all(c, !has(c.template) || c.template in [{names}]))")
    return {"rule": " && ".join(clauses), "fieldPath": ".analysis.checks",
            "message": "a check uses a built-in template the serving backend has no metrics for "
                       "(seldonV2: errorRate, meanLatency; gatewayAPI: none, write a query)"}


TEMPLATES_SUPPORTED_RULE = _templates_rule()


class SecretKeyRef(ApiModel):
    name: ObjectName
    key: Text(253, min_length=1)


class PrometheusConfig(ApiModel):
    """A Prometheus to query: what a ClusterMetricProvider declares, or an inline `analysis.prometheus`."""

    address: str = Field(pattern=r"^https?://[^\s]+$", max_length=2048)
    """Base URL of the Prometheus HTTP API."""
    bearer_token_secret: SecretKeyRef | None = None
    """Secret key holding a bearer token sent as the Authorization header (in the operator's namespace for a
    ClusterMetricProvider, in the deployment's for an inline one)."""
    ca_secret: SecretKeyRef | None = None
    """Secret key holding a PEM CA bundle to verify Prometheus' certificate."""
    insecure_skip_verify: bool = False
    timeout: Duration = "5s"
    """Timeout of every query (at most 30 s, and at most the analysis interval)."""


DEFAULT_PROVIDER = "default"
ONE_PROVIDER_RULE = {
    "rule": "!(has(self.provider) && has(self.prometheus))",
    "message": "analysis.provider and analysis.prometheus exclude each other",
}


class Analysis(ApiModel):
    interval: Duration = "1m"
    """How often the checks are measured and a verdict is taken."""
    window: Duration | None = None
    """Range of the queries' rate windows; defaults to the interval."""
    failure_limit: int = Field(default=2, ge=1)
    """Consecutive failed analyses that trigger a rollback."""
    no_data_limit: int = Field(default=3, ge=1)
    """Consecutive analyses a Hold check may go without data before that counts as a failure."""
    checks: list[Check] = Field(default_factory=list, max_length=32)
    provider: ObjectName | None = None
    """ClusterMetricProvider to query; `default` when neither this nor prometheus is set."""
    prometheus: PrometheusConfig | None = None
    """An inline Prometheus instead of a provider: honoured only when the operator runs with
    --allow-inline-providers (it lets a tenant choose where the operator sends requests)."""

    @model_validator(mode="after")
    def _positive_interval_and_unique_names(self) -> Analysis:
        if duration_seconds(self.interval) <= 0:
            raise ValueError("analysis.interval must be greater than zero")
        if self.provider is not None and self.prometheus is not None:
            raise ValueError("analysis.provider and analysis.prometheus exclude each other")
        names = [c.name for c in self.checks]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"analysis.checks: names must be unique, repeated: {repeated}")
        return self


class TrafficOverride(ApiModel):
    weight: Weight
    """Candidate's pinned weight; steps and automatic rollback stop while it is set."""
    reason: Reason
    """Why the weight is pinned; recorded in history."""


class Action(str, Enum):
    Promote = "Promote"
    Abort = "Abort"
    Rollback = "Rollback"
    Retry = "Retry"


class Request(ApiModel):
    """A one-shot manual action; carried out once per distinct id."""

    id: str = Field(min_length=1, max_length=128)
    """Unique per request (the plugin uses a timestamp); a request whose id was seen is not repeated."""
    action: Action
    version: SemVer | None = None
    """For Rollback: the retained version to go back to; defaults to the fallback version."""
    reason: Reason
    actor: Text(256) | None = None
    """Who asked; the plugin fills in the kubectl user."""


class ModelDeploymentSpec(ApiModel):
    model: ObjectName
    """Model served; ModelVersions with this spec.model are its versions."""
    version: SemVer
    """Desired version; changing it starts a rollout."""
    serving: Serving
    strategy: Strategy = Field(default_factory=Strategy, json_schema_extra=APPLY_NESTED_DEFAULTS)
    analysis: Analysis = Field(default_factory=Analysis, json_schema_extra=APPLY_NESTED_DEFAULTS)
    paused: bool = False
    """Stop advancing steps; automatic rollback stays active."""
    traffic_override: TrafficOverride | None = None
    request: Request | None = None
    retention: int = Field(default=2, ge=0, le=10)
    """Previous versions kept ready for instant rollback."""
    history_limit: int = Field(default=20, ge=1, le=200)
    """History entries kept in status."""
    notifications: list[ObjectName] = Field(default_factory=list, max_length=8,
                                            json_schema_extra={"x-kubernetes-list-type": "set"})
    """ClusterNotifiers told about this deployment's rollouts and manual actions (none by default); each must
    admit this namespace."""

    @model_validator(mode="after")
    def _notifiers_named_once(self) -> ModelDeploymentSpec:
        if len(set(self.notifications)) != len(self.notifications):
            raise ValueError("notifications: each ClusterNotifier is named once")
        return self

    @model_validator(mode="after")
    def _templates_supported(self) -> ModelDeploymentSpec:
        allowed = BACKEND_TEMPLATES[self.serving.backend]
        unsupported = [c.name for c in self.analysis.checks if c.template is not None and c.template not in allowed]
        if unsupported:
            raise ValueError(f"analysis.checks {unsupported}: the {self.serving.backend.value} backend has no metrics "
                             f"for their template; built-in: {sorted(t.value for t in allowed) or 'none'} "
                             "(write a query instead)")
        return self


class Phase(str, Enum):
    Stable = "Stable"
    Progressing = "Progressing"
    Paused = "Paused"
    RollingBack = "RollingBack"
    RolledBack = "RolledBack"
    Failed = "Failed"


class Verdict(str, Enum):
    """One check's verdict on one analysis."""

    Pass = "Pass"
    Fail = "Fail"
    NoData = "NoData"
    Error = "Error"
    """The metric provider failed (unreachable, timeout, bad query): never a pass."""


class Outcome(str, Enum):
    """One analysis' outcome over all checks."""

    Passed = "Passed"
    Failed = "Failed"
    Inconclusive = "Inconclusive"


def _finite_or_none(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


FiniteOrNone = Annotated[float | None, AfterValidator(_finite_or_none)]
"""Status numbers: JSON has no Infinity or NaN (the API server rejects the whole write), so those become None."""


class CheckStatus(StatusModel):
    name: str
    verdict: Verdict
    value: FiniteOrNone = None
    """Candidate's value in the last window."""
    baseline: FiniteOrNone = None
    """Stable version's value in the same window, for relative checks."""
    samples: int | None = None
    limit: str
    """The limit the value was held against, in words."""
    message: str
    time: str


class HistoryEntry(StatusModel):
    version: str
    action: str
    reason: str
    actor: str = "modelops"
    time: str


class ModelDeploymentStatus(StatusModel):
    phase: Phase | None = None
    message: str | None = None
    """Why the last decision was taken."""
    stable_version: str | None = None
    canary_version: str | None = None
    fallback_version: str | None = None
    retained_versions: list[str] = Field(default_factory=list)
    """Previous versions kept ready for rollback, newest first."""
    failed_version: str | None = None
    """Candidate that was rolled back; not retried until spec.version changes or a Retry request."""
    canary_weight: int = Field(default=0, ge=0, le=100)
    current_step: int | None = None
    """Index of the current canary step, from 0."""
    step_started_at: str | None = None
    analysis_since: str | None = None
    """When the candidate began taking traffic: no analysis window starts before it."""
    waiting_since: str | None = None
    """Since when the candidate has not been ready; cleared once it is."""
    last_analysis_at: str | None = None
    """End of the window of the last analysis taken into account."""
    last_outcome: Outcome | None = None
    """Outcome of the last analysis in the current step; a step advances only after Passed."""
    consecutive_failures: int = 0
    consecutive_no_data: int = 0
    """Consecutive inconclusive analyses (no data, too few samples, provider errors)."""
    paused: bool = False
    """spec.paused as last acted on, so that pausing and resuming are recorded once."""
    pinned_weight: int | None = Field(default=None, ge=0, le=100)
    """spec.trafficOverride.weight as last acted on."""
    checks: list[CheckStatus] = Field(default_factory=list)
    history: list[HistoryEntry] = Field(default_factory=list)
    handled_requests: list[str] = Field(default_factory=list)
    """Ids of the last requests carried out or refused, newest last; an id in here is never run again."""
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
