"""merge patches, ModelVersion status, unsynced deployments, analysis timing, the API client."""

import asyncio
import json
from datetime import datetime, timedelta, timezone

import pytest
import yaml
from kubernetes_asyncio.client.exceptions import ApiException
from hypothesis import given, settings
from hypothesis import strategies as st

from modelops.api.modeldeployment import ModelDeploymentStatus, Phase
from modelops.api.modelversion import ServingRole
from modelops.api.types import duration_seconds
from modelops.kube import merge_patch
from modelops.problems import classify
from modelops.modelversions import (catalog, holder_of, record_of, served_by, served_by_changes, serving_patch,
                                    version_status)
from modelops.rollout import analysis_instant, analysis_window, seconds_to_next_analysis
from modelops.rollout.conditions import conditions_for, unsynced
from modelops.rollout.values import rfc3339

from ..conftest import model_version_manifest, with_path
from ..sim.fakes import merge
from .rollout_sim import make_spec

NOW = "2026-01-01T00:00:00.000Z"


def test_merge_patch_sets_changes_and_nulls_removals():
    old = {"a": 1, "b": {"c": 2, "d": 3}, "gone": True, "list": [1, 2]}
    new = {"a": 1, "b": {"c": 2, "d": 4}, "list": [1], "added": "x"}
    assert merge_patch(old, new) == {"b": {"d": 4}, "gone": None, "list": [1], "added": "x"}
    assert merge_patch(new, new) is None


def test_version_status_has_a_content_id_and_a_phase():
    spec = model_version_manifest()["spec"]
    status = version_status(spec, {}, 1, NOW)
    assert status["phase"] == "Available" and status["contentId"].startswith("sha256:")
    serving = version_status(spec, {"servedBy": [{"deployment": "fraud", "role": "stable"}]}, 1, NOW)
    assert serving["phase"] == "Serving"
    invalid = version_status(with_path(model_version_manifest(), "spec.artifact.digest", "md5:1")["spec"], {}, 1, NOW)
    assert invalid["phase"] == "Invalid" and "digest" in invalid["conditions"][0]["message"]


def test_served_by_is_kept_per_deployment():
    existing = {"servedBy": [{"deployment": "b", "role": "canary"}, {"deployment": "a", "role": "stable"}]}
    assert served_by(existing, "a", ServingRole.fallback) == [
        {"deployment": "a", "role": "fallback"}, {"deployment": "b", "role": "canary"}]
    assert served_by(existing, "b", None) == [{"deployment": "a", "role": "stable"}]


def test_serving_patch_says_the_role_and_the_phase_it_makes_in_one_conditional_write():
    manifest = model_version_manifest()
    manifest["metadata"].update(resourceVersion="41", generation=1, creationTimestamp=NOW)
    manifest["status"] = version_status(manifest["spec"], {}, 1, NOW)
    record = record_of(manifest)
    later = "2026-01-01T00:01:00.000Z"
    patch = serving_patch(record, [record], "fraud", ServingRole.canary, later)
    assert patch["metadata"] == {"resourceVersion": "41"}
    assert patch["status"]["servedBy"] == [{"deployment": "fraud", "role": "canary"}]
    assert patch["status"]["phase"] == "Serving"
    served = {**manifest, "status": merge(manifest["status"], patch["status"])}
    again = record_of(served)
    assert version_status(again.spec, again.status, 1, later) == again.status  # the handler has nothing to write
    assert serving_patch(again, [again], "fraud", ServingRole.canary, later) is None
    assert serving_patch(again, [again], "fraud", None, later)["status"]["phase"] == "Available"


def claim(name: str, resource_version: str, uri: str) -> dict:
    """A ModelVersion of fraud 1.0.0 as the watch shows it, created at NOW (the API server's whole second)."""
    manifest = with_path(model_version_manifest(), "spec.artifact.uri", uri)
    manifest["metadata"].update(name=name, resourceVersion=resource_version, generation=1, creationTimestamp=NOW)
    return manifest


def test_claims_made_in_one_second_go_to_the_first_the_api_server_stored_not_to_the_first_name():
    first, second = claim("z-first", "9", "s3://models/first"), claim("a-second", "10", "s3://models/second")
    records = [record_of(first), record_of(second)]
    assert catalog(records).names == {"1.0.0": "z-first"}
    assert catalog(records).specs["1.0.0"].artifact.uri == "s3://models/first"
    assert holder_of(records, records[1]) == "z-first" and holder_of(records, records[0]) is None
    # The operator writes the first's status, which moves its resourceVersion past the second's: still the first.
    first["status"] = version_status(first["spec"], {}, 1, NOW, first_seen=records[0].first_seen)
    first["metadata"]["resourceVersion"] = "11"
    records = [record_of(first), record_of(second)]
    assert first["status"]["firstSeenResourceVersion"] == "9"
    assert catalog(records).names == {"1.0.0": "z-first"} and holder_of(records, records[0]) is None


