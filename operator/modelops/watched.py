"""Backend objects read from the watch instead of a GET per round.

The operator watches every backend kind it drives (handlers wake a deployment's loop on each
change), so the same events keep here the newest copy of each object a deployment has read
and drives (one naming a ModelDeployment by the owner annotation, or by Seldon v2's owner
label). A router's read of such an object is that copy: a settled deployment, and every round
of a rollout that changes nothing, reads nothing from the API server. Writes go to the API
server as before. Only objects a deployment reads are kept, each as JSON text and only up to
MAX_COPY_CHARS: a tenant annotating objects it creates cannot fill the operator's memory.

What the watch has not shown yet. The copy can be older than what the operator itself knows: an
answer to its own write (apply, patch, create, delete) whose echo the watch has not delivered,
or a GET made because there was no copy or it proved stale. That knowledge is kept with the
resourceVersion the watch showed when it was gained (`over`; none when it showed no copy).
While the watch still shows that, the knowledge is newer and a read returns it; once the watch
shows any other version of the object (the echo, or a later write by anyone) it has caught up
and the knowledge is dropped. ResourceVersions are compared for equality only, as the API
conventions require. A write by someone else that lands between the operator's read and its
write, and shows in the watch before the operator's echo, is read for that moment: the next
round may write again (an apply that finds everything in place writes nothing) or meet a 409,
as it would after any concurrent edit.

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
class Ahead:
    """What the operator knows of an object that the watch has not shown yet."""

    text: str | None
    """The object as the operator's write or GET left it, as JSON; None: deleted."""
    over: str | None
    """The resourceVersion the watch showed when this was learnt (None: no copy)."""


def key_of(resource: Resource, namespace: str, name: str) -> Key:
    return resource.group, resource.plural, namespace, name


def _version(obj: Mapping[str, Any] | None) -> str | None:
    return ((obj or {}).get("metadata") or {}).get("resourceVersion")


def json_of(obj: Mapping[str, Any]) -> str | None:
    """What is kept of an object (`trimmed`), as JSON; None when it is longer than MAX_COPY_CHARS."""
    text = json.dumps(trimmed(obj), separators=(",", ":"))
    return text if len(text) <= MAX_COPY_CHARS else None


def trimmed(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The object with only the operator's own metadata.managedFields entries, the only ones a router reads (what
    the copy of each of 10,000 objects costs in memory is mostly other managers' field sets)."""
    meta = dict(obj.get("metadata") or {})
    if "managedFields" in meta:
        meta["managedFields"] = [e for e in meta["managedFields"] or []
                                 if isinstance(e, dict) and e.get("manager") == FIELD_MANAGER]
    return {**obj, "metadata": meta}


class WatchedObjects:
    """The Kube calls routers make, with reads of watched objects answered from the watch (see the module doc)."""

    def __init__(self, kube: Kube, resources: Iterable[Resource], is_driven: Callable[[Mapping[str, Any]], bool],
                 clock: Callable[[], float] = time.monotonic):
        """`is_driven(obj)`: whether the operator drives the object (names a ModelDeployment), so that it is kept."""
        self.kube, self.clock = kube, clock
        self.watched = {(r.group, r.plural) for r in resources}
        self.is_driven = is_driven
        self.wanted: set[Key] = set()
        """The objects deployments have read: the only ones kept."""
        self.copies: dict[Key, tuple[str | None, str]] = {}
        """The watch's newest copy of each wanted object the operator drives: (its resourceVersion, its JSON). Kept
        as text (an HTTPRoute of the benchmark's: 1.3 KB, against 8.5 KB parsed) and parsed on each read into an
        object of the caller's own."""
        self.ahead: dict[Key, Ahead] = {}
        self.stale: set[Key] = set()
        self.read_at: dict[Key, float] = {}
        """When the watch or the operator last learnt each kept object (see MAX_AGE_SECONDS)."""

    def saw(self, group: str, plural: str, event: str | None, obj: Mapping[str, Any]) -> None:
        """One watch event (kopf's `type`: None for the initial listing, ADDED, MODIFIED, DELETED)."""
        meta = obj.get("metadata") or {}
        key = (group, plural, meta.get("namespace") or "", meta.get("name") or "")
        text = json_of(obj) if event != "DELETED" and key in self.wanted and self.is_driven(obj) else None
        if text is None:
            self.copies.pop(key, None)  # gone, handed away, unread or too large: not read from here
        else:
            self.copies[key], self.read_at[key] = (_version(obj), text), self.clock()
        ahead = self.ahead.get(key)
        if ahead is not None and ahead.over != _version(obj):
            del self.ahead[key]  # the watch has caught up with what the operator knew
        if key not in self.copies and key not in self.ahead:
            self.read_at.pop(key, None)

    async def get(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        key = key_of(resource, namespace, name)
        if (resource.group, resource.plural) not in self.watched:
            return await self.kube.get(resource, namespace, name)
        self.wanted.add(key)
        ahead, copy = self.ahead.get(key), self.copies.get(key)
        usable = key not in self.stale and key in self.read_at and self.clock() - self.read_at[key] < MAX_AGE_SECONDS
        if usable and ahead is not None and ahead.over == (copy[0] if copy else None):
            return None if ahead.text is None else json.loads(ahead.text)
        if usable and copy is not None:
            return json.loads(copy[1])
        obj = await self.kube.get(resource, namespace, name)
        self.stale.discard(key)
        if obj is not None:
            self._learnt(key, obj)  # stands until the watch shows anything else of the object
        return obj

    async def apply(self, resource: Resource, namespace: str, name: str, config: dict[str, Any], *,
                    force: bool = True) -> dict[str, Any]:
        key = key_of(resource, namespace, name)
        with self._writing(key):
            written = await self.kube.apply(resource, namespace, name, config, force=force)
        self._learnt(key, written)
        return written

    async def patch(self, resource: Resource, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        key = key_of(resource, namespace, name)
        with self._writing(key):
            written = await self.kube.patch(resource, namespace, name, patch)
        self._learnt(key, written)
        return written

    async def delete(self, resource: Resource, namespace: str, name: str) -> bool:
        key = key_of(resource, namespace, name)
        with self._writing(key):
            deleted = await self.kube.delete(resource, namespace, name)
        self._learnt(key, None)
        return deleted

    async def list(self, resource: Resource, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        return await self.kube.list(resource, namespace, label_selector)

    def _learnt(self, key: Key, obj: dict[str, Any] | None) -> None:
        if (key[0], key[1]) not in self.watched:
            return
        text = None if obj is None else json_of(obj)
        if obj is not None and text is None:
            self.ahead.pop(key, None)  # too large to keep: the next read is a GET
            return
        copy = self.copies.get(key)
        self.ahead[key], self.read_at[key] = Ahead(text, copy[0] if copy else None), self.clock()

    @contextmanager
    def _writing(self, key: Key) -> Iterator[None]:
        """Around a write: one that fails (a conflict, or a timeout that leaves unknown whether it landed) proves
        what the operator read stale, so the next read of the object is a GET."""
        try:
            yield
        except BaseException:
            if (key[0], key[1]) in self.watched:
                self.stale.add(key)
                self.ahead.pop(key, None)
            raise
