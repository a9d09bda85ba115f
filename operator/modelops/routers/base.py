"""The router interface, shaped like Flagger's: observe the backend, apply a traffic intent.

Finalizing (leaving only the stable version) is applying the intent "all on stable" with
create=False, so it needs no method of its own.

A router owns one backend object per ModelDeployment. It never decides anything: the
rollout engine decides, the router makes the backend match the decision and reports
what the backend really does (which versions are ready, which weights are live, and
whether someone changed them behind the operator's back).

Taking traffic off a candidate must always be possible, even once ModelVersions are
deleted: a router works from what the backend already has and needs a version's
ModelVersion only to write that version's artifact into a unit that does not carry it
yet. When that ModelVersion is gone it raises VersionUnavailable, never KeyError.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Protocol

from ..analysis.promql import TemplateQuery
from ..api.modeldeployment import CheckTemplate, Serving
from ..api.modelversion import ModelVersionSpec
from ..rollout import TrafficIntent


@dataclass(frozen=True)
class Target:
    """The backend object one ModelDeployment drives."""

    namespace: str
    deployment: str
    """Name of the ModelDeployment."""
    serving: Serving

    def object_name(self, configured: str | None) -> str:
        return configured or self.deployment


@dataclass(frozen=True)
class BackendState:
    ready_versions: frozenset[str] = frozenset()
    units: dict[str, str] = field(default_factory=dict)
    """Version -> the backend's serving unit for it (KServe revision, Seldon predictor, Service): {{revision}}."""
    drift: tuple[str, ...] = ()
    """Out-of-band changes of what the operator had set, in words."""


class Router(Protocol):
    templates: dict[CheckTemplate, TemplateQuery]
    """Built-in checks on this backend's own metrics."""

    def object_name(self, target: Target) -> str:
        """The backend object's name, as metrics label it ({{object}} in queries)."""
        ...

    async def observe(self, target: Target, versions: dict[str, ModelVersionSpec],
                      last: TrafficIntent | None) -> BackendState:
        """What the backend serves now; `last` is the intent applied before, to detect drift."""
        ...

    async def apply(self, target: Target, intent: TrafficIntent, versions: dict[str, ModelVersionSpec],
                    state: BackendState, *, create: bool = True) -> bool:
        """Make the backend carry `intent`; idempotent, so a replay after a crash is harmless.

        `versions` holds only the ModelVersions that still exist: a router works from what the
        backend already has and needs a version's spec only to create a unit for it
        (VersionUnavailable when that spec is gone). `create` is False when finalizing: a
        backend object that is gone stays gone (nothing to do, True).

        True when the backend already carried it and nothing is pending (the caller may rest)."""
        ...


class BackendMisconfigured(Exception):
    """The ModelDeployment's serving section does not fit what is in the cluster (says what to fix)."""


class VersionUnavailable(BackendMisconfigured):
    """The ModelVersion for a version is gone and the backend has no unit serving it.

    Raised only when a router would need that version's artifact to create (or rewrite) a
    unit for it; whatever the backend already serves is used without the ModelVersion."""

    def __init__(self, version: str, needed_for: str):
        self.version = version
        super().__init__(f"the ModelVersion for {version} is gone and the backend has no unit serving it "
                         f"({needed_for} needs its artifact): recreate the ModelVersion or change spec.version")


class BackendNotOwned(BackendMisconfigured):
    """The backend object exists but is not this ModelDeployment's to drive."""


# Names the one ModelDeployment that drives a backend object: set on every object the operator
# creates, and added by hand to hand over an existing one. Two deployments can never drive one object.
OWNER_ANNOTATION = "modelops.io/deployment"


