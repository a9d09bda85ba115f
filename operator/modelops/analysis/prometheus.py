"""The Prometheus metric provider: instant queries over the HTTP API, natively async on aiohttp.

Facts relied on (Prometheus HTTP API, `/api/v1/query`): GET or form-encoded POST with `query` and `time` (unix
seconds); the answer is JSON `{"status": "success", "data": {"resultType": ..., "result": ...}}` or `{"status":
"error", "errorType": ..., "error": ...}`; resultType is `vector` (a list of `{"metric": {...}, "value": [t, "v"]}`),
`scalar` (`[t, "v"]`), `string` or `matrix`; sample values are strings that may be "NaN", "+Inf" or "-Inf".

No threads: the operator's shared thread pool never waits on Prometheus. Every query is bounded by its timeout, has
no retries, and at most `max_concurrency` requests to one Prometheus (address and credentials) are in flight, whichever
deployment's analysis asks: a thousand analyses due at once queue here instead of flooding it. They queue fairly
(gate.py): a deployment holds at most a quarter of the slots, a namespace half, and waiting requests are served
round-robin by namespace. A query's timeout counts from when it is sent, never the wait for its turn. Whatever the
server answers, the result is a number, None (no data) or a ProviderError whose message never quotes the response
body.

Batching: queries for the same instant and batch key that wait for a turn together are sent as one request,
`label_replace(q0, "modelops_batch_query", "0", "", "") or label_replace(q1, ...)`, and each is handed the series
carrying its index. `label_replace` takes only an instant vector, so a query answering a scalar (or not parsing)
fails its whole batch at once: every query of it is then asked on its own, and the ones that fail alone too are
never batched again. Prometheus evaluates the operands of `or` one after the other, so a batch's timeout grows
with its size: an eighth of the query timeout per query, at least one timeout, at most the budget of the analyses
that wait for it (an answer after that is of use to nobody). A batch that times out is a timeout for all its queries
(a second wait would double the time to notice a hung Prometheus); they are asked on their own from then on, each
until it answers in time. The caller chooses the key: queries of one tenant share a key, so one tenant's query never
spoils another's batch; a batch under SHARED_BATCH takes the turns of a tenant of its own (ACROSS_NAMESPACES), one of
another key those of the asking namespace. A query alone at its turn is sent as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import math
import os
import re
import socket
import ssl
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar

import aiohttp

from ..api.modeldeployment import PrometheusConfig, SecretKeyRef
from ..api.types import duration_seconds
from .gate import ACROSS_NAMESPACES, FairGate
from .provider import SHARED_BATCH, Asker, ErrorKind, ProviderError
from .sequential import Buckets

T = TypeVar("T")

MAX_TIMEOUT_SECONDS = 30.0
"""No query waits longer than this, whatever the ModelDeployment asks."""
MAX_BODY_BYTES = 4 * 1024 * 1024
"""An instant query for one value answers in bytes; a bigger answer is not read."""
_MAX_ERROR_BODY_BYTES = 64 * 1024
_POST_ABOVE_CHARS = 2000
"""Longer queries go in a POST form, which no URL length limit cuts."""
_MAX_SESSIONS = 16
BATCH_LIMIT = 64
"""At most this many queries answered by one request: its answer stays small, and a failed batch costs few retries."""
QUERIES_PER_TIMEOUT = 8
"""A batch of n queries may take n / 8 query timeouts: each of its queries an eighth of one."""
_BATCH_LABEL = "modelops_batch_query"
_MAX_LONERS = 4096
MAX_BUCKETS = 256
"""A latency histogram has a few dozen buckets at most; more series are a query that is not one histogram."""
MAX_SERIES = 4096
"""Binned counts: a few features of a few dozen bins each; more series are a query that is not those."""
_DNS_ERROR: Any = getattr(aiohttp, "ClientConnectorDNSError", ())  # aiohttp >= 3.10
_BAD_URL: Any = tuple(getattr(aiohttp, n) for n in ("InvalidURL", "NonHttpUrlClientError") if hasattr(aiohttp, n))


class SecretReader(Protocol):
    async def value(self, namespace: str, name: str, key: str) -> str: ...


class PrometheusProvider:
    def __init__(self, address: str, *, timeout: float, bearer_token: str | None = None, ca_pem: str | None = None,
                 insecure_skip_verify: bool = False, max_concurrency: int = 16, label: str | None = None,
                 asker: Asker | None = None, budget: float = MAX_TIMEOUT_SECONDS):
        """`label` names it in errors (e.g. `provider default`); by default its address does. `asker`: whose
        turns its requests take (by default one tenant shared by every provider given none). `budget`: how long its
        answers are of use, the longest a batch with its queries may take."""
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.address = address
        self.timeout = float(timeout)
        self.budget = max(self.timeout, float(budget))
        self.asker = asker or Asker("", "")
        self._where = label or f"Prometheus at {_display(address)}"
        self._url = address.rstrip("/") + "/api/v1/query"
        self._max_concurrency = max_concurrency
        if insecure_skip_verify:
            self._ssl: ssl.SSLContext | bool = False
        elif ca_pem is not None:
            try:
                self._ssl = _ssl_context(ca_pem)
            except (ssl.SSLError, ValueError, TypeError):
                raise ProviderError("credentials", f"{self._where}: the CA bundle is not valid PEM") from None
        else:
            self._ssl = True
        headers = {"Accept": "application/json", "Accept-Encoding": "identity"}
        if bearer_token:
            headers["Authorization"] = f"Bearer {bearer_token}"
        self._headers = headers
        self._key = (address, bearer_token, ca_pem, insecure_skip_verify)

    async def query(self, promql: str, at: datetime, *, batch: str | None = None) -> float | None:
        at_text = f"{at.timestamp():.3f}"
        async with _lease(self._key, self._ssl, self._headers, self._max_concurrency) as pooled:
            try:
                if batch is None:
                    return _value(*_answer(*await self._send(pooled, promql, at_text)))
                if promql not in pooled.loners:
                    outcome = await pooled.join((batch, at_text), promql, self)
                    if isinstance(outcome, _Failure):
                        raise outcome
                    if outcome is not _ALONE:
                        return _value(*outcome)
                return _value(*await pooled.ask_alone(promql, self._send(pooled, promql, at_text)))
            except _Failure as e:
                raise self._error(e.kind, e.detail) from None

    async def buckets(self, promql: str, at: datetime) -> Buckets:
        return await self._alone(promql, at, _buckets)

    async def series(self, promql: str, at: datetime, labels: tuple[str, ...]) -> dict[tuple[str, ...], float]:
        return await self._alone(promql, at, lambda kind, result: _by_labels(kind, result, labels))

    async def _alone(self, promql: str, at: datetime, read: Callable[[str, Any], T]) -> T:
        """A query asked on its own, its answer's resultType and result `read`."""
        async with _lease(self._key, self._ssl, self._headers, self._max_concurrency) as pooled:
            try:
                return read(*_answer(*await self._send(pooled, promql, f"{at.timestamp():.3f}")))
            except _Failure as e:
                raise self._error(e.kind, e.detail) from None

    async def _send(self, pooled: _Pooled, promql: str, at_text: str) -> tuple[int, bytes | None]:
        """Wait for a turn (not part of the query's timeout), then ask."""
        async with pooled.gate.slot(self.asker.namespace, self.asker.deployment):
            self.asker.first_turn.set()
            return await self._request(pooled.session, promql, at_text, self.timeout)

    async def _request(self, session: aiohttp.ClientSession, promql: str, at_text: str,
                       timeout: float) -> tuple[int, bytes | None]:
        """One request: its status and body (None when too large to read)."""
        params = {"query": promql, "time": at_text}
        client_timeout = aiohttp.ClientTimeout(total=timeout)
        try:
            async with asyncio.timeout(timeout):
                if len(promql) > _POST_ABOVE_CHARS:
                    request = session.post(self._url, data=params, timeout=client_timeout, allow_redirects=False)
                else:
                    request = session.get(self._url, params=params, timeout=client_timeout, allow_redirects=False)
                async with request as response:
                    limit = MAX_BODY_BYTES if 200 <= response.status < 300 else _MAX_ERROR_BODY_BYTES
                    return response.status, await _read_at_most(response, limit)
        except TimeoutError:  # before OSError, its base class; aiohttp's own timeouts are TimeoutErrors too
            raise _Failure("timeout", f"timed out after {timeout:g}s") from None
        except (aiohttp.ClientError, OSError, ValueError) as e:
            raise _Failure("unreachable", f"unreachable: {_unreachable(e)}") from e

    def _error(self, kind: ErrorKind, detail: str) -> ProviderError:
        return ProviderError(kind, f"{self._where}: {detail}")


