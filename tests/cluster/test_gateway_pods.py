"""The Gateway API backend on a real single-node cluster, model servers as pods taking the traffic.

One cluster for the module (model_pods.operator_cluster: control plane, node, the modelops CRDs and
HTTPRoute's, Prometheus on loopback, the operator as a host process as its RBAC user); each test in a
namespace of its own. Per version of the model `echo` a Deployment (one pod of the model server in
model_pods.py: KServe's v1 protocol, its model "downloaded" by an init container) and a Service; the
EndpointSlices are the real EndpointSlice controller's, from the pods' readiness probes. The user's
HTTPRoute routes to v1's Service; the ModelDeployment maps each version to its Service.

The data plane is `GatewayStandIn` (model_pods.py): no Gateway implementation runs here (no Envoy). It
splits requests by the route's weights as the Gateway API spec has an implementation do, and sends each
Service's share to its pod's IP over the node's bridge; a request the Gateway would answer itself (a ref
without a ready endpoint, or to no Service) counts as lost. Prometheus scrapes each pod's own counter
(`model_requests_total{code}`), labelled with its Service: the check's `{{revision}}`.

Asserted, on objects and the load generator's counts (never on logs): per step the route's weights and the
share of requests routed under them; status (phase, versions, history); every request answered (none lost);
after the rollback not one request routed to the failed version, and each pod's own count equal to what the
load generator sent it. Needs root (the node). Deselect with `-m "not node"`.
"""

from __future__ import annotations

import collections
import json
import time
import urllib.request

import pytest

from playground.controlplane import ControlPlane
from playground.loadgen import LoadGenerator
from playground.node import PYTHON_IMAGE

from ..integration.scenario import check_history
from .model_pods import (ANALYSIS, ERRORS, FETCH_MODEL, MODEL_SERVER, Cluster, GatewayStandIn, echo_version, find,
                         http_route, namespace, operator_cluster, wait_status)
from .test_node import get, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.node]

ARTIFACTS = {"1.0.0": "v1", "1.1.0": "v2", "1.2.0": "bad"}  # 1.2.0 answers 500
RPS = 20
STEPS = [20, 50]


def service(version: str) -> str:
    return "echo-v" + version.replace(".", "-")


def version_objects(ns: str, version: str) -> list[dict]:
    """The version's ModelVersion, Deployment (one pod of the model server) and Service."""
    app = service(version)
    uri = f"modelops://echo/{ARTIFACTS[version]}"
    models = {"name": "models", "mountPath": "/mnt/models"}
    return [echo_version(ns, version, ARTIFACTS[version]), {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": app, "namespace": ns}, "spec": {
            "replicas": 1, "selector": {"matchLabels": {"app": app}},
            "template": {"metadata": {"labels": {"app": app}}, "spec": {
                "automountServiceAccountToken": False,
                "volumes": [{"name": "models", "emptyDir": {}}],
                "initContainers": [{"name": "fetch", "image": PYTHON_IMAGE, "imagePullPolicy": "Never",
                                    "command": ["python3", "-c", FETCH_MODEL, uri, "/mnt/models"],
                                    "volumeMounts": [models]}],
                "containers": [{
                    "name": "model", "image": PYTHON_IMAGE, "imagePullPolicy": "Never",
                    "command": ["python3", "-c", MODEL_SERVER],
                    "env": [{"name": "MODEL_NAME", "value": "echo"},
                            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                    "ports": [{"containerPort": 8080}], "volumeMounts": [models],
                    "readinessProbe": {"httpGet": {"path": "/v1/models/echo", "port": 8080}, "periodSeconds": 1},
                }]}}}}, {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": app, "namespace": ns},
        "spec": {"selector": {"app": app}, "ports": [{"port": 80, "targetPort": 8080}]}}]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with operator_cluster(tmp_path_factory.mktemp("gateway-pods")) as cluster:
        yield cluster


@pytest.fixture
def ns(cluster) -> str:
    with namespace(cluster.plane, "gateway-pods") as name:
        yield name


def weights(plane: ControlPlane, ns: str) -> dict[str, int]:
    """The route's refs that get requests (weight > 0), with their weights."""
    [rule] = find(plane, ns, "httproute", "echo")["spec"]["rules"]
    return {r["name"]: r.get("weight", 1) for r in rule["backendRefs"] if r.get("weight", 1) > 0}


