"""CustomResourceDefinitions generated from the pydantic models: one source of truth.

pydantic emits JSON Schema 2020-12; Kubernetes wants a *structural* OpenAPI v3.0 subset.
The conversion inlines $refs, turns Optional[X] into an optional X, drops titles and
null defaults, and adds the CEL rules that a per-field schema cannot say.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from pydantic import BaseModel

from .. import GROUP, VERSION
from .modeldeployment import (
    CHECK_DRIFT_TEST_RULE,
    CHECK_LIMIT_RULE,
    CHECK_MIN_MAX_RULE,
    CHECK_NAMES_UNIQUE_RULE,
    CHECK_SAMPLES_RULE,
    CHECK_SEQUENTIAL_LATENCY_LIMIT_RULE,
    CHECK_SEQUENTIAL_LIMIT_RULE,
    CHECK_SEQUENTIAL_SOURCE_RULE,
    CHECK_SOURCE_RULE,
    GATEWAY_NEEDS_ROUTE_RULE,
    HEADER_NAMES_ONCE_RULE,
    KSERVE_FULL_OVERRIDE_RULE,
    KEEP_WARM_RULE,
    KSERVE_FULL_WEIGHT_RULE,
    ONE_PROVIDER_RULE,
    SEQUENTIAL_LATENCY_RULE,
    STEP_KIND_RULE,
    STEPS_INCREASING_RULE,
    STEPS_SUPPORTED_RULE,
    TEMPLATES_SUPPORTED_RULE,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
)
from .metricprovider import ClusterMetricProviderSpec, ClusterMetricProviderStatus
from .notifier import (
    HEADER_NOT_RESERVED_RULE,
    ONE_URL_RULE,
    ClusterNotifierSpec,
    ClusterNotifierStatus,
)
from .modelversion import ModelVersionSpec, ModelVersionStatus

SPEC_IMMUTABLE_RULE = {"rule": "self == oldSelf", "message": "spec is immutable: publish a new ModelVersion instead"}


def structural(schema: dict[str, Any]) -> dict[str, Any]:
    """pydantic's JSON schema → a structural OpenAPI v3 schema Kubernetes accepts."""
    defs = schema.get("$defs", {})

    def convert(node: dict[str, Any]) -> dict[str, Any]:
        if "$ref" in node:
            # A field description sits beside the $ref and wins over the class docstring.
            target = convert(defs[node["$ref"].rsplit("/", 1)[1]])
            if "description" in node:
                target["description"] = node["description"]
            if "default" in node:
                target["default"] = node["default"]
            return target
        node = dict(node)
        if "anyOf" in node:
            options = [o for o in node.pop("anyOf") if o.get("type") != "null"]
            if len(options) != 1:
                raise ValueError(f"only Optional[X] unions are structural, got {options}")
            merged = convert(options[0])
            merged.update({k: v for k, v in node.items() if k not in ("title",)})
            node = merged
        out: dict[str, Any] = {}
        _map_keys_as_cel(node, out, convert)
        for key, value in node.items():
            if key in ("title", "$defs", "examples", "patternProperties", "propertyNames"):
                continue
            if key == "default" and value is None:
                continue
            if key == "additionalProperties" and value is False:
                continue  # unknown fields are pruned; structural schemas forbid it beside properties
            if key == "properties":
                out[key] = {name: convert(sub) for name, sub in value.items()}
            elif key in ("items", "additionalProperties") and isinstance(value, dict):
                out[key] = convert(value)
            elif key == "const":
                out["enum"] = [value]
            else:
                out[key] = copy.deepcopy(value)
        if "enum" in out and "type" not in out:
            out["type"] = "string"
        return out

    return convert(schema)


def _map_keys_as_cel(node: dict[str, Any], out: dict[str, Any], convert: Any) -> None:
    """Constrained map keys: structural schemas have no patternProperties or propertyNames, so the
    values' schema becomes additionalProperties and the keys' constraints become CEL rules."""
    rules = out.setdefault("x-kubernetes-validations", [])
    for pattern, values in node.get("patternProperties", {}).items():
        out["additionalProperties"] = convert(values)
        rules.append({"rule": f"self.all(k, k.matches({json.dumps(pattern)}))",
                      "message": f"every key must match {pattern}"})
    keys = node.get("propertyNames", {})
    if "maxLength" in keys:
        longest = keys["maxLength"]
        rules.append({"rule": f"self.all(k, size(k) <= {longest})", "message": f"keys are at most {longest} characters"})
    for rule in keys.get("x-kubernetes-validations", []):  # a key's own rule, said of every key
        said_of_k = re.sub(r"\bself\b", "k", rule["rule"])
        rules.append({**rule, "rule": f"self.all(k, {said_of_k})"})
    if not rules:
        del out["x-kubernetes-validations"]


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    return structural(model.model_json_schema(by_alias=True, mode="validation"))


def _add_rule(schema: dict[str, Any], path: list[str], rule: dict[str, str]) -> None:
    node = schema
    for part in path:
        node = node["items"] if part == "[]" else node["properties"][part]
    node.setdefault("x-kubernetes-validations", []).append(rule)


KOPF_STATUS_FIELD = {
    "type": "object",
    "x-kubernetes-preserve-unknown-fields": True,
    "description": "The operator framework's handler progress, kept in status so that spec and annotations stay "
    "exactly as GitOps wrote them.",
}


