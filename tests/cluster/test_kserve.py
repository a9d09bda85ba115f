"""KServe's real controller (playground/kserve_controller.py, its manager v0.20.0) on a real single-node
cluster, and the operator driving Standard-mode rollouts there.

One cluster for the module (`cluster`): control plane, node, KServe with its webhooks, the modelops CRDs,
the serving runtime, a Prometheus on loopback and the operator as a host process (as its RBAC user); each
test runs in a namespace of its own. The start-up time is printed.

The data path. No Gateway implementation runs: `GatewayStandIn` (model_pods.py) plays one. It reads the
HTTPRoute the operator drives and the predictor Services' EndpointSlices (made by the real EndpointSlice
controller from KServe's Deployments' ready pods), writes the route's Accepted/ResolvedRefs verdict, and
publishes the route's weights as the split a `LoadGenerator` follows, each Service's share sent to one of
its ready pods by pod IP over the node's bridge (a share the Gateway would answer itself, such as a Service
without a ready pod's, counts as lost), and exports its count of answers per backend Service and status code
(`gateway_backend_requests_total`, as Gateway implementations export one) for the checks, whose `{{revision}}`
is a version's predictor Service.

The model servers are real: the runtime is the demo's KServe Python ModelServer (demo/model_server.py, the
image of demo/Dockerfile, imported into the node), and KServe's storage initializer step copies the version's
model, one the demo trained into the image (demo/models.py): modelops://echo/1.0.0 and /3.0.0 are good, /2.0.0
is the demo's bad release, whose predict raises on the bright digit every request of the load carries, so
KServe answers 500.

What ran against the real controller (asserted on objects: route weights, Deployments, ReplicaSets, HPAs,
InferenceService spec and status, ModelDeployment status; never on logs):
- an InferenceService made Ready in Standard mode, its pod answering KServe's v1 protocol;
- a rollout to promotion, stable with a user's minReplicas 2: per step KServe's Deployments' replica counts
  and HPA minimums (printed) and the route's weights; promotion as KServe documents it (predictor.name the
  canary's, the entry removed), stable's Deployment then the canary's, scaled to stable's minimum and
  serving the new version, the old stable's Deployment and Service deleted, no pod template changed.
  KServe leaves the old stable's HorizontalPodAutoscaler behind: reconcileCanaryDeployments
  (pkg/controller/v1beta1/inferenceservice/components/predictor.go) deletes orphaned predictor Deployments
  and Services only, and the HPA, owned by the InferenceService, is not garbage-collected with the
  Deployment it scales; the test asserts it is still there after the promotion;
- an automatic rollback: the candidate answers 500, the check fails, the route goes all to stable, the
  canary entry goes (and KServe deletes its Deployment), status RolledBack with failedVersion, no request
  reaches the candidate afterwards and none is lost;
- a pin (spec.trafficOverride) holding the route at the pinned weight, KServe's canary Deployment and
  Service staying, and an Abort removing them;
- a pause holding its step past the step's own pause, and GitOps re-applies mid-rollout (the ModelDeployment's
  Git manifest and the user's InferenceService, which has no spec.canary; client-side, then server-side as
  Argo CD's manager with --force-conflicts): the canary entry (still the operator's alone in managedFields),
  the bookkeeping annotations, the route and the status stay, no pod restarts; resumed, it is promoted. The
  same InferenceService manifest re-applied after the promotion reverts the predictor's model under its new
  name; the operator writes 1.1.0's back and the Deployment ends serving it;
- a drill after a promotion: the fallback a canary entry (0 %, then 100 % once KServe reports it ready), the
  route all on its Service only while the entry exists, then back on stable and the entry gone (KServe
  deletes the fallback's Deployment), stable's pods untouched, no request lost; lastDrill Completed with its
  timings, its requestsLost not claimed (no request metrics in Standard mode).
- a rollback to a warm version (spec.keepWarm: 1.0.0 kept as KServe's 0 % canary entry after the promotion):
  the route moves to its running pods and the old stable becomes the warm entry, no pod started, none
  lost; beside it the same rollback cold, whose Deployment KServe starts first (both timed, printed).
- the ModelDeployment deleted mid-rollout: the route all on stable, then the entry removed;
- a fault of the controller: KServe's manager killed mid-rollout with its webhooks registered, so every
  InferenceService write is refused; a failing candidate's rollback still takes the route all to stable at
  once, Synced False names the webhook, and the entry goes once KServe is back (none lost).
Not run here: other faults (they run in the fault simulation); serverless mode (no Knative) runs against the stand-in only.

Divergences from the stand-in (playground/standin_backends.py), found here:
- KServe's defaulting webhook re-encodes the InferenceService from its Go structs: every model, a
  spec.canary[] entry's too, comes back with `name: ""` and `resources: {}`. The operator compared the
  atomic canary list whole, saw its own entry as not applied every round, and never saw a step carried: a
  rollout held its first step forever. Fixed (kube.round_tripped).
- KServe copies the InferenceService's annotations into every predictor's pod template
  (predictor.go buildObjectMeta; reconcilers/deployment/deployment_reconciler.go): the operator's
  bookkeeping writes restarted stable's pods after creation (version-models rewritten as round-tripped,
  now fixed) and at each rollout's start. The cluster lists them in serviceAnnotationDisallowedList
  (playground/kserve_controller.py), as docs/backends/kserve.md asks of real clusters; the tests assert one pod
  template per Deployment and no request lost.
- KServe's status.observedGeneration in Standard mode is stable's Deployment's generation, not the
  InferenceService's (PropagateRawStatus); the simulation's KServe (tests/sim/fakes.py) wrote the
  InferenceService's. The operator gated stable's readiness on it, so after a promotion stable never read as
  ready again (Ready False for good, drills refused). Fixed: the gate is status.address naming stable's predictor Service.
- The stand-in makes no Deployments: KServe gives every predictor, canaries too, an HPA whose minimum is
  its replica count; a user's minReplicas on stable is lowered on its HPA by the canary's pods (never below
  1), and its Deployment keeps its pods or goes to that minimum as the HPA controller decides (both seen
  without metrics); and the HPA left behind.

Needs root (the node) and builds KServe's manager on first use (~9 minutes on two cores).
Deselect with `-m "not kserve"`.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from playground.controlplane import ControlPlane
from playground.loadgen import LoadGenerator

from .model_pods import (GATEWAY_ANSWERS, Cluster, GatewayStandIn, analysis, echo_version, errors_check, find,
                         http_route, model_status, namespace, operator_cluster, wait_status)
from .test_node import get, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.node, pytest.mark.kserve]

# The artifacts are the demo's models (demo/models.py), trained into the model server's image at build time, one
# folder per demo version: modelops://echo/1.0.0 and /3.0.0 are good, /2.0.0 is the bad release, whose predict raises
# on bright inputs (SlowAndBrittle), so KServe answers 500 to every request of the load, each a bright digit.
GOOD, BETTER, BAD = "1.0.0", "3.0.0", "2.0.0"
BODY = json.dumps({"instances": [[8.0] * 64]}).encode()
# KServe's Python server counts no answers by status code: the check reads the Gateway's count per backend.
ANALYSIS = analysis(errors_check(GATEWAY_ANSWERS))
# The storage initializer KServe runs for a modelops:// URI: the version's model, copied from the image's folder.
COPY_ARTIFACT = ("import shutil, sys; uri, folder = sys.argv[1:]; "
                 "shutil.copy('/opt/models/' + uri.rsplit('/', 1)[1] + '/model.joblib', folder)")


def runtime(image: str) -> dict:
    """KServe's Python ModelServer with the demo's model (demo/model_server.py, the image's own command: the model
    named `model`, port 8080) as the runtime of the model format `modelops-echo`."""
    return {
        "apiVersion": "serving.kserve.io/v1alpha1", "kind": "ClusterServingRuntime",
        "metadata": {"name": "modelops-echo"},
        "spec": {
            "supportedModelFormats": [{"name": "modelops-echo", "autoSelect": True}],
            "protocolVersions": ["v1"],
            "containers": [{
                "name": "kserve-container", "image": image, "imagePullPolicy": "Never",
                "env": [{"name": "ISVC_NAME", "value": "{{.Name}}"}],  # KServe's placeholder (asserted filled in)
                "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                "readinessProbe": {"httpGet": {"path": "/v1/models/model", "port": 8080}, "periodSeconds": 1},
            }],
        },
    }


def storage(image: str) -> dict:
    return {
        "apiVersion": "serving.kserve.io/v1alpha1", "kind": "ClusterStorageContainer",
        "metadata": {"name": "modelops-models"},
        "spec": {"workloadType": "initContainer", "supportedUriFormats": [{"prefix": "modelops://"}],
                 "container": {"name": "storage-initializer", "image": image, "imagePullPolicy": "Never",
                               "command": ["python", "-c", COPY_ARTIFACT]}},
    }


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, model_server):
    """Control plane, node (the model server's image imported), KServe, the modelops CRDs and RBAC, the runtime,
    Prometheus and the operator: started once for the module (model_pods.operator_cluster)."""
    with operator_cluster(tmp_path_factory.mktemp("kserve-cluster"), kserve=True, images=[model_server],
                          objects=[runtime(model_server), storage(model_server)]) as cluster:
        yield cluster


@pytest.fixture
def ns(cluster) -> str:
    with namespace(cluster.plane, "kserve") as name:
        yield name


def condition(obj: dict, kind: str) -> str | None:
    return next((c["status"] for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == kind), None)


def weights(plane: ControlPlane, ns: str) -> dict[str, int]:
    [rule] = find(plane, ns, "httproute", "echo-route")["spec"]["rules"]
    return {r["name"]: r.get("weight", 1) for r in rule["backendRefs"]}


def replicas(plane: ControlPlane, ns: str) -> dict[str, tuple[int, int]]:
    """Deployment -> (spec.replicas, status.readyReplicas), of the InferenceService's predictors."""
    items = get(plane, "deployments", "-n", ns, "-l", "serving.kserve.io/inferenceservice=echo")["items"]
    return {d["metadata"]["name"]: (d["spec"].get("replicas"), (d.get("status") or {}).get("readyReplicas", 0))
            for d in items}


def hpas(plane: ControlPlane, ns: str) -> dict[str, int]:
    """HorizontalPodAutoscaler -> its minReplicas."""
    return {h["metadata"]["name"]: h["spec"].get("minReplicas", 1) for h in get(plane, "hpa", "-n", ns)["items"]}


def pod_templates(plane: ControlPlane, ns: str, deployment: str) -> int:
    """How many pod templates (ReplicaSets) the Deployment has had: each change of it restarts its pods."""
    return len(get(plane, "replicasets", "-n", ns, "-l", f"app=isvc.{deployment}")["items"])


def test_kserve_makes_an_inference_service_ready_in_standard_mode_with_its_pod_answering(cluster, ns,
                                                                                        model_server):
    plane = cluster.plane
    plane.apply({
        "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "metadata": {"name": "echo", "namespace": ns},
        "spec": {"predictor": {"model": {"modelFormat": {"name": "modelops-echo"}, "storageUri": "modelops://echo/1.0.0"}}},
    })
    isvc = wait_for(plane, "Ready InferenceService", lambda: (
        lambda i: i if i and condition(i, "Ready") == "True" else None)(find(plane, ns, "inferenceservice", "echo")), 120)

    # KServe's defaulting webhook ran (the mode comes from its ConfigMap), and its controller chose the runtime.
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
    assert isvc["status"]["deploymentMode"] == "Standard"
    assert isvc["status"]["clusterServingRuntimeName"] == "modelops-echo"
    conditions = {c["type"]: c["status"] for c in isvc["status"]["conditions"]}
    assert conditions.items() >= {"PredictorReady": "True", "IngressReady": "True", "Ready": "True"}.items()
    assert isvc["status"]["modelStatus"]["transitionStatus"] == "UpToDate"
    assert isvc["status"]["address"]["url"] == f"http://echo-predictor.{ns}.svc.cluster.local"

    deployment = find(plane, ns, "deployment", "echo-predictor")
    assert deployment["metadata"]["ownerReferences"][0]["uid"] == isvc["metadata"]["uid"]
    assert deployment["status"]["availableReplicas"] == 1
    assert find(plane, ns, "service", "echo-predictor")["spec"]["selector"] == {"app": "isvc.echo-predictor"}

    [pod] = [p for p in get(plane, "pods", "-n", ns, "-l", "app=isvc.echo-predictor")["items"]
             if p["status"].get("phase") == "Running"]
    [container] = pod["spec"]["containers"]
    assert container["name"] == "kserve-container" and container["image"] == model_server
    assert {"name": "ISVC_NAME", "value": "echo"} in container["env"]  # KServe filled in its placeholder
    # The pod webhook added the model's fetch, from the ClusterStorageContainer that claims the URI.
    [fetch] = pod["spec"]["initContainers"]
    assert fetch["name"] == "storage-initializer" and fetch["args"] == ["modelops://echo/1.0.0", "/mnt/models"]
    # The demo's model answers KServe's v1 protocol: a digit class per instance.
    request = urllib.request.Request(f"http://{pod['status']['podIP']}:8080/v1/models/model:predict",
                                     data=json.dumps({"instances": [[0.0] * 64, [8.0] * 64]}).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=10) as reply:
        predictions = json.load(reply)["predictions"]
    assert len(predictions) == 2 and all(p in range(10) for p in predictions), predictions


def deployment(ns: str, steps: list[dict], **spec) -> dict:
    return {"apiVersion": "modelops.io/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": "echo", "namespace": ns},
            "spec": {"model": "echo", "version": "1.0.0",
                     "serving": {"backend": "kserve", "kserve": {"httpRoute": {"name": "echo-route"}}},
                     "strategy": {"steps": steps},
                     "analysis": ANALYSIS, **spec}}


