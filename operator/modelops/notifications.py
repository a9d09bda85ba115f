"""Webhook notifications of rollout decisions: queued by the round, sent beside it, never in it.

A round hands its persisted decision to `Notifications.notify`, which returns at once: it builds one
notification per event (pure: `build`) and appends it to the queue of every ClusterNotifier the
deployment opted into (`spec.notifications`) that admits its namespace and hears of that reason. A
queue holds QUEUE_SIZE notifications; a full one drops its oldest (counted as `dropped`).

One task per notifier, started with its first notification, sends them in order over one shared
aiohttp session. Each attempt is bounded by the notifier's timeout (at most 30 s); a notification
gets at most `RetryPolicy.attempts` attempts, 1 s then 2 s apart (longer when the answer's Retry-After
asks, up to 10 s), after no answer, a connection error, a 5xx, 408, 425 or 429; any other
answer is final (a 2xx is `delivered`, the rest `failed`). Redirects are not followed, response
bodies are not read, and nothing a receiver answers is logged but its status code. A receiver
that hangs or fails holds up its own queue only: no round and no other notifier waits for it (G3).

Best effort, by design: notifications still queued when the leader stops are lost (the decisions
are in `status.history` and the Kubernetes Events), and an attempt that timed out after the
receiver took it is sent again with the same `id`, by which a receiver can drop the repeat.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import logging
import re
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence

import aiohttp
from prometheus_client import Counter, Gauge

from . import API_VERSION
from .analysis.prometheus import _unreachable as unreachable_words
from .api.metricprovider import selects
from .api.modeldeployment import CheckStatus, ModelDeploymentSpec, ModelDeploymentStatus, SecretKeyRef
from .api.notifier import MAX_TIMEOUT_SECONDS, ClusterNotifierSpec, NotificationFormat
from .api.types import duration_seconds
from .rollout.values import Event, rfc3339

log = logging.getLogger(__name__)

QUEUE_SIZE = 100
"""Notifications waiting per notifier; beyond it the oldest is dropped."""
MESSAGE_CHARS = 1000
"""As Kubernetes Events cut theirs."""
SLACK_TEXT_CHARS = 3000
"""Slack's limit on one text object."""
WARNED_KEPT = 10_000
"""Deployments whose notification problems are remembered (to warn once each)."""
OPERATOR = "modelops"
WARNING_REASON = "NotificationsNotSent"

NOTIFICATIONS = Counter("modelops_notifications_total",
                        "Notifications by notifier and outcome: delivered, failed (no 2xx within its attempts, or a "
                        "final answer such as 400), dropped (its queue was full).", ["notifier", "outcome"])
QUEUED = Gauge("modelops_notifications_queued", "Notifications waiting to be sent, by notifier.", ["notifier"])
_BAD_URL: Any = tuple(getattr(aiohttp, n) for n in ("InvalidURL", "NonHttpUrlClientError") if hasattr(aiohttp, n))
_URL = re.compile(r"^https?://[^\s]+$")


# --- what is sent (pure) -------------------------------------------------------------------------


@dataclass(frozen=True)
class Notification:
    id: str
    """The same on every attempt: a receiver can drop a repeat."""
    reason: str
    type: str
    """Normal or Warning, as the Kubernetes Event has it."""
    namespace: str
    deployment: str
    model: str
    version: str | None
    """The version the event is about (the rolled-back candidate, the promoted one, the target of a manual rollback)."""
    stable: str | None
    candidate: str | None
    weight: int
    """The candidate's traffic percent after the decision."""
    phase: str | None
    message: str
    actor: str | None
    """Who acted, for manual actions (the kubectl user, `spec` for spec.paused and trafficOverride); None for the
    operator's own decisions."""
    time: str
    checks: tuple[dict[str, Any], ...] = ()
    """The last analysis' checks, for AnalysisFailed and automatic rollbacks."""


