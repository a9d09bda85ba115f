"""ModelDeployment: one served model and how it moves between its versions."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Annotated

from pydantic import AfterValidator, Field, model_validator

from ..analysis.promql import check_query
from ..analysis.sequential import MAX_SAMPLES, MIN_SAMPLES, Intervals
from .base import ApiModel, StatusModel
from .modelversion import Condition
from .types import Duration, ObjectName, PositiveDuration, Reason, SemVer, Text, Weight


# An empty-object default makes the API server fill in the defaults of the fields inside.
APPLY_NESTED_DEFAULTS = {"default": {}}


class Backend(str, Enum):
    kserve = "kserve"
    seldon = "seldon"
    seldonV2 = "seldonV2"
    gatewayAPI = "gatewayAPI"


class KServeRoute(ApiModel):
    name: ObjectName
    """HTTPRoute whose backendRefs carry the split between the predictor Services (as on the gatewayAPI backend)."""
    port: int = Field(default=80, ge=1, le=65535)
    """Port of the predictor Services (KServe gives them 80)."""


class KServeServing(ApiModel):
    name: ObjectName | None = None
    """InferenceService to drive; defaults to the ModelDeployment's name."""
    http_route: KServeRoute | None = Field(default=None, alias="httpRoute")
    """Required in KServe's Standard mode (which sends no request to spec.canary), refused in serverless mode."""


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


HEADER_NAME_PATTERN = r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$"
"""An HTTP header name (RFC 9110 token), as Gateway API's HTTPHeaderName has it."""


class HeaderMatch(ApiModel):
    name: str = Field(pattern=HEADER_NAME_PATTERN, min_length=1, max_length=256)
    """Header name, matched case-insensitively."""
    value: Text(4096, min_length=1)
    """Exact value the header must have."""


class CohortMatch(ApiModel):
    headers: list[HeaderMatch] = Field(min_length=1, max_length=16)
    """A request goes to the candidate when it carries every one of these headers with its value."""

    @model_validator(mode="after")
    def _names_once(self) -> CohortMatch:
        names = [h.name.lower() for h in self.headers]
        if len(set(names)) != len(names):
            raise ValueError("match.headers: each header is named once (names are case-insensitive)")
        return self


class StepKind(str, Enum):
    """What a step sends to the candidate."""

    weight = "weight"
    """A share of everyone's requests."""
    mirror = "mirror"
    """Copies of a share of stable's requests; the candidate's answers are discarded."""
    match = "match"
    """The requests of a cohort that matches headers; everyone else stays on stable."""


class Step(ApiModel):
    weight: int | None = Field(default=None, ge=1, le=100)
    """Percent of traffic the candidate gets during this step."""
    mirror: int | None = Field(default=None, ge=1, le=100)
    """Percent of stable's requests copied to the candidate, whose answers nobody sees (a shadow step)."""
    match: CohortMatch | None = None
    """Requests matching these headers go to the candidate; everyone else stays on stable."""
    pause: Duration = "1m"
    """How long the step lasts at least; it ends once analysis has passed after that."""

    @model_validator(mode="after")
    def _one_kind(self) -> Step:
        if sum(x is not None for x in (self.weight, self.mirror, self.match)) != 1:
            raise ValueError("a step has exactly one of weight, mirror or match")
        return self

    @property
    def kind(self) -> StepKind:
        if self.mirror is not None:
            return StepKind.mirror
        return StepKind.match if self.match is not None else StepKind.weight


STEP_KIND_RULE = {
    "rule": "(has(self.weight) ? 1 : 0) + (has(self.mirror) ? 1 : 0) + (has(self.match) ? 1 : 0) == 1",
    "message": "a step has exactly one of weight, mirror or match",
}
HEADER_NAMES_ONCE_RULE = {
    "rule": "self.all(a, self.exists_one(b, b.name.lowerAscii() == a.name.lowerAscii()))",
    "message": "each header is named once (names are case-insensitive)",
}


class StrategyType(str, Enum):
    Canary = "Canary"
    HotSwap = "HotSwap"


class RollbackMode(str, Enum):
    Immediate = "Immediate"
    Progressive = "Progressive"


def _default_steps() -> list[Step]:
    return [Step(weight=10, pause="1m"), Step(weight=25, pause="2m"), Step(weight=50, pause="2m")]


