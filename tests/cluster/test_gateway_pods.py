"""The Gateway API backend on a real single-node cluster, the demo's KServe model servers as pods taking the traffic.

One cluster for the module (model_pods.operator_cluster: control plane, node, the modelops CRDs and
HTTPRoute's, Prometheus on loopback, the operator as a host process as its RBAC user); each test in a
namespace of its own. The model server's image is built from demo/Dockerfile (KServe's Python ModelServer,
demo/model_server.py, with scikit-learn; build size and times printed) and imported into the node's
containerd. Per version of the model `echo` a Deployment (one pod of that image) and a Service; the pod's
init container "downloads" the version's artifact into /mnt/models, as KServe's storage initializer would,
by copying the one demo/models.py trained into the image at build time. The EndpointSlices are the real
EndpointSlice controller's, from the pods' readiness probes (KServe's model readiness endpoint). The
user's HTTPRoute routes to v1's Service; the ModelDeployment maps each version to its Service.

The versions are the demo's models: 1.0.0 its v1 (logistic regression), 1.1.0 its v3 (SVC), 1.2.0 its v2,
the bad release (demo/models.py SlowAndBrittle): every request carries a bright digit, on which v2's
predict raises and KServe answers 500, so the rollback is driven by the model server's real failures.

The data plane is `GatewayStandIn` (model_pods.py): no Gateway implementation runs here (no Envoy). It
splits requests by the route's weights as the Gateway API spec has an implementation do, and sends each
Service's share to its pod's IP over the node's bridge; a request the Gateway would answer itself (a ref
without a ready endpoint, or to no Service) counts as lost. KServe's server counts no answers by status
code, so the check reads the Gateway's count per backend and code (`gateway_backend_requests_total`, as
Gateway implementations export one), its `service` label the check's `{{revision}}`.

Asserted, on objects and the load generator's counts (never on logs): per step the route's weights and the
share of requests routed under them; status (phase, versions, history); every request answered (none lost);
after the rollback not one request routed to the failed version, and each pod's own count of predictions
(KServe's request_predict_seconds_count) equal to what the load generator sent it. Needs root (the node).
Deselect with `-m "not node"`.
"""

from __future__ import annotations

import collections
import datetime
import json
import time
import urllib.request

import pytest

from playground.controlplane import ControlPlane
from playground.loadgen import LoadGenerator

from ..integration.scenario import check_history
from .model_pods import (GATEWAY_ANSWERS, Cluster, GatewayStandIn, analysis, echo_version, errors_check, find,
                         http_route, namespace, operator_cluster, wait_status)
from .test_node import get, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.node]

ARTIFACTS = {"1.0.0": "1.0.0", "1.1.0": "3.0.0", "1.2.0": "2.0.0"}  # the demo's versions; its 2.0.0 fails
# A bright digit: mean pixel 8, above the 5.6 on which the demo's 2.0.0 raises (demo/models.py SlowAndBrittle).
BODY = json.dumps({"instances": [[8.0] * 64]}).encode()
ERRORS = errors_check(GATEWAY_ANSWERS)
RPS = 20
STEPS = [20, 50]


def service(version: str) -> str:
    return "echo-v" + version.replace(".", "-")


def version_objects(ns: str, version: str, image: str) -> list[dict]:
    """The version's ModelVersion, Deployment (one pod of the model server) and Service."""
    app = service(version)
    models = {"name": "models", "mountPath": "/mnt/models"}
    return [echo_version(ns, version, ARTIFACTS[version]), {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": app, "namespace": ns}, "spec": {
            "replicas": 1, "selector": {"matchLabels": {"app": app}},
            "template": {"metadata": {"labels": {"app": app}}, "spec": {
                "automountServiceAccountToken": False,
                "volumes": [{"name": "models", "emptyDir": {}}],
                "initContainers": [{"name": "storage-initializer", "image": image, "imagePullPolicy": "Never",
                                    "command": ["cp", f"/opt/models/{ARTIFACTS[version]}/model.joblib", "/mnt/models/"],
                                    "volumeMounts": [models]}],
                # The image's own command: demo/model_server.py on /mnt/models/model.joblib, port 8080, the
                # model named "model" (the name the load generator's requests use).
                "containers": [{
                    "name": "kserve-container", "image": image, "imagePullPolicy": "Never",
                    "ports": [{"containerPort": 8080}], "volumeMounts": [models],
                    "readinessProbe": {"httpGet": {"path": "/v1/models/model", "port": 8080}, "periodSeconds": 1},
                }]}}}}, {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": app, "namespace": ns},
        "spec": {"selector": {"app": app}, "ports": [{"port": 80, "targetPort": 8080}]}}]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, model_server):
    with operator_cluster(tmp_path_factory.mktemp("gateway-pods"), images=[model_server]) as cluster:
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


