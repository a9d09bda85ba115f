"""At most N rollouts in flight at once (`--max-rollouts`), and at most M per model (`--max-rollouts-per-model`,
a model being `spec.model` in one namespace): the other deployments whose spec.version moved wait, Queued, first
come first served.

A rollout is in flight while the status has a candidate (Progressing, Paused, RollingBack). The operator knows that
from two sources: kopf's index of its ModelDeployments, complete before any deployment's loop starts (so a
restarted operator counts the rollouts already in flight), and its own decisions, which the index shows only once
the watch delivers the status written. Until it does, the decision is what counts.

A deployment that would start a rollout asks for a slot before deciding (the slot is its own from then on, so two
loops can never take the last one together); its decision then keeps the slot or gives it back. A queued one may
start when fewer of the deployments queued before it can start than slots are free. A slot coming free wakes as
many of the queued as may start then, in order, and no others: with thousands queued behind a limit, waking all of
them would be thousands of rounds for each rollout that ends. For the same reason a queued deployment's words do not
say its place in the queue: they would change, and be written to its status, whenever any rollout ends. The order
of the queue is lost on a restart.

A queued deployment whose rollout cannot start (stable not serving, the target's ModelVersion gone) leaves the
queue, its phase Stable again (the engine's), and so passes its turn on instead of holding up those behind it; it
queues anew, last, once it can start.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

from .api.modeldeployment import ModelDeploymentStatus, Phase

IN_FLIGHT = "in-flight"
"""The key of kopf's index entry of a deployment whose status has a candidate: (namespace, name, model)."""

Key = tuple[str, str]
"""A deployment: (namespace, name)."""


@dataclass
class RolloutSlots:
    max_rollouts: int | None = None
    max_per_model: int | None = None
    wake: Callable[[str, str], None] = lambda namespace, name: None
    index: Mapping[str, Iterable[tuple[str, str, str]]] = field(default_factory=dict)
    decided: dict[Key, tuple[str, bool]] = field(default_factory=dict)
    """Our decisions the index does not show yet: deployment -> (model, in flight)."""
    reserved: dict[Key, str] = field(default_factory=dict)
    """Slots held for a decision being taken (from `ask` to `settle`): deployment -> model."""
    queue: dict[Key, str] = field(default_factory=dict)
    """Queued deployments -> model, in the order they queued."""

    def bind(self, index: Mapping[str, Iterable[tuple[str, str, str]]]) -> None:
        """kopf hands its indexes to handlers only; it is the same live mapping every time."""
        self.index = index

    @property
    def limited(self) -> bool:
        return self.max_rollouts is not None or self.max_per_model is not None

    def ask(self, namespace: str, name: str, model: str) -> str | None:
        """None when the deployment may start a rollout (a slot is held for it until `settle`); otherwise why
        it waits."""
        if not self.limited:
            return None
        key, flying = (namespace, name), self.in_flight()
        if key in flying:
            return None
        free, per_model = self._room(flying)
        ahead, ahead_of_model = self._ahead(key, free, per_model, namespace, model)
        if ahead >= free:
            return (f"queued: at most {self.max_rollouts} rollouts at once (the operator's --max-rollouts); it starts"
                    " when one ends, first come first served")
        if self.max_per_model is not None and per_model[namespace, model] + ahead_of_model >= self.max_per_model:
            return (f"queued: at most {self.max_per_model} rollouts of model {model} at once (the operator's "
                    "--max-rollouts-per-model); it starts when one of them ends, first come first served")
        self.reserved[key] = model
        return None

    def _room(self, flying: Mapping[Key, str]) -> tuple[float, Counter[tuple[str, str]]]:
        """(slots free under --max-rollouts, rollouts in flight or about to start per (namespace, model))."""
        taken = {**flying, **self.reserved}
        free = math.inf if self.max_rollouts is None else self.max_rollouts - len(taken)
        return free, Counter((ns, m) for (ns, _), m in taken.items())

    def _ahead(self, key: Key, free: float, per_model: Counter[tuple[str, str]], namespace: str,
               model: str) -> tuple[int, int]:
        """(how many queued before `key` may start, how many of them are of its model), counted only until the
        answer is known: under --max-rollouts N at most N entries are read, wherever `key` stands in the queue."""
        model_free = math.inf if self.max_per_model is None else self.max_per_model - per_model[namespace, model]
        ahead = ahead_of_model = 0
        for queued, queued_model in self.queue.items():
            if queued == key or ahead >= free or ahead_of_model >= model_free:
                break
            if self._room_for(per_model, queued[0], queued_model):
                ahead += 1
                ahead_of_model += (queued[0], queued_model) == (namespace, model)
        return ahead, ahead_of_model

    def settle(self, namespace: str, name: str, model: str, status: ModelDeploymentStatus) -> None:
        """The decision of a round (after `ask`, or without it): the slot is kept while the status has a candidate."""
        if not self.limited:
            return
        key = (namespace, name)
        held = key in self.in_flight() or key in self.reserved or key in self.queue
        flying = status.canary_version is not None
        self.reserved.pop(key, None)
        self.decided[key] = (model, flying)
        if status.phase is Phase.Queued:
            self.queue.setdefault(key, model)
        else:
            self.queue.pop(key, None)
        if held and not flying and status.phase is not Phase.Queued:
            self._wake_queued()  # a slot, or a place ahead in the queue, came free

    def forget(self, namespace: str, name: str) -> None:
        """The deployment's loop stopped (deleted, or moved to another shard): its slot is free."""
        key = (namespace, name)
        was_flying = key in self.in_flight()
        self.queue.pop(key, None)
        self.reserved.pop(key, None)
        self.decided[key] = ("", False)
        if was_flying:
            self._wake_queued()

    def in_flight(self) -> dict[Key, str]:
        """Deployments with a rollout in flight -> model: the index, overlaid with our newer decisions."""
        flying = {(ns, name): model for ns, name, model in self.index.get(IN_FLIGHT, ())}
        for key, (model, flies) in list(self.decided.items()):
            if (key in flying) == flies:
                del self.decided[key]  # the index shows it now
            elif flies:
                flying[key] = model
            else:
                flying.pop(key, None)
        return flying

    def _room_for(self, per_model: Counter[tuple[str, str]], namespace: str, model: str) -> bool:
        return self.max_per_model is None or per_model[namespace, model] < self.max_per_model

    def _wake_queued(self) -> None:
        """Wake the queued deployments that may start now, first come first served."""
        free, per_model = self._room(self.in_flight())
        for (namespace, name), model in list(self.queue.items()):
            if free <= 0:
                break
            if self._room_for(per_model, namespace, model):
                per_model[namespace, model] += 1
                free -= 1
                self.wake(namespace, name)
