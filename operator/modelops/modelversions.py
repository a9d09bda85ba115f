"""ModelVersion status (pure): content id, phase, and which deployments serve it in which role."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from .api.modeldeployment import ModelDeploymentStatus
from .api.modelversion import (
    Condition,
    ModelVersionPhase,
    ModelVersionSpec,
    ModelVersionStatus,
    ServedBy,
    ServingRole,
    content_id,
)


def version_status(spec: dict[str, Any], status: dict[str, Any], generation: int | None, now: str) -> dict[str, Any]:
    """The status a ModelVersion should have: what it is (content id) and whether it serves."""
    current = ModelVersionStatus.model_validate(status)
    try:
        parsed = ModelVersionSpec.model_validate(spec)
    except ValidationError as e:
        phase, cid, reason, message = ModelVersionPhase.Invalid, None, "InvalidSpec", str(e)[:1000]
    else:
        phase = ModelVersionPhase.Serving if current.served_by else ModelVersionPhase.Available
        cid, reason, message = content_id(parsed), phase.value, f"content id {content_id(parsed)}"
    ready = "False" if phase is ModelVersionPhase.Invalid else "True"
    old = next((c for c in current.conditions if c.type == "Ready"), None)
    since = old.last_transition_time if old is not None and old.status == ready else now
    new = current.model_copy(update={
        "content_id": cid, "phase": phase, "observed_generation": generation,
        "conditions": [Condition(type="Ready", status=ready, reason=reason, message=message,
                                 last_transition_time=since, observed_generation=generation)],
    })
    return new.to_wire()


def roles(status: ModelDeploymentStatus) -> dict[str, ServingRole]:
    """Version -> the role it plays in one deployment."""
    out = {}
    if status.fallback_version:
        out[status.fallback_version] = ServingRole.fallback
    if status.stable_version:
        out[status.stable_version] = ServingRole.stable
    if status.canary_version:
        out[status.canary_version] = ServingRole.canary
    return out


def served_by(status: dict[str, Any], deployment: str, role: ServingRole | None) -> list[dict[str, Any]]:
    """A ModelVersion's servedBy with this deployment's entry replaced (or removed when role is None)."""
    entries = [e for e in ModelVersionStatus.model_validate(status).served_by if e.deployment != deployment]
    if role is not None:
        entries.append(ServedBy(deployment=deployment, role=role))
    return [e.to_wire() for e in sorted(entries, key=lambda e: e.deployment)]


def served_by_changes(before: ModelDeploymentStatus, after: ModelDeploymentStatus) -> dict[str, ServingRole | None]:
    """Versions whose role in this deployment changed, with their new role (None: no longer serving)."""
    old, new = roles(before), roles(after)
    return {v: new.get(v) for v in old.keys() | new.keys() if old.get(v) != new.get(v)}
