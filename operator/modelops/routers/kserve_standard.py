"""KServe's Standard mode (raw Deployments and Services): the candidate as a spec.canary[] entry, the split on an
HTTPRoute the ModelDeployment names. routers/kserve.py decides the mode and dispatches here.

Facts (KServe v0.20.0; files under pkg/), read in KServe's source and seen on its controller:

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
  (buildCanaryPredictor); stable's minReplicas, when set, is reduced by the canaries' and never below 1
  (reconcileRawDeployment). Under the default HPA class each predictor, canaries too, gets an HPA whose
  minimum is that count, at least 1 (reconcilers/hpa/hpa_reconciler.go, createHPA), so a 0 % canary still
  gets a pod; stable's reduced minimum lowers its HPA's, not its Deployment's pods, which only the HPA
  scales (seen on the controller: with minReplicas 2 and no metrics, stable kept 2 pods beside the canary's
  in one run and went to 1 in another).
- status.canaryStatuses[] has, per entry, name, ready (its Deployment's availableReplicas > 0) and
  trafficPercent; the condition CanaryPredictorReady is all of them, and is not part of Ready
  (predictor.go, reconcileCanaryDeployments; apis/serving/v1beta1/inference_service_status.go).
  PredictorReady is stable's Deployment's Available condition (inference_service_status.go,
  PropagateRawStatus).
- KServe deletes every predictor Deployment and Service of the InferenceService whose name is neither
  stable's nor a canary's (reconcileCanaryDeployments, its cleanup). Promotion is "set predictor.name to
  the canary's name and remove its entry" (apis/serving/v1beta1/inference_service.go, the comment on
  Canary): stable then is the canary's Deployment, already running, and its HPA takes stable's minimum. The
  old stable's HorizontalPodAutoscaler is not deleted with its Deployment: the cleanup lists Deployments and
  Services only, and the HPA's owner is the InferenceService (a KServe bug: it is left behind, scaling
  nothing; seen on the controller).
- spec.canary is `listType=atomic` (inference_service.go): one manager owns the whole list. KServe's
  validation requires each entry's predictor.name, unique and other than stable's, and one model, and
  refuses maxReplicas, scaleTarget, scaleMetric and autoScaling on it (inference_service_validation.go,
  validateCanarySpecs); it accepts canaries in Standard mode only. Its defaulting webhook re-encodes the
  object from its Go structs, so an entry's model comes back with `name: ""` and `resources: {}` (seen on
  the controller): kube.is_applied counts such empty additions as no difference.

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
KServe reports it ready. A predictor already named after the intended stable but holding another artifact (its
model edited, or a manifest from before the promotion re-applied) gets stable's artifact written back in place.
Warm versions (TrafficIntent.warm, spec.keepWarm) are entries at 0 % after the routed one, never named by the route:
going back to one promotes an entry already running, and the old stable becomes a warm entry under the name its
Deployment has, so nothing is deleted. An InferenceService write that drops a predictor (KServe deletes its
Deployment and Service at once) waits until the route's model rules carry the intent (a round whose route write
had nothing to do) and the route's Gateways have judged its current generation (gateway_api.caught_up): a
Gateway routes by the generation it last processed. A user's pin to that Service is not waited on.
A version is ready when KServe reports it (stable: PredictorReady True in a status whose address names stable's predictor Service, so one that saw the
predictor's current name; status.observedGeneration is no evidence, being stable's Deployment's generation, not
the InferenceService's (inference_service_status.go, PropagateRawStatus; seen on the controller); a model written
in place under the same name has no such evidence, and PredictorReady, its Deployment's Available, stays True through
the roll; a canary: its canaryStatuses[] entry ready) and the route finds it ready.
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
from dataclasses import dataclass
from urllib.parse import urlsplit
from typing import Any

from ..api.modelversion import ModelVersionSpec
from ..kube import FieldPath, is_applied, round_tripped
from ..rollout import TrafficIntent
from .base import (IDENTITY, BackendMisconfigured, BackendState, VersionUnavailable, annotations_of, dig, kept, merged,
                   objects_at, unit_name, units_by_name)
from .inference_service import BOOKKEEPING, MODE, MODEL, VERSION_MODELS, model_version, predictor_model, recorded, newest

CANARY: FieldPath = ("spec", "canary")
PREDICTOR_NAME: FieldPath = ("spec", "predictor", "name")
SERVICE_NAME_LENGTH = 63  # a Service name is a DNS-1035 label


def predictor_service(isvc: str, predictor_name: str | None) -> str:
    """The Deployment and Service KServe names for a predictor of InferenceService `isvc`
    (constants.PredictorServiceName)."""
    return f"{isvc}-{predictor_name}-predictor" if predictor_name else f"{isvc}-predictor"


@dataclass(frozen=True)
class Layout:
    """Which version each predictor of a Standard-mode InferenceService serves, as its spec says, and which of them
    KServe reports ready. Read once per observe or apply (`layout`) and passed along."""

    stable: str | None
    """The version of spec.predictor's artifact; None when it is no known version's."""
    canaries: dict[str, dict[str, Any]]
    """Version -> its spec.canary[] entry."""
    services: dict[str, str]
    """Version -> its predictor Service: stable's as it is named now, any other version's as its canary's would be."""
    ready: frozenset[str]
    """The versions KServe reports ready (`kserve_ready`)."""


