"""The KServe router's pure halves: reading an InferenceService, and the one patch toward an intent."""

import json

import pytest

from modelops.api.modelversion import ModelVersionSpec
from modelops.rollout import TrafficIntent
from modelops.routers.base import VersionUnavailable
from modelops.routers.kserve import APPLIED_PERCENT, ARTIFACT_GENERATION, REVISION_VERSIONS, observe, patch_for

from ..conftest import model_version_manifest

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
    return {
        "metadata": {"name": "fraud", "generation": generation, "annotations": annotations},
        "spec": {"predictor": predictor},
        "status": {"observedGeneration": observed, "components": {"predictor": {
            "latestCreatedRevision": latest, "latestReadyRevision": ready, "latestRolledoutRevision": rolled}}},
    }


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
        # a new candidate: its artifact at 0 %, in one patch
        (isvc("1.0.0", latest="r1", ready="r1"), TrafficIntent("1.0.0", "1.1.0", 0),
         {"model": VERSIONS["1.1.0"].artifact.uri, "percent": 0, "generation": "3"}),
        # the next step: only the weight
        (isvc("1.1.0", percent=0, annotations={APPLIED_PERCENT: "0"}), TrafficIntent("1.0.0", "1.1.0", 20),
         {"percent": 20}),
        # promotion: the field removed
        (isvc("1.1.0", percent=50, annotations={APPLIED_PERCENT: "50"}), TrafficIntent("1.1.0"), {"percent": None}),
        # rollback: stable's artifact back at 0 %, all traffic on the rolled-out revision at once
        (isvc("1.1.0", percent=50), TrafficIntent("1.0.0"),
         {"model": VERSIONS["1.0.0"].artifact.uri, "percent": 0, "generation": "3"}),
    ],
)
def test_patch_toward_intent(live, intent, expected):
    state = observe(live, VERSIONS, intent)
    patch = patch_for(live, intent, VERSIONS, state)
    predictor = patch["spec"]["predictor"]
    assert predictor["canaryTrafficPercent"] == expected["percent"]
    assert patch["metadata"]["annotations"][APPLIED_PERCENT] == ("unset" if expected["percent"] is None
                                                                 else str(expected["percent"]))
    if "model" in expected:
        assert predictor["model"]["storageUri"] == expected["model"]
        assert patch["metadata"]["annotations"][ARTIFACT_GENERATION] == expected["generation"]
    else:
        assert "model" not in predictor


def test_restored_stable_takes_traffic_only_once_its_new_revision_is_ready():
    restoring = isvc("1.0.0", percent=0, latest="r3", ready="r2", rolled="r1", annotations={APPLIED_PERCENT: "0"})
    intent = TrafficIntent("1.0.0")
    assert patch_for(restoring, intent, VERSIONS, observe(restoring, VERSIONS, intent)) is None
    restored = isvc("1.0.0", percent=0, latest="r3", ready="r3", rolled="r1", annotations={APPLIED_PERCENT: "0"})
    patch = patch_for(restored, intent, VERSIONS, observe(restored, VERSIONS, intent))
    assert patch["spec"]["predictor"] == {"canaryTrafficPercent": None}


def test_nothing_to_do_is_no_patch():
    settled = isvc("1.1.0", percent=20, annotations={APPLIED_PERCENT: "20"})
    intent = TrafficIntent("1.0.0", "1.1.0", 20)
    assert patch_for(settled, intent, VERSIONS, observe(settled, VERSIONS, intent)) is None


def test_rollback_without_stable_modelversion_sets_zero_percent_not_the_artifact():
    only_candidate = {"1.1.0": VERSIONS["1.1.0"]}
    live = isvc("1.1.0", percent=50, annotations={APPLIED_PERCENT: "50"})
    intent = TrafficIntent("1.0.0")
    patch = patch_for(live, intent, only_candidate, observe(live, only_candidate, intent))
    assert patch == {"metadata": {"annotations": {APPLIED_PERCENT: "0"}}, "spec": {"predictor": {"canaryTrafficPercent": 0}}}
    # the candidate's ModelVersion gone too: the artifact is unknown, the rolled-out revision still serves stable
    assert patch_for(live, intent, {}, observe(live, {}, intent)) == patch


