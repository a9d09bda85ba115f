"""Drives one ModelDeployment through a scenario and reads back what the operator did."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any, Callable

from playground.controlplane import ControlPlane
from playground.loadgen import LoadGenerator
from playground.prometheus import Prometheus
from playground.serving import ServingStandIn

ACCURACY = ('sum(rate(model_correct_total{namespace="{{namespace}}", model="{{model}}", version="{{version}}"}[{{window}}]))'
            ' / sum(rate(model_graded_total{namespace="{{namespace}}", model="{{model}}", version="{{version}}"}[{{window}}]))')
GRADED = 'sum(increase(model_graded_total{namespace="{{namespace}}", model="{{model}}", version="{{version}}"}[{{window}}]))'
DIGEST = "sha256:" + "0" * 64
BACKEND_KINDS = {"kserve": "inferenceservices", "seldon": "seldondeployments",
                 "seldonV2": "models.mlops.seldon.io,experiments.mlops.seldon.io", "gatewayAPI": "httproutes"}


ERRORS = {  # the built-in error-rate check where the backend has one; PromQL of the app's own metrics otherwise
    "gatewayAPI": {"name": "errors", "max": 0.05, "minSamples": 5, "query":
                   '(sum(rate(http_request_duration_seconds_count{namespace="{{namespace}}", service="{{revision}}", '
                   'code=~"5.."}[{{window}}])) or vector(0)) / sum(rate(http_request_duration_seconds_count{'
                   'namespace="{{namespace}}", service="{{revision}}"}[{{window}}]))',
                   "sampleQuery": 'sum(increase(http_request_duration_seconds_count{namespace="{{namespace}}", '
                                  'service="{{revision}}"}[{{window}}]))'},
}


def fast_spec(prometheus_url: str, backend: str = "kserve", **overrides: Any) -> dict[str, Any]:
    """A ModelDeployment spec with one-second analyses, for tests."""
    spec = {
        "strategy": {"steps": [{"weight": 20, "pause": "2s"}, {"weight": 50, "pause": "2s"}]},
        "analysis": {
            "interval": "1s", "window": "5s", "failureLimit": 2, "noDataLimit": 8,
            "prometheus": {"address": prometheus_url, "timeout": "2s"},
            "checks": [
                ERRORS.get(backend, {"name": "errors", "template": "errorRate", "max": 0.05, "minSamples": 5}),
                {"name": "accuracy", "query": ACCURACY, "sampleQuery": GRADED, "maxDropPercent": 5, "minSamples": 30},
            ],
        },
    }
    for key, value in overrides.items():
        spec[key] = {**spec[key], **value} if isinstance(value, dict) and key in spec else value
    return spec


def check_history(history: list[dict[str, Any]], version: str, outcome: str, steps: list[int], where: str) -> None:
    """The rollout of `version` is in `history` once: started once, each step once and in order, one
    outcome (`where` names the ModelDeployment in a failure)."""
    entries = [h for h in history if h["version"] == version]
    actions = [h["action"] for h in entries]
    reasons = [h["reason"] for h in entries if h["action"] == "StepAdvanced"]
    expected_steps = [f"step {i + 1}/{len(steps)} at {w}%" for i, w in enumerate(steps)]
    where = f"{where} {version}: history {[(h['action'], h['reason']) for h in entries]}"
    assert actions.count("RolloutStarted") == 1 and actions[0] == "RolloutStarted", where
    assert len(reasons) == len(set(reasons)), f"a step recorded twice: {where}"
    assert reasons == expected_steps[:len(reasons)], f"steps skipped or out of order: {where}"
    assert actions.count(outcome) == 1 and actions[-1] == outcome, where
    assert set(actions) <= {"RolloutStarted", "StepAdvanced", outcome}, where
    if outcome == "Promoted":
        assert reasons == expected_steps, f"promoted without walking every step: {where}"


def unit_name(version: str) -> str:
    return "v" + version.replace(".", "-")


class Scenario:
    def __init__(self, control_plane: ControlPlane, namespace: str, standin: ServingStandIn, name: str = "fraud"):
        self.cp, self.ns, self.standin, self.name = control_plane, namespace, standin, name
        self.backend = standin.backend
        self.load: LoadGenerator | None = None
        self.services: dict[str, str] = {}
        self.pins: list[dict[str, Any]] = []
        """Gateway API: the user's own rules that pin requests to a version, before the model's rule."""
        self.labels: dict[str, str] = {}
        """The ModelDeployment's labels (a shard's, say)."""

    def version(self, version: str, **behaviour: Any) -> None:
        uri = f"s3://models/{self.name}/{self.ns}/{version}"
        if self.backend == "gatewayAPI":  # each version is a Service of its own
            service = f"{self.name}-{unit_name(version)}"
            self.cp.kubectl("create", "service", "clusterip", service, "--tcp=80:8080", "-n", self.ns)
            self.services[version] = service
            self.standin.artifact(f"svc://{self.ns}/{service}", self.name, version, **behaviour)
        else:
            self.standin.artifact(uri, self.name, version, **behaviour)
        self.cp.apply({
            "apiVersion": "modelops.io/v1alpha1", "kind": "ModelVersion",
            "metadata": {"name": f"{self.name}-{version.replace('.', '-')}", "namespace": self.ns},
            "spec": {"model": self.name, "version": version,
                     "artifact": {"uri": uri, "digest": DIGEST, "format": "sklearn"}},
        })

    def serving(self, version: str) -> dict[str, Any]:
        if self.backend != "gatewayAPI":
            return {"backend": self.backend}
        # The user's own route: a rule for the model and one the operator must leave alone (and its Service).
        self.cp.apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "docs", "namespace": self.ns},
                       "spec": {"ports": [{"port": 80, "targetPort": 8080}]}})
        self.cp.apply({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            # Handed to the ModelDeployment of the same name: the operator drives no route that does not name it.
            "metadata": {"name": self.name, "namespace": self.ns, "annotations": {"modelops.io/deployment": self.name}},
            "spec": {"parentRefs": [{"name": "gateway"}], "rules": [
                *self.pins,
                {"backendRefs": [{"name": self.services[version], "port": 80, "weight": 100}]},
                {"matches": [{"path": {"type": "PathPrefix", "value": "/docs"}}],
                 "backendRefs": [{"name": "docs", "port": 80}]},
            ]},
        })
        return {"backend": "gatewayAPI", "gatewayAPI": {"route": self.name, "services": self.services, "port": 80}}

    def provider(self, address: str, timeout: str = "2s") -> str:
        """The ClusterMetricProvider an administrator would declare for `address` (every namespace may use it)."""
        name = "prom-" + hashlib.sha256(f"{address} {timeout}".encode()).hexdigest()[:10]
        self.cp.apply({"apiVersion": "modelops.io/v1alpha1", "kind": "ClusterMetricProvider", "metadata": {"name": name},
                       "spec": {"prometheus": {"address": address, "timeout": timeout}, "namespaceSelector": {}}})
        return name

    def deploy(self, version: str, spec: dict[str, Any]) -> None:
        """Apply the ModelDeployment; a Prometheus given inline is declared as a ClusterMetricProvider first
        (the operator honours no inline address by default)."""
        inline = (spec.get("analysis") or {}).get("prometheus")
        if inline is not None:
            analysis = {k: v for k, v in spec["analysis"].items() if k != "prometheus"}
            spec = {**spec, "analysis": {**analysis, "provider": self.provider(inline["address"],
                                                                                inline.get("timeout", "2s"))}}
        self.cp.apply({
            "apiVersion": "modelops.io/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": self.name, "namespace": self.ns, "labels": self.labels},
            "spec": {"model": self.name, "version": version, "serving": self.serving(version), **spec},
        })

    def serve(self, version: str, spec: dict[str, Any], prometheus: Prometheus, rps: float = 50) -> None:
        """Deploy `version`, put load on it, and wait until Prometheus has its rates (a live service)."""
        self.deploy(version, spec)
        self.wait(lambda st: st.get("phase") == "Stable" and st.get("stableVersion") == version, 30,
                  f"{version} serving")
        self.load = LoadGenerator(self.standin.split_file(self.ns, self.name), rps)
        self.load.start()
        prometheus.wait_for(f'rate(model_graded_total{{namespace="{self.ns}", version="{version}"}}[5s]) > 0')

    def stop_load(self) -> None:
        if self.load is not None:
            self.load.stop()

    def patch(self, spec: dict[str, Any]) -> None:
        self.cp.kubectl("patch", "mdep", self.name, "-n", self.ns, "--type", "merge", "-p", json.dumps({"spec": spec}))

    def get(self, kind: str = "mdep", name: str | None = None) -> dict[str, Any]:
        return json.loads(self.cp.kubectl("get", kind, name or self.name, "-n", self.ns, "-o", "json").stdout)

    def status(self) -> dict[str, Any]:
        return self.get().get("status") or {}

    def wait(self, predicate: Callable[[dict[str, Any]], bool], timeout: float, what: str) -> dict[str, Any]:
        """Poll the ModelDeployment's status until `predicate` holds; fail with the status if it never does."""
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = self.status()
            if predicate(status):
                return status
            time.sleep(0.1)
        backend = self.cp.kubectl("get", BACKEND_KINDS[self.backend], "-n", self.ns, "-o", "yaml", check=False).stdout
        raise AssertionError(f"{what}: not within {timeout}s; status is {json.dumps(status, indent=1)[:4000]}\n"
                             f"backend objects:\n{backend[:6000]}")

    def actions(self) -> list[tuple[str, str]]:
        return [(h["action"], h["version"]) for h in self.status().get("history", [])]

    def events(self) -> list[str]:
        events = json.loads(self.cp.kubectl("get", "events", "-n", self.ns, "-o", "json").stdout)["items"]
        return [e["reason"] for e in sorted(events, key=lambda e: e.get("firstTimestamp") or e.get("eventTime") or "")]