class _Failure(Exception):
    """What went wrong, before a provider names itself in it."""

    def __init__(self, kind: ErrorKind, detail: str):
        super().__init__(kind, detail)
        self.kind: ErrorKind = kind
        self.detail = detail


def _bad() -> _Failure:
    return _Failure("bad_response", "not a Prometheus API answer")


def _answer(status: int, body: bytes | None) -> tuple[str, Any]:
    """A successful answer's resultType and result."""
    answer = _json(body)
    if not 200 <= status < 300:
        error_type = _error_type(answer)
        if error_type is not None and status in (400, 422):
            raise _Failure("rejected", f"query rejected: {error_type} (HTTP {status})")
        raise _Failure("http", f"HTTP {status}" + (f" ({error_type})" if error_type else ""))
    if body is None:
        raise _Failure("bad_response", f"answer larger than {MAX_BODY_BYTES // (1024 * 1024)} MiB")
    if not isinstance(answer, dict) or "status" not in answer:
        raise _bad()
    if answer["status"] == "error":
        raise _Failure("rejected", f"query rejected: {_error_type(answer) or 'unknown'}")
    data = answer.get("data")
    if answer["status"] != "success" or not isinstance(data, dict):
        raise _bad()
    return data.get("resultType"), data.get("result")


def _value(kind: str, result: Any) -> float | None:
    """The one value of an answer."""
    if kind == "vector" and isinstance(result, list):
        return _vector_value(result)
    if kind == "scalar":
        return _sample(result)
    if kind in ("string", "matrix"):
        raise _Failure("bad_response", f"returned a {kind}, one value expected")
    raise _bad()