class OwnedObjects:
    """A ModelDeployment's view of backend objects: it reads, writes and deletes only those naming it."""

    def __init__(self, kube: Any):
        self.kube = kube

    async def get(self, resource: Any, target: Target, name: str) -> dict[str, Any] | None:
        obj = await self.kube.get(resource, target.namespace, name)
        if obj is not None:
            owner = annotations_of(obj).get(OWNER_ANNOTATION)
            if owner != target.deployment:
                whose = f"driven by ModelDeployment {owner}" if owner else "not driven by any ModelDeployment"
                raise BackendNotOwned(f"{resource.kind} {name} is {whose}: annotate it {OWNER_ANNOTATION}="
                                      f"{target.deployment} to hand it to this one")
        return obj

    async def create(self, resource: Any, target: Target, body: dict[str, Any]) -> dict[str, Any]:
        meta = body["metadata"]
        owned = {**meta, "annotations": {**(meta.get("annotations") or {}), OWNER_ANNOTATION: target.deployment}}
        return await self.kube.create(resource, target.namespace, {**body, "metadata": owned})

    async def patch(self, resource: Any, target: Target, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """Only after `get` of the same object in the same round has shown it is ours."""
        return await self.kube.patch(resource, target.namespace, name, patch)

    async def delete(self, resource: Any, target: Target, name: str) -> bool:
        """True when there was something to delete."""
        if await self.get(resource, target, name) is None:
            return False
        return await self.kube.delete(resource, target.namespace, name)

    async def list(self, resource: Any, target: Target, label_selector: str) -> list[dict[str, Any]]:
        """Those matching the selector that name this deployment (a label alone proves nothing)."""
        return [o for o in await self.kube.list(resource, target.namespace, label_selector)
                if annotations_of(o).get(OWNER_ANNOTATION) == target.deployment]


def spec_of(versions: dict[str, ModelVersionSpec], version: str, needed_for: str) -> ModelVersionSpec:
    """The spec of a version whose artifact the router must write; VersionUnavailable when it is gone."""
    spec = versions.get(version)
    if spec is None:
        raise VersionUnavailable(version, needed_for)
    return spec


# Where a router records the weights it set, so that anyone else's change shows as drift.
APPLIED_WEIGHTS = "modelops.io/applied-weights"


def unit_name(version: str) -> str:
    """A DNS-label-safe name for a version: 1.2.0-rc.1 -> v1-2-0-rc-1."""
    return "v" + re.sub(r"[^a-z0-9]+", "-", version.lower()).strip("-")


def applied_weights(weights: dict[str, int]) -> str:
    return json.dumps(weights, sort_keys=True, separators=(",", ":"))


def dig(obj: Any, *path: str) -> Any:
    """obj[path[0]][path[1]]..., None when a step is missing, null or not an object.

    Backend objects are read as the API server returns them: optional fields may be absent
    or null (status before the backend's controller wrote it, metadata without annotations)."""
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def objects_at(obj: Any, *path: str) -> list[dict[str, Any]]:
    """The objects in the list at `path` (predictors, rules, conditions...); [] when absent or null."""
    items = dig(obj, *path)
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []


def annotations_of(obj: dict[str, Any]) -> dict[str, str]:
    return dig(obj, "metadata", "annotations") or {}


def replacing(live: Any, new: dict[str, Any], keys: Iterable[str] | None = None) -> dict[str, Any]:
    """`new` as a JSON merge patch over `live` that also removes `keys` (default: all) `live` has and `new` lacks.

    A merge patch keeps every key it does not mention, so a field of the old artifact (a
    runtime, a server) would otherwise survive into the new one."""
    if not isinstance(live, dict):
        return dict(new)
    stale = live.keys() if keys is None else [k for k in keys if k in live]
    return {**{k: None for k in stale if k not in new and live[k] is not None}, **new}


def weight_drift(obj: dict[str, Any], live: dict[str, int], where: str) -> tuple[str, ...]:
    """Drift between the weights the operator recorded on `obj` and the live ones (none when unreadable)."""
    recorded = annotations_of(obj).get(APPLIED_WEIGHTS)
    try:
        if recorded is None or json.loads(recorded) == live:
            return ()
    except ValueError:
        return ()  # not the operator's record: treated as absent, the next write replaces it
    return (f"{where} weights are {applied_weights(live)}, the operator had set {recorded}: "
            "restoring them (pin a weight with spec.trafficOverride instead)",)


def artifact_version(uri: str | None, versions: dict[str, ModelVersionSpec]) -> str | None:
    """Which known version an artifact URI belongs to."""
    for version, spec in versions.items():
        if spec.artifact.uri == uri:
            return version
    return None
