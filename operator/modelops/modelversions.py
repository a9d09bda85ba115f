"""ModelVersion status (pure): content id, phase, and which deployments serve it in which role."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Iterable, Mapping

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
from .kube import merge_patch


DUPLICATE = "DuplicateVersion"


@dataclass(frozen=True)
class VersionRecord:
    """What the operator keeps of one ModelVersion object (in kopf's index)."""

    name: str
    created: str
    """metadata.creationTimestamp: the first to claim a (model, version) keeps it (see `claim_order`)."""
    spec: dict[str, Any]
    duplicate: bool = False
    """Its status says it was refused as a DuplicateVersion; it stays refused."""
    status_json: str = "{}"
    """Its status as the watch showed it (without kopf's part), as JSON: it is read only when a role changes, and
    10,000 of them are kept (a served version's is 0.5 KB as JSON, 2.2 KB parsed)."""
    generation: int | None = None
    resource_version: str | None = None
    first_seen: str = ""
    """The resourceVersion at which the operator first saw it: status.firstSeenResourceVersion, else (not written
    yet, so this is the first sight) metadata.resourceVersion."""

    @cached_property
    def parsed(self) -> ModelVersionSpec | None:
        """Its spec parsed (None: invalid), at its first use. kopf's index makes a new record at each event of the
        object and drops it on deletion, so a deployment's rounds parse each version once per resourceVersion, and
        only versions of models a deployment uses are kept parsed (examples/' fraud 1.0.0: 5 KB, its record 2 KB)."""
        try:
            return ModelVersionSpec.model_validate(self.spec)
        except ValidationError:
            return None  # reported on the ModelVersion itself

    @property
    def status(self) -> dict[str, Any]:
        return json.loads(self.status_json)

    @property
    def claim_order(self) -> tuple[str, int, str, str]:
        """Earlier claims sort first: by creationTimestamp, then, within its second, by the resourceVersion
        first seen (etcd's revision: decimal digits without leading zeros, so shorter is smaller), then by name
        (an API server whose resourceVersions are not that)."""
        return self.created, len(self.first_seen), self.first_seen, self.name


def record_of(obj: Mapping[str, Any]) -> VersionRecord:
    """What the operator keeps of a ModelVersion object."""
    meta = obj.get("metadata") or {}
    status = {k: v for k, v in (obj.get("status") or {}).items() if k != "kopf"}
    refused = any(c.get("type") == "Ready" and c.get("reason") == DUPLICATE for c in status.get("conditions") or [])
    return VersionRecord(meta.get("name") or "", meta.get("creationTimestamp") or "", dict(obj.get("spec") or {}),
                         refused, json.dumps(status, separators=(",", ":")), meta.get("generation"),
                         meta.get("resourceVersion"),
                         status.get("firstSeenResourceVersion") or meta.get("resourceVersion") or "")


@dataclass(frozen=True)
class Catalog:
    """The versions of one model that may serve: one valid ModelVersion per version."""

    specs: dict[str, ModelVersionSpec] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)
    """Version -> the name of the ModelVersion that holds it."""


def catalog(records: Iterable[VersionRecord]) -> Catalog:
    """The earliest claim wins (`claim_order`); invalid specs and refused duplicates never serve."""
    specs: dict[str, ModelVersionSpec] = {}
    names: dict[str, str] = {}
    for record in sorted(records, key=lambda r: r.claim_order):
        parsed = record.parsed
        if parsed is None or parsed.version in names or record.duplicate:
            continue
        specs[parsed.version], names[parsed.version] = parsed, record.name
    return Catalog(specs, names)


def holder_of(records: Iterable[VersionRecord], record: VersionRecord) -> str | None:
    """The name of an earlier ModelVersion holding `record`'s (model, version), if any."""
    version = record.spec.get("version")
    earlier = [r for r in records if r.name != record.name and r.spec.get("version") == version
               and not r.duplicate and r.claim_order < record.claim_order]
    return min(earlier, key=lambda r: r.claim_order).name if earlier else None


def version_status(spec: dict[str, Any], status: dict[str, Any], generation: int | None, now: str,
                   duplicate_of: str | None = None, first_seen: str | None = None) -> dict[str, Any]:
    """The status a ModelVersion should have: what it is (content id) and whether it serves, and the
    resourceVersion it was first seen at (`first_seen`, kept once written).

    A ModelVersion claiming a (model, version) that an earlier one holds is Invalid, for good:
    versions are immutable, so it never serves, even after the earlier one is deleted.
    """
    current = ModelVersionStatus.model_validate(status)
    refused = next((c for c in current.conditions if c.type == "Ready" and c.reason == DUPLICATE), None)
    try:
        parsed = ModelVersionSpec.model_validate(spec)
    except ValidationError as e:
        phase, cid, reason, message = ModelVersionPhase.Invalid, None, "InvalidSpec", str(e)[:1000]
    else:
        if refused is not None or duplicate_of is not None:
            message = refused.message if refused is not None else (
                f"version {parsed.version} of model {parsed.model} is already held by ModelVersion {duplicate_of}; "
                "a version is immutable: publish this artifact as a new version")
            phase, cid, reason = ModelVersionPhase.Invalid, content_id(parsed), DUPLICATE
        else:
            phase = ModelVersionPhase.Serving if current.served_by else ModelVersionPhase.Available
            cid, reason, message = content_id(parsed), phase.value, f"content id {content_id(parsed)}"
    ready = "False" if phase is ModelVersionPhase.Invalid else "True"
    old = next((c for c in current.conditions if c.type == "Ready"), None)
    since = old.last_transition_time if old is not None and old.status == ready else now
    new = current.model_copy(update={
        "content_id": cid, "phase": phase, "observed_generation": generation,
        "first_seen_resource_version": current.first_seen_resource_version or first_seen or None,
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


def serving_patch(record: VersionRecord, records: Iterable[VersionRecord], deployment: str, role: ServingRole | None,
                  now: str) -> dict[str, Any] | None:
    """The status patch giving `deployment` its new role in a ModelVersion's servedBy, with the phase and Ready
    condition that follow from it (so the ModelVersion handler has nothing left to write), conditional on the
    resourceVersion `record` was read at; None when the status already says so."""
    status = record.status
    entries = served_by(status, deployment, role)
    new = version_status(record.spec, {**status, "servedBy": entries}, record.generation, now,
                         duplicate_of=holder_of(records, record), first_seen=record.first_seen)
    patch = merge_patch(status, {**status, **new})
    if patch is None:
        return None
    return {"status": patch} if record.resource_version is None else \
        {"metadata": {"resourceVersion": record.resource_version}, "status": patch}


def served_by_changes(before: ModelDeploymentStatus, after: ModelDeploymentStatus) -> dict[str, ServingRole | None]:
    """Versions whose role in this deployment changed, with their new role (None: no longer serving)."""
    old, new = roles(before), roles(after)
    return {v: new.get(v) for v in old.keys() | new.keys() if old.get(v) != new.get(v)}
