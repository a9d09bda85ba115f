"""The KServe router's pure halves: reading an InferenceService, and the one applied configuration toward an intent."""

import json

import pytest

from modelops.api.modeldeployment import ModelDeploymentStatus, Phase
from modelops.api.modelversion import ModelVersionSpec
from modelops.kube import applied_fields, is_applied
from modelops.rollout import Observations, TrafficIntent, decide
from modelops.routers.base import OWNER_ANNOTATION, BackendMisconfigured, BackendState, VersionUnavailable
from modelops.routers.inference_service import (APPLIED_PERCENT, ARTIFACT_GENERATION, DEPLOYMENT_MODE,
                                                REVISION_VERSIONS, VERSION_MODELS)
from modelops.routers.kserve import config_for, creation_config, leftover_patch, observe

from ..conftest import model_version_manifest
from .rollout_sim import START, make_spec
from ..sim.fakes import fields_v1, leaves


def owned(obj, manager="modelops", operation="Apply", skip=()):
    """`obj` with metadata.managedFields saying `manager` wrote its labels, annotations and spec (but `skip`)."""
    paths = {p for p in leaves(obj) if p[0] in ("spec", "metadata") and p not in skip}
    obj["metadata"]["managedFields"] = [{"manager": manager, "operation": operation, "apiVersion": "serving.kserve.io/v1beta1",
                                         "time": "2026-01-01T00:00:00Z", "fieldsType": "FieldsV1", "fieldsV1": fields_v1(paths)}]
    return obj

VERSIONS = {v: ModelVersionSpec.model_validate(model_version_manifest(version=v)["spec"]) for v in ("1.0.0", "1.1.0")}


