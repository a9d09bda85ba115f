"""KServe InferenceService (serverless mode): the canary is `spec.predictor.canaryTrafficPercent`.

KServe facts this module relies on: changing the predictor (storageUri, format, runtime)
makes a new revision that gets canaryTrafficPercent percent, while the last fully rolled
out revision keeps the rest (tagged `prev`); removing the field sends everything to the
latest revision; 0 sends everything back to the rolled-out one. Status lives under
`status.components.predictor` (latestCreatedRevision, latestReadyRevision,
latestRolledoutRevision, traffic[]); status, and any of those, may be absent or null.

Which version a revision serves is read from the spec's storageUri, so a version whose
ModelVersion is gone is unknown in the spec. When the stable version's ModelVersion is gone
and the spec holds another artifact, a rollback cannot rewrite stable's artifact: it sets
canaryTrafficPercent to 0, which leaves all traffic on the rolled-out revision (stable's),
and without such a revision it raises VersionUnavailable.

The predictor is written with JSON merge patches, which keep every key they do not
mention: a new artifact therefore sets `runtime` to null when it names none, and replaces
`modelFormat` whole.
"""

from __future__ import annotations

from typing import Any

from ..analysis.promql import TemplateQuery
from ..api.modeldeployment import CheckTemplate
from ..api.modelversion import ModelVersionSpec
from ..kube import Kube, Resource
from ..rollout import TrafficIntent
from .base import OwnedObjects, BackendState, Target, VersionUnavailable, annotations_of, artifact_version, dig, replacing, spec_of

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
    ), _SAMPLES)


_SAMPLES = _either(
    f"sum(increase(kn_serving_invocation_duration_seconds_count{{{_NEW}}}[{{{{window}}}}]))",
    f"sum(increase(revision_app_request_count{{{_OLD}}}[{{{{window}}}}]))",
)

TEMPLATES = {
    # A revision with traffic but no 5xx has no 5xx series: count that as zero errors, not as no data.
    CheckTemplate.errorRate: TemplateQuery(_either(
        f'(sum(rate(kn_serving_invocation_duration_seconds_count{{{_NEW}, http_response_status_code=~"5.."}}[{{{{window}}}}])) or vector(0))'
        f" / sum(rate(kn_serving_invocation_duration_seconds_count{{{_NEW}}}[{{{{window}}}}]))",
        f'(sum(rate(revision_app_request_count{{{_OLD}, response_code_class="5xx"}}[{{{{window}}}}])) or vector(0))'
        f" / sum(rate(revision_app_request_count{{{_OLD}}}[{{{{window}}}}]))",
    ), _SAMPLES),
    CheckTemplate.latencyP50: _quantile(0.5),
    CheckTemplate.latencyP95: _quantile(0.95),
    CheckTemplate.latencyP99: _quantile(0.99),
    CheckTemplate.meanLatency: TemplateQuery(_either(
        f"sum(rate(kn_serving_invocation_duration_seconds_sum{{{_NEW}}}[{{{{window}}}}]))"
        f" / sum(rate(kn_serving_invocation_duration_seconds_count{{{_NEW}}}[{{{{window}}}}]))",
        f"sum(rate(revision_app_request_latencies_sum{{{_OLD}}}[{{{{window}}}}]))"
        f" / sum(rate(revision_app_request_latencies_count{{{_OLD}}}[{{{{window}}}}])) / 1000",
    ), _SAMPLES),
}


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
# they must not make the candidate look unready while KServe catches up.
ARTIFACT_GENERATION = "modelops.io/artifact-generation"


def _percent_text(percent: int | None) -> str:
    return "unset" if percent is None else str(percent)


def _generation(isvc: dict[str, Any]) -> int:
    return _integer(dig(isvc, "metadata", "generation")) or 0


def observe(isvc: dict[str, Any] | None, versions: dict[str, ModelVersionSpec], last: TrafficIntent | None) -> BackendState:
    """Readiness and drift, from the InferenceService alone (pure)."""
    if isvc is None:
        return BackendState()
    spec, status = _predictor(isvc)
    in_spec = artifact_version(dig(spec, "model", "storageUri"), versions)
    # An artifact generation that is absent or unreadable: trust only a status of the current generation.
    since = _integer(annotations_of(isvc).get(ARTIFACT_GENERATION))
    since = _generation(isvc) if since is None else since
    current = (_integer(dig(isvc, "status", "observedGeneration")) or 0) >= since
    latest = status.get("latestCreatedRevision")
    ready: set[str] = set()
    units: dict[str, str] = {}
    if in_spec is not None and current and latest and status.get("latestReadyRevision") == latest:
        ready.add(in_spec)
        units[in_spec] = latest
    rolled_out = status.get("latestRolledoutRevision")
    if last is not None and rolled_out and rolled_out != latest and last.stable not in ready:
        # The latest revision is a candidate (or stable's restored artifact, not ready yet):
        # the rolled-out revision still serves the stable version.
        ready.add(last.stable)
        units[last.stable] = rolled_out
    drift = []
    applied = annotations_of(isvc).get(APPLIED_PERCENT)
    live = _percent_text(spec.get("canaryTrafficPercent"))
    if applied is not None and live != applied:
        drift.append(f"spec.predictor.canaryTrafficPercent is {live}, the operator had set {applied}: "
                     "restoring it (pin a weight with spec.trafficOverride instead)")
    return BackendState(frozenset(ready), units, tuple(drift))