def build(meta: Mapping[str, Any], spec: ModelDeploymentSpec, status: ModelDeploymentStatus, events: Sequence[Event],
          now: datetime) -> list[Notification]:
    """One notification per event of a decision, from the status it persisted."""
    namespace, name, at = meta["namespace"], meta["name"], rfc3339(now)
    out = []
    for index, event in enumerate(events):
        actor = event.actor if event.actor not in (None, OPERATOR) else None
        checks: tuple[dict[str, Any], ...] = ()
        if event.reason == "AnalysisFailed" or (event.reason == "RolledBack" and actor is None):
            checks = tuple(_check(c) for c in status.checks)
        identity = f"{meta.get('uid') or ''}/{namespace}/{name}/{at}/{index}/{event.reason}"
        out.append(Notification(
            id=hashlib.sha256(identity.encode()).hexdigest()[:32], reason=event.reason, type=event.type,
            namespace=namespace, deployment=name, model=spec.model, version=event.version,
            stable=status.stable_version, candidate=status.canary_version, weight=status.canary_weight,
            phase=status.phase.value if status.phase else None, message=event.message[:MESSAGE_CHARS], actor=actor,
            time=at, checks=checks))
    return out


def _check(check: CheckStatus) -> dict[str, Any]:
    out: dict[str, Any] = {"name": check.name, "verdict": check.verdict.value, "value": check.value,
                           "limit": check.limit}
    if check.baseline is not None:
        out["baseline"] = check.baseline
    return out


_PHRASES = {
    "RolloutStarted": "rollout of {v} started",
    "StepAdvanced": "{v} advanced",
    "AnalysisFailed": "analysis of {v} failed",
    "RolledBack": "{v} rolled back",
    "Promoted": "{v} promoted",
    "Aborted": "{v} aborted",
    "Paused": "paused at {v}",
    "Resumed": "resumed at {v}",
    "ManualOverride": "traffic override on {v}",
    "StepBack": "{v} stepping back",
    "Superseded": "{v} superseded",
    "Deployed": "{v} deployed",
    "RequestIgnored": "request ignored",
    "DrillStarted": "rollback drill to {v} started",
    "DrillOnFallback": "rollback drill: all traffic on {v}",
    "DrillCompleted": "rollback drill to {v} completed",
    "DrillInterrupted": "rollback drill to {v} interrupted",
    "DrillRequestsLost": "rollback drill to {v} measured",
}


def summary(n: Notification) -> str:
    """One line: `fraud (prod): 1.1.0 rolled back — Failed (2/2): errors: 0.31 breaks the limit <= 0.05; all traffic
    on stable 1.0.0`."""
    version = n.version or n.candidate or n.stable or "?"
    phrase = _PHRASES.get(n.reason, n.reason + " ({v})").format(v=version)
    if n.reason == "RolledBack" and n.actor is not None:
        phrase = f"rolled back to {version}"  # a manual rollback names its target
    by = f" by {n.actor}" if n.actor not in (None, "spec") else ""
    detail = n.message.removeprefix(f"{n.version}: ") if n.version else n.message
    return f"{n.deployment} ({n.namespace}): {phrase}{by} — {detail}"[:MESSAGE_CHARS]


def json_payload(n: Notification, notifier: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION, "kind": "ModelDeploymentNotification", "id": n.id, "notifier": notifier,
        "reason": n.reason, "type": n.type, "time": n.time, "namespace": n.namespace, "deployment": n.deployment,
        "model": n.model, "version": n.version, "stable": n.stable, "candidate": n.candidate, "weight": n.weight,
        "phase": n.phase, "actor": n.actor, "message": n.message, "summary": summary(n), "checks": list(n.checks),
    }