def test_rounds_parse_each_model_version_once_per_resource_version_a_new_one_again(monkeypatch):
    from modelops.api.modelversion import ModelVersionSpec
    from modelops.handlers import model_versions, records_of
    parsed_specs: list[dict] = []
    validate = ModelVersionSpec.model_validate
    monkeypatch.setattr(ModelVersionSpec, "model_validate", lambda spec: parsed_specs.append(spec) or validate(spec))

    by_name: dict = {}
    index = {("prod", "fraud"): by_name.values()}  # kopf's index: one record per object, replaced at its events

    def watch_shows(manifest: dict) -> None:
        records = asyncio.run(model_versions(namespace="prod", spec=manifest["spec"], body=manifest))
        by_name[manifest["metadata"]["name"]] = records[("prod", "fraud")]

    def rounds() -> None:
        for _ in range(3):
            assert set(catalog(records_of(index, "prod", "fraud")).specs) == {"1.0.0", "1.1.0"}

    first = claim("first", "9", "s3://models/first")
    second = with_path(claim("second", "10", "s3://models/second"), "spec.version", "1.1.0")
    watch_shows(first)
    watch_shows(second)
    rounds()
    assert parsed_specs == [first["spec"], second["spec"]]
    second["metadata"]["resourceVersion"] = "12"  # e.g. its status was written
    watch_shows(second)
    parsed_specs.clear()
    rounds()
    assert parsed_specs == [second["spec"]]


class StatusPatches:
    """The API as the ModelVersion handler uses it: status patches, recorded."""

    def __init__(self):
        self.patched: list[tuple[str, dict]] = []

    async def patch_status(self, resource, namespace, name, patch):
        self.patched.append((name, patch))


@pytest.mark.asyncio
async def test_a_model_version_labelled_for_a_shard_nobody_runs_is_checked_by_the_shard_serving_its_model():
    import kopf

    from modelops.handlers import SHARD_LABEL, Options, Wakeups, model_version_status

    kube = StatusPatches()
    memo = kopf.Memo(options=Options(), wakeups=Wakeups(),
                     shell=kopf.Memo(kube=kube, clock=lambda: datetime(2026, 1, 1, tzinfo=timezone.utc)))
    memo.wakeups.follow("prod", "fraud", asyncio.Event(), {"model": "fraud"})  # this shard drives a fraud deployment
    first, second = claim("first", "9", "s3://models/first"), claim("second", "10", "s3://models/second")
    for obj in (first, second):
        obj["metadata"].update(namespace="prod", labels={SHARD_LABEL: "nobody"})
    index = {("prod", "fraud"): [record_of(first), record_of(second)]}
    for obj in (first, second):
        await model_version_status(body=obj, memo=memo, model_versions=index)
    phases = {name: (patch["status"]["phase"], patch["status"]["conditions"][0]["reason"]) for name, patch in kube.patched}
    assert phases == {"first": ("Available", "Available"), "second": ("Invalid", "DuplicateVersion")}
    other = with_path(claim("churn", "11", "s3://models/churn"), "spec.model", "churn")
    other["metadata"].update(namespace="prod", labels={SHARD_LABEL: "nobody"})
    await model_version_status(body=other, memo=memo, model_versions={("prod", "churn"): [record_of(other)]})
    assert [name for name, _ in kube.patched] == ["first", "second"]  # no deployment of churn here: not ours


@pytest.mark.asyncio
async def test_a_deployment_beginning_to_follow_its_model_checks_the_versions_whose_events_came_before():
    import kopf

    from modelops.handlers import check_versions_of

    kube = StatusPatches()
    shell = kopf.Memo(kube=kube, clock=lambda: datetime(2026, 1, 1, tzinfo=timezone.utc))
    first, second = claim("first", "9", "s3://models/first"), claim("second", "10", "s3://models/second")
    first["status"] = version_status(first["spec"], {}, 1, NOW, first_seen="9")  # checked already: nothing to write
    await check_versions_of(shell, "prod", "fraud", {("prod", "fraud"): [record_of(first), record_of(second)]})
    assert [(name, patch["status"]["conditions"][0]["reason"]) for name, patch in kube.patched] == [
        ("second", "DuplicateVersion")]


