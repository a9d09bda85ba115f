"""The shell's part of rollback drills (the decisions are the engine's, rollout/drill_steps.py).

Requests lost: once a drill has ended and its window has been scraped (its end plus the analysis window),
one measurement through the metric provider the analyses use, with the backend's built-in `errorRate`
check: for each serving unit of the fallback and of stable that took the drill's traffic (a KServe
drill makes a revision for each), the error rate times the requests over a window from the drill's
start, summed and rounded: the counts as scraped (a unit made for the drill counts from 0, so what it served
before its first scrape is in), but a unit whose counter reset meanwhile comes from increase()'s extrapolation.
Without that template (Gateway API, KServe behind serving.kserve.httpRoute) or when the provider fails, the number
is null and the note says why. Which units took the drill's traffic is kept in the deployment loop's memory
only: after a restart during the drill it is unknown, and so is the number.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass, field
from datetime import datetime

from .analysis.measure import batch_key, sample_count, unless_set
from .analysis.promql import Subject, render
from .analysis.provider import Asker, MetricProvider, ProviderError, ProviderFactory, answered_within
from .api.modeldeployment import CheckTemplate, ModelDeploymentSpec, ModelDeploymentStatus, routed, template_support
from .api.types import duration_seconds
from .rollout import DrillLoss, analysis_instant
from .rollout.values import parse_rfc3339
from .routers.base import BackendState, Router, Target

log = logging.getLogger(__name__)

MAX_LOSS_SECONDS = 30.0
"""The measurement gives up after this (the number is then not measured)."""


@dataclass
class DrillUnits:
    """The serving units each version of a drill was seen on, for the drill that started at `started_at`."""

    started_at: str
    units: dict[str, set[str]] = field(default_factory=dict)

    def note(self, versions: tuple[str, ...], backend: BackendState) -> None:
        for version in versions:
            if version in backend.units:
                self.units.setdefault(version, set()).add(backend.units[version])


def remember_units(known: DrillUnits | None, before: ModelDeploymentStatus, after: ModelDeploymentStatus,
                   backend: BackendState | None) -> DrillUnits | None:
    """The units the drill in flight (in `before` or `after`) was seen on, this round's included."""
    drill = after.drill or before.drill
    if drill is None:
        return known if after.last_drill is not None and known is not None \
            and known.started_at == after.last_drill.started_at else None
    if known is None or known.started_at != drill.started_at:
        known = DrillUnits(drill.started_at)
    if backend is not None:
        known.note((drill.fallback_version, drill.returns_to), backend)
    return known


def seconds_to_loss(status: ModelDeploymentStatus, now: datetime) -> float | None:
    """Seconds until the last drill's requests lost are due to be measured (0: now); None when nothing is."""
    last = status.last_drill
    if last is None or last.requests_lost_due is None:
        return None
    return max(0.0, (parse_rfc3339(last.requests_lost_due) - now).total_seconds())


async def measure_loss(providers: ProviderFactory, spec: ModelDeploymentSpec, status: ModelDeploymentStatus,
                       router: Router, target: Target, units: DrillUnits | None, now: datetime,
                       spec_changed: asyncio.Event) -> DrillLoss | None:
    """The last drill's requests lost once they are due (None before, or when no drill waits for them). Given up
    (None: still due, for the next round) when `spec_changed` is set meanwhile, so that a request (an Abort) never
    waits for a slow metric provider."""
    last = status.last_drill
    due = seconds_to_loss(status, now)
    if last is None or due is None:
        return None
    # The router's templates are its backend's in every mode; what the spec's serving has metrics for decides (KServe
    # Standard mode behind a route exports no Knative metrics: asked anyway, every rate would read as no errors).
    template = router.templates.get(CheckTemplate.errorRate)
    if template is None or template.samples is None or CheckTemplate.errorRate not in template_support(spec.serving):
        how = " with serving.kserve.httpRoute (Standard mode)" if routed(spec.serving) else ""
        return DrillLoss(last.started_at, None, f"not measured: the {spec.serving.backend.value} backend{how} exports "
                                                "no error rate (no built-in errorRate check)")
    if due > 0:
        return None
    if units is None or units.started_at != last.started_at or not units.units:
        return DrillLoss(last.started_at, None, "not measured: the operator restarted during the drill (which serving "
                                                "units took its traffic is kept in memory only)")
    at = analysis_instant(now)  # the whole second analyses ask about, so that their queries can share a request
    window = f"{max(1, math.ceil((at - parse_rfc3339(last.started_at)).total_seconds()))}s"
    budget = min(MAX_LOSS_SECONDS, max(1.0, duration_seconds(spec.analysis.interval)))

    async def errors_of(provider: MetricProvider, version: str, unit: str) -> float:
        subject = Subject(target.namespace, spec.model, version, unit, router.object_name(target), window)
        rate, counted = await asyncio.gather(  # over a window of their own: batched within the namespace only
            provider.query(render(template.value, subject), at, batch=batch_key(template.value, router.templates,
                                                                                  target.namespace, own_window=True)),
            provider.query(render(template.samples, subject), at, batch=batch_key(template.samples, router.templates,
                                                                                    target.namespace, own_window=True)))
        if rate is None or not math.isfinite(rate):
            return 0.0
        return max(0.0, rate) * sample_count(counted)

    asker = Asker(target.namespace, target.deployment)

    async def run() -> float:
        provider = await providers(spec.analysis, asker, budget)
        found = await asyncio.gather(*(errors_of(provider, version, unit)
                                       for version, seen in sorted(units.units.items()) for unit in sorted(seen)))
        return sum(found)

    try:
        lost = await unless_set(spec_changed, answered_within(run(), asker, budget + 1.0))
        if lost is None:
            return None
    except asyncio.TimeoutError:
        return DrillLoss(last.started_at, None, f"not measured: the metric provider gave no answer within {budget:g}s")
    except (ProviderError, ValueError) as e:
        return DrillLoss(last.started_at, None, f"not measured: {str(e)[:300]}")
    except Exception as e:  # noqa: BLE001 - a figure of a past drill is never worth a round (nor a rollback)
        log.exception("measuring the requests a drill of %s/%s lost failed", target.namespace, target.deployment)
        return DrillLoss(last.started_at, None, f"not measured: internal error ({type(e).__name__})")
    return DrillLoss(last.started_at, round(lost))
