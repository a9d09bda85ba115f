"""The whole decision loop on a real API server with real Prometheus data, KServe backend."""

from __future__ import annotations

import re

import pytest

from modelops.rollout.values import parse_rfc3339
from playground.controlplane import ADMIN_USER as ADMIN

from .scenario import Scenario, fast_spec

GOOD = {"error_rate": 0.0, "accuracy": 0.95}


@pytest.fixture
def scenario(control_plane, namespace, kserve, operator):
    s = Scenario(control_plane, namespace, kserve)
    yield s
    s.stop_load()


def stable_on(version):
    return lambda st: st.get("phase") == "Stable" and st.get("stableVersion") == version


def test_healthy_candidate_walks_every_step_and_is_promoted(scenario, prometheus, operator):
    scenario.version("1.0.0", **GOOD)
    scenario.version("1.1.0", **GOOD)
    scenario.serve("1.0.0", fast_spec(prometheus.url), prometheus)
    labels = {"namespace": scenario.ns, "deployment": "fraud"}
    patches_before = operator.metric("modelops_status_patches_total", **labels)
    scenario.patch({"version": "1.1.0"})
    status = scenario.wait(stable_on("1.1.0"), 90, "1.1.0 promoted")
    patches = operator.metric("modelops_status_patches_total", **labels) - patches_before
    analyses = operator.metric("modelops_analyses_total", **labels)
    transitions = 4  # started, step 1, step 2, promoted
    print(f"\nstatus patches during the rollout: {patches:.0f} for {analyses:.0f} analyses and {transitions} transitions")
    # One write per decision at most: never a second patch for the same tick.
    assert patches <= analyses + transitions
    for check in status["checks"]:  # every check measured at every analysis, and never by a failing provider
        counted = {v: operator.metric("modelops_check_verdicts_total", **labels, check=check["name"], verdict=v)
                   for v in ("Pass", "Fail", "NoData", "Error")}
        assert counted["Pass"] >= 2 and counted["Error"] == 0 and sum(counted.values()) == analyses, counted
    assert operator.metric("modelops_progress_deadline_timestamp_seconds", **labels) == 0  # none once promoted
    assert status["fallbackVersion"] == "1.0.0"
    steps = [a for a in scenario.actions() if a[1] == "1.1.0"]
    assert steps == [("RolloutStarted", "1.1.0"), ("StepAdvanced", "1.1.0"), ("StepAdvanced", "1.1.0"),
                     ("Promoted", "1.1.0")]
    print("requests by (revision, code):", dict(scenario.load.results))
    isvc = scenario.get("isvc")
    assert "canaryTrafficPercent" not in isvc["spec"]["predictor"]
    assert isvc["spec"]["predictor"]["model"]["storageUri"].endswith("/1.1.0")


def rollout_started(scenario, prometheus, candidate_behaviour, **spec_overrides):
    """1.0.0 serving under load, then spec.version -> 1.1.0; returns once 1.1.0 takes traffic."""
    scenario.version("1.0.0", **GOOD)
    scenario.version("1.1.0", **candidate_behaviour)
    scenario.serve("1.0.0", fast_spec(prometheus.url, **spec_overrides), prometheus)
    scenario.patch({"version": "1.1.0"})
    return scenario.wait(lambda st: st.get("canaryWeight", 0) > 0 or st.get("phase") == "RolledBack", 30,
                         "1.1.0 taking traffic")


def first_sample_time(prometheus, series: str) -> float:
    """When Prometheus first scraped a positive value of `series` (raw samples, not evaluations)."""
    result = prometheus.query(f"{series}[10m]")
    return min(float(t) for r in result for t, v in r["values"] if float(v) > 0)


