"""One analysis: run every check's queries through a provider, then judge them (pure part in evaluate).

Each check is measured on its own: whatever goes wrong while measuring one check (the provider's error, a query
that does not render, a number that cannot be a sample count) becomes that check's Error verdict, never the others'.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import TypeVar

from ..api.modeldeployment import Check, CheckStatus, CheckTemplate
from .evaluate import Measurement, evaluate
from .promql import Subject, TemplateQuery, render
from .provider import SHARED_BATCH, MetricProvider, ProviderError
from .sequential import MAX_SAMPLES, Buckets

logger = logging.getLogger(__name__)

T = TypeVar("T")


def queries_for(check: Check, templates: dict[CheckTemplate, TemplateQuery]) -> TemplateQuery:
    if check.template is None:
        assert check.query is not None
        return TemplateQuery(check.query, check.sample_query)
    if check.template not in templates:
        raise ProviderError("unsupported", f"the backend has no built-in {check.template.value} check")
    template = templates[check.template]
    return replace(template, samples=check.sample_query or template.samples)


def batch_key(query: str, templates: dict[CheckTemplate, TemplateQuery], namespace: str,
              own_window: bool = False) -> str:
    """The operator's own template queries over the analysis window are batched across namespaces; a user's query,
    or one over a window of its own (a sequential check's, growing with the rollout: new text, and slower, every
    time), only with those of its own namespace, so a tenant's query that spoils or slows a batch costs other
    tenants nothing."""
    own = any(query in (t.value, t.samples) for t in templates.values())
    return SHARED_BATCH if own and not own_window else f"namespace/{namespace}"


def sample_count(counted: float | None) -> int:
    """A sample-count query's value as a count: no data, NaN or a negative number is 0 samples."""
    if counted is None or math.isnan(counted) or counted < 0:
        return 0
    if math.isinf(counted):
        raise ProviderError("bad_response", "the sample count query returned +Inf")
    return min(int(counted), MAX_SAMPLES)


async def measure(provider: MetricProvider, check: Check, templates: dict[CheckTemplate, TemplateQuery],
                  candidate: Subject, stable: Subject, at: datetime, own_window: bool = False) -> Measurement:
    """Candidate and stable are evaluated at the same instant, so over the same window (`own_window`: not the
    analysis'). The queries are asked at once, so that they can share a request. A sequential check also counts
    stable's samples, and a sequential latency check reads both versions' histograms."""
    async def value_of(query: str | None, subject: Subject) -> float | None:
        if query is None:
            return None
        return await provider.query(render(query, subject), at,
                                    batch=batch_key(query, templates, subject.namespace, own_window))

    async def buckets_of(query: str | None, subject: Subject) -> Buckets:
        return await provider.buckets(render(query, subject), at) if query is not None else ()

    async def binned(query: str | None) -> dict[tuple[str, str], float]:
        if query is None:
            raise ProviderError("unsupported", "the backend has no binned drift contract")
        found = await provider.series(render(query, candidate), at, ("feature", "bin"))
        return {(feature, bin_): value for (feature, bin_), value in found.items()}

    try:
        queries = queries_for(check, templates)
        if check.template is CheckTemplate.driftTest:
            bins, reference = await asyncio.gather(binned(queries.value), binned(queries.reference))
            return Measurement(None, bins=bins, reference_bins=reference)
        sequential = check.sequential is not None
        histograms = queries.buckets if sequential and check.compares_latencies else None
        if sequential and check.compares_latencies and histograms is None:
            raise ProviderError("unsupported", "the backend exports no latency histogram to compare")
        value, baseline, counted, baseline_counted, buckets, baseline_buckets = await asyncio.gather(
            value_of(queries.value, candidate),
            value_of(queries.value if check.relative else None, stable),
            value_of(queries.samples, candidate),
            value_of(queries.samples if sequential else None, stable),
            buckets_of(histograms, candidate),
            buckets_of(histograms, stable))
        has_samples = queries.samples is not None
        samples = sample_count(counted) if has_samples else None
        baseline_samples = sample_count(baseline_counted) if has_samples and sequential else None
    except (ProviderError, ValueError) as e:
        return Measurement(None, error=str(e))
    except Exception as e:  # a bug must cost this check's verdict, not the whole analysis
        logger.exception("measuring check %s failed", check.name)
        return Measurement(None, error=f"internal error ({type(e).__name__})")
    return Measurement(value, baseline, samples, baseline_samples=baseline_samples, buckets=buckets,
                       baseline_buckets=baseline_buckets)


async def analyse(provider: MetricProvider, checks: list[Check], templates: dict[CheckTemplate, TemplateQuery],
                  candidate: Subject, stable: Subject, at: datetime, at_text: str,
                  windows: Mapping[str, str] | None = None, previous: Mapping[str, CheckStatus] | None = None,
                  split_over: int = 1) -> tuple[CheckStatus, ...]:
    """`windows`: check name -> its query window where it is not the subjects' own; `previous`: check name -> its
    status from the rollout's last analysis (see evaluate). `split_over`: the sequential checks that decide the
    analysis, all of the spec's (see evaluate.alpha_split), whichever are measured now."""
    def window(check: Check, subject: Subject) -> Subject:
        own = (windows or {}).get(check.name)
        return replace(subject, window=own) if own else subject

    measured = await asyncio.gather(*(measure(provider, c, templates, window(c, candidate), window(c, stable), at,
                                              window(c, candidate).window != candidate.window) for c in checks))
    return tuple(evaluate(c, m, at_text, (previous or {}).get(c.name), sequential_checks=split_over)
                 for c, m in zip(checks, measured))


async def unless_set(interrupted: asyncio.Event, measurement: Awaitable[T]) -> T | None:
    """The measurement's result, or None when `interrupted` is set first: the measurement is then cancelled
    (as it is when the caller itself is cancelled). Whatever the measurement raises is raised here."""
    task = asyncio.ensure_future(measurement)
    waiter = asyncio.ensure_future(interrupted.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        if not task.done():
            task.cancel()
    if not task.done():
        await asyncio.wait({task})  # its cancellation runs to its end: nothing of it is left running
        return None
    return task.result()