def _vector_of(kind: str, result: Any, most: int, what: str, labels: tuple[str, ...]) -> list[Any]:
    """The series of an instant vector, at most `most` of them."""
    if kind != "vector" or not isinstance(result, list):
        raise _Failure("bad_response", f"an instant vector of {what} by {', '.join(labels)} expected")
    if len(result) > most:
        raise _Failure("many_series", f"{len(result)} series, at most {most} {what} expected")
    return result


def _buckets(kind: str, result: Any) -> Buckets:
    """A histogram's series by `le`; a series without a number for `le` is not a histogram's."""
    buckets = []
    for series in _vector_of(kind, result, MAX_BUCKETS, "buckets", ("le",)):
        labels = series.get("metric") if isinstance(series, dict) else None
        try:
            le = float(labels["le"])
        except (TypeError, KeyError, ValueError):
            raise _Failure("bad_response", "a series without a numeric le label: not a histogram's buckets") from None
        count = _sample(series.get("value"))
        if count is not None and not math.isnan(le):
            buckets.append((le, count))
    return tuple(sorted(buckets))


def _by_labels(kind: str, result: Any, labels: tuple[str, ...]) -> dict[tuple[str, ...], float]:
    """Each series' value by its values of `labels`; a series without one of them is not what was asked for, and two
    with the same values are a query that does not aggregate by them. NaN values are left out (no data)."""
    found: dict[tuple[str, ...], float] = {}
    for series in _vector_of(kind, result, MAX_SERIES, "series", labels):
        metric = series.get("metric") if isinstance(series, dict) else None
        key = tuple(metric.get(label) for label in labels) if isinstance(metric, dict) else (None,)
        if not all(isinstance(k, str) for k in key):
            raise _Failure("bad_response", f"a series without the labels {', '.join(labels)}")
        if key in found:
            raise _Failure("many_series", f"two series for {dict(zip(labels, key))}: aggregate by {', '.join(labels)}")
        value = _sample(series.get("value"))
        if value is not None:
            found[key] = value
    return found