def test_high_error_rate_is_rolled_back_within_failure_limit(scenario, prometheus):
    rollout_started(scenario, prometheus, {"error_rate": 0.3, "accuracy": 0.95})
    status = scenario.wait(lambda st: st.get("phase") == "RolledBack", 30, "rollback")
    assert status["stableVersion"] == "1.0.0" and status["failedVersion"] == "1.1.0"
    assert "errors:" in status["history"][-1]["reason"] and "Failed (2/2)" in status["history"][-1]["reason"]
    errors = next(c for c in status["checks"] if c["name"] == "errors")
    assert errors["verdict"] == "Fail" and errors["value"] > 0.05
    assert ("Promoted", "1.1.0") not in scenario.actions()
    # Seconds from the first scrape that showed a failed request to all traffic on stable.
    failed = f'kn_serving_invocation_duration_seconds_count{{k8s_namespace_name="{scenario.ns}", http_response_status_code="500"}}'
    candidate = prometheus.query(failed)[0]["metric"]["kn_revision_name"]
    breach = first_sample_time(prometheus, failed)
    back = scenario.load.wait_for_split(lambda t, split: t > breach and split and candidate not in split, 10)
    print(f"\nbreach visible in Prometheus -> 100% stable: {back - breach:.2f} s "
          "(analysis interval 1 s, scrape interval 1 s, failureLimit 2)")
    assert back - breach < 10


def test_accuracy_drop_relative_to_stable_is_rolled_back(scenario, prometheus):
    rollout_started(scenario, prometheus, {"error_rate": 0.0, "accuracy": 0.80})
    status = scenario.wait(lambda st: st.get("phase") == "RolledBack", 40, "rollback")
    accuracy = next(c for c in status["checks"] if c["name"] == "accuracy")
    assert accuracy["verdict"] == "Fail"
    assert accuracy["baseline"] == pytest.approx(0.95, abs=0.03) and accuracy["value"] == pytest.approx(0.80, abs=0.05)
    assert "below stable" in accuracy["limit"]
    assert next(c for c in status["checks"] if c["name"] == "errors")["verdict"] == "Pass"
    # What on-call sees with kubectl alone.
    table = scenario.cp.kubectl("get", "mdep", "-n", scenario.ns).stdout
    described = scenario.cp.kubectl("describe", "mdep", "fraud", "-n", scenario.ns).stdout
    print(f"\n$ kubectl get mdep\n{table}\n$ kubectl describe mdep fraud\n{described}")
    assert table.splitlines()[1].split()[:5] == ["fraud", "fraud", "1.0.0", "0", "RolledBack"]  # no canary
    for expected in (r"Phase:\s+RolledBack", r"Failed Version:\s+1\.1\.0", r"Baseline:\s+0\.9", r"Verdict:\s+Fail",
                     r"Limit:\s+>= [0-9.]+ \(at most 5% below stable", r"Warning\s+AnalysisFailed",
                     r"Warning\s+RolledBack\s.*accuracy"):
        assert re.search(expected, described), expected


def test_no_data_holds_then_fails_after_its_bound(scenario, prometheus):
    rollout_started(scenario, prometheus, {"error_rate": 0.0, "accuracy": 0.95, "accuracy_metrics": False},
                    strategy={"steps": [{"weight": 20, "pause": "1s"}, {"weight": 50, "pause": "1s"}]},
                    analysis={"noDataLimit": 4})
    held = scenario.wait(lambda st: st.get("consecutiveNoData", 0) >= 2, 30, "holding without data")
    assert held["phase"] == "Progressing" and held["canaryWeight"] == 20  # held: not advanced, not failed
    accuracy = next(c for c in held["checks"] if c["name"] == "accuracy")
    assert accuracy["verdict"] == "NoData"
    status = scenario.wait(lambda st: st.get("phase") == "RolledBack", 30, "rollback after the no-data bound")
    assert "inconclusive" in status["history"][-1]["reason"]
    assert [a for a in scenario.actions() if a == ("StepAdvanced", "1.1.0")] == [("StepAdvanced", "1.1.0")]


