"""The router interface, shaped like Flagger's: observe the backend, apply a traffic intent, finalize.

A router owns one backend object per ModelDeployment. It never decides anything: the
rollout engine decides, the router makes the backend match the decision and reports
what the backend really does (which versions are ready, which weights are live, and
whether someone changed them behind the operator's back).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

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

    async def observe(self, target: Target, versions: dict[str, ModelVersionSpec],
                      last: TrafficIntent | None) -> BackendState:
        """What the backend serves now; `last` is the intent applied before, to detect drift."""
        ...

    async def apply(self, target: Target, intent: TrafficIntent, versions: dict[str, ModelVersionSpec],
                    state: BackendState) -> None:
        """Make the backend carry `intent`; idempotent, so a replay after a crash is harmless."""
        ...

    async def finalize(self, target: Target, stable: str, versions: dict[str, ModelVersionSpec]) -> None:
        """Leave the backend serving only `stable` (the ModelDeployment is being deleted)."""
        ...


def artifact_version(uri: str | None, versions: dict[str, ModelVersionSpec]) -> str | None:
    """Which known version an artifact URI belongs to."""
    for version, spec in versions.items():
        if spec.artifact.uri == uri:
            return version
    return None
