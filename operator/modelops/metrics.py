"""The operator's own Prometheus metrics: what it decided, what it measured, and what it wrote.

Every series of a ModelDeployment carries its `namespace` and `deployment`; `forget` removes
them all when it is deleted. A value that cannot be measured has no series (never NaN): a
dashboard shows a gap and an alert on it stays silent, instead of both reading a number.

Rollbacks and promotions are counted by `reason`: `automatic` (the operator's own decision:
analyses passed at every step; failed analyses, a candidate not ready in time, its ModelVersion
gone, or an unexpected error) or `manual` (a Promote, Abort or Rollback request). A
progressive rollback counts once, when it starts.
"""

from __future__ import annotations

import contextlib
import math
from datetime import datetime, timezone
from typing import Iterable, Mapping

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

from .analysis.evaluate import limit_bounds
from .api.modeldeployment import Check, CheckStatus, ModelDeploymentSpec, ModelDeploymentStatus, Phase, Verdict
from .rollout.plan import progress_deadline, seconds_to_next_analysis

_PER_DEPLOYMENT: list[tuple[MetricWrapperBase, tuple[str, ...]]] = []
"""Every metric with namespace and deployment labels, with its label names: what `forget` clears."""


def _per_deployment(kind: type, name: str, documentation: str, *labels: str, **options):
    names = ("namespace", "deployment", *labels)
    metric = kind(name, documentation, names, **options)
    _PER_DEPLOYMENT.append((metric, names))
    return metric


CANARY_WEIGHT = _per_deployment(Gauge, "modelops_canary_weight_percent", "Traffic percent on the candidate version.")
TRAFFIC_WEIGHT = _per_deployment(Gauge, "modelops_traffic_weight_percent",
                                 "Traffic percent on each version, as last applied to the backend; no series for a"
                                 " version that takes no traffic.", "version")
PHASE = _per_deployment(Gauge, "modelops_phase", "1 for the deployment's current phase, 0 for the others (none: no"
                        " version deployed yet).", "phase")
STATUS_PATCHES = _per_deployment(Counter, "modelops_status_patches_total", "Status writes of ModelDeployments.")
DECISIONS = _per_deployment(Counter, "modelops_decisions_total",
                            "Rollout decisions by reason (StepAdvanced, Promoted, RolledBack, ...).", "reason")
ROLLBACKS = _per_deployment(Counter, "modelops_rollbacks_total",
                            "Rollbacks by reason: automatic (the operator decided) or manual (an Abort or Rollback"
                            " request); a progressive rollback counts when it starts.", "reason")
PROMOTIONS = _per_deployment(Counter, "modelops_promotions_total",
                             "Promotions by reason: automatic (analysis passed at every step) or manual (a Promote"
                             " request).", "reason")
ANALYSIS_SECONDS = _per_deployment(Histogram, "modelops_analysis_duration_seconds",
                                   "Wall time of analyses (all checks' queries), including those given up.",
                                   buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30))