def _vector_value(result: list[Any]) -> float | None:
    if not result:
        return None
    if len(result) > 1:
        raise _Failure("many_series", _many_series(result))
    series = result[0]
    if isinstance(series, dict) and "value" not in series and "histogram" in series:
        raise _Failure("bad_response", "returned a native histogram, one value expected")
    return _sample(series.get("value") if isinstance(series, dict) else None)


def _sample(pair: Any) -> float | None:
    """A `[time, "value"]` pair's value; NaN is no data, infinities are values."""
    if not isinstance(pair, list) or len(pair) != 2:
        raise _bad()
    raw = pair[1]
    if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
        raise _bad()
    try:
        value = float(raw)
    except (ValueError, OverflowError):
        raise _bad() from None
    return None if math.isnan(value) else value


async def _read_at_most(response: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The body, or None when it is longer than `limit` (the rest is never read)."""
    if response.content_length is not None and response.content_length > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    while chunk := await response.content.read(limit + 1 - size):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return None
    return b"".join(chunks)


def _json(body: bytes | None) -> Any:
    if body is None:
        return None
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None


def _error_type(answer: Any) -> str | None:
    """Prometheus' errorType (bad_data, execution, timeout...): an enum-like token, so safe to repeat.

    The `error` text next to it is not repeated: it may quote anything.
    """
    if not isinstance(answer, dict) or answer.get("status") != "error":
        return None
    return _token(answer.get("errorType")) or "unknown"


def _token(text: Any, limit: int = 40) -> str:
    if not isinstance(text, str):
        return ""
    return re.sub(r"[^A-Za-z0-9_ ]+", " ", text).strip()[:limit].strip()


def _many_series(result: list[Any]) -> str:
    """The labels are those of the user's own query: they help aggregate it. Capped all the same."""
    text = f"returned {len(result)} series, one expected; aggregate it"
    examples = []
    for series in result[:3]:
        labels = series.get("metric") if isinstance(series, dict) else None
        if isinstance(labels, dict):
            examples.append("{" + ", ".join(f"{k}={v!r}" for k, v in list(labels.items())[:8]) + "}")
    if examples:
        text += " (e.g. " + ", ".join(examples) + ")"
    return text if len(text) <= 200 else text[:197] + "..."


def _unreachable(error: BaseException) -> str:
    """A short reason from the exception's class and the OS, never from anything the server sent."""
    os_error = getattr(error, "os_error", None) if isinstance(error, aiohttp.ClientConnectorError) else None
    if isinstance(error, aiohttp.ClientConnectorCertificateError):
        cert = error.certificate_error
        return f"TLS certificate not trusted ({_token(getattr(cert, 'verify_message', None)) or type(cert).__name__})"
    if isinstance(error, (aiohttp.ClientSSLError, ssl.SSLError)) or isinstance(os_error, ssl.SSLError):
        reason = _token(getattr(os_error if os_error is not None else error, "reason", None))
        return f"TLS handshake failed ({reason})" if reason else "TLS handshake failed"
    if isinstance(error, _DNS_ERROR) or isinstance(os_error, socket.gaierror):
        return "DNS lookup failed"
    if isinstance(error, _BAD_URL):
        return "not an http:// or https:// address"
    cause = os_error if os_error is not None else error
    code = getattr(cause, "errno", None)
    if isinstance(code, int) and code > 0:
        return f"{os.strerror(code)} ({type(cause).__name__})"
    return type(cause).__name__


def _display(address: str) -> str:
    """The address for messages: without credentials, query or fragment."""
    shown = re.sub(r"//[^/?#]*@", "//", address).split("?", 1)[0].split("#", 1)[0]
    return shown if len(shown) <= 100 else shown[:97] + "..."


@functools.lru_cache(maxsize=_MAX_SESSIONS)
def _ssl_context(ca_pem: str) -> ssl.SSLContext:
    """Verification against exactly this bundle, loaded from memory."""
    return ssl.create_default_context(cadata=ca_pem)


# Sessions (so connections) and the bound on queries in flight are shared by every provider with the same address and
# credentials. A session belongs to the event loop that created it; one from another loop is replaced. Least recently
# used ones beyond the cap are closed once no query uses them.

_Outcome = Any
"""What a batch hands each of its queries: (resultType, result) of its own, a _Failure, or _ALONE."""
_ALONE = object()
"""The batch failed at once as a whole (rejected, or an answer that is no vector of tagged series): ask again
on your own, now."""
_BATCH_SPOILERS = ("rejected", "bad_response")
"""Failures of one query that fail a whole batch at once: its queries are asked again alone, straight away."""


@dataclass(eq=False)
class _Batch:
    """Queries for one instant that one request answers; the first asker's provider sends it."""

    provider: PrometheusProvider
    tenant: str
    """The namespace whose turns it takes (ACROSS_NAMESPACES for a batch under SHARED_BATCH)."""
    queries: list[tuple[str, asyncio.Future[_Outcome], Asker]] = field(default_factory=list)
    timeout: float = 0.0
    """The longest query timeout of its askers'."""
    budget: float = 0.0
    """The longest budget of its askers'."""

    def timeout_for(self, count: int) -> float:
        """Its request's timeout when it carries `count` queries (the module docstring says why it grows)."""
        return max(self.timeout, min(self.budget, self.timeout * count / QUERIES_PER_TIMEOUT))


@dataclass(eq=False)
class _Pooled:
    session: aiohttp.ClientSession
    loop: asyncio.AbstractEventLoop
    gate: FairGate
    """At most this many requests in flight to this Prometheus, shared fairly between tenants."""
    users: int = 0
    retired: bool = False
    open: dict[tuple[str, str], _Batch] = field(default_factory=dict)
    """(batch key, instant) -> the batch still taking queries: it does until it gets its turn at the gate."""
    loners: OrderedDict[str, bool] = field(default_factory=OrderedDict)
    """Queries asked on their own: True for those that spoil any batch (a scalar, a parse error), for good; False
    for those of a batch that timed out, until they answer in time on their own."""
    flushes: set[asyncio.Task[None]] = field(default_factory=set)
    """The batches on their way (the loop keeps only weak references to tasks)."""

    async def join(self, key: tuple[str, str], promql: str, provider: PrometheusProvider) -> _Outcome:
        batch = self.open.get(key)
        if batch is None or len(batch.queries) >= BATCH_LIMIT:
            tenant = ACROSS_NAMESPACES if key[0] == SHARED_BATCH else provider.asker.namespace
            batch = self.open[key] = _Batch(provider, tenant)
            flush = asyncio.ensure_future(self._flush(key, batch))
            self.flushes.add(flush)
            flush.add_done_callback(self.flushes.discard)
        answer: asyncio.Future[_Outcome] = self.loop.create_future()
        batch.queries.append((promql, answer, provider.asker))
        batch.timeout = max(batch.timeout, provider.timeout)
        batch.budget = max(batch.budget, provider.budget)
        return await answer

    def _keep_alone(self, promql: str, for_good: bool) -> None:
        self.loners[promql] = for_good or self.loners.get(promql, False)
        self.loners.move_to_end(promql)
        while len(self.loners) > _MAX_LONERS:
            self.loners.popitem(last=False)

    async def _flush(self, key: tuple[str, str], batch: _Batch) -> None:
        self.users += 1
        try:
            await asyncio.sleep(0)  # the other queries of this tick (one analysis' checks) join first
            async with self.gate.slot(batch.tenant):
                if self.open.get(key) is batch:
                    del self.open[key]
                waiting = [(q, a) for q, a, _ in batch.queries if not a.done()]
                for _, _, asker in batch.queries:
                    asker.first_turn.set()
                outcomes = await self._ask(batch, key[1], [q for q, _ in waiting])
            for (_, answer), outcome in zip(waiting, outcomes):
                if not answer.done():
                    answer.set_result(outcome)
        except BaseException as e:  # noqa: BLE001 - nobody waits forever, whatever happened
            for _, answer, _ in batch.queries:
                if not answer.done():
                    answer.set_result(_Failure("unreachable", f"unreachable: {type(e).__name__}"))
            if not isinstance(e, Exception):
                raise
        finally:
            self.users -= 1
            if self.retired and self.users == 0 and not self.session.closed:
                await self.session.close()

    async def _ask(self, batch: _Batch, at_text: str, queries: list[str]) -> list[_Outcome]:
        """One request for all `queries`: each wrapped to carry its index in a label, joined with `or` (their
        label sets then never collide, so `or` keeps every series). One query alone is sent as it is."""
        if len(queries) <= 1:
            return [await self._ask_one(batch, at_text, q) for q in queries]
        joined = " or ".join(f'label_replace({q}, "{_BATCH_LABEL}", "{i}", "", "")' for i, q in enumerate(queries))
        try:
            kind, result = _answer(*await batch.provider._request(self.session, joined, at_text,
                                                                   batch.timeout_for(len(queries))))
        except _Failure as e:
            if e.kind == "timeout":  # which query was slow is unknown: each is asked alone next time, not now
                for promql in queries:
                    self._keep_alone(promql, for_good=False)
            return [_ALONE if e.kind in _BATCH_SPOILERS else e] * len(queries)
        if kind != "vector" or not isinstance(result, list):
            return [_ALONE] * len(queries)
        series: list[list[Any]] = [[] for _ in queries]
        for one in result:
            labels = one.get("metric") if isinstance(one, dict) else None
            index = labels.pop(_BATCH_LABEL, None) if isinstance(labels, dict) else None
            if not (isinstance(index, str) and index.isdigit() and int(index) < len(queries)):
                return [_ALONE] * len(queries)
            series[int(index)].append(one)
        return [("vector", found) for found in series]

    async def _ask_one(self, batch: _Batch, at_text: str, promql: str) -> _Outcome:
        try:
            return await self.ask_alone(promql, batch.provider._request(self.session, promql, at_text, batch.timeout))
        except _Failure as e:
            return e

    async def ask_alone(self, promql: str, sent: Awaitable[tuple[int, bytes | None]]) -> tuple[str, Any]:
        """The answer to a query asked on its own. One rejected, unreadable or answering other than a vector would
        fail any batch it is in: it is never batched again, so it cannot spoil the batches of others twice. One
        that times out stays alone; one that answers a vector in time may join batches again."""
        try:
            kind, result = _answer(*await sent)
        except _Failure as e:
            if e.kind in _BATCH_SPOILERS or e.kind == "timeout":
                self._keep_alone(promql, for_good=e.kind != "timeout")
            raise
        if kind != "vector":
            self._keep_alone(promql, for_good=True)
        elif self.loners.get(promql) is False:
            del self.loners[promql]
        return kind, result


_SESSIONS: OrderedDict[tuple[Any, ...], _Pooled] = OrderedDict()


@contextlib.asynccontextmanager
async def _lease(key: tuple[Any, ...], ssl_option: ssl.SSLContext | bool, headers: dict[str, str],
                 max_concurrency: int) -> AsyncIterator[_Pooled]:
    loop = asyncio.get_running_loop()
    pooled = _SESSIONS.get(key)
    if pooled is None or pooled.loop is not loop or pooled.session.closed:
        if pooled is not None:
            pooled.retired = True
        pooled = _SESSIONS[key] = _Pooled(_new_session(ssl_option, headers), loop, FairGate(max_concurrency))
        _SESSIONS.move_to_end(key)
        while len(_SESSIONS) > _MAX_SESSIONS:
            _, old = _SESSIONS.popitem(last=False)
            old.retired = True
            if old.users == 0 and old.loop is loop:
                await old.session.close()
    else:
        _SESSIONS.move_to_end(key)
    pooled.users += 1
    try:
        yield pooled
    finally:
        pooled.users -= 1
        if pooled.retired and pooled.users == 0 and not pooled.session.closed:
            await pooled.session.close()


def _new_session(ssl_option: ssl.SSLContext | bool, headers: dict[str, str]) -> aiohttp.ClientSession:
    # No decompression (a small compressed answer can expand without bound; Accept-Encoding asks for none), no
    # cookies, no proxy settings from the environment.
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_option, limit=64), headers=headers,
                                 auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False)