STEPS_INCREASING_RULE = {
    "rule": "self.filter(s, has(s.weight)).map(s, s.weight).isSorted() && "
            "self.filter(s, has(s.weight)).all(a, self.filter(s, has(s.weight)).exists_one(b, b.weight == a.weight))",
    "message": "the weights of weighted steps must be strictly increasing",
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
    """Canary steps, each a weight, a mirror or a match, in any order; the weights of weighted steps strictly
    increasing, within 1..100. After the last step the candidate is promoted."""
    rollback: RollbackMode = RollbackMode.Immediate
    """Immediate: all traffic back to stable in one write. Progressive: back down the steps, still watched."""
    ready_timeout: Duration = "10m"
    """How long a candidate may stay not ready on the backend before the rollout is rolled back; and how long after
    a step's decision an analysis without data counts toward noDataLimit only if it measured the step's own traffic."""

    @model_validator(mode="after")
    def _steps_increase(self) -> Strategy:
        weights = [s.weight for s in self.steps if s.weight is not None]
        if any(b <= a for a, b in zip(weights, weights[1:])):
            raise ValueError(f"strategy.steps: the weights of weighted steps must be strictly increasing, got {weights}")
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
    shadowAgreement = "shadowAgreement"
    """Share of mirrored requests on which the candidate's prediction agrees with stable's (see SHADOW_AGREEMENT)."""
    accuracy = "accuracy"
    """Share of graded predictions that were correct, each counted once at its grading age (see ACCURACY); pair it
    with gradingDelay, that age."""
    driftScore = "driftScore"
    """The highest input drift score a drift detector reported for the version in the window (see DRIFT_SCORE).
    Held against a threshold: without drift its false-alarm rate depends on the score's noise (docs/concepts/analysis.md, "Drift")."""
    driftTest = "driftTest"
    """A chi-square test of the version's binned live inputs in the window against its reference inputs binned
    alike (see DRIFT_TEST and DriftTest): fails when they differ, with a stated false-alarm rate."""


CHECK_SOURCE_RULE = {
    "rule": "has(self.template) != has(self.query)",
    "message": "a check has exactly one of template or query",
}
CHECK_SAMPLES_RULE = {
    "rule": "!has(self.query) || !has(self.minSamples) || self.minSamples == 0 || has(self.sampleQuery)",
    "message": "minSamples on a query check needs a sampleQuery that counts the samples",
}
CHECK_MIN_MAX_RULE = {
    "rule": "!has(self.min) || !has(self.max) || self.min <= self.max",
    "message": "min is above max: no value could pass the check",
}
CHECK_LIMIT_RULE = {
    "rule": "(has(self.template) && self.template == 'driftTest') || "
            "has(self.min) || has(self.max) || has(self.maxDropPercent) || has(self.maxIncreasePercent)",
    "message": "a check needs at least one limit: min, max, maxDropPercent or maxIncreasePercent",
}
CHECK_DRIFT_TEST_RULE = {
    "rule": "has(self.template) && self.template == 'driftTest' ? !has(self.min) && !has(self.max) && "
            "!has(self.maxDropPercent) && !has(self.maxIncreasePercent) && !has(self.sequential) : !has(self.driftTest)",
    "message": "a driftTest check is judged by its test alone (no min, max, maxDropPercent, maxIncreasePercent or "
               "sequential), and driftTest settings belong to a driftTest check",
}

# Templates a sequential test can judge: counts behind a proportion, or a latency histogram's buckets.
PROPORTION_TEMPLATES = frozenset({CheckTemplate.errorRate, CheckTemplate.accuracy})
LATENCY_QUANTILES = {CheckTemplate.latencyP50: 0.5, CheckTemplate.latencyP95: 0.95, CheckTemplate.latencyP99: 0.99,
                     CheckTemplate.meanLatency: 0.5}
"""The latency a sequential check on each template compares: the tail it is named for; a mean at the median (a
histogram's buckets carry no variance to test a mean with)."""
LATENCY_TEMPLATES = frozenset(LATENCY_QUANTILES)
_SEQUENTIAL_TEMPLATES = ", ".join(f"'{t.value}'" for t in sorted(PROPORTION_TEMPLATES | LATENCY_TEMPLATES,
                                                                  key=lambda t: t.value))
CHECK_SEQUENTIAL_LIMIT_RULE = {
    "rule": "!has(self.sequential) || (has(self.maxDropPercent) != has(self.maxIncreasePercent)"
            " && !has(self.min) && !has(self.max))",
    "message": "a sequential check compares with stable: it needs exactly one of maxDropPercent or "
               "maxIncreasePercent (the degradation it tolerates) and no min or max (put those in a check of their own)",
}
_LATENCY_NAMES = ", ".join(f"'{t.value}'" for t in sorted(LATENCY_TEMPLATES, key=lambda t: t.value))
CHECK_SEQUENTIAL_LATENCY_LIMIT_RULE = {
    "rule": f"!has(self.sequential) || !has(self.template) || !(self.template in [{_LATENCY_NAMES}])"
            " || has(self.maxIncreasePercent)",
    "message": "a sequential latency check tolerates a slower candidate: it takes maxIncreasePercent",
}
CHECK_SEQUENTIAL_SOURCE_RULE = {
    "rule": f"!has(self.sequential) || (has(self.template) ? self.template in [{_SEQUENTIAL_TEMPLATES}]"
            " : has(self.sampleQuery))",
    "message": f"a sequential check needs counts: a template among {_SEQUENTIAL_TEMPLATES.replace(chr(39), '')}, "
               "or a query whose value is a proportion of what its sampleQuery counts",
}


class BudgetPolicy(str, Enum):
    """What a sequential check still undecided when its budget is spent becomes."""

    Pass = "Pass"
    """A pass: the evidence never said worse than the tolerated degradation."""
    Fail = "Fail"
    """A failure: the candidate did not prove itself within the tolerated degradation in time."""


class SequentialTest(ApiModel):
    """Judge the check's relative limit with a sequential test against stable over everything measured since the
    candidate began serving, rather than with a threshold on one window: valid however often it is looked at."""

    confidence: float = Field(default=0.95, ge=0.8, le=0.999)
    """How sure the test must be before a verdict: a healthy candidate fails at most 1 - confidence of its
    rollouts, whatever their length (split evenly over the analysis' sequential checks, so that this holds for
    all of them together). Until it is that sure either way, the check is Undecided: the step holds,
    and no analysis counts toward noDataLimit or failureLimit for it, until the budget (maxDuration, maxSamples)
    is spent."""
    max_duration: PositiveDuration = "1h"
    """How long since the candidate began serving the check may stay Undecided; then onBudget decides."""
    max_samples: int | None = Field(default=None, ge=MIN_SAMPLES, le=MAX_SAMPLES)
    """How many candidate samples the check may stay Undecided for; then onBudget decides (no bound but
    maxDuration when unset)."""
    on_budget: BudgetPolicy = BudgetPolicy.Pass
    """What an Undecided check becomes once its budget is spent: Pass (the evidence did not say worse) or Fail."""


class DriftTest(ApiModel):
    """How a driftTest check judges: each feature's live inputs in the window against the version's reference
    inputs, by a chi-square test whose false alarms are bounded over a number of analyses."""

    confidence: float = Field(default=0.95, ge=0.8, le=0.999)
    """A version without drift fails at most 1 - confidence of its first `looks` analyses, all features together."""
    looks: int = Field(default=60, ge=1, le=100000)
    """The analyses 1 - confidence is spread over (Bonferroni): each tests each of F features at
    (1 - confidence) / (looks * F). 60 is an hour at the default 1m interval; past them the bound grows by
    1 - confidence per further `looks` analyses."""


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
    """Fail when the candidate is more than this percent above stable, measured in the same window. With
    `sequential` on a latency template: the share of requests slower than the bucket bound nearest stable's
    quantile, not the latency itself."""
    no_data: NoDataPolicy = NoDataPolicy.Hold
    """What a missing value means: Hold (wait, fail after analysis.noDataLimit), Fail, or Pass."""
    min_samples: int = Field(default=0, ge=0)
    """Samples the candidate needs in the window before this check gives a verdict."""
    dry_run: bool = False
    """Measured and shown (status.checks, metrics, a DryRunCheckFailed event) but never part of a decision: a new
    check tried on live rollouts before it may roll anything back."""
    grading_delay: Duration | None = None
    """How long after a prediction the check's metrics count it (the accuracy contract's grading age): the check gives
    its first verdict of a rollout only once the candidate has served for the window and this delay, and passes a
    step only once the window and this delay have passed since that step began, so that its window holds
    predictions made at that step; a sequential check's evidence starts this delay after the candidate began serving. Until its first
    verdict it waits: the step cannot pass, and the wait is not counted as missing data."""
    sequential: SequentialTest | None = None
    """Test maxDropPercent or maxIncreasePercent sequentially (see SequentialTest): for accuracy, errorRate or a
    query whose value is a proportion of its sampleQuery's count, a two-proportion test; for the latency templates,
    a comparison of the two versions' latency histograms."""
    drift_test: DriftTest | None = None
    """The driftTest template's settings (its defaults when unset); only on a driftTest check."""
    step_kinds: list[StepKind] | None = Field(default=None, min_length=1, json_schema_extra={"x-kubernetes-list-type": "set"})
    """The kinds of step (weight, mirror, match) whose analyses this check takes part in; by default every kind,
    except for the shadowAgreement template: mirror steps only, the only ones with mirrored requests to compare."""

    @model_validator(mode="after")
    def _source_and_limits(self) -> Check:
        if (self.template is None) == (self.query is None):
            raise ValueError(f"check {self.name!r}: exactly one of template or query is required")
        if self.query is not None and self.min_samples > 0 and self.sample_query is None:
            raise ValueError(f"check {self.name!r}: minSamples on a query check needs a sampleQuery that counts the samples")
        for field, text in (("query", self.query), ("sampleQuery", self.sample_query)):
            if text is not None:
                try:
                    check_query(text)
                except ValueError as e:
                    raise ValueError(f"check {self.name!r}: {field}: {e}") from None
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"check {self.name!r}: {CHECK_MIN_MAX_RULE['message']}")
        if self.template is CheckTemplate.driftTest or self.drift_test is not None:
            if self.template is not CheckTemplate.driftTest or not self.limits_missing or self.sequential is not None:
                raise ValueError(f"check {self.name!r}: {CHECK_DRIFT_TEST_RULE['message']}")
        elif self.limits_missing:
            raise ValueError(
                f"check {self.name!r}: needs at least one limit: min, max, maxDropPercent or maxIncreasePercent"
            )
        if self.sequential is not None:
            if (self.max_drop_percent is None) == (self.max_increase_percent is None) or not (
                    self.min is None and self.max is None):
                raise ValueError(f"check {self.name!r}: {CHECK_SEQUENTIAL_LIMIT_RULE['message']}")
            if self.template is not None and self.template not in PROPORTION_TEMPLATES | LATENCY_TEMPLATES or (
                    self.template is None and self.sample_query is None):
                raise ValueError(f"check {self.name!r}: {CHECK_SEQUENTIAL_SOURCE_RULE['message']}")
            if self.compares_latencies and self.max_increase_percent is None:
                raise ValueError(f"check {self.name!r}: {CHECK_SEQUENTIAL_LATENCY_LIMIT_RULE['message']}")
        return self

    @property
    def compares_latencies(self) -> bool:
        """A sequential check on latency histograms (otherwise on proportions)."""
        return self.template in LATENCY_TEMPLATES

    def applies_to(self, kind: StepKind) -> bool:
        if self.step_kinds is not None:
            return kind in self.step_kinds
        return kind is StepKind.mirror or self.template is not CheckTemplate.shadowAgreement

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
# shadowAgreement reads the serving side's comparison counters (a contract, not a backend's metric): every backend
# that can mirror has it. accuracy and driftScore read contracts too (graded predictions, a drift detector's
# score or binned inputs), so every backend has them; on Seldon v1, accuracy reads Seldon's own feedback counters
# instead.
_CONTRACTS = frozenset({CheckTemplate.accuracy, CheckTemplate.driftScore, CheckTemplate.driftTest})
BACKEND_TEMPLATES: dict[Backend, frozenset[CheckTemplate]] = {
    Backend.kserve: frozenset(CheckTemplate) - {CheckTemplate.shadowAgreement},
    Backend.seldon: frozenset(CheckTemplate),
    Backend.seldonV2: _CONTRACTS | {CheckTemplate.errorRate, CheckTemplate.meanLatency, CheckTemplate.shadowAgreement},
    Backend.gatewayAPI: _CONTRACTS | {CheckTemplate.shadowAgreement},
}


