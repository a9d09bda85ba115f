"""Mirror and match steps through the real round (world.py), on Gateway API and Seldon: named examples.

The schedule search (test_schedules.py) draws mirror and match steps too; these pin two stories
by name. Exposure (weight, copies, cohort) is defined in invariants.py, and the invariants are
checked after every step here as everywhere in this tier.
"""

from __future__ import annotations

import pytest

from modelops.api.modeldeployment import Phase

from .fakes import FailOn, Fault
from .world import COHORT, World, new_world

CANDIDATE = "1.1.0"


def side(w: World) -> dict[str, dict[str, int]]:
    """Copies and cohorts per version (World.exposure without the weights)."""
    return {kind: per for kind, per in w.exposure().items() if kind != "weight"}


def exposed_by(w: World, version: str) -> set[str]:
    return {kind for kind, per in side(w).items() if per.get(version)}


def start_step(w: World, kind: str) -> None:
    """spec.version bumped; ticks until the candidate gets `kind` ("copies" or "cohort")."""
    w.set_version(CANDIDATE)
    for _ in range(12):
        w.tick(10)
        if kind in exposed_by(w, CANDIDATE):
            return
    raise AssertionError(f"the rollout did not reach its {kind} step: {w.trace[-6:]}")


STEPS = {"copies": ("m50", 10, 50), "cohort": ("match", 10, 50)}


def test_mirror_and_match_steps_expose_the_candidate_as_the_route_says(worlds):
    """What the sim counts as exposure, read from the route the operator wrote."""
    w = new_world(worlds, "gatewayAPI", steps=("m50", "match", 10, 50))
    start_step(w, "copies")
    s = w.status()
    assert (s.canary_version, s.canary_weight, s.canary_mirror) == (CANDIDATE, 0, 50)
    assert w.live() == {"1.0.0": 100} and side(w) == {"copies": {CANDIDATE: 50}, "cohort": {}}
    w.round()  # the route write's echo wakes a round, which sees the step carried
    w.tick(10)
    s = w.status()
    assert s.canary_mirror == 0 and [(h.name, h.value) for h in s.canary_match] == [(COHORT["name"], COHORT["value"])]
    assert w.live() == {"1.0.0": 100} and side(w) == {"copies": {}, "cohort": {CANDIDATE: 1}}
    cohort = [r for r in w.traffic_fields() if str(r.get("name", "")).startswith("modelops-cohort-")]
    assert [m["headers"] for m in cohort[0]["matches"]] == [[{"type": "Exact", **COHORT}]]
    assert cohort[0]["backendRefs"] == [{"name": "fraud-v1-1-0", "port": 8080, "weight": 1}]


@pytest.mark.parametrize("kind", ["copies", "cohort"])
@pytest.mark.parametrize("crash", ["after the status write", "before the route write"])
def test_crash_between_the_rollback_status_write_and_the_route_write_then_the_next_round_removes_the_exposure(
        worlds, kind, crash):
    """The rollback's status (RolledBack, no canary) is persisted, then the process dies before the route is
    written: the route still mirrors to / routes the cohort to 1.1.0. The next fault-free round must write
    the route without them (G1 holds it there from then on, at every later step)."""
    w = new_world(worlds, "gatewayAPI", steps=STEPS[kind])
    start_step(w, kind)
    w.metric("candidate", "bad")
    w.advance(10)
    w.settle()
    if crash == "after the status write":
        w.kube.hook = FailOn("patch_status", "modeldeployments", Fault("crash", "after"))
    else:
        w.kube.hook = FailOn("apply", "httproutes", Fault("crash", "before"))
    assert w.round().crashed
    s = w.status()
    assert s.phase is Phase.RolledBack and s.failed_version == CANDIDATE and s.canary_version is None
    assert exposed_by(w, CANDIDATE) == {kind}, "the crash left the route as it was"
    w.heal()
    w.tick(1)
    assert exposed_by(w, CANDIDATE) == set() and w.live() == {"1.0.0": 100}, w.trace[-4:]
    for _ in range(3):
        w.tick(10)
    s = w.status()
    assert s.phase is Phase.RolledBack and s.failed_version == CANDIDATE
    assert exposed_by(w, CANDIDATE) == set() and w.live() == {"1.0.0": 100}


@pytest.mark.parametrize("kind", ["copies", "cohort"])
@pytest.mark.parametrize("respect_operator", [True, False], ids=["argo-managedFieldsManagers", "git-values-unforced"])
def test_gitops_reapply_of_the_route_during_a_mirror_or_match_step_keeps_it(worlds, kind, respect_operator):
    """Argo CD re-applies the route from Git (the user's manifest: one rule, weight 100 to 1.0.0's Service, no
    filter, no cohort rule) while the candidate is mirrored to or gets its cohort. The route's rules are one
    atomic list the operator's manager owns since its first apply (routers/gateway_api.py, field ownership):
    sent without the operator's fields the apply is accepted and leaves the rules alone; sent with Git's values,
    unforced, it is a 409 naming `modelops`. Either way the mirror / cohort stays, with no repair needed: the
    route is unchanged, and the next round neither rewrites it nor loses the step."""
    w = new_world(worlds, "gatewayAPI", steps=STEPS[kind])
    start_step(w, kind)
    before = (w.traffic_fields(), w.exposure())
    outcome = w.git_apply(respect_operator=respect_operator)
    assert outcome == ("applied" if respect_operator else "conflict")
    assert (w.traffic_fields(), w.exposure()) == before  # nothing for the operator to restore
    w.settle()  # the Gateway reports the generation carrying the step (without it the candidate reads unready)
    rules = w.traffic_fields()
    w.round()
    assert w.traffic_fields() == rules and exposed_by(w, CANDIDATE) == {kind}
    assert w.status().canary_version == CANDIDATE and (w.status().canary_mirror or w.status().canary_match)


@pytest.mark.parametrize("backend, steps", [("seldon", ("m100", 10, 50)), ("seldonV2", ("m30", 20))])
def test_a_seldon_mirror_step_copies_to_the_candidate_then_its_weighted_steps_take_the_mirror_away_and_promote(
        worlds, backend, steps):
    """Seldon v1 copies every request to a shadow predictor; Seldon v2 copies the Experiment's mirror percent. The
    weighted step after the mirror step removes the copies (v2: spec.mirror goes from the Experiment), and the
    rollout goes on to promotion, after which the operator writes nothing more."""
    w = new_world(worlds, backend, steps=steps)
    mirror = int(steps[0][1:])
    start_step(w, "copies")
    s = w.status()
    assert (s.canary_weight, s.canary_mirror) == (0, mirror)
    assert w.live() == {"1.0.0": 100} and side(w) == {"copies": {CANDIDATE: mirror}, "cohort": {}}
    for _ in range(12):
        w.tick(10)
        if w.status().canary_weight:
            break
    assert w.status().canary_mirror == 0 and side(w)["copies"] == {}, w.trace[-4:]
    for _ in range(12):
        w.tick(10)
        if w.status().phase is Phase.Stable:
            break
    s = w.status()
    assert s.phase is Phase.Stable and s.stable_version == CANDIDATE and w.live() == {CANDIDATE: 100}, w.trace[-4:]
    settled = len(w.kube.calls)
    w.tick(10)
    assert not [c for c, _ in w.kube.calls[settled:] if c.verb not in ("get", "list")]