@pytest.mark.asyncio
async def test_a_model_version_that_cannot_be_checked_holds_up_neither_the_others_nor_the_round(monkeypatch):
    """An error nobody foresaw while checking one ModelVersion (an odd status, say) is logged: the deployment's
    rounds, which come right after, must run whatever it is."""
    import kopf

    from modelops import handlers

    checked = []

    async def check(shell, namespace, record, records):
        checked.append(record.name)
        if record.name == "first":
            raise ValueError("a status nobody foresaw")

    monkeypatch.setattr(handlers, "check_version", check)
    first, second = claim("first", "9", "s3://models/first"), claim("second", "10", "s3://models/second")
    await handlers.check_versions_of(kopf.Memo(), "prod", "fraud",
                                     {("prod", "fraud"): [record_of(first), record_of(second)]})
    assert checked == ["first", "second"]


def test_served_by_changes_after_a_promotion():
    before = ModelDeploymentStatus(stable_version="1.0.0", canary_version="1.1.0")
    after = ModelDeploymentStatus(stable_version="1.1.0", fallback_version="1.0.0")
    assert served_by_changes(before, after) == {"1.0.0": ServingRole.fallback, "1.1.0": ServingRole.stable}


def test_unsynced_keeps_the_rollout_fields_and_says_why():
    serving = ModelDeploymentStatus(phase=Phase.Progressing, stable_version="1.0.0", canary_version="1.1.0",
                                    canary_weight=20, message="step 1/2 at 20%")
    serving.conditions = conditions_for(serving, [], frozenset({"1.0.0"}), NOW)
    s = unsynced(serving, "BackendNotInstalled", "the InferenceService API is not installed", "2026-01-01T00:00:05.000Z")
    assert (s.phase, s.canary_weight, s.message) == (Phase.Progressing, 20, "step 1/2 at 20%")
    synced = [c for c in s.conditions if c.type == "Synced"]
    assert [(c.status, c.reason, c.last_transition_time) for c in synced] == [
        ("False", "BackendNotInstalled", "2026-01-01T00:00:05.000Z")]
    degraded = next(c for c in s.conditions if c.type == "Degraded")
    assert (degraded.status, degraded.reason) == ("True", "BackendNotInstalled")
    assert sorted(c.type for c in s.conditions) == ["AnalysisHealthy", "Degraded", "Progressing", "Ready", "Synced"]
    never_deployed = unsynced(ModelDeploymentStatus(), "ModelVersionMissing", "no version", NOW)
    assert (never_deployed.phase, never_deployed.message) == (Phase.Failed, "no version")


def test_a_status_names_the_problem_that_blocks_the_apply_and_keeps_the_other_in_its_message():
    from modelops.problems import Problem, naming
    apply = Problem("BackendMisconfigured", "the ModelVersion for 1.2.0 is gone")
    before = Problem("ModelVersionMissing", "no ModelVersion of model fraud with version 1.2.0", standing=True)
    assert naming(apply, before) == Problem("BackendMisconfigured", "the ModelVersion for 1.2.0 is gone; also "
                                            "ModelVersionMissing: no ModelVersion of model fraud with version 1.2.0")
    assert naming(None, before) is before and naming(apply, None) is apply and naming(None, None) is None
    assert naming(apply, Problem(apply.reason, apply.message, standing=True)) is apply  # the same words once


def test_ready_is_unknown_when_the_backend_cannot_be_read():
    s = ModelDeploymentStatus(phase=Phase.Stable, stable_version="1.0.0")
    ready = next(c for c in conditions_for(s, [], None, NOW) if c.type == "Ready")
    assert (ready.status, ready.reason) == ("Unknown", "BackendUnknown")


def test_analysis_timing():
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    spec = make_spec(analysis={"interval": "10s"})
    assert seconds_to_next_analysis(spec, ModelDeploymentStatus(stable_version="1.0.0"), now) is None
    waiting = ModelDeploymentStatus(stable_version="1.0.0", canary_version="1.1.0", phase=Phase.Progressing)
    assert seconds_to_next_analysis(spec, waiting, now) is None  # not taking traffic yet
    taking = waiting.model_copy(update={"step_started_at": rfc3339(now), "analysis_since": rfc3339(now)})
    assert seconds_to_next_analysis(spec, taking, now) == 10.0  # the first window lies wholly after traffic began
    assert seconds_to_next_analysis(spec, taking, now + timedelta(seconds=11)) == 0.0
    later = now + timedelta(seconds=30)
    measured = taking.model_copy(update={"last_analysis_at": rfc3339(later - timedelta(seconds=4))})
    assert seconds_to_next_analysis(spec, measured, later) == 6.0
    wide = make_spec(analysis={"interval": "10s", "window": "25s"})
    assert seconds_to_next_analysis(wide, taking, now + timedelta(seconds=11)) == 14.0


