"""Seldon Core v1 SeldonDeployment: one predictor per version, `traffic` weights summing to 100.

Seldon's admission webhook rejects non-shadow predictors whose traffic does not sum to
100, so both weights always change in the same patch. A predictor is named after its
version (v1-2-0; `base.unit_name`) and found by that name alone (or by the name operators before the
unit name's digest gave it, when no other version reads alike: `base.units_by_name`, so an upgrade keeps the
predictors it finds serving): reusing an existing predictor needs no ModelVersion, only creating a missing one
does (VersionUnavailable when it is gone).

A mirror step makes the candidate's predictor a shadow (`shadow: true`, traffic 0): Seldon
copies every request to a shadow predictor and discards its answers (through Istio's mirror
or Ambassador's shadow), so mirror: 100 is all it can carry; it routes no header cohort
(the API refuses other steps). Any other step writes the predictor without `shadow`.

Readiness is read from `status.deploymentStatus`, keyed by Deployment name. Seldon names
a predictor's Deployments `<sdep>-<predictor>-<componentSpecs index>-<container names>`
(unless a componentSpec names its own, or the name exceeds 63 characters and is hashed:
such Deployments are not attributed, and the predictor does not show ready). A key
belongs to a predictor when what follows `<sdep>-<predictor>-` is a decimal index and `-`,
and to the longest such predictor, since v1-0-0's keys also start with `<sdep>-v1-`.

Field ownership (server-side apply, manager `modelops`; see `kube` and `base`). Seldon's CRD
declares no x-kubernetes-list-type on `spec.predictors`, so the list is atomic: whoever applies
it owns all of it, each predictor's every field included. The operator drives the predictor
set and its weights, so it owns `spec.predictors` whole, with `metadata.annotations`
`modelops.io/applied-weights` (and, on an object it created, the owner annotation and the
`app.kubernetes.io/managed-by` label). It builds the list from the predictors it read
(replicas, componentSpecs... as they are), and the apply carries that read's resourceVersion
as a precondition: a concurrent edit of the predictors is a 409 and the next round starts
from it, never overwritten. For GitOps this means: once the operator drives a
SeldonDeployment, its predictors are the operator's (Argo CD's managedFieldsManagers leaves
them alone); shape them (replicas, resources) before handing it over, or with an edit.
"""

from __future__ import annotations

import copy
import re
from typing import Any, Iterable

from ..analysis.promql import TemplateQuery, observed
from ..api.modeldeployment import CheckTemplate
from ..api.modelversion import ModelVersionSpec
from ..kube import Kube, Resource, is_applied
from ..rollout import TrafficIntent
from .base import (CONTRACT_TEMPLATES, IDENTITY, SHADOW_AGREEMENT, MANAGED_BY, OwnedObjects, APPLIED_WEIGHTS, BackendState, Target, applied_weights, kept,
                   merged, dig, objects_at, spec_of, unit_name, units_by_name, weight_drift)

SELDON_DEPLOYMENT = Resource("machinelearning.seldon.io", "v1", "seldondeployments", "SeldonDeployment")
# Seldon's prepackaged model servers, by artifact format; artifact.runtime names any other.
IMPLEMENTATIONS = {"sklearn": "SKLEARN_SERVER", "xgboost": "XGBOOST_SERVER", "tensorflow": "TENSORFLOW_SERVER",
                   "mlflow": "MLFLOW_SERVER", "triton": "TRITON_SERVER", "huggingface": "HUGGINGFACE_SERVER"}

_SERIES = 'namespace="{{namespace}}", deployment_name="{{object}}", predictor_name="{{revision}}"'
_METRIC = "seldon_api_executor_server_requests_seconds"


def _quantile(q: float) -> TemplateQuery:
    return TemplateQuery(f"histogram_quantile({q}, sum by (le) (rate({_METRIC}_bucket{{{_SERIES}}}[{{{{window}}}}])))",
                         _SAMPLES, _BUCKETS)