# Backends where a route the spec names carries the split (CEL: that it is named). With it they carry the steps
# gatewayAPI carries, and (KServe exporting no request metrics in Standard mode) only the contract templates, the
# shadow-comparison one with them (mirror steps are carried there).
ROUTED_BACKENDS = {Backend.kserve: "has(self.serving.kserve) && has(self.serving.kserve.httpRoute)"}
ROUTED_TEMPLATES = _CONTRACTS | {CheckTemplate.shadowAgreement}


def routed(serving: Serving) -> bool:
    """The spec names a route that carries the split (serving.kserve.httpRoute)."""
    return serving.backend is Backend.kserve and serving.kserve is not None and serving.kserve.http_route is not None


def template_support(serving: Serving) -> frozenset[CheckTemplate]:
    """The built-in templates the spec's serving section has metrics for."""
    return ROUTED_TEMPLATES if routed(serving) else BACKEND_TEMPLATES[serving.backend]


def _templates_rule() -> dict[str, str]:
    def within(allowed: frozenset[CheckTemplate]) -> str:
        names = ", ".join(f"'{t.value}'" for t in sorted(allowed, key=lambda t: t.value))
        return f"self.analysis.checks.all(c, !has(c.template) || c.template in [{names}])"

    clauses = [f"(self.serving.backend != '{backend.value}' || {within(allowed)})"
               for backend, allowed in BACKEND_TEMPLATES.items() if allowed != frozenset(CheckTemplate)]
    clauses += [f"(self.serving.backend != '{backend.value}' || !({cel}) || {within(ROUTED_TEMPLATES)})"
                for backend, cel in ROUTED_BACKENDS.items()]
    words = "; ".join(f"{b.value}: {', '.join(sorted(t.value for t in allowed)) or 'none, write a query'}"
                      for b, allowed in BACKEND_TEMPLATES.items() if allowed != frozenset(CheckTemplate))
    words += "; kserve with serving.kserve.httpRoute: " + ", ".join(sorted(t.value for t in ROUTED_TEMPLATES))
    return {"rule": "!has(self.analysis) || !has(self.analysis.checks) || (" + " && ".join(clauses) + ")",
            "fieldPath": ".analysis.checks",
            "message": f"a check uses a built-in template the serving backend has no metrics for ({words})"}


