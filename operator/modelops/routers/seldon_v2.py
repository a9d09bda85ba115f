"""Seldon Core v2: a Model per version and an Experiment that splits traffic during a rollout.

Clients call the stable Model by the ModelDeployment's name. A candidate is a second
Model (name-v1-2-0); while it takes traffic, an Experiment with `default` the stable
Model weighs the two (weights are proportional). In a mirror step the Experiment keeps all
traffic on the stable Model (its one candidate, weight 100) and `mirror`s `percent` of it to
the candidate Model, whose answers Seldon discards. Experiments route no header cohort (the
API refuses match steps here). Promotion updates the stable Model to
the candidate's artifact in place, then removes the Experiment and the candidate Model,
as Seldon documents; a rollback removes them and leaves the stable Model untouched.

Which version a Model serves is its `modelops.io/version` annotation: a Model already
annotated with the wanted version is kept as it is, without its ModelVersion; only
creating or updating one needs the version's artifact (VersionUnavailable when it is
gone).

Field ownership (server-side apply, manager `modelops`; see `kube` and `base`). The operator
creates the Models and the Experiment whole, and owns what it wrote: on a Model
metadata.labels `modelops.io/deployment` and `app.kubernetes.io/managed-by`, annotations
`modelops.io/version` and (created by it) `modelops.io/deployment`, spec.storageUri,
spec.requirements (a list without list-type: owned whole) and spec.server when the version
names one; on the Experiment its label, annotations `modelops.io/applied-weights` and the
owner's, spec.default, spec.candidates (atomic: the operator's whole) and spec.mirror. Promotion applies
the new version's Model over the stable one: a server the operator wrote for the old
artifact goes with it; one another manager wrote (a Model handed over) stays theirs.
"""

from __future__ import annotations

from typing import Any

from ..analysis.promql import TemplateQuery, observed
from ..api.modeldeployment import CheckTemplate
from ..api.modelversion import ModelVersionSpec
from ..kube import FieldPath, Kube, Resource, is_applied
from ..rollout import TrafficIntent
from .base import (CONTRACT_TEMPLATES, IDENTITY, SHADOW_AGREEMENT, MANAGED_BY, OwnedObjects, APPLIED_WEIGHTS, BackendState, Target, annotations_of,
                   applied_weights, dig, kept, merged, objects_at, spec_of, unit_name, weight_drift)

MODEL = Resource("mlops.seldon.io", "v1alpha1", "models", "Model")
EXPERIMENT = Resource("mlops.seldon.io", "v1alpha1", "experiments", "Experiment")
VERSION_ANNOTATION = "modelops.io/version"
OWNER_LABEL = "modelops.io/deployment"

_SERIES = 'namespace="{{namespace}}", model="{{revision}}"'
_SAMPLES = observed(f"seldon_model_infer_total{{{_SERIES}}}")
_ERRORS = f'seldon_model_infer_total{{{_SERIES}, code=~"5.."}}'
# Seldon v2 exports no per-model latency histogram: mean latency is what there is.
TEMPLATES = {
    **CONTRACT_TEMPLATES,
    CheckTemplate.errorRate: TemplateQuery(
        f"({observed(_ERRORS)} or vector(0)) / {_SAMPLES}", _SAMPLES),
    CheckTemplate.meanLatency: TemplateQuery(
        f"sum(rate(seldon_model_infer_seconds_total{{{_SERIES}}}[{{{{window}}}}]))"
        f" / sum(rate(seldon_model_infer_total{{{_SERIES}}}[{{{{window}}}}]))", _SAMPLES),
    CheckTemplate.shadowAgreement: SHADOW_AGREEMENT,
}


def _ready(obj: dict[str, Any] | None, condition: str) -> bool:
    if obj is None:
        return False
    if (dig(obj, "status", "observedGeneration") or 0) < (dig(obj, "metadata", "generation") or 0):
        return False
    return any(c.get("type") == condition and c.get("status") == "True" for c in objects_at(obj, "status", "conditions"))


def version_of(model: dict[str, Any] | None) -> str | None:
    """The version a Model serves, as the operator annotated it."""
    return None if model is None else annotations_of(model).get(VERSION_ANNOTATION)


def experiment_weights(experiment: dict[str, Any]) -> dict[str, Any]:
    return {c.get("name"): c.get("weight") for c in objects_at(experiment, "spec", "candidates")}


