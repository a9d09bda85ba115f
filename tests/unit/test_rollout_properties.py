"""Properties of the rollout engine over random specs, verdict sequences and manual actions."""

from __future__ import annotations


from hypothesis import given, settings
from hypothesis import strategies as st

from modelops.api.modeldeployment import Phase, Request, TrafficOverride
from modelops.rollout import Observations, decide
from modelops.rollout.values import MAX_DRILL_SECONDS, parse_rfc3339

from .rollout_sim import Sim, make_spec

VERSIONS = ["1.0.0", "1.1.0", "1.2.0", "2.0.0"]


@st.composite
def specs(draw):
    steps = sorted(draw(st.sets(st.integers(1, 100), min_size=1, max_size=5)))
    return make_spec(
        steps=steps,
        pause=draw(st.sampled_from(["0s", "10s", "30s", "1m"])),
        strategy={"type": draw(st.sampled_from(["Canary", "Canary", "HotSwap"])),
                  "rollback": draw(st.sampled_from(["Immediate", "Progressive"]))},
        checks=[{"name": "c", "query": "up", "max": 0.05, "noData": draw(st.sampled_from(["Hold", "Fail", "Pass"]))}],
        analysis={"failureLimit": draw(st.integers(1, 3)), "noDataLimit": draw(st.integers(1, 3))},
        retention=draw(st.integers(0, 3)),
    )


ticks = st.tuples(st.just("tick"), st.sampled_from(["Pass", "Pass", "Fail", "NoData"]), st.integers(1, 90))
actions = st.one_of(
    ticks, ticks, ticks,
    st.tuples(st.just("version"), st.sampled_from(VERSIONS)),
    st.tuples(st.just("pause"), st.booleans()),
    st.tuples(st.just("pin"), st.one_of(st.none(), st.integers(0, 100))),
    st.tuples(st.just("request"), st.sampled_from(["Promote", "Abort", "Rollback", "Retry", "Drill", "Drill"]),
              st.one_of(st.none(), st.sampled_from(VERSIONS))),
    st.tuples(st.just("ready"), st.sampled_from(VERSIONS), st.booleans()),
)


def apply(sim: Sim, action: tuple, counter: list[int]):
    kind = action[0]
    if kind == "tick":
        return sim.tick(action[1], action[2])
    if kind == "version":
        return sim.set(version=action[1])
    if kind == "pause":
        return sim.set(paused=action[1])
    if kind == "pin":
        override = None if action[1] is None else TrafficOverride(weight=action[1], reason="test")
        return sim.set(traffic_override=override)
    if kind == "request":
        counter[0] += 1
        req = Request(id=f"r{counter[0]}", action=action[1], version=action[2], reason="test")
        return sim.set(request=req)
    (sim.ready.add if action[2] else sim.ready.discard)(action[1])
    return sim.step()


def run(spec, script):
    sim = Sim(spec)
    sim.step()
    yield from play(sim, script)


def play(sim, script):
    counter = [0]
    for action in script:
        yield sim, action, apply(sim, action, counter)


@settings(deadline=None)
@given(spec=specs(), script=st.lists(actions, max_size=40))
def test_weights_are_whole_percentages_that_sum_to_100(spec, script):
    for sim, _, decision in run(spec, script):
        weights = decision.intent.weights()
        assert all(isinstance(w, int) and 0 <= w <= 100 for w in weights.values())
        assert sum(weights.values()) == 100
        assert 0 <= decision.status.canary_weight <= 100


@settings(deadline=None)
@given(spec=specs(), script=st.lists(actions, max_size=40))
def test_traffic_only_goes_to_ready_candidates(spec, script):
    for sim, _, decision in run(spec, script):
        intent = decision.intent
        if intent.candidate is not None and intent.candidate_weight > 0 and sim.status.pinned_weight is None:
            assert intent.candidate in sim.ready


@settings(deadline=None)
@given(spec=specs().filter(lambda s: s.strategy.type.value == "Canary"), script=st.lists(actions, max_size=40))
def test_never_promoted_after_a_failed_analysis_without_a_pass_since(spec, script):
    failed_since_pass = False
    no_data_passes = spec.analysis.checks[0].no_data.value == "Pass"
    for sim, action, decision in run(spec, script):
        reasons = [e.reason for e in decision.events]
        if "RolloutStarted" in reasons:
            failed_since_pass = False
        if "AnalysisFailed" in reasons:
            failed_since_pass = True
        elif action[0] == "tick" and (action[1] == "Pass" or (action[1] == "NoData" and no_data_passes)):
            failed_since_pass = False
        manual = action[0] == "request" and action[1] == "Promote"
        if "Promoted" in reasons and not manual:
            assert not failed_since_pass, [h.reason for h in decision.status.history]