TEMPLATES_SUPPORTED_RULE = _templates_rule()

# Backends whose latency templates read a histogram, whose buckets a sequential latency check compares.
LATENCY_HISTOGRAM_BACKENDS = frozenset({Backend.kserve, Backend.seldon})
SEQUENTIAL_LATENCY_RULE = {
    "rule": "!has(self.analysis) || !has(self.analysis.checks) || self.serving.backend in ["
            + ", ".join(f"'{b.value}'" for b in sorted(LATENCY_HISTOGRAM_BACKENDS, key=lambda b: b.value)) + "]"
            f" || self.analysis.checks.all(c, !has(c.sequential) || !has(c.template) || !(c.template in [{_LATENCY_NAMES}]))",
    "fieldPath": ".analysis.checks",
    "message": "a sequential latency check compares latency histograms, which only the "
               + " and ".join(sorted(b.value for b in LATENCY_HISTOGRAM_BACKENDS)) + " backends export",
}


@dataclass(frozen=True)
class StepSupport:
    """Which step kinds a backend can carry; a step it cannot is refused, never carried as something else."""

    mirror_percents: frozenset[int]
    match: bool
    limits: str
    """What the backend cannot do, in words, for the refusal."""

    def refuses(self, step: Step) -> bool:
        return (step.mirror is not None and step.mirror not in self.mirror_percents) or (step.match is not None and not self.match)


