"""ClusterNotifier: a webhook an administrator declares, the events it hears of, and which namespaces may use it.

Cluster-scoped, like ClusterMetricProvider: only whoever may create cluster-scoped objects says where the operator
sends HTTP requests and with which credentials. A ModelDeployment opts in by naming notifiers in
`spec.notifications`; it cannot change where they point.
"""

from __future__ import annotations

from enum import Enum

from pydantic import Field, model_validator

from .base import ApiModel, StatusModel
from .metricprovider import LabelSelector
from .modeldeployment import SecretKeyRef
from .modelversion import Condition
from .types import BoundedDuration, ObjectName, Text, duration_seconds

MAX_TIMEOUT = "30s"
MAX_TIMEOUT_SECONDS = duration_seconds(MAX_TIMEOUT)


class NotificationFormat(str, Enum):
    json = "json"
    """The generic JSON document (docs/operations/notifications.md)."""
    slack = "slack"
    """`{"text": ..., "blocks": [...]}`, as Slack's incoming webhooks (and compatible chat servers) take it."""


class NotificationEvent(str, Enum):
    """Event reasons a notifier can hear of (those of `kubectl describe mdep`)."""

    RolloutStarted = "RolloutStarted"
    StepAdvanced = "StepAdvanced"
    AnalysisFailed = "AnalysisFailed"
    RolledBack = "RolledBack"
    Promoted = "Promoted"
    Aborted = "Aborted"
    Paused = "Paused"
    Resumed = "Resumed"
    ManualOverride = "ManualOverride"
    StepBack = "StepBack"
    Superseded = "Superseded"
    Deployed = "Deployed"
    RequestIgnored = "RequestIgnored"
    DrillStarted = "DrillStarted"
    DrillOnFallback = "DrillOnFallback"
    DrillCompleted = "DrillCompleted"
    DrillInterrupted = "DrillInterrupted"
    DrillRequestsLost = "DrillRequestsLost"


DEFAULT_EVENTS = [NotificationEvent.RolloutStarted, NotificationEvent.StepAdvanced, NotificationEvent.AnalysisFailed,
                  NotificationEvent.RolledBack, NotificationEvent.Promoted, NotificationEvent.Aborted,
                  NotificationEvent.Paused, NotificationEvent.Resumed, NotificationEvent.ManualOverride]
"""A rollout's progress and every manual action; the rest is opt-in."""

HEADER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9-]*$"
RESERVED_HEADERS = ("host", "content-length", "content-type", "transfer-encoding", "connection")
HEADER_NOT_RESERVED_RULE = {
    "rule": "!(self.header.lowerAscii() in " + "[" + ", ".join(f"'{h}'" for h in RESERVED_HEADERS) + "])",
    "message": "secretHeader.header may not be one of " + ", ".join(RESERVED_HEADERS),
}
ONE_URL_RULE = {
    "rule": "has(self.url) != has(self.urlSecret)",
    "message": "a webhook has exactly one of url or urlSecret",
}


class SecretHeader(ApiModel):
    """A request header whose value is a Secret's key in the operator's namespace (e.g. a bearer token)."""

    name: ObjectName
    """The Secret, in the operator's own namespace."""
    key: Text(253, min_length=1)
    header: str = Field(pattern=HEADER_PATTERN, max_length=64)
    """The header it is sent as, e.g. `Authorization` (with a value such as `Bearer ...`)."""

    @model_validator(mode="after")
    def _not_reserved(self) -> SecretHeader:
        if self.header.lower() in RESERVED_HEADERS:
            raise ValueError(f"secretHeader.header may not be one of {', '.join(RESERVED_HEADERS)}")
        return self


class Webhook(ApiModel):
    url: str | None = Field(default=None, pattern=r"^https?://[^\s]+$", max_length=2048)
    """Where notifications are POSTed (http or https; redirects are not followed)."""
    url_secret: SecretKeyRef | None = None
    """The URL read from a Secret's key in the operator's namespace instead, for URLs that are themselves
    credentials (Slack's incoming webhooks)."""
    format: NotificationFormat = NotificationFormat.json
    secret_header: SecretHeader | None = None
    timeout: BoundedDuration(MAX_TIMEOUT, positive=True) = "5s"
    """Timeout of one attempt (at most 30s); a notification gets at most 3 attempts."""

    @model_validator(mode="after")
    def _one_url(self) -> Webhook:
        if (self.url is None) == (self.url_secret is None):
            raise ValueError("a webhook has exactly one of url or urlSecret")
        return self


class ClusterNotifierSpec(ApiModel):
    webhook: Webhook
    events: list[NotificationEvent] = Field(default_factory=lambda: list(DEFAULT_EVENTS), min_length=1,
                                            max_length=len(NotificationEvent),
                                            json_schema_extra={"x-kubernetes-list-type": "set",
                                                               "default": [e.value for e in DEFAULT_EVENTS]})
    """Event reasons sent; default: RolloutStarted, StepAdvanced, AnalysisFailed, RolledBack, Promoted, Aborted,
    Paused, Resumed, ManualOverride."""
    namespace_selector: LabelSelector
    """Namespaces whose ModelDeployments may name this notifier in spec.notifications; `{}` allows every namespace."""

    @model_validator(mode="after")
    def _unique_events(self) -> ClusterNotifierSpec:
        if len(set(self.events)) != len(self.events):
            raise ValueError("events must be unique")
        return self


class ClusterNotifierStatus(StatusModel):
    conditions: list[Condition] = Field(default_factory=list)