_REQUESTS = f"{_METRIC}_count{{{_SERIES}}}"
_ERRORS = f'{_METRIC}_count{{{_SERIES}, code=~"5.."}}'
_SAMPLES = observed(_REQUESTS)
_BUCKETS = observed(f"{_METRIC}_bucket{{{_SERIES}}}", "le")
# Seldon's Feedback API counts each feedback and adds up its reward, per predictor: with a reward of 1 for a right
# prediction and 0 for a wrong one (the documented convention here), reward per feedback is accuracy. It counts a
# feedback when it is sent: only a sender that sends each at the prediction's grading age (holding earlier labels,
# dropping later ones) keeps arrival order from biasing it, as the contract's counters do (see base.ACCURACY).
_FEEDBACK = f"seldon_api_model_feedback_total{{{_SERIES}}}"
_REWARD = f"seldon_api_model_feedback_reward_total{{{_SERIES}}}"
TEMPLATES = {
    **CONTRACT_TEMPLATES,
    CheckTemplate.accuracy: TemplateQuery(
        f"({observed(_REWARD)} or vector(0)) / {observed(_FEEDBACK)}", observed(_FEEDBACK)),
    CheckTemplate.errorRate: TemplateQuery(f"({observed(_ERRORS)} or vector(0)) / {_SAMPLES}", _SAMPLES),
    CheckTemplate.latencyP50: _quantile(0.5),
    CheckTemplate.latencyP95: _quantile(0.95),
    CheckTemplate.latencyP99: _quantile(0.99),
    CheckTemplate.meanLatency: TemplateQuery(
        f"sum(rate({_METRIC}_sum{{{_SERIES}}}[{{{{window}}}}])) / sum(rate({_METRIC}_count{{{_SERIES}}}[{{{{window}}}}]))",
        _SAMPLES, _BUCKETS),
    CheckTemplate.shadowAgreement: SHADOW_AGREEMENT,
}


_INDEX = re.compile(r"[0-9]+-")


def _predictors(sdep: dict[str, Any]) -> list[dict[str, Any]]:
    """spec.predictors, without entries that are not named objects; [] when absent."""
    return [p for p in objects_at(sdep, "spec", "predictors") if p.get("name")]


def _owner(key: str, sdep_name: str, predictors: list[str]) -> str | None:
    """The predictor whose Deployment `key` is: `<sdep>-<predictor>-<index>-...`, the longest predictor name."""
    owners = [p for p in predictors if key.startswith(f"{sdep_name}-{p}-")
              and _INDEX.match(key, len(sdep_name) + len(p) + 2)]
    return max(owners, key=len, default=None)


def _available(deployment: Any) -> bool:
    if not isinstance(deployment, dict):
        return False
    return (deployment.get("availableReplicas") or 0) >= max(1, deployment.get("replicas") or 1)


def observe(sdep: dict[str, Any] | None, versions: Iterable[str]) -> BackendState:
    """Readiness and drift (pure); `versions` are the names that may have predictors, ModelVersions or not."""
    if sdep is None:
        return BackendState()
    name = dig(sdep, "metadata", "name") or ""
    predictors = _predictors(sdep)
    live = {p["name"]: p.get("traffic") or 0 for p in predictors}
    deployments: dict[str, list[Any]] = {p: [] for p in live}
    for key, deployment in (dig(sdep, "status", "deploymentStatus") or {}).items():
        owner = _owner(key, name, list(live))
        if owner is not None:
            deployments[owner].append(deployment)
    by_unit = units_by_name(versions)
    ready, units = set(), {}
    for predictor, mine in deployments.items():
        version = by_unit.get(predictor)
        if version is None:
            continue
        units[version] = predictor
        if mine and all(_available(d) for d in mine):
            ready.add(version)
    return BackendState(frozenset(ready), units, weight_drift(sdep, live, "SeldonDeployment predictor traffic"))