def slack_escape(text: str) -> str:
    """Slack's control characters: no tenant's text becomes a link or an @channel mention."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int = SLACK_TEXT_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def slack_payload(n: Notification) -> dict[str, Any]:
    text = _cut(slack_escape(summary(n)))
    facts = [f"model *{slack_escape(n.model)}*", f"stable *{n.stable or 'none'}*"]
    if n.candidate is not None:
        facts.append(f"candidate *{n.candidate}* at {n.weight}%")
    if n.phase is not None:
        facts.append(f"phase {n.phase}")
    if n.actor is not None:
        facts.append(f"by {slack_escape(n.actor)}")
    facts.append(n.time)
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
    if n.checks:
        lines = [f"• *{slack_escape(c['name'])}* {c['verdict']}: {_number(c['value'])} "
                 f"(limit {slack_escape(c['limit'])})" for c in n.checks]
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut("\n".join(lines))}})
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _cut(" · ".join(facts))}]})
    return {"text": text, "blocks": blocks}


def _number(value: float | None) -> str:
    return "no data" if value is None else f"{value:.4g}"


def payload(fmt: NotificationFormat, n: Notification, notifier: str) -> dict[str, Any]:
    return slack_payload(n) if fmt is NotificationFormat.slack else json_payload(n, notifier)


# --- who hears of it (pure) ----------------------------------------------------------------------


def resolve(names: Iterable[str], namespace: str, namespace_labels: dict[str, str] | None,
            notifiers: Mapping[str, ClusterNotifierSpec | None]
            ) -> tuple[list[tuple[str, ClusterNotifierSpec]], list[str]]:
    """(the notifiers a deployment may use, what is wrong with each of the others)."""
    usable, problems = [], []
    for name in names:
        if name not in notifiers:
            problems.append(f"no ClusterNotifier named {name!r}")
        elif (spec := notifiers[name]) is None:
            problems.append(f"ClusterNotifier {name!r} is invalid")
        elif namespace_labels is None or not selects(spec.namespace_selector, namespace_labels):
            problems.append(f"ClusterNotifier {name!r} does not admit namespace {namespace}")
        else:
            usable.append((name, spec))
    return usable, problems


# --- how it is sent (pure parts) -----------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3
    backoff: float = 1.0
    """Seconds before the second attempt; doubled before each further one."""
    max_retry_after: float = 10.0
    """A receiver's Retry-After is honoured up to this."""

    def wait(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (from 1)."""
        backoff = self.backoff * 2 ** (attempt - 1)
        if retry_after is None:
            return backoff
        return max(backoff, min(retry_after, self.max_retry_after))


@dataclass(frozen=True)
class Attempt:
    status: int | None
    """HTTP status; None when there was no answer."""
    problem: str | None = None
    retriable: bool = False
    retry_after: float | None = None

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


RETRIED_STATUSES = frozenset({408, 425, 429})


def judge(status: int, retry_after: str | None = None, now: datetime | None = None) -> Attempt:
    """What an answer means: 2xx delivered; 5xx, 408, 425 and 429 worth another attempt; anything else final."""
    if 200 <= status < 300:
        return Attempt(status)
    retriable = status >= 500 or status in RETRIED_STATUSES
    return Attempt(status, f"HTTP {status}", retriable, parse_retry_after(retry_after, now) if retriable else None)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After in seconds or as an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


class Outbox:
    """A bounded FIFO: putting into a full one drops (and returns) the oldest."""

    def __init__(self, size: int = QUEUE_SIZE):
        if size < 1:
            raise ValueError("an outbox holds at least one notification")
        self._items: deque[Any] = deque()
        self.size = size
        self.ready = asyncio.Event()

    def put(self, item: Any) -> Any | None:
        dropped = self._items.popleft() if len(self._items) >= self.size else None
        self._items.append(item)
        self.ready.set()
        return dropped

    def take(self) -> Any | None:
        item = self._items.popleft() if self._items else None
        if not self._items:
            self.ready.clear()
        return item

    def __len__(self) -> int:
        return len(self._items)


# --- the sender ----------------------------------------------------------------------------------


class SecretReader(Protocol):
    async def value(self, namespace: str, name: str, key: str) -> str: ...


EventSink = Callable[[Mapping[str, Any], str, str, str], None]
"""(the ModelDeployment, Normal|Warning, reason, message) -> posted as a Kubernetes Event."""


class NotifierError(Exception):
    """A notifier's own configuration cannot be used (its Secret is missing or malformed): no attempt is made."""


@dataclass(eq=False)
class _Channel:
    outbox: Outbox
    task: asyncio.Task[None] | None = None
    dropping: bool = False
    """Dropping since the queue was last empty: logged once, counted every time."""


@dataclass
class Notifications:
    """The operator's notifications: `notify` from the rounds, one sending task per notifier, `close` at shutdown."""

    operator_namespace: str
    secrets: SecretReader
    events: EventSink
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    queue_size: int = QUEUE_SIZE
    clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)
    notifiers: Mapping[str, Iterable[ClusterNotifierSpec | None]] = field(default_factory=dict)
    namespace_labels: Mapping[str, Iterable[dict[str, str]]] = field(default_factory=dict)
    _channels: dict[str, _Channel] = field(default_factory=dict, init=False, repr=False)
    _warned: OrderedDict[tuple[str, str], frozenset[str]] = field(default_factory=OrderedDict, init=False, repr=False)
    _session: aiohttp.ClientSession | None = field(default=None, init=False, repr=False)
    _closing: bool = field(default=False, init=False, repr=False)

    def bind(self, notifiers: Mapping[str, Iterable[ClusterNotifierSpec | None]],
             namespace_labels: Mapping[str, Iterable[dict[str, str]]]) -> None:
        """kopf's indexes (the same live mappings on every call)."""
        self.notifiers, self.namespace_labels = notifiers, namespace_labels

    # The round's side: synchronous, no I/O, never raises into the round (reconcile.notify guards it too).

    def notify(self, obj: Mapping[str, Any], spec: ModelDeploymentSpec, status: ModelDeploymentStatus,
               events: Sequence[Event]) -> None:
        meta = obj["metadata"]
        key = (meta["namespace"], meta["name"])
        if not spec.notifications:
            self._warned.pop(key, None)
            return
        declared: dict[str, ClusterNotifierSpec | None] = {}
        for name in spec.notifications:
            found = list(self.notifiers.get(name, ()))
            if found:
                declared[name] = found[0]
        labels = next(iter(self.namespace_labels.get(key[0], ())), None)
        usable, problems = resolve(spec.notifications, key[0], labels, declared)
        self._warn_once(obj, key, frozenset(problems))
        if self._closing or not events or not usable:
            return
        built = build(meta, spec, status, events, self.clock())
        for name, notifier in usable:
            wanted = {e.value for e in notifier.events}
            for notification in built:
                if notification.reason in wanted:
                    self._enqueue(name, notifier, notification)

    def _warn_once(self, obj: Mapping[str, Any], key: tuple[str, str], problems: frozenset[str]) -> None:
        """A Warning event when a problem appears; none while it lasts; again if it comes back after a fix."""
        new = problems - self._warned.get(key, frozenset())
        if problems:
            self._warned[key] = problems
            self._warned.move_to_end(key)
            while len(self._warned) > WARNED_KEPT:
                self._warned.popitem(last=False)
        else:
            self._warned.pop(key, None)
        if new:
            self.events(obj, "Warning", WARNING_REASON,
                        f"spec.notifications: {'; '.join(sorted(new))}: nothing is sent there"[:MESSAGE_CHARS])

    def _enqueue(self, name: str, notifier: ClusterNotifierSpec, notification: Notification) -> None:
        channel = self._channels.get(name)
        if channel is None:
            channel = self._channels[name] = _Channel(Outbox(self.queue_size))
        if channel.outbox.put((notifier, notification)) is not None:
            NOTIFICATIONS.labels(name, "dropped").inc()
            if not channel.dropping:
                log.warning("notifier %s: %d notifications wait; dropping the oldest until they are sent", name,
                            self.queue_size)
            channel.dropping = True
        QUEUED.labels(name).set(len(channel.outbox))
        if channel.task is None or channel.task.done():
            channel.task = asyncio.get_running_loop().create_task(self._send_all(name, channel),
                                                                  name=f"notifier {name}")

    # The sending side: one task per notifier.

    async def _send_all(self, name: str, channel: _Channel) -> None:
        while True:
            if not len(channel.outbox):
                channel.dropping = False
                if self._closing:
                    return
                channel.outbox.ready.clear()
                await channel.outbox.ready.wait()
                continue
            notifier, notification = channel.outbox.take()
            QUEUED.labels(name).set(len(channel.outbox))
            try:
                outcome = await self.deliver(name, notifier, notification)
            except Exception:  # noqa: BLE001 - one bad notification never stops the ones after it
                log.exception("notifier %s: sending %s failed", name, notification.id)
                outcome = "failed"
            NOTIFICATIONS.labels(name, outcome).inc()

    async def deliver(self, name: str, notifier: ClusterNotifierSpec, notification: Notification) -> str:
        """Send one notification with its bounded attempts: `delivered` or `failed`."""
        what = f"{notification.reason} of {notification.namespace}/{notification.deployment}"
        try:
            url, headers = await self._target(notifier)
        except NotifierError as e:
            log.warning("notifier %s: %s not sent: %s", name, what, e)
            return "failed"
        body = json.dumps(payload(notifier.webhook.format, notification, name), allow_nan=False).encode()
        timeout = min(duration_seconds(notifier.webhook.timeout), MAX_TIMEOUT_SECONDS)
        for attempt in range(1, self.policy.attempts + 1):
            result = await self._attempt(url, headers, body, timeout)
            if result.delivered:
                return "delivered"
            if not result.retriable or attempt == self.policy.attempts:
                log.warning("notifier %s: %s not delivered after %d attempt(s): %s", name, what, attempt,
                            result.problem)
                return "failed"
            await asyncio.sleep(self.policy.wait(attempt, result.retry_after))
        return "failed"  # attempts < 1

    async def _target(self, notifier: ClusterNotifierSpec) -> tuple[str, dict[str, str]]:
        webhook = notifier.webhook
        url = webhook.url
        if url is None:
            assert webhook.url_secret is not None
            url = (await self._secret(webhook.url_secret)).strip()
            if not _URL.match(url) or len(url) > 2048:
                raise NotifierError(f"secret {self.operator_namespace}/{webhook.url_secret.name} key "
                                    f"{webhook.url_secret.key!r} is not an http:// or https:// URL")
        headers = {"Content-Type": "application/json", "User-Agent": "modelops-notifier"}
        if webhook.secret_header is not None:
            ref = webhook.secret_header
            value = (await self._secret(SecretKeyRef(name=ref.name, key=ref.key))).strip()
            if not value or not value.isascii() or not value.isprintable():
                raise NotifierError(f"secret {self.operator_namespace}/{ref.name} key {ref.key!r} is not a header "
                                    "value (empty, or not one line of ASCII text)")
            headers[ref.header] = value
        return url, headers

    async def _secret(self, ref: SecretKeyRef) -> str:
        try:
            return await self.secrets.value(self.operator_namespace, ref.name, ref.key)
        except KeyError:
            raise NotifierError(f"secret {self.operator_namespace}/{ref.name} has no key {ref.key!r}") from None
        except Exception as e:  # noqa: BLE001 - an API error's words may quote the Secret: only its class and status
            status = getattr(e, "status", None)
            raise NotifierError(f"secret {self.operator_namespace}/{ref.name} could not be read "
                                f"({type(e).__name__}{f' {status}' if status else ''})") from None

    async def _attempt(self, url: str, headers: dict[str, str], body: bytes, timeout: float) -> Attempt:
        try:
            async with asyncio.timeout(timeout):
                async with self._client().post(url, data=body, headers=headers, allow_redirects=False) as answer:
                    return judge(answer.status, answer.headers.get("Retry-After"), self.clock())
        except TimeoutError:  # before OSError, its base class
            return Attempt(None, f"no answer within {timeout:g}s", retriable=True)
        except _BAD_URL:
            return Attempt(None, "not an http:// or https:// URL")
        except (aiohttp.ClientError, OSError, ValueError) as e:
            return Attempt(None, f"unreachable: {unreachable_words(e)}", retriable=True)

    def _client(self) -> aiohttp.ClientSession:
        """One session for every notifier. No connection limit: each notifier has at most one request in flight, so a
        receiver that hangs holds one connection and never a slot another notifier waits for."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0), cookie_jar=aiohttp.DummyCookieJar(), trust_env=False,
                auto_decompress=False)
        return self._session

    async def close(self, grace: float = 2.0) -> None:
        """Stop: what is queued gets `grace` seconds to go out, then the senders are cancelled."""
        self._closing = True
        tasks = [c.task for c in self._channels.values() if c.task is not None and not c.task.done()]
        for channel in self._channels.values():
            channel.outbox.ready.set()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None
