"""kopf wiring: each ModelDeployment gets a daemon that runs `reconcile.run_round` in a loop.

The daemon sleeps until the next analysis is due and wakes at once when the spec changes
(which also gives up a measurement in flight), or when the watch shows a change of a backend
object it drives (the owner annotation, or the owner label of Seldon v2's Models, names it),
of an EndpointSlice of a Service its HTTPRoute routes to, or of a ModelVersion of its model
(these let a measurement in flight finish, and the next round follows it at once). Routers
read backend objects from the same watch (`watched.WatchedObjects`), not with a GET: a
settled deployment reads nothing until something changes, and re-checks on its own only
every `reconcile.IDLE_SECONDS` (a resync, in case an event was lost). With `--shard` it
drives only its shard's deployments (`in_my_shard`). Storage is GitOps-clean: kopf keeps
its progress in `status.kopf`, the finalizer is `modelops.io/finalizer` (`-<shard>` with a
shard), and no annotation is written on the resources users own (only on the backend
objects the operator drives).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import kopf

from . import GROUP, VERSION, metrics
from .analysis.prometheus import close_sessions, provider_for
from .analysis.provider import Asker, MetricProvider
from .analysis.sources import resolve
from .api.metricprovider import ClusterMetricProviderSpec
from .api.modeldeployment import DEFAULT_PROVIDER, Analysis, Backend, ModelDeploymentStatus
from .api.notifier import ClusterNotifierSpec
from .kube import ConfigMaps, Kube, Secrets, api_client, merge_patch
from .modelversions import VersionRecord, catalog, holder_of, record_of, version_status
from .notifications import Notifications
from .problems import EXPECTED, classify
from .reconcile import VERSIONS, Memory, Shell, current_status, record_serving_roles, run_round, serving_of, spec_in_force
from .rollout import TrafficIntent
from .rollout.values import rfc3339
from .routers.base import OWNER_ANNOTATION, BackendNotOwned, Target, unit_name
from .routers.gateway_api import ENDPOINT_SLICES, HTTP_ROUTE, SERVICE_NAME_LABEL, GatewayAPIRouter, readiness_view
from .routers.inference_service import INFERENCE_SERVICE as KSERVE
from .routers.kserve import KServeRouter
from .routers.kserve_config import DEFAULT_NAMESPACE as DEFAULT_KSERVE_NAMESPACE, KServeSettings
from .routers.kserve_standard import predictor_service
from .routers.registry import routers_for
from .routers.seldon import SELDON_DEPLOYMENT
from .routers.seldon_v2 import EXPERIMENT as SELDON_EXPERIMENT, MODEL as SELDON_MODEL, OWNER_LABEL
from .slots import IN_FLIGHT, RolloutSlots
from .watched import WatchedObjects

log = logging.getLogger(__name__)

BACKEND_RESOURCES = (KSERVE, SELDON_DEPLOYMENT, SELDON_MODEL, SELDON_EXPERIMENT, HTTP_ROUTE)


@dataclass
class Wakeups:
    """Which deployment loops a watched change concerns: each loop's wake event by (namespace, name), and the
    loops whose spec names a topic by (namespace, topic): ("model", its model), whose ModelVersions it needs,
    and ("service", a Service of its HTTPRoute: gatewayAPI's named ones, kserve's predictor Services with
    serving.kserve.httpRoute), whose EndpointSlices its readiness reads."""

    loops: dict[tuple[str, str], asyncio.Event] = field(default_factory=dict)
    topics: dict[tuple[str, tuple[str, str]], set[str]] = field(default_factory=dict)
    followed: dict[tuple[str, str], frozenset[tuple[str, str]]] = field(default_factory=dict)
    """The topics each loop is registered under, so that a round changes only what its spec changed."""

    def follow(self, namespace: str, name: str, wake: asyncio.Event, spec: Mapping[str, Any],
               stable: str | None = None) -> bool:
        """Register the loop under its spec's topics (and `stable`'s, the status' stable version); True when they
        changed (or are new)."""
        self.loops[(namespace, name)] = wake
        serving = spec.get("serving") or {}
        services = set(((serving.get("gatewayAPI") or {}).get("services") or {}).values())
        kserve = serving.get("kserve") or {}
        if kserve.get("httpRoute"):  # Standard mode: stable's predictor Service as KServe first names it, as a
            # promotion renamed it (after the promoted entry), and the candidate's
            isvc = str(kserve.get("name") or name)
            versions = {str(spec.get("version"))} | ({stable} if stable else set())
            services |= {predictor_service(isvc, None)} | {predictor_service(isvc, unit_name(v)) for v in versions}
        topics = frozenset({("model", str(spec.get("model")))} | {("service", service) for service in services})
        if topics == self.followed.get((namespace, name)):
            return False
        self._unregister(namespace, name)
        for topic in topics:
            self.topics.setdefault((namespace, topic), set()).add(name)
        self.followed[(namespace, name)] = topics
        return True

    def followed_by_any(self, namespace: str, topic: tuple[str, str]) -> bool:
        return (namespace, topic) in self.topics

    def forget(self, namespace: str, name: str) -> None:
        self.loops.pop((namespace, name), None)
        self._unregister(namespace, name)

    def _unregister(self, namespace: str, name: str) -> None:
        for topic in self.followed.pop((namespace, name), frozenset()):
            names = self.topics.get((namespace, topic), set())
            names.discard(name)
            if not names:
                self.topics.pop((namespace, topic), None)

    def wake(self, namespace: str, *names: str) -> None:
        for name in names:
            event = self.loops.get((namespace, name))
            if event is not None:
                event.set()

    def wake_followers(self, namespace: str, topic: tuple[str, str]) -> None:
        self.wake(namespace, *self.topics.get((namespace, topic), ()))


@dataclass
class Options:
    """What `modelops run` was told (passed in kopf's memo)."""

    operator_namespace: str = "modelops-system"
    """Where the Secrets of ClusterMetricProviders and ClusterNotifiers are read, and nowhere else."""
    allow_inline_providers: bool = False
    shard: str | None = None
    """The ModelDeployments (and ModelVersion statuses, with those of its deployments' models) this operator
    drives: those labelled SHARD_LABEL=shard; None: those without the label. Each shard is a replica group with
    a Lease of its own."""
    max_rollouts: int | None = None
    """Rollouts in flight at once, over all the deployments it drives; None: no limit (see slots.py)."""
    max_rollouts_per_model: int | None = None
    """Rollouts in flight at once per model (spec.model in a namespace); None: no limit."""
    kserve_namespace: str = DEFAULT_KSERVE_NAMESPACE
    """Where KServe's ConfigMap inferenceservice-config is read (routers/kserve_config.py)."""


SHARD_LABEL = "modelops.io/shard"


def in_my_shard(labels: Mapping[str, str], memo: kopf.Memo, **_: Any) -> bool:
    """kopf's filter: an object's label names exactly one shard (absent or empty: the unlabelled one), so no two
    shards drive one object and a shard running for every label in use drops none."""
    return (labels.get(SHARD_LABEL) or None) == memo.options.shard


@dataclass
class Sources:
    """Where analyses may query: kopf's indexes of ClusterMetricProviders and namespaces' labels.

    Indexes, not event handlers filling dicts: kopf starts no daemon before every index holds
    the whole initial listing, so a restarted operator never analyses with a provider or a
    namespace label it has not read yet (an Error verdict that counts toward noDataLimit)."""

    options: Options
    secrets: Secrets
    providers: Mapping[str, Iterable[ClusterMetricProviderSpec | None]] = field(default_factory=dict)
    namespace_labels: Mapping[str, Iterable[dict[str, str]]] = field(default_factory=dict)

    def bind(self, providers: kopf.Index, namespace_labels: kopf.Index) -> None:
        """kopf hands its indexes to handlers only; they are the same live mappings every time."""
        self.providers, self.namespace_labels = providers, namespace_labels

    async def provider(self, analysis: Analysis, asker: Asker, cap: float) -> MetricProvider:
        name = analysis.provider or DEFAULT_PROVIDER
        declared = next(iter(self.providers.get(name, ())), None)
        namespace = asker.namespace
        source = resolve(analysis, namespace, next(iter(self.namespace_labels.get(namespace, ())), None),
                         {name: declared} if declared is not None else {},
                         self.options.operator_namespace, self.options.allow_inline_providers)
        return await provider_for(source.config, source.secrets_namespace, self.secrets, cap=cap, label=source.label,
                                  asker=asker)


@dataclass
class IndexedEndpointSlices:
    """EndpointSlices as the watch keeps them (kopf's index, bound like Sources'): no list per round."""

    index: Mapping[tuple[str, str], Iterable[dict[str, Any]]] = field(default_factory=dict)

    def bind(self, index: kopf.Index) -> None:
        self.index = index

    async def of(self, namespace: str, service: str) -> list[dict[str, Any]]:
        return list(self.index.get((namespace, service), ()))


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    shard = (memo.get("options") or Options()).shard
    # One finalizer per shard: kopf removes its finalizer from the objects its handlers do not match, so shards
    # sharing one would take each other's off in turn.
    settings.persistence.finalizer = "modelops.io/finalizer" + (f"-{shard}" if shard else "")
    settings.persistence.progress_storage = kopf.StatusProgressStorage(field="status.kopf.progress")
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.posting.level = logging.WARNING
    memo.client = await api_client()
    memo.wakeups = Wakeups()
    kube = Kube(memo.client)
    memo.backends = WatchedObjects(kube, BACKEND_RESOURCES, lambda obj: driver_of(obj.get("metadata") or {}) is not None)
    memo.sources = Sources(memo.get("options") or Options(), Secrets(memo.client))
    memo.notifications = Notifications(memo.sources.options.operator_namespace, memo.sources.secrets, _post_event)
    memo.endpoint_slices = IndexedEndpointSlices()
    options = memo.sources.options
    kserve = KServeSettings(ConfigMaps(memo.client), options.kserve_namespace)
    routers = {**routers_for(memo.backends, kserve),
               Backend.gatewayAPI: GatewayAPIRouter(memo.backends, memo.endpoint_slices),
               Backend.kserve: KServeRouter(memo.backends, kserve, memo.endpoint_slices)}
    slots = RolloutSlots(options.max_rollouts, options.max_rollouts_per_model, memo.wakeups.wake)
    memo.shell = Shell(kube, routers, memo.sources.provider, _post_event, notify=memo.notifications.notify, slots=slots)


def _post_event(obj: Any, type_: str, reason: str, message: str) -> None:
    kopf.event(obj, type=type_, reason=reason, message=message[:1000])


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    await memo.notifications.close()  # what is queued gets a moment to go out; then the senders stop
    await close_sessions()
    await memo.client.close()


class NoDiffBase(kopf.DiffBaseStorage):
    """No copy of the last handled spec: no handler here reacts to a diff (the daemon reads the
    live spec; deletion needs none), so nothing is stored on the objects users own."""

    def fetch(self, *, body: kopf.Body) -> None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: Any) -> None:
        pass


