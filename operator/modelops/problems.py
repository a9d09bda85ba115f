"""What keeps a round from going as decided, said one way everywhere: a reason to count (the
`modelops_reconcile_errors_total` metric), words for status and a Warning event, and whether it is a failure to back
off from or a standing state of the backend the round works around."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping

import aiohttp
from kubernetes_asyncio.client.exceptions import ApiException

from . import metrics
from .kube import ApiNotInstalled
from .rollout import TrafficIntent
from .routers.base import BackendMisconfigured, BackendNotOwned

EventSink = Callable[[Mapping[str, Any], str, str, str], None]
"""(object, type, reason, message): posts a Kubernetes event."""

# Failures of the world around the operator: reported and retried, never a reason to give up.
EXPECTED = (ApiException, ApiNotInstalled, BackendMisconfigured, asyncio.TimeoutError, aiohttp.ClientError, OSError)


@dataclass(frozen=True)
class Problem:
    reason: str
    message: str
    standing: bool = False
    """A state of the backend the round worked around (it measured, decided and applied what it could): reported
    every round, but no failure to back off from, so that analyses and a rollback keep their pace."""


@dataclass(frozen=True)
class Unfinished:
    intent: TrafficIntent | None
    problem: Problem


def naming(blocking: Problem | None, other: Problem | None) -> Problem | None:
    """The one problem a status names: `blocking`, which kept the persisted decision from being carried onto the
    backend (what the operator must do next), with `other`'s words kept in its message; else `other`. The write
    before an apply names the last apply's problem, the one after it this apply's: when they are the same, so are
    the two statuses, and a round that meets what the last one met writes nothing."""
    if blocking is None or other is None or (other.reason, other.message) == (blocking.reason, blocking.message):
        return blocking or other
    return replace(blocking, message=f"{blocking.message}; also {other.reason}: {other.message}")


def classify(error: BaseException) -> Problem:
    """A reason to count and show, and words without any response body in them."""
    if isinstance(error, ApiNotInstalled):
        return Problem("BackendNotInstalled", str(error))
    if isinstance(error, BackendNotOwned):
        return Problem("BackendNotOwned", str(error))
    if isinstance(error, BackendMisconfigured):
        return Problem("BackendMisconfigured", str(error))
    if isinstance(error, ApiException) and error.status == 409:
        return Problem("Conflict", "the ModelDeployment or its backend object changed since this round read it;"
                                   " deciding again")
    if isinstance(error, ApiException):
        webhook = webhook_words(error)
        return Problem("ApiError", f"Kubernetes API answered {error.status} {error.reason}"
                                   + (f": {webhook}" if webhook else ""))
    if isinstance(error, asyncio.TimeoutError):
        return Problem("Timeout", "a Kubernetes API call timed out")
    if isinstance(error, (aiohttp.ClientError, OSError)):
        return Problem("Unreachable", f"the Kubernetes API could not be reached ({type(error).__name__})")
    return Problem("InternalError", f"{type(error).__name__}: {str(error)[:300]}")


_NAME = r'"([a-z0-9.-]{1,253})"'
_WEBHOOK_WORDS = ((re.compile(r"(?:Internal error occurred: )?failed calling webhook " + _NAME), "could not be called"),
                  (re.compile(r"admission webhook " + _NAME + " denied the request"), "refused the write"))


def webhook_words(error: ApiException) -> str | None:
    """What the API server's Status says an admission webhook did to the call (could not be called, refused it),
    naming the webhook; None when its message does not begin so. Only the name is taken: the rest of a response
    body stays out of status and events."""
    try:
        message = json.loads(error.body or "{}").get("message")
    except (ValueError, TypeError, AttributeError):
        return None
    for pattern, words in _WEBHOOK_WORDS:
        found = pattern.match(message) if isinstance(message, str) else None
        if found:
            return f"admission webhook {found.group(1)} {words}"
    return None


def note_problem(events: EventSink, obj: Mapping[str, Any], problem: Problem) -> None:
    """Counted every time; an event only when the words change, so a long outage is one event."""
    count_problem(obj, problem)
    tell_problem(events, obj, problem)


def count_problem(obj: Mapping[str, Any], problem: Problem) -> None:
    metrics.count_error(obj["metadata"]["namespace"], obj["metadata"]["name"], problem.reason)


def tell_problem(events: EventSink, obj: Mapping[str, Any], problem: Problem) -> None:
    """A Warning event when the words differ from what the status said when the round read it."""
    if problem.reason == "Conflict":
        return  # routine under concurrent edits: the next round decides again from the fresh object
    synced = next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == "Synced"), {})
    if synced.get("message") != problem.message[:1000]:
        events(obj, "Warning", problem.reason, problem.message[:1000])