@settings(max_examples=300, deadline=None)
@given(began_ms=st.integers(0, 5_000), last_ms=st.none() | st.integers(0, 60_000), late_ms=st.integers(0, 3_000),
       interval=st.sampled_from(["1s", "1500ms", "10s", "1m"]))
def test_analyses_fall_due_on_whole_seconds_and_never_measure_before_they_are_due(began_ms, last_ms, late_ms, interval):
    """Many deployments' analyses then share an instant (so Prometheus requests), yet none measures a window
    that starts before the candidate took traffic, nor comes sooner than an interval after the last."""
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    spec = make_spec(analysis={"interval": interval})
    began = start + timedelta(milliseconds=began_ms)
    status = ModelDeploymentStatus(stable_version="1.0.0", canary_version="1.1.0", phase=Phase.Progressing,
                                   step_started_at=rfc3339(began), analysis_since=rfc3339(began))
    earliest = began + timedelta(seconds=duration_seconds(analysis_window(spec)))
    if last_ms is not None:
        last = analysis_instant(began + timedelta(milliseconds=last_ms))
        status = status.model_copy(update={"last_analysis_at": rfc3339(last)})
        earliest = max(earliest, last + timedelta(seconds=duration_seconds(spec.analysis.interval)))
    first = start + timedelta(seconds=seconds_to_next_analysis(spec, status, start))
    assert first.microsecond == 0 and first >= earliest > first - timedelta(seconds=1)
    now = first + timedelta(milliseconds=late_ms)
    assert seconds_to_next_analysis(spec, status, now) == 0.0
    assert earliest <= analysis_instant(now) <= now


def test_a_deployment_belongs_to_exactly_one_shard():
    import kopf

    from modelops.handlers import SHARD_LABEL, Options, in_my_shard

    def shards_driving(labels):
        return [shard for shard in (None, "a", "b") if in_my_shard(labels, kopf.Memo(options=Options(shard=shard)))]

    assert shards_driving({}) == [None]
    assert shards_driving({SHARD_LABEL: ""}) == [None]  # empty is unlabelled
    assert shards_driving({SHARD_LABEL: "a"}) == ["a"]
    assert shards_driving({SHARD_LABEL: "c"}) == []  # nobody runs shard c: it waits for one


def test_a_shard_name_must_make_a_label_value_and_a_lease_name():
    import argparse

    import pytest

    from modelops.cli import lease_name, shard_name

    assert (shard_name("eu-1"), lease_name("eu-1"), lease_name(None)) == ("eu-1", "modelops-operator-eu-1",
                                                                          "modelops-operator")
    for bad in ("EU", "-a", "a" * 41, "a_b", ""):
        with pytest.raises(argparse.ArgumentTypeError, match="DNS label"):
            shard_name(bad)


def test_secret_reads_are_shared_for_a_while_and_a_failed_one_is_not_kept():
    import base64
    from types import SimpleNamespace

    import kubernetes_asyncio
    import pytest

    from modelops.kube import Secrets

    class Core:
        def __init__(self):
            self.reads, self.fail = 0, False

        async def read_namespaced_secret(self, name, namespace, **_):
            self.reads += 1
            await asyncio.sleep(0.01)
            if self.fail:
                raise RuntimeError("API server unreachable")
            return SimpleNamespace(data={"token": base64.b64encode(f"t{self.reads}".encode()).decode()})

    async def scenario():
        now = [0.0]
        client = kubernetes_asyncio.client.ApiClient()
        secrets = Secrets(client, ttl=30.0, clock=lambda: now[0])
        secrets._core = core = Core()  # the API server's side
        values = await asyncio.gather(*(secrets.value("ops", "prom", "token") for _ in range(50)))
        assert set(values) == {"t1"} and core.reads == 1  # fifty analyses at once: one GET
        now[0] = 29.0
        assert await secrets.value("ops", "prom", "token") == "t1" and core.reads == 1
        now[0] = 30.0
        assert await secrets.value("ops", "prom", "token") == "t2" and core.reads == 2  # a rotated token, in time
        now[0], core.fail = 61.0, True
        with pytest.raises(RuntimeError):
            await secrets.value("ops", "prom", "token")
        core.fail = False
        assert await secrets.value("ops", "prom", "token") == "t4"  # the failure was not kept
        with pytest.raises(KeyError, match="has no key 'ca.crt'"):
            await secrets.value("ops", "prom", "ca.crt")
        await client.close()

    asyncio.run(scenario())


