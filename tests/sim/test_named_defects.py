"""One named example per defect, each through the real round in a World (fakes.py, world.py).

The first part pins behaviour that is right now and must stay right (each test fails on the
defect it names). The last part holds operator bugs this tier found: those marked
xfail(strict=True) fail today for the reason in their docstring (remove the mark once fixed);
the unmarked ones were fixed while this tier was written and stay as regression tests.
The invariants of invariants.py are checked after every step of every test here too.
"""

from __future__ import annotations

from contextlib import contextmanager
from datetime import timedelta

import pytest
from pydantic import ValidationError

from modelops.api.modeldeployment import ModelDeploymentSpec, Phase, Verdict
from modelops import reconcile
from modelops.reconcile import DEPLOYMENTS
from modelops.rollout.values import parse_rfc3339
from modelops.routers.base import OWNER_ANNOTATION
from modelops.routers.inference_service import DEPLOYMENT_MODE, INFERENCE_SERVICE

from . import invariants
from .fakes import CrashAt, FailOn, Fault, dig
from .world import NAME, NS, Config, World, deployment_spec, new_world, uri_of

BACKENDS = ["kserve", "gatewayAPI", "seldon", "seldonV2"]


def start(w: World, version: str = "1.1.0", until_weight: int | None = None) -> None:
    """spec.version bumped; ticks until the candidate takes traffic (or reaches `until_weight`)."""
    w.set_version(version)
    for _ in range(12):
        w.tick(10)
        s = w.status()
        if s.canary_version == version and s.canary_weight and (until_weight is None or s.canary_weight >= until_weight):
            return
    raise AssertionError(f"the rollout did not reach its step: {w.trace[-6:]}")


def canary_percent(w: World):
    return dig(w.backend(), "spec", "predictor", "canaryTrafficPercent")


# --- behaviour that must stay right -----------------------------------------------------------

def test_inf_check_value_is_a_fail_verdict_with_words_and_the_status_is_accepted(worlds):
    w = new_world(worlds, failure_limit=2)
    start(w)
    w.metric("candidate", "+inf")
    w.tick(10)
    check = w.status().checks[0]
    assert check.verdict is Verdict.Fail and check.value is None and "+Inf breaks the limit <= 0.05" in check.message
    assert not w.kube.nan_rejections
    assert next(c for c in w.status().conditions if c.type == "Synced").status == "True"


def test_a_step_whose_route_write_did_not_land_is_not_passed_on_the_previous_steps_traffic(worlds):
    """The 25 % step is decided and written to status, and its route write times out (an API server with a long
    queue): the route still sends 10 %. The next analysis measured 10 %; the step passes only on a window that
    began once the store carried 25 % (invariant E judges every step of every schedule the same way)."""
    w = new_world(worlds, backend="gatewayAPI", steps=(10, 25, 50))  # pauses of 10 s
    start(w)
    w.round()  # the route write's echo wakes a round, which sees 10 % carried
    w.kube.hook = FailOn("apply", "httproutes", Fault("timeout"))
    w.tick(10)
    assert w.status().canary_weight == 25 and w.live() == {"1.0.0": 90, "1.1.0": 10}
    w.tick(10)  # its analysis measured the 10 % step: the route is written now, and the step goes on
    assert w.status().canary_weight == 25 and w.live() == {"1.0.0": 75, "1.1.0": 25}
    w.round()
    w.tick(10)  # a whole window at 25 %
    assert w.status().canary_weight == 50


def lagging_first_step(worlds, ready_timeout: str = "2m") -> World:
    """A Gateway API rollout whose first step is decided while every route write times out (an API server with a
    long queue): the candidate is ready but has no requests, and its metrics have no data."""
    w = new_world(worlds, backend="gatewayAPI", no_data_limit=2, ready_timeout=ready_timeout)
    w.metric("candidate", "none")
    w.set_version("1.1.0")
    w.tick(10)  # the route names the candidate, at 0 %, and the Gateway reads its endpoints
    assert w.status().canary_weight == 0, w.trace[-3:]
    w.kube.hook = FailOn("apply", "httproutes", Fault("timeout"), times=1000)
    for _ in range(6):
        w.tick(10)
        if w.status().canary_weight:
            return w
    raise AssertionError(f"the first step was not decided: {w.trace[-6:]}")


def test_no_data_before_a_lagging_route_carries_the_step_does_not_roll_a_healthy_candidate_back(worlds):
    """Analyses taken while the 10 % route write is still queued see no requests of the candidate: they are no
    evidence about the step, so they do not count toward noDataLimit (2). Once the route lands the candidate's
    metrics come, and it walks on."""
    w = lagging_first_step(worlds)
    for _ in range(5):
        w.tick(10)
    s = w.status()
    assert s.phase is Phase.Progressing and s.canary_weight == 10 and s.consecutive_no_data == 0, w.trace[-4:]
    assert "1.1.0" not in w.live() and w.kube.hook.fired and s.last_analysis_at is not None
    w.heal()
    w.metric("candidate", "good")
    for _ in range(12):
        w.tick(10)
        if w.status().phase is Phase.Stable:
            break
    assert w.status().stable_version == "1.1.0" and w.live() == {"1.1.0": 100}


