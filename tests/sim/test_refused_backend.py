"""A backend the operator will not (wholly) drive never disarms rollback, and no status claims what it does not carry.

Through the real round in a World, as test_named_defects.py; the invariants (invariants.py, H among them) are
checked after every step here too.
"""

from __future__ import annotations

import pytest

from modelops.api.modeldeployment import Phase
from modelops.routers.base import OWNER_ANNOTATION

from .test_named_defects import BACKENDS, start
from .fakes import KSERVE_CONFIGURED
from .world import NAME, NS, REFUSED_RULE, World, new_world

ON_STABLE = "all traffic on stable 1.0.0"


def synced(w: World):
    return next(c for c in w.status().conditions if c.type == "Synced")


def hand_over(w: World, owner: str) -> None:
    """Someone annotates the backend object for another ModelDeployment (or gives it back)."""
    w.kube.world_patch(w.backend_resource, NS, NAME, {"metadata": {"annotations": {OWNER_ANNOTATION: owner}}})


def back_on_stable(w: World) -> None:
    """Rounds until the status says all traffic is on stable; the backend carries it by then."""
    for _ in range(8):
        w.tick(1)
        if w.status().message.endswith(ON_STABLE):
            break
        assert "rollback decided, backend refuses: " in w.status().message
    assert w.status().message.endswith(ON_STABLE) and w.live() == {"1.0.0": 100}


def tick_until_rolled_back(w: World, ticks: int = 3) -> None:
    for _ in range(ticks):
        w.tick(10)
        if w.status().phase is Phase.RolledBack:
            return


def test_a_refused_rule_appearing_at_the_50_percent_step_does_not_stop_the_rollback_of_a_failing_candidate(worlds):
    w = new_world(worlds, "gatewayAPI", steps=(10, 50))
    start(w, until_weight=50)
    w.refused_rule(True)
    w.metric("candidate", "bad")
    tick_until_rolled_back(w)
    s = w.status()
    assert s.phase is Phase.RolledBack and s.failed_version == "1.1.0"
    assert w.live() == {"1.0.0": 100}  # the model's path rule, which the operator owns
    assert REFUSED_RULE in w.traffic_fields()  # the rule it refuses, left as it is
    assert "rollback decided, backend refuses: HTTPRoute fraud rule 2 (sre-debug-split)" in s.message
    assert ON_STABLE not in s.message
    assert (synced(w).status, synced(w).reason) == ("False", "BackendMisconfigured")
    assert "sre-debug-split" in synced(w).message
    w.refused_rule(False)
    for _ in range(3):
        w.tick(10)
    assert w.status().message.endswith(ON_STABLE) and synced(w).status == "True"


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_abort_while_the_backend_object_is_not_owned_says_the_backend_refuses_until_it_carries_stable(worlds, backend):
    w = new_world(worlds, backend)
    start(w)
    hand_over(w, "someone-else")
    w.request("A", "Abort")
    w.tick(1)
    s = w.status()
    assert s.phase is Phase.RolledBack and s.failed_version == "1.1.0" and s.canary_version is None
    assert "rollback decided, backend refuses: " in s.message and "driven by ModelDeployment someone-else" in s.message
    assert ON_STABLE not in s.message and (synced(w).status, synced(w).reason) == ("False", "BackendNotOwned")
    assert w.live() == {"1.0.0": 90, "1.1.0": 10}  # not the operator's to write
    hand_over(w, NAME)
    back_on_stable(w)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_failing_candidate_is_still_measured_and_rolled_back_while_its_backend_object_is_not_owned(worlds, backend):
    w = new_world(worlds, backend)
    start(w)
    hand_over(w, "someone-else")
    w.metric("candidate", "bad")
    tick_until_rolled_back(w)
    s = w.status()
    assert s.phase is Phase.RolledBack and s.failed_version == "1.1.0" and "errors" in s.message
    assert "rollback decided, backend refuses: " in s.message and ON_STABLE not in s.message
    hand_over(w, NAME)
    back_on_stable(w)


