"""Field ownership through the real round (World: fakes of the API server with server-side apply, KServe and a
Gateway implementation): the operator owns exactly the fields it drives, and a GitOps re-apply of the backend
object's manifest (Argo CD's, as its own field manager) never moves traffic, resets a step, re-runs a request or
loses status. The invariants of invariants.py are checked after every step here too."""

from __future__ import annotations

import json

import pytest

from modelops.api.modeldeployment import Phase
from modelops.kube import FIELD_MANAGER
from modelops.routers.base import APPLIED_WEIGHTS, OWNER_ANNOTATION
from modelops.routers.inference_service import (APPLIED_PERCENT, ARTIFACT_GENERATION, DEPLOYMENT_MODE,
                                                INFERENCE_SERVICE, REVISION_VERSIONS, VERSION_MODELS)

from .fakes import FailOn, Fault, dig, owners_of, server_side_apply
from .world import GITOPS, NAME, NS, World, new_world, uri_of

KSERVE_FIELDS = {
    ("metadata", "labels", "app.kubernetes.io/managed-by"),
    ("metadata", "annotations", OWNER_ANNOTATION),
    ("metadata", "annotations", DEPLOYMENT_MODE),
    ("metadata", "annotations", APPLIED_PERCENT),
    ("metadata", "annotations", ARTIFACT_GENERATION),
    ("metadata", "annotations", REVISION_VERSIONS),
    ("metadata", "annotations", VERSION_MODELS),
    ("spec", "predictor", "model", "modelFormat", "name"),
    ("spec", "predictor", "model", "storageUri"),
}
"""What the operator owns on an InferenceService it created, with no canary in flight."""
PERCENT = ("spec", "predictor", "canaryTrafficPercent")


def start(w: World, version: str = "1.1.0") -> None:
    w.set_version(version)
    for _ in range(12):
        w.tick(10)
        if w.status().canary_version == version and w.status().canary_weight:
            return
    raise AssertionError(f"the rollout did not start: {w.trace[-6:]}")


def finish(w: World, version: str = "1.1.0") -> None:
    for _ in range(20):
        w.tick(10)
        if w.status().phase is Phase.Stable and w.status().stable_version == version and w.live() == {version: 100}:
            return
    raise AssertionError(f"{version} was not promoted: {w.trace[-8:]}")


def operators(w: World) -> dict:
    """The operator's managedFields entries on the backend object: (operation, subresource) -> leaves."""
    return {(op, sub): paths for (manager, op, sub), paths in owners_of(w.backend()).items() if manager == FIELD_MANAGER}


def snapshot(w: World) -> tuple:
    """What a Git re-apply must not change: the traffic fields, live traffic, and the ModelDeployment's status."""
    return w.traffic_fields(), w.live(), w.obj().get("status")


# --- what the operator owns ----------------------------------------------------------------------------------------

def test_after_a_kserve_rollout_the_operator_owns_exactly_the_fields_it_drives(worlds):
    w = new_world(worlds)
    assert operators(w) == {("Apply", ""): KSERVE_FIELDS}
    start(w)
    assert operators(w) == {("Apply", ""): KSERVE_FIELDS | {PERCENT}}  # a canary in flight: its weight too
    finish(w)
    assert operators(w) == {("Apply", ""): KSERVE_FIELDS}  # all to the latest revision: the field is gone
    assert dig(w.backend(), *PERCENT) is None


def test_after_a_gateway_rollout_the_operator_owns_the_rules_and_its_record_only(worlds):
    w = new_world(worlds, "gatewayAPI")
    start(w)
    finish(w)
    assert operators(w) == {("Apply", ""): {("metadata", "annotations", APPLIED_WEIGHTS), ("spec", "rules")}}
    users = owners_of(w.backend())[("kubectl", "Update", "")]
    assert {("spec", "parentRefs"), ("metadata", "annotations", OWNER_ANNOTATION)} <= users  # still the user's