@contextlib.contextmanager
def serving(cluster: Cluster, ns: str, steps: list[dict], candidate_folder: str = BETTER, rps: float = 20,
            isvc: dict | None = None, **spec):
    """Versions 1.0.0 (artifact GOOD) and 1.1.0 (`candidate_folder`), the route, the ModelDeployment on 1.0.0 (with
    `spec` added), the Gateway and load on it; yields the load generator once 1.0.0 is Stable and answering through
    the route. The operator creates the InferenceService, unless the user's (`isvc`) is applied first."""
    plane = cluster.plane
    plane.apply({"apiVersion": "v1", "kind": "List", "items": [
        http_route(ns, "echo-route", "echo-predictor"), echo_version(ns, "1.0.0", GOOD),
        echo_version(ns, "1.1.0", candidate_folder), *([isvc] if isvc else [])]})
    gateway = GatewayStandIn(cluster, ns, "echo-route")
    load = LoadGenerator(gateway.split_file, rps, body=BODY)
    gateway.export(load.results)
    gateway.start()
    try:
        plane.apply(deployment(ns, steps, **spec))
        # Stable from the first round on; Ready once stable serves (KServe's predictor ready, its pod on the route).
        wait_status(plane, ns, "ModelDeployment Stable on 1.0.0 and serving", lambda st: st.get("phase") == "Stable"
                    and st.get("stableVersion") == "1.0.0" and condition({"status": st}, "Ready") == "True", 120)
        gateway.wait_programmed()
        load.start()
        wait_for(plane, "answers from stable through the route", lambda: load.results[("echo-predictor", 200)] > 5, 30)
        yield load
    finally:
        load.stop()
        gateway.stop()