def test_prometheus_down_never_promotes(scenario, prometheus):
    from playground.processes import free_port

    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    rollout_started(scenario, prometheus, GOOD,
                    strategy={"steps": [{"weight": 20, "pause": "1s"}]}, analysis={"noDataLimit": 5})
    provider = scenario.provider(dead)
    scenario.patch({"analysis": {"provider": provider}})
    status = scenario.wait(lambda st: st.get("phase") == "RolledBack", 40, "rollback after errors")
    assert ("Promoted", "1.1.0") not in scenario.actions()
    errors = [c for c in status["checks"] if c["verdict"] == "Error"]
    assert errors and all(f"could not measure: provider {provider}: unreachable" in c["message"] for c in errors)


PATIENT = {"strategy": {"steps": [{"weight": 20, "pause": "1h"}, {"weight": 50, "pause": "1h"}]}}


def test_pause_and_resume(scenario, prometheus):
    rollout_started(scenario, prometheus, GOOD,
                    strategy={"steps": [{"weight": 20, "pause": "3s"}, {"weight": 50, "pause": "1s"}]})
    scenario.patch({"paused": True})
    paused = scenario.wait(lambda st: st.get("phase") == "Paused" and "lastAnalysisAt" in st, 15, "paused")
    since = paused["lastAnalysisAt"]
    later = scenario.wait(lambda st: st["lastAnalysisAt"] > since and st.get("consecutiveFailures") == 0
                          and st.get("lastOutcome") == "Passed", 10, "analyses while paused")
    scenario.wait(lambda st: st["lastAnalysisAt"] > later["lastAnalysisAt"], 10, "more analyses")
    assert scenario.status()["canaryWeight"] == 20  # 3 s pause long over, analysis passing: still held
    scenario.patch({"paused": False})
    scenario.wait(stable_on("1.1.0"), 30, "promoted after resume")
    actions = [a for a, _ in scenario.actions()]
    assert actions.count("Paused") == 1 and actions.count("Resumed") == 1


def test_manual_promote(scenario, prometheus, operator):
    started = rollout_started(scenario, prometheus, GOOD, **PATIENT)
    deadline = operator.metric("modelops_progress_deadline_timestamp_seconds", namespace=scenario.ns, deployment="fraud")
    assert deadline > parse_rfc3339(started["stepStartedAt"]).timestamp()  # a rollout in a step has a deadline
    scenario.patch({"request": {"id": "p1", "action": "Promote", "reason": "validated offline", "actor": ADMIN}})
    status = scenario.wait(stable_on("1.1.0"), 15, "promoted by hand")
    entry = status["history"][-1]
    assert (entry["action"], entry["actor"]) == ("Promoted", ADMIN) and "validated offline" in entry["reason"]
    assert status["handledRequests"] == ["p1"]


def test_manual_abort(scenario, prometheus):
    rollout_started(scenario, prometheus, GOOD, **PATIENT)
    scenario.patch({"request": {"id": "a1", "action": "Abort", "reason": "wrong feature set", "actor": ADMIN}})
    status = scenario.wait(lambda st: st.get("phase") == "RolledBack", 15, "aborted")
    assert status["history"][-1]["action"] == "Aborted"
    # The backend is back on stable: its artifact restored and all traffic on one revision of it.
    scenario.wait(lambda st: on_stable_artifact(scenario.get("isvc"), "1.0.0"), 20, "InferenceService back on stable")


def on_stable_artifact(isvc, version):
    predictor = isvc["spec"]["predictor"]
    traffic = isvc["status"]["components"]["predictor"]["traffic"]
    return predictor["model"]["storageUri"].endswith(f"/{version}") and [t["percent"] for t in traffic] == [100]


