"""The operator's own Prometheus metrics: what it decided, and what it wrote."""

from __future__ import annotations

import contextlib
from datetime import datetime

from prometheus_client import Counter, Gauge

CANARY_WEIGHT = Gauge("modelops_canary_weight_percent", "Traffic percent on the candidate version.",
                      ["namespace", "deployment"])
STATUS_PATCHES = Counter("modelops_status_patches_total", "Status writes of ModelDeployments.",
                         ["namespace", "deployment"])
DECISIONS = Counter("modelops_decisions_total", "Rollout decisions by reason (StepAdvanced, Promoted, RolledBack, ...).",
                    ["namespace", "deployment", "reason"])
ANALYSIS_SECONDS = Gauge("modelops_analysis_duration_seconds", "Wall time of the last analysis (all queries).",
                         ["namespace", "deployment"])
ANALYSES = Counter("modelops_analyses_total", "Analyses run (all checks measured once).", ["namespace", "deployment"])
RECONCILE_ERRORS = Counter("modelops_reconcile_errors_total",
                           "Rounds that could not finish, by reason (ApiError, Timeout, BackendMisconfigured, InternalError, ...).",
                           ["reason"])
CHECK_VERDICTS = Counter("modelops_check_verdicts_total",
                         "Verdicts of each check (Pass, Fail, NoData, Error: the metric provider failed).",
                         ["namespace", "deployment", "check", "verdict"])
PROGRESS_DEADLINE = Gauge("modelops_progress_deadline_timestamp_seconds",
                          "When the rollout's current wait or step runs out of the time its spec allows (unix time);"
                          " no series while no rollout moves on its own.", ["namespace", "deployment"])


def show_progress_deadline(namespace: str, deployment: str, deadline: datetime | None) -> None:
    if deadline is not None:
        PROGRESS_DEADLINE.labels(namespace, deployment).set(deadline.timestamp())
        return
    with contextlib.suppress(KeyError):  # it had none
        PROGRESS_DEADLINE.remove(namespace, deployment)
