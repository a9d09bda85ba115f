"""KServe InferenceService: serverless mode through canaryTrafficPercent here, Standard mode through spec.canary[]
and an HTTPRoute the ModelDeployment names in routers/kserve_standard.py; the router decides the mode and dispatches.

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
as routers/kserve_standard.py describes (refused without serving.kserve.httpRoute); ModelMesh is refused. KServe refuses
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
other than canaryTrafficPercent makes a new revision, with one exception: KServe copies the
InferenceService's annotations into the Knative revision template
(pkg/controller/v1beta1/inferenceservice/reconcilers/knative/ksvc_reconciler.go, read in the source,
not run here), so the operator's bookkeeping annotations make revisions unless the cluster lists them in
`serviceAnnotationDisallowedList` of `inferenceservice-config`; kserve_config.py checks that list, and while
it lacks them no rollout starts and `config_for` leaves out writes that would change bookkeeping alone.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from ..analysis.promql import TemplateQuery, observed
from ..api.modeldeployment import CheckTemplate, KServeRoute
from ..api.modelversion import ModelVersionSpec
from ..kube import FieldPath, Kube, is_applied
from ..rollout import TrafficIntent
from .base import (CONTRACT_TEMPLATES, IDENTITY, MANAGED_BY, SHADOW_AGREEMENT, OwnedObjects, BackendMisconfigured,
                   BackendState, Target, VersionUnavailable, annotations_of, dig, kept, merged, objects_at, spec_of)
from .gateway_api import HTTP_ROUTE, EndpointSlices, ListedEndpointSlices, caught_up, read_route, write_route
from .inference_service import (APPLIED_PERCENT, ARTIFACT_GENERATION, BOOKKEEPING, DEPLOYMENT_MODE, INFERENCE_SERVICE,
                                MODE, MODEL, REVISION_VERSIONS, VERSION_MODELS, artifact_generation, generation,
                                integer, model_version, predictor_model, recorded, newest)
from .kserve_config import KServeSettings
from .kserve_standard import CANARY, config_standard, layout, observe_standard, removed_predictors, route_intent

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


SERVERLESS_MODES = frozenset({"Knative", "Serverless"})
STANDARD_MODES = frozenset({"Standard", "RawDeployment"})
SERVERLESS, STANDARD = "serverless", "standard"


def deployment_mode(isvc: dict[str, Any]) -> tuple[str, str] | None:
    """(KServe's deployment mode of the InferenceService, where it is read from), in KServe's order; None when
    neither the status nor the annotation names one."""
    in_status = dig(isvc, "status", "deploymentMode")
    if isinstance(in_status, str) and in_status:
        return in_status, "status.deploymentMode"
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


CANARY_PERCENT: FieldPath = ("spec", "predictor", "canaryTrafficPercent")


def _revisions(isvc: dict[str, Any]) -> dict[str, str]:
    return recorded(isvc, REVISION_VERSIONS, str)


def _latest(isvc: dict[str, Any], versions: dict[str, ModelVersionSpec]) -> tuple[str | None, str | None, bool]:
    """(latest revision, the version of the artifact in the spec, whether that revision is ready and serves it)."""
    spec, status = _predictor(isvc)
    latest = status.get("latestCreatedRevision")
    # An artifact generation that is absent or unreadable: trust only a status of the current generation.
    since = artifact_generation(isvc)
    since = generation(isvc) if since is None else since
    current = bool(latest) and (integer(dig(isvc, "status", "observedGeneration")) or 0) >= since
    in_spec = model_version(isvc, dig(spec, "model", "storageUri"), versions) or \
        (_revisions(isvc).get(latest) if current else None)
    return latest, in_spec, current and in_spec is not None and status.get("latestReadyRevision") == latest


def _percent_text(percent: int | None) -> str:
    return "unset" if percent is None else str(percent)


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
        if in_spec not in ready and (percent is None or (integer(percent) or 0) > 0):
            serving = frozenset({in_spec})  # e.g. promoted: all traffic on it before KServe marks it rolled out
    drift = []
    applied = annotations_of(isvc).get(APPLIED_PERCENT)  # kept as it was while KServe copies it (config_for)
    live = _percent_text(spec.get("canaryTrafficPercent"))
    if applied is not None and live != applied:
        drift.append(f"spec.predictor.canaryTrafficPercent is {live}, the operator had set {applied}: "
                     "restoring it (pin a weight with spec.trafficOverride instead)")
    return BackendState(frozenset(ready), units, tuple(drift), serving)


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
        annotations[REVISION_VERSIONS] = json.dumps(newest(revisions, latest, in_spec))
    models = recorded(isvc, VERSION_MODELS, dict)
    percent: int | None
    if in_spec != wanted:
        rolled_out_serves_it = revisions.get(status.get("latestRolledoutRevision")) == wanted
        if wanted in versions or (wanted in models and not rolled_out_serves_it):
            # A new revision for `wanted`, at 0 % until it is ready; the rolled-out revision keeps
            # everything. On a rollback this one write takes all traffic back to stable (or, after a
            # 100 % step, once stable's restored revision is ready: KServe rolled the candidate out).
            model = predictor_model(versions[wanted]) if wanted in versions else models[wanted]
            annotations[ARTIFACT_GENERATION] = str(generation(isvc) + 1)
            annotations[VERSION_MODELS] = json.dumps(newest(models, wanted, model))
        elif intent.candidate is not None or not rolled_out_serves_it:
            raise VersionUnavailable(wanted, f"InferenceService {dig(isvc, 'metadata', 'name')} predictor")
        # else: stable's ModelVersion is gone; the rolled-out revision is stable's, and 0 % leaves it everything.
        percent = 0
    elif intent.candidate is not None:
        percent = intent.candidate_weight
    else:
        # Stable's own artifact: all traffic to its latest revision, once that revision is ready.
        percent = None if latest_ready else 0
    if model is None and latest_ready and artifact_generation(isvc) is None and \
            integer(spec.get("canaryTrafficPercent")) != percent:
        # Ready by a status of this very generation. Recorded before this weight write (a new generation, no new
        # revision) so that its echo does not read as unready, which would write 0 %, then flip back, and so on.
        annotations[ARTIFACT_GENERATION] = str(generation(isvc))
    annotations[APPLIED_PERCENT] = _percent_text(percent)
    predictor: dict[str, Any] = {"model": model} if model is not None else kept(isvc, MODEL).get("spec", {}).get(
        "predictor", {})
    if percent is not None:
        predictor["canaryTrafficPercent"] = percent
    config = merged(kept(isvc, *IDENTITY, MODE), {"metadata": {"annotations": annotations}, "spec": {"predictor": predictor}})
    if is_applied(isvc, config, absent=_absent(percent)):
        return None
    if state.holds_rollouts is not None and model is None:
        # KServe copies the bookkeeping into the revision template (kserve_config.py): a write that changes it
        # without a new artifact would make a revision, whose readiness would show the candidate unready and be
        # recorded by the next write, and so on. The record stays as it is; only weights move.
        config = _with_live_bookkeeping(config, live_annotations)
        if is_applied(isvc, config, absent=_absent(percent)):
            return None
    # Conditional on the read it was computed from: a second driver (or any writer since) gets a 409, not overwritten.
    config["metadata"]["resourceVersion"] = isvc["metadata"]["resourceVersion"]
    return config


def _with_live_bookkeeping(config: dict[str, Any], live: dict[str, str]) -> dict[str, Any]:
    """`config` with the bookkeeping annotations as they are live: what it changes besides them."""
    annotations = {k: v for k, v in config["metadata"]["annotations"].items() if k not in BOOKKEEPING}
    annotations.update({k: live[k] for k in BOOKKEEPING if k in live})
    return {**config, "metadata": {**config["metadata"], "annotations": annotations}}


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
    model = predictor_model(spec_of(versions, stable, f"creating InferenceService {name}"))
    annotations = {VERSION_MODELS: json.dumps(newest({}, stable, model)), ARTIFACT_GENERATION: "1",  # created at generation 1
                   DEPLOYMENT_MODE: "Standard" if mode == STANDARD else "Serverless"}
    return {"metadata": {"name": name, "labels": dict(MANAGED_BY), "annotations": annotations},
            "spec": {"predictor": {"model": model}}}


SERVERLESS_KEEPS_NO_WARM = ("in serverless mode an InferenceService runs stable's revision and one candidate's "
                            "(canaryTrafficPercent): going back to a retained version deploys it as a new revision")


class KServeRouter:
    templates = TEMPLATES

    def __init__(self, kube: Kube, settings: KServeSettings, endpoint_slices: EndpointSlices | None = None):
        self.objects = OwnedObjects(kube)
        self.settings = settings
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
        holds = await self.settings.copies_bookkeeping()
        if isvc is None or driven_mode(isvc, route is not None) == SERVERLESS:
            state = replace(observe(isvc, versions, last), keeps_no_warm=SERVERLESS_KEEPS_NO_WARM)
            if holds is not None:  # the weight's record stays as it was (config_for): no drift can be told
                state = replace(state, drift=())
        else:
            assert route is not None  # driven_mode refuses Standard mode without one
            found = layout(isvc, versions)
            state = observe_standard(found, await read_route(self.objects, self.endpoint_slices, target, route.name,
                                                             found.services))
        return replace(state, read=isvc, holds_rollouts=holds)

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
        if state.read is None:  # not this round's observation (a recovery's apply): whether KServe copies bookkeeping
            state = replace(state, holds_rollouts=await self.settings.copies_bookkeeping())
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
        found = layout(isvc, versions)
        config = config_standard(isvc, found, intent, versions)  # refusals (a version gone, a name too long) before writes
        carried = route_intent(intent, found)
        live_route = await self.objects.get(HTTP_ROUTE, target, route.name)
        routed = await write_route(self.objects, target, route.name, live_route, carried, found.services, route.port,
                                   create=create, field=f"the predictor Services of InferenceService {self._name(target)}")
        if config is not None:
            if removed_predictors(isvc, config) and not (routed and caught_up(live_route)):
                # KServe deletes a predictor's Service as soon as the spec drops it: not before the Gateway routes
                # by a route that no longer names it (a later round).
                return False
            await self.objects.apply(INFERENCE_SERVICE, target, self._name(target), config)
            return False
        if intent.candidate is None:  # at rest: no entry but the warm ones
            return routed and set(found.canaries) <= set(intent.warm) and intent.stable in found.ready
        return routed and carried == intent