def _known(isvc: dict[str, Any], versions: dict[str, ModelVersionSpec]) -> set[str]:
    return set(versions) | set(recorded(isvc, VERSION_MODELS, dict))


def layout(isvc: dict[str, Any], versions: dict[str, ModelVersionSpec]) -> Layout:
    """The versions of the predictor and of each canary entry, and which KServe reports ready (pure);
    BackendMisconfigured for a canary entry that is no version of this deployment (the operator owns spec.canary
    whole: its apply would remove it)."""
    spec = dig(isvc, "spec", "predictor") or {}
    stable = model_version(isvc, dig(spec, "model", "storageUri"), versions)
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
    return Layout(stable, canaries, services, kserve_ready(isvc, stable, services.get(stable), canaries))


def _condition(isvc: dict[str, Any], kind: str) -> str | None:
    return next((c.get("status") for c in objects_at(isvc, "status", "conditions") if c.get("type") == kind), None)


def kserve_ready(isvc: dict[str, Any], stable: str | None, stable_service: str | None,
                 canaries: dict[str, dict[str, Any]]) -> frozenset[str]:
    """The versions KServe reports ready (pure): `stable` when PredictorReady is True in a status whose address is
    `stable_service`'s (KServe reconciled the predictor's current name); a version of `canaries` when its
    status.canaryStatuses[] entry is ready."""
    ready = set()
    host = urlsplit(str(dig(isvc, "status", "address", "url") or "")).hostname or ""
    if stable is not None and _condition(isvc, "PredictorReady") == "True" and host.split(".")[0] == stable_service:
        ready.add(stable)
    statuses = {s.get("name"): s for s in objects_at(isvc, "status", "canaryStatuses")}
    for version, entry in canaries.items():
        if (statuses.get(dig(entry, "predictor", "name")) or {}).get("ready") is True:
            ready.add(version)
    return frozenset(ready)


def observe_standard(found: Layout, route: BackendState) -> BackendState:
    """Readiness, units and drift of a Standard-mode InferenceService laid out as `found` and the route that splits
    between its predictor Services (`route`: gateway_api.read_route over `found.services`) (pure). A version is
    ready when KServe reports it ready and the route finds its Service ready; units are the predictor Services."""
    ready = found.ready & route.ready_versions
    present = ({found.stable} if found.stable else set()) | set(found.canaries)
    units = {v: found.services[v] for v in present}
    return BackendState(ready, units, route.drift, refused=route.refused, pins=route.pins,
                        warm_ready=found.ready & set(found.canaries), keeps_no_warm=None)


def route_intent(intent: TrafficIntent, found: Layout) -> TrafficIntent:
    """What the route carries of `intent`: a candidate gets its ref (at its weight), and a new stable all of it, only
    once KServe reports its predictor ready, so that the route never names a Service KServe has not made yet (a
    Gateway then reports the route's references unresolved, and nothing on it reads as ready); until then stable's
    traffic stays where it is."""
    if intent.stable != found.stable and found.stable is not None and intent.stable not in found.ready:
        return TrafficIntent(found.stable)
    if intent.candidate is None or intent.candidate == found.stable or intent.candidate in found.ready:
        return intent
    return TrafficIntent(intent.stable)


def _predictor_names(isvc: dict[str, Any]) -> set[str]:
    return {dig(isvc, *PREDICTOR_NAME) or ""} | {dig(e, "predictor", "name") for e in objects_at(isvc, *CANARY)}


def removed_predictors(isvc: dict[str, Any], config: dict[str, Any]) -> set[str]:
    """The predictors (stable's, canaries') of `isvc` that applying `config` drops, by name: KServe then deletes
    their Deployments and Services (pure)."""
    after = merged(isvc, {"spec": {"predictor": dig(config, "spec", "predictor") or {}}})
    after["spec"]["canary"] = dig(config, *CANARY) or []
    return _predictor_names(isvc) - _predictor_names(after)


