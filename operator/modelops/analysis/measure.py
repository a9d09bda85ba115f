"""One analysis: run every check's queries through a provider, then judge them (pure part in evaluate)."""

from __future__ import annotations

import asyncio
from datetime import datetime

from ..api.modeldeployment import Check, CheckStatus, CheckTemplate
from .evaluate import Measurement, evaluate
from .promql import Subject, TemplateQuery, render
from .provider import MetricProvider, ProviderError


def queries_for(check: Check, templates: dict[CheckTemplate, TemplateQuery]) -> TemplateQuery:
    if check.template is None:
        assert check.query is not None
        return TemplateQuery(check.query, check.sample_query)
    if check.template not in templates:
        raise ProviderError(f"the backend has no built-in {check.template.value} check")
    template = templates[check.template]
    return TemplateQuery(template.value, check.sample_query or template.samples)


async def measure(provider: MetricProvider, check: Check, templates: dict[CheckTemplate, TemplateQuery],
                  candidate: Subject, stable: Subject, at: datetime) -> Measurement:
    """Candidate and stable are evaluated at the same instant, so over the same window."""
    try:
        queries = queries_for(check, templates)
        value = await provider.query(render(queries.value, candidate), at)
        baseline = await provider.query(render(queries.value, stable), at) if check.relative else None
        samples = None
        if queries.samples is not None:
            counted = await provider.query(render(queries.samples, candidate), at)
            samples = int(counted or 0)
    except (ProviderError, ValueError) as e:
        return Measurement(None, error=str(e))
    return Measurement(value, baseline, samples)


async def analyse(provider: MetricProvider, checks: list[Check], templates: dict[CheckTemplate, TemplateQuery],
                  candidate: Subject, stable: Subject, at: datetime, at_text: str) -> tuple[CheckStatus, ...]:
    measured = await asyncio.gather(*(measure(provider, c, templates, candidate, stable, at) for c in checks))
    return tuple(evaluate(c, m, at_text) for c, m in zip(checks, measured))