def test_a_header_pin_to_a_rolled_back_candidate_is_a_warning_and_a_condition_naming_it(worlds):
    w = new_world(worlds, "gatewayAPI")
    pin = {"name": "testers", "matches": [{"path": {"type": "PathPrefix", "value": "/fraud"},
                                           "headers": [{"name": "x-cohort", "value": "testers"}]}],
           "backendRefs": [{"name": "fraud-v1-1-0", "port": 8080}]}
    w.kube.world_patch(w.backend_resource, NS, NAME, {"spec": {"rules": w.traffic_fields() + [pin]}})
    start(w)
    assert not [c for c in w.status().conditions if c.type == "FailedVersionPinned"]  # a pin to the candidate in flight
    w.request("A", "Abort")
    w.tick(1)
    w.tick(1)
    pinned = [c for c in w.status().conditions if c.type == "FailedVersionPinned"]
    assert len(pinned) == 1 and pinned[0].status == "True" and pinned[0].reason == "PinToFailedVersion"
    assert "rolled-back 1.1.0" in pinned[0].message and "HTTPRoute fraud rule 2 (testers)" in pinned[0].message
    warnings = [e for e in w.events.posted if e[1] == "PinToFailedVersion"]
    assert len(warnings) == 1 and warnings[0][0] == "Warning" and "HTTPRoute fraud rule 2 (testers)" in warnings[0][2]
    w.kube.world_patch(w.backend_resource, NS, NAME, {"spec": {"rules": [r for r in w.traffic_fields()
                                                                         if r.get("name") != "testers"]}})
    w.tick(1)
    assert not [c for c in w.status().conditions if c.type == "FailedVersionPinned"]
    assert len([e for e in w.events.posted if e[1] == "PinToFailedVersion"]) == 1


def test_no_step_moves_forward_while_a_refused_rule_is_there(worlds):
    w = new_world(worlds, "gatewayAPI", steps=(10, 50))
    start(w)
    w.refused_rule(True)
    for _ in range(4):
        w.tick(10)
        assert (w.status().phase, w.status().canary_weight, w.live()) == (Phase.Progressing, 10, {"1.0.0": 90, "1.1.0": 10})
    assert w.status().last_outcome.value == "Passed"  # measured all the while
    w.refused_rule(False)
    for _ in range(4):
        w.tick(10)
    assert w.status().canary_weight == 50 or w.status().phase is Phase.Stable


def test_a_manual_rollback_while_the_backend_object_is_not_owned_says_the_backend_refuses(worlds):
    w = new_world(worlds, "gatewayAPI")
    start(w)
    for _ in range(12):
        w.tick(10)
        if w.status().phase is Phase.Stable:
            break
    assert w.status().stable_version == "1.1.0" and w.live() == {"1.1.0": 100}
    hand_over(w, "someone-else")
    w.request("R", "Rollback", "1.0.0")
    w.tick(1)
    s = w.status()
    assert (s.phase, s.stable_version) == (Phase.RolledBack, "1.0.0") and w.live() == {"1.1.0": 100}
    assert "manual rollback from 1.1.0" in s.message and "rollback decided, backend refuses: " in s.message
    hand_over(w, NAME)
    back_on_stable(w)


def test_a_refused_rule_a_stale_watch_has_not_delivered_is_spoken_of_once_its_event_is():
    """Found by the thorough profile: a rule the operator refuses, added after a rollback, then a round whose watch
    had not delivered it. That round cannot know of the rule; the round its event wakes must say the backend refuses
    (H), which the schedule's later rounds and its drain check."""
    from .test_schedules import simulate
    from .world import Config

    simulate(Config("gatewayAPI", (10, 50), "Canary", "Immediate", 1, 1, False, False, "Hold"), "1.1.0",
             [("round", False), ("tick", 1, False, False), ("tick", 1, False, False), ("tick", 1, False, False),
              ("advance", 120), ("event_storm", 2, False), ("refused_rule", True), ("round", True), ("round", False)])


def revisions(w: World) -> int:
    return sum(len(made) for made in w.controller.revisions.values())


@pytest.mark.parametrize("backend", ["kserve", "kserveStandard"])
def test_kserve_copying_the_bookkeeping_starts_no_rollout_and_blames_no_candidate(worlds, backend):
    """KServe's ConfigMap does not list the bookkeeping (routers/kserve_config.py): no rollout starts, however long,
    no candidate is marked failed, nothing is written toward it; once it lists them, the rollout starts."""
    w = new_world(worlds, backend, steps=(10, 50))
    w.kserve_config(None)
    before = w.traffic_fields()
    w.set_version("1.1.0")
    for _ in range(20):  # 200 s: past the ready timeout of a rollout that would have started
        w.tick(10)
    s = w.status()
    assert s.canary_version is None and s.failed_version is None and s.phase is Phase.Stable, s
    assert "1.1.0 cannot start: ConfigMap kserve/inferenceservice-config is not found" in s.message
    assert w.traffic_fields() == before and w.live() == {"1.0.0": 100}
    w.kserve_config(KSERVE_CONFIGURED)
    start(w)
    assert w.live() == {"1.0.0": 90, "1.1.0": 10}