def test_pinned_weight(scenario, prometheus):
    rollout_started(scenario, prometheus, GOOD, **PATIENT)
    scenario.patch({"trafficOverride": {"weight": 35, "reason": "load test"}})
    status = scenario.wait(lambda st: st.get("canaryWeight") == 35, 15, "pinned")
    assert status["phase"] == "Paused" and "weight pinned at 35%: load test" in status["history"][-1]["reason"]
    scenario.wait(lambda st: scenario.get("isvc")["spec"]["predictor"].get("canaryTrafficPercent") == 35, 10,
                  "pinned weight on the InferenceService")
    scenario.patch({"trafficOverride": None})
    scenario.wait(lambda st: st.get("canaryWeight") == 20 and st.get("phase") == "Progressing", 15, "unpinned")


def test_out_of_band_weight_change_is_reported_and_restored(scenario, prometheus):
    rollout_started(scenario, prometheus, GOOD, **PATIENT)
    scenario.cp.kubectl("patch", "isvc", "fraud", "-n", scenario.ns, "--type", "merge",
                        "-p", '{"spec": {"predictor": {"canaryTrafficPercent": 70}}}')
    scenario.wait(lambda st: "OutOfBandChange" in scenario.events(), 15, "out-of-band change reported")
    scenario.wait(lambda st: scenario.get("isvc")["spec"]["predictor"].get("canaryTrafficPercent") == 20, 10,
                  "weight restored")


def test_operator_killed_mid_rollout_resumes_without_skipping_or_repeating(scenario, prometheus, operator):
    # A low noDataLimit: a restarted operator that analysed before it had read the ClusterMetricProvider
    # and the namespace's labels would count Error verdicts and roll a healthy candidate back.
    rollout_started(scenario, prometheus, GOOD,
                    strategy={"steps": [{"weight": 20, "pause": "2s"}, {"weight": 40, "pause": "2s"},
                                        {"weight": 60, "pause": "2s"}]}, analysis={"noDataLimit": 2})
    scenario.wait(lambda st: st.get("currentStep") == 1, 30, "second step")
    operator.kill()  # SIGKILL: no cleanup, no goodbye
    operator.start()
    status = scenario.wait(lambda st: st.get("phase") in ("Stable", "RolledBack"), 60, "the rollout's end after the restart")
    assert stable_on("1.1.0")(status), status.get("message")
    steps = [h["reason"] for h in scenario.status()["history"] if h["action"] == "StepAdvanced"]
    assert steps == ["step 1/3 at 20%", "step 2/3 at 40%", "step 3/3 at 60%"]


def test_deleting_the_deployment_leaves_the_backend_on_stable(scenario, prometheus):
    rollout_started(scenario, prometheus, GOOD, **PATIENT)
    # The operator created the InferenceService, but owns none of it: no ownerReferences, so Argo CD shows it as
    # its own resource (or none) and deleting the ModelDeployment never cascades to the model's serving.
    assert "ownerReferences" not in scenario.get("isvc")["metadata"]
    scenario.cp.kubectl("delete", "mdep", "fraud", "-n", scenario.ns, "--timeout", "30s")
    isvc = scenario.get("isvc")
    # Stable's artifact, and none of the traffic on the candidate's revision: 0 % while stable's revision starts,
    # then (the release retries until it is so) no canaryTrafficPercent, all traffic on that latest revision.
    assert isvc["spec"]["predictor"]["model"]["storageUri"].endswith("/1.0.0")
    assert isvc["spec"]["predictor"].get("canaryTrafficPercent", 0) == 0


def test_kubectl_plugin_actions_are_recorded_with_the_user(scenario, prometheus):
    import os
    import subprocess
    import sys
    from pathlib import Path

    rollout_started(scenario, prometheus, GOOD, **PATIENT)
    env = {**os.environ, "KUBECONFIG": str(scenario.cp.kubeconfig),
           "PATH": f"{scenario.cp.bin}{os.pathsep}{os.environ['PATH']}"}
    plugin = Path(sys.executable).with_name("kubectl-modelops")
    subprocess.run([str(plugin), "pause", "fraud", "-n", scenario.ns], env=env, check=True)  # -n after, as kubectl
    scenario.wait(lambda st: st.get("phase") == "Paused", 10, "paused by the plugin")
    subprocess.run([str(plugin), "-n", scenario.ns, "promote", "fraud", "--reason", "canary looks fine"],
                   env=env, check=True)
    status = scenario.wait(stable_on("1.1.0"), 15, "promoted by the plugin")
    last = status["history"][-1]
    assert (last["action"], last["actor"]) == ("Promoted", ADMIN)
    assert "canary looks fine" in last["reason"]