@settings(deadline=None)
@given(spec=specs(), script=st.lists(actions, max_size=30))
def test_rollback_is_reachable_from_every_state(spec, script):
    for sim, _, decision in run(spec, script):
        status = decision.status
        if status.canary_version is None:
            continue
        # An abort takes all traffic back to stable in one decision, whatever the state.
        aborted = decide(spec.model_copy(update={"version": status.canary_version,
                                                 "request": Request(id="abort", action="Abort", reason="t")}),
                         status, Observations(frozenset(sim.ready)), sim.now)
        assert aborted.intent.weights() == {status.stable_version: 100}
        assert aborted.status.phase is Phase.RolledBack
        # And without a human, failing analyses get there too once nobody pins the weight.
        probe = Sim(spec.model_copy(update={"version": status.canary_version, "traffic_override": None,
                                            "request": None}), status, sim.now, set(sim.ready))
        # (A candidate that never gets ready is rolled back after strategy.readyTimeout.)
        for _ in range(spec.analysis.failure_limit + len(spec.strategy.steps) + 2):
            probe.tick("Fail", seconds=300)
        assert probe.status.phase is Phase.RolledBack and probe.status.canary_version is None


@settings(deadline=None)
@given(spec=specs(), script=st.lists(actions, max_size=40))
def test_decide_is_deterministic_and_a_replay_is_a_fixed_point(spec, script):
    for sim, _, decision in run(spec, script):
        spec_in, status_in, observations, now = sim.last_inputs
        assert decide(spec_in, status_in, observations, now) == decision
        # A crash after the traffic write and before anything else re-runs the same inputs
        # from the returned status: that must change nothing and emit nothing.
        replay = decide(spec_in, decision.status, observations, now)
        assert replay.status == decision.status
        assert replay.intent == decision.intent
        assert replay.events == ()


@settings(deadline=None)
@given(spec=specs(), script=st.lists(actions, max_size=40))
def test_steps_are_neither_skipped_nor_repeated(spec, script):
    for sim, _, decision in run(spec, script):
        _, before, _, _ = sim.last_inputs
        after = decision.status
        advanced = [e for e in decision.events if e.reason == "StepAdvanced"]
        assert len(advanced) <= 1
        if advanced and before.canary_version == after.canary_version and before.step_started_at is not None:
            assert after.current_step == before.current_step + 1
        if advanced and before.canary_version != after.canary_version:
            assert after.current_step == 0  # a new candidate starts at the first step
        elif advanced and before.step_started_at is None:
            assert after.current_step == (before.current_step or 0)  # became ready: enters its step


@settings(deadline=None)
@given(spec=specs(), script=st.lists(actions, max_size=40))
def test_a_drill_ends_within_its_limit_and_leaves_the_fallback_without_traffic(spec, script):
    for sim, _, decision in run(spec, script):
        status = decision.status
        assert (status.phase is Phase.Drilling) == (status.drill is not None)
        if status.drill is not None:
            assert (sim.now - parse_rfc3339(status.drill.started_at)).total_seconds() < MAX_DRILL_SECONDS
            assert status.canary_version is None and status.drill.returns_to == status.stable_version
        ended = any(e.reason in ("DrillCompleted", "DrillInterrupted") for e in decision.events)
        if ended:
            assert status.last_drill is not None
        if ended and status.drill is None:  # (a Drill request may start the next one in the same decision)
            fallback = status.last_drill.fallback_version
            if fallback not in (status.stable_version, status.canary_version):
                assert fallback not in decision.intent.weights()


def run_from_a_drill(spec, script):
    """Promote 1.1.0 (so 1.0.0 is the fallback), ask for a drill, then play the script."""
    sim = Sim(spec.model_copy(update={"retention": max(1, spec.retention)}))
    sim.step()
    sim.set(version="1.1.0")
    for _ in range(30):
        if sim.status.phase is Phase.Stable:
            break
        sim.tick("Pass", 60)
    sim.set(request=Request(id="drill", action="Drill", reason="game day"))
    assert sim.status.phase is Phase.Drilling
    yield from play(sim, script)


@settings(deadline=None)
@given(spec=specs(), script=st.lists(actions, max_size=30))
def test_every_property_holds_through_a_drill(spec, script):
    """The properties above, from a drill in flight: whatever happens, it ends within its limit, the fallback keeps
    no traffic after it, only ready versions get any, and each decision is a fixed point."""
    for sim, _, decision in run_from_a_drill(spec, script):
        weights = decision.intent.weights()
        assert sum(weights.values()) == 100 and all(0 <= w <= 100 for w in weights.values())
        intent = decision.intent
        if intent.candidate is not None and intent.candidate_weight > 0 and sim.status.pinned_weight is None:
            assert intent.candidate in sim.ready
        spec_in, status_in, observations, now = sim.last_inputs
        replay = decide(spec_in, decision.status, observations, now)
        assert (replay.status, replay.intent, replay.events) == (decision.status, decision.intent, ())
        status = decision.status
        assert (status.phase is Phase.Drilling) == (status.drill is not None)
        if status.drill is not None:
            assert (sim.now - parse_rfc3339(status.drill.started_at)).total_seconds() < MAX_DRILL_SECONDS
        ended = any(e.reason in ("DrillCompleted", "DrillInterrupted") for e in decision.events)
        if ended and status.drill is None:  # (a Drill request may start the next one in the same decision)
            fallback = status.last_drill.fallback_version
            if fallback not in (status.stable_version, status.canary_version):
                assert fallback not in weights