def test_a_step_the_route_never_carries_is_rolled_back_once_no_data_counts_after_its_ready_timeout(worlds):
    """The route write never lands: past strategy.readyTimeout (1m) from the step's decision no data counts
    again, and the candidate does not sit in the rollout for ever."""
    w = lagging_first_step(worlds, ready_timeout="1m")
    decided = parse_rfc3339(w.status().step_started_at)
    for _ in range(12):
        w.tick(10)
        if w.status().phase is not Phase.Progressing:
            break
    s = w.status()
    assert s.phase is Phase.RolledBack and "inconclusive 2 times in a row" in s.history[-1].reason, w.trace[-4:]
    assert parse_rfc3339(s.history[-1].time) - decided >= timedelta(minutes=1)


@pytest.mark.parametrize("edit", ["3 steps to 1", "Canary to HotSwap"])
def test_strategy_edited_mid_rollout_continues_without_an_exception(worlds, edit):
    w = new_world(worlds, backend="gatewayAPI", steps=(10, 25, 50))
    start(w, until_weight=25)
    assert w.status().current_step == 1
    if edit == "3 steps to 1":
        w.set_strategy((50,), "Canary", "Immediate")
    else:
        w.set_strategy((10, 25, 50), "HotSwap", "Immediate")
    for _ in range(6):
        w.tick(10)
    assert "InternalError" not in w.events.reasons()
    assert w.status().phase is Phase.Stable and w.status().stable_version == "1.1.0" and w.live() == {"1.1.0": 100}


@pytest.mark.parametrize("backend", BACKENDS)
def test_candidate_modelversion_deleted_at_10_percent_is_rolled_back(worlds, backend):
    w = new_world(worlds, backend)
    start(w)
    assert w.live() == {"1.0.0": 90, "1.1.0": 10}
    w.delete_mv("1.1.0")
    w.tick(1)
    s = w.status()
    assert s.phase is Phase.RolledBack and s.failed_version == "1.1.0" and w.live() == {"1.0.0": 100}


@pytest.mark.parametrize("backend", BACKENDS)
def test_stable_modelversion_deleted_keeps_traffic_on_stable(worlds, backend):
    w = new_world(worlds, backend)
    w.delete_mv("1.0.0")
    for _ in range(3):
        w.tick(10)
    assert "InternalError" not in w.events.reasons() and w.live() == {"1.0.0": 100}


@pytest.mark.parametrize("backend", BACKENDS)
def test_stable_modelversion_deleted_during_a_rollout_then_abort_keeps_traffic_on_stable(worlds, backend):
    w = new_world(worlds, backend)
    start(w)
    w.delete_mv("1.0.0")
    w.tick(1)
    assert w.live() == {"1.0.0": 90, "1.1.0": 10}
    w.request("A", "Abort")  # an abort needs no stable ModelVersion
    w.tick(1)
    assert w.status().phase is Phase.RolledBack and w.live() == {"1.0.0": 100}
    assert "InternalError" not in w.events.reasons()


@pytest.mark.parametrize("broken", ["bad_response", "many_series", "inf_samples", "credentials", "timeout", "hang",
                                    "factory_timeout"])
def test_a_broken_provider_counts_toward_no_data_limit_and_never_passes(worlds, broken):
    # noData: Pass - a provider error must still never pass a step.
    w = new_world(worlds, no_data="Pass", no_data_limit=3, min_samples=True)
    start(w)
    w.round()  # the backend write's echo wakes a round, which sees 10 % carried: no data counts from then on
    w.metric("candidate", broken)
    for n in (1, 2):
        w.tick(10)
        s = w.status()
        assert s.consecutive_no_data == n and s.last_outcome.value == "Inconclusive" and s.canary_weight == 10
        assert all(c.verdict is Verdict.Error for c in s.checks)
    w.tick(10)
    assert w.status().phase is Phase.RolledBack and w.live() == {"1.0.0": 100}


@pytest.mark.parametrize("backend", BACKENDS)
def test_candidate_deleted_then_abort_then_metrics_broken_puts_traffic_on_stable_within_one_round(worlds, backend):
    w = new_world(worlds, backend, failure_limit=3, no_data_limit=4)
    start(w)
    w.delete_mv("1.1.0")
    w.request("A", "Abort")
    w.metric("candidate", "unreachable")
    w.advance(10)
    w.round()
    assert w.status().phase is Phase.RolledBack and w.live() == {"1.0.0": 100}


