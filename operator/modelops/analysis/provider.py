"""The metric provider interface: one query in, one number (or no data) out; or a histogram's buckets.

Shaped like Flagger's metrics provider. A provider never turns a failure into a value: it raises ProviderError, and
the analysis reports that as an Error verdict, which is never a pass.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol, TypeVar, get_args

from ..api.modeldeployment import Analysis
from .sequential import Buckets

T = TypeVar("T")
SHARED_BATCH = ""
"""The batch key of queries that may share a request with any namespace's (the operator's own template queries)."""
FIRST_TURN_SECONDS = 30.0
"""The longest an analysis waits for its first request to be sent, over its own time: no request holds a slot of
a Prometheus longer than 30 s (prometheus.MAX_TIMEOUT_SECONDS), so a wait beyond it means a Prometheus that answers
nobody."""

ErrorKind = Literal[
    "timeout",        # no answer within the query timeout
    "unreachable",    # connection refused, DNS, TLS, connection dropped
    "http",           # an HTTP error status
    "bad_response",   # an answer that is not a usable Prometheus API answer
    "rejected",       # Prometheus answered status "error" (bad query, execution error)
    "many_series",    # a vector of more than one series where one value is expected
    "credentials",    # the bearer token or CA Secret is missing, unreadable or invalid
    "unsupported",    # the check asks for something the backend does not provide
    "forbidden",      # the deployment may not use that provider (or any inline one)
]
ERROR_KINDS: tuple[str, ...] = get_args(ErrorKind)


class ProviderError(Exception):
    """The provider could not answer. `kind` says why, for counting; the message says it to a person.

    Messages are short and built only from the provider's own words and the user's configuration, never from a
    response body: they end up in the resource's status.
    """

    def __init__(self, kind: ErrorKind, message: str):
        if kind not in ERROR_KINDS:
            raise ValueError(f"unknown ProviderError kind {kind!r}")
        super().__init__(kind, message)
        self.kind: ErrorKind = kind
        self.message = message

    def __str__(self) -> str:
        return self.message


@dataclass(eq=False)
class Asker:
    """Whom a provider asks for: a deployment of a namespace (the tenant whose fair share of a Prometheus its
    requests take, see gate.py). `first_turn` is set once the first of its requests is sent."""

    namespace: str
    deployment: str
    first_turn: asyncio.Event = field(default_factory=asyncio.Event)


async def answered_within(work: Awaitable[T], asker: Asker, seconds: float) -> T:
    """`work`'s result, given up (TimeoutError) `seconds` after the first of its requests was sent, and at the latest
    `seconds` + FIRST_TURN_SECONDS after it began: time spent waiting for a turn behind other tenants is not taken
    from its own, and a Prometheus that answers nobody is still noticed."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)
    turn = asyncio.ensure_future(asker.first_turn.wait())
    latest = loop.time() + seconds + FIRST_TURN_SECONDS
    try:
        async with asyncio.timeout_at(latest) as deadline:
            await asyncio.wait({task, turn}, return_when=asyncio.FIRST_COMPLETED)
            if not task.done():
                deadline.reschedule(min(latest, loop.time() + seconds))
            return await task
    finally:
        turn.cancel()
        task.cancel()


class MetricProvider(Protocol):
    async def query(self, promql: str, at: datetime, *, batch: str | None = None) -> float | None:
        """The query's single value evaluated at `at`; None when it returns no series (or NaN).

        Queries for the same `at` and `batch` key may be answered together (None: never batched). Each answer is
        the one the query would get alone, except that a batch-mate that fails the batch costs it a second request,
        and one that makes the batch time out costs it that timeout (once: it is then asked alone).
        """
        ...

    async def buckets(self, promql: str, at: datetime) -> Buckets:
        """A histogram's cumulative counts by `le` evaluated at `at`, sorted by `le`; () when it has none. Asked on
        its own: it answers one series per bucket."""
        ...

    async def series(self, promql: str, at: datetime, labels: tuple[str, ...]) -> dict[tuple[str, ...], float]:
        """Each series' value evaluated at `at`, keyed by its values of `labels` (binned counts by feature and
        bin); {} when there are none. Asked on its own: it answers many series."""
        ...


ProviderFactory = Callable[[Analysis, Asker, float], Awaitable[MetricProvider]]
"""(spec.analysis, the deployment it asks for, timeout cap) -> a provider for one analysis; raises
ProviderError when there is none it may use."""
