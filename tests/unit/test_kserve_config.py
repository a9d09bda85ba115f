"""No rollout starts on the kserve backend unless KServe's ConfigMap keeps the operator's bookkeeping annotations
off pods and revisions (routers/kserve_config.py); traffic back to stable always goes ahead, and no write of
bookkeeping alone is made meanwhile."""

from __future__ import annotations

import asyncio
import copy
import json
from types import SimpleNamespace

import kubernetes_asyncio
import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from modelops.kube import ConfigMaps
from modelops.rollout import TrafficIntent
from modelops.routers.base import BackendState
from modelops.routers.inference_service import BOOKKEEPING, INFERENCE_SERVICE
from modelops.routers.kserve_config import KServeSettings, unlisted_words
from playground.serving import kserve_config_data

from ..sim.fakes import KSERVE_CONFIGURED, FakeConfigMaps, kserve_router
from .test_router_faults import KSERVE, VERSIONS, FakeKube, isvc, run

WHERE = "kserve/inferenceservice-config"


def listing(keys) -> dict[str, str]:
    return {"inferenceService": json.dumps({"serviceAnnotationDisallowedList": list(keys)})}


def test_a_config_map_listing_every_bookkeeping_key_refuses_nothing():
    assert unlisted_words(KSERVE_CONFIGURED, WHERE) is None
    # Other keys and other settings beside them change nothing.
    assert unlisted_words({"inferenceService": json.dumps({"serviceAnnotationDisallowedList": [
        "team/x", *BOOKKEEPING], "resource": {"cpuLimit": "1"}}), "deploy": "{}"}, WHERE) is None
    assert unlisted_words(kserve_config_data(), WHERE) is None
    # Go's encoding/json, which KServe decodes it with, matches the field's name whatever its case.
    assert unlisted_words({"inferenceService": json.dumps({"serviceannotationdisallowedlist": list(BOOKKEEPING)})},
                          WHERE) is None  # what the test clusters install, as docs/backends/kserve.md asks


@pytest.mark.parametrize("data, words", [
    (None, "ConfigMap kserve/inferenceservice-config is not found"),
    ({}, "does not list " + ", ".join(BOOKKEEPING)),
    ({"deploy": '{"defaultDeploymentMode": "Knative"}'}, "does not list " + ", ".join(BOOKKEEPING)),
    (listing(BOOKKEEPING[1:]), f"does not list {BOOKKEEPING[0]}:"),
    (listing(k.upper() for k in BOOKKEEPING), "does not list " + ", ".join(BOOKKEEPING)),  # KServe compares whole keys
    ({"inferenceService": json.dumps({"serviceAnnotationDisallowedList": ",".join(BOOKKEEPING)})}, "does not list"),
    ({"inferenceService": "{not json"}, "cannot be read"),
    ({"inferenceService": "[1, 2]"}, "cannot be read (not a JSON object)"),
    ({"inferenceService": json.dumps({"serviceAnnotationDisallowedList": list(BOOKKEEPING),
                                      "ServiceAnnotationDisallowedList": []})}, "2 keys spell"),  # Go's decoder: either
    ({"inferenceService": "[" * 100_000 + "]" * 100_000}, "cannot be read"),
])
def test_a_config_map_that_does_not_keep_them_off_is_refused_naming_what_to_add(data, words):
    refusal = unlisted_words(data, WHERE)
    assert refusal is not None and words in refusal, refusal
    assert "serviceAnnotationDisallowedList" in refusal and all(key in refusal for key in BOOKKEEPING)


def test_a_failed_read_holds_rollouts_is_kept_for_the_ttl_and_never_raises():
    now = [0.0]
    maps = FakeConfigMaps(error=ApiException(status=403, reason="Forbidden"))
    settings = KServeSettings(maps, clock=lambda: now[0])
    words = asyncio.run(settings.copies_bookkeeping())
    assert words is not None and "may not read ConfigMap kserve/inferenceservice-config (403 Forbidden)" in words
    maps.error, maps.maps = None, {("kserve", "inferenceservice-config"): KSERVE_CONFIGURED}
    assert asyncio.run(settings.copies_bookkeeping()) == words  # kept: not a GET per round per deployment
    now[0] = 10.0
    assert asyncio.run(settings.copies_bookkeeping()) is None
    for error in (ApiException(status=503), asyncio.TimeoutError(), RecursionError()):
        now[0] += 10.0
        maps.error = error
        words = asyncio.run(settings.copies_bookkeeping())
        assert words is not None and "could not be read" in words, words
    elsewhere = KServeSettings(FakeConfigMaps({("kserve-system", "inferenceservice-config"): KSERVE_CONFIGURED}),
                               "kserve-system")
    assert asyncio.run(elsewhere.copies_bookkeeping()) is None


def test_on_a_cluster_that_copies_the_bookkeeping_rollouts_are_held_and_no_bookkeeping_is_written_alone():
    # The latest revision r2 is ready and serves 1.0.0 but is not yet recorded: on a cluster that keeps the
    # bookkeeping off, that is recorded (a write of annotations alone); on one that copies it, nothing is written.
    live = isvc("1.0.0", latest="r2", rolled="r1")
    configured = FakeKube((INFERENCE_SERVICE, live))
    run(kserve_router(configured), KSERVE, TrafficIntent("1.0.0"), VERSIONS)
    assert configured.writes("apply"), "the control: a recording write where KServe keeps the bookkeeping off"
    copying = FakeKube((INFERENCE_SERVICE, live))
    router = kserve_router(copying, data={})
    state = asyncio.run(router.observe(KSERVE, VERSIONS, None))
    assert state.holds_rollouts is not None and "does not list" in state.holds_rollouts
    assert not state.refused  # nothing of the routing is refused: a rollout in flight goes on
    run(router, KSERVE, TrafficIntent("1.0.0"), VERSIONS)
    assert not copying.calls


