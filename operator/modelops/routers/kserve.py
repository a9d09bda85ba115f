"""KServe InferenceService: serverless mode through canaryTrafficPercent, Standard mode through spec.canary[]
and an HTTPRoute the ModelDeployment names.

The mode. KServe facts (v0.20.0): the mode is `status.deploymentMode` once its controller recorded it, else the
annotation `serving.kserve.io/deploymentMode`, else the cluster default `defaultDeploymentMode` of the
`inferenceservice-config` ConfigMap (pkg/controller/v1beta1/inferenceservice/utils/utils.go,
GetDeploymentMode; the controller writes the status on every reconcile, controller.go updateStatus).
Values: Knative and its older name Serverless, Standard and its older name RawDeployment,
ModelMesh (pkg/constants/constants.go, DeploymentModeType). KServe's defaulting webhook writes the
annotation on every InferenceService admitted without one when the cluster default is Standard or
ModelMesh (pkg/apis/serving/v1beta1/inference_service_defaults.go, DefaultInferenceService), so an object
with neither the annotation nor a recorded mode was admitted under a Knative default: it is serverless.
`driven_mode` decides, before any write: serverless is driven as below (refused when
serving.kserve.httpRoute is set: there is no Service per version for a route there); Standard is driven
as in "Standard mode" (refused without serving.kserve.httpRoute); ModelMesh is refused. KServe refuses
changing the mode of an InferenceService whose status recorded one (inference_service_validation.go,
validateDeploymentMode). The operator creates its InferenceServices in Standard mode when the spec names
a route, else with the annotation Serverless (the name every KServe version knows; v0.20's webhook
rewrites it to Knative), whatever the cluster default.

Serverless mode. KServe facts this module relies on: changing the predictor (storageUri, format, runtime)
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


Standard mode (KServe v0.20.0; files under pkg/). Facts, read in KServe's source and seen on its controller:

- A spec.canary[] entry is a predictor of its own: KServe builds it from stable's predictor with the
  entry's predictor merged over it (mergo WithOverride: fields the entry sets win, the rest are stable's)
  and makes a Deployment and a Service named `{isvc}-{predictor.name}-predictor`
  (controller/v1beta1/inferenceservice/components/predictor.go, reconcileCanaryDeployments and
  buildCanaryPredictor; constants/constants.go, PredictorServiceName: `{isvc}-predictor` when the name is
  empty). Each Service selects its own Deployment's pods, `app: isvc.<that name>`
  (reconcilers/service/service_reconciler.go, via constants.GetRawServiceLabel).
- trafficPercent routes nothing. Every Service, Ingress, HTTPRoute and address KServe writes points at
  stable's predictor Service (reconcilers/ingress/ingress_reconciler.go, kube_ingress_reconciler.go and
  httproute_reconciler.go all take constants.PredictorServiceName(isvc.Name, isvc.Spec.Predictor.Name)).
  It sizes replicas: a canary runs its own minReplicas, else ceil(stable's minReplicas (1 when unset) x
  trafficPercent / 100) (predictor.go, canaryReplicaCount), with autoscaling fields cleared
  (buildCanaryPredictor); stable's minReplicas, when set, is reduced by the canaries' and never below 1.
  Under the default HPA class the HPA's minimum is at least 1 (reconcilers/hpa/hpa_reconciler.go,
  createHPA), so a 0 % canary still gets a pod (seen on the controller).
- status.canaryStatuses[] has, per entry, name, ready (its Deployment's availableReplicas > 0) and
  trafficPercent; the condition CanaryPredictorReady is all of them, and is not part of Ready
  (predictor.go, reconcileCanaryDeployments; apis/serving/v1beta1/inference_service_status.go).
  PredictorReady is stable's Deployment's Available condition (inference_service_status.go,
  PropagateRawStatus).
- KServe deletes every predictor Deployment and Service of the InferenceService whose name is neither
  stable's nor a canary's (reconcileCanaryDeployments, its cleanup). Promotion is "set predictor.name to
  the canary's name and remove its entry" (apis/serving/v1beta1/inference_service.go, the comment on
  Canary): stable then is the canary's Deployment, already running. The old stable's HorizontalPodAutoscaler
  is not deleted with its Deployment (a KServe bug: it is left behind, scaling nothing).
- spec.canary is `listType=atomic` (inference_service.go): one manager owns the whole list. KServe's
  validation requires each entry's predictor.name, unique and other than stable's, and one model, and
  refuses maxReplicas, scaleTarget, scaleMetric and autoScaling on it (inference_service_validation.go,
  validateCanarySpecs); it accepts canaries in Standard mode only.

So the split is the route's. serving.kserve.httpRoute names an HTTPRoute whose path-only rules route to
stable's predictor Service; the operator drives it exactly as the gatewayAPI router drives its route
(gateway_api.read_route and write_route: rules, pins, mirror and match steps, drift, readiness by the
route's verdicts and the Services' ready endpoints), over the predictor Services. The candidate (and a
drill's fallback) is the one spec.canary entry, `predictor.name` its unit name (base.unit_name: a DNS
label, distinct per version), carrying the version's artifact (`model`), trafficPercent the step's
weight (so KServe sizes it as that share); a rollback removes the entry; promotion names the predictor
after the promoted entry with its model, and removes the entry. A new stable that is not running yet (a
manual rollback to a retained version, whose Deployment KServe deleted at the promotion after it) is
brought up the same way: the entry at 0 % while the route stays on the version running, then promoted once
KServe reports it ready. A version is ready when KServe reports it
(stable: PredictorReady True in a status that saw the operator's last write of the predictor,
`modelops.io/artifact-generation`; a canary: its canaryStatuses[] entry ready) and the route finds it ready.
The route names a candidate's Service only once KServe reports the canary ready (a Gateway reports a
route naming a missing Service unresolved, and nothing on it would be ready), and each apply writes the
route before the InferenceService, so requests leave a Service before KServe deletes it. `{{revision}}`
in a check's query is the version's predictor Service name (its Deployment's too); KServe exports no
request metrics of its own in Standard mode, so admission refuses the Knative templates with a route
(api.modeldeployment.template_support): checks query what the model server or the Gateway exports. The operator owns on the
InferenceService, besides its bookkeeping annotations, spec.canary (whole) and, once it wrote them,
spec.predictor.name and spec.predictor.model's keys; an entry in spec.canary that is no version of the
ModelDeployment is refused (BackendMisconfigured) rather than removed. Applies carry the read's
resourceVersion.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from ..analysis.promql import TemplateQuery, observed
from ..api.modeldeployment import CheckTemplate, KServeRoute
from ..api.modelversion import ModelVersionSpec
from ..kube import FieldPath, Kube, Resource, is_applied
from ..rollout import TrafficIntent
from .base import (CONTRACT_TEMPLATES, IDENTITY, MANAGED_BY, SHADOW_AGREEMENT, OwnedObjects, BackendMisconfigured, BackendState, Target,
                   VersionUnavailable, annotations_of, artifact_version, dig, kept, merged, objects_at, spec_of, unit_name,
                   units_by_name)
from .gateway_api import HTTP_ROUTE, EndpointSlices, ListedEndpointSlices, read_route, write_route

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
    CheckTemplate.shadowAgreement: SHADOW_AGREEMENT,  # Standard mode's mirror steps only (admission refuses it elsewhere)
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
STANDARD_MODES = frozenset({"Standard", "RawDeployment"})
MODE: FieldPath = ("metadata", "annotations", DEPLOYMENT_MODE)
SERVERLESS, STANDARD = "serverless", "standard"


def deployment_mode(isvc: dict[str, Any]) -> tuple[str, str] | None:
    """(KServe's deployment mode of the InferenceService, where it is read from), in KServe's order; None when
    neither the status nor the annotation names one."""
    recorded = dig(isvc, "status", "deploymentMode")
    if isinstance(recorded, str) and recorded:
        return recorded, "status.deploymentMode"
    annotated = annotations_of(isvc).get(DEPLOYMENT_MODE)
    return (annotated, f"annotation {DEPLOYMENT_MODE}") if annotated else None


def driven_mode(isvc: dict[str, Any], routed: bool) -> str:
    """SERVERLESS or STANDARD: how the InferenceService is driven, `routed` when serving.kserve.httpRoute is set
    (pure); BackendMisconfigured, naming the mode, where it was read and the fix, when it cannot be driven."""
    name = dig(isvc, "metadata", "name")
    mode = deployment_mode(isvc)
    if mode is None or mode[0] in SERVERLESS_MODES:
        if routed:
            where = f"{mode[0]} ({mode[1]})" if mode else "Knative (the default it was admitted under)"
            raise BackendMisconfigured(
                f"serving.kserve.httpRoute is set, but InferenceService {name} runs in KServe's serverless mode "
                f"{where}, where canaryTrafficPercent splits the traffic between Knative revisions and no predictor "
                "Service per version exists for a route: remove serving.kserve.httpRoute")
        return SERVERLESS
    if mode[0] in STANDARD_MODES:
        if not routed:
            raise BackendMisconfigured(
                f"InferenceService {name} runs in KServe's {mode[0]} deployment mode ({mode[1]}), where KServe "
                "sends no request to spec.canary (its Services, Ingress and HTTPRoutes all point at stable's "
                "predictor; trafficPercent only sizes the canary's replicas): name an HTTPRoute in "
                "serving.kserve.httpRoute, whose rules then carry the split between the predictor Services")
        return STANDARD
    raise BackendMisconfigured(
        f"InferenceService {name} runs in KServe's {mode[0]} deployment mode ({mode[1]}): the kserve backend drives "
        f"serverless (Knative) and Standard mode only. KServe does not change the mode of an existing "
        f"InferenceService: recreate it with the annotation {DEPLOYMENT_MODE}: Standard or Serverless")


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
    driven_mode(isvc, routed=False)
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
    driven_mode(isvc, routed=False)
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


def creation_config(name: str, stable: str, versions: dict[str, ModelVersionSpec], mode: str = SERVERLESS) -> dict[str, Any]:
    """The InferenceService the operator creates: in `mode` (serverless, or Standard with a route), stable's
    artifact, all traffic to it (the owner annotation is added on creation)."""
    model = _model(spec_of(versions, stable, f"creating InferenceService {name}"))
    annotations = {VERSION_MODELS: _with({}, stable, model), ARTIFACT_GENERATION: "1",  # created at generation 1
                   DEPLOYMENT_MODE: "Standard" if mode == STANDARD else "Serverless"}
    return {"metadata": {"name": name, "labels": dict(MANAGED_BY), "annotations": annotations},
            "spec": {"predictor": {"model": model}}}


# Standard mode (see the module docstring, "Standard mode").
CANARY: FieldPath = ("spec", "canary")
PREDICTOR_NAME: FieldPath = ("spec", "predictor", "name")
SERVICE_NAME_LENGTH = 63  # a Service name is a DNS-1035 label


def predictor_service(isvc: str, predictor_name: str | None) -> str:
    """The Deployment and Service KServe names for a predictor of InferenceService `isvc`
    (constants.PredictorServiceName)."""
    return f"{isvc}-{predictor_name}-predictor" if predictor_name else f"{isvc}-predictor"


@dataclass(frozen=True)
class Layout:
    """Which version each predictor of a Standard-mode InferenceService serves, as its spec says."""

    stable: str | None
    """The version of spec.predictor's artifact; None when it is no known version's."""
    canaries: dict[str, dict[str, Any]]
    """Version -> its spec.canary[] entry."""
    services: dict[str, str]
    """Version -> its predictor Service: stable's as it is named now, any other version's as its canary's would be."""


def _known(isvc: dict[str, Any], versions: dict[str, ModelVersionSpec]) -> set[str]:
    return set(versions) | set(_recorded(isvc, VERSION_MODELS, dict))


def layout(isvc: dict[str, Any], versions: dict[str, ModelVersionSpec]) -> Layout:
    """The versions of the predictor and of each canary entry (pure); BackendMisconfigured for a canary entry that
    is no version of this deployment (the operator owns spec.canary whole: its apply would remove it)."""
    spec = dig(isvc, "spec", "predictor") or {}
    uri = dig(spec, "model", "storageUri")
    recorded = [v for v, model in _recorded(isvc, VERSION_MODELS, dict).items() if model.get("storageUri") == uri]
    stable = artifact_version(uri, versions) or (recorded[-1] if recorded else None)
    by_name = units_by_name(_known(isvc, versions))
    canaries: dict[str, dict[str, Any]] = {}
    for index, entry in enumerate(objects_at(isvc, *CANARY)):
        name = dig(entry, "predictor", "name")
        if name not in by_name:
            raise BackendMisconfigured(
                f"InferenceService {dig(isvc, 'metadata', 'name')} spec.canary[{index}] ({name}) is no version of "
                "this ModelDeployment: the operator owns spec.canary whole (an atomic list) and would remove it; "
                "remove it, or roll that model out as a version")
        canaries[by_name[name]] = entry
    services = {v: predictor_service(dig(isvc, "metadata", "name"), unit_name(v)) for v in _known(isvc, versions)}
    if stable is not None:
        services[stable] = predictor_service(dig(isvc, "metadata", "name"), spec.get("name"))
    return Layout(stable, canaries, services)


def _condition(isvc: dict[str, Any], kind: str) -> str | None:
    return next((c.get("status") for c in objects_at(isvc, "status", "conditions") if c.get("type") == kind), None)


def kserve_ready(isvc: dict[str, Any], versions: dict[str, ModelVersionSpec]) -> frozenset[str]:
    """The versions KServe reports ready (pure): stable when PredictorReady is True in a status that saw the
    operator's last write of the predictor; a canary's version when its status.canaryStatuses[] entry is ready."""
    found = layout(isvc, versions)
    ready = set()
    seen = _integer(dig(isvc, "status", "observedGeneration")) or 0
    if found.stable is not None and _condition(isvc, "PredictorReady") == "True" and \
            seen >= (_artifact_generation(isvc) or 0):
        ready.add(found.stable)
    statuses = {s.get("name"): s for s in objects_at(isvc, "status", "canaryStatuses")}
    for version, entry in found.canaries.items():
        if (statuses.get(dig(entry, "predictor", "name")) or {}).get("ready") is True:
            ready.add(version)
    return frozenset(ready)


def observe_standard(isvc: dict[str, Any], versions: dict[str, ModelVersionSpec], route: BackendState) -> BackendState:
    """Readiness, units and drift of a Standard-mode InferenceService and the route that splits between its
    predictor Services (`route`: gateway_api.observe over `layout(...).services`) (pure). A version is ready when
    KServe reports it ready and the route finds its Service ready; units are the predictor Services."""
    found = layout(isvc, versions)
    ready = kserve_ready(isvc, versions) & route.ready_versions
    present = ({found.stable} if found.stable else set()) | set(found.canaries)
    units = {v: found.services[v] for v in present}
    return BackendState(ready, units, route.drift, refused=route.refused, pins=route.pins)


def route_intent(intent: TrafficIntent, isvc: dict[str, Any], versions: dict[str, ModelVersionSpec]) -> TrafficIntent:
    """What the route carries of `intent`: a candidate gets its ref (at its weight), and a new stable all of it, only
    once KServe reports its predictor ready, so that the route never names a Service KServe has not made yet (a
    Gateway then reports the route's references unresolved, and nothing on it reads as ready); until then stable's
    traffic stays where it is."""
    found = layout(isvc, versions)
    ready = kserve_ready(isvc, versions)
    if intent.stable != found.stable and found.stable is not None and intent.stable not in ready:
        return TrafficIntent(found.stable)
    if intent.candidate is None or intent.candidate == found.stable or intent.candidate in ready:
        return intent
    return TrafficIntent(intent.stable)


def config_standard(isvc: dict[str, Any], intent: TrafficIntent, versions: dict[str, ModelVersionSpec]) -> dict[str, Any] | None:
    """The operator's complete applied configuration of a Standard-mode InferenceService for `intent` (pure); None
    when the object holds it. The candidate is the one spec.canary entry, named after its unit name, carrying its
    artifact, trafficPercent its weight; promotion names the predictor after the promoted entry and removes the
    entry; without a candidate there is no entry. A new stable that is no running entry (a manual rollback to a
    retained version) is first that entry, at 0 %, and promoted once KServe reports it ready. VersionUnavailable when it would write the artifact of a version
    whose ModelVersion is gone and that the object does not hold either."""
    found = layout(isvc, versions)
    name = dig(isvc, "metadata", "name")
    models = _recorded(isvc, VERSION_MODELS, dict)
    live_annotations = annotations_of(isvc)
    annotations = {k: live_annotations[k] for k in BOOKKEEPING if isinstance(live_annotations.get(k), str)}

    def model_of(version: str, live: dict[str, Any] | None = None) -> dict[str, Any]:
        """The version's model: its ModelVersion's, else as the object holds it (`live`) or recorded it."""
        if version in versions:
            return _model(versions[version])
        if live is not None or version in models:
            return dict(live or models[version])
        raise VersionUnavailable(version, f"InferenceService {name} predictor")

    predictor = kept(isvc, MODEL, PREDICTOR_NAME).get("spec", {}).get("predictor", {})
    staged = None  # a new stable not yet running: brought up as the canary entry first
    if intent.stable != found.stable:
        promoted = found.canaries.get(intent.stable)
        if (promoted is not None and intent.stable in kserve_ready(isvc, versions)) or found.stable is None:
            # Promotion as KServe documents it: the predictor takes the canary's name (and so its Deployment and
            # Service, already running) and its model; the entry goes. With no stable known to keep serving,
            # stable's artifact is written in place.
            model = dict(promoted["predictor"]["model"]) if promoted else model_of(intent.stable)
            predictor = {**predictor, "model": model}
            if promoted:
                predictor["name"] = promoted["predictor"]["name"]
            annotations[ARTIFACT_GENERATION] = str(_generation(isvc) + 1)
        else:
            # A rollback to a retained version, say: the version running now keeps serving, and keeps its
            # Deployment's name, until the new one runs as an entry of its own (never written in place, which would
            # leave the route naming a Service KServe never makes, and two versions on one Deployment).
            staged = intent.stable
    canary: list[dict[str, Any]] = []
    if staged is not None:
        canary = [{"predictor": {"name": unit_name(staged), "model": model_of(
            staged, dig(found.canaries.get(staged), "predictor", "model"))}, "trafficPercent": 0}]
    elif intent.candidate is not None and intent.candidate != intent.stable:
        unit = unit_name(intent.candidate)
        service = predictor_service(dig(isvc, "metadata", "name"), unit)
        if len(service) > SERVICE_NAME_LENGTH:
            raise BackendMisconfigured(
                f"the candidate {intent.candidate}'s predictor Service would be {service}, longer than "
                f"{SERVICE_NAME_LENGTH} characters: a shorter InferenceService name (serving.kserve.name) is needed")
        model = model_of(intent.candidate, dig(found.canaries.get(intent.candidate), "predictor", "model"))
        canary = [{"predictor": {"name": unit, "model": model}, "trafficPercent": intent.candidate_weight}]
    # Every version's model as written, so that the versions stay known (their Services named, stable restored)
    # once their ModelVersions are gone.
    written = [(found.stable, dig(isvc, *MODEL))] if found.stable is not None else []
    if intent.stable != found.stable and staged is None:
        written.append((intent.stable, predictor["model"]))
    if canary:
        written.append((staged or intent.candidate, canary[0]["predictor"]["model"]))
    recorded = models
    for version, model in written:
        if recorded.get(version) != model:
            recorded = json.loads(_with(recorded, version, model))
    if recorded != models:
        annotations[VERSION_MODELS] = json.dumps(recorded)
    spec = {"predictor": predictor, "canary": canary} if canary else {"predictor": predictor}
    config = merged(kept(isvc, *IDENTITY, MODE), {"metadata": {"annotations": annotations}, "spec": spec})
    if is_applied(isvc, config, absent=() if canary else (CANARY,)):
        return None
    config["metadata"]["resourceVersion"] = isvc["metadata"]["resourceVersion"]
    return config


class KServeRouter:
    templates = TEMPLATES

    def __init__(self, kube: Kube, endpoint_slices: EndpointSlices | None = None):
        self.objects = OwnedObjects(kube)
        self.endpoint_slices = endpoint_slices or ListedEndpointSlices(kube)

    def _name(self, target: Target) -> str:
        return target.object_name(target.serving.kserve.name if target.serving.kserve else None)

    object_name = _name

    @staticmethod
    def _route(target: Target) -> KServeRoute | None:
        return target.serving.kserve.http_route if target.serving.kserve else None

    async def observe(self, target: Target, versions: dict[str, ModelVersionSpec],
                      last: TrafficIntent | None) -> BackendState:
        isvc = await self.objects.get(INFERENCE_SERVICE, target, self._name(target))
        route = self._route(target)
        if isvc is None or driven_mode(isvc, route is not None) == SERVERLESS:
            return replace(observe(isvc, versions, last), read=isvc)
        assert route is not None  # driven_mode refuses Standard mode without one
        routed = await read_route(self.objects, self.endpoint_slices, target, route.name, layout(isvc, versions).services)
        return replace(observe_standard(isvc, versions, routed), read=isvc)

    async def apply(self, target: Target, intent: TrafficIntent, versions: dict[str, ModelVersionSpec],
                    state: BackendState, *, create: bool = True) -> bool:
        name = self._name(target)
        route = self._route(target)
        isvc = state.read or await self.objects.get(INFERENCE_SERVICE, target, name)
        if isvc is None:
            if not create:
                return True
            await self.objects.create(INFERENCE_SERVICE, target, creation_config(
                name, intent.stable, versions, STANDARD if route else SERVERLESS))
            return False
        if driven_mode(isvc, route is not None) == STANDARD:
            assert route is not None
            return await self._apply_standard(target, route, isvc, intent, versions, create)
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

    async def _apply_standard(self, target: Target, route: KServeRoute, isvc: dict[str, Any], intent: TrafficIntent,
                              versions: dict[str, ModelVersionSpec], create: bool) -> bool:
        """The route first, then the InferenceService: requests leave a Service before KServe deletes it (a
        rollback's canary, a promotion's old stable), and reach a candidate's only once KServe has made it."""
        config = config_standard(isvc, intent, versions)  # refusals (a version gone, a name too long) before writes
        carried = route_intent(intent, isvc, versions)
        routed = await write_route(self.objects, target, route.name,
                                   await self.objects.get(HTTP_ROUTE, target, route.name), carried,
                                   layout(isvc, versions).services, route.port, create=create,
                                   field=f"the predictor Services of InferenceService {self._name(target)}")
        if config is not None:
            await self.objects.apply(INFERENCE_SERVICE, target, self._name(target), config)
            return False
        if intent.candidate is None:
            return routed and not objects_at(isvc, *CANARY) and intent.stable in kserve_ready(isvc, versions)
        return routed and carried == intent