def _crd(kind: str, plural: str, short: str, spec: dict, status: dict, columns: list[dict],
         scope: str = "Namespaced", categories: tuple[str, ...] = ("modelops",)) -> dict[str, Any]:
    status["properties"]["kopf"] = KOPF_STATUS_FIELD
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": scope,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": [short],
                **({"categories": list(categories)} if categories else {}),
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": status,
                            },
                        }
                    },
                }
            ],
        },
    }


def _column(name: str, path: str, type_: str = "string", **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, "jsonPath": path, **extra}


AGE_COLUMN = _column("Age", ".metadata.creationTimestamp", "date")


def model_version_crd() -> dict[str, Any]:
    spec = _schema(ModelVersionSpec)
    spec.setdefault("x-kubernetes-validations", []).append(SPEC_IMMUTABLE_RULE)
    return _crd(
        "ModelVersion",
        "modelversions",
        "mv",
        spec,
        _schema(ModelVersionStatus),
        [
            _column("Model", ".spec.model"),
            _column("Version", ".spec.version"),
            _column("Digest", ".spec.artifact.digest", priority=0),
            _column("Phase", ".status.phase"),
            AGE_COLUMN,
        ],
    )


def model_deployment_crd() -> dict[str, Any]:
    spec = _schema(ModelDeploymentSpec)
    _add_rule(spec, ["serving"], GATEWAY_NEEDS_ROUTE_RULE)
    _add_rule(spec, ["strategy", "steps"], STEPS_INCREASING_RULE)
    _add_rule(spec, ["strategy", "steps", "[]"], STEP_KIND_RULE)
    _add_rule(spec, ["strategy", "steps", "[]", "match", "headers"], HEADER_NAMES_ONCE_RULE)
    _add_rule(spec, ["analysis", "checks", "[]"], CHECK_SOURCE_RULE)
    _add_rule(spec, ["analysis", "checks", "[]"], CHECK_LIMIT_RULE)
    _add_rule(spec, ["analysis", "checks", "[]"], CHECK_DRIFT_TEST_RULE)
    _add_rule(spec, ["analysis", "checks", "[]"], CHECK_MIN_MAX_RULE)
    _add_rule(spec, ["analysis", "checks", "[]"], CHECK_SAMPLES_RULE)
    _add_rule(spec, ["analysis", "checks", "[]"], CHECK_SEQUENTIAL_LIMIT_RULE)
    _add_rule(spec, ["analysis", "checks", "[]"], CHECK_SEQUENTIAL_SOURCE_RULE)
    _add_rule(spec, ["analysis", "checks", "[]"], CHECK_SEQUENTIAL_LATENCY_LIMIT_RULE)
    _add_rule(spec, ["analysis", "checks"], CHECK_NAMES_UNIQUE_RULE)
    _add_rule(spec, ["analysis"], ONE_PROVIDER_RULE)
    spec.setdefault("x-kubernetes-validations", []).extend([TEMPLATES_SUPPORTED_RULE, STEPS_SUPPORTED_RULE, SEQUENTIAL_LATENCY_RULE,
                                                            KSERVE_FULL_WEIGHT_RULE, KSERVE_FULL_OVERRIDE_RULE,
                                                            KEEP_WARM_RULE])
    return _crd(
        "ModelDeployment",
        "modeldeployments",
        "mdep",
        spec,
        _schema(ModelDeploymentStatus),
        [
            _column("Model", ".spec.model"),
            _column("Stable", ".status.stableVersion"),
            _column("Canary", ".status.canaryVersion"),
            _column("Weight", ".status.canaryWeight", "integer"),
            _column("Phase", ".status.phase"),
            _column("Message", ".status.message", priority=1),
            _column("Drill", ".status.lastDrill.secondsToFallback", "number", priority=1,
                    description="Seconds the last rollback drill took to put all traffic on the fallback"),
            AGE_COLUMN,
        ],
    )


def cluster_metric_provider_crd() -> dict[str, Any]:
    return _crd(
        "ClusterMetricProvider",
        "clustermetricproviders",
        "cmp",
        _schema(ClusterMetricProviderSpec),
        _schema(ClusterMetricProviderStatus),
        [_column("Address", ".spec.prometheus.address"), AGE_COLUMN],
        scope="Cluster",
        categories=(),  # an administrator's object: `kubectl get modelops` lists what tenants own
    )


def cluster_notifier_crd() -> dict[str, Any]:
    spec = _schema(ClusterNotifierSpec)
    _add_rule(spec, ["webhook"], ONE_URL_RULE)
    _add_rule(spec, ["webhook", "secretHeader"], HEADER_NOT_RESERVED_RULE)
    return _crd(
        "ClusterNotifier",
        "clusternotifiers",
        "cnotif",
        spec,
        _schema(ClusterNotifierStatus),
        [_column("Format", ".spec.webhook.format"), AGE_COLUMN],
        scope="Cluster",
        categories=(),  # an administrator's object, like ClusterMetricProvider
    )


def all_crds() -> dict[str, dict[str, Any]]:
    """File name → CRD, as written under crds/."""
    return {
        "modelops.io_clustermetricproviders.yaml": cluster_metric_provider_crd(),
        "modelops.io_clusternotifiers.yaml": cluster_notifier_crd(),
        "modelops.io_modelversions.yaml": model_version_crd(),
        "modelops.io_modeldeployments.yaml": model_deployment_crd(),
    }