def test_an_apply_without_this_rounds_observation_still_writes_no_bookkeeping_alone_on_such_a_cluster():
    """A recovery applies the safe intent without observing first (BackendState()): it reads the ConfigMap itself."""
    live = isvc("1.0.0", latest="r2", rolled="r1")
    copying = FakeKube((INFERENCE_SERVICE, live))
    asyncio.run(kserve_router(copying, data={}).apply(KSERVE, TrafficIntent("1.0.0"), VERSIONS, BackendState()))
    assert not copying.writes("apply")
    keeping = FakeKube((INFERENCE_SERVICE, live))
    asyncio.run(kserve_router(keeping).apply(KSERVE, TrafficIntent("1.0.0"), VERSIONS, BackendState()))
    assert keeping.writes("apply"), "the control: the recording write where KServe keeps the bookkeeping off"


def test_on_such_a_cluster_a_candidate_is_still_taken_out_of_traffic():
    for intent in (TrafficIntent("1.0.0"), TrafficIntent("1.0.0", "1.1.0", 0)):
        kube = FakeKube((INFERENCE_SERVICE, isvc("1.1.0", percent=20, latest="r2", rolled="r1")))
        run(kserve_router(kube, data=None), KSERVE, intent, VERSIONS)
        predictor = kube.spec(INFERENCE_SERVICE)["predictor"]
        assert predictor.get("canaryTrafficPercent") == 0, (intent, predictor)


def test_config_map_reads_are_shared_for_a_while_and_an_absent_one_reads_as_none():
    class Core:
        def __init__(self):
            self.reads, self.exists = 0, False

        async def read_namespaced_config_map(self, name, namespace, **_):
            self.reads += 1
            await asyncio.sleep(0.01)
            if not self.exists:
                raise ApiException(status=404)
            return SimpleNamespace(data={"inferenceService": "{}"})

    async def scenario():
        now = [0.0]
        client = kubernetes_asyncio.client.ApiClient()
        maps = ConfigMaps(client, ttl=10.0, clock=lambda: now[0])
        maps._core = core = Core()
        answers = await asyncio.gather(*(maps.data("kserve", "inferenceservice-config") for _ in range(20)))
        assert answers == [None] * 20 and core.reads == 1  # twenty rounds at once: one GET
        core.exists, now[0] = True, 10.0
        assert await maps.data("kserve", "inferenceservice-config") == {"inferenceService": "{}"} and core.reads == 2
        await client.close()

    asyncio.run(scenario())


def test_every_place_that_tells_a_cluster_what_to_list_lists_exactly_the_bookkeeping():
    import re
    from pathlib import Path

    from playground.serving import KSERVE_DISALLOWED_LIST

    repo = Path(__file__).resolve().parents[2]
    assert KSERVE_DISALLOWED_LIST["serviceAnnotationDisallowedList"] == list(BOOKKEEPING)
    page = (repo / "docs" / "backends" / "kserve.md").read_text()
    snippet = re.search(r"inferenceService: \|\n(.*?)\n```", page, re.S)
    assert snippet and json.loads(snippet.group(1))["serviceAnnotationDisallowedList"] == list(BOOKKEEPING)
    script = (repo / "tools" / "kind" / "up.sh").read_text()
    assert re.findall(r'"(modelops\.io/[a-z-]+)"', script) == list(BOOKKEEPING)


def test_a_held_rollout_is_looked_at_again_within_half_a_minute_not_at_the_idle_resync():
    """Nothing wakes a held deployment when KServe's ConfigMap is fixed: its own rounds must come soon enough."""
    from datetime import datetime, timezone

    from modelops.api.modeldeployment import ModelDeploymentSpec, ModelDeploymentStatus, Phase
    from modelops.reconcile import HELD_SECONDS, IDLE_SECONDS, pace
    from modelops.rollout.values import Decision

    from ..conftest import model_deployment_manifest

    spec = ModelDeploymentSpec.model_validate({**model_deployment_manifest()["spec"], "version": "1.1.0"})
    status = ModelDeploymentStatus(phase=Phase.Stable, stable_version="1.0.0")
    decision = Decision(status, TrafficIntent("1.0.0"))
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    ready = frozenset({"1.0.0"})
    held = BackendState(ready_versions=ready, holds_rollouts="KServe copies the bookkeeping")
    assert pace(spec, decision, held, True, None, None, now)[0] == HELD_SECONDS < 60
    assert pace(spec, decision, BackendState(ready_versions=ready), True, None, None, now)[0] == IDLE_SECONDS
    on_stable = ModelDeploymentSpec.model_validate({**model_deployment_manifest()["spec"], "version": "1.0.0"})
    assert pace(on_stable, decision, held, True, None, None, now)[0] == IDLE_SECONDS  # no rollout wanted: idle
