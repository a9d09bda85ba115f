"""ModelVersion: one immutable, fully described version of one model."""

from __future__ import annotations

import hashlib
import json
from enum import Enum

from pydantic import Field

from .base import ApiModel, StatusModel
from .types import Digest, ObjectName, SemVer


class Artifact(ApiModel):
    uri: str = Field(min_length=1)
    """Where the serialized model lives (s3://, gs://, pvc://, file://, ...)."""
    digest: Digest
    """Content digest of the artifact, `sha256:` and 64 hex digits."""
    format: str = Field(min_length=1)
    """Serialization format, e.g. sklearn, xgboost, onnx, pytorch, mlflow."""
    runtime: str | None = None
    """Serving runtime that loads this format, when the backend needs it named."""


class CodeLineage(ApiModel):
    repository: str
    """Source repository of the training code."""
    commit: str
    """Commit of the training code."""
    path: str | None = None
    """Path of the training entry point inside the repository."""


class DataLineage(ApiModel):
    uri: str
    """Where the training data lives."""
    digest: Digest | None = None
    """Content digest of the training data."""
    snapshot: str | None = None
    """Snapshot id of the data (e.g. a lakeFS commit or a DVC revision), when there is no digest."""
    version: str | None = None
    """Human-readable data version."""


class EnvironmentLineage(ApiModel):
    image: str | None = None
    """Training container image, ideally pinned by digest."""
    python: str | None = None
    """Python version used in training."""
    requirements_digest: Digest | None = None
    """Digest of the locked requirements file."""


class ExperimentLineage(ApiModel):
    tracker: str
    """Experiment tracker, e.g. mlflow or wandb."""
    run_id: str
    """Run id in that tracker."""
    uri: str | None = None
    """Link to the run."""


class Lineage(ApiModel):
    code: CodeLineage | None = None
    data: DataLineage | None = None
    parameters: dict[str, str] = Field(default_factory=dict)
    """Hyperparameters, as strings so that no precision is lost."""
    environment: EnvironmentLineage | None = None
    experiment: ExperimentLineage | None = None


class ModelCard(ApiModel):
    uri: str
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
    metrics: dict[str, float] = Field(default_factory=dict)
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


def content_id(spec: ModelVersionSpec) -> str:
    """A stable id of everything that makes this model what it is.

    Computed over canonical JSON of the spec, so key order and defaults do not change it.
    """
    canonical = json.dumps(spec.to_wire(), sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()
