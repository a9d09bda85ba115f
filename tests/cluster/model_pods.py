"""What the cluster modules that run model servers as pods share: the ModelVersion and HTTPRoute of a model `echo`,
the check on 5xx answers (the Gateway's count per backend), the Gateway stand-in that sends load by the route's
weights to the pods and counts their answers, and the module's cluster (control plane, node with the images the
pods run, Prometheus and the operator as a host process, as its RBAC user)."""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import json
import shutil
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily

from playground.controlplane import REPO, ControlPlane
from playground.kserve_controller import KServeController
from playground.node import STATE_SIZE, Node
from playground.operator import OperatorProcess
from playground.processes import free_port
from playground.prometheus import Prometheus
from playground.standin_backends import route_for
from playground.upstream_crds import GATEWAY_HTTPROUTES, upstream_crds

from ..conftest import model_version_manifest
from .test_node import wait_for

PROVIDER = "loopback-prometheus"
GATEWAY_ANSWERS = "gateway_backend_requests_total"
"""The Gateway stand-in's count of answers per backend Service and status code (GatewayStandIn.export)."""


def errors_check(counter: str) -> dict:
    """The check on the candidate's share of 5xx answers, from `counter`{namespace, service, code}, per Service (the
    version's, or KServe's predictor Service): the check's `{{revision}}`."""
    answers = counter + '{namespace="{{namespace}}", service="{{revision}}"'
    return {"name": "errors", "max": 0.05, "minSamples": 5,
            "query": f'(sum(rate({answers}, code=~"5.."}}[{{{{window}}}}])) or vector(0))'
                     f' / sum(rate({answers}}}[{{{{window}}}}]))',
            "sampleQuery": f"sum(increase({answers}}}[{{{{window}}}}]))"}


def analysis(check: dict) -> dict:
    return {"interval": "2s", "window": "6s", "failureLimit": 2, "noDataLimit": 100, "provider": PROVIDER,
            "checks": [check]}


def echo_version(ns: str, version: str, folder: str) -> dict:
    """The ModelVersion `version` of the model `echo`, its artifact modelops://echo/<folder>."""
    manifest = model_version_manifest("echo", version)
    manifest["metadata"]["namespace"] = ns
    manifest["spec"]["artifact"].update(uri=f"modelops://echo/{folder}", format="modelops-echo")
    return manifest


