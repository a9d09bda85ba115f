"""One round of one ModelDeployment: observe, measure, decide, persist, apply.

Free of kopf, so the fault-simulation tier runs this very code against in-memory fakes of
the Kubernetes API and Prometheus (`Shell` holds every part that does I/O).

Write-ahead: the decision is persisted in status before the backend is touched, and the
router then converges the backend to the traffic intent that status stands for. A round
that dies after the status write is completed by the next one from status alone; one that
dies before it leaves the backend on the last persisted intent. A rollback, once written,
is never undone by a lost write or a restart.

No fault stops the loop: an expected failure (API error, timeout, backend missing or
misconfigured) is reported as `Synced=False` with an event and a counted reason, and the
round is retried with capped backoff; an unexpected one (a bug, an input nobody foresaw)
takes the safe side too: the candidate in flight goes back to stable (`fail_safe`).

A backend the round cannot read, or that refuses part of the routing (a rule or an object the
operator will not drive), does not stop the rollout's decisions: the analysis is taken on the
serving units the last read showed, and the decision is made and persisted. Where the backend
refuses only part of the routing (a Gateway API rule), the router writes the rules the operator
owns; where it cannot be read or is not the operator's to drive, nothing is written. What the
backend refuses goes to the engine as an observation, so that no status says all traffic is on
stable while it is not.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping, Protocol

from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import ValidationError

from . import GROUP, VERSION, drills, metrics
from .api.modeldeployment import (MAX_HISTORY_LIMIT, Action, Backend, ModelDeploymentSpec, ModelDeploymentStatus,
                                  Phase, Request, Serving, full_weight_refusal)
from .kube import Resource, merge_patch
from .analysis.provider import ProviderFactory
from .measuring import measure_if_due
from .modelversions import Catalog, VersionRecord, catalog, record_of, served_by_changes, serving_patch
from .problems import (EXPECTED, EventSink, Problem, Unfinished, classify, count_problem, naming, note_problem,
                       tell_problem)
from .rollout import Carried, Decision, Event, Observations, TrafficIntent, decide, fail_safe, intent_of, unread
from .rollout import rollout_wanted, seconds_to_next_analysis
from .rollout.conditions import unsynced
from .rollout.values import rfc3339
from .routers.base import BackendMisconfigured, BackendState, Router, Target
from .slots import RolloutSlots
from .watched import MAX_AGE_SECONDS

log = logging.getLogger(__name__)

DEPLOYMENTS = Resource(GROUP, VERSION, "modeldeployments", "ModelDeployment")
VERSIONS = Resource(GROUP, VERSION, "modelversions", "ModelVersion")
QUEUED_SECONDS = 300.0
"""A queued deployment is woken when a slot comes free for it (slots.py); this only backs the wake-up up, and
seldom, since thousands may be queued behind a limit."""
IDLE_SECONDS = MAX_AGE_SECONDS
"""A settled deployment re-reads its backend this often, a resync in case a watch event was lost: changes of
its spec, its backend objects, their EndpointSlices and its ModelVersions wake it at once (see handlers), and
what the watch showed of its backend is then at least this old, so the read is a GET (watched.py). Every
30 min, so that the resyncs of 10,000 deployments cost about 6 GETs a second."""
HELD_SECONDS = 30.0
"""A rollout the backend holds (BackendState.holds_rollouts) is looked at again this often."""
CONVERGE_SECONDS = 1.0  # while a backend is still moving toward the intent
BACKOFF_CAP_SECONDS = 30.0


class KubeApi(Protocol):
    async def get(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None: ...
    async def patch_status(self, resource: Resource, namespace: str, name: str,
                           patch: dict[str, Any]) -> dict[str, Any]: ...


Notify = Callable[[Mapping[str, Any], ModelDeploymentSpec, ModelDeploymentStatus, tuple[Event, ...]], None]
"""(the ModelDeployment, its spec, the status just persisted, that decision's events) -> queued for the webhooks the
spec opted into; returns at once, sends nothing itself (notifications.py)."""


def no_notifications(obj: Mapping[str, Any], spec: ModelDeploymentSpec, status: ModelDeploymentStatus,
                     events: tuple[Event, ...]) -> None:
    return None


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class Shell:
    """Everything a round does I/O with."""

    kube: KubeApi
    routers: dict[Backend, Router]
    providers: ProviderFactory
    events: EventSink
    clock: Callable[[], datetime] = _utcnow
    notify: Notify = no_notifications
    slots: RolloutSlots = field(default_factory=RolloutSlots)
    """The operator's limits of rollouts in flight (none by default)."""


@dataclass
class Memory:
    """What one deployment's loop keeps between rounds (lost on restart, and that is fine)."""

    written_status: dict[str, Any] | None = None
    written_over: str | None = None
    """resourceVersion the watch showed when the status was written: while it still shows it, ours is newer."""
    written_rv: str | None = None
    """resourceVersion our last status write produced: the next write must be over it."""
    unsure: bool = False
    """The last status write failed without saying whether it landed: the next round writes (conditionally)
    even when its decision equals what it read, so a status it never saw cannot stand."""
    own_versions: deque[str] = field(default_factory=lambda: deque(maxlen=16))
    """resourceVersions our recent status writes produced: the watch delivering one of them is an echo,
    older than (or equal to) what we last wrote."""
    failures_in_a_row: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    """Set by the watch events that concern the deployment (a new generation of its spec, its backend objects, their
    EndpointSlices, its model's ModelVersions, a slot come free; see handlers): the next round comes at once."""
    spec_changed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set by the watch when the spec's generation changes, cleared when a round reads the spec: only this gives up
    a measurement in flight (an analysis, a drill's requests lost), so that a request or a new version never waits
    for a slow metric provider while other events (the backend's, its EndpointSlices', ModelVersions', the
    operator's own writes) never keep an analysis from finishing."""
    carried: Carried | None = None
    """The intent the last rounds' applies found the backend already carrying (nothing to write), and since when:
    a step's analyses and a rollback drill's timings count from it."""
    drill_units: drills.DrillUnits | None = None
    """The serving units the last drill's versions were seen on, for its requests lost."""
    units: dict[str, str] = field(default_factory=dict)
    """The serving units the last backend read showed (BackendState.units): an analysis needs only these, so it is
    taken even in a round that cannot read the backend."""
    refused: str | None = None
    """Why the backend refused part of the routing when last read (Observations.refused), for a round that cannot
    read it."""
    serving: Serving | None = None
    """The spec's `serving` that `units` and `refused` were read under."""
    accepted: Accepted | None = None
    """The last spec this loop accepted: a round whose spec is invalid still runs under it."""
    unfinished: Unfinished | None = None
    """What kept the last round from finishing after its status write (its apply or the serving roles' bookkeeping),
    and the intent it was applying: a round that decides that intent again names that problem before applying too,
    so that its status write before the apply and the one after it agree (see `naming`)."""


@dataclass(frozen=True)
class Accepted:
    spec: ModelDeploymentSpec
    generation: int | None


@dataclass(frozen=True)
class Base:
    """The status a round starts from, and what the watch showed then."""

    status: dict[str, Any]
    resource_version: str | None
    """What a status write over `status` is conditional on: a stale base gets a 409, never a lost update."""
    seen: str | None
    """The resourceVersion the watch showed."""


INVALID_SPEC = "InvalidSpec"


SRE_FIELDS = ("paused", "trafficOverride", "request")
"""What an SRE acts with (G4): taken from a refused spec wherever each is valid on its own."""


def spec_in_force(obj: Mapping[str, Any], memory: Memory) -> tuple[Accepted | None, Problem | None]:
    """The spec a round runs under: the object's, or when the operator refuses it, the last one this loop accepted
    (None when there is none: the operator restarted meanwhile) with the refused spec's pause, pin and request
    wherever each is valid (so an Abort never waits for a fix of another field), and the refusal."""
    raw = dict(obj.get("spec") or {})
    try:
        memory.accepted = Accepted(ModelDeploymentSpec.model_validate(raw), obj["metadata"].get("generation"))
        return memory.accepted, None
    except ValidationError as e:
        refusal = Problem(INVALID_SPEC, f"spec is invalid: {e}", standing=True)
    if memory.accepted is None:
        return None, refusal
    wire = memory.accepted.spec.to_wire()
    for key in SRE_FIELDS:
        held = {k: v for k, v in {**wire, key: raw.get(key)}.items() if v is not None}
        try:
            wire = ModelDeploymentSpec.model_validate(held).to_wire()
        except ValidationError:
            continue  # this one is invalid too: the accepted spec's stands
    return Accepted(ModelDeploymentSpec.model_validate(wire), memory.accepted.generation), refusal


async def run_round(shell: Shell, obj: Mapping[str, Any], records: Iterable[VersionRecord], memory: Memory) -> float:
    """One round, whatever happens in it; returns the seconds until the next one."""
    try:
        delay, problem = await reconcile(shell, obj, list(records), memory)
    except EXPECTED as e:
        delay, problem = CONVERGE_SECONDS, classify(e)  # the status write itself failed: nothing was applied
        note_problem(shell.events, obj, problem)
    except Exception as e:  # noqa: BLE001 - the loop must outlive any bug; the safe side is stable
        log.exception("round of %s/%s failed", obj["metadata"]["namespace"], obj["metadata"]["name"])
        delay, problem = CONVERGE_SECONDS, classify(e)
        note_problem(shell.events, obj, problem)
        await recover(shell, obj, list(records), memory, problem)
    if problem is None:
        memory.failures_in_a_row = 0
        return delay
    memory.failures_in_a_row += 1
    if problem.standing:
        return delay  # waiting fixes neither (a new spec or backend event wakes the loop): analyses keep their times
    return min(BACKOFF_CAP_SECONDS, max(delay, CONVERGE_SECONDS * 2 ** (memory.failures_in_a_row - 1)))


async def reconcile(shell: Shell, obj: Mapping[str, Any], records: list[VersionRecord],
                    memory: Memory) -> tuple[float, Problem | None]:
    """Observe the backend, measure if due, decide, persist the decision, then apply it: the whole round."""
    meta = obj["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    memory.spec_changed.clear()  # from here on it says the spec changed after this round read it
    old = status_base(obj, memory)
    status = ModelDeploymentStatus.model_validate(old.status)
    accepted, spec_problem = spec_in_force(obj, memory)
    if accepted is None:
        assert spec_problem is not None
        return await refuse_unjudged(shell, obj, records, memory, old, status, spec_problem)
    spec, versions = accepted.spec, catalog(records)
    router, target = shell.routers[spec.serving.backend], Target(namespace, name, spec.serving)
    seen = await observe(router, target, versions, status, memory)
    observations = await observations_of(shell, accepted, status, versions, router, target, seen, memory)
    decision = decide_in_force(spec, status, observations, shell.clock(), spec_problem is not None)
    problem = problem_of(spec, versions, spec_problem, seen)
    memory.drill_units = drills.remember_units(memory.drill_units, status, decision.status, seen.backend)
    shell.slots.settle(namespace, name, spec.model, decision.status)
    unfinished = memory.unfinished
    held = unfinished.problem if unfinished is not None and unfinished.intent == decision.intent else None
    # Write-ahead: the decision is persisted before anything moves.
    await persist(shell, obj, memory, old, decision, naming(held, problem), problem)
    metrics.show_decision(namespace, name, spec, status, decision.status)
    post(shell, obj, decision.events, seen.backend.drift if seen.backend else ())
    notify(shell, obj, spec, decision)
    settled, after = await carry_out(shell, obj, memory, records, versions, router, target, status, decision,
                                     seen.backend)
    if after is not None:
        await persist(shell, obj, memory, status_base(obj, memory), decision, naming(after, problem), after)
    elif held is not None:  # gone since the write before the apply: the status names what this round met
        await persist(shell, obj, memory, status_base(obj, memory), decision, problem, None)
    return pace(spec, decision, seen.backend, settled, after, problem, shell.clock())


@dataclass(frozen=True)
class Seen:
    """What a round knows of its backend."""

    backend: BackendState | None
    """As read now; None when it could not be read."""
    units: dict[str, str]
    """The serving units to measure on: as read now, or as the last read showed."""
    refused: str | None
    """What of the routing the backend refuses (Observations.refused): as read now, or as when last read."""
    problem: Problem | None
    """Why it could not be read, or the standing problem of what it refuses."""


async def observe(router: Router, target: Target, versions: Catalog, status: ModelDeploymentStatus,
                  memory: Memory) -> Seen:
    """The backend read, kept in `memory` for a round that cannot read it: analyses need only the units the last
    read showed, and a backend that cannot be read refuses what it did when last read."""
    if memory.serving != target.serving:  # what another backend showed says nothing of this one
        memory.serving, memory.units, memory.refused = target.serving, {}, None
    try:
        backend: BackendState | None = await router.observe(target, versions.specs, intent_of(status))
    except EXPECTED as e:
        if isinstance(e, BackendMisconfigured):
            memory.refused = str(e)
        return Seen(None, memory.units, memory.refused, classify(e))  # a failure to back off from
    memory.units, memory.refused = backend.units, "; ".join(backend.refused) or None
    standing = Problem("BackendMisconfigured", memory.refused, standing=True) if memory.refused else None
    return Seen(backend, backend.units, memory.refused, standing)


async def observations_of(shell: Shell, accepted: Accepted, status: ModelDeploymentStatus, versions: Catalog,
                          router: Router, target: Target, seen: Seen, memory: Memory) -> Observations:
    """Everything the decision rests on besides spec and status: the backend seen, an analysis if one is due, a
    drill's requests lost, a rollout slot."""
    spec, backend = accepted.spec, seen.backend
    report = await measure_if_due(shell.providers, spec, status, seen.units, router, target, memory.spec_changed,
                                  shell.clock()) if backend is not None or seen.units else None
    loss = await drills.measure_loss(shell.providers, spec, status, router, target, memory.drill_units, shell.clock(),
                                     memory.spec_changed)
    queued = shell.slots.ask(target.namespace, target.deployment, spec.model) if rollout_wanted(spec, status) else None
    return Observations(backend.ready_versions if backend else None, report, accepted.generation,
                        frozenset(versions.specs), queued, memory.carried, loss,
                        backend.serving_versions if backend else frozenset(), seen.refused,
                        backend.pins if backend else None, backend.holds_rollouts if backend else None,
                        backend.warm_ready if backend else frozenset(), backend.keeps_no_warm if backend else None)


def decide_in_force(spec: ModelDeploymentSpec, status: ModelDeploymentStatus, observations: Observations,
                    now: datetime, refused: bool) -> Decision:
    """The engine's decision (`refused`: under the last accepted spec, the operator refusing the object's); under a
    spec the API server refuses now but stored before its rule (a candidate at 100 % on kserve), requests are
    handled as decided and whatever candidate that leaves in flight goes back to stable before anything is
    applied."""
    decision = decide(spec, status, observations, now, refused=refused)
    refusal = full_weight_refusal(spec)
    if refusal is None or (decision.status.canary_version is None and decision.status.drill is None):
        return decision
    safe = fail_safe(spec, decision.status, refusal, now, replace(observations, analysis=None))
    return replace(safe, events=decision.events + safe.events)


def problem_of(spec: ModelDeploymentSpec, versions: Catalog, refused_spec: Problem | None,
               seen: Seen) -> Problem | None:
    """The one problem a round reports before its apply: a backend it could not read, else a spec it refuses,
    else what the backend refuses, else a stored spec the API server would now refuse, else a missing version."""
    if seen.backend is None:
        return seen.problem
    if refused_spec is not None or seen.problem is not None:
        return refused_spec or seen.problem
    refusal = full_weight_refusal(spec)
    if refusal is not None:
        return Problem(INVALID_SPEC, f"spec is invalid: {refusal}", standing=True)
    if spec.version not in versions.specs:
        return Problem("ModelVersionMissing", f"no ModelVersion of model {spec.model} with version {spec.version}")
    return None


async def carry_out(shell: Shell, obj: Mapping[str, Any], memory: Memory, records: list[VersionRecord],
                    versions: Catalog, router: Router, target: Target, before: ModelDeploymentStatus,
                    decision: Decision, backend: BackendState | None) -> tuple[bool, Problem | None]:
    """Apply the persisted decision and record the versions' new roles: (whether the backend carries it, what kept
    the round from finishing). What kept it is remembered (Memory.unfinished) for the next round's status."""
    settled, carried, memory.carried = True, memory.carried, None
    try:
        if decision.intent is not None:
            applied_at = shell.clock()
            settled = await apply_intent(shell, obj, router, target, decision.intent, versions, backend)
            if settled:  # carried since the first of an unbroken run of rounds that found it so
                memory.carried = carried if carried and carried.intent == decision.intent else Carried(
                    decision.intent, applied_at)
            metrics.CANARY_WEIGHT.labels(target.namespace, target.deployment).set(decision.status.canary_weight)
            metrics.show_traffic(target.namespace, target.deployment, decision.intent.weights())
        await record_serving_roles(shell, target.namespace, target.deployment, versions, records, before,
                                   decision.status)
    except EXPECTED as e:
        memory.carried, memory.unfinished = None, Unfinished(decision.intent, classify(e))
        return settled, memory.unfinished.problem
    memory.unfinished = None
    return settled, None


def pace(spec: ModelDeploymentSpec, decision: Decision, backend: BackendState | None, settled: bool,
         after: Problem | None, problem: Problem | None, now: datetime) -> tuple[float, Problem | None]:
    """Seconds to the next round, and the problem the round ends with."""
    if after or (problem and not problem.standing):
        return CONVERGE_SECONDS * (1 if after else 5), after or problem
    if decision.status.phase is Phase.Queued:
        return QUEUED_SECONDS, problem
    if backend is not None and backend.holds_rollouts is not None and rollout_wanted(spec, decision.status):
        return HELD_SECONDS, problem  # nothing wakes it when the hold ends (the backend's settings are not watched)
    if decision.intent is None:
        return IDLE_SECONDS, problem
    return next_delay(spec, decision, backend, now) if settled else CONVERGE_SECONDS, problem


async def refuse_unjudged(shell: Shell, obj: Mapping[str, Any], records: list[VersionRecord], memory: Memory,
                          old: Base, status: ModelDeploymentStatus, refused: Problem) -> tuple[float, Problem]:
    """A refused spec and none accepted before it in this loop (the operator restarted meanwhile): nothing can be
    judged, so the safe side. An Abort valid on its own is carried out (G4), a candidate in flight goes back to
    stable and a drill ends (`fail_safe`), and the
    backend that the spec's `serving` names is converged to stable, when that part of the spec is valid; otherwise
    nothing can be routed, and the status only says why. No notification is sent: which ones the spec opts into
    cannot be read."""
    serving = serving_of(obj)
    if serving is None:
        said = unread(status, "spec.serving is refused")
        await write_status(shell, obj, memory, old, unsynced(said, refused.reason, refused.message,
                                                             rfc3339(shell.clock())))
        note_problem(shell.events, obj, refused)
        return IDLE_SECONDS, refused
    namespace, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
    versions, target, router = catalog(records), Target(namespace, name, serving), shell.routers[serving.backend]
    # The status must not say "all traffic on stable" beside a rule the backend carries but the operator refuses.
    seen = await observe(router, target, versions, status, memory)
    # Only fail_safe reads it: no rollout starts, no request but an Abort is acted on, nothing is measured under it;
    # the history limit is the largest, so that no entry the real spec keeps is cut.
    stand_in = ModelDeploymentSpec.model_construct(serving=serving, history_limit=MAX_HISTORY_LIMIT)
    decision = fail_safe(stand_in, status, refused.message, shell.clock(),
                         Observations(ready_versions=None, refused=seen.refused), abort=abort_of(obj))
    await persist(shell, obj, memory, old, decision, refused, refused)
    shell.slots.settle(namespace, name, str((obj.get("spec") or {}).get("model")), decision.status)
    metrics.count_outcomes(namespace, name, status, decision.status)
    post(shell, obj, decision.events, ())
    settled = True
    if decision.intent is not None:
        settled = await apply_intent(shell, obj, router, target, decision.intent, versions, None)
    await record_serving_roles(shell, namespace, name, versions, records, status, decision.status)
    return IDLE_SECONDS if settled else CONVERGE_SECONDS, refused


def abort_of(obj: Mapping[str, Any]) -> Request | None:
    """The spec's `request` when it is an Abort valid on its own (G4: an Abort never waits for another field's fix)."""
    try:
        request = Request.model_validate((obj.get("spec") or {}).get("request"))
    except (ValidationError, AttributeError):
        return None
    return request if request.action is Action.Abort else None


def serving_of(obj: Mapping[str, Any]) -> Serving | None:
    """The spec's `serving`, when that part of it is valid."""
    try:
        return Serving.model_validate((obj.get("spec") or {}).get("serving"))
    except (ValidationError, AttributeError):
        return None


async def apply_intent(shell: Shell, obj: Mapping[str, Any], router: Router, target: Target, intent: TrafficIntent,
                       versions: Catalog, backend: BackendState | None) -> bool:
    """The router's apply, over the newest read of the backend where the intent is safe (`safe_over`): the watch
    may have shown a controller's write while the status was being written, and a write over the older read would
    meet a 409. A 409 is read again (a GET, watched.py) and applied over once more by the same rule; where the
    intent is not safe over that read, the 409 ends the round and the next one decides again."""
    state, conflict = backend or BackendState(), None
    for attempt in (1, 2):
        newer = await router.observe(target, versions.specs, intent)
        if safe_over(intent, newer):
            post(shell, obj, (), [words for words in newer.drift if words not in state.drift])
            state = newer
        elif conflict is not None:
            raise conflict
        try:
            return await router.apply(target, intent, versions.specs, state)
        except ApiException as e:
            if e.status != 409 or attempt == 2:
                raise
            conflict = e
    raise AssertionError("unreachable")


def safe_over(intent: TrafficIntent, state: BackendState) -> bool:
    """Whether `intent` may be applied over `state` without deciding again: it gives no candidate anything, or
    every version it sends requests or copies to is ready there."""
    exposed = {version for version, weight in intent.weights().items() if weight > 0}
    if intent.candidate is not None and (intent.mirror or intent.match):
        exposed.add(intent.candidate)
    return intent.candidate is None or exposed <= state.ready_versions


async def persist(shell: Shell, obj: Mapping[str, Any], memory: Memory, old: Base, decision: Decision,
                  problem: Problem | None, met: Problem | None) -> None:
    """The decision, `Synced=False` naming `problem` when there is one. `met` is what this round met since its last
    write, counted once: the status may name a problem an earlier round met and counted."""
    status = decision.status
    if met is not None:
        count_problem(obj, met)
    if problem is not None:
        status = unsynced(status, problem.reason, problem.message, rfc3339(shell.clock()))
        tell_problem(shell.events, obj, problem)
    await write_status(shell, obj, memory, old, status)


async def recover(shell: Shell, obj: Mapping[str, Any], records: list[VersionRecord], memory: Memory,
                  problem: Problem) -> None:
    """After an unexpected error: persist the safe decision, then try to apply it. Never raises."""
    memory.carried = None
    try:
        old = status_base(obj, memory)
        accepted, _ = spec_in_force(obj, memory)
        if accepted is None:
            return  # the next round takes the safe side without a spec (refuse_unjudged)
        spec = accepted.spec
        before = ModelDeploymentStatus.model_validate(old.status)
        decision = fail_safe(spec, before, problem.message, shell.clock(),
                             Observations(ready_versions=None, refused=memory.refused))
        await write_status(shell, obj, memory, old,
                           unsynced(decision.status, problem.reason, problem.message, rfc3339(shell.clock())))
        metrics.count_outcomes(obj["metadata"]["namespace"], obj["metadata"]["name"], before, decision.status)
        post(shell, obj, decision.events, ())
        notify(shell, obj, spec, decision)
        if decision.intent is not None:
            versions = catalog(records)
            target = Target(obj["metadata"]["namespace"], obj["metadata"]["name"], spec.serving)
            await shell.routers[spec.serving.backend].apply(target, decision.intent, versions.specs, BackendState())
    except Exception:  # noqa: BLE001 - retried by the next round, after backoff
        log.exception("recovery of %s/%s failed", obj["metadata"]["namespace"], obj["metadata"]["name"])


def next_delay(spec: ModelDeploymentSpec, decision: Decision, backend: BackendState | None, now: datetime) -> float:
    assert decision.intent is not None
    if decision.status.drill is not None:
        return CONVERGE_SECONDS  # a drill is timed by the rounds that see the backend carry it: one a second
    loss = drills.seconds_to_loss(decision.status, now)
    return min(_next_delay(spec, decision, backend, now), IDLE_SECONDS if loss is None else max(loss, 0.05))


def _next_delay(spec: ModelDeploymentSpec, decision: Decision, backend: BackendState | None, now: datetime) -> float:
    assert decision.intent is not None
    if backend is None or any(v not in backend.ready_versions for v in decision.intent.weights()):
        return CONVERGE_SECONDS
    until_analysis = seconds_to_next_analysis(spec, decision.status, now)
    if until_analysis is not None:
        return max(until_analysis, 0.05)
    return CONVERGE_SECONDS if decision.status.canary_version is not None else IDLE_SECONDS


def status_base(obj: Mapping[str, Any], memory: Memory) -> Base:
    """The status as last written: the watch may not have delivered our own last write yet."""
    seen = obj["metadata"].get("resourceVersion")
    if memory.written_status is not None and (seen == memory.written_over or seen in memory.own_versions):
        return Base(dict(memory.written_status), memory.written_rv, seen)
    return Base({k: v for k, v in (obj.get("status") or {}).items() if k != "kopf"}, seen, seen)


def current_status(obj: Mapping[str, Any], memory: Memory) -> dict[str, Any]:
    return status_base(obj, memory).status


async def write_status(shell: Shell, obj: Mapping[str, Any], memory: Memory, old: Base,
                       new: ModelDeploymentStatus) -> None:
    """One merge patch, only when something changed, and only over the status it was computed from."""
    wire = new.to_wire()
    json.dumps(wire, allow_nan=False)  # the API server rejects NaN/Infinity: fail here, before anything is sent
    patch = merge_patch(old.status, wire)
    if patch is None and not memory.unsure:
        return
    meta = obj["metadata"]
    body: dict[str, Any] = {"status": patch or {}}
    if old.resource_version is not None:
        body["metadata"] = {"resourceVersion": old.resource_version}
    try:
        written = await shell.kube.patch_status(DEPLOYMENTS, meta["namespace"], meta["name"], body)
    except BaseException:
        memory.unsure = True
        raise
    memory.unsure = False
    memory.written_over, memory.written_status = old.seen, wire
    memory.written_rv = (written or {}).get("metadata", {}).get("resourceVersion")
    if memory.written_rv is not None:
        memory.own_versions.append(memory.written_rv)
    metrics.STATUS_PATCHES.labels(meta["namespace"], meta["name"]).inc()


def post(shell: Shell, obj: Mapping[str, Any], events: Iterable[Event], drift: Iterable[str]) -> None:
    meta = obj["metadata"]
    for event in events:
        shell.events(obj, event.type, event.reason, event.message)
        metrics.DECISIONS.labels(meta["namespace"], meta["name"], event.reason).inc()
    for words in drift:
        shell.events(obj, "Warning", "OutOfBandChange", words)


def notify(shell: Shell, obj: Mapping[str, Any], spec: ModelDeploymentSpec, decision: Decision) -> None:
    """Hand a persisted decision to the notifications; whatever goes wrong there never costs a round (G2)."""
    try:
        shell.notify(obj, spec, decision.status, decision.events)
    except Exception:  # noqa: BLE001 - a notification is never worth a rollback (fail_safe)
        log.exception("notifications of %s/%s failed", obj["metadata"]["namespace"], obj["metadata"]["name"])


async def record_serving_roles(shell: Shell, namespace: str, deployment: str, versions: Catalog,
                               records: list[VersionRecord], before: ModelDeploymentStatus,
                               after: ModelDeploymentStatus) -> None:
    """Each version whose role in this deployment changed says so in its ModelVersion's status: one patch over
    the copy the watch showed (kopf's index, `records`), read again and patched once more when that copy was
    stale (409)."""
    by_name = {r.name: r for r in records}
    for version, role in served_by_changes(before, after).items():
        record = by_name.get(versions.names.get(version, ""))
        for attempt in (1, 2):
            patch = record and serving_patch(record, records, deployment, role, rfc3339(shell.clock()))
            if not patch:
                break
            try:
                await shell.kube.patch_status(VERSIONS, namespace, record.name, patch)
                break
            except ApiException as e:
                if e.status == 404:
                    break  # deleted meanwhile: nothing left to say it on
                if e.status != 409 or attempt == 2:
                    raise
            mv = await shell.kube.get(VERSIONS, namespace, record.name)
            record = None if mv is None else record_of(mv)