@pytest.mark.parametrize("fault", [409, 500, "timeout"])
def test_failed_status_write_after_a_rollback_decision_leaves_the_backend_and_the_next_round_finishes(worlds, fault):
    w = new_world(worlds)
    start(w)
    w.metric("candidate", "bad")
    w.kube.hook = FailOn("patch_status", DEPLOYMENTS.plural, Fault(fault))
    w.tick(10)
    assert w.kube.hook.fired, "the status write was not attempted"
    assert w.status().phase is Phase.Progressing and canary_percent(w) == 10  # not moved, toward anything
    w.heal()
    w.tick(10)
    assert w.status().phase is Phase.RolledBack and w.live() == {"1.0.0": 100}


@pytest.mark.parametrize("backend", ["gatewayAPI", "seldon", "seldonV2"])  # KServe refuses HotSwap
def test_first_analysis_waits_a_full_window_of_candidate_traffic(worlds, backend):
    # HotSwap with noData Pass and no data at all: only the time rule keeps it from promoting at once.
    w = new_world(worlds, backend, strategy="HotSwap", steps=(50,), no_data="Pass")
    w.metric("candidate", "none")
    w.set_version("1.1.0")
    for _ in range(6):  # a minute not ready: no traffic, so no window counts
        w.tick(10, ready=False)
    assert w.status().analysis_since is None and w.status().phase in (Phase.Stable, Phase.Progressing)
    for _ in range(3):  # ready: the candidate takes all traffic from the round that records it
        w.tick(1)
        if w.status().analysis_since is not None:
            break
    assert w.status().analysis_since is not None and w.live() == {"1.1.0": 100}
    for _ in range(9):
        w.tick(1)
        assert w.status().phase is Phase.Progressing, "promoted on a window from before the candidate had traffic"
    w.tick(1)
    assert w.status().phase is Phase.Stable


@pytest.mark.parametrize("backend", BACKENDS)
def test_traffic_override_before_the_first_step_still_runs_and_reports_analyses(worlds, backend):
    w = new_world(worlds, backend)
    w.edit({"version": "1.1.0", "trafficOverride": {"weight": 30, "reason": "load test"}}, "version+override")
    for _ in range(4):
        w.tick(10)
    s = w.status()
    assert s.phase is Phase.Paused and s.pinned_weight == 30 and w.live() == {"1.0.0": 70, "1.1.0": 30}
    assert s.checks and s.last_analysis_at is not None and s.checks[0].verdict is Verdict.Pass


@pytest.mark.parametrize("backend", BACKENDS)
def test_version_bump_and_abort_in_the_same_spec_abort_the_new_candidate(worlds, backend):
    w = new_world(worlds, backend)
    w.edit({"version": "1.1.0", "request": {"id": "A", "action": "Abort", "reason": "ticket #A#"}}, "bump+abort")
    for _ in range(4):
        w.tick(10)
        assert "1.1.0" not in w.live()
    s = w.status()
    assert s.phase is Phase.RolledBack and s.failed_version == "1.1.0" and s.canary_version is None
    assert [e.action for e in s.history if e.version == "1.1.0"] == ["RolloutStarted", "Aborted"]


def test_request_ids_a_b_a_run_a_once(worlds):
    w = new_world(worlds)
    start(w)
    w.request("A", "Abort")
    w.tick(1)
    assert w.status().phase is Phase.RolledBack
    w.request("B", "Retry")
    w.tick(1)
    assert w.status().phase is Phase.Progressing
    w.request("A", "Abort")
    for _ in range(2):
        w.tick(1)
    assert w.status().phase is Phase.Progressing
    assert sum("#A#" in e.reason for e in w.status().history) == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_progressive_rollback_then_version_back_to_stable_and_forward_again(worlds, backend):
    w = new_world(worlds, backend, rollback="Progressive", failure_limit=1)
    start(w, until_weight=50)
    w.metric("candidate", "bad")
    w.tick(10)
    assert w.status().phase is Phase.RollingBack and w.live() == {"1.0.0": 50, "1.1.0": 50}
    w.set_version("1.0.0")
    w.tick(1)
    s = w.status()
    assert s.phase is Phase.Stable and s.canary_version is None and s.failed_version is None
    assert w.live() == {"1.0.0": 100}
    w.metric("candidate", "good")
    w.set_version("1.1.0")
    w.tick(1)
    s = w.status()
    assert s.phase is Phase.Progressing and s.canary_version == "1.1.0" and s.history[-1].action in ("RolloutStarted",
                                                                                                    "StepAdvanced")


def test_retry_after_a_rollback_starts_a_new_rollout(worlds):
    w = new_world(worlds, failure_limit=1)
    start(w)
    w.metric("candidate", "bad")
    w.tick(10)
    assert w.status().phase is Phase.RolledBack
    for _ in range(2):
        w.tick(10)
    assert w.status().phase is Phase.RolledBack and w.live() == {"1.0.0": 100}
    w.metric("candidate", "good")
    w.request("R", "Retry")
    w.tick(1)
    assert w.status().phase is Phase.Progressing and w.status().canary_version == "1.1.0"