def shares(split: dict[str, int]) -> dict[str, float]:
    """Each unit's percent of the requests under a split of weights."""
    total = sum(split.values()) or 1
    return {unit: 100 * weight / total for unit, weight in split.items()}


def pod_answers(plane: ControlPlane, ns: str, version: str) -> dict[str, int]:
    """The version's pod's own count of its answers, by status code, read from its /metrics."""
    [pod] = get(plane, "pods", "-n", ns, "-l", f"app={service(version)}")["items"]
    with urllib.request.urlopen(f"http://{pod['status']['podIP']}:8080/metrics", timeout=10) as reply:
        lines = reply.read().decode().splitlines()
    return {line.split('"')[1]: int(line.rsplit(" ", 1)[1]) for line in lines if line.startswith("model_requests_total{")}


class Serving:
    """A namespace's model `echo` served through the Gateway stand-in, with load on it."""

    def __init__(self, cluster: Cluster, ns: str):
        self.plane, self.ns, self.candidate = cluster.plane, ns, ""
        self.gateway = GatewayStandIn(cluster, ns, "echo")
        self.load = LoadGenerator(self.gateway.split_file, RPS)
        self.setup_seconds = 0.0

    def start(self, candidate: str, steps: list[dict]) -> Serving:
        """Versions 1.0.0 and `candidate` as pods, the route on 1.0.0, the ModelDeployment on 1.0.0 with `steps`;
        returns once 1.0.0 is Stable and answering the load through the route, and `candidate`'s pod is ready."""
        ns, self.candidate = self.ns, candidate
        started = time.monotonic()
        self.plane.apply({"apiVersion": "v1", "kind": "List", "items": [
            http_route(ns, "echo", service("1.0.0")), *version_objects(ns, "1.0.0"), *version_objects(ns, candidate)]})
        self.gateway.start()
        self.plane.apply({
            "apiVersion": "modelops.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "echo", "namespace": ns},
            "spec": {"model": "echo", "version": "1.0.0", "strategy": {"steps": steps}, "analysis": ANALYSIS,
                     "serving": {"backend": "gatewayAPI", "gatewayAPI": {
                         "route": "echo", "port": 80, "services": {v: service(v) for v in ("1.0.0", candidate)}}}}})
        wait_status(self.plane, ns, "1.0.0 Stable and Ready", lambda st: st.get("phase") == "Stable" and any(
            c["type"] == "Ready" and c["status"] == "True" for c in st.get("conditions") or []), 120)
        wait_for(self.plane, f"{candidate}'s pod ready", lambda: (lambda d: (d.get("status") or {}).get(
            "readyReplicas") == 1)(find(self.plane, ns, "deployment", service(candidate))), 60)
        self.gateway.wait_programmed()
        self.load.start()
        wait_for(self.plane, "answers from 1.0.0's pod", lambda: self.load.results[(service("1.0.0"), 200)] > 5, 30)
        self.setup_seconds = time.monotonic() - started
        return self

    def roll_out(self) -> float:
        self.plane.kubectl("patch", "modeldeployment", "echo", "-n", self.ns, "--type=merge",
                           "-p", json.dumps({"spec": {"version": self.candidate}}))
        return time.monotonic()

    def routed(self) -> list[tuple[dict[str, float], collections.Counter]]:
        """Each split the load generator followed, as shares, with the requests sent under it (splits of the same
        shares in a row merged: the route's weights written as 1 or as 100 send alike)."""
        merged: list[tuple[dict[str, float], collections.Counter]] = []
        for (_, split), sent in zip(self.load.splits_seen, self.load.sent_by_split):
            if merged and merged[-1][0] == shares(split):
                merged[-1][1].update(sent)
            else:
                merged.append((shares(split), collections.Counter(sent)))
        return merged

    def stop(self) -> None:
        self.load.stop()
        self.gateway.stop()


@pytest.fixture
def serving(cluster, ns):
    run = Serving(cluster, ns)
    yield run
    run.stop()


