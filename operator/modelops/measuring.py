"""A round's analysis: when one is due, the checks in effect measured on the candidate's and stable's serving units
and judged, within a budget, and given up when the spec changes meanwhile."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

from . import metrics
from .analysis.evaluate import Measurement, awaiting_labels, evaluate, sequential_checks
from .analysis.measure import analyse, unless_set
from .analysis.promql import Subject
from .analysis.provider import Asker, ProviderError, ProviderFactory, answered_within
from .api.modeldeployment import ModelDeploymentSpec, ModelDeploymentStatus
from .api.types import duration_seconds
from .rollout import AnalysisReport, analysis_instant, analysis_window, check_window, checks_in_effect, grading_until
from .rollout import seconds_to_next_analysis
from .rollout.values import rfc3339
from .routers.base import Router, Target

MAX_ANALYSIS_SECONDS = 30.0
"""An analysis' budget: at most this, and at most its interval, from its first request sent (answered_within: a wait
for a turn behind other tenants comes on top, up to FIRST_TURN_SECONDS)."""

async def measure_if_due(providers: ProviderFactory, spec: ModelDeploymentSpec, status: ModelDeploymentStatus,
                         units: dict[str, str], router: Router, target: Target, spec_changed: asyncio.Event,
                         now: datetime) -> AnalysisReport | None:
    """The analysis when one is due, of the versions' serving `units`; given up (None) when `spec_changed` is set
    meanwhile, so that a request or a new version never waits for a slow metric provider. Its budget counts from its
    first request sent (answered_within): a wait for a turn behind other tenants' requests is not taken from it."""
    if seconds_to_next_analysis(spec, status, now) != 0.0:
        return None
    metrics.show_analysis_lag(target.namespace, target.deployment, spec, status, now)
    assert status.canary_version is not None and status.stable_version is not None
    budget = min(MAX_ANALYSIS_SECONDS, max(1.0, duration_seconds(spec.analysis.interval)))
    at = analysis_instant(now)
    in_effect = checks_in_effect(spec, status)
    until = {c.name: grading_until(spec, status, c, at) for c in in_effect}
    checks = [c for c in in_effect if until[c.name] is None]
    grading = tuple(awaiting_labels(c, rfc3339(t), rfc3339(at)) for c in in_effect if (t := until[c.name]) is not None)

    def subject(version: str) -> Subject:
        return Subject(target.namespace, spec.model, version, units.get(version, version),
                       router.object_name(target), analysis_window(spec))

    asker = Asker(target.namespace, target.deployment)
    previous = {c.name: c for c in status.checks}

    async def run() -> tuple:
        provider = await providers(spec.analysis, asker, budget)
        return await analyse(provider, checks, router.templates, subject(status.canary_version),
                             subject(status.stable_version), at, rfc3339(at),
                             {c.name: check_window(spec, status, c, at) for c in checks}, previous,
                             sequential_checks(spec.analysis.checks))

    started = time.monotonic()
    try:
        results = await unless_set(spec_changed, answered_within(run(), asker, budget + 1.0))
        if results is None:
            return None
    except (asyncio.TimeoutError, ProviderError) as e:
        words = f"analysis gave no answer within {budget:g}s" if isinstance(e, asyncio.TimeoutError) else str(e)
        results = tuple(evaluate(c, Measurement(None, error=words), rfc3339(at), previous.get(c.name)) for c in checks)
    metrics.show_analysis(target.namespace, target.deployment, status.canary_version, checks, results,
                          time.monotonic() - started)
    return AnalysisReport(at, tuple(results) + grading)
