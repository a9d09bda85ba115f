"""KServe's real controller (playground/kserve_controller.py) on a real single-node cluster: an
InferenceService in Standard mode becomes a Deployment and a Service made by KServe, its pod runs a
locally built model server answering KServe's v1 protocol, and KServe reports the InferenceService
Ready from what the cluster really did. Stopped, it leaves no webhook behind. The operator drives a
Standard-mode rollout there: KServe's canary Deployment beside stable's, the split on an HTTPRoute.

Needs root (the node) and builds KServe's manager on first use (~9 minutes on two cores).
Deselect with `-m "not kserve"`.
"""

from __future__ import annotations

import json
import urllib.request

import pytest

from playground.controlplane import REPO, ControlPlane
from playground.kserve_controller import KServeController
from playground.node import PYTHON_IMAGE, Node
from playground.operator import OperatorProcess
from playground.upstream_crds import GATEWAY_HTTPROUTES, upstream_crds

from ..conftest import model_version_manifest
from .test_node import get, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.node, pytest.mark.kserve]

# The "download" of a storageUri modelops://<name>/<version>: KServe's storage initializer step runs
# this with the URI and the model folder as arguments; the model is its version, written there.
FETCH_MODEL = """
import pathlib, sys
uri, folder = sys.argv[1:]
pathlib.Path(folder, "version").write_text(uri.rsplit("/", 1)[1])
"""

# KServe's v1 protocol, the least of it: the model's readiness and :predict, one prediction per
# instance naming the model's version (read from what the storage initializer fetched) and the pod
# that answered. No "{{" in it: KServe expands the runtime container's text as a Go template (the
# "{{.Name}}" below).
MODEL_SERVER = """
import http.server, json, os, pathlib
NAME, POD = os.environ["MODEL_NAME"], os.environ["POD_NAME"]
VERSION = pathlib.Path("/mnt/models/version").read_text()
class V1(http.server.BaseHTTPRequestHandler):
    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def do_GET(self):
        if self.path == "/v1/models/" + NAME:
            return self.reply(200, dict(name=NAME, ready=True))
        self.reply(200 if self.path == "/" else 404, dict(status="alive" if self.path == "/" else "not found"))
    def do_POST(self):
        if self.path != "/v1/models/" + NAME + ":predict":
            return self.reply(404, dict(error="model " + self.path + " not found"))
        instances = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["instances"]
        self.reply(200, dict(predictions=[dict(version=VERSION, pod=POD) for _ in instances]))
http.server.ThreadingHTTPServer(("", 8080), V1).serve_forever()
"""

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

ISVC = {
    "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
    "metadata": {"name": "echo", "namespace": "default"},
    "spec": {"predictor": {"model": {"modelFormat": {"name": "modelops-echo"}, "storageUri": "modelops://echo/v1"}}},
}


def condition(obj: dict, kind: str) -> str | None:
    return next((c["status"] for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == kind), None)


