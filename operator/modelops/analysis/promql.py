"""PromQL text from check templates and user queries (pure).

Values go in only as escaped PromQL string-literal content, so a label value such as a
namespace or a version can never close the quotes and change the query around it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..api.types import DURATION_PATTERN

_VARIABLE = re.compile(r"\{\{\s*([a-zA-Z]+)\s*\}\}")
VARIABLES = ("namespace", "model", "version", "revision", "object", "window")


@dataclass(frozen=True)
class Subject:
    """The version a query is about, and where it runs."""

    namespace: str
    model: str
    version: str
    revision: str
    """The backend's name for this version's serving unit (KServe revision, Seldon predictor, Service...)."""
    object: str
    """The backend object the ModelDeployment drives (InferenceService, SeldonDeployment, HTTPRoute)."""
    window: str


@dataclass(frozen=True)
class TemplateQuery:
    """A built-in check of one backend: the value's PromQL and the sample count's PromQL."""

    value: str
    """The value; for a drift test, the live inputs counted in the window by (feature, bin)."""
    samples: str | None = None
    buckets: str | None = None
    """A latency template's histogram: cumulative counts by `le` in the window (for sequential comparisons)."""
    reference: str | None = None
    """A drift test's reference (training) inputs counted by (feature, bin)."""


def observed(counter: str, by: str = "") -> str:
    """PromQL for what `counter` (a selector of one counter) counted over `{{window}}`, summed (`by` those labels,
    such as `le`), as its samples show it: each series' last sample in the window less its last sample before the
    window's start (`offset`; a range, so that a staleness marker left by a failed scrape there is skipped, as an
    instant selector would not), where increase() would extrapolate both ends to the window's edges. A series born
    within the window counts from 0, one that vanished within it up to its last sample. A series whose counter
    reset (its pod restarted) within the window, or between the start and the window's first sample (a sample in
    the window below the start), takes increase()'s count instead, which allows for the reset but extrapolates."""
    window = "[{{window}}]"
    last = f"last_over_time({counter}{window})"
    start = f"last_over_time({counter}[5m] offset {{{{window}}}})"
    reset = f"((resets({counter}{window}) > 0) or (min_over_time({counter}{window}) < {start}))"
    kept = f" by ({by}) " if by else ""
    return (f"sum{kept}((({last} - {start}) unless {reset})"
            f" or (increase({counter}{window}) and {reset}) or {last})")


def escape(value: str) -> str:
    """Content for a double-quoted PromQL string literal."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(query: str, subject: Subject) -> str:
    """Substitute {{variable}}s; unknown variables are an error, not silently left in."""
    if not re.fullmatch(DURATION_PATTERN, subject.window):
        raise ValueError(f"window {subject.window!r} is not a duration")
    values = {name: escape(getattr(subject, name)) for name in VARIABLES}

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise ValueError(f"unknown variable {{{{{name}}}}} in query; known: {', '.join(VARIABLES)}")
        return values[name]

    return _VARIABLE.sub(substitute, query)
