"""A spec the operator refuses, written past the API server (a CRD older than the operator's rules, or an object
stored before them), through the real round on the fakes: the round still runs under the last spec this loop
accepted, so analyses, rollbacks and a drill's limit go on, and the status says the spec is refused. With no
accepted spec (the operator restarted meanwhile), a candidate in flight goes back to stable and a drill ends."""

from __future__ import annotations

import pytest

from modelops.api.modeldeployment import DrillResult, Phase
from modelops.reconcile import DEPLOYMENTS, run_round
from modelops.rollout.values import MAX_DRILL_SECONDS

from .fakes import FailOn, Fault
from .test_drills import FALLBACK, STABLE, promoted
from .test_named_defects import BACKENDS as ALL_BACKENDS, start
from .world import World, new_world

BACKENDS = ["kserve", "gatewayAPI"]
ZERO_INTERVAL = {"analysis": {"interval": "0s"}}


def synced(w: World):
    return next(c for c in w.status().conditions if c.type == "Synced")


def assert_refusal_reported(w: World, field: str) -> None:
    condition = synced(w)
    assert condition.status == "False" and condition.reason == "InvalidSpec" and field in condition.message, condition
    assert "InvalidSpec" in w.events.reasons()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_failing_candidate_is_rolled_back_while_the_spec_is_refused(worlds, backend):
    w = new_world(worlds, backend, failure_limit=2)
    start(w)
    accepted_generation = w.status().observed_generation
    w.edit_refused(ZERO_INTERVAL, "analysis.interval 0s")
    w.metric("candidate", "bad")
    for _ in range(4):
        w.tick(10)
    s = w.status()
    assert s.phase is Phase.RolledBack and s.failed_version == "1.1.0" and w.live() == {"1.0.0": 100}, w.trace[-6:]
    assert_refusal_reported(w, "analysis.interval")
    # The status says which spec it acted on: not the refused one.
    assert s.observed_generation == accepted_generation < w.obj()["metadata"]["generation"]