def test_inf_baseline_is_no_data_not_pass(worlds):
    w = new_world(worlds, relative=True)
    start(w)
    w.metric("stable", "+inf")
    w.tick(10)
    s = w.status()
    accuracy = next(c for c in s.checks if c.name == "accuracy")
    assert accuracy.verdict is Verdict.NoData and accuracy.baseline is None and "+Inf" in accuracy.message
    assert s.last_outcome.value == "Inconclusive" and s.canary_weight == 10


def test_duplicate_check_names_are_rejected():
    body = deployment_spec(Config())
    body["analysis"]["checks"].append(dict(body["analysis"]["checks"][0]))
    with pytest.raises(ValidationError, match="analysis.checks: names must be unique, repeated: \\['errors'\\]"):
        ModelDeploymentSpec.model_validate(body)


def test_min_samples_without_sample_query_is_rejected():
    body = deployment_spec(Config())
    body["analysis"]["checks"][0]["minSamples"] = 10
    with pytest.raises(ValidationError, match="minSamples on a query check needs a sampleQuery"):
        ModelDeploymentSpec.model_validate(body)


def rollback_round_world(worlds, backend: str) -> World:
    """Candidate at 10 %, failing: the next round decides the rollback."""
    w = new_world(worlds, backend)
    start(w)
    w.metric("candidate", "bad")
    w.advance(10)
    w.settle()
    return w


@pytest.mark.parametrize("backend", BACKENDS)
def test_crash_at_every_call_of_a_rollback_round_then_restart_completes_it(worlds, backend):
    probe = rollback_round_world(worlds, backend)
    first = len(probe.kube.calls)
    probe.round()
    calls = len(probe.kube.calls) - first
    assert probe.status().phase is Phase.RolledBack and calls >= 3
    for index in range(calls):
        for when in ("before", "after"):
            w = rollback_round_world(worlds, backend)
            w.kube.hook = CrashAt(index, when)
            assert w.round().crashed, (index, when)
            w.heal()
            for _ in range(3):
                w.tick(1)  # invariants checked at every step: 1.1.0 never regains traffic
            s = w.status()
            assert s.phase is Phase.RolledBack and s.failed_version == "1.1.0", (index, when, w.trace[-8:])
            assert w.live() == {"1.0.0": 100}, (index, when)


def test_gateway_candidate_without_ready_endpoints_gets_no_traffic_and_is_rolled_back_after_ready_timeout(worlds):
    """The route is Accepted with its refs resolved, but no pod behind the candidate's Service ever becomes ready."""
    w = new_world(worlds, "gatewayAPI", ready_timeout="1m")
    w.controller.unready.add("fraud-v1-1-0")
    w.set_version("1.1.0")
    for _ in range(5):
        w.tick(10)
        assert w.live() == {"1.0.0": 100} and w.status().canary_weight == 0
        assert "waiting for 1.1.0 to become ready" in (w.status().message or "")
    conditions = w.backend()["status"]["parents"][0]["conditions"]
    assert all(c["status"] == "True" for c in conditions)  # Accepted, ResolvedRefs: not what readiness stops at
    for _ in range(3):
        w.tick(10)
    s = w.status()
    assert s.phase is Phase.RolledBack and s.failed_version == "1.1.0" and "readyTimeout" in s.history[-1].reason
    assert w.live() == {"1.0.0": 100}


def test_gateway_header_pin_stays_on_its_version_through_a_rollout_and_a_promotion(worlds):
    w = new_world(worlds, "gatewayAPI")
    pin = {"matches": [{"path": {"type": "PathPrefix", "value": "/fraud"},
                        "headers": [{"name": "x-cohort", "value": "testers"}]}],
           "backendRefs": [{"name": "fraud-v1-0-0", "port": 8080}]}
    rules = w.traffic_fields() + [pin]
    w.kube.world_patch(w.backend_resource, "ml", "fraud", {"spec": {"rules": rules}})
    start(w)
    assert w.traffic_fields()[2] == pin
    for _ in range(20):
        w.tick(10)
        assert w.traffic_fields()[2] == pin
        if w.status().phase is Phase.Stable:
            break
    assert w.status().stable_version == "1.1.0"
    assert [(r["name"], r["weight"]) for r in w.traffic_fields()[0]["backendRefs"]] == [("fraud-v1-1-0", 100)]
    assert w.traffic_fields()[2] == pin