def test_rollback_without_stable_modelversion_nor_a_rolled_out_revision_is_version_unavailable():
    live = isvc("1.1.0", latest="r2", ready="r2", rolled="r2")
    with pytest.raises(VersionUnavailable, match="1.0.0"):
        patch_for(live, TrafficIntent("1.0.0"), {"1.1.0": VERSIONS["1.1.0"]}, observe(live, {}, None))


def test_vanished_candidate_named_by_the_intent_is_version_unavailable_not_key_error():
    live = isvc("1.0.0", latest="r1", ready="r1")
    with pytest.raises(VersionUnavailable, match="1.1.0"):
        patch_for(live, TrafficIntent("1.0.0", "1.1.0", 0), {"1.0.0": VERSIONS["1.0.0"]}, observe(live, VERSIONS, None))


def test_a_new_artifact_clears_the_old_runtime_and_replaces_the_format_whole():
    live = isvc("1.0.0", latest="r1", ready="r1")
    live["spec"]["predictor"]["model"].update(runtime="kserve-sklearnserver",
                                              modelFormat={"name": "sklearn", "version": "1"})
    patch = patch_for(live, TrafficIntent("1.0.0", "1.1.0", 0), VERSIONS, observe(live, VERSIONS, None))
    assert patch["spec"]["predictor"]["model"] == {"modelFormat": {"name": "sklearn", "version": None},
                                                   "storageUri": VERSIONS["1.1.0"].artifact.uri, "runtime": None}
    with_runtime = dict(VERSIONS, **{"1.1.0": VERSIONS["1.1.0"].model_copy(update={
        "artifact": VERSIONS["1.1.0"].artifact.model_copy(update={"runtime": "triton"})})})
    patch = patch_for(live, TrafficIntent("1.0.0", "1.1.0", 0), with_runtime, observe(live, with_runtime, None))
    assert patch["spec"]["predictor"]["model"]["runtime"] == "triton"


def test_odd_inference_services_read_as_unknown():
    no_status = isvc("1.1.0", percent=20)
    no_status["status"] = None
    no_status["metadata"]["annotations"] = None
    assert observe(no_status, VERSIONS, TrafficIntent("1.0.0", "1.1.0", 20)) == observe(None, VERSIONS, None)
    assert patch_for(no_status, TrafficIntent("1.0.0", "1.1.0", 20), VERSIONS, observe(no_status, VERSIONS, None)) == \
        {"metadata": {"annotations": {APPLIED_PERCENT: "20"}}, "spec": {"predictor": {}}}
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
    patch = patch_for(restored, TrafficIntent("1.0.0"), VERSIONS, state)
    assert patch["spec"]["predictor"] == {"canaryTrafficPercent": None}  # all to stable's revision: it rolls out
    assert json.loads(patch["metadata"]["annotations"][REVISION_VERSIONS])["r3"] == "1.0.0"
    rolled = isvc("1.0.0", latest="r3", ready="r3", rolled="r3", revisions={"r2": "1.1.0", "r3": "1.0.0"})
    assert observe(rolled, VERSIONS, TrafficIntent("1.0.0")).ready_versions == {"1.0.0"}


def test_a_recorded_revision_serves_stable_without_its_modelversion():
    only_candidate = {"1.1.0": VERSIONS["1.1.0"]}
    serving = isvc("1.0.0", latest="r1", ready="r1", rolled="r1")
    assert observe(serving, only_candidate, TrafficIntent("1.0.0")).ready_versions == {"1.0.0"}
    after_hot_swap = isvc("1.1.0", percent=100, latest="r2", ready="r2", rolled="r2")
    with pytest.raises(VersionUnavailable):  # the rolled-out revision is the candidate's: 0 % would keep it there
        patch_for(after_hot_swap, TrafficIntent("1.0.0"), only_candidate,
                  observe(after_hot_swap, only_candidate, TrafficIntent("1.0.0")))