def test_a_rollout_to_promotion_routes_each_steps_share_to_the_candidates_pod_and_loses_no_request(cluster, ns, serving):
    plane = cluster.plane
    run = serving.start("1.1.0", [{"weight": w, "pause": "5s"} for w in STEPS])
    started = run.roll_out()
    promoted = wait_status(plane, ns, "1.1.0 promoted",
                           lambda st: st.get("phase") == "Stable" and st.get("stableVersion") == "1.1.0", 120)
    rollout = time.monotonic() - started
    wait_for(plane, "the route all on 1.1.0", lambda: weights(plane, ns) == {service("1.1.0"): 100}, 30)
    wait_for(plane, "the load following it", lambda: run.routed()[-1][0] == {service("1.1.0"): 100.0}, 10)
    wait_for(plane, "answers from 1.1.0's pod",
             lambda: run.routed()[-1][1].get((service("1.1.0"), 200), 0) > 2 * RPS, 30)
    run.load.stop()

    routed = run.routed()
    stable, candidate = service("1.0.0"), service("1.1.0")
    print(f"\nrollout 1.0.0 -> 1.1.0: set-up {run.setup_seconds:.1f} s, rollout to promotion {rollout:.1f} s; "
          f"sent {sum(run.load.results.values())}, lost {len(run.load.lost)}; routed per split:")
    for split, sent in routed:
        print(f"  {split}: {sent}")
    assert [split for split, _ in routed] == [
        {stable: 100.0}, *({stable: 100.0 - w, candidate: float(w)} for w in STEPS), {candidate: 100.0}]
    for (split, sent), weight in zip(routed[1:-1], STEPS):
        total = sum(sent.values())
        # 5 s at 20 requests/s, less the time the round took to see the pause out; smooth weighted round-robin
        # keeps the candidate's count within a request or two of its share over any run of requests.
        assert total >= 3 * RPS, (split, sent)
        assert abs(sent.get((candidate, 200), 0) - total * weight / 100) <= 2, (split, sent)
    assert run.load.lost == [] and {code for _, code in run.load.results} == {200}, run.load.results
    # Every request the load generator sent reached the pod it was sent to, by the pods' own counts.
    assert pod_answers(plane, ns, "1.0.0") == {"200": run.load.results[(stable, 200)]}
    assert pod_answers(plane, ns, "1.1.0") == {"200": run.load.results[(candidate, 200)]}
    assert promoted["stableVersion"] == "1.1.0" and not promoted.get("canaryVersion")
    check_history(promoted["history"], "1.1.0", "Promoted", STEPS, f"{ns}/echo")


def test_a_candidate_answering_500_is_rolled_back_by_its_check_and_no_request_reaches_it_afterwards(
        cluster, ns, serving):
    plane = cluster.plane
    run = serving.start("1.2.0", [{"weight": 20, "pause": "1h"}])
    started = run.roll_out()
    rolled = wait_status(plane, ns, "the automatic rollback", lambda st: st.get("phase") == "RolledBack", 120)
    rollback = time.monotonic() - started
    stable, failed = service("1.0.0"), service("1.2.0")
    wait_for(plane, "the route all on 1.0.0", lambda: weights(plane, ns) == {stable: 100}, 30)
    wait_for(plane, "the load following it", lambda: run.routed()[-1][0] == {stable: 100.0}, 10)
    wait_for(plane, "more answers from 1.0.0", lambda: run.routed()[-1][1].get((stable, 200), 0) > 3 * RPS, 30)
    run.load.stop()

    routed = run.routed()
    print(f"\nrollback of 1.2.0: set-up {run.setup_seconds:.1f} s, rollout to rollback {rollback:.1f} s; "
          f"sent {sum(run.load.results.values())}, lost {len(run.load.lost)}; routed per split:")
    for split, sent in routed:
        print(f"  {split}: {sent}")
    assert [split for split, _ in routed] == [{stable: 100.0}, {stable: 80.0, failed: 20.0}, {stable: 100.0}]
    answered_500 = run.load.results[(failed, 500)]
    assert answered_500 >= ERRORS["minSamples"], run.load.results  # what the check saw fail
    assert routed[1][1] == {(stable, 200): routed[1][1][(stable, 200)], (failed, 500): answered_500}
    # After the rollback not one request was sent to the failed version, and its pod saw none it was not sent.
    assert set(routed[2][1]) == {(stable, 200)}, routed[2][1]
    assert pod_answers(plane, ns, "1.2.0") == {"500": answered_500}
    assert pod_answers(plane, ns, "1.0.0") == {"200": run.load.results[(stable, 200)]}
    assert run.load.lost == [], run.load.lost
    assert rolled["failedVersion"] == "1.2.0" and rolled["stableVersion"] == "1.0.0"
    check_history(rolled["history"], "1.2.0", "RolledBack", [20], f"{ns}/echo")