ANY_PERCENT = frozenset(range(1, 101))
BACKEND_STEPS: dict[Backend, StepSupport] = {
    Backend.kserve: StepSupport(frozenset(), False, (
        "KServe (serverless, on Knative) has no request mirroring and no header routing: mirror and match steps "
        "cannot be carried (with the annotation serving.kserve.io/enable-tag-routing the candidate's revision gets a "
        "URL of its own, for testers to call directly); in Standard mode, serving.kserve.httpRoute carries them")),
    Backend.seldon: StepSupport(frozenset({100}), False, (
        "Seldon Core v1 copies every request to a shadow predictor (mirror: 100 only) and has no header routing "
        "(no match steps)")),
    Backend.seldonV2: StepSupport(ANY_PERCENT, False, (
        "Seldon Core v2 Experiments mirror any percent but route no header cohort: no match steps (testers can "
        "call the candidate Model by name with the Seldon-Model header)")),
    Backend.gatewayAPI: StepSupport(ANY_PERCENT, True, ""),
}


def step_support(serving: Serving) -> StepSupport:
    """The steps the spec's serving section can carry."""
    return BACKEND_STEPS[Backend.gatewayAPI if routed(serving) else serving.backend]


def _steps_rule() -> dict[str, str]:
    clauses = []
    for backend, support in BACKEND_STEPS.items():
        allowed = []
        if support.mirror_percents != ANY_PERCENT:
            allowed.append("!has(s.mirror)" if not support.mirror_percents else
                           f"(!has(s.mirror) || s.mirror in {sorted(support.mirror_percents)})")
        if not support.match:
            allowed.append("!has(s.match)")
        if allowed:
            routed = f"({ROUTED_BACKENDS[backend]}) || " if backend in ROUTED_BACKENDS else ""
            clauses.append(f"(self.serving.backend != '{backend.value}' || {routed}"
                           f"self.strategy.steps.all(s, {' && '.join(allowed)}))")
    words = "; ".join(f"{b.value}: {s.limits}" for b, s in BACKEND_STEPS.items() if s.limits)
    return {"rule": "!has(self.strategy) || !has(self.strategy.steps) || (" + " && ".join(clauses) + ")",
            "fieldPath": ".strategy.steps", "message": f"a step the serving backend cannot carry ({words})"}


