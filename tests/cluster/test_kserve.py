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
without a ready pod's, counts as lost). It also hands Prometheus every ready pod as a scrape target labelled
with its namespace and Service, so a check's `{{revision}}` (a version's predictor Service) selects a
version. The model server counts its answers (`model_requests_total{code}`); a model whose artifact is
`modelops://echo/bad` answers 500.

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
  Service staying, and an Abort removing them.
Not run here: drills, GitOps re-applies, faults, warm fallbacks; serverless mode (no Knative) runs against
the stand-in only.

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
import time
import urllib.request

import pytest

from playground.controlplane import ControlPlane
from playground.loadgen import LoadGenerator
from playground.node import PYTHON_IMAGE

from .model_pods import (ANALYSIS, FETCH_MODEL, MODEL_SERVER, Cluster, GatewayStandIn, echo_version, find, http_route,
                         model_status, namespace, operator_cluster, wait_status)
from .test_node import get, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.node, pytest.mark.kserve]

RUNTIME = {
    "apiVersion": "serving.kserve.io/v1alpha1", "kind": "ClusterServingRuntime",
    "metadata": {"name": "modelops-echo"},
    "spec": {
        "supportedModelFormats": [{"name": "modelops-echo", "autoSelect": True}],
        "protocolVersions": ["v1"],
        "containers": [{
            "name": "kserve-container", "image": PYTHON_IMAGE, "imagePullPolicy": "Never",
            "command": ["python3", "-c", MODEL_SERVER],
            "env": [{"name": "MODEL_NAME", "value": "{{.Name}}"},
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
            "ports": [{"containerPort": 8080, "protocol": "TCP"}],
            "readinessProbe": {"httpGet": {"path": "/v1/models/{{.Name}}", "port": 8080}, "periodSeconds": 1},
        }],
    },
}

STORAGE = {
    "apiVersion": "serving.kserve.io/v1alpha1", "kind": "ClusterStorageContainer",
    "metadata": {"name": "modelops-models"},
    "spec": {"workloadType": "initContainer", "supportedUriFormats": [{"prefix": "modelops://"}],
             "container": {"name": "storage-initializer", "image": PYTHON_IMAGE, "imagePullPolicy": "Never",
                           "command": ["python3", "-c", FETCH_MODEL]}},
}

@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Control plane, node, KServe, the modelops CRDs and RBAC, the runtime, Prometheus and the operator: started
    once for the module (model_pods.operator_cluster)."""
    with operator_cluster(tmp_path_factory.mktemp("kserve-cluster"), kserve=True, objects=[RUNTIME, STORAGE]) as cluster:
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


def test_kserve_makes_an_inference_service_ready_in_standard_mode_with_its_pod_answering(cluster, ns):
    plane = cluster.plane
    plane.apply({
        "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "metadata": {"name": "echo", "namespace": ns},
        "spec": {"predictor": {"model": {"modelFormat": {"name": "modelops-echo"}, "storageUri": "modelops://echo/v1"}}},
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
    assert container["name"] == "kserve-container" and container["image"] == PYTHON_IMAGE
    assert {"name": "MODEL_NAME", "value": "echo"} in container["env"]  # KServe filled in its placeholder
    # The pod webhook added the model's fetch, from the ClusterStorageContainer that claims the URI.
    [fetch] = pod["spec"]["initContainers"]
    assert fetch["name"] == "storage-initializer" and fetch["args"] == ["modelops://echo/v1", "/mnt/models"]
    request = urllib.request.Request(f"http://{pod['status']['podIP']}:8080/v1/models/echo:predict",
                                     data=json.dumps({"instances": [[1.0], [2.0]]}).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=10) as reply:
        assert json.load(reply) == {"predictions": [{"version": "v1", "pod": pod["metadata"]["name"]}] * 2}


def deployment(ns: str, steps: list[dict]) -> dict:
    return {"apiVersion": "modelops.io/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": "echo", "namespace": ns},
            "spec": {"model": "echo", "version": "1.0.0",
                     "serving": {"backend": "kserve", "kserve": {"httpRoute": {"name": "echo-route"}}},
                     "strategy": {"steps": steps},
                     "analysis": ANALYSIS}}


@contextlib.contextmanager
def serving(cluster: Cluster, ns: str, steps: list[dict], candidate_folder: str = "v2", rps: float = 20):
    """Versions 1.0.0 (artifact v1) and 1.1.0 (`candidate_folder`), the route, the ModelDeployment on 1.0.0, the
    Gateway and load on it; yields the load generator once 1.0.0 is Stable and answering through the route."""
    plane = cluster.plane
    plane.apply({"apiVersion": "v1", "kind": "List", "items": [
        http_route(ns, "echo-route", "echo-predictor"), echo_version(ns, "1.0.0", "v1"),
        echo_version(ns, "1.1.0", candidate_folder)]})
    gateway = GatewayStandIn(cluster, ns, "echo-route")
    gateway.start()
    load = LoadGenerator(gateway.split_file, rps)
    try:
        plane.apply(deployment(ns, steps))
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
        assert canary["predictor"]["model"]["storageUri"] == "modelops://echo/v2"
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
        assert isvc["spec"]["predictor"]["model"]["storageUri"] == "modelops://echo/v2"
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
            request = urllib.request.Request(f"http://{pod['status']['podIP']}:8080/v1/models/echo:predict",
                                             data=b'{"instances": [[1]]}', method="POST")
            with urllib.request.urlopen(request, timeout=10) as reply:
                assert json.load(reply)["predictions"][0]["version"] == "v2"


def test_a_failing_candidate_is_rolled_back_automatically_and_gets_no_request_afterwards(cluster, ns):
    plane = cluster.plane
    with serving(cluster, ns, [{"weight": 20, "pause": "1h"}], candidate_folder="bad") as load:
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


def test_stopped_kserve_takes_its_webhooks_along(cluster):
    """Last in the module: it stops the module's KServe. Its webhooks fail closed, so left behind they would
    refuse every InferenceService (and its pods) on the control plane."""
    webhooks = ("get", "mutatingwebhookconfigurations,validatingwebhookconfigurations", "-o", "name")
    assert cluster.plane.kubectl(*webhooks).stdout.count("inferenceservice.serving.kserve.io") == 2
    cluster.kserve.stop()
    assert "inferenceservice.serving.kserve.io" not in cluster.plane.kubectl(*webhooks).stdout