def _predictor(version: str, spec: ModelVersionSpec, template: dict[str, Any] | None) -> dict[str, Any]:
    """A predictor for `version`, shaped like the existing one (replicas, componentSpecs...)."""
    predictor = copy.deepcopy(template) if template else {"replicas": 1, "graph": {"name": "model"}}
    predictor["name"] = unit_name(version)
    implementation = spec.artifact.runtime or IMPLEMENTATIONS.get(spec.artifact.format, spec.artifact.format.upper())
    predictor["graph"] = {**(predictor.get("graph") or {"name": "model"}), "implementation": implementation,
                          "modelUri": spec.artifact.uri}
    return predictor


def desired_predictors(live: list[dict[str, Any]], intent: TrafficIntent,
                       versions: dict[str, ModelVersionSpec]) -> list[dict[str, Any]]:
    """The predictors carrying `intent`: existing ones reused by name, a missing one made from its ModelVersion."""
    wanted = [(intent.stable, 100 - intent.candidate_weight if intent.candidate else 100)]
    if intent.candidate is not None:
        wanted.append((intent.candidate, intent.candidate_weight))
    existing: dict[str, dict[str, Any]] = {}
    names = units_by_name({*versions, *(version for version, _ in wanted)})
    for predictor in live:
        version = names.get(predictor["name"])
        if version is not None and (version not in existing or predictor["name"] == unit_name(version)):
            existing[version] = predictor
    template = existing.get(intent.stable) or (live[0] if live else None)
    predictors = []
    for version, weight in wanted:
        predictor = existing.get(version)
        if predictor is None:
            predictor = _predictor(version, spec_of(versions, version, f"SeldonDeployment predictor {unit_name(version)}"),
                                   template)
        predictor = {**{k: v for k, v in predictor.items() if k != "shadow"}, "traffic": weight}
        if version == intent.candidate and intent.mirror:
            predictor["shadow"] = True
        predictors.append(predictor)
    return predictors


def config_for(sdep: dict[str, Any], intent: TrafficIntent, versions: dict[str, ModelVersionSpec]) -> dict[str, Any] | None:
    """The operator's complete applied configuration carrying `intent` (pure); None when the object holds it."""
    predictors = desired_predictors(_predictors(sdep), intent, versions)
    recorded = applied_weights({p["name"]: p["traffic"] for p in predictors})
    config = merged(kept(sdep, *IDENTITY), {"metadata": {"annotations": {APPLIED_WEIGHTS: recorded}},
                                            "spec": {"predictors": predictors}})
    if is_applied(sdep, config):
        return None
    # resourceVersion makes the write conditional: a concurrent edit of the predictors is not overwritten.
    config["metadata"]["resourceVersion"] = sdep["metadata"]["resourceVersion"]
    return config


class SeldonRouter:
    templates = TEMPLATES

    def __init__(self, kube: Kube):
        self.objects = OwnedObjects(kube)

    def _name(self, target: Target) -> str:
        return target.object_name(target.serving.seldon.name if target.serving.seldon else None)

    object_name = _name

    async def observe(self, target: Target, versions: dict[str, ModelVersionSpec],
                      last: TrafficIntent | None) -> BackendState:
        # The versions last applied may have lost their ModelVersions; their predictors still serve.
        known = set(versions) | ({v for v in (last.stable, last.candidate) if v is not None} if last else set())
        return observe(await self.objects.get(SELDON_DEPLOYMENT, target, self._name(target)), known)

    async def apply(self, target: Target, intent: TrafficIntent, versions: dict[str, ModelVersionSpec],
                    state: BackendState, *, create: bool = True) -> bool:
        name = self._name(target)
        sdep = await self.objects.get(SELDON_DEPLOYMENT, target, name)
        if sdep is None:
            if not create:
                return True
            predictors = desired_predictors([], intent, versions)
            await self.objects.create(SELDON_DEPLOYMENT, target, {
                "metadata": {"name": name, "labels": dict(MANAGED_BY),
                             "annotations": {APPLIED_WEIGHTS: applied_weights({p["name"]: p["traffic"] for p in predictors})}},
                "spec": {"predictors": predictors}})
            return False
        config = config_for(sdep, intent, versions)
        if config is not None:
            await self.objects.apply(SELDON_DEPLOYMENT, target, name, config)
        return config is None