@kopf.index(GROUP, VERSION, "clustermetricproviders")
async def metric_providers(name: str, spec: kopf.Spec, **_: Any) -> dict[str, ClusterMetricProviderSpec | None]:
    """name -> its spec; None for an invalid one, which no analysis uses."""
    return {name: _valid_or_none(ClusterMetricProviderSpec, "ClusterMetricProvider", name, spec)}


@kopf.index(GROUP, VERSION, "clusternotifiers")
async def cluster_notifiers(name: str, spec: kopf.Spec, **_: Any) -> dict[str, ClusterNotifierSpec | None]:
    """name -> its spec; None for an invalid one, to which nothing is sent."""
    return {name: _valid_or_none(ClusterNotifierSpec, "ClusterNotifier", name, spec)}


def _valid_or_none(model: Any, kind: str, name: str, spec: kopf.Spec) -> Any:
    try:
        return model.model_validate(dict(spec))
    except ValueError as e:
        log.warning("%s %s is invalid and unused: %s", kind, name, e)
        return None


@kopf.index("", "v1", "namespaces")
async def namespace_labels(name: str, labels: kopf.Labels, **_: Any) -> dict[str, dict[str, str]]:
    return {name: dict(labels)}


@kopf.index(GROUP, VERSION, "modelversions")
async def model_versions(namespace: str, spec: kopf.Spec, body: kopf.Body, **_: Any) -> dict[tuple[str, str], VersionRecord]:
    """(namespace, model) -> every ModelVersion object of it; kept current by the watch."""
    return {(namespace, spec.get("model")): record_of(body)}


