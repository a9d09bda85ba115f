"""Seldon Core v2: a Model per version and an Experiment that splits traffic during a rollout.

Clients call the stable Model by the ModelDeployment's name. A candidate is a second
Model (name-v1-2-0); while it takes traffic, an Experiment with `default` the stable
Model weighs the two (weights are proportional). Promotion updates the stable Model to
the candidate's artifact in place, then removes the Experiment and the candidate Model,
as Seldon documents; a rollback removes them and leaves the stable Model untouched.
"""

from __future__ import annotations

from typing import Any

from ..analysis.promql import TemplateQuery
from ..api.modeldeployment import CheckTemplate
from ..api.modelversion import ModelVersionSpec
from ..kube import Kube, Resource
from ..rollout import TrafficIntent
from .base import APPLIED_WEIGHTS, BackendState, Target, applied_weights, unit_name, weight_drift

MODEL = Resource("mlops.seldon.io", "v1alpha1", "models", "Model")
EXPERIMENT = Resource("mlops.seldon.io", "v1alpha1", "experiments", "Experiment")
VERSION_ANNOTATION = "modelops.io/version"
OWNER_LABEL = "modelops.io/deployment"

_SERIES = 'namespace="{{namespace}}", model="{{revision}}"'
_SAMPLES = f"sum(increase(seldon_model_infer_total{{{_SERIES}}}[{{{{window}}}}]))"
# Seldon v2 exports no per-model latency histogram: mean latency is what there is.
TEMPLATES = {
    CheckTemplate.errorRate: TemplateQuery(
        f'(sum(rate(seldon_model_infer_total{{{_SERIES}, code=~"5.."}}[{{{{window}}}}])) or vector(0))'
        f" / sum(rate(seldon_model_infer_total{{{_SERIES}}}[{{{{window}}}}]))", _SAMPLES),
    CheckTemplate.meanLatency: TemplateQuery(
        f"sum(rate(seldon_model_infer_seconds_total{{{_SERIES}}}[{{{{window}}}}]))"
        f" / sum(rate(seldon_model_infer_total{{{_SERIES}}}[{{{{window}}}}]))", _SAMPLES),
}


def _ready(obj: dict[str, Any] | None, condition: str) -> bool:
    if obj is None:
        return False
    status = obj.get("status") or {}
    if status.get("observedGeneration", 0) < obj["metadata"].get("generation", 0):
        return False
    return any(c.get("type") == condition and c.get("status") == "True" for c in status.get("conditions") or [])


def _model_body(name: str, deployment: str, version: str, spec: ModelVersionSpec) -> dict[str, Any]:
    body: dict[str, Any] = {"storageUri": spec.artifact.uri, "requirements": [spec.artifact.format]}
    if spec.artifact.runtime:
        body["server"] = spec.artifact.runtime
    return {"metadata": {"name": name, "labels": {OWNER_LABEL: deployment, "app.kubernetes.io/managed-by": "modelops"},
                         "annotations": {VERSION_ANNOTATION: version}}, "spec": body}


class SeldonV2Router:
    templates = TEMPLATES

    def __init__(self, kube: Kube):
        self.kube = kube

    @staticmethod
    def experiment_name(target: Target) -> str:
        configured = target.serving.seldon_v2.experiment if target.serving.seldon_v2 else None
        return configured or f"{target.deployment}-rollout"

    @staticmethod
    def candidate_model(target: Target, version: str) -> str:
        return f"{target.deployment}-{unit_name(version)}"

    def object_name(self, target: Target) -> str:
        return target.deployment

    async def observe(self, target: Target, versions: dict[str, ModelVersionSpec],
                      last: TrafficIntent | None) -> BackendState:
        ns = target.namespace
        stable = await self.kube.get(MODEL, ns, target.deployment)
        ready, units = set(), {}
        if stable is not None:
            version = stable["metadata"].get("annotations", {}).get(VERSION_ANNOTATION)
            if version is not None:
                units[version] = target.deployment
                if _ready(stable, "ModelReady"):
                    ready.add(version)
        drift: tuple[str, ...] = ()
        if last is not None and last.candidate is not None:
            name = self.candidate_model(target, last.candidate)
            units[last.candidate] = name
            if _ready(await self.kube.get(MODEL, ns, name), "ModelReady"):
                ready.add(last.candidate)
            experiment = await self.kube.get(EXPERIMENT, ns, self.experiment_name(target))
            if experiment is not None:
                live = {c["name"]: c["weight"] for c in experiment["spec"].get("candidates", [])}
                drift = weight_drift(experiment, live, "Experiment candidate")
        return BackendState(frozenset(ready), units, drift)

    async def apply(self, target: Target, intent: TrafficIntent, versions: dict[str, ModelVersionSpec],
                    state: BackendState) -> bool:
        ns, stable_name = target.namespace, target.deployment
        changed = await self._ensure_model(target, stable_name, intent.stable, versions)
        experiment = self.experiment_name(target)
        if intent.candidate is None:
            changed |= await self.kube.delete(EXPERIMENT, ns, experiment)
            for model in await self.kube.list(MODEL, ns, f"{OWNER_LABEL}={target.deployment}"):
                if model["metadata"]["name"] != stable_name:
                    changed |= await self.kube.delete(MODEL, ns, model["metadata"]["name"])
            return not changed
        candidate = self.candidate_model(target, intent.candidate)
        changed |= await self._ensure_model(target, candidate, intent.candidate, versions)
        if intent.candidate_weight == 0:
            return not (await self.kube.delete(EXPERIMENT, ns, experiment) or changed)
        weights = {stable_name: 100 - intent.candidate_weight, candidate: intent.candidate_weight}
        body = {"metadata": {"name": experiment, "labels": {OWNER_LABEL: target.deployment},
                             "annotations": {APPLIED_WEIGHTS: applied_weights(weights)}},
                "spec": {"default": stable_name,
                         "candidates": [{"name": n, "weight": w} for n, w in weights.items()]}}
        live = await self.kube.get(EXPERIMENT, ns, experiment)
        if live is None:
            await self.kube.create(EXPERIMENT, ns, body)
        elif live["spec"].get("candidates") != body["spec"]["candidates"] or \
                live["metadata"].get("annotations", {}).get(APPLIED_WEIGHTS) != applied_weights(weights):
            await self.kube.patch(EXPERIMENT, ns, experiment, body)
        else:
            return not changed
        return False

    async def _ensure_model(self, target: Target, name: str, version: str, versions: dict[str, ModelVersionSpec]) -> bool:
        """True when it had to create or update the Model."""
        body = _model_body(name, target.deployment, version, versions[version])
        live = await self.kube.get(MODEL, target.namespace, name)
        if live is None:
            await self.kube.create(MODEL, target.namespace, body)
        elif live["metadata"].get("annotations", {}).get(VERSION_ANNOTATION) != version:
            await self.kube.patch(MODEL, target.namespace, name, body)  # promotion: updated in place
        else:
            return False
        return True