@pytest.mark.parametrize("rollback", ["Immediate", "Progressive"])
@pytest.mark.parametrize("backend", ["kserve", "kserveStandard"])
def test_kserve_copying_the_bookkeeping_mid_rollout_never_keeps_a_failing_candidate_in_traffic(worlds, backend,
                                                                                                 rollback):
    w = new_world(worlds, backend, steps=(10, 25, 50, 75), rollback=rollback)
    start(w, until_weight=75)
    w.kserve_config({"inferenceService": "{}"})  # KServe now copies every annotation
    w.metric("candidate", "bad")
    for _ in range(12):
        w.tick(10)
        if w.status().phase is Phase.RolledBack and w.live() == {"1.0.0": 100}:
            break
    s = w.status()
    assert s.phase is Phase.RolledBack and s.failed_version == "1.1.0" and w.live() == {"1.0.0": 100}, (s, w.live())


def test_kserve_serverless_copying_the_bookkeeping_makes_no_chain_of_revisions(worlds):
    """Each annotation KServe copies makes a revision; recording that revision's readiness would make the next.
    At rest and after a rollback the revisions stop."""
    w = new_world(worlds, "kserve", steps=(10, 50))
    start(w)
    w.kserve_config({"inferenceService": "{}"})
    w.metric("candidate", "bad")
    tick_until_rolled_back(w)
    for _ in range(6):
        w.tick(10)
    settled = revisions(w)
    for _ in range(20):
        w.tick(10)
    assert revisions(w) == settled and w.live() == {"1.0.0": 100}, (settled, revisions(w))
    w.kserve_config(KSERVE_CONFIGURED)  # the control: the recording writes resume, and stop again
    for _ in range(6):
        w.tick(10)
    again = revisions(w)
    for _ in range(10):
        w.tick(10)
    assert revisions(w) == again


def slowly(w: World, ticks: int) -> None:
    """Rounds 10 s apart where a new revision takes one to two of them to become ready, as on a real cluster."""
    for i in range(ticks):
        w.tick(10, ready=i % 2 == 1)


@pytest.mark.parametrize("copying", [False, True])
def test_kserve_copying_the_bookkeeping_makes_no_revision_at_rest_with_revisions_slow_to_be_ready(worlds, copying):
    w = new_world(worlds, "kserve", steps=(10, 50))
    if copying:
        w.kserve_config({"inferenceService": "{}"})
    slowly(w, 10)
    settled = revisions(w)
    slowly(w, 20)
    assert revisions(w) == settled and w.live() == {"1.0.0": 100}, (settled, revisions(w))


@pytest.mark.parametrize("copying", [False, True])
def test_kserve_a_healthy_rollout_in_flight_when_kserve_starts_copying_is_promoted(worlds, copying):
    """KServe's next reconcile makes one revision of the candidate with the annotations in it; after that only
    weights move, so no revision follows and the rollout ends as it would have."""
    w = new_world(worlds, "kserve", steps=(10, 50))
    start(w)
    made = revisions(w)
    if copying:
        w.kserve_config({"inferenceService": "{}"})
    for i in range(30):
        w.tick(10, ready=i % 2 == 1)
        if w.status().stable_version == "1.1.0":
            break
    s = w.status()
    assert s.phase is Phase.Stable and s.stable_version == "1.1.0" and w.live() == {"1.1.0": 100}, (s.message, w.live())
    assert revisions(w) <= made + (1 if copying else 0), (made, revisions(w))


def test_kserve_copying_the_bookkeeping_holds_a_drill(worlds):
    from .test_drills import promoted

    w = promoted(worlds, "kserve")
    w.kserve_config({"inferenceService": "{}"})
    w.tick(10)
    before = revisions(w)
    w.request("D1", "Drill")
    for _ in range(4):
        w.tick(10)
    assert w.status().drill is None and w.status().last_drill is None, w.status().message
    assert revisions(w) == before and w.live() == {"1.1.0": 100}


def test_kserve_copying_the_bookkeeping_holds_a_retry(worlds):
    w = new_world(worlds, "kserve", steps=(10, 50))
    start(w)
    w.metric("candidate", "bad")
    tick_until_rolled_back(w)
    assert w.status().phase is Phase.RolledBack
    w.metric("candidate", "good")
    w.kserve_config({"inferenceService": "{}"})
    w.tick(10)
    w.request("R1", "Retry")
    for _ in range(4):
        w.tick(10)
    s = w.status()
    assert s.canary_version is None and s.phase is Phase.RolledBack and w.live() == {"1.0.0": 100}, s.message
    w.kserve_config(KSERVE_CONFIGURED)  # the control: a Retry goes ahead once KServe keeps the bookkeeping off
    w.request("R2", "Retry")
    for _ in range(3):
        w.tick(10)
    assert w.status().canary_version == "1.1.0"
