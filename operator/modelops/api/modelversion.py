"""ModelVersion: one immutable, fully described version of one model."""

from __future__ import annotations

import hashlib
import json
from enum import Enum

from pydantic import Field

from .base import ApiModel, StatusModel
from .types import Digest, ObjectName, SemVer, Text, Label, Uri


class Artifact(ApiModel):
    uri: Text(2048, min_length=1)
    """Where the serialized model lives (s3://, gs://, pvc://, file://, ...)."""
    digest: Digest
    """Content digest of the artifact, `sha256:` and 64 hex digits."""
    format: Text(63, min_length=1)
    """Serialization format, e.g. sklearn, xgboost, onnx, pytorch, mlflow."""
    runtime: Text(253) | None = None
    """Serving runtime that loads this format, when the backend needs it named."""


class CodeLineage(ApiModel):
    repository: Uri
    """Source repository of the training code."""
    commit: Label
    """Commit of the training code."""
    path: Text(1024) | None = None
    """Path of the training entry point inside the repository."""


class DataLineage(ApiModel):
    uri: Uri
    """Where the training data lives."""
    digest: Digest | None = None
    """Content digest of the training data."""
    snapshot: Label | None = None
    """Snapshot id of the data (e.g. a lakeFS commit or a DVC revision), when there is no digest."""
    version: Label | None = None
    """Human-readable data version."""


class EnvironmentLineage(ApiModel):
    image: Text(1024) | None = None
    """Training container image, ideally pinned by digest."""
    python: Text(64) | None = None
    """Python version used in training."""
    requirements_digest: Digest | None = None
    """Digest of the locked requirements file."""


class ExperimentLineage(ApiModel):
    tracker: Text(64)
    """Experiment tracker, e.g. mlflow or wandb."""
    run_id: Label
    """Run id in that tracker."""
    uri: Uri | None = None
    """Link to the run."""


class Lineage(ApiModel):
    code: CodeLineage | None = None
    data: DataLineage | None = None
    parameters: dict[Text(253), Text(4096)] = Field(default_factory=dict, max_length=256)
    """Hyperparameters, as strings so that no precision is lost."""
    environment: EnvironmentLineage | None = None
    experiment: ExperimentLineage | None = None


class ModelCard(ApiModel):
    uri: Uri
    """Where the model card lives."""
    digest: Digest | None = None
    """Content digest of the model card."""


class ModelVersionSpec(ApiModel):
    model: ObjectName
    """Name of the model this is a version of; ModelDeployments refer to it."""
    version: SemVer
    """Semantic version of this model version."""
    artifact: Artifact
    lineage: Lineage = Field(default_factory=Lineage)
    metrics: dict[Text(253), float] = Field(default_factory=dict, max_length=256)
    """Offline validation results, e.g. accuracy: 0.93."""
    model_card: ModelCard | None = None


class ModelVersionPhase(str, Enum):
    Pending = "Pending"
    Available = "Available"
    Serving = "Serving"
    Invalid = "Invalid"


class ServingRole(str, Enum):
    stable = "stable"
    canary = "canary"
    fallback = "fallback"


class ServedBy(StatusModel):
    deployment: str
    """Name of the ModelDeployment (same namespace)."""
    role: ServingRole


class Condition(StatusModel):
    type: str
    status: str = Field(json_schema_extra={"enum": ["True", "False", "Unknown"]})
    reason: str
    message: str = ""
    last_transition_time: str
    """RFC 3339 time of the last change of status."""
    observed_generation: int | None = None


class ModelVersionStatus(StatusModel):
    content_id: str | None = None
    """Stable hash of the spec: two versions with the same content id are the same model."""
    phase: ModelVersionPhase | None = None
    served_by: list[ServedBy] = Field(default_factory=list)
    conditions: list[Condition] = Field(default_factory=list)
    observed_generation: int | None = None
    first_seen_resource_version: str | None = None
    """metadata.resourceVersion when the operator first saw this ModelVersion (its creation's, unless it changed
    before): after creationTimestamp, which has whole seconds only, it orders the claims of one (model, version)."""


def content_id(spec: ModelVersionSpec) -> str:
    """A stable id of everything that makes this model what it is.

    Computed over canonical JSON of the spec, so key order and defaults do not change it.
    """
    canonical = json.dumps(spec.to_wire(), sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()