def isvc(version, *, percent=None, generation=2, observed=2, latest="r2", ready="r2", rolled="r1", annotations=None,
         revisions=None):
    """By default the operator has learned that r1 serves 1.0.0, and that the latest revision, once ready, serves
    `version` (what it records in REVISION_VERSIONS)."""
    predictor = {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": VERSIONS[version].artifact.uri}}
    if percent is not None:
        predictor["canaryTrafficPercent"] = percent
    if revisions is None:
        revisions = {"r1": "1.0.0", **({latest: version} if ready == latest else {})}
    annotations = {REVISION_VERSIONS: json.dumps(revisions), **(annotations or {})}
    return owned({
        "metadata": {"name": "fraud", "generation": generation, "resourceVersion": "41", "annotations": annotations},
        "spec": {"predictor": predictor},
        "status": {"observedGeneration": observed, "components": {"predictor": {
            "latestCreatedRevision": latest, "latestReadyRevision": ready, "latestRolledoutRevision": rolled}}},
    })


def test_candidate_in_spec_and_ready_with_stable_on_the_rolled_out_revision():
    state = observe(isvc("1.1.0", percent=20), VERSIONS, TrafficIntent("1.0.0", "1.1.0", 20))
    assert state.ready_versions == {"1.0.0", "1.1.0"}
    assert state.units == {"1.1.0": "r2", "1.0.0": "r1"}


def test_a_revision_not_ready_yet_is_not_ready():
    state = observe(isvc("1.1.0", percent=0, ready="r1"), VERSIONS, TrafficIntent("1.0.0", "1.1.0", 0))
    assert state.ready_versions == {"1.0.0"}


def test_status_older_than_the_artifact_write_is_not_trusted():
    stale = isvc("1.1.0", percent=0, generation=3, observed=2, annotations={ARTIFACT_GENERATION: "3"})
    assert "1.1.0" not in observe(stale, VERSIONS, TrafficIntent("1.0.0", "1.1.0", 0)).ready_versions


def test_a_weight_change_does_not_make_the_candidate_unready():
    weight_only = isvc("1.1.0", percent=50, generation=4, observed=3, annotations={ARTIFACT_GENERATION: "3"})
    assert "1.1.0" in observe(weight_only, VERSIONS, TrafficIntent("1.0.0", "1.1.0", 20)).ready_versions


def test_out_of_band_weight_is_drift():
    live = isvc("1.1.0", percent=70, annotations={APPLIED_PERCENT: "20"})
    state = observe(live, VERSIONS, TrafficIntent("1.0.0", "1.1.0", 20))
    assert state.drift and "canaryTrafficPercent is 70, the operator had set 20" in state.drift[0]
    assert not observe(isvc("1.1.0", percent=20, annotations={APPLIED_PERCENT: "20"}), VERSIONS, None).drift


def test_missing_service_is_nothing_ready():
    assert observe(None, VERSIONS, None).ready_versions == frozenset()


@pytest.mark.parametrize(
    "live, intent, expected",
    [
        # a new candidate: its artifact at 0 %, in one write
        (isvc("1.0.0", latest="r1", ready="r1"), TrafficIntent("1.0.0", "1.1.0", 0),
         {"model": VERSIONS["1.1.0"].artifact.uri, "percent": 0, "generation": "3"}),
        # the next step: only the weight changes; the model it owns is carried as it is
        (isvc("1.1.0", percent=0, annotations={APPLIED_PERCENT: "0"}), TrafficIntent("1.0.0", "1.1.0", 20),
         {"percent": 20}),
        # promotion: the field left out, which removes it
        (isvc("1.1.0", percent=50, annotations={APPLIED_PERCENT: "50"}), TrafficIntent("1.1.0"), {"percent": None}),
        # rollback: stable's artifact back at 0 %, all traffic on the rolled-out revision at once
        (isvc("1.1.0", percent=50), TrafficIntent("1.0.0"),
         {"model": VERSIONS["1.0.0"].artifact.uri, "percent": 0, "generation": "3"}),
    ],
)
def test_config_toward_intent(live, intent, expected):
    state = observe(live, VERSIONS, intent)
    config = config_for(live, intent, VERSIONS, state)
    predictor = config["spec"]["predictor"]
    assert predictor.get("canaryTrafficPercent") == expected["percent"]
    assert ("canaryTrafficPercent" in predictor) == (expected["percent"] is not None)
    assert config["metadata"]["annotations"][APPLIED_PERCENT] == ("unset" if expected["percent"] is None
                                                                  else str(expected["percent"]))
    if "model" in expected:
        assert predictor["model"] == {"modelFormat": {"name": "sklearn"}, "storageUri": expected["model"]}
        assert config["metadata"]["annotations"][ARTIFACT_GENERATION] == expected["generation"]
    else:
        assert predictor["model"] == live["spec"]["predictor"]["model"]  # owned: carried, or the apply would remove it
    # Every annotation the operator keeps is in every apply.
    assert REVISION_VERSIONS in config["metadata"]["annotations"]


def test_restored_stable_takes_traffic_only_once_its_new_revision_is_ready():
    restoring = isvc("1.0.0", percent=0, latest="r3", ready="r2", rolled="r1", annotations={APPLIED_PERCENT: "0"})
    intent = TrafficIntent("1.0.0")
    assert config_for(restoring, intent, VERSIONS, observe(restoring, VERSIONS, intent)) is None
    restored = isvc("1.0.0", percent=0, latest="r3", ready="r3", rolled="r1", annotations={APPLIED_PERCENT: "0"})
    config = config_for(restored, intent, VERSIONS, observe(restored, VERSIONS, intent))
    assert "canaryTrafficPercent" not in config["spec"]["predictor"]
    assert config["metadata"]["annotations"][APPLIED_PERCENT] == "unset"


def test_nothing_to_do_is_no_write():
    settled = isvc("1.1.0", percent=20, annotations={APPLIED_PERCENT: "20"})
    intent = TrafficIntent("1.0.0", "1.1.0", 20)
    assert config_for(settled, intent, VERSIONS, observe(settled, VERSIONS, intent)) is None


def echo(live, config, *, observed):
    """`live` as the watch shows it right after the operator applied `config`: its annotations and canary percent,
    one generation later (a percent change is a spec change), with KServe's status still of generation `observed`."""
    predictor = {**live["spec"]["predictor"]}
    predictor.pop("canaryTrafficPercent", None)
    predictor.update(config["spec"]["predictor"])
    after = {"metadata": {**live["metadata"], "generation": live["metadata"]["generation"] + 1,
                          "annotations": config["metadata"]["annotations"]},
             "spec": {"predictor": predictor}, "status": {**live["status"], "observedGeneration": observed}}
    return owned(after)


def settles(live, intent):
    """Whether the operator, seeing stable's revision ready, writes once and then leaves the echo of its write alone
    (rather than reading it as not ready, writing 0 %, and flipping back once KServe catches up: a write loop)."""
    config = config_for(live, intent, VERSIONS, observe(live, VERSIONS, intent))
    assert config is not None and "canaryTrafficPercent" not in config["spec"]["predictor"]
    after = echo(live, config, observed=live["status"]["observedGeneration"])
    return config_for(after, intent, VERSIONS, observe(after, VERSIONS, intent)) is None


def test_an_adopted_inference_service_settles_after_one_write():
    """Handed over with 0 % and no recorded artifact generation: its status of this generation is what to trust."""
    adopted = isvc("1.0.0", percent=0, latest="r1", ready="r1", rolled="r1")
    assert ARTIFACT_GENERATION not in adopted["metadata"]["annotations"]
    assert settles(adopted, TrafficIntent("1.0.0"))


def test_an_inference_service_the_operator_created_settles_after_one_write():
    """Created, then set to 0 % by the first round (its revision not ready yet); KServe's status for the creation
    shows the revision ready."""
    created = creation_config("fraud", "1.0.0", VERSIONS)
    live = owned({"metadata": {**created["metadata"], "generation": 2, "resourceVersion": "41"},
                  "spec": {"predictor": {**created["spec"]["predictor"], "canaryTrafficPercent": 0}},
                  "status": {"observedGeneration": 1, "components": {"predictor": {
                      "latestCreatedRevision": "r1", "latestReadyRevision": "r1", "latestRolledoutRevision": "r1"}}}})
    assert settles(live, TrafficIntent("1.0.0"))


def test_an_artifact_generation_ahead_of_the_object_is_not_trusted():
    ahead = isvc("1.1.0", percent=20, generation=4, observed=4, annotations={ARTIFACT_GENERATION: "9"})
    assert "1.1.0" in observe(ahead, VERSIONS, TrafficIntent("1.0.0", "1.1.0", 20)).ready_versions


def test_fields_held_by_another_manager_are_applied_once_to_own_them():
    """An object handed over, or written by an older operator with merge patches: the same values, another owner.
    One apply makes them the operator's (so that leaving one out later removes it); then there is nothing to do."""
    settled = isvc("1.1.0", percent=20, annotations={APPLIED_PERCENT: "20"})
    owned(settled, manager="OpenAPI-Generator", operation="Update")
    intent = TrafficIntent("1.0.0", "1.1.0", 20)
    config = config_for(settled, intent, VERSIONS, observe(settled, VERSIONS, intent))
    assert config["spec"]["predictor"] == {"canaryTrafficPercent": 20}  # the model is not its own: not claimed
    assert set(config["metadata"]["annotations"]) == {APPLIED_PERCENT, REVISION_VERSIONS}
    assert OWNER_ANNOTATION not in config["metadata"]["annotations"] and "labels" not in config["metadata"]


def test_an_object_the_operator_created_keeps_its_identity_in_every_apply():
    live = isvc("1.1.0", percent=0, annotations={APPLIED_PERCENT: "0", OWNER_ANNOTATION: "fraud"})
    live["metadata"]["labels"] = {"app.kubernetes.io/managed-by": "modelops", "team": "risk"}
    owned(live, skip={("metadata", "labels", "team")})  # a label someone else added stays theirs
    config = config_for(live, TrafficIntent("1.0.0", "1.1.0", 20), VERSIONS, observe(live, VERSIONS, None))
    assert config["metadata"]["annotations"][OWNER_ANNOTATION] == "fraud"
    assert config["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "modelops"}


def test_fields_the_operator_owns_beyond_its_config_are_no_reason_to_write():
    """A mutating webhook's defaults on the operator's apply are attributed to it; they are not what it drives."""
    settled = isvc("1.1.0", percent=20, annotations={APPLIED_PERCENT: "20"})
    settled["spec"]["predictor"]["model"]["resources"] = {"limits": {"cpu": "1"}}
    owned(settled)
    intent = TrafficIntent("1.0.0", "1.1.0", 20)
    assert config_for(settled, intent, VERSIONS, observe(settled, VERSIONS, intent)) is None


def test_a_canary_percent_another_manager_holds_too_is_removed_by_a_conditional_merge_patch():
    promoted = isvc("1.1.0", percent=50, annotations={APPLIED_PERCENT: "50"})
    config = config_for(promoted, TrafficIntent("1.1.0"), VERSIONS, observe(promoted, VERSIONS, None))
    # The apply left it out; the API server kept it, held by another manager: the leftover goes by merge patch.
    assert leftover_patch(promoted, config) == {"metadata": {"resourceVersion": "41"},
                                                "spec": {"predictor": {"canaryTrafficPercent": None}}}
    gone = isvc("1.1.0")
    assert leftover_patch(gone, config) is None
    step = config_for(promoted, TrafficIntent("1.0.0", "1.1.0", 20), VERSIONS, observe(promoted, VERSIONS, None))
    assert leftover_patch(promoted, step) is None


def test_rollback_without_stable_modelversion_sets_zero_percent_not_the_artifact():
    only_candidate = {"1.1.0": VERSIONS["1.1.0"]}
    live = isvc("1.1.0", percent=50, annotations={APPLIED_PERCENT: "50"})
    intent = TrafficIntent("1.0.0")
    config = config_for(live, intent, only_candidate, observe(live, only_candidate, intent))
    assert config["spec"]["predictor"] == {"model": live["spec"]["predictor"]["model"], "canaryTrafficPercent": 0}
    assert config["metadata"]["annotations"][APPLIED_PERCENT] == "0"
    # the candidate's ModelVersion gone too: the artifact is unknown, the rolled-out revision still serves stable
    assert config_for(live, intent, {}, observe(live, {}, intent)) == config


def test_rollback_without_stable_modelversion_nor_a_rolled_out_revision_is_version_unavailable():
    live = isvc("1.1.0", latest="r2", ready="r2", rolled="r2")
    with pytest.raises(VersionUnavailable, match="1.0.0"):
        config_for(live, TrafficIntent("1.0.0"), {"1.1.0": VERSIONS["1.1.0"]}, observe(live, {}, None))


def test_vanished_candidate_named_by_the_intent_is_version_unavailable_not_key_error():
    live = isvc("1.0.0", latest="r1", ready="r1")
    with pytest.raises(VersionUnavailable, match="1.1.0"):
        config_for(live, TrafficIntent("1.0.0", "1.1.0", 0), {"1.0.0": VERSIONS["1.0.0"]}, observe(live, VERSIONS, None))


def test_a_new_artifact_is_the_whole_model_the_operator_owns():
    """The old runtime and format version the operator wrote are left out, so the apply removes them."""
    live = isvc("1.0.0", latest="r1", ready="r1")
    live["spec"]["predictor"]["model"].update(runtime="kserve-sklearnserver",
                                              modelFormat={"name": "sklearn", "version": "1"})
    owned(live)
    config = config_for(live, TrafficIntent("1.0.0", "1.1.0", 0), VERSIONS, observe(live, VERSIONS, None))
    assert config["spec"]["predictor"]["model"] == {"modelFormat": {"name": "sklearn"},
                                                    "storageUri": VERSIONS["1.1.0"].artifact.uri}
    recorded = json.loads(config["metadata"]["annotations"][VERSION_MODELS])
    assert recorded["1.1.0"] == config["spec"]["predictor"]["model"]
    with_runtime = dict(VERSIONS, **{"1.1.0": VERSIONS["1.1.0"].model_copy(update={
        "artifact": VERSIONS["1.1.0"].artifact.model_copy(update={"runtime": "triton"})})})
    config = config_for(live, TrafficIntent("1.0.0", "1.1.0", 0), with_runtime, observe(live, with_runtime, None))
    assert config["spec"]["predictor"]["model"]["runtime"] == "triton"


def test_applied_fields_and_is_applied_follow_the_api_servers_managed_set():
    config = {"apiVersion": "v", "kind": "K", "metadata": {"name": "n", "resourceVersion": "3", "annotations": {"a": "1"}},
              "spec": {"list": [1, 2], "empty": {}, "x": {"y": 0}}}
    assert applied_fields(config) == {("metadata", "annotations", "a"): "1", ("spec", "list"): [1, 2],
                                      ("spec", "x", "y"): 0}
    live = owned({"metadata": {"name": "n", "annotations": {"a": "1"}}, "spec": {"list": [1, 2], "x": {"y": 0}}})
    assert is_applied(live, config)
    assert not is_applied(live, config, absent=[("spec", "list")])
    live["spec"]["list"] = [2, 1]
    assert not is_applied(live, config)


def test_odd_inference_services_read_as_unknown():
    no_status = isvc("1.1.0", percent=20)
    no_status["status"] = None
    no_status["metadata"]["annotations"] = None
    assert observe(no_status, VERSIONS, TrafficIntent("1.0.0", "1.1.0", 20)) == observe(None, VERSIONS, None)
    config = config_for(no_status, TrafficIntent("1.0.0", "1.1.0", 20), VERSIONS, observe(no_status, VERSIONS, None))
    assert config == {"metadata": {"annotations": {APPLIED_PERCENT: "20"}, "resourceVersion": "41"},
                      "spec": {"predictor": {"model": no_status["spec"]["predictor"]["model"], "canaryTrafficPercent": 20}}}
    bare = {"metadata": {"name": "fraud"}, "spec": {"predictor": {"model": None}}, "status": {"components": None}}
    assert observe(bare, VERSIONS, TrafficIntent("1.0.0")).ready_versions == frozenset()
    garbled = isvc("1.1.0", percent=0, generation=3, observed=2, annotations={ARTIFACT_GENERATION: "three"})
    # an unreadable artifact generation is absent: only a status of the current generation is trusted
    canary = TrafficIntent("1.0.0", "1.1.0", 0)
    assert "1.1.0" not in observe(garbled, VERSIONS, canary).ready_versions
    garbled["status"]["observedGeneration"] = 3
    assert "1.1.0" in observe(garbled, VERSIONS, canary).ready_versions


def test_stable_is_ready_only_as_the_rolled_out_revision():
    """After a 100 % step KServe rolled the candidate out: stable's restored revision, ready but not yet rolled
    out, is not where a canary's remainder would go, so stable is not ready (no rollout starts)."""
    restored = isvc("1.0.0", percent=0, latest="r3", ready="r3", rolled="r2", revisions={"r1": "1.0.0", "r2": "1.1.0"})
    state = observe(restored, VERSIONS, TrafficIntent("1.0.0"))
    assert state.ready_versions == {"1.1.0"}  # r2, the failed candidate, is what KServe still falls back to
    config = config_for(restored, TrafficIntent("1.0.0"), VERSIONS, state)
    assert "canaryTrafficPercent" not in config["spec"]["predictor"]  # all to stable's revision: it rolls out
    assert json.loads(config["metadata"]["annotations"][REVISION_VERSIONS])["r3"] == "1.0.0"
    rolled = isvc("1.0.0", latest="r3", ready="r3", rolled="r3", revisions={"r2": "1.1.0", "r3": "1.0.0"})
    assert observe(rolled, VERSIONS, TrafficIntent("1.0.0")).ready_versions == {"1.0.0"}


def test_a_recorded_revision_serves_stable_without_its_modelversion():
    only_candidate = {"1.1.0": VERSIONS["1.1.0"]}
    serving = isvc("1.0.0", latest="r1", ready="r1", rolled="r1")
    assert observe(serving, only_candidate, TrafficIntent("1.0.0")).ready_versions == {"1.0.0"}
    after_hot_swap = isvc("1.1.0", percent=100, latest="r2", ready="r2", rolled="r2")
    with pytest.raises(VersionUnavailable):  # the rolled-out revision is the candidate's: 0 % would keep it there
        config_for(after_hot_swap, TrafficIntent("1.0.0"), only_candidate,
                  observe(after_hot_swap, only_candidate, TrafficIntent("1.0.0")))


def test_a_promoted_version_is_ready_while_kserve_rolls_it_out():
    """Promoted: all traffic goes to the latest revision at once, and KServe marks it rolled out a little later.
    Meanwhile stable's Ready condition stays True (it was True in the promotion's round, when 1.1.0 was the
    candidate), and still no decision counts 1.1.0 as what KServe falls back to."""
    promoted = isvc("1.1.0")  # canaryTrafficPercent removed; r2 ready, r1 still the rolled-out revision
    state = observe(promoted, VERSIONS, TrafficIntent("1.1.0"))
    assert (state.ready_versions, state.serving_versions) == ({"1.0.0"}, {"1.1.0"})
    status = ModelDeploymentStatus(phase=Phase.Stable, stable_version="1.1.0", fallback_version="1.0.0")
    decision = decide(make_spec("1.1.0"), status, Observations(state.ready_versions,
                                                               serving_versions=state.serving_versions), START)
    ready = next(c for c in decision.status.conditions if c.type == "Ready")
    assert (ready.status, ready.reason) == ("True", "StableServing")
    restoring = isvc("1.0.0", percent=0, latest="r3", ready="r3", rolled="r2", revisions={"r2": "1.1.0"})
    assert observe(restoring, VERSIONS, TrafficIntent("1.0.0")).serving_versions == frozenset()  # r3 takes 0 %


def moded(obj, *, annotation=None, status=None):
    """`obj` with KServe's deployment mode in the annotation and/or the status KServe's controller records."""
    if annotation is not None:
        obj["metadata"]["annotations"][DEPLOYMENT_MODE] = annotation
    if status is not None:
        obj["status"]["deploymentMode"] = status
    return obj


@pytest.mark.parametrize("mode, where", [({"status": "Standard"}, "status.deploymentMode"),
                                         ({"annotation": "RawDeployment"}, f"annotation {DEPLOYMENT_MODE}"),
                                         ({"annotation": "Standard"}, f"annotation {DEPLOYMENT_MODE}"),
                                         ({"annotation": "ModelMesh"}, f"annotation {DEPLOYMENT_MODE}"),
                                         ({"annotation": "Knative", "status": "Standard"}, "status.deploymentMode")])
def test_an_inference_service_outside_serverless_mode_is_refused_naming_its_mode_before_any_write(mode, where):
    """KServe ignores canaryTrafficPercent outside serverless mode: the serverless functions read nothing as ready
    and compute no configuration; the refusal names the mode, where it was read, and the fix (Standard mode: a
    route; ModelMesh: another mode). KServe's recorded mode wins."""
    live = moded(isvc("1.0.0", latest="r1", ready="r1", rolled="r1"), **mode)
    name = mode.get("status") or mode["annotation"]
    fix = "serving.kserve.httpRoute" if name in ("Standard", "RawDeployment") else DEPLOYMENT_MODE
    with pytest.raises(BackendMisconfigured, match=f"{name} deployment mode \\({where}\\).*{fix}"):
        observe(live, VERSIONS, TrafficIntent("1.0.0"))
    with pytest.raises(BackendMisconfigured):
        config_for(live, TrafficIntent("1.0.0", "1.1.0", 10), VERSIONS, BackendState())


@pytest.mark.parametrize("mode", [{}, {"annotation": "Serverless"}, {"annotation": "Knative"}, {"status": "Knative"},
                                  {"annotation": "Serverless", "status": "Knative"}])
def test_a_serverless_inference_service_or_one_admitted_under_a_knative_default_is_driven(mode):
    """Neither the annotation nor a recorded mode: KServe's webhook would have written the annotation under a
    Standard or ModelMesh default, so the default is Knative."""
    live = moded(isvc("1.1.0", percent=0), **mode)
    assert "1.1.0" in observe(live, VERSIONS, TrafficIntent("1.0.0", "1.1.0", 0)).ready_versions
    assert config_for(live, TrafficIntent("1.0.0", "1.1.0", 10), VERSIONS, BackendState()) is not None


def test_the_operator_creates_its_inference_service_in_serverless_mode_and_keeps_the_annotation():
    """Whatever the cluster's default mode, an object the operator creates is serverless; its later applies carry
    the annotation (an apply leaving out a field the operator owns would remove it)."""
    created = creation_config("fraud", "1.0.0", VERSIONS)
    assert created["metadata"]["annotations"][DEPLOYMENT_MODE] == "Serverless"
    live = owned({"metadata": {**created["metadata"], "generation": 1, "resourceVersion": "41"},
                  "spec": created["spec"],
                  "status": {"observedGeneration": 1, "components": {"predictor": {
                      "latestCreatedRevision": "r1", "latestReadyRevision": "r1", "latestRolledoutRevision": "r1"}}}})
    config = config_for(live, TrafficIntent("1.0.0", "1.1.0", 0), VERSIONS, BackendState())
    assert config["metadata"]["annotations"][DEPLOYMENT_MODE] == "Serverless"