# --- GitOps re-applies mid-rollout ------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["kserve", "gatewayAPI", "seldon"])
def test_a_git_reapply_respecting_the_operator_mid_rollout_changes_nothing_and_the_rollout_goes_on(worlds, backend):
    w = new_world(worlds, backend, steps=(10, 25, 50))
    start(w)
    w.settle()  # the backend has caught up with the step: a round now has nothing to do
    before = snapshot(w)
    assert w.git_apply(respect_operator=True) == "applied"
    assert snapshot(w) == before
    info = w.round()  # the operator has nothing to write back: its fields are as it left them, still its own
    assert not [c for c, _ in info.calls if c.verb in ("apply", "patch")] and snapshot(w) == before
    steps = [h for h in w.status().history if h.action == "StepAdvanced"]
    finish(w)
    assert [h.reason for h in w.status().history if h.action == "StepAdvanced"][:len(steps)] == [h.reason for h in steps]
    assert [h.action for h in w.status().history if h.version == "1.1.0"].count("RolloutStarted") == 1


def test_git_values_applied_without_force_mid_rollout_are_refused_naming_the_operator(worlds):
    w = new_world(worlds)
    start(w)
    manifest = w.git_manifest()
    manifest["spec"]["predictor"]["canaryTrafficPercent"] = 100
    before = snapshot(w)
    with pytest.raises(Exception) as refused:
        w.kube.world_apply(INFERENCE_SERVICE, NS, NAME, manifest, GITOPS)
    assert refused.value.status == 409
    message = json.loads(refused.value.body)["message"]
    assert message == ('Apply failed with 2 conflicts: conflicts with "modelops":\n'
                       "- .spec.predictor.canaryTrafficPercent\n- .spec.predictor.model.storageUri")
    assert snapshot(w) == before
    assert w.git_apply(respect_operator=False) == "conflict"  # the World's own check: nothing moved


def at_last_step(w: World) -> None:
    for _ in range(12):
        if w.status().canary_weight == 50:
            w.settle()
            return
        w.tick(10)
    raise AssertionError(f"the rollout did not reach its last step: {w.trace[-6:]}")


def git_agrees_with_the_last_step(w: World) -> None:
    """Argo CD sends the operator's fields where Git agrees with the live object: both own them then."""
    manifest = w.git_manifest()
    manifest["spec"]["predictor"]["canaryTrafficPercent"] = 50
    manifest["spec"]["predictor"]["model"]["storageUri"] = uri_of("1.1.0")
    assert w.git_apply(manifest=manifest) == "applied"
    assert PERCENT in owners_of(w.backend())[(GITOPS, "Apply", "")]


def leftover_patches(w: World) -> list:
    return [c for c, outcome in w.kube.calls if c.verb == "patch" and c.plural == INFERENCE_SERVICE.plural]


def test_git_values_equal_to_the_live_ones_are_shared_and_a_weight_left_out_is_still_removed(worlds):
    """The operator's forced apply takes a shared field when it moves it; one it leaves out (all traffic to the
    latest revision) that Git still holds is removed by its merge patch, conditional on what its apply returned."""
    w = new_world(worlds)
    start(w)
    at_last_step(w)
    git_agrees_with_the_last_step(w)
    finish(w)
    assert dig(w.backend(), *PERCENT) is None and w.live() == {"1.1.0": 100}
    assert len(leftover_patches(w)) == 1
    assert PERCENT not in owners_of(w.backend()).get((GITOPS, "Apply", ""), set())
    assert set(operators(w)) == {("Apply", "")}  # the merge patch removed a field: no Update entry of the operator's


def test_a_crash_between_the_apply_and_the_leftover_patch_is_completed_by_the_next_round(worlds):
    w = new_world(worlds)
    start(w)
    at_last_step(w)
    git_agrees_with_the_last_step(w)
    w.kube.hook = FailOn("apply", INFERENCE_SERVICE.plural, Fault("crash", "after"))
    for _ in range(6):
        w.tick(10)
        if w.kube.hook.fired:
            break
    assert w.kube.hook.fired and not leftover_patches(w) and dig(w.backend(), *PERCENT) == 50
    w.heal()
    finish(w)
    assert dig(w.backend(), *PERCENT) is None and len(leftover_patches(w)) == 1


def test_a_forced_apply_by_another_manager_is_drift_the_operator_takes_back(worlds):
    """kubectl apply --server-side --force-conflicts of a weight: reported, restored, and the operator's again."""
    w = new_world(worlds)
    start(w)
    w.kube.world_apply(INFERENCE_SERVICE, NS, NAME, {"apiVersion": INFERENCE_SERVICE.api_version,
                                                     "kind": INFERENCE_SERVICE.kind, "metadata": {"name": NAME},
                                                     "spec": {"predictor": {"canaryTrafficPercent": 70}}},
                       "kubectl", force=True)
    assert PERCENT not in operators(w)[("Apply", "")]
    w.round()
    assert "OutOfBandChange" in w.events.reasons()
    assert dig(w.backend(), *PERCENT) == 10 and PERCENT in operators(w)[("Apply", "")]