STEPS_SUPPORTED_RULE = _steps_rule()

# KServe (serverless) marks rolled out whichever revision takes all traffic, and afterwards gives that revision
# whatever the canary leaves: a candidate at 100 % before promotion would keep serving through a rollback until
# stable's artifact, written as a new revision, has started (minutes for a large model; never if it cannot).
_FULL_WEIGHT_WORDS = ("on the kserve backend a candidate never takes 100 % before promotion: KServe rolls out the "
                      "revision that takes all traffic, and a rollback would leave it serving until stable's revision "
                      "has started again; end the steps below 100 (promotion then sends everything to the candidate)")
KSERVE_FULL_WEIGHT_RULE = {
    "rule": "self.serving.backend != 'kserve' || !has(self.strategy) || "
            "((!has(self.strategy.type) || self.strategy.type != 'HotSwap') && "
            "(!has(self.strategy.steps) || self.strategy.steps.all(s, !has(s.weight) || s.weight < 100)))",
    "fieldPath": ".strategy",
    "message": f"strategy: HotSwap and steps of weight 100 are refused: {_FULL_WEIGHT_WORDS}",
}
KSERVE_FULL_OVERRIDE_RULE = {
    "rule": "self.serving.backend != 'kserve' || !has(self.trafficOverride) || self.trafficOverride.weight < 100",
    "fieldPath": ".trafficOverride.weight",
    "message": f"trafficOverride.weight 100 is refused: {_FULL_WEIGHT_WORDS}",
}


KEEP_WARM_WORDS = "only retained versions are kept warm"
KEEP_WARM_RULE = {
    "rule": "!has(self.keepWarm) || self.keepWarm <= (has(self.retention) ? self.retention : 2)",
    "fieldPath": ".keepWarm",
    "message": f"keepWarm is more than retention: {KEEP_WARM_WORDS}",
}


def full_weight_refusal(spec: ModelDeploymentSpec) -> str | None:
    """Why the spec would send the candidate 100 % before promotion on a backend where that leaves no way back
    (KSERVE_FULL_WEIGHT_RULE, KSERVE_FULL_OVERRIDE_RULE), naming the field; None when it does not. Not a validator of the model: a spec
    stored before the rule must still parse, so that the round can take its candidate back to stable."""
    if spec.serving.backend is not Backend.kserve:
        return None
    if spec.strategy.type is StrategyType.HotSwap:
        return f"strategy.type HotSwap is refused: {_FULL_WEIGHT_WORDS}"
    if spec.traffic_override is not None and spec.traffic_override.weight == 100:
        return f"trafficOverride.weight 100 is refused: {_FULL_WEIGHT_WORDS}"
    full = [i for i, step in enumerate(spec.strategy.steps) if step.weight == 100]
    return f"strategy.steps {full}: weight 100 is refused: {_FULL_WEIGHT_WORDS}" if full else None


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
MAX_ANALYSES_LIMIT = 1000
"""failureLimit and noDataLimit: a step's deadline counts their analyses (rollout.plan.progress_deadline)."""
ONE_PROVIDER_RULE = {
    "rule": "!(has(self.provider) && has(self.prometheus))",
    "message": "analysis.provider and analysis.prometheus exclude each other",
}


class Analysis(ApiModel):
    interval: PositiveDuration = "1m"
    """How often the checks are measured and a verdict is taken (more than 0s, at most 168h)."""
    window: PositiveDuration | None = None
    """Range of the queries' rate windows; defaults to the interval."""
    failure_limit: int = Field(default=2, ge=1, le=MAX_ANALYSES_LIMIT)
    """Consecutive failed analyses that trigger a rollback."""
    no_data_limit: int = Field(default=3, ge=1, le=MAX_ANALYSES_LIMIT)
    """Consecutive analyses a Hold check may go without data before that counts as a failure."""
    checks: list[Check] = Field(default_factory=list, max_length=32)
    provider: ObjectName | None = None
    """ClusterMetricProvider to query; `default` when neither this nor prometheus is set."""
    prometheus: PrometheusConfig | None = None
    """An inline Prometheus instead of a provider: honoured only when the operator runs with
    --allow-inline-providers (it lets a tenant choose where the operator sends requests)."""

    @model_validator(mode="after")
    def _one_provider_and_unique_names(self) -> Analysis:
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
    Drill = "Drill"
    """A rollback drill: all traffic to the fallback version for a moment, then back to stable, timed."""