def start_rollout(plane: ControlPlane, ns: str) -> None:
    plane.kubectl("patch", "modeldeployment", "echo", "-n", ns, "--type=merge",
                  "-p", json.dumps({"spec": {"version": "1.1.0"}}))


def at_step(plane: ControlPlane, ns: str, weight: int) -> dict:
    """The state once the step of `weight` is on the route: printed, and returned."""
    wait_status(plane, ns, f"the {weight} % step", lambda st: st.get("canaryWeight") == weight, 120)
    route_now = wait_for(plane, f"the {weight} % step on the route", lambda: (
        lambda w: w if w == {"echo-predictor": 100 - weight, "echo-v1-1-0-predictor": weight} else None)(
        weights(plane, ns)), 30)
    isvc = find(plane, ns, "inferenceservice", "echo")
    deployments = replicas(plane, ns)
    autoscalers = hpas(plane, ns)
    print(f"step {weight} %: Deployments (replicas, ready) {deployments}, HPA minReplicas {autoscalers}, "
          f"route {route_now}, KServe canaryStatuses {isvc['status'].get('canaryStatuses')}")
    return {"isvc": isvc, "replicas": deployments, "hpas": autoscalers}


def test_a_rollout_is_promoted_as_kserve_documents_it_with_kserves_replica_sizing_per_step(cluster, ns):
    plane = cluster.plane
    with serving(cluster, ns, [{"weight": 20, "pause": "4s"}, {"weight": 50, "pause": "4s"}]) as load:
        # A user's minReplicas on stable (a field the operator does not own): KServe sizes the canary from it.
        plane.kubectl("patch", "inferenceservice", "echo", "-n", ns, "--type=merge",
                      "-p", json.dumps({"spec": {"predictor": {"minReplicas": 2}}}))
        wait_for(plane, "stable's two ready pods", lambda: replicas(plane, ns).get("echo-predictor") == (2, 2), 60)
        print(f"\nstable: Deployments (replicas, ready) {replicas(plane, ns)}, route {weights(plane, ns)}")
        start_rollout(plane, ns)

        step = at_step(plane, ns, 20)
        [canary] = step["isvc"]["spec"]["canary"]
        assert canary["predictor"]["name"] == "v1-1-0" and canary["trafficPercent"] == 20
        assert canary["predictor"]["model"]["storageUri"] == "modelops://echo/3.0.0"
        assert find(plane, ns, "service", "echo-v1-1-0-predictor")["spec"]["selector"] == \
            {"app": "isvc.echo-v1-1-0-predictor"}  # its own pods
        # ceil(2 x 20 / 100) = 1 canary pod, its HPA's minimum. Stable's HPA minimum drops to 2 - 1; whether its
        # Deployment keeps 2 pods or goes to that minimum is the HPA controller's (without metrics, both were seen).
        assert step["replicas"]["echo-v1-1-0-predictor"] == (1, 1)
        assert step["hpas"] == {"echo-predictor": 1, "echo-v1-1-0-predictor": 1}
        assert step["replicas"]["echo-predictor"] in ((1, 1), (2, 2))
        step = at_step(plane, ns, 50)
        assert step["replicas"]["echo-v1-1-0-predictor"] == (1, 1)  # ceil(2 x 50 / 100)
        # Neither the canary entry nor the operator's bookkeeping (kept out of the pods by the ConfigMap, see
        # playground/kserve_controller.py) changed stable's pods.
        assert pod_templates(plane, ns, "echo-predictor") == 1

        promoted = wait_status(plane, ns, "promotion of 1.1.0",
                               lambda st: st.get("phase") == "Stable" and st.get("stableVersion") == "1.1.0", 120)
        isvc = wait_for(plane, "KServe's promotion as the operator wrote it", lambda: (
            lambda i: i if i["spec"]["predictor"].get("name") == "v1-1-0" and not i["spec"].get("canary") else None)(
            find(plane, ns, "inferenceservice", "echo")), 30)
        assert isvc["spec"]["predictor"]["model"]["storageUri"] == "modelops://echo/3.0.0"
        wait_for(plane, "the route all on the promoted Deployment's Service",
                 lambda: weights(plane, ns) == {"echo-v1-1-0-predictor": 100}, 30)
        wait_for(plane, "KServe deleting the old stable's Deployment",
                 lambda: set(replicas(plane, ns)) == {"echo-v1-1-0-predictor"}, 60)
        assert find(plane, ns, "service", "echo-predictor") is None
        # The promoted Deployment gets stable's HPA (minReplicas 2) and scales up; the old stable's HPA outlives its
        # Deployment (see the module docstring).
        wait_for(plane, "the promoted Deployment at stable's minReplicas",
                 lambda: replicas(plane, ns).get("echo-v1-1-0-predictor") == (2, 2), 60)
        autoscalers = hpas(plane, ns)
        print(f"promoted: phase {promoted['phase']}, Deployments (replicas, ready) {replicas(plane, ns)}, "
              f"HPA minReplicas {autoscalers}, route {weights(plane, ns)}")
        assert autoscalers == {"echo-predictor": 1, "echo-v1-1-0-predictor": 2}

        # The stable Deployment now serves the new version, through the route.
        before = load.results[("echo-v1-1-0-predictor", 200)]
        wait_for(plane, "answers of the promoted version", lambda: load.results[("echo-v1-1-0-predictor", 200)] > before + 5, 30)
        print(f"promoted Deployment's pod templates: {pod_templates(plane, ns, 'echo-v1-1-0-predictor')}")
        pods = wait_for(plane, "the promoted Deployment's two pods, none terminating", lambda: (
            lambda running: running if len(running) == 2 else None)(
            [p for p in get(plane, "pods", "-n", ns, "-l", "app=isvc.echo-v1-1-0-predictor")["items"]
             if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")]), 60)
        for pod in pods:
            assert serves(pod) == f"modelops://echo/{BETTER}", pod["metadata"]["name"]
        # KServe deleted the old stable's Service only once the Gateway routed by a route without it: none lost.
        assert load.lost == [], load.lost


def test_a_failing_candidate_is_rolled_back_automatically_and_gets_no_request_afterwards(cluster, ns):
    plane = cluster.plane
    with serving(cluster, ns, [{"weight": 20, "pause": "1h"}], candidate_folder=BAD) as load:
        start_rollout(plane, ns)
        at_step(plane, ns, 20)
        rolled = wait_status(plane, ns, "the automatic rollback", lambda st: st.get("phase") == "RolledBack", 120)
        assert rolled["failedVersion"] == "1.1.0" and rolled["stableVersion"] == "1.0.0"
        assert load.results[("echo-v1-1-0-predictor", 500)] >= 5  # what the check saw
        wait_for(plane, "the route all on stable", lambda: weights(plane, ns) == {"echo-predictor": 100}, 30)
        wait_for(plane, "the canary entry gone",
                 lambda: not find(plane, ns, "inferenceservice", "echo")["spec"].get("canary"), 30)
        time.sleep(1)  # the Gateway's next read (0.3 s) and the load generator's (0.1 s), with margin
        after_rollback = load.results[("echo-v1-1-0-predictor", 500)]
        stable_before = load.results[("echo-predictor", 200)]
        wait_for(plane, "KServe deleting the canary's Deployment",
                 lambda: "echo-v1-1-0-predictor" not in replicas(plane, ns), 60)
        wait_for(plane, "more answers from stable", lambda: load.results[("echo-predictor", 200)] > stable_before + 20, 30)
        print(f"rolled back: phase {rolled['phase']}, failedVersion {rolled['failedVersion']}, Deployments "
              f"{replicas(plane, ns)}, route {weights(plane, ns)}, answers {dict(load.results)}")
        assert load.results[("echo-v1-1-0-predictor", 500)] == after_rollback
        assert not any(unit == "echo-v1-1-0-predictor" and code == 200 for unit, code in load.results)
        assert load.lost == []  # every request answered: stable's pods were never restarted under the load


def test_a_pinned_weight_holds_the_route_while_kserves_canary_stays_and_an_abort_removes_it(cluster, ns):
    plane = cluster.plane
    with serving(cluster, ns, [{"weight": 10, "pause": "1h"}]) as load:
        start_rollout(plane, ns)
        at_step(plane, ns, 10)
        plane.kubectl("patch", "modeldeployment", "echo", "-n", ns, "--type=merge", "-p", json.dumps(
            {"spec": {"trafficOverride": {"weight": 30, "reason": "cluster test"}}}))
        wait_status(plane, ns, "the pin", lambda st: st.get("pinnedWeight") == 30, 30)
        wait_for(plane, "the pinned weight on the route",
                 lambda: weights(plane, ns) == {"echo-predictor": 70, "echo-v1-1-0-predictor": 30}, 30)
        held_since = time.monotonic()
        while time.monotonic() - held_since < 6:  # several analysis intervals: the pin holds
            assert weights(plane, ns) == {"echo-predictor": 70, "echo-v1-1-0-predictor": 30}
            time.sleep(1)
        [canary] = find(plane, ns, "inferenceservice", "echo")["spec"]["canary"]
        assert canary["predictor"]["name"] == "v1-1-0" and canary["trafficPercent"] == 30
        assert replicas(plane, ns)["echo-v1-1-0-predictor"][1] >= 1
        assert find(plane, ns, "service", "echo-v1-1-0-predictor") is not None
        assert model_status(plane, ns)["canaryVersion"] == "1.1.0"
        assert load.results[("echo-v1-1-0-predictor", 200)] > 0
        print(f"pinned 30 %: Deployments (replicas, ready) {replicas(plane, ns)}, route {weights(plane, ns)}")

        plane.kubectl("patch", "modeldeployment", "echo", "-n", ns, "--type=merge", "-p", json.dumps(
            {"spec": {"trafficOverride": None,
                      "request": {"id": "abort-1", "action": "Abort", "reason": "cluster test", "actor": "tester"}}}))
        wait_for(plane, "the route all on stable", lambda: weights(plane, ns) == {"echo-predictor": 100}, 60)
        wait_for(plane, "the canary entry gone",
                 lambda: not find(plane, ns, "inferenceservice", "echo")["spec"].get("canary"), 30)
        wait_for(plane, "KServe deleting the canary's Deployment",
                 lambda: "echo-v1-1-0-predictor" not in replicas(plane, ns), 60)
        aborted = model_status(plane, ns)
        assert aborted["stableVersion"] == "1.0.0" and not aborted.get("canaryWeight")
        assert find(plane, ns, "service", "echo-v1-1-0-predictor") is None


PLUGIN = Path(sys.executable).with_name("kubectl-modelops")


def modelops(plane: ControlPlane, ns: str, *args: str) -> None:
    """`kubectl modelops ARGS` in the namespace, as the cluster's admin."""
    env = {**os.environ, "KUBECONFIG": str(plane.kubeconfig), "PATH": f"{plane.bin}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run([str(PLUGIN), "-n", ns, *args], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def user_isvc(ns: str) -> dict:
    """The InferenceService as the user's Git holds it: 1.0.0's model, handed to the ModelDeployment, no canary."""
    return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": "echo", "namespace": ns, "annotations": {
                "modelops.io/deployment": "echo", "serving.kserve.io/deploymentMode": "Standard"}},
            "spec": {"predictor": {"model": {"modelFormat": {"name": "modelops-echo"},
                                             "storageUri": "modelops://echo/1.0.0"}}}}


SRE_FIELDS = ("paused", "trafficOverride", "request")


def git_manifest(plane: ControlPlane, ns: str) -> dict:
    """The ModelDeployment as Git holds it: the live spec (the version bump came from Git) without the SREs' fields."""
    live = find(plane, ns, "modeldeployment", "echo")
    return {"apiVersion": live["apiVersion"], "kind": live["kind"], "metadata": {"name": "echo", "namespace": ns},
            "spec": {k: v for k, v in live["spec"].items() if k not in SRE_FIELDS}}


def reapply(plane: ControlPlane, *manifests: dict) -> None:
    """As Argo CD syncs: client-side apply (its default), then server-side as its controller, forcing conflicts."""
    for manifest in manifests:
        text = yaml.safe_dump(manifest)
        plane.kubectl("apply", "-f", "-", input=text)
        plane.kubectl("apply", "--server-side", "--field-manager=argocd-controller", "--force-conflicts", "-f", "-",
                      input=text)


def managers(plane: ControlPlane, ns: str, kind: str, *path: str) -> set[str]:
    """The field managers owning `path` (fieldsV1 keys, "f:spec", "f:canary") of `kind` echo."""
    live = json.loads(plane.kubectl("get", kind, "echo", "-n", ns, "-o", "json", "--show-managed-fields").stdout)
    owners = set()
    for entry in live["metadata"].get("managedFields") or []:
        fields = entry.get("fieldsV1") or {}
        for key in path:
            fields = fields.get(key) if isinstance(fields, dict) else None
        if fields is not None:
            owners.add(entry["manager"])
    return owners


def operators_annotations(obj: dict) -> dict[str, str]:
    return {k: v for k, v in (obj["metadata"].get("annotations") or {}).items() if k.startswith("modelops.io/")}


def settled(st: dict) -> dict:
    """What a re-apply must leave as it was: where the rollout stands, and its history."""
    kept = ("phase", "stableVersion", "canaryVersion", "canaryWeight", "currentStep", "stepStartedAt", "pinnedWeight",
            "handledRequests")
    return {k: st.get(k) for k in kept} | {"history": len(st["history"])}


def test_a_pause_holds_its_step_and_git_reapplies_leave_the_operators_fields_on_kserve(cluster, ns):
    """The user's InferenceService from Git, with no spec.canary: re-applied mid-rollout (client- and server-side),
    it leaves the operator's entry, bookkeeping and route, and restarts no pod. Re-applied stale after the promotion
    (its model 1.0.0's, without Argo CD's ignoreDifferences of docs/gitops.md) it reverts the promoted predictor's
    model under its name, and the operator writes 1.1.0's back."""
    plane = cluster.plane
    split_20 = {"echo-predictor": 80, "echo-v1-1-0-predictor": 20}
    # The first step's pause leaves the plugin's pause time to land on a loaded machine; the step is then held
    # past it, which only the pause can do.
    with serving(cluster, ns, [{"weight": 20, "pause": "15s"}, {"weight": 50, "pause": "4s"}],
                 isvc=user_isvc(ns)) as load:
        start_rollout(plane, ns)
        at_step(plane, ns, 20)
        entered = time.monotonic()
        modelops(plane, ns, "pause", "echo")
        wait_status(plane, ns, "the pause", lambda st: st.get("phase") == "Paused", 30)
        assert model_status(plane, ns).get("currentStep") == 0, "the step ended before the pause landed"
        while time.monotonic() - entered < 22:  # past the step's 15 s pause and its next analysis: the step holds
            assert weights(plane, ns) == split_20 and model_status(plane, ns).get("canaryWeight") == 20
            time.sleep(1)
        before = model_status(plane, ns)
        assert before["phase"] == "Paused" and before["currentStep"] == 0, before

        isvc_before = find(plane, ns, "inferenceservice", "echo")
        reapply(plane, git_manifest(plane, ns), user_isvc(ns))
        assert find(plane, ns, "modeldeployment", "echo")["spec"]["paused"] is True
        isvc = find(plane, ns, "inferenceservice", "echo")
        [canary] = isvc["spec"]["canary"]
        assert canary["predictor"]["name"] == "v1-1-0" and canary["trafficPercent"] == 20
        assert not isvc["spec"]["predictor"].get("name")
        assert isvc["spec"]["predictor"]["model"]["storageUri"] == "modelops://echo/1.0.0"
        assert operators_annotations(isvc) == operators_annotations(isvc_before)
        assert managers(plane, ns, "inferenceservice", "f:spec", "f:canary") == {"modelops"}
        after = wait_status(plane, ns, "an analysis after the re-apply",
                            lambda st: st.get("lastAnalysisAt", "") > before.get("lastAnalysisAt", ""), 30)
        assert settled(after) == settled(before)
        assert weights(plane, ns) == split_20
        assert pod_templates(plane, ns, "echo-predictor") == pod_templates(plane, ns, "echo-v1-1-0-predictor") == 1
        print(f"\npaused at 20 % and re-applied: status {settled(after)}, Deployments {replicas(plane, ns)}, "
              f"spec.canary managers {managers(plane, ns, 'inferenceservice', 'f:spec', 'f:canary')}")

        modelops(plane, ns, "resume", "echo")
        at_step(plane, ns, 50)
        wait_status(plane, ns, "promotion of 1.1.0",
                    lambda st: st.get("phase") == "Stable" and st.get("stableVersion") == "1.1.0", 120)
        promoted = wait_for(plane, "KServe's promotion as the operator wrote it", lambda: (
            lambda i: i if i["spec"]["predictor"].get("name") == "v1-1-0" and not i["spec"].get("canary") else None)(
            find(plane, ns, "inferenceservice", "echo")), 30)
        wait_for(plane, "the route all on the promoted Deployment's Service",
                 lambda: weights(plane, ns) == {"echo-v1-1-0-predictor": 100}, 30)

        plane.apply(user_isvc(ns))  # stale: Git still names 1.0.0's model
        reverted = promoted["metadata"]["generation"] + 1
        restored = wait_for(plane, "1.1.0's model written back over the re-applied one", lambda: (
            lambda i: i if i["metadata"]["generation"] > reverted
            and i["spec"]["predictor"]["model"]["storageUri"] == "modelops://echo/3.0.0" else None)(
            find(plane, ns, "inferenceservice", "echo")), 60)
        assert restored["spec"]["predictor"]["name"] == "v1-1-0" and not restored["spec"].get("canary")
        settled_again = wait_status(plane, ns, "1.1.0 stable and ready again", lambda st: st.get("phase") == "Stable"
                                    and condition({"status": st}, "Ready") == "True", 90)
        assert settled_again["stableVersion"] == "1.1.0"
        assert weights(plane, ns) == {"echo-v1-1-0-predictor": 100}
        seen = load.results[("echo-v1-1-0-predictor", 200)]
        wait_for(plane, "answers through the route after the write-back",
                 lambda: load.results[("echo-v1-1-0-predictor", 200)] > seen + 10, 30)
        # Ready holds through a rolling update (PredictorReady is the Deployment's Available): the roll back to 1.1.0's
        # model is over when its one pod left serves 1.1.0's artifact.
        wait_for(plane, "the promoted Deployment's one pod, none terminating, serving 1.1.0's artifact", lambda: (
            lambda running: len(running) == 1 and serves(running[0]) == f"modelops://echo/{BETTER}")(
            [p for p in get(plane, "pods", "-n", ns, "-l", "app=isvc.echo-v1-1-0-predictor")["items"]
             if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")]), 120)
        print(f"stale re-apply after promotion: generation {reverted} reverted, {restored['metadata']['generation']} "
              f"restored; pod templates {pod_templates(plane, ns, 'echo-v1-1-0-predictor')}, requests lost "
              f"{len(load.lost)}, answers {dict(load.results)}")


def serves(pod: dict) -> str | None:
    """The artifact a running pod's model server serves: the URI its storage initializer fetched (KServe passes it as
    the first argument), once the server answers a prediction; None while it does not."""
    [fetch] = [c for c in pod["spec"].get("initContainers") or [] if c["name"] == "storage-initializer"]
    request = urllib.request.Request(f"http://{pod['status']['podIP']}:8080/v1/models/model:predict",
                                     data=json.dumps({"instances": [[0.0] * 64]}).encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            answered = len(json.load(reply)["predictions"]) == 1
    except (OSError, ValueError, KeyError):
        return None
    return fetch["args"][0] if answered else None


class Watcher(threading.Thread):
    """Reads the route and the InferenceService over and over: every distinct (route weights, canary entries)."""

    def __init__(self, plane: ControlPlane, ns: str):
        super().__init__(daemon=True)
        self.plane, self.ns, self.halt, self.seen = plane, ns, threading.Event(), []

    def run(self) -> None:
        while not self.halt.is_set():
            with contextlib.suppress(RuntimeError, ValueError, KeyError, TypeError):
                isvc = find(self.plane, self.ns, "inferenceservice", "echo")
                entries = tuple((c["predictor"]["name"], c.get("trafficPercent", 0))
                                for c in isvc["spec"].get("canary") or [])
                now = (weights(self.plane, self.ns), entries, replicas(self.plane, self.ns))
                if not self.seen or self.seen[-1] != now:
                    self.seen.append(now)
            self.halt.wait(0.2)


def test_a_drill_runs_the_fallback_as_kserves_canary_and_the_route_all_on_it_then_back(cluster, ns):
    plane = cluster.plane
    on_stable = {"echo-v1-1-0-predictor": 100}
    on_fallback = {"echo-v1-1-0-predictor": 0, "echo-v1-0-0-predictor": 100}
    with serving(cluster, ns, [{"weight": 50, "pause": "2s"}]) as load:
        start_rollout(plane, ns)
        promoted = wait_status(plane, ns, "promotion of 1.1.0",
                               lambda st: st.get("phase") == "Stable" and st.get("stableVersion") == "1.1.0", 120)
        assert promoted["fallbackVersion"] == "1.0.0"
        wait_for(plane, "the route all on stable", lambda: weights(plane, ns) == on_stable, 30)
        wait_for(plane, "KServe deleting the old stable's Deployment",
                 lambda: set(replicas(plane, ns)) == {"echo-v1-1-0-predictor"}, 60)
        stable_templates = pod_templates(plane, ns, "echo-v1-1-0-predictor")

        watcher = Watcher(plane, ns)
        watcher.start()
        try:
            modelops(plane, ns, "drill", "echo", "--reason", "cluster drill")
            done = wait_status(plane, ns, "the drill over", lambda st: (st.get("lastDrill") or {}).get("result")
                               and st.get("phase") != "Drilling", 180)
            wait_for(plane, "the fallback's entry gone", lambda: not watcher.seen[-1][1], 30)
        finally:
            watcher.halt.set()
            watcher.join(5)
        last = done["lastDrill"]
        assert last["result"] == "Completed", last
        assert (last["fallbackVersion"], last["returnedTo"]) == ("1.0.0", "1.1.0")
        assert 0 < last["secondsToFallback"] < 120 and 0 < last["secondsBack"] < 60, last
        assert [h["action"] for h in done["history"]][-3:] == ["DrillStarted", "DrillOnFallback", "DrillCompleted"]
        assert done["stableVersion"] == "1.1.0" and done["phase"] == "Stable"

        # KServe's objects: the fallback is a canary entry (at 0 % until KServe reported it ready, then 100 %, sized
        # ceil(1 x 100 / 100) = 1 pod), the route moved to its Service and back, then the entry went.
        routes = [route_now for route_now, _, _ in watcher.seen]
        assert on_fallback in routes and routes[-1] == on_stable, watcher.seen
        entries = [entry for _, entry, _ in watcher.seen]
        assert (("v1-0-0", 100),) in entries and entries[-1] == (), watcher.seen
        # The route names the fallback's Service only while KServe has its entry (and so its Deployment and Service).
        assert all(entry for route_now, entry, _ in watcher.seen if route_now.get("echo-v1-0-0-predictor")), \
            watcher.seen
        on_fallback_replicas = [r for route_now, _, r in watcher.seen if route_now == on_fallback]
        # A sample reads the route, then the Deployments: its last one on the fallback may read them after the drill
        # moved the route back and KServe deleted the fallback's Deployment.
        assert on_fallback_replicas and all(r.get("echo-v1-0-0-predictor") == (1, 1)
                                            for r in on_fallback_replicas[:-1]), watcher.seen
        assert on_fallback_replicas[-1].get("echo-v1-0-0-predictor") in ((1, 1), None), watcher.seen
        wait_for(plane, "KServe deleting the fallback's Deployment",
                 lambda: set(replicas(plane, ns)) == {"echo-v1-1-0-predictor"}, 60)
        assert find(plane, ns, "service", "echo-v1-0-0-predictor") is None
        assert pod_templates(plane, ns, "echo-v1-1-0-predictor") == stable_templates  # no stable pod restarted

        # The data plane followed: all on the fallback's pod at some point, all back on stable's at the end.
        served = [split for _, split in load.splits_seen if split]
        assert {"echo-v1-0-0-predictor": 100} in served and served[-1] == {"echo-v1-1-0-predictor": 100}, served
        assert load.results[("echo-v1-0-0-predictor", 200)] > 0
        assert load.lost == []

        # Requests lost: Standard mode exports no request metrics of its own, so the figure is not claimed.
        measured = wait_status(plane, ns, "the drill's requests lost settled",
                               lambda st: "requestsLostDue" not in (st.get("lastDrill") or {"requestsLostDue": 1}), 60)
        assert measured["lastDrill"].get("requestsLost") is None
        assert "serving.kserve.httpRoute" in measured["lastDrill"]["requestsLostNote"], measured["lastDrill"]
        print(f"\ndrill: {last['secondsToFallback']} s to fallback, {last['secondsBack']} s back; seen "
              f"{watcher.seen}; answers {dict(load.results)}; note {measured['lastDrill']['requestsLostNote']}")


def test_with_kserves_manager_down_a_failing_candidate_still_leaves_the_route_and_its_entry_goes_once_kserve_is_back(
        cluster, ns):
    """A fault of the real controller: KServe's manager dies mid-rollout with its webhooks registered, so the API
    server refuses every InferenceService write. The operator's rollback writes the route first: traffic leaves the
    candidate at once, status says the round could not finish (Synced False), the entry stays until KServe is back,
    then goes, and KServe deletes its Deployment. No request is lost and none reaches the candidate afterwards."""
    plane = cluster.plane
    with serving(cluster, ns, [{"weight": 20, "pause": "1h"}], candidate_folder=BAD) as load:
        plane.kubectl("patch", "modeldeployment", "echo", "-n", ns, "--type=merge", "-p", json.dumps(
            {"spec": {"version": "1.1.0", "trafficOverride": {"weight": 20, "reason": "held for the fault"}}}))
        wait_for(plane, "the pinned candidate on the route",
                 lambda: weights(plane, ns) == {"echo-predictor": 80, "echo-v1-1-0-predictor": 20}, 120)
        cluster.kserve.crash()
        try:
            refused = plane.kubectl("annotate", "inferenceservice", "echo", "-n", ns, "probe=1", check=False)
            assert refused.returncode != 0 and "webhook" in refused.stderr, refused.stderr  # the fault is real
            plane.kubectl("patch", "modeldeployment", "echo", "-n", ns, "--type=merge",
                          "-p", json.dumps({"spec": {"trafficOverride": None}}))
            rolled = wait_status(plane, ns, "the automatic rollback", lambda st: st.get("phase") == "RolledBack", 120)
            wait_for(plane, "the route all on stable", lambda: weights(plane, ns) == {"echo-predictor": 100}, 30)
            unsynced = wait_status(plane, ns, "the round's failure to write the InferenceService said",
                                   lambda st: condition({"status": st}, "Synced") == "False", 60)
            said = next(c["message"] for c in unsynced["conditions"] if c["type"] == "Synced")
            assert "admission webhook inferenceservice.kserve-webhook-server" in said, said
            assert [(c["predictor"]["name"], c["trafficPercent"]) for c in
                    find(plane, ns, "inferenceservice", "echo")["spec"]["canary"]] == [("v1-1-0", 20)]
            time.sleep(1)  # the Gateway's next read (0.3 s) and the load generator's (0.1 s), with margin
            after_rollback = load.results[("echo-v1-1-0-predictor", 500)]
            stable_before = load.results[("echo-predictor", 200)]
            wait_for(plane, "more answers from stable", lambda: load.results[("echo-predictor", 200)] > stable_before + 20, 30)
            assert load.results[("echo-v1-1-0-predictor", 500)] == after_rollback
        finally:
            cluster.kserve.restart()
        wait_for(plane, "the canary entry gone once KServe is back",
                 lambda: not find(plane, ns, "inferenceservice", "echo")["spec"].get("canary"), 120)
        wait_for(plane, "KServe deleting the canary's Deployment",
                 lambda: "echo-v1-1-0-predictor" not in replicas(plane, ns), 60)
        synced = wait_status(plane, ns, "the round finishing again", lambda st: condition({"status": st}, "Synced") == "True", 60)
        print(f"\nKServe's manager down: rolled back ({rolled['message']}); meanwhile "
              f"{said}; back: "
              f"Deployments {replicas(plane, ns)}, answers {dict(load.results)}")
        assert synced["phase"] == "RolledBack" and synced["failedVersion"] == "1.1.0"
        assert load.results[("echo-v1-1-0-predictor", 500)] == after_rollback
        assert load.lost == []


def test_a_modeldeployment_deleted_mid_rollout_leaves_the_route_and_kserve_on_stable_alone(cluster, ns):
    """The operator's release on deletion: the route all on stable first, then, once the Gateway routes by it, the
    candidate's entry removed (KServe then deletes its Deployment); nothing lost, stable's pods untouched."""
    plane = cluster.plane
    with serving(cluster, ns, [{"weight": 20, "pause": "1h"}]) as load:
        start_rollout(plane, ns)
        at_step(plane, ns, 20)
        stable_templates = pod_templates(plane, ns, "echo-predictor")
        plane.kubectl("delete", "modeldeployment", "echo", "-n", ns, "--timeout=60s")
        wait_for(plane, "the route all on stable", lambda: weights(plane, ns) == {"echo-predictor": 100}, 30)
        wait_for(plane, "the candidate's entry gone",
                 lambda: not find(plane, ns, "inferenceservice", "echo")["spec"].get("canary"), 60)
        wait_for(plane, "KServe deleting the candidate's Deployment",
                 lambda: set(replicas(plane, ns)) == {"echo-predictor"}, 60)
        assert pod_templates(plane, ns, "echo-predictor") == stable_templates
        assert load.lost == []


def pod_uids(plane: ControlPlane, ns: str, deployment: str) -> set[str]:
    """The Deployment's pods that run and are not being deleted."""
    return {p["metadata"]["uid"] for p in get(plane, "pods", "-n", ns, "-l", f"app=isvc.{deployment}")["items"]
            if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")}


def warm_entries(plane: ControlPlane, ns: str) -> list[tuple[str, int]]:
    return [(c["predictor"]["name"], c.get("trafficPercent", 0))
            for c in find(plane, ns, "inferenceservice", "echo")["spec"].get("canary") or []]


@pytest.mark.parametrize("keep_warm", [1, 0], ids=["warm", "cold"])
def test_a_rollback_to_a_warm_version_moves_traffic_to_pods_already_running_and_to_a_cold_one_to_new_pods(
        cluster, ns, keep_warm):
    """After a promotion 1.0.0 -> 1.1.0, `kubectl modelops rollback --to 1.0.0`, timed from the request to the data
    plane sending everything to 1.0.0's Service (printed: the rollback's MTTR, warm and cold). Warm (keepWarm 1),
    1.0.0 runs as KServe's 0 % canary entry from the promotion on, so its pods answer the rollback's requests and
    1.1.0 becomes the warm entry on its own Deployment; cold, KServe must start 1.0.0's Deployment first."""
    plane = cluster.plane
    with serving(cluster, ns, [{"weight": 50, "pause": "2s"}], **({"keepWarm": keep_warm} if keep_warm else {})) \
            as load:
        start_rollout(plane, ns)
        wait_status(plane, ns, "promotion of 1.1.0",
                    lambda st: st.get("phase") == "Stable" and st.get("stableVersion") == "1.1.0", 120)
        if keep_warm:
            warm = wait_status(plane, ns, "1.0.0 warm and ready", lambda st: st.get("warmVersions") == [
                {"version": "1.0.0", "ready": True}] and condition({"status": st}, "WarmFallbacks") == "True", 120)
            assert warm_entries(plane, ns) == [("v1-0-0", 0)] and weights(plane, ns) == {"echo-v1-1-0-predictor": 100}
            wait_for(plane, "KServe running 1.0.0 as the warm entry, the old stable's Deployment deleted", lambda: (
                replicas(plane, ns) == {"echo-v1-1-0-predictor": (1, 1), "echo-v1-0-0-predictor": (1, 1)}), 60)
        else:
            assert condition({"status": model_status(plane, ns)}, "WarmFallbacks") is None
            wait_for(plane, "KServe deleting the old stable's Deployment",
                     lambda: set(replicas(plane, ns)) == {"echo-v1-1-0-predictor"}, 60)
        load.wait_for_split(lambda _, split: split == {"echo-v1-1-0-predictor": 100}, 30)
        before = pod_uids(plane, ns, "echo-v1-0-0-predictor")
        sent_before = sum(load.results.values())

        requested = time.time()  # the clock of the load generator's splits_seen
        modelops(plane, ns, "rollback", "echo", "--to", "1.0.0", "--reason", "cluster rollback")
        moved = load.wait_for_split(lambda at, split: at >= requested and split == {"echo-v1-0-0-predictor": 100},
                                    120)
        done = wait_status(plane, ns, "stable 1.0.0 serving", lambda st: st.get("stableVersion") == "1.0.0"
                           and condition({"status": st}, "Ready") == "True", 120)
        answered = load.results[("echo-v1-0-0-predictor", 200)]
        wait_for(plane, "answers from 1.0.0", lambda: load.results[("echo-v1-0-0-predictor", 200)] > answered + 5, 30)
        serving_pods = pod_uids(plane, ns, "echo-v1-0-0-predictor")
        print(f"\nrollback to a {'warm' if keep_warm else 'cold'} version: {moved - requested:.1f} s from the request "
              f"to all traffic on it; {sum(load.results.values()) - sent_before} requests since, "
              f"{len(load.lost)} lost; Deployments {replicas(plane, ns)}; entries {warm_entries(plane, ns)}; "
              f"status.warmVersions {done.get('warmVersions')}")
        assert load.lost == []
        if keep_warm:
            assert before and serving_pods == before  # the pods that ran warm answer: nothing started
            assert warm_entries(plane, ns) == [("v1-1-0", 0)]  # the old stable is warm now, on its own Deployment
            assert set(replicas(plane, ns)) == {"echo-v1-0-0-predictor", "echo-v1-1-0-predictor"}
            assert pod_templates(plane, ns, "echo-v1-1-0-predictor") == 1
            wait_status(plane, ns, "1.1.0 warm", lambda st: st.get("warmVersions") == [
                {"version": "1.1.0", "ready": True}], 60)
        else:
            assert not before and serving_pods  # none ran: KServe started them for the rollback


def test_stopped_kserve_takes_its_webhooks_along(cluster):
    """Last in the module: it stops the module's KServe. Its webhooks fail closed, so left behind they would
    refuse every InferenceService (and its pods) on the control plane."""
    webhooks = ("get", "mutatingwebhookconfigurations,validatingwebhookconfigurations", "-o", "name")
    assert cluster.plane.kubectl(*webhooks).stdout.count("inferenceservice.serving.kserve.io") == 2
    cluster.kserve.stop()
    assert "inferenceservice.serving.kserve.io" not in cluster.plane.kubectl(*webhooks).stdout