def test_kserve_a_first_version_is_written_until_it_serves_and_the_echo_of_that_write_is_left_alone(worlds):
    """Removing canaryTrafficPercent is a new generation KServe has not observed yet. A round on the echo of that
    write, before KServe's status, must write nothing: it once read the revision as unready, wrote 0 %, removed the
    field again on the next status, and so on, a write loop that lasted until the first rollout."""
    w = World(Config(backend="kserve"))
    worlds.append(w)
    w.round()  # creates the InferenceService
    w.round()  # no status yet: 0 % until its revision is ready
    w.settle()
    w.round()  # the revision is ready: the field removed, all traffic on it
    written = w.backend()["metadata"]["generation"]
    assert canary_percent(w) is None
    w.round()
    w.settle()
    w.round()
    assert w.backend()["metadata"]["generation"] == written and w.live() == {"1.0.0": 100}


def test_an_inference_service_in_standard_mode_is_refused_and_never_written(worlds):
    """routers/kserve.py driven_mode: KServe ignores canaryTrafficPercent outside serverless mode, so a
    candidate written at 0 % or 10 % would take every request. An InferenceService handed over in RawDeployment
    mode (KServe's status says Standard) to a spec naming no serving.kserve.httpRoute is read, refused with its
    mode named, and never written: stable keeps everything while spec.version names a candidate."""
    w = World(Config())
    worlds.append(w)
    w.kube.world_put(INFERENCE_SERVICE, NS, {
        "metadata": {"name": NAME, "annotations": {OWNER_ANNOTATION: NAME, DEPLOYMENT_MODE: "RawDeployment"}},
        "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": uri_of("1.0.0")}}}})
    w.kube.world_patch(INFERENCE_SERVICE, NS, NAME, {"status": {"deploymentMode": "Standard"}}, status=True)
    w.round()
    w.set_version("1.1.0")
    for _ in range(4):
        w.tick(10)
    assert [c for c, _ in w.kube.calls if c.plural == "inferenceservices" and c.verb != "get"] == []
    assert w.live() == {"1.0.0": 100}
    synced = next(c for c in w.status().conditions if c.type == "Synced")
    assert (synced.status, synced.reason) == ("False", "BackendMisconfigured")
    assert "Standard deployment mode (status.deploymentMode)" in synced.message


@contextmanager
def before_the_full_weight_rule():
    """Rounds of an operator from before KServe refused a candidate at 100 % (reconcile.full_weight_refusal): the
    state it leaves is what today's operator must still take back."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(reconcile, "full_weight_refusal", lambda spec: None)
        yield


def test_a_stored_kserve_spec_with_a_100_percent_step_takes_its_candidate_back_to_stable(worlds):
    """A spec stored before the API server refused a step of weight 100 on kserve (KSERVE_FULL_WEIGHT_RULE), its
    rollout at 50 %: the round refuses it as the API server would (InvalidSpec, naming the step), and rather than
    stepping on or freezing there, takes the candidate back to stable; a new version starts no rollout."""
    w = new_world(worlds, steps=(50, 100))
    with before_the_full_weight_rule():
        start(w, until_weight=50)
    w.settle()
    assert w.live() == {"1.0.0": 50, "1.1.0": 50}
    for _ in range(3):
        w.tick(10)
    s = w.status()
    assert s.phase is Phase.RolledBack and s.canary_version is None and w.live() == {"1.0.0": 100}
    synced = next(c for c in s.conditions if c.type == "Synced")
    assert (synced.status, synced.reason) == ("False", "InvalidSpec") and "strategy.steps [1]: weight 100 is refused" in synced.message
    w.set_version("1.2.0")
    for _ in range(3):
        w.tick(10)
    assert w.status().canary_version is None and w.live() == {"1.0.0": 100}


def test_a_settled_kserve_deployment_under_a_stored_full_weight_spec_keeps_saying_what_it_saw(worlds):
    """The same refused spec once nothing is in flight: the rounds still read the backend and say so (observed
    generation, Ready), rather than a fail-safe's "could not be read" on every round."""
    w = new_world(worlds, steps=(50, 100))
    with before_the_full_weight_rule():
        start(w, until_weight=50)
    for _ in range(3):
        w.tick(10)
    assert w.status().phase is Phase.RolledBack
    w.tick(10)
    s = w.status()
    ready = next(c for c in s.conditions if c.type == "Ready")
    assert s.observed_generation == w.obj()["metadata"]["generation"] and ready.status == "True", (s.conditions, w.trace[-4:])


# --- operator bugs found by this tier: xfail(strict=True) ones fail today; the others are fixed ---