def config_standard(isvc: dict[str, Any], found: Layout, intent: TrafficIntent,
                    versions: dict[str, ModelVersionSpec]) -> dict[str, Any] | None:
    """The operator's complete applied configuration of the Standard-mode InferenceService `isvc`, laid out as
    `found`, for `intent` (pure); None when the object holds it. The candidate is the first spec.canary entry, named
    after its unit name, carrying its artifact, trafficPercent its weight; promotion names the predictor after the
    promoted entry and removes the entry. A new stable that is no running entry (a manual rollback to a retained
    version) is first that entry, at 0 %, and promoted once KServe reports it ready. Each warm version is an entry at
    0 % after those, left out when nothing can deploy it. VersionUnavailable when it would write the artifact of a
    routed version whose ModelVersion is gone and that the object does not hold either."""
    name = dig(isvc, "metadata", "name")
    models = recorded(isvc, VERSION_MODELS, dict)
    live_annotations = annotations_of(isvc)
    annotations = {k: live_annotations[k] for k in BOOKKEEPING if isinstance(live_annotations.get(k), str)}

    def model_of(version: str, live: dict[str, Any] | None = None) -> dict[str, Any]:
        """The version's model: its ModelVersion's, else as the object holds it (`live`) or recorded it."""
        if version in versions:
            return predictor_model(versions[version])
        if live is not None or version in models:
            return dict(live or models[version])
        raise VersionUnavailable(version, f"InferenceService {name} predictor")

    predictor = kept(isvc, MODEL, PREDICTOR_NAME).get("spec", {}).get("predictor", {})
    staged = None  # a new stable not yet running: brought up as the canary entry first
    if intent.stable != found.stable:
        promoted = found.canaries.get(intent.stable)
        # Stable's Deployment already named after the intended stable: its model was changed under it (a user's edit,
        # a re-applied manifest older than the promotion); KServe refuses an entry of stable's own name.
        renamed = predictor.get("name") == unit_name(intent.stable)
        if (promoted is not None and intent.stable in found.ready) or found.stable is None or renamed:
            # Promotion as KServe documents it: the predictor takes the canary's name (and so its Deployment and
            # Service, already running) and its model; the entry goes. With no stable known to keep serving, or
            # stable's Deployment already the intended stable's, stable's artifact is written in place.
            model = dict(promoted["predictor"]["model"]) if promoted else model_of(intent.stable)
            predictor = {**predictor, "model": model}
            if promoted:
                predictor["name"] = promoted["predictor"]["name"]
        else:
            # A rollback to a retained version, say: the version running now keeps serving, and keeps its
            # Deployment's name, until the new one runs as an entry of its own (never written in place, which would
            # leave the route naming a Service KServe never makes, and two versions on one Deployment).
            staged = intent.stable
    # The entry of the version routed to, or about to be: a candidate (a drill's fallback), or a staged new stable.
    routed_entry = staged if staged is not None else (
        intent.candidate if intent.candidate is not None and intent.candidate != intent.stable else None)
    canary: list[dict[str, Any]] = []
    if routed_entry is not None:
        unit = unit_name(routed_entry)
        service = predictor_service(name, unit)
        if len(service) > SERVICE_NAME_LENGTH:
            raise BackendMisconfigured(
                f"version {routed_entry}'s predictor Service would be {service}, longer than "
                f"{SERVICE_NAME_LENGTH} characters: a shorter InferenceService name (serving.kserve.name) is needed")
        model = model_of(routed_entry, dig(found.canaries.get(routed_entry), "predictor", "model"))
        canary = [{"predictor": {"name": unit, "model": model},
                   "trafficPercent": 0 if staged is not None else intent.candidate_weight}]
    entries = {entry["predictor"]["name"] for entry in canary} | {predictor.get("name")}
    # Kept warm: an entry at 0 %, never routed to. Not stable, nor the version whose Deployment stays stable's.
    serving = {intent.stable, found.stable if predictor.get("name") == dig(isvc, *PREDICTOR_NAME) else None}
    for version in intent.warm:
        unit = unit_name(version)
        if version in serving or unit in entries:
            continue
        try:
            model = model_of(version, dig(found.canaries.get(version), "predictor", "model"))
        except VersionUnavailable:
            continue  # nothing to deploy it from: a warm version is a convenience, never a reason to fail a round
        if len(predictor_service(name, unit)) <= SERVICE_NAME_LENGTH:
            canary.append({"predictor": {"name": unit, "model": model}, "trafficPercent": 0})
            entries.add(unit)
    # Every version's model as written, so that the versions stay known (their Services named, stable restored)
    # once their ModelVersions are gone.
    written = [(found.stable, dig(isvc, *MODEL))] if found.stable is not None else []
    if intent.stable != found.stable and staged is None:
        written.append((intent.stable, predictor["model"]))
    if routed_entry is not None:
        written.append((routed_entry, canary[0]["predictor"]["model"]))
    kept_models = models
    for version, model in written:
        if not round_tripped(model, kept_models.get(version)):  # as KServe's webhook leaves it, it is the same
            kept_models = newest(kept_models, version, model)
    if kept_models != models:
        annotations[VERSION_MODELS] = json.dumps(kept_models)
    spec = {"predictor": predictor, "canary": canary} if canary else {"predictor": predictor}
    config = merged(kept(isvc, *IDENTITY, MODE), {"metadata": {"annotations": annotations}, "spec": spec})
    if is_applied(isvc, config, absent=() if canary else (CANARY,)):
        return None
    config["metadata"]["resourceVersion"] = isvc["metadata"]["resourceVersion"]
    return config