ANALYSIS_LAG = _per_deployment(Histogram, "modelops_analysis_lag_seconds",
                               "How late analyses are taken: from falling due (the time to the next analysis"
                               " reaching 0) to being started.",
                               buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
ANALYSES = _per_deployment(Counter, "modelops_analyses_total", "Analyses run (all checks measured once).")
CHECK_VERDICTS = _per_deployment(Counter, "modelops_check_verdicts_total",
                                 "Verdicts of each check (Pass, Fail, NoData, Undecided: a sequential check without enough "
                                 "evidence yet, Error: the metric provider failed).",
                                 "check", "verdict")
CHECK_VALUE = _per_deployment(Gauge, "modelops_check_value",
                              "The candidate's value of a check in the last analysis (kept, like status.checks, after"
                              " the rollout ends, until the next one starts); no series when it had none (no data, an"
                              " error, a non-finite number).", "check", "version")
CHECK_LIMIT = _per_deployment(Gauge, "modelops_check_limit",
                              "The bound a check's value was held against in the last analysis (bound=min: the value"
                              " must not be below it; max: not above), a relative limit computed from stable's value"
                              " in the same window; no series when there was none.", "check", "bound")
RECONCILE_ERRORS = _per_deployment(Counter, "modelops_reconcile_errors_total",
                                   "Rounds that could not finish, by reason (ApiError, Timeout, BackendMisconfigured,"
                                   " ModelVersionMissing, InternalError, ...).", "reason")
PROGRESS_DEADLINE = _per_deployment(Gauge, "modelops_progress_deadline_timestamp_seconds",
                                    "When the rollout's current wait or step runs out of the time its spec allows"
                                    " (unix time); no series while no rollout moves on its own.")
DRILL_SECONDS_TO_FALLBACK = _per_deployment(Gauge, "modelops_drill_seconds_to_fallback",
                                            "Seconds the last rollback drill took from the request to all traffic on"
                                            " the fallback version (to about 1 s); no series when it never got there.")

_shown: dict[tuple[Gauge, str, str], set[tuple[str, ...]]] = {}
"""(metric, namespace, deployment) -> the label values past those two that `_show` exported."""


def _show(metric: Gauge, namespace: str, deployment: str, values: Mapping[tuple[str, ...], float | None]) -> None:
    """Exactly these series of the deployment: a value that is not a finite number, or absent, has none."""
    key = (metric, namespace, deployment)
    kept = {labels: v for labels, v in values.items() if v is not None and math.isfinite(v)}
    for labels in _shown.get(key, set()) - kept.keys():
        with contextlib.suppress(KeyError):
            metric.remove(namespace, deployment, *labels)
    for labels, value in kept.items():
        metric.labels(namespace, deployment, *labels).set(value)
    if kept:
        _shown[key] = set(kept)
    else:
        _shown.pop(key, None)


def show_progress_deadline(namespace: str, deployment: str, deadline: datetime | None) -> None:
    if deadline is not None:
        PROGRESS_DEADLINE.labels(namespace, deployment).set(deadline.timestamp())
        return
    with contextlib.suppress(KeyError):  # it had none
        PROGRESS_DEADLINE.remove(namespace, deployment)


def show_phase(namespace: str, deployment: str, phase: Phase | None) -> None:
    """One series per phase, as kube-state-metrics does: 1 for the current one, 0 for the rest."""
    for each in Phase:
        PHASE.labels(namespace, deployment, each.value).set(1 if each is phase else 0)


def show_traffic(namespace: str, deployment: str, weights: Mapping[str, int]) -> None:
    """The split the backend was last set to: version -> percent; a version without traffic has no series."""
    _show(TRAFFIC_WEIGHT, namespace, deployment, {(version,): float(w) for version, w in weights.items() if w > 0})


def show_analysis(namespace: str, deployment: str, version: str, checks: Iterable[Check],
                  results: Iterable[CheckStatus], seconds: float) -> None:
    """One analysis of `version` (the candidate): its duration, verdicts, values and the limits in effect."""
    results = tuple(results)
    ANALYSIS_SECONDS.labels(namespace, deployment).observe(seconds)
    ANALYSES.labels(namespace, deployment).inc()
    by_name = {c.name: c for c in checks}
    values: dict[tuple[str, ...], float | None] = {}
    limits: dict[tuple[str, ...], float | None] = {}
    for result in results:
        for verdict in Verdict:  # every verdict from 0 on: increase() sees the first Fail or Error too
            CHECK_VERDICTS.labels(namespace, deployment, result.name, verdict.value)
        CHECK_VERDICTS.labels(namespace, deployment, result.name, result.verdict.value).inc()
        values[(result.name, version)] = result.value
        if result.name in by_name:
            for bound, number in limit_bounds(by_name[result.name], result.baseline).items():
                limits[(result.name, bound)] = number
    _show(CHECK_VALUE, namespace, deployment, values)
    _show(CHECK_LIMIT, namespace, deployment, limits)


_EPOCH = datetime.fromtimestamp(0, timezone.utc)


def show_analysis_lag(namespace: str, deployment: str, spec: ModelDeploymentSpec, status: ModelDeploymentStatus,
                      now: datetime) -> None:
    """An analysis due by `status` is taken at `now`: how long after it fell due. Clock only: the time to it
    counted from the epoch is the moment it falls due."""
    due = seconds_to_next_analysis(spec, status, _EPOCH)
    if due is not None:
        ANALYSIS_LAG.labels(namespace, deployment).observe(max(0.0, now.timestamp() - due))


def forget_checks(namespace: str, deployment: str) -> None:
    """A rollout started and nothing is measured yet: the last one's values and limits go."""
    _show(CHECK_VALUE, namespace, deployment, {})
    _show(CHECK_LIMIT, namespace, deployment, {})


_ROLLBACK_ACTIONS = ("RolledBack", "Aborted")
_OUTCOME_REASONS = ("automatic", "manual")


def count_outcomes(namespace: str, deployment: str, before: ModelDeploymentStatus,
                   after: ModelDeploymentStatus) -> None:
    """Promotions and rollbacks a persisted decision made: its new history entries. Every round
    calls it, so each count is exported from 0 on and increase() sees its first event."""
    for reason in _OUTCOME_REASONS:
        PROMOTIONS.labels(namespace, deployment, reason)
        ROLLBACKS.labels(namespace, deployment, reason)
    for entry in after.history:
        if entry in before.history:
            continue
        reason = "automatic" if entry.actor == "modelops" else "manual"
        if entry.action == "Promoted":
            PROMOTIONS.labels(namespace, deployment, reason).inc()
        elif entry.action in _ROLLBACK_ACTIONS and before.phase is not Phase.RollingBack:
            ROLLBACKS.labels(namespace, deployment, reason).inc()  # the end of a progressive one is not another


def show_decision(namespace: str, deployment: str, spec: ModelDeploymentSpec, before: ModelDeploymentStatus,
                  after: ModelDeploymentStatus) -> None:
    """Everything a persisted decision changes in the metrics."""
    show_progress_deadline(namespace, deployment, progress_deadline(spec, after))
    show_phase(namespace, deployment, after.phase)
    count_outcomes(namespace, deployment, before, after)
    drill = after.last_drill
    _show(DRILL_SECONDS_TO_FALLBACK, namespace, deployment, {(): drill.seconds_to_fallback if drill else None})
    if not after.checks:  # a new rollout, none measured yet
        forget_checks(namespace, deployment)


def count_error(namespace: str, deployment: str, reason: str) -> None:
    RECONCILE_ERRORS.labels(namespace, deployment, reason).inc()


def forget(namespace: str, deployment: str) -> None:
    """Every series of a deleted ModelDeployment goes."""
    for metric, names in _PER_DEPLOYMENT:
        children = {tuple(sample.labels[n] for n in names)
                    for family in metric.collect() for sample in family.samples
                    if sample.labels.get("namespace") == namespace and sample.labels.get("deployment") == deployment}
        for labels in children:
            with contextlib.suppress(KeyError):
                metric.remove(*labels)
    for key in [k for k in _shown if k[1:] == (namespace, deployment)]:
        del _shown[key]