def test_a_healthy_candidate_keeps_its_step_while_the_spec_is_refused_and_goes_on_once_it_is_fixed(worlds):
    w = new_world(worlds, "gatewayAPI", steps=(10, 25, 50))
    start(w)
    w.edit_refused({"strategy": {"steps": [{"weight": 10, "pause": "99999999999999h"}]}}, "an overflowing pause")
    for _ in range(4):
        w.tick(10)
    s = w.status()
    assert s.phase is Phase.Progressing and s.canary_version == "1.1.0", w.trace[-6:]
    assert_refusal_reported(w, "pause")
    w.set_strategy((10, 25, 50), "Canary", "Immediate")  # fixed
    for _ in range(8):
        w.tick(10)
    assert w.status().phase is Phase.Stable and w.status().stable_version == "1.1.0" and synced(w).status == "True"


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_restart_while_the_spec_is_refused_rolls_the_candidate_back(worlds, backend):
    w = new_world(worlds, backend)
    start(w)
    w.edit_refused(ZERO_INTERVAL, "analysis.interval 0s")
    w.restart()
    w.tick(1)
    w.tick(1)
    s = w.status()
    assert s.phase is Phase.RolledBack and s.canary_version is None and w.live() == {"1.0.0": 100}, w.trace[-6:]
    assert_refusal_reported(w, "analysis.interval")


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_drill_ends_within_its_limit_while_the_spec_is_refused(worlds, backend):
    w = promoted(worlds, backend)
    w.request("D1", "Drill")
    w.tick(1)
    w.edit_refused(ZERO_INTERVAL, "analysis.interval 0s")
    for _ in range(int(MAX_DRILL_SECONDS // 10) + 2):
        w.tick(10)
        if w.status().drill is None:
            break
    s = w.status()
    assert s.drill is None and s.last_drill is not None and w.live() == {STABLE: 100}, w.trace[-6:]
    assert FALLBACK not in w.live()
    assert_refusal_reported(w, "analysis.interval")


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_restart_during_a_drill_while_the_spec_is_refused_ends_the_drill_on_stable(worlds, backend):
    w = promoted(worlds, backend)
    w.request("D1", "Drill")
    for _ in range(3):
        w.tick(1)
    assert w.status().drill is not None and w.live() == {FALLBACK: 100}, w.trace[-6:]
    w.edit_refused(ZERO_INTERVAL, "analysis.interval 0s")
    w.restart()
    w.tick(1)
    w.tick(1)
    s = w.status()
    assert s.drill is None and s.last_drill.result is DrillResult.Interrupted and w.live() == {STABLE: 100}
    assert_refusal_reported(w, "analysis.interval")


def test_a_refused_spec_without_a_candidate_moves_nothing_and_says_why(worlds):
    w = new_world(worlds, "gatewayAPI")
    w.restart()
    w.edit_refused({"serving": {"backend": "gatewayAPI", "gatewayAPI": None}}, "gatewayAPI without its route")
    w.tick(1)
    assert w.status().phase is Phase.Stable and w.live() == {"1.0.0": 100}
    assert_refusal_reported(w, "serving.gatewayAPI")


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_abort_written_into_a_refused_spec_is_carried_out_at_once(worlds, backend):
    """G4: an SRE's request, pause or pin never waits for someone to fix another field of the spec."""
    w = new_world(worlds, backend)
    start(w)
    abort = {"id": "abort-1", "action": "Abort", "reason": "wrong feature set", "actor": "sre"}
    w.edit_refused({**ZERO_INTERVAL, "request": abort}, "analysis.interval 0s, with an Abort")
    w.tick(1)
    s = w.status()
    assert s.phase is Phase.RolledBack and "abort-1" in s.handled_requests and w.live() == {"1.0.0": 100}, w.trace[-6:]
    assert_refusal_reported(w, "analysis.interval")


def test_a_pause_written_into_a_refused_spec_holds_the_step(worlds):
    w = new_world(worlds, "gatewayAPI", steps=(10, 25, 50))
    start(w)
    w.edit_refused({**ZERO_INTERVAL, "paused": True}, "analysis.interval 0s, paused")
    for _ in range(6):
        w.tick(10)
    s = w.status()
    assert s.paused and s.phase is Phase.Paused and s.canary_weight == 10, w.trace[-6:]


def test_an_api_that_keeps_failing_is_backed_off_while_the_spec_is_refused(worlds):
    """A refused spec is a standing problem (no backoff: waiting fixes no spec), but a failing API call in the same
    round is a failure like any other: the rounds back off from it rather than retrying every second."""
    w = new_world(worlds, "gatewayAPI")
    start(w)
    w.edit_refused(ZERO_INTERVAL, "analysis.interval 0s")
    w.tick(1)
    delays = []
    for _ in range(4):
        w.faults([Fault("timeout")])  # the round's read of the backend: the status write and the apply go through
        delays.append(w.loop.run_until_complete(run_round(w.shell, w.obj(), w.records(), w.memory)))
    assert delays == sorted(delays) and delays[-1] >= 8, delays  # it was 1 s every round


def test_a_refused_rule_beside_a_rollback_under_a_refused_spec_after_a_restart_is_not_called_all_traffic_on_stable(
        worlds):
    w = new_world(worlds, "gatewayAPI")
    start(w)
    w.edit_refused(ZERO_INTERVAL, "analysis.interval 0s")
    w.restart()
    w.refused_rule(True)
    w.tick(1)
    w.tick(10)
    s = w.status()
    assert s.phase is Phase.RolledBack and s.failed_version == "1.1.0", w.trace[-6:]
    assert "rollback decided, backend refuses: HTTPRoute fraud rule 2 (sre-debug-split)" in s.message, s.message
    assert_refusal_reported(w, "analysis.interval")


def test_an_earlier_rollback_under_a_refused_spec_after_a_restart_is_not_called_all_traffic_on_stable_beside_a_refused_rule(
        worlds):
    w = new_world(worlds, "gatewayAPI")
    start(w)
    w.request("A", "Abort")
    w.tick(1)
    assert w.status().message.endswith("all traffic on stable 1.0.0"), w.trace[-4:]
    w.edit_refused(ZERO_INTERVAL, "analysis.interval 0s")
    w.restart()
    w.refused_rule(True)
    w.tick(10)
    s = w.status()
    assert s.phase is Phase.RolledBack and s.failed_version == "1.1.0", w.trace[-6:]
    assert "rollback decided, backend refuses: HTTPRoute fraud rule 2 (sre-debug-split)" in s.message, s.message
    assert_refusal_reported(w, "analysis.interval")


def test_a_rollback_under_a_refused_serving_after_a_restart_no_longer_claims_all_traffic_on_stable(worlds):
    """With no accepted spec and no valid `serving`, the backend cannot even be named, let alone read: a rule the
    operator refuses, added meanwhile, may route to the failed candidate, so the earlier claim goes (H)."""
    w = new_world(worlds, "gatewayAPI")
    start(w)
    w.request("A", "Abort")
    w.tick(1)
    assert w.status().message.endswith("all traffic on stable 1.0.0"), w.trace[-4:]
    w.edit_refused({"serving": {"backend": "gatewayAPI", "gatewayAPI": None}}, "gatewayAPI without its route")
    w.refused_rule(True)
    w.restart()
    w.tick(1)
    s = w.status()
    assert s.phase is Phase.RolledBack and s.failed_version == "1.1.0", w.trace[-6:]
    assert "all traffic on stable" not in s.message and "backend unread: spec.serving is refused" in s.message, \
        s.message
    assert_refusal_reported(w, "gatewayAPI")
    w.refused_rule(False)
    w.repair_spec()
    for _ in range(3):  # the repair is written, seen carried, and said in the round after
        w.tick(30)
    assert w.status().message.endswith("all traffic on stable 1.0.0"), w.trace[-4:]


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_abort_of_a_pinned_candidate_written_into_a_refused_spec_after_a_restart_is_carried_out(worlds, backend):
    """G4: an Abort never waits for a fix of another field, a pin (trafficOverride) or a restart notwithstanding."""
    w = new_world(worlds, backend)
    start(w)
    w.override(0)
    w.tick(1)
    w.restart()
    w.edit_refused(ZERO_INTERVAL, "analysis.interval 0s")
    w.request("A", "Abort")
    w.tick(1)
    s = w.status()
    assert s.phase is Phase.RolledBack and s.canary_version is None and "1.1.0" not in w.live(), w.trace[-6:]


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_an_abort_in_a_refused_spec_acts_on_the_candidate_in_flight_before_an_older_accepted_version(worlds, backend):
    """G4: under a refused spec the last accepted one may name a version the user has written over since (its round
    failed before acting on it); an Abort written with the refusal acts on the candidate in flight, which is marked
    failed, rather than finding it superseded by that older version and nothing left to abort."""
    w = new_world(worlds, backend)
    start(w)
    w.set_version("1.0.0")
    w.kube.hook = FailOn("patch_status", DEPLOYMENTS.plural, Fault(409))
    w.tick(1)
    assert w.kube.hook.fired and w.status().canary_version == "1.1.0", w.trace[-4:]
    w.heal()
    w.set_version("1.1.0")
    w.edit_refused(ZERO_INTERVAL, "analysis.interval 0s")
    w.request("A", "Abort")
    w.tick(1)
    s = w.status()
    assert s.phase is Phase.RolledBack and s.failed_version == "1.1.0" and "A" in s.handled_requests, w.trace[-6:]
    assert "1.1.0" not in w.live()
    w.repair_spec()
    w.tick(10)
    s = w.status()
    assert s.phase is Phase.RolledBack and s.failed_version == "1.1.0" and "1.1.0" not in w.live(), w.trace[-4:]
