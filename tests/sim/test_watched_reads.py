"""What the round reads from watches instead of the API server, through the real round (world.py):
backend objects (watched.py) and ModelVersions (kopf's index). Named stories.

The schedule search (test_schedules.py) runs every round with the backend's watch delivered (one
version behind in its stale rounds); these pin what the copies cost and what a stale copy may
and may not do. The invariants are checked after every step here as everywhere in this tier.
"""

from __future__ import annotations

import pytest

from modelops.api.modeldeployment import Phase
from modelops.reconcile import VERSIONS
from modelops.routers.gateway_api import HTTP_ROUTE
from modelops.routers.inference_service import INFERENCE_SERVICE

from .fakes import FailOn, Fault
from .world import NAME, NS, World, new_world

CANDIDATE = "1.1.0"


def gets(w: World, since: int, plural: str | None = None) -> int:
    plural = plural or w.backend_resource.plural
    return sum(1 for call, _ in w.kube.calls[since:] if call.verb == "get" and call.plural == plural)


def synced(w: World) -> bool:
    return next(c for c in w.status().conditions if c.type == "Synced").status == "True"


def roll_out(w: World, stale: bool = False) -> None:
    """To the candidate, every round ending synced (no conflict, no failure left for the next round)."""
    w.set_version(CANDIDATE)
    for i in range(30):
        w.tick(10, stale=stale and i % 2 == 1)  # every other round the watches are one version behind
        assert synced(w), w.trace[-3:]
        if w.status().phase is Phase.Stable and w.status().stable_version == CANDIDATE:
            return
    raise AssertionError(f"not promoted: {w.trace[-6:]}")


@pytest.mark.parametrize("backend", ["kserve", "gatewayAPI"])
def test_a_whole_rollout_reads_its_backend_object_and_modelversions_from_watches_alone(worlds, backend):
    w = new_world(worlds, backend)
    first = len(w.kube.calls)
    roll_out(w)
    assert w.live() == {CANDIDATE: 100}
    assert gets(w, first) == 0 and gets(w, first, VERSIONS.plural) == 0
    roles = {mv["spec"]["version"]: (mv["status"]["phase"], mv["status"].get("servedBy"))
             for mv in (w.kube.view(VERSIONS, NS, r.name) for r in w.records())}
    assert roles["1.1.0"] == ("Serving", [{"deployment": NAME, "role": "stable"}])
    assert roles["1.0.0"] == ("Serving", [{"deployment": NAME, "role": "fallback"}])


def test_a_stale_modelversion_copy_is_read_again_and_its_role_still_recorded(worlds):
    w = new_world(worlds, "kserve")
    first = len(w.kube.calls)
    w.kube.hook = FailOn("patch_status", VERSIONS.plural, Fault(409))
    w.set_version(CANDIDATE)
    w.tick(10)
    assert gets(w, first, VERSIONS.plural) == 1 and synced(w)
    candidate = w.kube.view(VERSIONS, NS, next(r.name for r in w.records() if r.spec["version"] == CANDIDATE))
    assert candidate["status"]["servedBy"] == [{"deployment": NAME, "role": "canary"}]


@pytest.mark.parametrize("backend", ["kserve", "gatewayAPI"])
def test_a_watch_one_version_behind_still_promotes_and_never_reads_older_than_its_own_write(worlds, backend):
    w = new_world(worlds, backend)
    roll_out(w, stale=True)
    assert w.live() == {CANDIDATE: 100}


def test_a_hand_edit_the_watch_shows_is_seen_as_drift_and_put_back(worlds):
    w = new_world(worlds, "gatewayAPI")
    w.set_version(CANDIDATE)
    while w.status().canary_weight == 0:
        w.tick(10)
    weight = w.status().canary_weight
    route = w.kube.peek(HTTP_ROUTE, NS, NAME)
    route["spec"]["rules"][0]["backendRefs"][-1]["weight"] = 77
    w.kube.world_patch(HTTP_ROUTE, NS, NAME, {"spec": {"rules": route["spec"]["rules"]}})
    info = w.round()
    assert any(e[1] == "OutOfBandChange" for e in info.events)
    assert w.live()[CANDIDATE] == weight


def test_a_conflict_is_read_again_with_a_get_and_the_rollback_lands_in_the_same_round(worlds):
    """The backend changed since it was read (here the API server says so with a 409 on the rollback's apply):
    the round reads it again with a GET and applies the rollback over that, instead of ending unsynced."""
    w = new_world(worlds, "kserve")
    w.set_version(CANDIDATE)
    while w.status().canary_weight == 0:
        w.tick(10)
    first = len(w.kube.calls)
    w.kube.hook = FailOn("apply", INFERENCE_SERVICE.plural, Fault(409))
    w.metric("candidate", "bad")
    info = w.tick(10)
    w.settle()
    assert w.live() == {"1.0.0": 100} and w.status().failed_version == CANDIDATE
    assert [o for c, o in info.calls if c.verb == "apply"] == ["ApiException:409", "ok"]
    assert gets(w, first) == 1
    assert synced(w)


def test_the_step_is_applied_over_the_newest_copy_when_a_controller_wrote_meanwhile(worlds):
    """The Gateway's status write lands after the round read the route and before it applies the next step: the
    apply goes over the newest copy, with no 409 and no GET."""
    w = new_world(worlds, "gatewayAPI")
    w.set_version(CANDIDATE)
    w.tick(10)  # the candidate beside stable at 0
    first = len(w.kube.calls)

    def controller_meanwhile(call, phase):
        if call.verb == "patch_status" and call.plural == "modeldeployments" and phase == "after":
            route = w.kube.peek(HTTP_ROUTE, NS, NAME)
            parents = [{**p, "controllerName": "example.net/gateway-restarted"} for p in route["status"]["parents"]]
            w.kube.world_patch(HTTP_ROUTE, NS, NAME, {"status": {"parents": parents}}, status=True)
            w.deliver_backend(stale=False)

    w.kube.hook = controller_meanwhile
    w.tick(10)
    w.kube.hook = None
    assert w.status().canary_weight > 0 and w.live().get(CANDIDATE) == w.status().canary_weight
    assert [o for c, o in w.kube.calls[first:] if c.verb == "apply"] == ["ok"] and gets(w, first) == 0


def test_a_modelversion_gone_before_its_role_is_patched_ends_nothing_but_that_patch(worlds):
    """The index still holds the candidate's ModelVersion; the patch meets 404: no GET, no failed round."""
    w = new_world(worlds, "kserve")
    first = len(w.kube.calls)
    w.kube.hook = FailOn("patch_status", VERSIONS.plural, Fault(404))
    w.set_version(CANDIDATE)
    info = w.tick(10)
    assert [o for c, o in info.calls if c.plural == VERSIONS.plural] == ["ApiException:404"]
    assert gets(w, first, VERSIONS.plural) == 0 and synced(w) and w.status().canary_version == CANDIDATE