# --- faults on the apply, and objects the operator did not write itself ------------------------------------------------

@pytest.mark.parametrize("fault", [Fault(409), Fault(429), Fault(503), Fault("timeout"), Fault("timeout", "after"),
                                   Fault("crash", "after")])
def test_a_failed_or_unacknowledged_apply_is_completed_by_the_next_round(worlds, fault):
    w = new_world(worlds)
    w.set_version("1.1.0")
    w.kube.hook = FailOn("apply", INFERENCE_SERVICE.plural, fault)
    w.tick(10)
    assert w.kube.hook.fired
    w.heal()
    start(w)
    finish(w)
    assert operators(w) == {("Apply", ""): KSERVE_FIELDS}


def test_an_inference_service_written_by_an_older_operator_is_claimed_then_driven(worlds):
    """Before server-side apply the operator merge-patched: its fields belong to an Update manager. The first round
    applies what it drives now (weight, bookkeeping; same values) to own it; promotion then removes
    canaryTrafficPercent although the old manager still holds it (the leftover merge patch); the model becomes
    the operator's with the next artifact it writes."""
    w = new_world(worlds)
    start(w)
    isvc = w.kube.view(INFERENCE_SERVICE, NS, NAME)
    old = {**{k: v for k, v in isvc.items() if k != "metadata"},
           "metadata": {k: v for k, v in isvc["metadata"].items() if k != "managedFields"}}
    w.kube.world_delete(INFERENCE_SERVICE, NS, NAME)
    w.kube.world_put(INFERENCE_SERVICE, NS, old, manager="OpenAPI-Generator")
    assert not operators(w)
    w.round()
    assert operators(w)[("Apply", "")] == {PERCENT, *(p for p in KSERVE_FIELDS if p[1] == "annotations"
                                                      and p[2] not in (OWNER_ANNOTATION, DEPLOYMENT_MODE))}
    finish(w)
    assert dig(w.backend(), *PERCENT) is None
    start(w, "1.2.0")
    finish(w, "1.2.0")
    assert operators(w)[("Apply", "")] >= {("spec", "predictor", "model", "storageUri")}


def test_a_route_deleted_between_the_read_and_the_apply_is_not_recreated(worlds):
    """An apply creates what is absent; the operator's RBAC has no create on HTTPRoutes, so the API server refuses it
    (403) and the route the user deleted stays deleted."""
    w = new_world(worlds, "gatewayAPI")
    w.set_version("1.1.0")

    def delete_before_the_apply(call, phase):
        if call.verb == "apply" and phase == "before":
            w.kube.world_delete(w.backend_resource, NS, NAME)

    w.kube.hook = delete_before_the_apply
    w.tick(10)
    w.heal()
    assert w.backend() is None
    assert [outcome for c, outcome in w.kube.calls if c.verb == "apply"][-1] == "ApiException:403"
    w.tick(10)
    synced = next(c for c in w.status().conditions if c.type == "Synced")
    assert (synced.status, synced.reason) == ("False", "BackendMisconfigured") and "not found" in synced.message


def test_an_apply_that_no_longer_sends_any_field_of_an_object_removes_the_object(worlds):
    """As the API server does (structured-merge-diff leaves the emptied object null, and a custom resource's null
    field is dropped): the Experiment's spec.mirror goes whole when the operator stops sending its fields."""
    def experiment(spec: dict) -> dict:
        return {"apiVersion": "mlops.seldon.io/v1alpha1", "kind": "Experiment", "metadata": {"name": "x"}, "spec": spec}

    candidates = [{"name": "fraud", "weight": 80}, {"name": "fraud-v1-1-0", "weight": 20}]
    live = server_side_apply(None, experiment({"candidates": candidates, "mirror": {"name": "fraud-v1-1-0",
                                                                                   "percent": 30}}),
                             FIELD_MANAGER, False, "t1")
    after = server_side_apply(live, experiment({"candidates": candidates}), FIELD_MANAGER, False, "t2")
    assert after["spec"] == {"candidates": candidates}
    assert owners_of(after)[(FIELD_MANAGER, "Apply", "")] == {("spec", "candidates")}

