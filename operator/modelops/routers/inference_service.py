"""The InferenceService as both of the kserve router's modes keep it (routers/kserve.py, serverless;
routers/kserve_standard.py, Standard): its resource, the deployment-mode annotation, the predictor's model
as the operator writes it, and the operator's bookkeeping annotations on the object."""

from __future__ import annotations

import json
from typing import Any

from ..api.modelversion import ModelVersionSpec
from ..kube import FieldPath, Resource
from .base import annotations_of, artifact_version, dig

INFERENCE_SERVICE = Resource("serving.kserve.io", "v1beta1", "inferenceservices", "InferenceService")
DEPLOYMENT_MODE = "serving.kserve.io/deploymentMode"
MODE: FieldPath = ("metadata", "annotations", DEPLOYMENT_MODE)
MODEL: FieldPath = ("spec", "predictor", "model")

# What the operator last wrote to canaryTrafficPercent, so that a change by anyone else shows.
APPLIED_PERCENT = "modelops.io/applied-canary-traffic-percent"
# The generation whose revision carries the artifact now in the spec. A status observed at or
# after it names that revision; later generations (weight changes) make no new revision, so
# they must not make the candidate look unready while KServe catches up. Written with every artifact the
# operator writes (1 when it creates the object), and before a weight write where none is recorded yet.
ARTIFACT_GENERATION = "modelops.io/artifact-generation"
# Revision name -> the version whose artifact it serves; version -> the predictor model written for it
# (so that stable can be restored after its ModelVersion is gone). The newest few of each.
REVISION_VERSIONS = "modelops.io/revision-versions"
VERSION_MODELS = "modelops.io/version-models"
KEPT = 8
BOOKKEEPING = (APPLIED_PERCENT, ARTIFACT_GENERATION, REVISION_VERSIONS, VERSION_MODELS)


def integer(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def generation(isvc: dict[str, Any]) -> int:
    return integer(dig(isvc, "metadata", "generation")) or 0


def recorded(isvc: dict[str, Any], annotation: str, kind: type) -> dict[str, Any]:
    """The annotation's JSON object, only its values of type `kind`; empty when absent or unreadable."""
    try:
        found = json.loads(annotations_of(isvc).get(annotation) or "{}")
    except ValueError:
        return {}
    return {k: v for k, v in found.items() if isinstance(v, kind)} if isinstance(found, dict) else {}


def newest(entries: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """`entries` with key -> value added as the newest, keeping the newest KEPT (an annotation's JSON object)."""
    added = {**{k: v for k, v in entries.items() if k != key}, key: value}
    return dict(list(added.items())[-KEPT:])


def artifact_generation(isvc: dict[str, Any]) -> int | None:
    """The recorded generation whose revision carries the artifact in the spec; None when absent, unreadable or
    ahead of the object's generation (no write of the operator's made it)."""
    since = integer(annotations_of(isvc).get(ARTIFACT_GENERATION))
    return since if since is not None and since <= generation(isvc) else None


def model_version(isvc: dict[str, Any], uri: str | None, versions: dict[str, ModelVersionSpec]) -> str | None:
    """The version whose artifact is `uri`: a ModelVersion's, else the newest recorded with that storageUri."""
    written = [v for v, model in recorded(isvc, VERSION_MODELS, dict).items() if model.get("storageUri") == uri]
    return artifact_version(uri, versions) or (written[-1] if written else None)


def predictor_model(version: ModelVersionSpec) -> dict[str, Any]:
    """spec.predictor.model for `version`: the whole of what the operator owns there."""
    model: dict[str, Any] = {"modelFormat": {"name": version.artifact.format}, "storageUri": version.artifact.uri}
    if version.artifact.runtime:
        model["runtime"] = version.artifact.runtime
    return model
