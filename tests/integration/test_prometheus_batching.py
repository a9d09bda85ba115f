"""Batched queries against the real Prometheus: fewer requests, and each query answered as if asked alone.

Requests are counted by Prometheus itself (`prometheus_http_requests_total` of the query handler, read from its own
/metrics), not by the provider: a Prometheus of this module's own, which no operator queries meanwhile. The queries
need no scraped series: `vector(n)` answers n.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from datetime import datetime, timezone

import pytest

from modelops.analysis.prometheus import BATCH_LIMIT, PrometheusProvider, close_sessions
from modelops.analysis.provider import ProviderError
from playground.prometheus import Prometheus

pytestmark = pytest.mark.integration

ODD = {  # query -> what it answers alone: a value, or the ProviderError kind
    "scalar(vector(7))": 7.0,                                   # a scalar: spoils a batch
    "sum(": "rejected",                                         # does not parse: spoils a batch
    'vector(1) or label_replace(vector(2), "x", "y", "", "")': "many_series",
    "vector(1) > 5": None,                                      # no series
    "vector(0) / 0": None,                                      # NaN
    "vector(1) / 0": float("inf"),
}


def queries_answered(prometheus) -> float:
    text = urllib.request.urlopen(f"{prometheus.url}/metrics", timeout=10).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("prometheus_http_requests_total{") and 'handler="/api/v1/query"' in line)


def requests_since(prometheus, before: float, expected: int) -> float:
    """Requests answered since `before`. Prometheus counts a request once its handler returns, which may be just
    after the client has the answer: a count below `expected` is read again (for up to 5 s), one above it is final."""
    deadline = time.monotonic() + 5
    while (count := queries_answered(prometheus) - before) < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return count


async def outcome(provider: PrometheusProvider, query: str, at: datetime, batch: str | None):
    try:
        return await provider.query(query, at, batch=batch)
    except ProviderError as e:
        return e.kind


async def ask(provider, queries, at, batch):
    return await asyncio.gather(*(outcome(provider, q, at, batch) for q in queries))


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    with Prometheus(tmp_path_factory.mktemp("batching-prometheus")) as server:
        yield server


@pytest.fixture
def at():
    return datetime.now(timezone.utc).replace(microsecond=0)


@pytest.mark.asyncio
async def test_queries_for_one_instant_share_a_request_and_keep_their_own_answers(prometheus, at):
    provider = PrometheusProvider(prometheus.url, timeout=5)
    queries = [f"vector({n})" for n in range(40)]
    try:
        before = queries_answered(prometheus)
        answers = await ask(provider, queries, at, "tenant-a")
        requests = requests_since(prometheus, before, 1)
    finally:
        await close_sessions()
    assert answers == [float(n) for n in range(40)]
    assert requests == 1


@pytest.mark.asyncio
async def test_a_batch_holds_at_most_the_limit(prometheus, at):
    provider = PrometheusProvider(prometheus.url, timeout=5)
    count = BATCH_LIMIT * 2 + 1
    try:
        before = queries_answered(prometheus)
        answers = await ask(provider, [f"vector({n})" for n in range(count)], at, "tenant-a")
        requests = requests_since(prometheus, before, 3)
    finally:
        await close_sessions()
    assert answers == [float(n) for n in range(count)]
    assert requests == 3


@pytest.mark.asyncio
async def test_other_keys_and_other_instants_are_never_in_one_batch(prometheus, at):
    provider = PrometheusProvider(prometheus.url, timeout=5)
    later = at.replace(second=(at.second + 1) % 60)
    try:
        before = queries_answered(prometheus)
        answers = await asyncio.gather(ask(provider, ["vector(1)", "vector(2)"], at, "tenant-a"),
                                       ask(provider, ["vector(3)", "vector(4)"], at, "tenant-b"),
                                       ask(provider, ["vector(5)", "vector(6)"], later, "tenant-a"))
        requests = requests_since(prometheus, before, 3)
    finally:
        await close_sessions()
    assert answers == [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]
    assert requests == 3


@pytest.mark.asyncio
async def test_a_query_that_spoils_its_batch_is_answered_alone_and_then_kept_out(prometheus, at):
    provider = PrometheusProvider(prometheus.url, timeout=5)
    good = [f"vector({n})" for n in range(10)]
    queries = good + list(ODD)
    try:
        alone = [await outcome(provider, q, at, None) for q in queries]
        assert alone == [float(n) for n in range(10)] + list(ODD.values())

        before = queries_answered(prometheus)
        assert await ask(provider, queries, at, "tenant-a") == alone
        first = requests_since(prometheus, before, 1 + len(queries))
        before = queries_answered(prometheus)
        assert await ask(provider, queries, at, "tenant-a") == alone
        second = requests_since(prometheus, before, 3)
    finally:
        await close_sessions()
    # The batch fails (a scalar and a parse error in it), then each query is asked alone.
    assert first == 1 + len(queries)
    # The two that spoil batches stay alone; the rest share one request again.
    assert second == 1 + 2


@pytest.mark.asyncio
async def test_too_many_series_are_named_without_the_batch_label(prometheus, at):
    provider = PrometheusProvider(prometheus.url, timeout=5)
    many = 'vector(1) or label_replace(vector(2), "x", "y", "", "")'
    try:
        results = await asyncio.gather(provider.query(many, at, batch="t"), provider.query("vector(3)", at, batch="t"),
                                       return_exceptions=True)
    finally:
        await close_sessions()
    error, value = results
    assert value == 3.0
    assert isinstance(error, ProviderError) and error.kind == "many_series"
    assert "returned 2 series" in str(error) and "modelops_batch_query" not in str(error)