@pytest.mark.asyncio
async def test_the_api_client_reaches_the_api_server_directly(tmp_path, monkeypatch):
    """No netrc lookup and no proxy variables per request (kubernetes_asyncio trusts the environment by default)."""
    from modelops.kube import api_client

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    monkeypatch.setattr("kubernetes_asyncio.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig))
    client = await api_client()
    try:
        assert client.rest_client.pool_manager.trust_env is False
    finally:
        await client.close()


@pytest.mark.asyncio
async def test_kube_keeps_at_most_its_connections_in_flight_and_times_the_api_server_alone(monkeypatch):
    """A thousand rounds asking at once wait their turn untimed; each call sent has the whole timeout."""
    from modelops import kube as kube_module

    in_flight, most, timeouts = 0, 0, []

    class SlowApi:
        async def get_namespaced_custom_object(self, *args, _request_timeout, **kwargs):
            nonlocal in_flight, most
            in_flight += 1
            most = max(most, in_flight)
            timeouts.append(_request_timeout)
            await asyncio.sleep(0.01)
            in_flight -= 1
            return {"metadata": {"name": args[-1]}}

    monkeypatch.setattr(kube_module, "CONNECTIONS", 3)
    monkeypatch.setattr(kube_module.kubernetes_asyncio.client, "CustomObjectsApi", lambda client: SlowApi())
    kube = kube_module.Kube(None)  # type: ignore[arg-type]
    resource = kube_module.Resource("g", "v1", "things", "Thing")
    got = await asyncio.gather(*(kube.get(resource, "ns", f"t{i}") for i in range(20)))
    assert [o["metadata"]["name"] for o in got] == [f"t{i}" for i in range(20)]
    assert most == 3 and timeouts == [kube_module.API_TIMEOUT_SECONDS] * 20


def test_an_intent_is_applied_again_after_a_conflict_only_where_it_is_still_safe():
    from modelops.reconcile import safe_over
    from modelops.rollout import TrafficIntent
    from modelops.routers.base import BackendState

    stable_only, both = BackendState(frozenset({"1.0.0"})), BackendState(frozenset({"1.0.0", "1.1.0"}))
    rollback = TrafficIntent("1.0.0")
    step = TrafficIntent("1.0.0", "1.1.0", 50)
    beside = TrafficIntent("1.0.0", "1.1.0", 0)
    mirror = TrafficIntent("1.0.0", "1.1.0", 0, mirror=100)
    assert safe_over(rollback, BackendState()) and safe_over(rollback, stable_only)  # off the candidate: always
    assert safe_over(step, both) and not safe_over(step, stable_only)  # the fresh read says it is not ready
    assert safe_over(beside, stable_only)
    assert safe_over(mirror, both) and not safe_over(mirror, stable_only)


def test_an_api_error_names_the_admission_webhook_that_failed_it_and_nothing_else_of_the_body():
    """A refused write names its cause when it is a webhook (KServe's manager down, say), not only the HTTP status;
    no other text of the response body reaches status or events."""
    def error(status: int, reason: str, body: str | None) -> ApiException:
        refused = ApiException(status=status, reason=reason)
        refused.body = body
        return refused

    down = error(500, "Internal Server Error", json.dumps({"kind": "Status", "message": (
        'Internal error occurred: failed calling webhook "inferenceservice.kserve-webhook-server.defaulter": '
        'Post "https://127.0.0.1:4443/mutate": dial tcp: connection refused')}))
    assert classify(down).message == ("Kubernetes API answered 500 Internal Server Error: admission webhook "
                                      "inferenceservice.kserve-webhook-server.defaulter could not be called")
    denied = error(400, "Bad Request", json.dumps({"message": 'admission webhook "validation.example.com" denied the '
                                                              'request: secret-ish detail'}))
    assert classify(denied).message == ("Kubernetes API answered 400 Bad Request: admission webhook "
                                        "validation.example.com refused the write")
    echoed = error(422, "Unprocessable Entity", json.dumps({"message": 'spec.reason: "see admission webhook '
                                                                       '\\"evil.example.com\\" denied the request"'}))
    assert classify(echoed).message == "Kubernetes API answered 422 Unprocessable Entity"  # only the API's own words
    for body in (None, "not json", "[]", json.dumps({"code": 503}), json.dumps({"message": "etcd leader changed"})):
        assert classify(error(503, "Service Unavailable", body)).message == \
            "Kubernetes API answered 503 Service Unavailable"