def test_kserve_makes_an_inference_service_ready_in_standard_mode_with_its_pod_answering(tmp_path):
    plane = ControlPlane(tmp_path / "controlplane").start()
    node = Node(plane, tmp_path / "node")
    kserve = None
    try:
        node.start()
        kserve = KServeController(plane, tmp_path / "kserve").start()
        plane.apply({"apiVersion": "v1", "kind": "List", "items": [RUNTIME, STORAGE]})
        plane.apply(ISVC)
        isvc = wait_for(plane, "Ready InferenceService", lambda: (
            lambda i: i if condition(i, "Ready") == "True" else None)(get(plane, "inferenceservice", "echo")), 180)

        # KServe's defaulting webhook ran (the mode comes from its ConfigMap), and its controller chose the runtime.
        assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
        assert isvc["status"]["deploymentMode"] == "Standard"
        assert isvc["status"]["clusterServingRuntimeName"] == "modelops-echo"
        conditions = {c["type"]: c["status"] for c in isvc["status"]["conditions"]}
        assert conditions.items() >= {"PredictorReady": "True", "IngressReady": "True", "Ready": "True"}.items()
        assert isvc["status"]["modelStatus"]["transitionStatus"] == "UpToDate"
        assert isvc["status"]["address"]["url"] == "http://echo-predictor.default.svc.cluster.local"

        deployment = get(plane, "deployment", "echo-predictor")
        assert deployment["metadata"]["ownerReferences"][0]["uid"] == isvc["metadata"]["uid"]
        assert deployment["status"]["availableReplicas"] == 1
        service = get(plane, "service", "echo-predictor")
        assert service["spec"]["selector"] == {"app": "isvc.echo-predictor"}

        [pod] = [p for p in get(plane, "pods", "-l", "app=isvc.echo-predictor")["items"]
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

        # Stopped, KServe takes its fail-closed webhooks along: the control plane admits InferenceServices again.
        webhooks = ("get", "mutatingwebhookconfigurations,validatingwebhookconfigurations", "-o", "name")
        assert plane.kubectl(*webhooks).stdout.count("inferenceservice.serving.kserve.io") == 2
        kserve.stop()
        assert "inferenceservice.serving.kserve.io" not in plane.kubectl(*webhooks).stdout
    finally:
        if kserve:
            kserve.stop()
        node.stop()
        plane.stop()


OWNER = {"modelops.io/deployment": "echo"}
# The user's HTTPRoute in front of the model: one path-only rule to stable's predictor Service. No Gateway
# implementation runs here, so the test writes the verdict one would (Accepted, references resolved).
ROUTE = {
    "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
    "metadata": {"name": "echo-route", "namespace": "default", "annotations": OWNER},
    "spec": {"parentRefs": [{"name": "gateway"}],
             "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                        "backendRefs": [{"name": "echo-predictor", "port": 80}]}]},
}
ROUTE_VERDICT = {"status": {"parents": [{
    "parentRef": {"name": "gateway"}, "controllerName": "example.com/gateway-stand-in",
    "conditions": [{"type": kind, "status": "True", "reason": kind, "message": "", "observedGeneration": 1,
                    "lastTransitionTime": "2026-01-01T00:00:00Z"} for kind in ("Accepted", "ResolvedRefs")]}]}}


def echo_version(version: str, folder: str) -> dict:
    manifest = model_version_manifest("echo", version)
    manifest["metadata"]["namespace"] = "default"
    manifest["spec"]["artifact"].update(uri=f"modelops://echo/{folder}", format="modelops-echo")
    return manifest


DEPLOYMENT = {
    "apiVersion": "modelops.io/v1alpha1", "kind": "ModelDeployment",
    "metadata": {"name": "echo", "namespace": "default"},
    "spec": {"model": "echo", "version": "1.0.0",
             "serving": {"backend": "kserve", "kserve": {"httpRoute": {"name": "echo-route"}}},
             # One long step: the rollout holds at 10 % until the Abort.
             "strategy": {"steps": [{"weight": 10, "pause": "1h"}]},
             "analysis": {"interval": "5s", "checks": []}},
}


def find(plane: ControlPlane, kind: str, name: str) -> dict | None:
    out = plane.kubectl("get", kind, name, "-n", "default", "-o", "json", "--ignore-not-found").stdout
    return json.loads(out) if out.strip() else None


def weights(plane: ControlPlane) -> dict[str, int]:
    [rule] = find(plane, "httproute", "echo-route")["spec"]["rules"]
    return {r["name"]: r.get("weight", 1) for r in rule["backendRefs"]}


def replicas(plane: ControlPlane) -> dict[str, tuple[int, int]]:
    """Deployment -> (spec.replicas, status.readyReplicas), of the InferenceService's predictors."""
    items = get(plane, "deployments", "-n", "default", "-l", "serving.kserve.io/inferenceservice=echo")["items"]
    return {d["metadata"]["name"]: (d["spec"].get("replicas"), (d.get("status") or {}).get("readyReplicas", 0))
            for d in items}


def test_a_standard_mode_canary_runs_as_kserves_deployment_with_its_weight_on_the_route_and_an_abort_removes_it(
        tmp_path):
    plane = ControlPlane(tmp_path / "controlplane").start()
    node = Node(plane, tmp_path / "node")
    kserve = operator = None
    try:
        node.start()
        kserve = KServeController(plane, tmp_path / "kserve").start()
        plane.install_crds(*sorted((REPO / "crds").glob("*.yaml")),
                           upstream_crds([GATEWAY_HTTPROUTES]) / GATEWAY_HTTPROUTES)
        plane.kubectl("apply", "-f", str(REPO / "deploy" / "rbac.yaml"))
        plane.apply({"apiVersion": "v1", "kind": "List", "items": [
            RUNTIME, STORAGE, ROUTE, echo_version("1.0.0", "v1"), echo_version("1.1.0", "v2")]})
        plane.kubectl("patch", "httproute", "echo-route", "-n", "default", "--subresource=status", "--type=merge",
                      "-p", json.dumps(ROUTE_VERDICT))
        (tmp_path / "operator").mkdir()
        operator = OperatorProcess(plane.kubeconfig_for("modelops-operator"), tmp_path / "operator").start()
        plane.apply(DEPLOYMENT)

        # The operator creates the InferenceService in Standard mode; KServe runs stable's predictor.
        isvc = wait_for(plane, "Ready InferenceService", lambda: (
            lambda i: i if i and condition(i, "Ready") == "True" else None)(find(plane, "inferenceservice", "echo")), 180)
        assert isvc["status"]["deploymentMode"] == "Standard"
        stable_phase = wait_for(plane, "ModelDeployment Stable on 1.0.0", lambda: (
            lambda st: st if st.get("phase") == "Stable" and st.get("stableVersion") == "1.0.0" else None)(
            (find(plane, "modeldeployment", "echo") or {}).get("status") or {}), 60)
        print(f"\nstable: phase {stable_phase['phase']}, Deployments (replicas, ready) {replicas(plane)}, "
              f"route {weights(plane)}")

        plane.kubectl("patch", "modeldeployment", "echo", "-n", "default", "--type=merge",
                      "-p", json.dumps({"spec": {"version": "1.1.0"}}))
        status = wait_for(plane, "the 10 % step", lambda: (
            lambda st: st if st.get("canaryWeight") == 10 else None)(
            (find(plane, "modeldeployment", "echo") or {}).get("status") or {}), 180)
        route = wait_for(plane, "the step's weights on the route", lambda: (
            lambda w: w if w == {"echo-predictor": 90, "echo-v1-1-0-predictor": 10} else None)(weights(plane)), 30)
        isvc = find(plane, "inferenceservice", "echo")
        [canary] = isvc["spec"]["canary"]
        assert canary["predictor"]["name"] == "v1-1-0" and canary["trafficPercent"] == 10
        assert canary["predictor"]["model"]["storageUri"] == "modelops://echo/v2"
        at_step = replicas(plane)
        print(f"step 10 %: Deployments (replicas, ready) {at_step}, route {route}, status canaryWeight "
              f"{status['canaryWeight']}, KServe canaryStatuses {isvc['status'].get('canaryStatuses')}")
        # KServe's own sizing: ceil(1 x 10 / 100) = 1 canary pod; stable keeps its one (minReplicas unset).
        assert at_step["echo-v1-1-0-predictor"][1] >= 1 and at_step["echo-predictor"][1] >= 1
        service = find(plane, "service", "echo-v1-1-0-predictor")
        assert service["spec"]["selector"] == {"app": "isvc.echo-v1-1-0-predictor"}  # its own pods

        plane.kubectl("patch", "modeldeployment", "echo", "-n", "default", "--type=merge", "-p", json.dumps(
            {"spec": {"request": {"id": "abort-1", "action": "Abort", "reason": "cluster test", "actor": "tester"}}}))
        wait_for(plane, "the route all on stable", lambda: weights(plane) == {"echo-predictor": 100}, 60)
        wait_for(plane, "the canary entry gone", lambda: not find(plane, "inferenceservice", "echo")["spec"].get("canary"),
                 30)
        wait_for(plane, "KServe deleting the canary's Deployment",
                 lambda: "echo-v1-1-0-predictor" not in replicas(plane), 60)
        status = find(plane, "modeldeployment", "echo")["status"]
        print(f"aborted: phase {status['phase']}, Deployments (replicas, ready) {replicas(plane)}, "
              f"route {weights(plane)}")
        assert status["stableVersion"] == "1.0.0" and not status.get("canaryWeight")
        assert find(plane, "service", "echo-v1-1-0-predictor") is None
    finally:
        if operator:
            operator.stop()
        if kserve:
            kserve.stop()
        node.stop()
        plane.stop()
