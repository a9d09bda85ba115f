"""Seldon Core v1 SeldonDeployment: one predictor per version, `traffic` weights summing to 100.

Seldon's admission webhook rejects non-shadow predictors whose traffic does not sum to
100, so both weights always change in the same patch. A predictor is named after its
version (v1-2-0) and its readiness is read from `status.deploymentStatus` and `state`.
"""

from __future__ import annotations

import copy
from typing import Any

from ..analysis.promql import TemplateQuery
from ..api.modeldeployment import CheckTemplate
from ..api.modelversion import ModelVersionSpec
from ..kube import Kube, Resource
from ..rollout import TrafficIntent
from .base import APPLIED_WEIGHTS, BackendState, Target, applied_weights, unit_name, weight_drift

SELDON_DEPLOYMENT = Resource("machinelearning.seldon.io", "v1", "seldondeployments", "SeldonDeployment")
# Seldon's prepackaged model servers, by artifact format; artifact.runtime names any other.
IMPLEMENTATIONS = {"sklearn": "SKLEARN_SERVER", "xgboost": "XGBOOST_SERVER", "tensorflow": "TENSORFLOW_SERVER",
                   "mlflow": "MLFLOW_SERVER", "triton": "TRITON_SERVER", "huggingface": "HUGGINGFACE_SERVER"}

_SERIES = 'namespace="{{namespace}}", deployment_name="{{object}}", predictor_name="{{revision}}"'
_METRIC = "seldon_api_executor_server_requests_seconds"


def _quantile(q: float) -> TemplateQuery:
    return TemplateQuery(f"histogram_quantile({q}, sum by (le) (rate({_METRIC}_bucket{{{_SERIES}}}[{{{{window}}}}])))",
                         _SAMPLES)


_SAMPLES = f"sum(increase({_METRIC}_count{{{_SERIES}}}[{{{{window}}}}]))"
TEMPLATES = {
    CheckTemplate.errorRate: TemplateQuery(
        f'(sum(rate({_METRIC}_count{{{_SERIES}, code=~"5.."}}[{{{{window}}}}])) or vector(0))'
        f" / sum(rate({_METRIC}_count{{{_SERIES}}}[{{{{window}}}}]))", _SAMPLES),
    CheckTemplate.latencyP50: _quantile(0.5),
    CheckTemplate.latencyP95: _quantile(0.95),
    CheckTemplate.latencyP99: _quantile(0.99),
    CheckTemplate.meanLatency: TemplateQuery(
        f"sum(rate({_METRIC}_sum{{{_SERIES}}}[{{{{window}}}}])) / sum(rate({_METRIC}_count{{{_SERIES}}}[{{{{window}}}}]))",
        _SAMPLES),
}


def observe(sdep: dict[str, Any] | None, versions: dict[str, ModelVersionSpec]) -> BackendState:
    if sdep is None:
        return BackendState()
    name, status = sdep["metadata"]["name"], sdep.get("status") or {}
    by_unit = {unit_name(v): v for v in versions}
    ready, units, live = set(), {}, {}
    for predictor in sdep["spec"].get("predictors", []):
        version = by_unit.get(predictor["name"])
        live[predictor["name"]] = predictor.get("traffic", 0)
        if version is None:
            continue
        units[version] = predictor["name"]
        deployments = [d for key, d in (status.get("deploymentStatus") or {}).items()
                       if key.startswith(f"{name}-{predictor['name']}-")]
        if deployments and all(d.get("availableReplicas", 0) >= max(1, d.get("replicas", 1)) for d in deployments):
            ready.add(version)
    return BackendState(frozenset(ready), units, weight_drift(sdep, live, "SeldonDeployment predictor traffic"))


def _predictor(version: str, spec: ModelVersionSpec, template: dict[str, Any] | None) -> dict[str, Any]:
    """A predictor for `version`, shaped like the existing one (replicas, componentSpecs...)."""
    predictor = copy.deepcopy(template) if template else {"replicas": 1, "graph": {"name": "model"}}
    predictor["name"] = unit_name(version)
    implementation = spec.artifact.runtime or IMPLEMENTATIONS.get(spec.artifact.format, spec.artifact.format.upper())
    predictor["graph"] = {**predictor.get("graph", {"name": "model"}), "implementation": implementation,
                          "modelUri": spec.artifact.uri}
    return predictor


def desired_predictors(live: list[dict[str, Any]], intent: TrafficIntent,
                       versions: dict[str, ModelVersionSpec]) -> list[dict[str, Any]]:
    existing = {p["name"]: p for p in live}
    template = existing.get(unit_name(intent.stable)) or (live[0] if live else None)
    wanted = [(intent.stable, 100 - intent.candidate_weight if intent.candidate else 100)]
    if intent.candidate is not None:
        wanted.append((intent.candidate, intent.candidate_weight))
    return [{**(existing.get(unit_name(v)) or _predictor(v, versions[v], template)), "traffic": weight}
            for v, weight in wanted]


def patch_for(sdep: dict[str, Any], intent: TrafficIntent, versions: dict[str, ModelVersionSpec]) -> dict[str, Any] | None:
    live = sdep["spec"].get("predictors", [])
    predictors = desired_predictors(live, intent, versions)
    recorded = applied_weights({p["name"]: p["traffic"] for p in predictors})
    if predictors == live and sdep["metadata"].get("annotations", {}).get(APPLIED_WEIGHTS) == recorded:
        return None
    # resourceVersion makes the write conditional: a concurrent edit of the predictors is not overwritten.
    return {"metadata": {"resourceVersion": sdep["metadata"]["resourceVersion"], "annotations": {APPLIED_WEIGHTS: recorded}},
            "spec": {"predictors": predictors}}


class SeldonRouter:
    templates = TEMPLATES

    def __init__(self, kube: Kube):
        self.kube = kube

    def _name(self, target: Target) -> str:
        return target.object_name(target.serving.seldon.name if target.serving.seldon else None)

    object_name = _name

    async def observe(self, target: Target, versions: dict[str, ModelVersionSpec],
                      last: TrafficIntent | None) -> BackendState:
        return observe(await self.kube.get(SELDON_DEPLOYMENT, target.namespace, self._name(target)), versions)

    async def apply(self, target: Target, intent: TrafficIntent, versions: dict[str, ModelVersionSpec],
                    state: BackendState) -> bool:
        name = self._name(target)
        sdep = await self.kube.get(SELDON_DEPLOYMENT, target.namespace, name)
        if sdep is None:
            predictors = desired_predictors([], intent, versions)
            await self.kube.create(SELDON_DEPLOYMENT, target.namespace, {
                "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "modelops"},
                             "annotations": {APPLIED_WEIGHTS: applied_weights({p["name"]: p["traffic"] for p in predictors})}},
                "spec": {"predictors": predictors}})
            return False
        patch = patch_for(sdep, intent, versions)
        if patch is not None:
            await self.kube.patch(SELDON_DEPLOYMENT, target.namespace, name, patch)
        return patch is None
