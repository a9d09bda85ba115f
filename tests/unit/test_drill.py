"""Rollback drills in the pure engine: refusals, the whole walk with the backend's `carried` observations and a
clock passed in, every interruption, fail_safe, the fixed point, and the requests lost being recorded."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest

from modelops.api.modeldeployment import (DrillResult, ModelDeploymentSpec, ModelDeploymentStatus, Phase, Request,
                                          TrafficOverride)
from modelops.rollout import Carried, Decision, DrillLoss, Observations, TrafficIntent, decide, fail_safe
from modelops.rollout.plan import progress_deadline, rollout_wanted, seconds_to_next_analysis
from modelops.rollout.values import MAX_DRILL_SECONDS, parse_rfc3339, rfc3339

from .rollout_sim import Sim, make_spec

STABLE, FALLBACK = "1.1.0", "1.0.0"
ALL_ON_FALLBACK = {FALLBACK: 100}
ALL_ON_STABLE = {STABLE: 100}


def drill(rid: str = "d1", reason: str = "game day") -> Request:
    return Request(id=rid, action="Drill", reason=reason, actor="sre")


def request(action: str, rid: str, **kw) -> Request:
    return Request.model_validate({"id": rid, "action": action, "reason": "testing", "actor": "sre", **kw})


def promoted_status(**spec_options) -> tuple[ModelDeploymentSpec, ModelDeploymentStatus, datetime]:
    """1.1.0 stable after a HotSwap from 1.0.0, which is the fallback (analyses every 10 s)."""
    sim = Sim(make_spec(strategy={"type": "HotSwap"}, **spec_options))
    sim.step()
    sim.set(version=STABLE)
    sim.tick("Pass")
    assert (sim.status.phase, sim.status.stable_version, sim.status.fallback_version) == (Phase.Stable, STABLE, FALLBACK)
    return sim.spec, sim.status, sim.now


@dataclass
class World:
    """The engine with a backend that carries each round's intent once that round applied it (as reconcile
    reports it: `carried` is what the previous round's apply found already there, at that round's clock)."""

    spec: ModelDeploymentSpec
    status: ModelDeploymentStatus
    now: datetime
    ready: set[str] | None = field(default_factory=lambda: {FALLBACK, STABLE, "1.2.0"})
    available: frozenset[str] | None = None
    """Versions with a valid ModelVersion (None: every one)."""
    converges: bool = True
    """False: the backend never carries a new intent (a stuck controller)."""
    backend: TrafficIntent | None = None
    carried: Carried | None = None
    loss: DrillLoss | None = None
    refused: str | None = None
    """Why the backend refuses part of the routing (Observations.refused)."""
    decisions: list[Decision] = field(default_factory=list)
    inputs: list[tuple] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.backend = TrafficIntent(self.status.stable_version)

    def round(self, seconds: float = 1.0, **spec_changes) -> Decision:
        self.now += timedelta(seconds=seconds)
        if spec_changes:
            self.spec = self.spec.model_copy(update=spec_changes)
        observations = Observations(None if self.ready is None else frozenset(self.ready),
                                    available_versions=self.available, carried=self.carried, drill_loss=self.loss,
                                    refused=self.refused)
        self.inputs.append((self.spec, self.status, observations, self.now))
        decision = decide(self.spec, self.status, observations, self.now)
        self.status = decision.status
        self.decisions.append(decision)
        settled = decision.intent == self.backend
        self.carried = Carried(decision.intent, self.now) if settled else None
        if self.converges:
            self.backend = decision.intent
        return decision

    def until(self, predicate, limit: int = 400, seconds: float = 1.0) -> Decision:
        for _ in range(limit):
            decision = self.round(seconds)
            if predicate(decision):
                return decision
        raise AssertionError(f"not reached in {limit} rounds: {self.status}")

    def reasons(self) -> list[str]:
        return [e.reason for d in self.decisions for e in d.events]


def drilling(**options) -> World:
    spec, status, now = promoted_status(**options.pop("spec_options", {}))
    world = World(spec, status, now, **options)
    first = world.round(request=drill())
    assert [e.reason for e in first.events] == ["DrillStarted"]
    return world


def assert_fixed_points(world: World) -> None:
    """Every decision fed back with the same inputs changes nothing and says nothing."""
    for (spec, _, observations, now), decision in zip(world.inputs, world.decisions):
        again = decide(spec, decision.status, observations, now)
        assert (again.status, again.intent, again.events) == (decision.status, decision.intent, ())


# --- refusals ------------------------------------------------------------------------------------

def refused(world: World, rid: str = "d1") -> str:
    before = world.status
    decision = world.round(request=drill(rid))
    assert [e.reason for e in decision.events] == ["RequestIgnored"], decision.events
    assert decision.status.drill is None and decision.status.phase is before.phase
    assert rid in decision.status.handled_requests
    return decision.events[0].message


def test_refused_before_any_fallback_exists():
    sim = Sim(make_spec())
    sim.step()
    world = World(sim.spec, sim.status, sim.now)
    assert "no fallback version is retained (retained: [])" in refused(world)


@pytest.mark.parametrize("change, words", [
    ({"traffic_override": TrafficOverride(weight=0, reason="hold")}, "spec.trafficOverride is set"),
    ({"paused": True}, "spec.paused is set"),
])
def test_refused_under_a_manual_hold(change, words):
    spec, status, now = promoted_status()
    world = World(spec, status, now)
    world.round(**change)
    assert words in refused(world)


def test_refused_mid_rollout_and_when_rolled_back():
    spec, status, now = promoted_status()
    world = World(spec, status, now)
    world.round(version="1.2.0")
    assert world.status.phase is Phase.Progressing
    assert "only in phase Stable (phase is Progressing)" in refused(world)
    world.round(request=request("Abort", "a1"))
    assert world.status.phase is Phase.RolledBack
    assert "phase is RolledBack" in refused(world, "d2")


def test_refused_while_a_rollout_waits_and_when_stable_does_not_serve():
    spec, status, now = promoted_status()
    world = World(spec, status, now, ready={FALLBACK})
    assert f"stable {STABLE} is not serving" in refused(world)
    world.ready = None
    assert "backend's readiness cannot be read" in refused(world, "d2")
    world.ready, world.available = {FALLBACK, STABLE}, frozenset({FALLBACK, STABLE})
    world.round(version="9.9.9")  # no ModelVersion: phase stays Stable, a rollout is pending
    assert world.status.phase is Phase.Stable
    assert "spec.version 9.9.9 is not stable" in refused(world, "d3")


def test_refused_when_the_fallback_has_no_modelversion():
    spec, status, now = promoted_status()
    world = World(spec, status, now)
    world.now += timedelta(seconds=1)
    decision = decide(spec.model_copy(update={"request": drill()}), status,
                      Observations(frozenset({FALLBACK, STABLE}), available_versions=frozenset({STABLE})), world.now)
    assert [e.reason for e in decision.events] == ["RequestIgnored"]
    assert f"fallback {FALLBACK} has no valid ModelVersion" in decision.events[0].message


def test_a_second_drill_and_a_promote_are_refused_while_one_runs():
    world = drilling()
    decision = world.round(request=drill("d2"))
    assert [(e.reason, e.type) for e in decision.events] == [("RequestIgnored", "Warning")]
    assert "already in progress" in decision.events[0].message and decision.status.drill is not None
    decision = world.round(request=request("Promote", "p1"))
    ignored = [e for e in decision.events if e.reason == "RequestIgnored"]
    assert len(ignored) == 1 and "nothing to promote" in ignored[0].message
    assert decision.status.phase is Phase.Drilling


# --- the whole walk ------------------------------------------------------------------------------

def test_full_drill_walk_is_timed_from_what_the_backend_carried():
    world = drilling()
    started = world.now
    status = world.status
    assert status.phase is Phase.Drilling and status.drill.started_at == rfc3339(started)
    assert status.drill.routed_at == rfc3339(started)  # the fallback is ready: everything to it at once
    assert world.decisions[-1].intent.weights() == ALL_ON_FALLBACK
    assert world.decisions[-1].events[0].type == "Normal" and status.history[-1].actor == "sre"
    # Nothing about a drill asks for an analysis, a progress deadline or a rollout slot.
    assert seconds_to_next_analysis(world.spec, status, world.now) is None
    assert progress_deadline(world.spec, status) is None and not rollout_wanted(world.spec, status)
    assert {c.type: c.status for c in status.conditions}["Progressing"] == "True"

    # Round 2 applies the same intent and finds it carried; round 3 is told so and takes that round's time.
    world.round()
    assert world.status.drill.on_fallback_at is None
    on_fallback = world.round()
    assert [e.reason for e in on_fallback.events] == ["DrillOnFallback"]
    assert world.status.drill.on_fallback_at == rfc3339(started + timedelta(seconds=1))
    assert "1s after the drill started" in on_fallback.events[0].message

    # Held one analysis interval (10 s) from when it was carried, then all back to stable.
    back = world.until(lambda d: d.intent.weights() == ALL_ON_STABLE)
    assert world.now == started + timedelta(seconds=11) and world.status.phase is Phase.Drilling
    assert world.status.drill.returning_at == rfc3339(world.now)
    done = world.until(lambda d: d.status.drill is None)
    assert [e.reason for e in done.events] == ["DrillCompleted"] and done.status.phase is Phase.Stable
    last = done.status.last_drill
    assert (last.result, last.fallback_version, last.returned_to) == (DrillResult.Completed, FALLBACK, STABLE)
    assert (last.seconds_to_fallback, last.seconds_back) == (1.0, 1.0)
    assert parse_rfc3339(last.ended_at) == parse_rfc3339(back.status.drill.returning_at) + timedelta(seconds=1)
    assert last.requests_lost is None and last.requests_lost_note is None
    assert parse_rfc3339(last.requests_lost_due) == parse_rfc3339(last.ended_at) + timedelta(seconds=10)
    assert (last.actor, last.reason) == ("sre", "game day")
    assert [h.action for h in done.status.history[-3:]] == ["DrillStarted", "DrillOnFallback", "DrillCompleted"]
    assert f"requests lost measured after {last.requests_lost_due}" in done.events[0].message
    assert done.intent.weights() == ALL_ON_STABLE and done.status.stable_version == STABLE
    assert done.status.fallback_version == FALLBACK and done.status.retained_versions == [FALLBACK]
    assert world.round(5).events == ()  # and it stays so
    assert_fixed_points(world)


def test_hold_is_capped_at_a_minute():
    world = drilling(spec_options={"analysis": {"interval": "10m"}})
    world.until(lambda d: d.status.drill.on_fallback_at is not None)
    on_fallback = parse_rfc3339(world.status.drill.on_fallback_at)
    world.until(lambda d: d.intent.weights() == ALL_ON_STABLE, seconds=5)
    assert 60 <= (world.now - on_fallback).total_seconds() < 65


def test_a_fallback_not_ready_yet_gets_no_traffic_until_it_is():
    """KServe keeps no retained version serving: the drill deploys it beside stable at 0 % first."""
    spec, status, now = promoted_status()
    world = World(spec, status, now, ready={STABLE})
    world.round(request=drill())
    intent = world.decisions[-1].intent
    assert (intent.candidate, intent.candidate_weight, intent.weights()) == (FALLBACK, 0, ALL_ON_STABLE)
    assert "waiting for fallback 1.0.0 to be ready" in world.status.message
    world.round(5)
    assert world.decisions[-1].intent.weights() == ALL_ON_STABLE
    world.ready.add(FALLBACK)
    assert world.round().intent.weights() == ALL_ON_FALLBACK
    world.until(lambda d: d.status.drill is None)
    assert world.status.last_drill.result is DrillResult.Completed
    assert world.status.last_drill.seconds_to_fallback == 7.0  # 5 s waiting + 1 s to route + 1 s to see it carried
    assert_fixed_points(world)


# --- interruptions -------------------------------------------------------------------------------

def interrupted(decision: Decision, words: str) -> None:
    reasons = [(e.reason, e.type) for e in decision.events]
    assert ("DrillInterrupted", "Warning") in reasons, reasons
    status = decision.status
    assert status.drill is None and status.last_drill.result is DrillResult.Interrupted
    assert words in status.last_drill.message, status.last_drill.message
    assert status.last_drill.seconds_back is None
    assert status.last_drill.requests_lost_due is not None  # measured all the same


def on_fallback() -> World:
    world = drilling()
    world.until(lambda d: d.status.drill.on_fallback_at is not None)
    return world


def test_a_fallback_that_stops_being_ready_is_interrupted_at_once():
    world = on_fallback()
    world.ready.discard(FALLBACK)
    decision = world.round()
    interrupted(decision, "fallback 1.0.0 is no longer ready")
    assert decision.intent.weights() == ALL_ON_STABLE and decision.status.phase is Phase.Stable
    assert decision.status.last_drill.seconds_to_fallback == 1.0
    assert_fixed_points(world)


def test_a_backend_that_cannot_be_read_does_not_interrupt_nor_advance():
    world = on_fallback()
    world.ready = None
    decision = world.round()
    assert decision.status.drill is not None and decision.intent.weights() == ALL_ON_FALLBACK


def test_spec_version_change_interrupts_before_the_rollout_starts():
    world = on_fallback()
    decision = world.round(version="1.2.0")
    reasons = [e.reason for e in decision.events]
    assert reasons.index("DrillInterrupted") < reasons.index("RolloutStarted")
    interrupted(decision, "spec.version changed to 1.2.0")
    status = decision.status
    assert (status.phase, status.stable_version, status.canary_version) == (Phase.Progressing, STABLE, "1.2.0")
    assert FALLBACK not in decision.intent.weights() and decision.intent.stable == STABLE
    assert_fixed_points(world)


def test_a_queued_rollout_still_interrupts_the_drill():
    world = on_fallback()
    world.spec = world.spec.model_copy(update={"version": "1.2.0"})
    observations = Observations(frozenset(world.ready), queued="queued: 1 rollout in flight")
    decision = decide(world.spec, world.status, observations, world.now + timedelta(seconds=1))
    interrupted(decision, "spec.version changed")
    assert decision.status.phase is Phase.Queued and decision.intent.weights() == ALL_ON_STABLE


def test_abort_interrupts_the_drill():
    world = on_fallback()
    decision = world.round(request=request("Abort", "a1"))
    interrupted(decision, "manual abort: testing")
    assert decision.events[-1].actor == "sre" and decision.status.phase is Phase.Stable
    assert decision.intent.weights() == ALL_ON_STABLE and decision.status.failed_version is None
    assert_fixed_points(world)


def test_abort_while_the_backend_refuses_says_so_until_stable_is_carried():
    world = on_fallback()
    world.refused, world.converges = "HTTPRoute fraud is driven by ModelDeployment other", False
    decision = world.round(request=request("Abort", "a1"))
    interrupted(decision, "manual abort: testing")
    assert decision.status.message.endswith("rollback decided, backend refuses: HTTPRoute fraud is driven by "
                                            "ModelDeployment other")
    assert "all traffic" not in decision.status.message
    assert world.round().status.message == decision.status.message
    world.refused, world.converges = None, True
    assert "backend refuses" in world.round().status.message  # written now, not yet seen carried
    world.until(lambda d: d.status.message.endswith(f"manual abort: testing; all traffic on stable {STABLE}"), limit=2)
    assert_fixed_points(world)


def test_rollback_interrupts_the_drill_then_rolls_back():
    world = on_fallback()
    decision = world.round(request=request("Rollback", "r1"))
    assert [e.reason for e in decision.events] == ["DrillInterrupted", "RolledBack"]
    interrupted(decision, "a manual rollback was requested")
    assert decision.status.stable_version == FALLBACK and decision.intent.weights() == ALL_ON_FALLBACK
    assert decision.status.phase is Phase.RolledBack


@pytest.mark.parametrize("change, words", [
    ({"traffic_override": TrafficOverride(weight=30, reason="load test")}, "spec.trafficOverride was set"),
    ({"paused": True}, "spec.paused was set"),
])
def test_a_manual_hold_interrupts_the_drill(change, words):
    world = on_fallback()
    decision = world.round(**change)
    interrupted(decision, words)
    assert decision.intent.weights() == ALL_ON_STABLE
    assert_fixed_points(world)


def test_a_fallback_losing_its_modelversion_interrupts_the_drill():
    world = on_fallback()
    observations = Observations(frozenset(world.ready), available_versions=frozenset({STABLE}))
    decision = decide(world.spec, world.status, observations, world.now + timedelta(seconds=1))
    interrupted(decision, "fallback 1.0.0 lost its ModelVersion")
    assert decision.intent.weights() == ALL_ON_STABLE


def test_a_backend_that_never_carries_the_fallback_is_interrupted_at_the_limit():
    spec, status, now = promoted_status()
    world = World(spec, status, now, converges=False)
    world.round(request=drill())
    decision = world.until(lambda d: d.status.drill is None, seconds=7)
    interrupted(decision, f"not on the fallback and back within {MAX_DRILL_SECONDS:g}s")
    assert MAX_DRILL_SECONDS <= (world.now - parse_rfc3339(decision.status.last_drill.started_at)).total_seconds() \
        < MAX_DRILL_SECONDS + 7
    assert decision.status.last_drill.seconds_to_fallback is None
    assert decision.intent.weights() == ALL_ON_STABLE


def test_a_backend_that_never_carries_stable_again_ends_the_drill_at_the_limit():
    world = on_fallback()
    world.until(lambda d: d.intent.weights() == ALL_ON_STABLE)
    world.converges = False
    world.backend = TrafficIntent(STABLE, FALLBACK, 100)  # stuck on the fallback
    decision = world.until(lambda d: d.status.drill is None, seconds=10)
    interrupted(decision, "not back on stable within")
    assert decision.intent.weights() == ALL_ON_STABLE and decision.status.phase is Phase.Stable


def test_a_drill_left_behind_by_an_operator_that_was_down_ends_at_once():
    world = on_fallback()
    world.now += timedelta(seconds=MAX_DRILL_SECONDS)
    world.carried = None  # a new process remembers nothing
    decision = world.round()
    interrupted(decision, "within 300s")
    assert decision.intent.weights() == ALL_ON_STABLE


def test_lost_status_writes_still_end_on_stable():
    """Every other decision is lost (its status write never landed): the next round decides again from the
    older status, and the drill still completes, all traffic back on stable."""
    world = drilling()
    for index in range(60):
        persisted = world.status if index % 2 else world.inputs[-1][1]
        world.status = persisted
        world.round()
        if world.status.drill is None and world.status.last_drill is not None:
            break
    assert world.status.last_drill.result is DrillResult.Completed
    assert world.decisions[-1].intent.weights() == ALL_ON_STABLE


def test_fail_safe_ends_a_drill_on_stable():
    world = on_fallback()
    decision = fail_safe(world.spec, world.status, "boom", world.now)
    interrupted(decision, "the operator could not evaluate it (boom)")
    assert decision.intent.weights() == ALL_ON_STABLE and decision.status.phase is Phase.Stable
    waiting = drilling()
    assert fail_safe(waiting.spec, waiting.status, "boom", waiting.now).intent.weights() == ALL_ON_STABLE


def test_phase_drilling_without_a_drill_heals_to_stable():
    spec, status, now = promoted_status()
    broken = status.model_copy(update={"phase": Phase.Drilling})
    decision = decide(spec, broken, Observations(frozenset({FALLBACK, STABLE})), now)
    assert decision.status.phase is Phase.Stable and decision.intent.weights() == ALL_ON_STABLE


# --- requests lost -------------------------------------------------------------------------------

def completed() -> World:
    world = drilling()
    world.until(lambda d: d.status.drill is None)
    return world


def test_requests_lost_are_recorded_once_for_their_drill():
    world = completed()
    last = world.status.last_drill
    world.loss = DrillLoss("2020-01-01T00:00:00.000Z", 99)  # another drill's: ignored
    assert world.round().status.last_drill == last
    world.loss = DrillLoss(last.started_at, 7)
    decision = world.round()
    recorded = decision.status.last_drill
    assert (recorded.requests_lost, recorded.requests_lost_note, recorded.requests_lost_due) == (7, None, None)
    assert [(e.reason, e.type) for e in decision.events] == [("DrillRequestsLost", "Normal")]
    assert "7 requests lost" in decision.events[0].message
    world.loss = DrillLoss(last.started_at, 12)
    assert world.round().status.last_drill.requests_lost == 7  # once
    assert_fixed_points(world)


def test_requests_lost_not_measured_say_why():
    world = completed()
    world.loss = DrillLoss(world.status.last_drill.started_at, None, "not measured: the gatewayAPI backend exports "
                                                                      "no error rate")
    last = world.round().status.last_drill
    assert last.requests_lost is None and last.requests_lost_due is None
    assert "exports no error rate" in last.requests_lost_note


# --- the shell's part: requests lost, the units of a drill, the rounds' pace -------------------------

class Provider:
    """Answers the error-rate template per KServe revision: a value query gets the unit's error rate, a sample
    query its request count; every query asked is kept."""

    def __init__(self, rates: dict[str, float], requests: dict[str, float], fail: Exception | None = None):
        self.rates, self.requests, self.fail, self.asked = rates, requests, fail, []

    async def query(self, promql: str, at: datetime, *, batch: str | None = None) -> float | None:
        self.asked.append((promql, at))
        if self.fail is not None:
            raise self.fail
        unit = next(u for u in self.rates if f'"{u}"' in promql)
        return self.rates[unit] if " / " in promql else self.requests[unit]


class Router:
    def __init__(self, templates):
        self.templates = templates

    def object_name(self, target) -> str:
        return target.deployment


def pending_loss() -> tuple[ModelDeploymentSpec, ModelDeploymentStatus, datetime]:
    world = completed()
    return world.spec, world.status, parse_rfc3339(world.status.last_drill.requests_lost_due)


def measure(provider: Provider | None, status: ModelDeploymentStatus, now: datetime, units, templates=None,
            spec: ModelDeploymentSpec | None = None):
    import asyncio

    from modelops import drills
    from modelops.routers import kserve
    from modelops.routers.base import Target

    spec = spec or make_spec(strategy={"type": "HotSwap"})

    async def providers(analysis, asker, cap):
        if provider is None:
            from modelops.analysis.provider import ProviderError
            raise ProviderError("forbidden", "no provider named default")
        return provider

    router = Router(kserve.TEMPLATES if templates is None else templates)
    return asyncio.run(drills.measure_loss(providers, spec, status, router, Target("ml", "fraud", spec.serving), units,
                                           now, asyncio.Event()))


def units_of(status: ModelDeploymentStatus):
    from modelops.drills import DrillUnits

    return DrillUnits(status.last_drill.started_at, {FALLBACK: {"fraud-predictor-00003"},
                                                     STABLE: {"fraud-predictor-00002", "fraud-predictor-00004"}})


def test_requests_lost_sum_errors_over_every_unit_from_the_drills_start_once_its_window_is_scraped():
    spec, status, due = pending_loss()
    provider = Provider({"fraud-predictor-00002": 0.01, "fraud-predictor-00003": 0.5, "fraud-predictor-00004": 0.0},
                        {"fraud-predictor-00002": 100.0, "fraud-predictor-00003": 10.0, "fraud-predictor-00004": 50.0})
    assert measure(provider, status, due - timedelta(seconds=1), units_of(status)) is None and not provider.asked
    loss = measure(provider, status, due + timedelta(seconds=0.4), units_of(status))
    assert loss == DrillLoss(status.last_drill.started_at, 6)  # 0.01 x 100 + 0.5 x 10 + 0 x 50
    span = (due - parse_rfc3339(status.last_drill.started_at)).total_seconds()
    assert len(provider.asked) == 6 and all(f"[{int(span)}s]" in q for q, _ in provider.asked)
    assert {at for _, at in provider.asked} == {due}  # the whole second it was due, as analyses ask


def test_requests_lost_not_measured_and_why():
    from modelops.analysis.provider import ProviderError
    from modelops.routers import gateway_api

    spec, status, due = pending_loss()
    gateway = make_spec(strategy={"type": "HotSwap"}, serving={"backend": "gatewayAPI", "gatewayAPI": {
        "route": "fraud", "services": {FALLBACK: "a", STABLE: "b"}}})
    loss = measure(Provider({}, {}), status, due - timedelta(seconds=5), units_of(status), gateway_api.TEMPLATES,
                   gateway)
    assert loss.lost is None and "gatewayAPI backend exports no error rate" in loss.note  # said at once
    failing = Provider({}, {}, fail=ProviderError("unreachable", "Prometheus at http://p:9090 is unreachable"))
    assert measure(failing, status, due, units_of(status)).note == \
        "not measured: Prometheus at http://p:9090 is unreachable"
    assert "no provider named default" in measure(None, status, due, units_of(status)).note
    assert "restarted during the drill" in measure(Provider({}, {}), status, due, None).note
    assert measure(Provider({}, {}), status.model_copy(update={"last_drill": None}), due, None) is None


def test_requests_lost_not_measured_behind_a_route_in_kserve_standard_mode():
    """The router's templates are the Knative ones in either mode; Standard mode has no such series, and counting
    their absence as no errors would report a drill that lost requests as losing none."""
    spec, status, due = pending_loss()
    standard = make_spec(strategy={"type": "HotSwap"}, serving={"backend": "kserve", "kserve": {
        "httpRoute": {"name": "fraud"}}})
    provider = Provider({"fraud-predictor-00002": 0.5, "fraud-predictor-00003": 0.5, "fraud-predictor-00004": 0.5},
                        {"fraud-predictor-00002": 10.0, "fraud-predictor-00003": 10.0, "fraud-predictor-00004": 10.0})
    loss = measure(provider, status, due, units_of(status), spec=standard)
    assert loss.lost is None and not provider.asked
    assert "kserve backend with serving.kserve.httpRoute (Standard mode) exports no error rate" in loss.note
    assert measure(provider, status, due, units_of(status)).lost == 15  # the same provider, serverless: measured


def test_the_units_of_a_drill_are_kept_until_its_requests_lost_are_measured():
    from modelops.drills import remember_units
    from modelops.routers.base import BackendState

    spec, stable, now = promoted_status()
    world = World(spec, stable, now)
    before = world.status
    world.round(request=drill())
    units = remember_units(None, before, world.status, BackendState(frozenset({STABLE}), {STABLE: "rev-2"}))
    assert units.units == {STABLE: {"rev-2"}}
    units = remember_units(units, world.status, world.status,
                           BackendState(frozenset({STABLE, FALLBACK}), {STABLE: "rev-2", FALLBACK: "rev-3"}))
    done = world.until(lambda d: d.status.drill is None)
    assert remember_units(units, done.status, done.status, None).units == {STABLE: {"rev-2"}, FALLBACK: {"rev-3"}}
    measured = done.status.model_copy(update={"last_drill": done.status.last_drill.model_copy(
        update={"started_at": "2020-01-01T00:00:00.000Z"})})
    assert remember_units(units, measured, measured, None) is None  # another drill's: forgotten


def test_rounds_run_every_second_during_a_drill_and_wake_for_its_requests_lost():
    from modelops.reconcile import CONVERGE_SECONDS, IDLE_SECONDS, next_delay
    from modelops.routers.base import BackendState

    world = drilling()
    backend = BackendState(frozenset({FALLBACK, STABLE}))
    assert next_delay(world.spec, world.decisions[-1], backend, world.now) == CONVERGE_SECONDS
    done = world.until(lambda d: d.status.drill is None)
    due = parse_rfc3339(done.status.last_drill.requests_lost_due)
    assert next_delay(world.spec, done, backend, world.now) == (due - world.now).total_seconds() == 9.0  # ended 1 s ago
    world.loss = DrillLoss(done.status.last_drill.started_at, 0)
    assert next_delay(world.spec, world.round(), backend, world.now) == IDLE_SECONDS


def test_only_what_the_backend_carried_since_the_drill_moved_counts():
    """A `carried` older than the stage it would end (an earlier drill's, say) is no evidence of this one."""
    spec, status, now = promoted_status()
    on_fallback = TrafficIntent(STABLE, FALLBACK, 100)
    later = now + timedelta(seconds=1)
    started = decide(spec.model_copy(update={"request": drill()}), status,
                     Observations(frozenset({FALLBACK, STABLE}), carried=Carried(on_fallback, now)), later)
    assert started.status.drill.routed_at == rfc3339(later) and started.status.drill.on_fallback_at is None
    seen = decide(spec.model_copy(update={"request": drill()}), started.status,
                  Observations(frozenset({FALLBACK, STABLE}), carried=Carried(on_fallback, later)),
                  later + timedelta(seconds=1))
    assert seen.status.drill.on_fallback_at == rfc3339(later)


def test_fail_safe_without_a_drill_leaves_the_last_one_alone():
    world = completed()
    decision = fail_safe(world.spec, world.status, "boom", world.now)
    assert decision.status.last_drill == world.status.last_drill and decision.events == ()
