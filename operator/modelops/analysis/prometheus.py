"""The Prometheus metric provider: instant queries over the HTTP API, natively async on aiohttp.

Facts relied on (Prometheus HTTP API, `/api/v1/query`): GET or form-encoded POST with `query` and `time` (unix
seconds); the answer is JSON `{"status": "success", "data": {"resultType": ..., "result": ...}}` or `{"status":
"error", "errorType": ..., "error": ...}`; resultType is `vector` (a list of `{"metric": {...}, "value": [t, "v"]}`),
`scalar` (`[t, "v"]`), `string` or `matrix`; sample values are strings that may be "NaN", "+Inf" or "-Inf".

No threads: the operator's shared thread pool never waits on Prometheus. Every query is bounded by its timeout, has
no retries, and at most `max_concurrency` queries to one Prometheus (address and credentials) are in flight, whichever
deployment's analysis asks: a thousand analyses due at once queue here instead of flooding it. Whatever the server answers, the
result is a number, None (no data) or a ProviderError whose message never quotes the response body.
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
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import aiohttp

from ..api.modeldeployment import PrometheusConfig, SecretKeyRef
from ..api.types import duration_seconds
from .provider import ErrorKind, ProviderError

MAX_TIMEOUT_SECONDS = 30.0
"""No query waits longer than this, whatever the ModelDeployment asks."""
MAX_BODY_BYTES = 4 * 1024 * 1024
"""An instant query for one value answers in bytes; a bigger answer is not read."""
_MAX_ERROR_BODY_BYTES = 64 * 1024
_POST_ABOVE_CHARS = 2000
"""Longer queries go in a POST form, which no URL length limit cuts."""
_MAX_SESSIONS = 16
_DNS_ERROR: Any = getattr(aiohttp, "ClientConnectorDNSError", ())  # aiohttp >= 3.10
_BAD_URL: Any = tuple(getattr(aiohttp, n) for n in ("InvalidURL", "NonHttpUrlClientError") if hasattr(aiohttp, n))


class SecretReader(Protocol):
    async def value(self, namespace: str, name: str, key: str) -> str: ...


class PrometheusProvider:
    def __init__(self, address: str, *, timeout: float, bearer_token: str | None = None, ca_pem: str | None = None,
                 insecure_skip_verify: bool = False, max_concurrency: int = 16, label: str | None = None):
        """`label` names it in errors (e.g. `provider default`); by default its address does."""
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.address = address
        self.timeout = float(timeout)
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

    async def query(self, promql: str, at: datetime) -> float | None:
        params = {"query": promql, "time": f"{at.timestamp():.3f}"}
        async with _lease(self._key, self._ssl, self._headers, self._max_concurrency) as pooled:
            async with pooled.gate:  # the wait for a turn is not part of the query's timeout
                try:
                    async with asyncio.timeout(self.timeout):
                        status, body = await self._send(pooled.session, params)
                except TimeoutError:  # before OSError, its base class; aiohttp's own timeouts are TimeoutErrors too
                    raise self._error("timeout", f"timed out after {self.timeout:g}s") from None
                except (aiohttp.ClientError, OSError, ValueError) as e:
                    raise self._error("unreachable", f"unreachable: {_unreachable(e)}") from e
        return self._judge(status, body)

    async def _send(self, session: aiohttp.ClientSession, params: dict[str, str]) -> tuple[int, bytes | None]:
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        if len(params["query"]) > _POST_ABOVE_CHARS:
            request = session.post(self._url, data=params, timeout=timeout, allow_redirects=False)
        else:
            request = session.get(self._url, params=params, timeout=timeout, allow_redirects=False)
        async with request as response:
            limit = MAX_BODY_BYTES if 200 <= response.status < 300 else _MAX_ERROR_BODY_BYTES
            return response.status, await _read_at_most(response, limit)

    def _judge(self, status: int, body: bytes | None) -> float | None:
        answer = _json(body)
        if not 200 <= status < 300:
            error_type = _error_type(answer)
            if error_type is not None and status in (400, 422):
                raise self._error("rejected", f"query rejected: {error_type} (HTTP {status})")
            raise self._error("http", f"HTTP {status}" + (f" ({error_type})" if error_type else ""))
        if body is None:
            raise self._error("bad_response", f"answer larger than {MAX_BODY_BYTES // (1024 * 1024)} MiB")
        if not isinstance(answer, dict) or "status" not in answer:
            raise self._bad()
        if answer["status"] == "error":
            raise self._error("rejected", f"query rejected: {_error_type(answer) or 'unknown'}")
        data = answer.get("data")
        if answer["status"] != "success" or not isinstance(data, dict):
            raise self._bad()
        kind, result = data.get("resultType"), data.get("result")
        if kind == "vector" and isinstance(result, list):
            if not result:
                return None
            if len(result) > 1:
                raise self._error("many_series", _many_series(result))
            series = result[0]
            if isinstance(series, dict) and "value" not in series and "histogram" in series:
                raise self._error("bad_response", "returned a native histogram, one value expected")
            return self._sample(series.get("value") if isinstance(series, dict) else None)
        if kind == "scalar":
            return self._sample(result)
        if kind in ("string", "matrix"):
            raise self._error("bad_response", f"returned a {kind}, one value expected")
        raise self._bad()

    def _sample(self, pair: Any) -> float | None:
        """A `[time, "value"]` pair's value; NaN is no data, infinities are values."""
        if not isinstance(pair, list) or len(pair) != 2:
            raise self._bad()
        raw = pair[1]
        if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
            raise self._bad()
        try:
            value = float(raw)
        except (ValueError, OverflowError):
            raise self._bad() from None
        return None if math.isnan(value) else value

    def _error(self, kind: ErrorKind, detail: str) -> ProviderError:
        return ProviderError(kind, f"{self._where}: {detail}")

    def _bad(self) -> ProviderError:
        return self._error("bad_response", "not a Prometheus API answer")


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

@dataclass(eq=False)
class _Pooled:
    session: aiohttp.ClientSession
    loop: asyncio.AbstractEventLoop
    gate: asyncio.Semaphore
    """At most this many queries in flight to this Prometheus."""
    users: int = 0
    retired: bool = False


_SESSIONS: OrderedDict[tuple[Any, ...], _Pooled] = OrderedDict()


@contextlib.asynccontextmanager
async def _lease(key: tuple[Any, ...], ssl_option: ssl.SSLContext | bool, headers: dict[str, str],
                 max_concurrency: int) -> AsyncIterator[_Pooled]:
    loop = asyncio.get_running_loop()
    pooled = _SESSIONS.get(key)
    if pooled is None or pooled.loop is not loop or pooled.session.closed:
        if pooled is not None:
            pooled.retired = True
        pooled = _SESSIONS[key] = _Pooled(_new_session(ssl_option, headers), loop, asyncio.Semaphore(max_concurrency))
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
                       cap: float | None = None, label: str | None = None) -> PrometheusProvider:
    """A provider for `config`, its credentials read from Secrets in `namespace`.

    The query timeout is the configured one, at most MAX_TIMEOUT_SECONDS and at most `cap` when given.
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
                              insecure_skip_verify=config.insecure_skip_verify, label=label)


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