async def close_sessions() -> None:
    """Close the shared sessions (at operator shutdown). Those of another, finished event loop are dropped."""
    loop = asyncio.get_running_loop()
    pooled = list(_SESSIONS.values())
    _SESSIONS.clear()
    for p in pooled:
        p.retired = True
        if p.loop is loop and not p.session.closed:
            await p.session.close()


async def provider_for(config: PrometheusConfig, namespace: str, secrets: SecretReader, *,
                       cap: float | None = None, label: str | None = None,
                       asker: Asker | None = None) -> PrometheusProvider:
    """A provider for `config`, its credentials read from Secrets in `namespace`, asking for `asker`.

    The query timeout is the configured one, at most MAX_TIMEOUT_SECONDS and at most `cap` when given; `cap` is
    also its budget (how long a batch with its queries may take).
    """
    token = ca_pem = None
    if config.bearer_token_secret is not None:
        ref = config.bearer_token_secret
        token = (await _secret_value(secrets, namespace, ref)).strip()
        if not token or not token.isascii() or not token.isprintable():
            raise ProviderError("credentials", f"secret {namespace}/{ref.name} key {ref.key!r} "
                                "is not a bearer token (empty, or not one line of ASCII text)")
    if config.ca_secret is not None:
        ref = config.ca_secret
        ca_pem = await _secret_value(secrets, namespace, ref)
        if not config.insecure_skip_verify:
            try:
                _ssl_context(ca_pem)
            except (ssl.SSLError, ValueError, TypeError):
                raise ProviderError("credentials", f"secret {namespace}/{ref.name} key {ref.key!r} "
                                    "is not a PEM CA bundle") from None
    timeout = min(duration_seconds(config.timeout), MAX_TIMEOUT_SECONDS)
    if cap is not None:
        timeout = min(timeout, cap)
    return PrometheusProvider(config.address, timeout=timeout, bearer_token=token, ca_pem=ca_pem,
                              insecure_skip_verify=config.insecure_skip_verify, label=label, asker=asker,
                              budget=MAX_TIMEOUT_SECONDS if cap is None else min(cap, MAX_TIMEOUT_SECONDS))


async def _secret_value(secrets: SecretReader, namespace: str, ref: SecretKeyRef) -> str:
    """One Secret key; any way of not getting it is a credentials error, not an exception from the API client."""
    where = f"secret {namespace}/{ref.name}"
    try:
        return await secrets.value(namespace, ref.name, ref.key)
    except KeyError:
        raise ProviderError("credentials", f"{where} has no key {ref.key!r}") from None
    except ValueError:  # not base64, not UTF-8
        raise ProviderError("credentials", f"{where} key {ref.key!r} is not text") from None
    except Exception as e:
        status = getattr(e, "status", None)
        if status is None:
            raise
        if status == 404:
            message = f"{where} not found"
        elif status == 403:
            message = f"reading {where} is forbidden"
        else:
            message = f"reading {where}: API error {status if isinstance(status, int) else '?'}"
        raise ProviderError("credentials", message) from None