def test_kserve_rollback_after_a_100_percent_step_without_stable_modelversion_restores_stable(worlds):
    """routers/kserve.py patch_for: after a 100 % step (HotSwap, or a last step of 100) KServe has rolled
    the CANDIDATE's revision out, so canaryTrafficPercent 0 would keep the failed candidate for good. The
    router restores stable's artifact from what it recorded when it wrote it (its ModelVersion is gone):
    once that revision is ready, stable has everything again."""
    w = new_world(worlds, strategy="HotSwap", steps=(50,))
    w.delete_mv("1.0.0")
    with before_the_full_weight_rule():
        start(w, until_weight=100)
    w.settle()
    w.delete_mv("1.1.0")  # or any failure: the analysis, an Abort
    for _ in range(4):
        w.tick(10)
    s = w.status()
    assert s.phase is Phase.RolledBack and s.stable_version == "1.0.0"
    assert w.live() == {"1.0.0": 100}


def test_kserve_new_version_right_after_a_hotswap_rollback_splits_traffic_with_the_failed_candidate(worlds):
    """routers/kserve.py observe/patch_for: after 1.1.0 went to 100 % (its revision is KServe's
    rolled-out one) and was rolled back, stable's revision is re-created. If spec.version moves to
    1.2.0 before that revision is ready, the operator writes 1.2.0's artifact, and a canary step
    sends canaryTrafficPercent to 1.2.0 and the REST to the rolled-out revision: the failed 1.1.0
    (observe even reports stable as ready through that revision)."""
    w = new_world(worlds, strategy="HotSwap", steps=(50,))
    with before_the_full_weight_rule():
        start(w, until_weight=100)
    w.settle()
    w.request("A", "Abort")
    w.round()
    w.set_strategy((10, 50), "Canary", "Immediate")
    w.set_version("1.2.0")
    with untolerated("kserve-rolled-out-candidate"):
        for _ in range(4):
            w.tick(10)
    assert w.status().canary_version == "1.2.0"
    assert "1.1.0" not in w.live(), w.live()  # today: {'1.2.0': 10, '1.1.0': 90}


def test_kserve_version_change_right_after_a_promotion_sends_everything_to_the_new_candidate(worlds):
    """routers/kserve.py patch_for: a new artifact is written with canaryTrafficPercent: 0, "the
    rolled-out revision keeps everything", assuming that revision is stable's. Right after a
    promotion KServe may not have reconciled yet (no settle here), so its latestRolledoutRevision is
    still the OLD stable's. When spec.version goes back to that old version (1.0.0) at once, all
    traffic goes to 1.0.0, the new candidate, at a persisted canaryWeight of 0 and before any step
    or analysis; stable 1.1.0 gets nothing. The router could write the new artifact only once the
    status shows stable's revision rolled out (observedGeneration current, latestRolledoutRevision =
    stable's unit)."""
    w = new_world(worlds)
    start(w, until_weight=50)
    for _ in range(6):
        w.advance(10)
        w.round()  # no settle: KServe has not reconciled the promotion yet
        if w.status().phase is Phase.Stable:
            break
    assert w.status().stable_version == "1.1.0"
    w.set_version("1.0.0")
    with untolerated("kserve-rolled-out-candidate"):
        w.round()
    assert w.live() == {"1.1.0": 100}  # today: {'1.0.0': 100}


def test_stale_echo_of_an_earlier_own_write_is_taken_as_the_base(worlds):
    """reconcile.py status_base: memory is used only when the delivered resourceVersion EQUALS
    memory.written_over. Two rounds that both saw rv A write twice (B, then C over B); when the watch
    then delivers B (the echo of the first write), B is taken as the base. A decision equal to B writes
    nothing, so the conditional write that guards every other case never fires: the round applies B's
    intent and reports success while the store holds C. Here C is Synced=False (an API error in the
    second round); it stays so after a round that reported no problem. A delivered rv that is one of
    the operator's own earlier writes (or any rv older than memory.written_rv) should be treated as
    older than memory."""
    with untolerated("stale-echo-base"):
        w = new_world(worlds)
        w.set_version("1.1.0")
        w.tick(1, ready=False)               # sees the bump (A), writes B
        w.kube.hook = FailOn("get", "inferenceservices", Fault(409))
        w.tick(1, ready=False, stale=True)   # sees A again (stale): memory -> base B; writes C (Synced=False)
        w.heal()
        info = w.round(stale=True)           # sees B, the echo of its first write
        assert info.failures_in_a_row == 0
        assert next(c for c in w.status().conditions if c.type == "Synced").status == "True"


def test_kserve_rollout_after_the_stable_modelversion_is_deleted_never_starts(worlds):
    """routers/kserve.py observe maps the predictor's storageUri to a version only through existing
    ModelVersions, so once stable's ModelVersion is deleted stable is never reported ready (Ready=False
    while it serves 100 %), and every round ends Synced=False BackendMisconfigured (patch_for raises
    VersionUnavailable for the all-on-stable intent it already carries). Since aa66df0 the engine waits
    for stable to serve before a rollout (engine.follow_spec_version), so no new version can ever roll
    out: "waiting for stable 1.0.0 to serve before rolling out 1.1.0", for good. On Gateway API this works.
    The rolled-out/ready revision could be attributed to the status' stable version without its
    ModelVersion (the router already does so for the rolled-out revision when it differs from latest)."""
    w = new_world(worlds)
    w.delete_mv("1.0.0")
    w.set_version("1.1.0")
    for _ in range(6):
        w.tick(10)
    s = w.status()
    assert any(e.action == "RolloutStarted" and e.version == "1.1.0" for e in s.history), s.message
    assert (s.phase, s.stable_version, w.live()) == (Phase.Stable, "1.1.0", {"1.1.0": 100}), s.message