def _model_body(name: str, deployment: str, version: str, spec: ModelVersionSpec) -> dict[str, Any]:
    """A Model serving `version`: everything the operator writes on one."""
    body: dict[str, Any] = {"storageUri": spec.artifact.uri, "requirements": [spec.artifact.format]}
    if spec.artifact.runtime:
        body["server"] = spec.artifact.runtime
    return {"metadata": {"name": name, "labels": {OWNER_LABEL: deployment, **MANAGED_BY},
                         "annotations": {VERSION_ANNOTATION: version}}, "spec": body}


def update_config(live: dict[str, Any], body: dict[str, Any], absent: tuple[FieldPath, ...] = ()) -> dict[str, Any] | None:
    """The applied configuration putting `body` (a Model or the Experiment, whole) over `live` (pure): with the
    identity the operator owns there kept; None when `live` holds it and none of `absent`."""
    config = merged(kept(live, *IDENTITY), body)
    return None if is_applied(live, config, absent) else config


class SeldonV2Router:
    templates = TEMPLATES

    def __init__(self, kube: Kube):
        self.objects = OwnedObjects(kube)

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
        stable = await self.objects.get(MODEL, target, target.deployment)
        ready, units = set(), {}
        if stable is not None:
            version = version_of(stable)
            if version is not None:
                units[version] = target.deployment
                if _ready(stable, "ModelReady"):
                    ready.add(version)
        drift: tuple[str, ...] = ()
        if last is not None and last.candidate is not None:
            name = self.candidate_model(target, last.candidate)
            units[last.candidate] = name
            if _ready(await self.objects.get(MODEL, target, name), "ModelReady"):
                ready.add(last.candidate)
            experiment = await self.objects.get(EXPERIMENT, target, self.experiment_name(target))
            if experiment is not None:
                drift = weight_drift(experiment, experiment_weights(experiment), "Experiment candidate")
        return BackendState(frozenset(ready), units, drift)

    async def apply(self, target: Target, intent: TrafficIntent, versions: dict[str, ModelVersionSpec],
                    state: BackendState, *, create: bool = True) -> bool:
        stable_name = target.deployment
        changed = await self._ensure_model(target, stable_name, intent.stable, versions, create)
        experiment = self.experiment_name(target)
        if intent.candidate is None:
            changed |= await self.objects.delete(EXPERIMENT, target, experiment)
            for model in await self.objects.list(MODEL, target, f"{OWNER_LABEL}={target.deployment}"):
                if model["metadata"]["name"] != stable_name:
                    changed |= await self.objects.delete(MODEL, target, model["metadata"]["name"])
            return not changed
        candidate = self.candidate_model(target, intent.candidate)
        changed |= await self._ensure_model(target, candidate, intent.candidate, versions, create)
        if intent.candidate_weight == 0 and intent.mirror == 0:
            return not (await self.objects.delete(EXPERIMENT, target, experiment) or changed)
        weights = {stable_name: 100 - intent.candidate_weight}
        if intent.candidate_weight:
            weights[candidate] = intent.candidate_weight
        body = {"metadata": {"name": experiment, "labels": {OWNER_LABEL: target.deployment},
                             "annotations": {APPLIED_WEIGHTS: applied_weights(weights)}},
                "spec": {"default": stable_name,
                         "candidates": [{"name": n, "weight": w} for n, w in weights.items()]}}
        if intent.mirror:
            body["spec"]["mirror"] = {"name": candidate, "percent": intent.mirror}
        live = await self.objects.get(EXPERIMENT, target, experiment)
        if live is None:
            if not create:
                return not changed
            await self.objects.create(EXPERIMENT, target, body)
            return False
        config = update_config(live, body, () if intent.mirror else (("spec", "mirror"),))
        if config is None:
            return not changed
        await self.objects.apply(EXPERIMENT, target, experiment, config)
        return False

    async def _ensure_model(self, target: Target, name: str, version: str, versions: dict[str, ModelVersionSpec],
                            create: bool) -> bool:
        """True when it had to create or update the Model; a Model already serving `version` needs no ModelVersion."""
        live = await self.objects.get(MODEL, target, name)
        if live is None and not create:
            return False
        if live is not None and version_of(live) == version:
            return False
        spec = spec_of(versions, version, f"Model {name}")
        body = _model_body(name, target.deployment, version, spec)
        if live is None:
            await self.objects.create(MODEL, target, body)
            return True
        config = update_config(live, body)  # promotion: updated in place
        if config is None:
            return False
        await self.objects.apply(MODEL, target, name, config)
        return True
