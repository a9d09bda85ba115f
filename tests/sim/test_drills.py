"""Rollback drills through the real round (reconcile.run_round) on the fakes, on KServe and on Gateway API: the
whole walk as the backend objects show it, a crash at every API call of a drill followed by a restart, and
Hypothesis schedules of faults, restarts and edits during a drill. Whatever happens, once the faults stop the
drill is over within its limit and all traffic is on stable (or on what a person asked for). The invariants of
invariants.py are checked after every step (a drill's persisted status is what lets the fallback gain traffic)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelops.api.modeldeployment import DrillResult, Phase
from modelops.rollout import intent_of
from modelops.rollout.values import MAX_DRILL_SECONDS

from .fakes import CrashAt, Fault
from .test_schedules import SCALE, run
from .world import BACKEND_RESOURCES, World, new_world

BACKENDS = ["kserve", "gatewayAPI", "seldon", "seldonV2"]
SCHEDULED_BACKENDS = ["kserve", "gatewayAPI"]
"""Drill schedules cost about 14 s of CPU per backend in the default run: the Seldon backends' drills are searched
within test_schedules (its Drill requests) only."""
STABLE, FALLBACK = "1.1.0", "1.0.0"


def promoted(worlds, backend: str) -> World:
    """1.1.0 promoted from 1.0.0, the fallback: by a HotSwap, or on KServe (which refuses HotSwap) one 50 % step."""
    w = new_world(worlds, backend, **({"steps": (50,)} if backend == "kserve" else {"strategy": "HotSwap"}))
    w.set_version(STABLE)
    for _ in range(12):
        w.tick(10)
        s = w.status()
        if s.phase is Phase.Stable and s.stable_version == STABLE:
            assert s.fallback_version == FALLBACK and w.live() == {STABLE: 100}
            return w
    raise AssertionError(f"not promoted: {w.trace[-6:]}")


def drain(w: World) -> None:
    """Faults stop; time passes, the serving controller catches up and rounds run, past a drill's limit."""
    w.heal()
    for _ in range(int(MAX_DRILL_SECONDS // 10) + 4):
        w.tick(10)


def assert_over_and_on_stable(w: World, context: object = "") -> None:
    s = w.status()
    assert s.drill is None and s.phase is not Phase.Drilling, (context, w.trace[-10:])
    if s.canary_version is None:
        assert w.live() == {s.stable_version: 100}, (context, w.live(), w.trace[-10:])
    if s.last_drill is not None and s.last_drill.fallback_version not in (s.stable_version, s.canary_version):
        assert s.last_drill.fallback_version not in w.live(), (context, w.live(), w.trace[-10:])


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_drill_moves_the_backend_to_the_fallback_and_back(worlds, backend):
    w = promoted(worlds, backend)
    w.request("D1", "Drill")
    seen, carried = [], 0
    for _ in range(40):
        info = w.tick(1)
        seen.append(w.live())
        if w.memory.carried is not None:
            # "Carried" is only ever what the persisted status stands for, from a round that wrote nothing to the backend.
            carried += 1
            assert w.memory.carried.intent == intent_of(w.status())
            plurals = {r.plural for r in BACKEND_RESOURCES[backend]}
            assert not [c for c in info.calls if c[0].plural in plurals and c[0].verb not in ("get", "list")]
        if w.status().drill is None:
            break
    assert carried >= 2
    assert {FALLBACK: 100} in seen and seen[-1] == {STABLE: 100}
    last = w.status().last_drill
    assert last.result is DrillResult.Completed and last.seconds_to_fallback > 0 and last.seconds_back > 0
    assert [h.action for h in w.status().history[-3:]] == ["DrillStarted", "DrillOnFallback", "DrillCompleted"]
    assert {"DrillStarted", "DrillOnFallback", "DrillCompleted"} <= {e[1] for e in w.events.posted}
    assert_over_and_on_stable(w)


def drill_world(worlds, backend: str) -> World:
    w = promoted(worlds, backend)
    w.request("D1", "Drill")
    return w


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_crash_at_every_call_of_a_drill_then_a_restart_ends_on_stable(worlds, backend):
    probe = drill_world(worlds, backend)
    first = len(probe.kube.calls)
    while probe.status().drill is not None or probe.status().phase is Phase.Drilling or len(probe.kube.calls) == first:
        probe.tick(1)
    calls = len(probe.kube.calls) - first
    assert probe.status().last_drill.result is DrillResult.Completed and calls >= 6
    for index in range(calls):
        for when in ("before", "after"):
            w = drill_world(worlds, backend)
            w.kube.hook = CrashAt(index, when)
            for _ in range(40):
                if w.tick(1).crashed:
                    break
            drain(w)
            assert_over_and_on_stable(w, (index, when))


faults = st.one_of(
    st.none(), st.none(),
    st.builds(Fault, st.sampled_from([409, 500, "timeout"]), st.just("before")),
    st.builds(Fault, st.sampled_from(["timeout", "crash"]), st.just("after")),
    st.builds(Fault, st.just("crash"), st.just("before")),
)
operations = st.one_of(
    st.tuples(st.just("tick"), st.sampled_from([1, 1, 1, 5, 30]), st.booleans(), st.booleans()),
    st.tuples(st.just("tick"), st.sampled_from([1, 1, 1, 5, 30]), st.just(True), st.just(False)),
    st.tuples(st.just("round"), st.booleans()),
    st.tuples(st.just("settle"), st.booleans()),
    st.tuples(st.just("advance"), st.sampled_from([1, 10, 60, 300])),
    st.tuples(st.just("faults"), st.lists(faults, min_size=1, max_size=6)),
    st.tuples(st.just("restart")),
    st.tuples(st.just("version"), st.sampled_from(["1.0.0", "1.2.0"])),
    st.tuples(st.just("pause"), st.booleans()),
    st.tuples(st.just("override"), st.sampled_from([None, 0, 30])),
    st.tuples(st.just("request"), st.sampled_from("ABCDEFGH"), st.sampled_from(["Abort", "Rollback", "Promote", "Drill",
                                                                                "Retry"]), st.none()),
    st.tuples(st.just("delete_mv"), st.just(FALLBACK)),
    st.tuples(st.just("restore_mv"), st.just(FALLBACK)),
)


@pytest.mark.parametrize("backend", SCHEDULED_BACKENDS)
def test_drill_schedules_end_on_stable(worlds, backend):
    @settings(max_examples=60 * SCALE, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.function_scoped_fixture])
    @given(ops=st.lists(operations, min_size=1, max_size=25))
    def schedule(ops):
        w = drill_world(worlds, backend)
        try:
            for op in ops:
                run(w, op)
            w.restore_mv(FALLBACK)
            drain(w)
            assert_over_and_on_stable(w, ops)
        finally:
            worlds.remove(w)
            w.close()

    schedule()