def http_route(ns: str, name: str, service: str) -> dict:
    """The user's HTTPRoute in front of the model: one path-only rule to `service`, handed to the ModelDeployment
    `echo`."""
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": name, "namespace": ns, "annotations": {"modelops.io/deployment": "echo"}},
            "spec": {"parentRefs": [{"name": "gateway"}],
                     "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                                "backendRefs": [{"name": service, "port": 80}]}]}}


def find(plane: ControlPlane, ns: str, kind: str, name: str) -> dict | None:
    out = plane.kubectl("get", kind, name, "-n", ns, "-o", "json", "--ignore-not-found").stdout
    return json.loads(out) if out.strip() else None


def model_status(plane: ControlPlane, ns: str) -> dict:
    """The ModelDeployment `echo`'s status ({} before it has one)."""
    return (find(plane, ns, "modeldeployment", "echo") or {}).get("status") or {}


def wait_status(plane: ControlPlane, ns: str, what: str, holds, timeout: float) -> dict:
    """The ModelDeployment `echo`'s first status that `holds`."""
    return wait_for(plane, what, lambda: (lambda st: st if holds(st) else None)(model_status(plane, ns)), timeout)


_namespaces = itertools.count(1)


@contextlib.contextmanager
def namespace(plane: ControlPlane, prefix: str) -> Iterator[str]:
    """A namespace of a test's own; deleted afterwards without waiting (its pods stop in the background)."""
    name = f"{prefix}-{next(_namespaces)}"
    plane.kubectl("create", "namespace", name)
    yield name
    plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


@dataclass
class Cluster:
    plane: ControlPlane
    prometheus: Prometheus
    root: Path
    kserve: KServeController | None


@contextlib.contextmanager
def operator_cluster(root: Path, kserve: bool = False, objects: Sequence[dict] = (),
                     images: Sequence[str] = ()) -> Iterator[Cluster]:
    """Control plane, node (with the podman `images` imported into its containerd), KServe's controller if
    `kserve`, the modelops CRDs and Gateway API's HTTPRoute, the operator's RBAC, `objects`, Prometheus with the
    ClusterMetricProvider `PROVIDER` naming it, and the operator: started in that order, stopped in reverse (also
    when a start fails half-way). Prints the start-up times, and the node's tmpfs use after the imports."""
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        plane = ControlPlane(root / "controlplane")
        stack.callback(plane.stop)
        plane.start()
        node = Node(plane, root / "node")
        stack.callback(node.stop)
        node.start()
        imported = time.monotonic()
        for image in images:
            node.import_image(image)
        if images:
            used = shutil.disk_usage(node.state).used
            print(f"\n{', '.join(images)} imported into the node in {time.monotonic() - imported:.1f} s; "
                  f"the node's tmpfs ({STATE_SIZE}) holds {used / 1e9:.2f} GB")
        controller = None
        if kserve:
            controller = KServeController(plane, root / "kserve")
            stack.callback(controller.stop)
            controller.start()
        plane.install_crds(*sorted((REPO / "crds").glob("*.yaml")),
                           upstream_crds([GATEWAY_HTTPROUTES]) / GATEWAY_HTTPROUTES)
        plane.kubectl("apply", "-f", str(REPO / "deploy" / "rbac.yaml"))
        prometheus = stack.enter_context(Prometheus(root / "prometheus"))
        plane.apply({"apiVersion": "v1", "kind": "List", "items": [*objects, {
            "apiVersion": "modelops.io/v1alpha1", "kind": "ClusterMetricProvider", "metadata": {"name": PROVIDER},
            "spec": {"prometheus": {"address": prometheus.url, "timeout": "2s"}, "namespaceSelector": {}}}]})
        (root / "operator").mkdir()
        operator = OperatorProcess(plane.kubeconfig_for("modelops-operator"), root / "operator")
        stack.callback(operator.stop)
        operator.start()
        print(f"\ncluster start-up: {time.monotonic() - started:.0f} s (control plane {plane.startup_seconds:.0f} s, "
              f"node {node.startup_seconds:.0f} s, then{' KServe,' if kserve else ''} CRDs, Prometheus, operator)")
        yield Cluster(plane, prometheus, root, controller)


# Where a request goes that the Gateway would answer itself (500 or 503): nothing listens on the discard port,
# so the load generator counts it as lost.
NO_BACKEND = "http://127.0.0.1:9"


def gateway_split(route: dict, services: set[str], pods: dict[str, list[str]]) -> list[dict]:
    """Where a Gateway sends a request on /v1/models/echo:predict without headers, as a split the load generator
    follows ({unit, percent, url}; percents relative to their sum): the rule that request reaches by Gateway API's
    precedence, each backendRef weighted by its `weight` (1 when unset, left out when 0) and sent to the lowest
    address among its Service's ready pods (`pods`: Service -> ready pod IPs); `NO_BACKEND` for a ref to none of
    `services` or to a Service without a ready pod, and for the whole rule when no ref has a weight. [] when no
    rule matches."""
    table = []
    for rule in route["spec"].get("rules") or []:
        refs = [ref for ref in rule.get("backendRefs") or [] if ref.get("weight", 1) > 0]
        split = [{"unit": ref["name"], "percent": ref.get("weight", 1),
                  "url": f"http://{min(pods[ref['name']], key=ipaddress.ip_address)}:8080"
                  if ref["name"] in services and pods.get(ref["name"]) else NO_BACKEND} for ref in refs]
        table.append({"matches": rule.get("matches") or [{}],
                      "split": split or [{"unit": "no-backend", "percent": 1, "url": NO_BACKEND}]})
    chosen = route_for(table, "/v1/models/echo:predict", {})
    return chosen["split"] if chosen else []


class GatewayStandIn(threading.Thread):
    """The data plane of a Gateway API implementation for one HTTPRoute, and Prometheus's discovery of the
    model servers' pods, in one thread that reads the API every 0.3 s. No Gateway implementation runs here.

    As an implementation does, per the Gateway API spec (HTTPRoute backendRefs): a request goes to the rule
    that matches it best (`route_for`: Gateway API's precedence); within that rule each backendRef gets
    weight / (sum of the rule's weights) of the requests, weight 1 when unset, none when 0; a ref whose Service
    has no ready endpoint keeps its share, and the Gateway answers that share itself (503; 500 for a ref to a
    Service that does not exist, and for all of a rule whose weights are all 0). Readiness comes from the
    Services' EndpointSlices, as the real EndpointSlice controller writes them from the pods. The route's
    status gets the Gateway's verdict for every new generation, and again when a Service it names appears or
    goes: Accepted, and ResolvedRefs True when every ref names a Service that exists.

    It publishes, in `split_file`, the split a `LoadGenerator` follows (re-reading it every 0.1 s),
    each Service's share sent to its lowest-addressed ready pod over the node's bridge; a share the Gateway
    would answer itself goes to `NO_BACKEND`, so the load generator counts it as lost. Not done: balancing
    among a Service's pods, filters (mirrors), and any rule but the one a request on
    /v1/models/<name>:predict without headers reaches.

    Every ready pod is a Prometheus scrape target on port 8080, labelled with its namespace and Service.

    With `export`, what this data plane forwarded is counted as Gateway implementations count it, per backend and
    answer code (Envoy's envoy_cluster_upstream_rq{envoy_response_code}, Istio's istio_requests_total{
    destination_service, response_code}; Gateway API itself standardises no metrics): `GATEWAY_ANSWERS`{namespace,
    route, service, code} on a loopback /metrics that Prometheus scrapes. A check needs this where the model server
    counts no answers by status code: KServe's Python ModelServer exports latency histograms per model only
    (request_predict_seconds{model_name}, failed predictions included)."""

    def __init__(self, cluster: Cluster, ns: str, route: str):
        super().__init__(daemon=True)
        self.plane, self.prometheus, self.ns, self.route = cluster.plane, cluster.prometheus, ns, route
        self.split_file = cluster.root / f"split-{ns}-{route}.json"
        self.context = ssl.create_default_context(cafile=str(self.plane.ca.cert_path))
        self.context.load_cert_chain(str(self.plane.admin.cert), str(self.plane.admin.key))
        self.targets: dict[str, str] = {}
        self.verdict_written: tuple[int, bool] | None = None
        self.halt = threading.Event()
        self.exporter: WSGIServer | None = None
        self.exporter_address = ""

    def api(self, path: str) -> dict | None:
        try:
            with urllib.request.urlopen(self.plane.url + path, context=self.context, timeout=5) as reply:
                return json.load(reply)
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None
            raise

    def ready_pods(self) -> dict[str, list[str]]:
        """Service -> its ready pods' IPs, from the EndpointSlices (a nil `ready` means ready, as the API says)."""
        pods: dict[str, list[str]] = {}
        for eps in self.api(f"/apis/discovery.k8s.io/v1/namespaces/{self.ns}/endpointslices")["items"]:
            service = eps["metadata"].get("labels", {}).get("kubernetes.io/service-name")
            for endpoint in eps.get("endpoints") or []:
                if (endpoint.get("conditions") or {}).get("ready") is not False:
                    pods.setdefault(service, []).extend(endpoint["addresses"])
        return pods

    def sync_targets(self, pods: dict[str, list[str]]) -> None:
        targets = {f"{ip}:8080": service for service, ips in pods.items() for ip in ips}
        if targets != self.targets:
            for address in self.targets.keys() - targets.keys():
                self.prometheus.remove_target(address)
            for address, service in targets.items():
                self.prometheus.add_target(address, namespace=self.ns, service=service)
            self.targets = targets

    def write_verdict(self, route: dict, services: set[str]) -> None:
        """The route's verdict, written again whenever its generation or whether its Services exist changes (a
        Gateway re-resolves a route's references when a Service appears, as the Gateway API spec asks of
        ResolvedRefs)."""
        generation = route["metadata"]["generation"]
        resolved = all(ref["name"] in services for rule in route["spec"].get("rules") or []
                       for ref in rule.get("backendRefs") or [])
        if (generation, resolved) == self.verdict_written:
            return
        verdict = {"status": {"parents": [{
            "parentRef": parent, "controllerName": "example.com/gateway-stand-in",
            "conditions": [{"type": kind, "status": str(ok), "reason": kind if ok else "BackendNotFound",
                            "message": "", "observedGeneration": generation,
                            "lastTransitionTime": "2026-01-01T00:00:00Z"}
                           for kind, ok in (("Accepted", True), ("ResolvedRefs", resolved))]}
            for parent in route["spec"]["parentRefs"]]}}
        self.plane.kubectl("patch", "httproute", self.route, "-n", self.ns, "--subresource=status",
                           "--type=merge", "-p", json.dumps(verdict))
        self.verdict_written = (generation, resolved)

    def sync(self) -> None:
        pods = self.ready_pods()
        self.sync_targets(pods)
        route = self.api(f"/apis/gateway.networking.k8s.io/v1/namespaces/{self.ns}/httproutes/{self.route}")
        if route is None:
            return
        services = {s["metadata"]["name"] for s in self.api(f"/api/v1/namespaces/{self.ns}/services")["items"]}
        partial = self.split_file.with_suffix(".partial")
        partial.write_text(json.dumps(gateway_split(route, services, pods)))
        partial.replace(self.split_file)
        self.write_verdict(route, services)  # after the split: a slow write must not hold the data plane back

    def wait_programmed(self, timeout: float = 30) -> None:
        """Until every share of the published split goes to a pod. The operator sees a version ready from the
        EndpointSlices it watches; this data plane reads them a moment later (as a real one does), and a request
        sent in between would be answered by the Gateway, not a pod."""
        def programmed() -> bool:
            try:
                split = json.loads(self.split_file.read_text())
            except (OSError, ValueError):
                return False
            return bool(split) and all(t["url"] != NO_BACKEND for t in split)
        wait_for(self.plane, f"the Gateway routing {self.ns}/{self.route} to pods", programmed, timeout)

    def export(self, answers: Counter[tuple[str, int]]) -> None:
        """Serves `answers` as `GATEWAY_ANSWERS`: the (Service, status) counter of the `LoadGenerator` that forwards
        this data plane's requests, read at each scrape; a request that got no answer (status 0) counts as the 503
        a Gateway answers when it cannot reach a backend."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_GatewayAnswers(self.ns, self.route, answers))
        port = free_port()
        self.exporter, _ = start_http_server(port, "127.0.0.1", registry)
        self.exporter_address = f"127.0.0.1:{port}"
        self.prometheus.add_target(self.exporter_address)

    def run(self) -> None:
        while not self.halt.is_set():
            with contextlib.suppress(OSError, ValueError, KeyError, RuntimeError):
                self.sync()
            self.halt.wait(0.3)

    def stop(self) -> None:
        self.halt.set()
        if self.ident is not None:
            self.join(5)
        for address in self.targets:
            self.prometheus.remove_target(address)
        if self.exporter is not None:
            self.prometheus.remove_target(self.exporter_address)
            self.exporter.shutdown()
            self.exporter.server_close()


class _GatewayAnswers:
    """A prometheus_client collector: a load generator's (Service, status) counts as `GATEWAY_ANSWERS`."""

    def __init__(self, ns: str, route: str, answers: Counter[tuple[str, int]]):
        self.ns, self.route, self.answers = ns, route, answers

    def collect(self):
        tally: Counter[tuple[str, str]] = Counter()
        # dict.copy is one C call, so the load generator's thread cannot change the counter during it.
        for (service, code), count in dict.copy(self.answers).items():
            tally[(service, str(code or 503))] += count
        family = CounterMetricFamily(GATEWAY_ANSWERS.removesuffix("_total"), "Requests forwarded, by backend and answer",
                                     labels=["namespace", "route", "service", "code"])
        for (service, code), count in sorted(tally.items()):
            family.add_metric([self.ns, self.route, service, code], count)
        yield family
