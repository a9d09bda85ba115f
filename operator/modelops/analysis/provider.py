"""The metric provider interface: one query in, one number (or no data) out.

Shaped like Flagger's metrics provider. A provider never turns a failure into a value: it raises ProviderError, and
the analysis reports that as an Error verdict, which is never a pass.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol


class ProviderError(Exception):
    """The provider could not answer: unreachable, timed out, rejected the query."""


class MetricProvider(Protocol):
    async def query(self, promql: str, at: datetime) -> float | None:
        """The query's single value evaluated at `at`; None when it returns no series."""
        ...