class Request(ApiModel):
    """A one-shot manual action; carried out once per distinct id."""

    id: str = Field(min_length=1, max_length=128)
    """Unique per request (the plugin uses a timestamp); a request whose id was seen is not repeated."""
    action: Action
    version: SemVer | None = None
    """For Rollback: the retained version to go back to; defaults to the fallback version (a Drill always uses the
    fallback version)."""
    reason: Reason
    actor: Text(256) | None = None
    """Who asked; the plugin fills in the kubectl user."""


MAX_HISTORY_LIMIT = 200


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
    """How many previous stable versions status.retainedVersions remembers as Rollback targets (the first is the
    fallback). Those beyond keepWarm are not kept serving: going back to one deploys it again from its ModelVersion."""
    keep_warm: int = Field(default=0, ge=0, le=10)
    """How many of the retained versions, newest first, stay deployed with no traffic, so that going back to one (a
    Rollback request, a Drill, spec.version set back) moves traffic without waiting for it to start. Only the kserve
    backend in Standard mode keeps versions warm (status.warmVersions); elsewhere the WarmFallbacks condition says
    that none is kept. Each warm version runs pods of its own."""
    history_limit: int = Field(default=20, ge=1, le=MAX_HISTORY_LIMIT)
    """History entries kept in status."""
    notifications: list[ObjectName] = Field(default_factory=list, max_length=8,
                                            json_schema_extra={"x-kubernetes-list-type": "set"})
    """ClusterNotifiers told about this deployment's rollouts and manual actions (none by default); each must
    admit this namespace."""

    @model_validator(mode="after")
    def _warm_versions_retained(self) -> ModelDeploymentSpec:
        if self.keep_warm > self.retention:
            raise ValueError(f"keepWarm: {self.keep_warm} is more than retention ({self.retention}): "
                             f"{KEEP_WARM_WORDS}")
        return self

    @model_validator(mode="after")
    def _notifiers_named_once(self) -> ModelDeploymentSpec:
        if len(set(self.notifications)) != len(self.notifications):
            raise ValueError("notifications: each ClusterNotifier is named once")
        return self

    @model_validator(mode="after")
    def _steps_supported(self) -> ModelDeploymentSpec:
        support = step_support(self.serving)
        refused = [i for i, step in enumerate(self.strategy.steps) if support.refuses(step)]
        if refused:
            raise ValueError(f"strategy.steps {refused}: the {self.serving.backend.value} backend cannot carry them: "
                             f"{support.limits}")
        return self

    @model_validator(mode="after")
    def _latency_histograms_exported(self) -> ModelDeploymentSpec:
        if self.serving.backend not in LATENCY_HISTOGRAM_BACKENDS:
            refused = [c.name for c in self.analysis.checks if c.sequential is not None and c.compares_latencies]
            if refused:
                raise ValueError(f"analysis.checks {refused}: {SEQUENTIAL_LATENCY_RULE['message']}")
        return self

    @model_validator(mode="after")
    def _templates_supported(self) -> ModelDeploymentSpec:
        allowed = template_support(self.serving)
        unsupported = [c.name for c in self.analysis.checks if c.template is not None and c.template not in allowed]
        if unsupported:
            where = " (Standard mode, serving.kserve.httpRoute)" if routed(self.serving) else ""
            raise ValueError(f"analysis.checks {unsupported}: the {self.serving.backend.value} backend{where} has no metrics "
                             f"for their template; built-in: {sorted(t.value for t in allowed) or 'none'} "
                             "(write a query instead)")
        return self


class Phase(str, Enum):
    Stable = "Stable"
    Queued = "Queued"
    """spec.version moved, but the operator's limit of rollouts in flight is reached: stable serves meanwhile."""
    Drilling = "Drilling"
    """A rollback drill: the fallback version carries all traffic for a moment, then stable again (status.drill)."""
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
    Undecided = "Undecided"
    """A sequential check without enough evidence yet either way, within its budget: holds the step, and is no
    missing data."""
    Error = "Error"
    """The metric provider failed (unreachable, timeout, bad query): never a pass."""


