"""kopf wiring: load objects, call the pure core, apply its decision, write results.

One daemon per ModelDeployment runs `tick` in a loop: it sleeps until the next analysis
is due and wakes early when the spec changes. Storage is GitOps-clean: kopf keeps its
progress in `status.kopf`, the finalizer is `modelops.io/finalizer`, and no annotation is
written on the resources users own (only on the backend objects the operator drives).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone
from typing import Any

import kopf
import kubernetes
from pydantic import ValidationError

from . import GROUP, VERSION, metrics
from .analysis.measure import analyse
from .analysis.prometheus import provider_for
from .analysis.promql import Subject
from .api.modeldeployment import ModelDeploymentSpec, ModelDeploymentStatus
from .api.modelversion import ModelVersionSpec
from .kube import ApiNotInstalled, Kube, Resource, Secrets, merge_patch
from .modelversions import served_by, served_by_changes, version_status
from .rollout import AnalysisReport, Observations, TrafficIntent, decide, intent_of, seconds_to_next_analysis
from .rollout.conditions import blocked
from .rollout.engine import rfc3339
from .routers.base import BackendMisconfigured, BackendState, Router, Target
from .routers.registry import routers_for

DEPLOYMENTS = Resource(GROUP, VERSION, "modeldeployments", "ModelDeployment")
VERSIONS = Resource(GROUP, VERSION, "modelversions", "ModelVersion")
IDLE_SECONDS = 30.0  # a settled deployment re-checks its backend this often; spec changes wake it at once
CONVERGE_SECONDS = 1.0  # while a backend is still moving toward the intent


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.finalizer = "modelops.io/finalizer"
    settings.persistence.progress_storage = kopf.StatusProgressStorage(field="status.kopf.progress")
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.posting.level = logging.WARNING
    kubernetes.config.load_config()
    client = kubernetes.client.ApiClient()
    memo.kube, memo.secrets = Kube(client), Secrets(client)
    memo.routers = routers_for(memo.kube)


class NoDiffBase(kopf.DiffBaseStorage):
    """No copy of the last handled spec: no handler here reacts to a diff (the daemon reads the
    live spec; deletion needs none), so nothing is stored on the objects users own."""

    def fetch(self, *, body: kopf.Body) -> None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: Any) -> None:
        pass


@kopf.index(GROUP, VERSION, "modelversions")
def model_versions(namespace: str, name: str, spec: kopf.Spec, **_: Any) -> dict[tuple[str, str], tuple[str, dict]]:
    """(namespace, model) -> (object name, spec) of each of its versions; kept current by the watch."""
    return {(namespace, spec.get("model")): (name, dict(spec))}


def versions_of(index: kopf.Index, namespace: str, model: str) -> tuple[dict[str, ModelVersionSpec], dict[str, str]]:
    """Valid versions of a model by version, and their object names."""
    specs, names = {}, {}
    for name, spec in index.get((namespace, model), []):
        try:
            parsed = ModelVersionSpec.model_validate(spec)
        except ValidationError:
            continue  # reported on the ModelVersion itself
        specs[parsed.version], names[parsed.version] = parsed, name
    return specs, names


@kopf.on.event(GROUP, VERSION, "modelversions")
async def model_version_status(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    if body.get("metadata", {}).get("deletionTimestamp"):
        return
    status = {k: v for k, v in (body.get("status") or {}).items() if k != "kopf"}
    new = version_status(dict(body["spec"]), status, body["metadata"].get("generation"), rfc3339(_now()))
    patch = merge_patch(status, {**status, **new})
    if patch:
        await memo.kube.patch_status(VERSIONS, body["metadata"]["namespace"], body["metadata"]["name"], patch)


@kopf.on.event(GROUP, VERSION, "modeldeployments")
def wake_on_spec_change(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    generation = body.get("metadata", {}).get("generation")
    if generation != memo.get("seen_generation"):
        memo.seen_generation = generation
        if "wake" in memo:
            memo.wake.set()


@kopf.daemon(GROUP, VERSION, "modeldeployments", cancellation_timeout=10)
async def run_deployment(body: kopf.Body, memo: kopf.Memo, model_versions: kopf.Index, **_: Any) -> None:
    memo.wake = asyncio.Event()
    while True:
        delay = await tick(body, memo, model_versions)
        try:
            await asyncio.wait_for(memo.wake.wait(), timeout=delay)
        except asyncio.TimeoutError:
            pass
        memo.wake.clear()


async def tick(body: kopf.Body, memo: kopf.Memo, index: kopf.Index) -> float:
    """One round: observe the backend, measure if due, decide, apply, record. Returns seconds to sleep."""
    meta = body["metadata"]
    namespace, name, generation = meta["namespace"], meta["name"], meta.get("generation")
    old = current_status(body, memo)
    status = ModelDeploymentStatus.model_validate(old)
    try:
        spec = ModelDeploymentSpec.model_validate(dict(body["spec"]))
    except ValidationError as e:
        return await hold(body, memo, status, "InvalidSpec", f"spec is invalid: {e}", IDLE_SECONDS)
    versions, version_names = versions_of(index, namespace, spec.model)
    if spec.version not in versions:
        message = f"no valid ModelVersion of model {spec.model!r} with version {spec.version} in {namespace}"
        return await hold(body, memo, status, "ModelVersionMissing", message, CONVERGE_SECONDS * 5)
    router, target = memo.routers[spec.serving.backend], Target(namespace, name, spec.serving)
    unsupported = [c.name for c in spec.analysis.checks if c.template is not None and c.template not in router.templates]
    if unsupported:
        message = f"checks {unsupported} use a template the {spec.serving.backend.value} backend has no metrics for"
        return await hold(body, memo, status, "InvalidSpec", message, IDLE_SECONDS)
    try:
        backend = await router.observe(target, versions, intent_of(status))
        report = await measure_if_due(spec, status, backend, router, target, memo, _now())
        decision = decide(spec, status, Observations(backend.ready_versions, report, generation), _now())
        settled = await router.apply(target, decision.intent, versions, backend)
    except ApiNotInstalled as e:
        return await hold(body, memo, status, "BackendNotInstalled", str(e), IDLE_SECONDS)
    except BackendMisconfigured as e:
        return await hold(body, memo, status, "BackendMisconfigured", str(e), CONVERGE_SECONDS * 5)
    except kubernetes.client.ApiException as e:
        message = f"backend API error {e.status} {e.reason}: {(e.body or '')[:300]}"
        return await hold(body, memo, status, "BackendError", message, CONVERGE_SECONDS * 5)
    for event in decision.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
        metrics.DECISIONS.labels(namespace, name, event.reason).inc()
    for drift in backend.drift:
        kopf.warn(body, reason="OutOfBandChange", message=drift)
    await write_status(body, memo, old, decision.status)
    await record_serving_roles(memo, namespace, name, version_names, status, decision.status)
    metrics.CANARY_WEIGHT.labels(namespace, name).set(decision.status.canary_weight)
    return next_delay(spec, decision.status, decision.intent.weights(), backend) if settled else CONVERGE_SECONDS


async def measure_if_due(spec: ModelDeploymentSpec, status: ModelDeploymentStatus, backend: BackendState,
                         router: Router, target: Target, memo: kopf.Memo, now: datetime) -> AnalysisReport | None:
    if seconds_to_next_analysis(spec, status, now) != 0.0:
        return None
    assert status.canary_version is not None and status.stable_version is not None
    window = spec.analysis.window or spec.analysis.interval

    def subject(version: str) -> Subject:
        return Subject(target.namespace, spec.model, version, backend.units.get(version, version),
                       router.object_name(target), window)

    started = time.monotonic()
    provider = await provider_for(spec.analysis.prometheus, target.namespace, memo.secrets)
    results = await analyse(provider, spec.analysis.checks, router.templates, subject(status.canary_version),
                            subject(status.stable_version), now, rfc3339(now))
    metrics.ANALYSIS_SECONDS.labels(target.namespace, target.deployment).set(time.monotonic() - started)
    metrics.ANALYSES.labels(target.namespace, target.deployment).inc()
    return AnalysisReport(now, results)


def next_delay(spec: ModelDeploymentSpec, status: ModelDeploymentStatus, weights: dict[str, int],
               backend: BackendState) -> float:
    if any(version not in backend.ready_versions for version in weights):
        return CONVERGE_SECONDS
    until_analysis = seconds_to_next_analysis(spec, status, _now())
    if until_analysis is not None:
        return max(until_analysis, 0.05)
    return CONVERGE_SECONDS if status.canary_version is not None else IDLE_SECONDS


async def hold(body: kopf.Body, memo: kopf.Memo, status: ModelDeploymentStatus, reason: str, message: str,
               retry_in: float) -> float:
    """Cannot act: say why once (event) and in status; leave whatever serves untouched."""
    if status.message != message:
        kopf.warn(body, reason=reason, message=message[:1000])
    new = blocked(status, reason, message, frozenset(), rfc3339(_now()), body["metadata"].get("generation"))
    await write_status(body, memo, current_status(body, memo), new)
    return retry_in


def current_status(body: kopf.Body, memo: kopf.Memo) -> dict[str, Any]:
    """The status as last written: the watch may not have delivered our own last write yet."""
    if memo.get("stale_resource_version") == body["metadata"].get("resourceVersion"):
        return dict(memo.written_status)
    return {k: v for k, v in (body.get("status") or {}).items() if k != "kopf"}


async def write_status(body: kopf.Body, memo: kopf.Memo, old: dict[str, Any], new: ModelDeploymentStatus) -> None:
    """One merge patch, and only when something changed."""
    wire = new.to_wire()
    patch = merge_patch(old, wire)
    if patch is None:
        return
    meta = body["metadata"]
    await memo.kube.patch_status(DEPLOYMENTS, meta["namespace"], meta["name"], {"status": patch})
    memo.stale_resource_version, memo.written_status = meta.get("resourceVersion"), wire
    metrics.STATUS_PATCHES.labels(meta["namespace"], meta["name"]).inc()


async def record_serving_roles(memo: kopf.Memo, namespace: str, deployment: str, names: dict[str, str],
                               before: ModelDeploymentStatus, after: ModelDeploymentStatus) -> None:
    for version, role in served_by_changes(before, after).items():
        if version not in names:
            continue
        mv = await memo.kube.get(VERSIONS, namespace, names[version])
        if mv is None:
            continue
        entries = served_by(mv.get("status") or {}, deployment, role)
        if entries != (mv.get("status") or {}).get("servedBy", []):
            await memo.kube.patch_status(VERSIONS, namespace, names[version], {"status": {"servedBy": entries}})


@kopf.on.delete(GROUP, VERSION, "modeldeployments")
async def release(body: kopf.Body, memo: kopf.Memo, model_versions: kopf.Index, **_: Any) -> None:
    """Leave the backend on the stable version, and the versions no longer marked as served by it."""
    meta = body["metadata"]
    status = ModelDeploymentStatus.model_validate(current_status(body, memo))
    try:
        spec = ModelDeploymentSpec.model_validate(dict(body["spec"]))
    except ValidationError:
        return  # never drove a backend: nothing to leave in order, and deletion must not hang
    versions, names = versions_of(model_versions, meta["namespace"], spec.model)
    if status.stable_version in versions:
        target = Target(meta["namespace"], meta["name"], spec.serving)
        router = memo.routers[spec.serving.backend]
        try:
            state = await router.observe(target, versions, None)
            await router.apply(target, TrafficIntent(status.stable_version), versions, state)
        except ApiNotInstalled:
            pass  # nothing was ever driven there
    await record_serving_roles(memo, meta["namespace"], meta["name"], names, status, ModelDeploymentStatus())


def _now() -> datetime:
    return datetime.now(timezone.utc)