def predictions(plane: ControlPlane, ns: str, version: str) -> int:
    """The version's pod's own count of the predictions it ran, failed ones included (KServe times them all):
    request_predict_seconds_count of the model `model`, read from its /metrics."""
    [pod] = get(plane, "pods", "-n", ns, "-l", f"app={service(version)}")["items"]
    with urllib.request.urlopen(f"http://{pod['status']['podIP']}:8080/metrics", timeout=10) as reply:
        lines = reply.read().decode().splitlines()
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in lines
               if line.startswith('request_predict_seconds_count{model_name="model"}'))


def pod_start_seconds(plane: ControlPlane, ns: str, version: str) -> int:
    """From the version's pod's creation to its Ready condition, in the API's whole seconds."""
    [pod] = get(plane, "pods", "-n", ns, "-l", f"app={service(version)}")["items"]
    ready = next(c for c in pod["status"]["conditions"] if c["type"] == "Ready")
    def seconds(stamp: str) -> float:
        return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    return round(seconds(ready["lastTransitionTime"]) - seconds(pod["metadata"]["creationTimestamp"]))


class Serving:
    """A namespace's model `echo` served through the Gateway stand-in, with load on it."""

    def __init__(self, cluster: Cluster, ns: str, image: str):
        self.plane, self.ns, self.image, self.candidate = cluster.plane, ns, image, ""
        self.gateway = GatewayStandIn(cluster, ns, "echo")
        self.load = LoadGenerator(self.gateway.split_file, RPS, body=BODY)
        self.setup_seconds = 0.0

    def start(self, candidate: str, steps: list[dict]) -> Serving:
        """Versions 1.0.0 and `candidate` as pods, the route on 1.0.0, the ModelDeployment on 1.0.0 with `steps`;
        returns once 1.0.0 is Stable and answering the load through the route, and `candidate`'s pod is ready.
        Prints each pod's start time."""
        ns, self.candidate = self.ns, candidate
        started = time.monotonic()
        self.plane.apply({"apiVersion": "v1", "kind": "List", "items": [
            http_route(ns, "echo", service("1.0.0")),
            *version_objects(ns, "1.0.0", self.image), *version_objects(ns, candidate, self.image)]})
        self.gateway.export(self.load.results)
        self.gateway.start()
        self.plane.apply({
            "apiVersion": "modelops.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "echo", "namespace": ns},
            "spec": {"model": "echo", "version": "1.0.0", "strategy": {"steps": steps}, "analysis": analysis(ERRORS),
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
        print(f"\npods from creation to Ready: " + ", ".join(
            f"{v} {pod_start_seconds(self.plane, ns, v)} s" for v in ("1.0.0", candidate)))
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
def serving(cluster, ns, model_server):
    run = Serving(cluster, ns, model_server)
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
    assert predictions(plane, ns, "1.0.0") == run.load.results[(stable, 200)]
    assert predictions(plane, ns, "1.1.0") == run.load.results[(candidate, 200)]
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
    assert predictions(plane, ns, "1.2.0") == answered_500
    assert predictions(plane, ns, "1.0.0") == run.load.results[(stable, 200)]
    assert run.load.lost == [], run.load.lost
    assert rolled["failedVersion"] == "1.2.0" and rolled["stableVersion"] == "1.0.0"
    check_history(rolled["history"], "1.2.0", "RolledBack", [20], f"{ns}/echo")
