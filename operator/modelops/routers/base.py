"""The router interface, shaped like Flagger's: observe the backend, apply a traffic intent.

Finalizing (leaving only the stable version) is applying the intent "all on stable", so
it needs no method of its own.

A router owns one backend object per ModelDeployment. It never decides anything: the
rollout engine decides, the router makes the backend match the decision and reports
what the backend really does (which versions are ready, which weights are live, and
whether someone changed them behind the operator's back).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Protocol

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
                    state: BackendState) -> bool:
        """Make the backend carry `intent`; idempotent, so a replay after a crash is harmless.

        True when the backend already carried it and nothing is pending (the caller may rest)."""
        ...


class BackendMisconfigured(Exception):
    """The ModelDeployment's serving section does not fit what is in the cluster (says what to fix)."""


# Where a router records the weights it set, so that anyone else's change shows as drift.
APPLIED_WEIGHTS = "modelops.io/applied-weights"


def unit_name(version: str) -> str:
    """A DNS-label-safe name for a version: 1.2.0-rc.1 -> v1-2-0-rc-1."""
    return "v" + re.sub(r"[^a-z0-9]+", "-", version.lower()).strip("-")


def applied_weights(weights: dict[str, int]) -> str:
    return json.dumps(weights, sort_keys=True, separators=(",", ":"))


def weight_drift(obj: dict[str, Any], live: dict[str, int], where: str) -> tuple[str, ...]:
    """Drift between the weights the operator recorded on `obj` and the live ones."""
    recorded = obj["metadata"].get("annotations", {}).get(APPLIED_WEIGHTS)
    if recorded is None or json.loads(recorded) == live:
        return ()
    return (f"{where} weights are {applied_weights(live)}, the operator had set {recorded}: "
            "restoring them (pin a weight with spec.trafficOverride instead)",)


def artifact_version(uri: str | None, versions: dict[str, ModelVersionSpec]) -> str | None:
    """Which known version an artifact URI belongs to."""
    for version, spec in versions.items():
        if spec.artifact.uri == uri:
            return version
    return None