@contextmanager
def untolerated(*bugs: str):
    """The invariants without the tolerance of these known bugs (see invariants.TOLERATED)."""
    saved = set(invariants.TOLERATED)
    invariants.TOLERATED.difference_update(bugs)
    try:
        yield
    finally:
        invariants.TOLERATED.clear()
        invariants.TOLERATED.update(saved)


def test_stale_event_between_own_status_write_and_its_echo(worlds):
    """Found by this tier, fixed since (conditional status writes); was: reconcile.py
    current_status/write_status: memory of the operator's last status write is used
    only when the delivered object's resourceVersion EQUALS the one it wrote over. A watch event
    that is newer than that but older than the write itself (a user's spec edit made while the
    round ran; the edit also wakes the daemon) makes the next round start from the outdated status.
    Here: the version bump is seen, the rollout starts; the Abort added meanwhile is delivered with
    the pre-rollout status, decided from that, and sent as a merge patch computed against it, so
    keys of the real status survive: phase RolledBack with canaryVersion 1.1.0 still set. The round
    after that resumes 1.1.0 (phase Progressing) although it was aborted."""
    with untolerated("stale-status-base"):
        w = new_world(worlds)
        w.set_version("1.1.0")
        w.request("A", "Abort")
        w.round(stale=True)   # delivers the bump only: rollout started, written over it
        w.round(stale=True)   # delivers the Abort edit, whose status is from before that write
        s = w.status()
        assert not (s.phase is Phase.RolledBack and s.canary_version is not None), "corrupt status"
        w.tick(10)
        assert w.status().phase is Phase.RolledBack and w.status().canary_version is None


def test_lost_ack_then_stale_event_acts_on_a_request_twice(worlds):
    """Found by this tier, fixed since (conditional status writes); was: reconcile.py write_status:
    the status write lands but its answer is lost (timeout); the watch
    then delivers the object from before it, and the round acts on request A again: two Aborted
    history entries for one id. The status patch is not conditional on the resourceVersion it was
    computed from (a 409 would have told the operator its base was stale)."""
    with untolerated("stale-status-base"):
        w = new_world(worlds)
        start(w)
        w.request("A", "Abort")
        w.kube.hook = FailOn("patch_status", DEPLOYMENTS.plural, Fault("timeout", "after"))
        w.advance(1)
        w.round()
        w.heal()
        w.advance(1)
        w.round(stale=True)
        assert sum("#A#" in e.reason for e in w.status().history) == 1


def test_failed_serving_roles_bookkeeping_skips_apply_and_reports_synced(worlds):
    """Found by this tier, fixed since (apply before the bookkeeping); was: reconcile.py reconcile:
    record_serving_roles (ModelVersion get + patch_status) ran after the
    status write and before router.apply, unguarded. When a ModelVersion call fails, the round ends
    there: the decided traffic is not applied (a rollback stays unapplied for as long as that call
    fails) and status keeps Synced=True from the write just made, so the failure is not visible."""
    with untolerated("serving-roles-before-apply"):
        w = new_world(worlds)
        start(w)
        w.metric("candidate", "bad")
        w.kube.hook = FailOn("patch_status", "modelversions", Fault(503), times=100)
        w.tick(10)
        assert w.status().phase is Phase.RolledBack
        assert w.live() == {"1.0.0": 100}, "the rollback was decided and persisted, but not applied"


def test_a_lost_ack_of_an_unsynced_write_is_not_taken_for_synced(worlds):
    """Found by the thorough profile: a round failed (409 on a read) and wrote Synced=False, but the write's
    answer was lost; the next round, handed the object from before that write, decided "no change" and wrote
    nothing, so Synced=False stood after a round that reported no problem. A write of unknown outcome now makes
    the next round write (conditionally) even without a change."""
    w = new_world(worlds)
    w.set_version("1.1.0")
    w.round()
    w.faults([Fault(409, "before"), Fault("timeout", "after")])  # a failed read, then its Synced=False write's ack lost
    w.tick(1, ready=False)
    for stale in (True, False, False):
        info = w.tick(1, ready=False, stale=stale)
    assert info.failures_in_a_row == 0
    assert next(c for c in w.status().conditions if c.type == "Synced").status == "True"