def _model(version: ModelVersionSpec, live: Any = None) -> dict[str, Any]:
    """spec.predictor.model for `version`; over a `live` one, as a merge patch that drops its runtime and format."""
    model: dict[str, Any] = {"modelFormat": {"name": version.artifact.format}, "storageUri": version.artifact.uri}
    if version.artifact.runtime:
        model["runtime"] = version.artifact.runtime
    if not isinstance(live, dict):
        return model
    model = replacing(live, model, ("runtime",))
    model["modelFormat"] = replacing(live.get("modelFormat"), model["modelFormat"])
    return model


def _rolled_out_elsewhere(status: dict[str, Any]) -> bool:
    """A rolled-out revision other than the latest exists: canaryTrafficPercent 0 sends everything there."""
    rolled_out = status.get("latestRolledoutRevision")
    return bool(rolled_out) and rolled_out != status.get("latestCreatedRevision")


def patch_for(isvc: dict[str, Any], intent: TrafficIntent, versions: dict[str, ModelVersionSpec],
              state: BackendState) -> dict[str, Any] | None:
    """The one merge patch that moves the InferenceService toward `intent` (pure); None when it is there.

    VersionUnavailable when it would have to write the artifact of a version whose ModelVersion is gone."""
    spec, status = _predictor(isvc)
    wanted = intent.candidate or intent.stable
    predictor: dict[str, Any] = {}
    annotations: dict[str, str] = {}
    percent: int | None
    if artifact_version(dig(spec, "model", "storageUri"), versions) != wanted:
        if wanted in versions:
            # A new revision for `wanted`, at 0 % until it is ready; the rolled-out revision keeps
            # everything. On a rollback this one write takes all traffic back to stable.
            predictor["model"] = _model(versions[wanted], spec.get("model"))
            annotations[ARTIFACT_GENERATION] = str(_generation(isvc) + 1)
        elif intent.candidate is not None or not _rolled_out_elsewhere(status):
            raise VersionUnavailable(wanted, f"InferenceService {dig(isvc, 'metadata', 'name')} predictor")
        # else: stable's ModelVersion is gone, so its artifact cannot be restored; the rolled-out
        # revision serves stable, and 0 % leaves it all the traffic.
        percent = 0
    elif intent.candidate is not None:
        percent = intent.candidate_weight
    else:
        # Stable's own artifact: all traffic to its latest revision, once that revision is ready.
        latest_serves_it = state.units.get(wanted) == status.get("latestCreatedRevision")
        percent = None if wanted in state.ready_versions and latest_serves_it else 0
    if spec.get("canaryTrafficPercent") != percent:
        predictor["canaryTrafficPercent"] = percent
    if not predictor and annotations_of(isvc).get(APPLIED_PERCENT) == _percent_text(percent):
        return None
    annotations[APPLIED_PERCENT] = _percent_text(percent)
    return {"metadata": {"annotations": annotations}, "spec": {"predictor": predictor}}


class KServeRouter:
    templates = TEMPLATES

    def __init__(self, kube: Kube):
        self.objects = OwnedObjects(kube)

    def _name(self, target: Target) -> str:
        return target.object_name(target.serving.kserve.name if target.serving.kserve else None)

    object_name = _name

    async def observe(self, target: Target, versions: dict[str, ModelVersionSpec],
                      last: TrafficIntent | None) -> BackendState:
        return observe(await self.objects.get(INFERENCE_SERVICE, target, self._name(target)), versions, last)

    async def apply(self, target: Target, intent: TrafficIntent, versions: dict[str, ModelVersionSpec],
                    state: BackendState, *, create: bool = True) -> bool:
        name = self._name(target)
        isvc = await self.objects.get(INFERENCE_SERVICE, target, name)
        if isvc is None:
            if not create:
                return True
            model = _model(spec_of(versions, intent.stable, f"creating InferenceService {name}"))
            body = {"metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "modelops"}},
                    "spec": {"predictor": {"model": model}}}
            await self.objects.create(INFERENCE_SERVICE, target, body)
            return False
        patch = patch_for(isvc, intent, versions, state)
        if patch is not None:
            await self.objects.patch(INFERENCE_SERVICE, target, name, patch)
            return False
        # Without a candidate, rest only once the canary field is gone (stable's own revision serves all),
        # or when stable's ModelVersion is gone and the rolled-out revision holds all traffic (no more to do).
        wanted = intent.candidate or intent.stable
        return intent.candidate is not None or "canaryTrafficPercent" not in _predictor(isvc)[0] or wanted not in versions