def test_a_second_model_version_claiming_a_version_is_refused_and_never_served(scenario, prometheus):
    rollout_started(scenario, prometheus, GOOD, **PATIENT)
    impostor = {"apiVersion": "modelops.io/v1alpha1", "kind": "ModelVersion",
                "metadata": {"name": "fraud-1-1-0-retrained", "namespace": scenario.ns},
                "spec": {"model": "fraud", "version": "1.1.0",
                         "artifact": {"uri": "s3://models/fraud/elsewhere/1.1.0", "digest": "sha256:" + "1" * 64,
                                      "format": "sklearn"}}}
    scenario.cp.apply(impostor)
    scenario.wait(lambda st: scenario.get("mv", "fraud-1-1-0-retrained").get("status", {}).get("phase") == "Invalid",
                  15, "duplicate refused")
    ready = next(c for c in scenario.get("mv", "fraud-1-1-0-retrained")["status"]["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "DuplicateVersion" and "fraud-1-1-0" in ready["message"]
    original = scenario.get("mv", "fraud-1-1-0")["status"]
    assert (original["phase"], original["servedBy"]) == ("Serving", [{"deployment": "fraud", "role": "canary"}])
    # A round of the deployment after the impostor was seen, then one after the original is deleted:
    # the candidate whose ModelVersion is gone is rolled back, and the impostor's artifact never serves.
    scenario.patch({"paused": True})
    scenario.wait(lambda st: st.get("phase") == "Paused", 10, "paused")
    assert scenario.get("isvc")["spec"]["predictor"]["model"]["storageUri"].endswith(f"/{scenario.ns}/1.1.0")
    scenario.cp.kubectl("delete", "mv", "fraud-1-1-0", "-n", scenario.ns)
    status = scenario.wait(lambda st: st.get("phase") == "RolledBack", 15, "candidate without its ModelVersion")
    assert "ModelVersion is gone" in status["history"][-1]["reason"]
    scenario.wait(lambda st: on_stable_artifact(scenario.get("isvc"), "1.0.0"), 20, "InferenceService back on stable")
    assert "elsewhere" not in scenario.get("isvc")["spec"]["predictor"]["model"]["storageUri"]


def test_a_sequential_latency_check_rolls_back_a_candidate_proven_slower(scenario, prometheus):
    """The histograms of both revisions since the candidate began serving, compared through the operator: 1.1.0
    answers in 60 ms against stable's 5 ms."""
    sequential = {"name": "latency-vs-stable", "template": "latencyP95", "maxIncreasePercent": 10,
                  "sequential": {"confidence": 0.95}, "noData": "Pass"}
    rollout_started(scenario, prometheus, {**GOOD, "latency": 0.06},
                    strategy={"steps": [{"weight": 20, "pause": "1h"}]},
                    analysis={"checks": [sequential]})
    status = scenario.wait(lambda st: st.get("phase") == "RolledBack", 40, "rollback on the latency evidence")
    judged = next(c for c in status["checks"] if c["name"] == "latency-vs-stable")
    assert judged["verdict"] == "Fail", judged
    assert "of the candidate's requests vs" in judged["message"] and "the bucket bound nearest stable's p95" in judged["message"]
    assert "95% confidence" in judged["message"]
    assert judged["limit"] == "at most 10% above stable; sequential test, 95% confidence"
    assert "latency-vs-stable" in status["history"][-1]["reason"]