def writes_and_events_of_a_settled_round(w: World) -> tuple[list, list]:
    """The status writes and the events of one more round with the clock stopped, once the serving controller caught
    up."""
    first, posted = len(w.kube.calls), len(w.events.posted)
    w.settle()
    w.round()
    return [call for call, _ in w.kube.calls[first:] if call.verb == "patch_status"], w.events.posted[posted:]


def synced_of(w: World):
    return next(c for c in w.status().conditions if c.type == "Synced")


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_promotion_whose_modelversion_is_deleted_before_the_backend_write_landed_settles_on_one_status(worlds,
                                                                                                           backend):
    """Found by test_seldon_v2_schedules ("the operator still writes with the clock stopped"), fixed since; was:
    1.2.0's promotion is persisted, its backend write does not land (here: it times out), then 1.2.0's
    ModelVersion is deleted. On Seldon v2 the router needs that ModelVersion to write the promotion (the stable
    Model's update in place), so every round's apply fails with BackendMisconfigured (VersionUnavailable), while
    the write before the apply knew only ModelVersionMissing (spec.version has no ModelVersion): two status writes
    a round, Synced/Degraded flipping between the two reasons, for as long as it lasted. Now the status names the
    apply's problem, which blocks what the operator must do next, with the other in its message, and a round that
    meets what the last one met writes nothing. The other backends write the promotion without the ModelVersion
    (KServe: the rolled-out revision is 1.2.0's; Seldon v1: 1.2.0's predictor is there; Gateway API: routes
    only), so the write lands and only ModelVersionMissing stands."""
    w = new_world(worlds, backend, steps=(50,))
    start(w, "1.2.0")
    w.kube.hook = FailOn("apply", w.backend_resource.plural, Fault("timeout"), times=1000)
    for _ in range(6):
        w.tick(10)
        if w.status().stable_version == "1.2.0":
            break
    assert w.status().stable_version == "1.2.0" and w.kube.hook.fired
    w.delete_mv("1.2.0")
    w.heal()
    for _ in range(3):
        w.tick(10)
    assert writes_and_events_of_a_settled_round(w) == ([], []), w.trace[-4:]
    synced = synced_of(w)
    if backend == "seldonV2":
        assert (synced.status, synced.reason) == ("False", "BackendMisconfigured")
        assert "the ModelVersion for 1.2.0 is gone" in synced.message
        assert "also ModelVersionMissing: no ModelVersion of model fraud with version 1.2.0" in synced.message
    else:
        assert (synced.status, synced.reason, synced.message) == (
            "False", "ModelVersionMissing", "no ModelVersion of model fraud with version 1.2.0")


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_backend_write_refused_every_round_settles_on_one_status(worlds, backend):
    """Was: a round with no problem before its apply wrote Synced=True, then the refused write's Synced=False
    ApiError: two status writes a round for as long as the API server refuses the operator's writes (RBAC taken
    away, an admission webhook). Now the write before the apply names the problem the last round's apply met on
    the same traffic intent, and the status stays Synced=False until an apply goes through."""
    w = new_world(worlds, backend)
    start(w)
    # the rollback's write: Seldon v2 deletes the Experiment, the others rewrite their one object
    verb, plural = ("delete", "experiments") if backend == "seldonV2" else ("apply", w.backend_resource.plural)
    w.kube.hook = FailOn(verb, plural, Fault(403), times=1000)
    w.metric("candidate", "bad")
    for _ in range(3):
        w.tick(10)
    assert w.status().phase is Phase.RolledBack and w.kube.hook.fired
    assert writes_and_events_of_a_settled_round(w) == ([], []), w.trace[-4:]
    assert (synced_of(w).status, synced_of(w).reason) == ("False", "ApiError")
    w.heal()
    w.tick(10)
    assert synced_of(w).status == "True" and w.live() == {"1.0.0": 100}


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_manual_rollback_to_a_version_whose_modelversion_is_gone_is_refused_and_leaves_traffic_where_it_is(
        worlds, backend):
    """G1: a rollback the backend cannot carry (the retained version's ModelVersion deleted, its unit gone since the
    promotion) must not be persisted as done: the status would name the promoted version failed while it keeps all
    the traffic. Without its ModelVersion no backend reports the version ready, so it is refused everywhere."""
    w = new_world(worlds, backend)
    start(w)
    w.request("A", "Promote")
    w.tick(10)
    w.tick(10)
    assert w.status().stable_version == "1.1.0" and w.live() == {"1.1.0": 100}, w.trace[-4:]
    w.delete_mv("1.0.0")
    w.request("B", "Rollback")
    w.tick(10)
    s = w.status()
    assert s.phase is Phase.Stable and s.stable_version == "1.1.0" and s.failed_version is None, w.trace[-4:]
    assert "B" in s.handled_requests and "RequestIgnored" in w.events.reasons()
    assert w.live() == {"1.1.0": 100}
