"""Backend objects read from the watch instead of a GET per round.

The operator watches every backend kind it drives (handlers wake a deployment's loop on each
change), so the same events keep here the newest copy of each object a deployment has read
and drives (one naming a ModelDeployment by the owner annotation, or by Seldon v2's owner
label). A router's read of such an object is that copy: a settled deployment, and every round
of a rollout that changes nothing, reads nothing from the API server. Writes go to the API
server as before. Only objects a deployment has found are kept, each as JSON text and only up
to MAX_COPY_CHARS: a tenant annotating objects it creates cannot fill the operator's memory.

What the watch has not shown yet. The copy can be older than what the operator itself knows: an
answer to its own write (apply, patch, create, delete) whose echo the watch has not delivered,
or a GET made because there was no copy or it proved stale. That knowledge is kept with the
resourceVersion the watch showed when the call was made (`over`; none when it showed no copy),
and a read returns it while the watch still shows that. The watch showing the knowledge's own
version (the echo) makes it the copy. The watch showing any other version, while the call was
in flight or after, leaves the order unknown (a later write by a controller, or an older event
still queued): the knowledge is dropped and the next read is a GET. ResourceVersions are
compared for equality only, as the API conventions require; an object deleted and created
again (another uid) is ordered by a GET too.

A copy proved stale is not read again: after a write that failed (a 409 Conflict, or a timeout
that leaves unknown whether it landed), the next read of that object is a GET, and so is a read
of anything learnt over MAX_AGE_SECONDS ago (a resync, in case a watch event was lost). An
object found absent, or too large to keep, is read with a GET each time.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping

from .kube import FIELD_MANAGER, Kube, Resource

Key = tuple[str, str, str, str]
"""(API group, plural, namespace, name)."""
MAX_AGE_SECONDS = 1800.0
"""What a read returns is never older than this: a settled object is read again with a GET every half hour, a
resync in case a watch event was lost."""
MAX_COPY_CHARS = 256 * 1024
"""Larger objects are read with a GET each time (an HTTPRoute of the benchmark's is 1.3 KB as JSON)."""


@dataclass(frozen=True)
class Known:
    """One version of an object: its resourceVersion, uid and JSON (trimmed); text None: deleted."""

    version: str | None
    uid: str | None
    text: str | None

    def parsed(self) -> dict[str, Any] | None:
        return None if self.text is None else json.loads(self.text)


@dataclass(frozen=True)
class Ahead:
    """What the operator knows of an object that the watch has not shown yet."""

    known: Known
    over: str | None
    """The resourceVersion the watch showed when the call that learnt it was made (None: no copy)."""


def key_of(resource: Resource, namespace: str, name: str) -> Key:
    return resource.group, resource.plural, namespace, name


def trimmed(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The object with only the operator's own metadata.managedFields entries, the only ones a router reads (what
    the copy of each of 10,000 objects costs in memory is mostly other managers' field sets)."""
    meta = dict(obj.get("metadata") or {})
    if "managedFields" in meta:
        meta["managedFields"] = [e for e in meta["managedFields"] or []
                                 if isinstance(e, dict) and e.get("manager") == FIELD_MANAGER]
    return {**obj, "metadata": meta}


def known_of(obj: Mapping[str, Any]) -> Known | None:
    """What is kept of an object; None when it is longer than MAX_COPY_CHARS as JSON."""
    meta = obj.get("metadata") or {}
    text = json.dumps(trimmed(obj), separators=(",", ":"))
    return Known(meta.get("resourceVersion"), meta.get("uid"), text) if len(text) <= MAX_COPY_CHARS else None


class WatchedObjects:
    """The Kube calls routers make, with reads of watched objects answered from the watch (see the module doc)."""

    def __init__(self, kube: Kube, resources: Iterable[Resource], is_driven: Callable[[Mapping[str, Any]], bool],
                 clock: Callable[[], float] = time.monotonic):
        """`is_driven(obj)`: whether the operator drives the object (names a ModelDeployment), so that it is kept."""
        self.kube, self.clock = kube, clock
        self.watched = {(r.group, r.plural) for r in resources}
        self.is_driven = is_driven
        self.wanted: set[Key] = set()
        """The objects deployments have found: the only ones kept."""
        self.copies: dict[Key, Known] = {}
        """The watch's newest copy of each wanted object the operator drives. Kept as text (an HTTPRoute of the
        benchmark's: 1.3 KB, against 8.5 KB parsed) and parsed on each read into an object of the caller's own."""
        self.ahead: dict[Key, Ahead] = {}
        self.stale: set[Key] = set()
        self.read_at: dict[Key, float] = {}
        """When the watch or the operator last learnt each kept object (see MAX_AGE_SECONDS)."""

    def saw(self, group: str, plural: str, event: str | None, obj: Mapping[str, Any]) -> None:
        """One watch event (kopf's `type`: None for the initial listing, ADDED, MODIFIED, DELETED)."""
        meta = obj.get("metadata") or {}
        key = (group, plural, meta.get("namespace") or "", meta.get("name") or "")
        version, previous = meta.get("resourceVersion"), self.copies.get(key)
        if previous is not None and previous.uid != meta.get("uid"):
            self.stale.add(key)  # deleted and created again: which event is the newer one, a GET says
        known = known_of(obj) if event != "DELETED" and key in self.wanted and self.is_driven(obj) else None
        if known is None:
            self.copies.pop(key, None)  # gone, handed away, unread or too large: not read from here
        else:
            self.copies[key], self.read_at[key] = known, self.clock()
        ahead = self.ahead.pop(key, None)
        if ahead is not None and ahead.over == version:
            self.ahead[key] = ahead  # still what the watch showed when the operator learnt more
        elif ahead is not None and not _is_echo(ahead.known, event, version):
            self.stale.add(key)
        if key not in self.copies and key not in self.ahead:
            self.read_at.pop(key, None)
        if event == "DELETED":
            self.wanted.discard(key)  # kept again only once a deployment finds it again

    async def get(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        key = key_of(resource, namespace, name)
        if (resource.group, resource.plural) not in self.watched:
            return await self.kube.get(resource, namespace, name)
        ahead, copy = self.ahead.get(key), self.copies.get(key)
        usable = key not in self.stale and key in self.read_at and self.clock() - self.read_at[key] < MAX_AGE_SECONDS
        if usable and ahead is not None:
            return ahead.known.parsed()
        if usable and copy is not None:
            return copy.parsed()
        over = self._shown(key)
        self.wanted.add(key)  # from before the call: an event meanwhile is seen to move the watch
        obj = await self.kube.get(resource, namespace, name)
        self.stale.discard(key)
        if obj is None:
            self.wanted.discard(key)  # absent: read with a GET until it is found
            self.copies.pop(key, None)
            self.ahead.pop(key, None)
            self.read_at.pop(key, None)
            return None
        self._learnt(key, obj, over)  # stands until the watch shows anything else of the object
        return obj

    async def apply(self, resource: Resource, namespace: str, name: str, config: dict[str, Any], *,
                    force: bool = True) -> dict[str, Any]:
        key = key_of(resource, namespace, name)
        with self._writing(key) as over:
            written = await self.kube.apply(resource, namespace, name, config, force=force)
        self._learnt(key, written, over)
        return written

    async def patch(self, resource: Resource, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        key = key_of(resource, namespace, name)
        with self._writing(key) as over:
            written = await self.kube.patch(resource, namespace, name, patch)
        self._learnt(key, written, over)
        return written

    async def delete(self, resource: Resource, namespace: str, name: str) -> bool:
        key = key_of(resource, namespace, name)
        with self._writing(key) as over:
            deleted = await self.kube.delete(resource, namespace, name)
        self._learnt(key, None, over)
        return deleted

    async def list(self, resource: Resource, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        return await self.kube.list(resource, namespace, label_selector)

    def _shown(self, key: Key) -> str | None:
        """The version the watch shows now (None: no copy)."""
        copy = self.copies.get(key)
        return copy.version if copy is not None else None

    def _learnt(self, key: Key, obj: dict[str, Any] | None, over: str | None) -> None:
        """What a call made while the watch showed `over` answered (None: deleted)."""
        if (key[0], key[1]) not in self.watched:
            return
        known = Known(None, None, None) if obj is None else known_of(obj)
        self.ahead.pop(key, None)
        shown = self._shown(key)
        if known is not None and known.text is not None and shown == known.version:
            self.read_at[key] = self.clock()  # the watch already shows the answer (the echo came first)
        elif known is None or shown != over:
            self.stale.add(key)  # too large to keep, or the watch moved to another version during the call
        else:
            self.ahead[key], self.read_at[key] = Ahead(known, over), self.clock()

    @contextmanager
    def _writing(self, key: Key) -> Iterator[str | None]:
        """Around a write (yields what the watch shows as it starts): one that fails (a conflict, or a timeout that
        leaves unknown whether it landed) proves what the operator read stale, so the next read is a GET."""
        if (key[0], key[1]) in self.watched:
            self.wanted.add(key)  # an object the operator writes is one it drives: kept from before the call
        try:
            yield self._shown(key)
        except BaseException:
            if (key[0], key[1]) in self.watched:
                self.stale.add(key)
                self.ahead.pop(key, None)
            raise


def _is_echo(known: Known, event: str | None, version: str | None) -> bool:
    """The watch shows what the operator learnt: the same version, or the deletion of what it deleted."""
    return known.version == version if known.text is not None else event == "DELETED"
