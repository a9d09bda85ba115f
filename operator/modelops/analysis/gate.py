"""Fair shares of one Prometheus' request slots between tenants (asyncio only, no I/O, no clock).

A request holds a slot from the moment it is sent until its answer is read. At most `capacity` slots are held at
once (16 by default); one namespace holds at most half of them (8) and one deployment a quarter (4). A request made
for several deployments of a namespace (a batch of their queries) counts toward its namespace only; one made for
several namespaces (a batch of the operator's own template queries) counts toward a tenant of its own,
ACROSS_NAMESPACES, bounded like a namespace.

Requests waiting for a slot are served round-robin by namespace: a free slot goes to the namespace served longest
ago among those with a request waiting within its bounds, and within a namespace to its oldest such request. So a
request within its bounds is served after at most one grant to each other namespace waiting: with 16 slots and at
most 16 namespaces (ACROSS_NAMESPACES included) waiting, within the time the longest request in flight takes, since
every slot held is freed within it, however many requests the others queue.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, OrderedDict, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

ACROSS_NAMESPACES = "*"
"""The tenant of requests made for several namespaces: no namespace is named so (names are DNS labels)."""


@dataclass(eq=False)
class _Waiter:
    namespace: str
    deployment: str | None
    granted: asyncio.Future[None]


class FairGate:
    def __init__(self, capacity: int = 16):
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.per_namespace = max(1, capacity // 2)
        self.per_deployment = max(1, capacity // 4)
        self.held = 0
        self._by_namespace: Counter[str] = Counter()
        self._by_deployment: Counter[tuple[str, str]] = Counter()
        self._waiting: OrderedDict[str, deque[_Waiter]] = OrderedDict()
        """namespace -> its requests waiting, oldest first; namespaces in the order they are to be served."""

    @contextlib.asynccontextmanager
    async def slot(self, namespace: str, deployment: str | None = None) -> AsyncIterator[None]:
        """Hold a slot for `deployment` of `namespace` (None: for several of its deployments) while inside."""
        waiter = _Waiter(namespace, deployment, asyncio.get_running_loop().create_future())
        self._waiting.setdefault(namespace, deque()).append(waiter)
        self._grant()
        try:
            await waiter.granted
        except asyncio.CancelledError:
            if waiter.granted.done() and not waiter.granted.cancelled():
                self._release(waiter)  # granted just as it was cancelled: the slot goes to the next one
            else:
                self._forget(waiter)
            raise
        try:
            yield
        finally:
            self._release(waiter)

    def _next(self) -> _Waiter | None:
        """The oldest request within its bounds of the namespace served longest ago that has one."""
        for namespace, queue in self._waiting.items():
            if self._by_namespace[namespace] >= self.per_namespace:
                continue
            for waiter in queue:
                if not waiter.granted.done() and (waiter.deployment is None or self._by_deployment[
                        namespace, waiter.deployment] < self.per_deployment):
                    return waiter
        return None

    def _grant(self) -> None:
        while self.held < self.capacity:
            chosen = self._next()
            if chosen is None:
                return
            self._forget(chosen)
            if chosen.namespace in self._waiting:
                self._waiting.move_to_end(chosen.namespace)  # served: the others waiting come first next time
            self.held += 1
            self._by_namespace[chosen.namespace] += 1
            if chosen.deployment is not None:
                self._by_deployment[chosen.namespace, chosen.deployment] += 1
            chosen.granted.set_result(None)

    def _forget(self, waiter: _Waiter) -> None:
        queue = self._waiting.get(waiter.namespace)
        if queue is not None and waiter in queue:
            queue.remove(waiter)
            if not queue:
                del self._waiting[waiter.namespace]

    def _release(self, waiter: _Waiter) -> None:
        self.held -= 1
        _decrement(self._by_namespace, waiter.namespace)
        if waiter.deployment is not None:
            _decrement(self._by_deployment, (waiter.namespace, waiter.deployment))
        self._grant()


def _decrement(counts: Counter, key: object) -> None:
    """Down by one; gone at zero, so that tenants no longer asking cost no memory."""
    counts[key] -= 1
    if counts[key] <= 0:
        del counts[key]
