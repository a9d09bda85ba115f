"""KServe InferenceService (serverless mode): the canary is `spec.predictor.canaryTrafficPercent`.

Serverless mode only. KServe applies canaryTrafficPercent through Knative revisions; in its
Standard mode (formerly RawDeployment) or ModelMesh it ignores the field and a predictor change
replaces the model for every request at once. KServe facts (v0.20.0): the mode is
`status.deploymentMode` once its controller recorded it, else the annotation
`serving.kserve.io/deploymentMode`, else the cluster default `defaultDeploymentMode` of the
`inferenceservice-config` ConfigMap (pkg/controller/v1beta1/inferenceservice/utils/utils.go,
GetDeploymentMode; the controller writes the status on every reconcile, controller.go updateStatus).
Values: Knative and its older name Serverless, Standard and its older name RawDeployment,
ModelMesh (pkg/constants/constants.go, DeploymentModeType). KServe's defaulting webhook writes the
annotation on every InferenceService admitted without one when the cluster default is Standard or
ModelMesh (pkg/apis/serving/v1beta1/inference_service_defaults.go), so an object with neither the
annotation nor a recorded mode was admitted under a Knative default: it is driven. Any other mode
is refused (BackendMisconfigured) before any write; KServe refuses changing the mode of an
InferenceService whose status recorded one (inference_service_validation.go,
validateDeploymentMode), so the fix is a new object in serverless mode. The operator creates its
InferenceServices with the annotation set to Serverless (the name every KServe version knows;
v0.20's webhook rewrites it to Knative), whatever the cluster default.

KServe facts this module relies on: changing the predictor (storageUri, format, runtime)
makes a new revision that gets canaryTrafficPercent percent, while the last fully rolled
out revision keeps the rest (tagged `prev`); removing the field sends everything to the
latest revision; 0 sends everything back to the rolled-out one. Status lives under
`status.components.predictor` (latestCreatedRevision, latestReadyRevision,
latestRolledoutRevision, traffic[]); status, and any of those, may be absent or null.

KServe marks a revision rolled out once it took 100 % (canaryTrafficPercent unset, or a
100 % step), and only the rolled-out revision takes what the canary leaves. So which version
each revision serves is recorded on the object (`modelops.io/revision-versions`), learned
when the latest revision is ready for the artifact in the spec, and readiness follows it:
a candidate is ready when the latest revision (its artifact's) is; any other version only
when it is the rolled-out revision, the one KServe falls back to. A rollout therefore never
starts while the rolled-out revision is not stable's (after a 100 % step it is the
candidate's until stable's restored revision took over). The latest revision, ready and given
traffic, serves even before KServe marks it rolled out (a promotion's first seconds): stable's
Ready condition counts that, no decision does. The predictor model written for
each version is recorded too (`modelops.io/version-models`): a rollback whose stable
ModelVersion is gone restores stable's artifact from it, or sets canaryTrafficPercent to 0
when the rolled-out revision is stable's; with neither it raises VersionUnavailable.

Field ownership (server-side apply, manager `modelops`; see `kube` and `base`). The operator
owns on the InferenceService exactly:

- metadata.annotations: its bookkeeping (`modelops.io/applied-canary-traffic-percent`,
  `artifact-generation`, `revision-versions`, `version-models`) and, on an object it created,
  `modelops.io/deployment` and `serving.kserve.io/deploymentMode`; metadata.labels `app.kubernetes.io/managed-by` when it created it;
- spec.predictor.model.modelFormat.name, .storageUri and .runtime (when the ModelVersion names
  one), once it wrote an artifact there (it creates the object with stable's);
- spec.predictor.canaryTrafficPercent while it is set.

Every apply carries, as a precondition, the resourceVersion of the read it was computed from (the
round's observe, `BackendState.read`): a write by anyone since (a user, a second operator briefly
driving the same object while a deployment moves between shards) makes it a 409, which
`reconcile.apply_intent` reads again, never a blind overwrite.

"All traffic to the latest revision" is the field left out of the apply, which removes it.
Where another manager holds it too (a GitOps tool that applied the same value, an edit), an
apply cannot remove it: the router then removes it with a merge patch conditional on the
resourceVersion its apply produced. A new artifact removes a `runtime` the operator wrote
for the previous one; a runtime or `modelFormat.version` another manager wrote stays theirs.
KServe facts relied on for this: `canaryTrafficPercent`, `model` and its keys have no
list-type or map-type markers in the CRD (objects are per key), and only a predictor change
other than canaryTrafficPercent makes a new revision (labels and annotations do not).
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from ..analysis.promql import TemplateQuery, observed
from ..api.modeldeployment import CheckTemplate
from ..api.modelversion import ModelVersionSpec
from ..kube import FieldPath, Kube, Resource, is_applied
from ..rollout import TrafficIntent
from .base import (CONTRACT_TEMPLATES, IDENTITY, MANAGED_BY, OwnedObjects, BackendMisconfigured, BackendState, Target,
                   VersionUnavailable, annotations_of, artifact_version, dig, kept, merged, spec_of)

INFERENCE_SERVICE = Resource("serving.kserve.io", "v1beta1", "inferenceservices", "InferenceService")

# Knative >= 1.19 (OpenTelemetry names) and older (OpenCensus names, latencies in ms): a query
# takes whichever the cluster exports.
_NEW = 'k8s_namespace_name="{{namespace}}", kn_revision_name="{{revision}}"'
_OLD = 'namespace_name="{{namespace}}", revision_name="{{revision}}"'


def _either(new: str, old: str) -> str:
    return f"({new}) or ({old})"


def _quantile(q: float) -> TemplateQuery:
    return TemplateQuery(_either(
        f"histogram_quantile({q}, sum by (le) (rate(kn_serving_invocation_duration_seconds_bucket{{{_NEW}}}[{{{{window}}}}])))",
        f"histogram_quantile({q}, sum by (le) (rate(revision_app_request_latencies_bucket{{{_OLD}}}[{{{{window}}}}]))) / 1000",
    ), _SAMPLES, _BUCKETS)


# Buckets in either unit: a comparison of two versions' histograms does not care which.
_REQUESTS_NEW = f"kn_serving_invocation_duration_seconds_count{{{_NEW}}}"
_ERRORS_NEW = f'kn_serving_invocation_duration_seconds_count{{{_NEW}, http_response_status_code=~"5.."}}'
_REQUESTS_OLD = f"revision_app_request_count{{{_OLD}}}"
_ERRORS_OLD = f'revision_app_request_count{{{_OLD}, response_code_class="5xx"}}'
_BUCKETS = _either(observed(f"kn_serving_invocation_duration_seconds_bucket{{{_NEW}}}", "le"),
                   observed(f"revision_app_request_latencies_bucket{{{_OLD}}}", "le"))
_SAMPLES = _either(observed(_REQUESTS_NEW), observed(_REQUESTS_OLD))

TEMPLATES = {
    **CONTRACT_TEMPLATES,
    # A revision with traffic but no 5xx has no 5xx series: count that as zero errors, not as no data.
    CheckTemplate.errorRate: TemplateQuery(_either(
        f"({observed(_ERRORS_NEW)} or vector(0)) / {observed(_REQUESTS_NEW)}",
        f"({observed(_ERRORS_OLD)} or vector(0)) / {observed(_REQUESTS_OLD)}",
    ), _SAMPLES),
    CheckTemplate.latencyP50: _quantile(0.5),
    CheckTemplate.latencyP95: _quantile(0.95),
    CheckTemplate.latencyP99: _quantile(0.99),
    CheckTemplate.meanLatency: TemplateQuery(_either(
        f"sum(rate(kn_serving_invocation_duration_seconds_sum{{{_NEW}}}[{{{{window}}}}]))"
        f" / sum(rate(kn_serving_invocation_duration_seconds_count{{{_NEW}}}[{{{{window}}}}]))",
        f"sum(rate(revision_app_request_latencies_sum{{{_OLD}}}[{{{{window}}}}]))"
        f" / sum(rate(revision_app_request_latencies_count{{{_OLD}}}[{{{{window}}}}])) / 1000",
    ), _SAMPLES, _BUCKETS),
}


DEPLOYMENT_MODE = "serving.kserve.io/deploymentMode"
SERVERLESS_MODES = frozenset({"Knative", "Serverless"})
MODE: FieldPath = ("metadata", "annotations", DEPLOYMENT_MODE)


def deployment_mode(isvc: dict[str, Any]) -> tuple[str, str] | None:
    """(KServe's deployment mode of the InferenceService, where it is read from), in KServe's order; None when
    neither the status nor the annotation names one."""
    recorded = dig(isvc, "status", "deploymentMode")
    if isinstance(recorded, str) and recorded:
        return recorded, "status.deploymentMode"
    annotated = annotations_of(isvc).get(DEPLOYMENT_MODE)
    return (annotated, f"annotation {DEPLOYMENT_MODE}") if annotated else None


def require_serverless(isvc: dict[str, Any]) -> None:
    """BackendMisconfigured unless KServe runs the InferenceService in serverless (Knative) mode (pure)."""
    mode = deployment_mode(isvc)
    if mode is not None and mode[0] not in SERVERLESS_MODES:
        raise BackendMisconfigured(
            f"InferenceService {dig(isvc, 'metadata', 'name')} runs in KServe's {mode[0]} deployment mode "
            f"({mode[1]}), where KServe ignores spec.predictor.canaryTrafficPercent and a new model would take every "
            f"request at once: only serverless mode is supported. KServe does not change the mode of an existing "
            f"InferenceService: delete it (the operator then creates it in serverless mode) or recreate it with the "
            f"annotation {DEPLOYMENT_MODE}: Serverless")


def _predictor(isvc: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    return dig(isvc, "spec", "predictor") or {}, dig(isvc, "status", "components", "predictor") or {}


def _integer(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


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
CANARY_PERCENT: FieldPath = ("spec", "predictor", "canaryTrafficPercent")
MODEL: FieldPath = ("spec", "predictor", "model")


def _recorded(isvc: dict[str, Any], annotation: str, kind: type) -> dict[str, Any]:
    try:
        recorded = json.loads(annotations_of(isvc).get(annotation) or "{}")
    except ValueError:
        return {}
    return {k: v for k, v in recorded.items() if isinstance(v, kind)} if isinstance(recorded, dict) else {}


def _revisions(isvc: dict[str, Any]) -> dict[str, str]:
    return _recorded(isvc, REVISION_VERSIONS, str)


def _with(recorded: dict[str, Any], key: str, value: Any) -> str:
    """The annotation value with key -> value added as the newest, keeping the newest KEPT."""
    entries = {**{k: v for k, v in recorded.items() if k != key}, key: value}
    return json.dumps(dict(list(entries.items())[-KEPT:]))


def _artifact_generation(isvc: dict[str, Any]) -> int | None:
    """The recorded generation whose revision carries the artifact in the spec; None when absent, unreadable or
    ahead of the object's generation (no write of the operator's made it)."""
    since = _integer(annotations_of(isvc).get(ARTIFACT_GENERATION))
    return since if since is not None and since <= _generation(isvc) else None


def _latest(isvc: dict[str, Any], versions: dict[str, ModelVersionSpec]) -> tuple[str | None, str | None, bool]:
    """(latest revision, the version of the artifact in the spec, whether that revision is ready and serves it)."""
    spec, status = _predictor(isvc)
    latest = status.get("latestCreatedRevision")
    # An artifact generation that is absent or unreadable: trust only a status of the current generation.
    since = _artifact_generation(isvc)
    since = _generation(isvc) if since is None else since
    current = bool(latest) and (_integer(dig(isvc, "status", "observedGeneration")) or 0) >= since
    uri = dig(spec, "model", "storageUri")
    recorded = [v for v, model in _recorded(isvc, VERSION_MODELS, dict).items() if model.get("storageUri") == uri]
    in_spec = artifact_version(uri, versions) or (recorded[-1] if recorded else None) or \
        (_revisions(isvc).get(latest) if current else None)
    return latest, in_spec, current and in_spec is not None and status.get("latestReadyRevision") == latest


def _percent_text(percent: int | None) -> str:
    return "unset" if percent is None else str(percent)


def _generation(isvc: dict[str, Any]) -> int:
    return _integer(dig(isvc, "metadata", "generation")) or 0


def observe(isvc: dict[str, Any] | None, versions: dict[str, ModelVersionSpec], last: TrafficIntent | None) -> BackendState:
    """Readiness and drift, from the InferenceService alone (pure)."""
    if isvc is None:
        return BackendState()
    require_serverless(isvc)
    spec, status = _predictor(isvc)
    latest, in_spec, latest_ready = _latest(isvc, versions)
    ready: set[str] = set()
    units: dict[str, str] = {}
    rolled_out = status.get("latestRolledoutRevision")
    rolled_version = in_spec if rolled_out and rolled_out == latest and latest_ready else _revisions(isvc).get(rolled_out)
    if rolled_version is not None:
        ready.add(rolled_version)
        units[rolled_version] = rolled_out
    serving: frozenset[str] = frozenset()
    if latest_ready and in_spec is not None:
        units.setdefault(in_spec, latest)
        if last is not None and in_spec == last.candidate:
            ready.add(in_spec)
        percent = spec.get("canaryTrafficPercent")
        if in_spec not in ready and (percent is None or (_integer(percent) or 0) > 0):
            serving = frozenset({in_spec})  # e.g. promoted: all traffic on it before KServe marks it rolled out
    drift = []
    applied = annotations_of(isvc).get(APPLIED_PERCENT)
    live = _percent_text(spec.get("canaryTrafficPercent"))
    if applied is not None and live != applied:
        drift.append(f"spec.predictor.canaryTrafficPercent is {live}, the operator had set {applied}: "
                     "restoring it (pin a weight with spec.trafficOverride instead)")
    return BackendState(frozenset(ready), units, tuple(drift), serving)


def _model(version: ModelVersionSpec) -> dict[str, Any]:
    """spec.predictor.model for `version`: the whole of what the operator owns there."""
    model: dict[str, Any] = {"modelFormat": {"name": version.artifact.format}, "storageUri": version.artifact.uri}
    if version.artifact.runtime:
        model["runtime"] = version.artifact.runtime
    return model


def config_for(isvc: dict[str, Any], intent: TrafficIntent, versions: dict[str, ModelVersionSpec],
               state: BackendState) -> dict[str, Any] | None:
    """The operator's complete applied configuration that moves the InferenceService toward `intent` (pure);
    None when the object already holds it, owned by the operator.

    VersionUnavailable when it would have to write the artifact of a version whose ModelVersion is gone;
    BackendMisconfigured when KServe does not run it in serverless mode."""
    require_serverless(isvc)
    spec, status = _predictor(isvc)
    wanted = intent.candidate or intent.stable
    model: dict[str, Any] | None = None
    live_annotations = annotations_of(isvc)
    annotations = {k: live_annotations[k] for k in BOOKKEEPING if isinstance(live_annotations.get(k), str)}
    latest, in_spec, latest_ready = _latest(isvc, versions)
    revisions = _revisions(isvc)
    if latest_ready and in_spec is not None and revisions.get(latest) != in_spec:
        annotations[REVISION_VERSIONS] = _with(revisions, latest, in_spec)
    models = _recorded(isvc, VERSION_MODELS, dict)
    percent: int | None
    if in_spec != wanted:
        rolled_out_serves_it = revisions.get(status.get("latestRolledoutRevision")) == wanted
        if wanted in versions or (wanted in models and not rolled_out_serves_it):
            # A new revision for `wanted`, at 0 % until it is ready; the rolled-out revision keeps
            # everything. On a rollback this one write takes all traffic back to stable (or, after a
            # 100 % step, once stable's restored revision is ready: KServe rolled the candidate out).
            model = _model(versions[wanted]) if wanted in versions else models[wanted]
            annotations[ARTIFACT_GENERATION] = str(_generation(isvc) + 1)
            annotations[VERSION_MODELS] = _with(models, wanted, model)
        elif intent.candidate is not None or not rolled_out_serves_it:
            raise VersionUnavailable(wanted, f"InferenceService {dig(isvc, 'metadata', 'name')} predictor")
        # else: stable's ModelVersion is gone; the rolled-out revision is stable's, and 0 % leaves it everything.
        percent = 0
    elif intent.candidate is not None:
        percent = intent.candidate_weight
    else:
        # Stable's own artifact: all traffic to its latest revision, once that revision is ready.
        percent = None if latest_ready else 0
    if model is None and latest_ready and _artifact_generation(isvc) is None and \
            _integer(spec.get("canaryTrafficPercent")) != percent:
        # Ready by a status of this very generation. Recorded before this weight write (a new generation, no new
        # revision) so that its echo does not read as unready, which would write 0 %, then flip back, and so on.
        annotations[ARTIFACT_GENERATION] = str(_generation(isvc))
    annotations[APPLIED_PERCENT] = _percent_text(percent)
    predictor: dict[str, Any] = {"model": model} if model is not None else kept(isvc, MODEL).get("spec", {}).get(
        "predictor", {})
    if percent is not None:
        predictor["canaryTrafficPercent"] = percent
    config = merged(kept(isvc, *IDENTITY, MODE), {"metadata": {"annotations": annotations}, "spec": {"predictor": predictor}})
    if is_applied(isvc, config, absent=_absent(percent)):
        return None
    # Conditional on the read it was computed from: a second driver (or any writer since) gets a 409, not overwritten.
    config["metadata"]["resourceVersion"] = isvc["metadata"]["resourceVersion"]
    return config


def _absent(percent: int | None) -> tuple[FieldPath, ...]:
    return (CANARY_PERCENT,) if percent is None else ()


def leftover_patch(isvc: dict[str, Any], config: dict[str, Any]) -> dict[str, Any] | None:
    """After applying `config`: the merge patch removing canaryTrafficPercent where the config leaves it out
    but another manager still holds it (pure); conditional on the object the apply returned."""
    if "canaryTrafficPercent" in (dig(config, "spec", "predictor") or {}) or dig(isvc, *CANARY_PERCENT) is None:
        return None
    return {"metadata": {"resourceVersion": isvc["metadata"]["resourceVersion"]},
            "spec": {"predictor": {"canaryTrafficPercent": None}}}


def creation_config(name: str, stable: str, versions: dict[str, ModelVersionSpec]) -> dict[str, Any]:
    """The InferenceService the operator creates: serverless, stable's artifact, all traffic to it (the owner
    annotation is added on creation)."""
    model = _model(spec_of(versions, stable, f"creating InferenceService {name}"))
    annotations = {VERSION_MODELS: _with({}, stable, model), ARTIFACT_GENERATION: "1",  # created at generation 1
                   DEPLOYMENT_MODE: "Serverless"}
    return {"metadata": {"name": name, "labels": dict(MANAGED_BY), "annotations": annotations},
            "spec": {"predictor": {"model": model}}}


class KServeRouter:
    templates = TEMPLATES

    def __init__(self, kube: Kube):
        self.objects = OwnedObjects(kube)

    def _name(self, target: Target) -> str:
        return target.object_name(target.serving.kserve.name if target.serving.kserve else None)

    object_name = _name

    async def observe(self, target: Target, versions: dict[str, ModelVersionSpec],
                      last: TrafficIntent | None) -> BackendState:
        isvc = await self.objects.get(INFERENCE_SERVICE, target, self._name(target))
        return replace(observe(isvc, versions, last), read=isvc)

    async def apply(self, target: Target, intent: TrafficIntent, versions: dict[str, ModelVersionSpec],
                    state: BackendState, *, create: bool = True) -> bool:
        name = self._name(target)
        isvc = state.read or await self.objects.get(INFERENCE_SERVICE, target, name)
        if isvc is None:
            if not create:
                return True
            await self.objects.create(INFERENCE_SERVICE, target, creation_config(name, intent.stable, versions))
            return False
        config = config_for(isvc, intent, versions, state)
        if config is not None:
            applied = await self.objects.apply(INFERENCE_SERVICE, target, name, config)
            leftover = leftover_patch(applied, config)
            if leftover is not None:
                await self.objects.patch(INFERENCE_SERVICE, target, name, leftover)
            return False
        # Without a candidate, rest only once stable's own revision is the rolled-out one and serves all
        # (or, stable's ModelVersion gone, once the rolled-out revision holds all traffic: no more to do).
        if intent.candidate is not None:
            return True
        return intent.stable in state.ready_versions and (
            "canaryTrafficPercent" not in _predictor(isvc)[0] or intent.stable not in versions)