def records_of(index: kopf.Index, namespace: str, model: str) -> Iterable[VersionRecord]:
    return index.get((namespace, model), [])


@kopf.on.event(GROUP, VERSION, "modelversions")
async def model_version_status(body: kopf.Body, memo: kopf.Memo, model_versions: kopf.Index, **_: Any) -> None:
    """A ModelVersion's status is written by the shard its label names and by every shard driving a deployment of
    its model, so that one labelled for a shard no operator runs is still checked where it may serve (shards
    writing it compute it from the same ModelVersions)."""
    meta = body["metadata"]
    namespace, model = meta["namespace"], (body.get("spec") or {}).get("model")
    # A version appeared, changed or went: the deployments of its model look at once (the index is updated first).
    memo.wakeups.wake_followers(namespace, ("model", str(model)))
    if meta.get("deletionTimestamp"):
        return
    if in_my_shard(meta.get("labels") or {}, memo) or memo.wakeups.followed_by_any(namespace, ("model", str(model))):
        await check_version(memo.shell, namespace, record_of(body), records_of(model_versions, namespace, model))


async def check_version(shell: Shell, namespace: str, record: VersionRecord, records: Iterable[VersionRecord]) -> None:
    """Write the status a ModelVersion should have, if it has not: content id, phase, a refused duplicate claim."""
    status = record.status
    new = version_status(record.spec, status, record.generation, rfc3339(shell.clock()),
                         duplicate_of=holder_of(records, record), first_seen=record.first_seen)
    patch = merge_patch(status, {**status, **new})
    if patch:
        await shell.kube.patch_status(VERSIONS, namespace, record.name, {"status": patch})