class Outcome(str, Enum):
    """One analysis' outcome over all checks."""

    Passed = "Passed"
    Failed = "Failed"
    Inconclusive = "Inconclusive"
    """A check without data (or a provider error): counts toward noDataLimit."""
    Undecided = "Undecided"
    """Every check measured, none failed, a sequential check still undecided within its budget: the step holds,
    and neither noDataLimit nor failureLimit counts it."""


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
    dry_run: bool = False
    """The check is a dry run: its verdict decided nothing."""
    budget_left: str | None = None
    """What is left of an Undecided sequential check's budget, in words (`55m of maxDuration 1h`)."""
    budget_warning: str | None = None
    """Why the budget left of an Undecided sequential check is not expected to reach a verdict, in words (a candidate
    as good as stable would need more samples than the traffic brings in it); None when it is."""
    budget_warned: bool = False
    """A Warning event has said so in this rollout: it is said once per rollout."""
    candidate_intervals: Intervals | None = None
    """A sequential proportion check's candidate counts, analysis by analysis, as sums: their spread across
    intervals (bursts) widens the evidence's variance beyond the binomial one."""
    stable_intervals: Intervals | None = None
    """The same of stable's counts."""


class HistoryEntry(StatusModel):
    version: str
    action: str
    reason: str
    actor: str = "modelops"
    time: str


class DrillStatus(StatusModel):
    """A rollback drill in flight. Times are RFC 3339, those of the operator's rounds: it runs one a second
    during a drill, so they are to about 1 s."""

    fallback_version: str
    """The version that carries all traffic during the drill."""
    returns_to: str
    """Stable: the version traffic goes back to."""
    started_at: str
    """When the Drill request was acted on."""
    routed_at: str | None = None
    """When the fallback was seen ready on the backend and all traffic was sent to it (until then it is deployed
    beside stable with no traffic)."""
    on_fallback_at: str | None = None
    """The first round that saw the backend carry all traffic on the fallback."""
    returning_at: str | None = None
    """When the drill sent all traffic back to stable (after holding it on the fallback)."""
    actor: str = "unknown"
    reason: str = ""


class DrillResult(str, Enum):
    Completed = "Completed"
    """All traffic went to the fallback and back to stable."""
    Interrupted = "Interrupted"
    """Ended early (a spec change, a request, the fallback not ready, the time limit, an operator error): all
    traffic back on stable at once."""


class LastDrill(StatusModel):
    """The last rollback drill, completed or interrupted."""

    fallback_version: str
    returned_to: str
    started_at: str
    ended_at: str
    seconds_to_fallback: FiniteOrNone = None
    """From the request being acted on to the first round that saw the backend carry all traffic on the
    fallback (to about 1 s: rounds run one a second during a drill); null when it never did."""
    seconds_back: FiniteOrNone = None
    """From sending all traffic back to the first round that saw the backend carry all of it on stable again;
    null for an interrupted drill."""
    requests_lost: int | None = None
    """Requests that failed (5xx) on the fallback and stable from the drill's start until its window was scraped,
    from the backend's error-rate metrics; null when not measured (see requestsLostNote)."""
    requests_lost_note: str | None = None
    """Why requestsLost is not measured."""
    requests_lost_due: str | None = None
    """When requestsLost is measured (the drill's end plus the analysis window); null once it was."""
    result: DrillResult
    message: str
    actor: str = "unknown"
    reason: str = ""


class WarmVersion(StatusModel):
    """A retained version kept deployed with no traffic."""

    version: str
    ready: bool = False
    """The backend reports it ready to serve (KServe: its canary entry's Deployment has an available pod)."""


class ModelDeploymentStatus(StatusModel):
    phase: Phase | None = None
    message: str | None = None
    """Why the last decision was taken."""
    stable_version: str | None = None
    canary_version: str | None = None
    fallback_version: str | None = None
    retained_versions: list[str] = Field(default_factory=list)
    """Previous stable versions a Rollback request may name, newest (the fallback) first; remembered, and kept
    serving only as warmVersions says."""
    warm_versions: list[WarmVersion] = Field(default_factory=list)
    """The retained versions the backend keeps deployed with no traffic (spec.keepWarm), newest first."""
    failed_version: str | None = None
    """Candidate that was rolled back; not retried until spec.version changes or a Retry request."""
    canary_weight: int = Field(default=0, ge=0, le=100)
    canary_mirror: int = Field(default=0, ge=0, le=100)
    """Percent of stable's requests copied to the candidate (a mirror step)."""
    canary_match: list[HeaderMatch] = Field(default_factory=list)
    """Requests carrying these headers go to the candidate (a match step)."""
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
    drill: DrillStatus | None = None
    """The rollback drill in flight (phase Drilling)."""
    last_drill: LastDrill | None = None
    """The last rollback drill and its figures."""
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
