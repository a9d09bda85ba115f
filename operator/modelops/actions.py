"""The manual actions on a ModelDeployment, as data (pure): what each one writes into spec, and when
it has something to act on.

One source for every client that acts: the `kubectl modelops` plugin sends `spec_patch(...)` as a
JSON merge patch, and `modelops argocd` generates Argo CD's Lua actions from the same patch and
the same `enabled_when` conditions (see `argocd.py`), so a promote from Argo CD and one from
kubectl change the spec alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .api.modeldeployment import Action, Phase
from .rollout.values import ACTIVE

Path = tuple[str, ...]


# ---- conditions on the object (all of an action's must hold for it to be enabled) -----------

@dataclass(frozen=True)
class Present:
    """The field is set (not missing, not null)."""

    path: Path


@dataclass(frozen=True)
class Equals:
    """The field equals a value."""

    path: Path
    value: Any


@dataclass(frozen=True)
class OneOf:
    """The field equals one of some values."""

    path: Path
    values: tuple[Any, ...]


@dataclass(frozen=True)
class SameAs:
    """The field is set and equals another field."""

    path: Path
    other: Path


@dataclass(frozen=True)
class Not:
    condition: Present | Equals | OneOf | SameAs


Condition = Present | Equals | OneOf | SameAs | Not


def lookup(obj: Any, path: Path) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def holds(condition: Condition, obj: dict[str, Any]) -> bool:
    if isinstance(condition, Not):
        return not holds(condition.condition, obj)
    value = lookup(obj, condition.path)
    if isinstance(condition, Present):
        return value is not None
    if isinstance(condition, Equals):
        return value == condition.value
    if isinstance(condition, OneOf):
        return value in condition.values
    return value is not None and value == lookup(obj, condition.other)


# ---- the actions ---------------------------------------------------------------------------

# The operator acts on a Promote or an Abort only while a candidate is in flight (engine.ACTIVE).
IN_FLIGHT: tuple[Condition, ...] = (Present(("status", "canaryVersion")),
                                    OneOf(("status", "phase"), tuple(p.value for p in ACTIVE)))
PAUSED: Condition = Equals(("spec", "paused"), True)


@dataclass(frozen=True)
class Definition:
    name: str
    """The command: `kubectl modelops NAME`, Argo CD's action NAME."""
    title: str
    """A short title (Argo CD shows it as the action's name)."""
    help: str
    request: Action | None = None
    """A one-shot `spec.request` with this action, an id, a reason and the actor."""
    sets: dict[str, Any] | None = None
    """Otherwise: spec fields written as they are (None removes one)."""
    takes_version: bool = False
    """The request names a version (Rollback: empty means the fallback version)."""
    takes_weight: bool = False
    """A pinned weight (`spec.trafficOverride`) with a reason."""
    enabled_when: tuple[Condition, ...] = ()
    """When the action has something to act on (the operator ignores it otherwise)."""

    @property
    def takes_reason(self) -> bool:
        return self.request is not None or self.takes_weight


DEFINITIONS: dict[str, Definition] = {d.name: d for d in [
    Definition("promote", "Promote candidate", "promote the candidate now", request=Action.Promote,
               enabled_when=IN_FLIGHT),
    Definition("abort", "Abort rollout", "send all traffic back to stable now", request=Action.Abort,
               enabled_when=IN_FLIGHT),
    Definition("rollback", "Roll back", "make a retained previous version stable", request=Action.Rollback,
               takes_version=True, enabled_when=(Present(("status", "fallbackVersion")),)),
    Definition("retry", "Retry version", "roll out a rolled-back spec.version again", request=Action.Retry,
               enabled_when=(Equals(("status", "phase"), Phase.RolledBack.value),
                             SameAs(("status", "failedVersion"), ("spec", "version")))),
    Definition("drill", "Rollback drill", "rehearse a rollback: all traffic to the fallback version for a moment, "
               "then back to stable, timed (status.lastDrill)", request=Action.Drill,
               enabled_when=(Equals(("status", "phase"), Phase.Stable.value), Present(("status", "fallbackVersion")),
                             SameAs(("spec", "version"), ("status", "stableVersion")),
                             Not(Present(("spec", "trafficOverride"))), Not(PAUSED))),
    Definition("pause", "Pause rollout", "stop advancing steps (automatic rollback stays armed)",
               sets={"paused": True}, enabled_when=(Not(PAUSED),)),
    Definition("resume", "Resume rollout", "advance again", sets={"paused": False}, enabled_when=(PAUSED,)),
    Definition("pin", "Pin weight", "pin the candidate's weight (steps and automatic rollback stop)",
               takes_weight=True, enabled_when=IN_FLIGHT),
    Definition("unpin", "Unpin weight", "remove a pinned weight", sets={"trafficOverride": None},
               enabled_when=(Present(("spec", "trafficOverride")),)),
]}


def spec_patch(name: str, *, request_id: Any = None, actor: Any = None, reason: Any = None, version: Any = None,
               weight: Any = None) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) of the object that the action `name` stands for.

    A request replaces every field of a previous one that it names: a Rollback always names its
    version (None: the fallback version), so that a version left by an earlier request never
    applies to it. The values are taken as given (the Lua generator passes placeholders).
    """
    d = DEFINITIONS[name]
    if d.request is not None:
        request = {"id": request_id, "action": d.request.value, "reason": reason, "actor": actor}
        if d.takes_version:
            request["version"] = version
        return {"spec": {"request": request}}
    if d.takes_weight:
        return {"spec": {"trafficOverride": {"weight": weight, "reason": reason}}}
    assert d.sets is not None
    return {"spec": dict(d.sets)}


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: `patch` applied to `target` (neither is changed)."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def enabled(name: str, obj: dict[str, Any]) -> bool:
    return all(holds(c, obj) for c in DEFINITIONS[name].enabled_when)