async def check_versions_of(shell: Shell, namespace: str, model: Any, index: kopf.Index) -> None:
    """Check every ModelVersion of a model a deployment begins to follow: those whose events came before it did
    (at the operator's start, or labelled for another shard) were not checked here. Best effort: the next event
    of a ModelVersion checks it again."""
    records = list(records_of(index, namespace, model))
    for record in records:
        try:
            await check_version(shell, namespace, record, records)
        except EXPECTED as e:
            log.warning("ModelVersion %s/%s not checked: %s", namespace, record.name, classify(e).message)
        except Exception:  # noqa: BLE001 - an odd ModelVersion must never keep the deployment's rounds from running
            log.exception("ModelVersion %s/%s not checked", namespace, record.name)


@kopf.on.event(GROUP, VERSION, "modeldeployments", when=in_my_shard)
async def wake_on_spec_change(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A new generation of the spec: the loop gives up a measurement in flight and decides again at once (the only
    event that interrupts a measurement, see reconcile.Memory.spec_changed)."""
    generation = body.get("metadata", {}).get("generation")
    if generation != memo.get("seen_generation"):
        memo.seen_generation = generation
        if "memory" in memo:
            memo.memory.spec_changed.set()
            memo.memory.wake.set()


def driver_of(meta: Mapping[str, Any]) -> str | None:
    """The ModelDeployment a backend object names as its driver (the owner annotation, or Seldon v2's owner label)."""
    return (meta.get("annotations") or {}).get(OWNER_ANNOTATION) or (meta.get("labels") or {}).get(OWNER_LABEL)


async def wake_the_driver(resource: kopf.Resource, type: str | None, body: kopf.Body, namespace: str, meta: kopf.Meta,
                          memo: kopf.Memo, **_: Any) -> None:
    """A backend object changed: the routers' copy is updated (watched.py), then its driver's loop looks at once
    (its own writes echo here too, which is how it sees the backend converge)."""
    memo.backends.saw(resource.group, resource.plural, type, body)
    owner = driver_of(meta)
    if owner:
        memo.wakeups.wake(namespace, owner)


for _backend in BACKEND_RESOURCES:
    kopf.on.event(_backend.group, _backend.version, _backend.plural)(wake_the_driver)


@kopf.index(ENDPOINT_SLICES.group, ENDPOINT_SLICES.version, ENDPOINT_SLICES.plural,
            labels={SERVICE_NAME_LABEL: kopf.PRESENT})
async def endpoint_slices(namespace: str, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[tuple[str, str], dict]:
    """(namespace, Service) -> what readiness reads of each of its EndpointSlices; kept current by the watch."""
    return {(namespace, labels[SERVICE_NAME_LABEL]): readiness_view(dict(body))}


def of_a_followed_service(namespace: str, labels: kopf.Labels, memo: kopf.Memo, **_: Any) -> bool:
    """kopf's filter: an EndpointSlice of a Service some deployment's HTTPRoute routes to (see Wakeups)."""
    service = labels.get(SERVICE_NAME_LABEL)
    return bool(service) and memo.wakeups.followed_by_any(namespace, ("service", service))


@kopf.on.event(ENDPOINT_SLICES.group, ENDPOINT_SLICES.version, ENDPOINT_SLICES.plural, when=of_a_followed_service)
async def wake_on_endpoints(namespace: str, labels: kopf.Labels, memo: kopf.Memo, **_: Any) -> None:
    """Only slices of followed Services come here: kopf drops the others' events before calling it. The index above
    keeps every slice all the same: kopf applies a filter to an object only at its next event, so a Service that a
    deployment begins to follow would have no indexed slices, and no ready version, until its slices change."""
    memo.wakeups.wake_followers(namespace, ("service", labels[SERVICE_NAME_LABEL]))


@kopf.index(GROUP, VERSION, "modeldeployments", when=in_my_shard)
async def rollouts_in_flight(namespace: str, name: str, spec: kopf.Spec, status: kopf.Status,
                             **_: Any) -> dict[str, tuple[str, str, str]]:
    """The deployments whose status has a candidate, as the watch shows them (see slots.py)."""
    return {IN_FLIGHT: (namespace, name, str(spec.get("model")))} if status.get("canaryVersion") else {}


@kopf.daemon(GROUP, VERSION, "modeldeployments", cancellation_timeout=10, when=in_my_shard)
async def run_deployment(body: kopf.Body, memo: kopf.Memo, model_versions: kopf.Index, metric_providers: kopf.Index,
                         namespace_labels: kopf.Index, cluster_notifiers: kopf.Index, endpoint_slices: kopf.Index,
                         rollouts_in_flight: kopf.Index, **_: Any) -> None:
    memo.sources.bind(metric_providers, namespace_labels)
    memo.shell.slots.bind(rollouts_in_flight)
    memo.endpoint_slices.bind(endpoint_slices)
    memo.notifications.bind(cluster_notifiers, namespace_labels)
    memo.memory = memory = Memory()
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    try:
        while True:
            model = (body.get("spec") or {}).get("model")
            if memo.wakeups.follow(namespace, name, memory.wake, body.get("spec") or {},
                                   (body.get("status") or {}).get("stableVersion")):
                await check_versions_of(memo.shell, namespace, model, model_versions)
            delay = await run_round(memo.shell, body, records_of(model_versions, body["metadata"]["namespace"], model),
                                    memory)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):  # not wait_for, which can swallow the daemon's cancellation
                    await memory.wake.wait()
            memory.wake.clear()
    finally:  # stopped on deletion, after `release` maybe: its last rounds must not leave series behind
        memo.wakeups.forget(namespace, name)
        memo.shell.slots.forget(namespace, name)
        metrics.forget(namespace, name)


RELEASE_TRIES = 5
"""Tries of `release` for a backend whose apply has not yet brought it to stable alone, 2 s apart."""


@kopf.on.delete(GROUP, VERSION, "modeldeployments", when=in_my_shard)
async def release(body: kopf.Body, memo: kopf.Memo, model_versions: kopf.Index, endpoint_slices: kopf.Index,
                  retry: int, **_: Any) -> None:
    """Leave the backend on the stable version (never creating anything), and the versions no
    longer marked as served by it. Best effort, a few tries: deletion must never hang on it."""
    memo.endpoint_slices.bind(endpoint_slices)
    meta, shell = body["metadata"], memo.shell
    metrics.forget(meta["namespace"], meta["name"])
    memory = memo.get("memory") or Memory()
    status = ModelDeploymentStatus.model_validate(current_status(body, memory))
    accepted, _ = spec_in_force(body, memory)
    # A spec refused since the operator started still names the backend to leave on stable, where that part is valid.
    serving = accepted.spec.serving if accepted is not None else serving_of(body)
    if serving is None:
        return  # no backend can be named: nothing to leave in order
    model = accepted.spec.model if accepted is not None else (body.get("spec") or {}).get("model")
    records = list(records_of(model_versions, meta["namespace"], model))
    versions = catalog(records)
    settled = True
    try:
        if status.stable_version is not None:
            router, target = shell.routers[serving.backend], Target(meta["namespace"], meta["name"], serving)
            state = await router.observe(target, versions.specs, None)
            settled = await router.apply(target, TrafficIntent(status.stable_version), versions.specs, state,
                                         create=False)
        await record_serving_roles(shell, meta["namespace"], meta["name"], versions, records, status,
                                   ModelDeploymentStatus())
    except BackendNotOwned:
        pass  # not ours to leave in any state
    except EXPECTED as e:
        problem = classify(e)
        if retry >= 2:
            kopf.warn(body, reason="ReleaseIncomplete", message=f"deleted without leaving the backend on stable: "
                                                                 f"{problem.message}"[:1000])
            return
        raise kopf.TemporaryError(problem.message, delay=2)
    if not settled:
        # A write that waits for the one before it (KServe Standard mode: the candidate's entry goes only once the
        # Gateway routes without it): another try, a few times at most.
        if retry >= RELEASE_TRIES:
            kopf.warn(body, reason="ReleaseIncomplete", message="deleted before the backend carried stable alone")
            return
        raise kopf.TemporaryError("the backend does not carry stable alone yet", delay=2)
