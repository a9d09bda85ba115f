"""At most N rollouts in flight at once (`--max-rollouts`), and at most M per model (`--max-rollouts-per-model`,
a model being `spec.model` in one namespace): the other deployments whose spec.version moved wait, Queued, first
come first served.

A rollout is in flight while the status has a candidate (Progressing, Paused, RollingBack). The operator knows that
from two sources: kopf's index of its ModelDeployments, complete before any deployment's loop starts (so a
restarted operator counts the rollouts already in flight), and its own decisions, which the index shows only once
the watch delivers the status written. Until it does, the decision is what counts.

A deployment that would start a rollout asks for a slot before deciding (the slot is its own from then on, so two
loops can never take the last one together); its decision then keeps the slot or gives it back. A queued one may
start when fewer of the deployments queued before it can start than slots are free. A rollout's end wakes the
queued deployments at once; the order of the queue is lost on a restart.
"""

from __future__ import annotations

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
        taken = {**flying, **self.reserved}
        queued = list(self.queue)
        before = [k for k in queued[:queued.index(key) if key in self.queue else len(queued)]
                  if self._room_for(taken, k[0], self.queue[k])]
        if self.max_rollouts is not None and len(taken) + len(before) >= self.max_rollouts:
            return (f"queued: {len(taken)} rollouts in flight, at most {self.max_rollouts} at once (the operator's "
                    f"--max-rollouts); {len(before)} queued before it")
        same = [k for k in before if k[0] == namespace and self.queue[k] == model]
        if not self._room_for(taken, namespace, model, len(same)):
            return (f"queued: {self._of_model(taken, namespace, model)} rollouts of model {model} in flight, at most "
                    f"{self.max_per_model} at once (the operator's --max-rollouts-per-model); {len(same)} queued before it")
        self.reserved[key] = model
        return None

    def settle(self, namespace: str, name: str, model: str, status: ModelDeploymentStatus) -> None:
        """The decision of a round (after `ask`, or without it): the slot is kept while the status has a candidate."""
        if not self.limited:
            return
        key = (namespace, name)
        was_flying = key in self.in_flight()
        flying = status.canary_version is not None
        self.reserved.pop(key, None)
        self.decided[key] = (model, flying)
        if status.phase is Phase.Queued:
            self.queue.setdefault(key, model)
        else:
            self.queue.pop(key, None)
        if was_flying and not flying:
            self._wake_queued()

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

    def _of_model(self, taken: Mapping[Key, str], namespace: str, model: str) -> int:
        return sum(1 for (ns, _), m in taken.items() if ns == namespace and m == model)

    def _room_for(self, taken: Mapping[Key, str], namespace: str, model: str, queued_before: int = 0) -> bool:
        if self.max_per_model is None:
            return True
        return self._of_model(taken, namespace, model) + queued_before < self.max_per_model

    def _wake_queued(self) -> None:
        for namespace, name in list(self.queue):
            self.wake(namespace, name)
