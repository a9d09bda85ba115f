"""The metric provider interface: one query in, one number (or no data) out; or a histogram's buckets.

Shaped like Flagger's metrics provider. A provider never turns a failure into a value: it raises ProviderError, and
the analysis reports that as an Error verdict, which is never a pass.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, Protocol, get_args

from .sequential import Buckets

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
