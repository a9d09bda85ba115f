"""A real single-node cluster (playground/node.py): a pod of a locally built image is scheduled,
runs in a container with an address on the node's bridge, passes its readiness probe, is put into
its Service's EndpointSlice by the real controller, and answers a request from this host. Then the
node goes and takes everything it made with it, except the containers' logs.

Needs root and Debian's containerd and CNI plugins (`make system-deps`); builds kubelet,
kube-controller-manager and kube-scheduler on first use. Deselect with `-m "not node"`.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from playground.controlplane import ControlPlane
from playground.node import PYTHON_IMAGE, Node, cgroup_hierarchies

pytestmark = [pytest.mark.integration, pytest.mark.node]

# Answers every GET with the name of the pod it runs in: a reply proves which pod was reached.
SERVER = """
import http.server, os
class Name(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = os.environ["POD_NAME"].encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
http.server.ThreadingHTTPServer(("", 8080), Name).serve_forever()
"""

WEB = [
    {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {
        "replicas": 1, "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
            "automountServiceAccountToken": False,
            "containers": [{
                "name": "web", "image": PYTHON_IMAGE, "imagePullPolicy": "Never",
                "command": ["python3", "-c", SERVER],
                "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                "ports": [{"containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
            }]}}}},
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
     "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}},
]


def wait_for(plane: ControlPlane, what: str, probe, timeout: float = 90):
    """`probe()`'s first truthy answer; `timeout` only bounds a failure, which shows the cluster's events."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = probe()
        if answer:
            return answer
        time.sleep(0.5)
    events = plane.kubectl("get", "events", "--all-namespaces", "--sort-by=.lastTimestamp").stdout
    raise AssertionError(f"no {what} within {timeout}s; events:\n{events}")


def get(plane: ControlPlane, *args: str) -> dict:
    return json.loads(plane.kubectl("get", "-o", "json", *args).stdout)


def ready_pod(plane: ControlPlane) -> dict | None:
    pods = get(plane, "pods", "-l", "app=web")["items"]
    return next((p for p in pods if p["status"].get("phase") == "Running" and any(
        c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))), None)


def test_a_pod_runs_on_a_real_node_and_answers_on_its_endpoint(tmp_path):
    plane = ControlPlane(tmp_path / "controlplane").start()
    node = Node(plane, tmp_path / "node")
    try:
        node.start()
        plane.apply({"apiVersion": "v1", "kind": "List", "items": WEB})
        pod = wait_for(plane, "Running and Ready web pod", lambda: ready_pod(plane))

        pod_ip = pod["status"]["podIP"]
        assert pod["spec"]["nodeName"] == node.name
        assert ipaddress.ip_address(pod_ip) in node.subnet
        assert pod["status"]["hostIP"] == str(node.ip)
        [container] = pod["status"]["containerStatuses"]
        assert container["ready"] and "running" in container["state"]
        assert container["image"].endswith(PYTHON_IMAGE.removeprefix("localhost/"))

        slices = wait_for(plane, "EndpointSlice with the pod", lambda: [
            s for s in get(plane, "endpointslices", "-l", "kubernetes.io/service-name=web")["items"]
            if any(e["addresses"] == [pod_ip] for e in s.get("endpoints") or [])])
        [endpoint] = slices[0]["endpoints"]
        assert slices[0]["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] == "endpointslice-controller.k8s.io"
        assert endpoint["conditions"]["ready"] is True
        assert endpoint["targetRef"]["name"] == pod["metadata"]["name"]
        assert slices[0]["ports"][0]["port"] == 8080

        with urllib.request.urlopen(f"http://{pod_ip}:8080/", timeout=10) as reply:
            assert reply.read().decode() == pod["metadata"]["name"]
    finally:
        node.stop()
        plane.stop()
    links = json.loads(subprocess.run(["ip", "-j", "link"], check=True, capture_output=True, text=True).stdout)
    assert node.bridge not in {link["ifname"] for link in links}
    assert not node.state.exists()
    assert not any(Path(h, node.cgroup_root.lstrip("/")).exists() for h in cgroup_hierarchies())
    # What the container wrote outlives the node: the request it answered, from the node's address.
    [log] = (node.dir / "pod-logs").glob(f"*_{pod['metadata']['name']}_*/web/0.log")
    assert f'{node.ip} - - ' in log.read_text()
