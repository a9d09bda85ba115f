"""`make demo`: a real model rollout, a shadow step, an automatic rollback, a promotion and a rollback drill.

A local control plane and Prometheus, the operator, a stand-in for a Gateway API implementation that routes the
user's HTTPRoute to one Service per version, each served by a real KServe ModelServer process, and graded
traffic. Every rollout starts with a shadow step: the Gateway copies every request to the candidate, discards its
answers and the candidate's side counts how often it agrees with what the stable version answered. v1 serves; v2
(worse, slower, failing on some inputs, and trained on a slice of the data the live inputs have drifted from) is
rolled back by the operator on its own during its shadow step, before any user got an answer from it; v3 walks
shadow -> 20% -> 50% and is promoted; then a rollback drill sends all traffic to the fallback v1 and back to v3,
timed. Leaves a timeline PNG and a report.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playground.controlplane import REPO, ControlPlane
from playground.operator import OperatorProcess
from playground.prometheus import Prometheus
from playground.serving import ServingStandIn
from playground.upstream_crds import GATEWAY_STANDARD, UpstreamCRDsUnavailable, upstream_crds

from .models import model_version, train_all
from .traffic import GradedTraffic

NAMESPACE, MODEL = "demo", "digits"
ROUTE = MODEL
"""The user's HTTPRoute for the model, handed to the ModelDeployment of the same name."""
AGREEMENT_MIN = 0.9
"""Offline, on the held-out split the traffic replays, v3 agrees with v1 on 98.5 % of the digits (95 % in the
worst 100 consecutive requests), v2 on 56 %: 0.9 passes v3 with margin and would stop v2 even without its errors."""


RPS = 40
"""The users' requests a second."""
DRIFT_MAX = 0.25
"""The drift score (PSI) the report holds a candidate's inputs against: live inputs score about 0.05 against v1's
and v3's training data (the whole training split), about 1.2 against v2's (its dimmer half). The analysis judges
drift by driftTest, which needs no threshold."""


def _requests(series: str, more_labels: str = "") -> str:
    """A version's request histogram (`count` or `bucket` series) as its queue-proxy exports it, {{revision}}
    being its Service: Gateway API standardises no metrics, so the checks are queries of the app's own. In a
    shadow step the candidate's series count its answers to the copies."""
    return 'http_request_duration_seconds_' + series + '{namespace="{{namespace}}", service="{{revision}}"' + more_labels + '}'


REQUESTS_IN_WINDOW = "sum(increase(" + _requests("count") + "[{{window}}]))"
ERROR_RATE = ("(sum(rate(" + _requests("count", ', code=~"5.."') + "[{{window}}])) or vector(0))"
              " / sum(rate(" + _requests("count") + "[{{window}}]))")
LATENCY_P95 = "histogram_quantile(0.95, sum by (le) (rate(" + _requests("bucket") + "[{{window}}])))"


def service_name(version: str) -> str:
    """The Service in front of one version's model server, e.g. digits-v1-0-0."""
    return f"{MODEL}-v{version.replace('.', '-')}"


def deployment_spec(versions: list[str]) -> dict[str, Any]:
    return {
        "model": MODEL, "version": "1.0.0",
        "serving": {"backend": "gatewayAPI", "gatewayAPI": {
            "route": ROUTE, "services": {v: service_name(v) for v in versions}, "port": 80}},
        "strategy": {"steps": [{"mirror": 100, "pause": "8s"}, {"weight": 20, "pause": "8s"},
                               {"weight": 50, "pause": "8s"}]},
        "analysis": {
            "interval": "2s", "window": "10s", "failureLimit": 2, "noDataLimit": 6,
            "checks": [
                {"name": "error-rate", "query": ERROR_RATE, "sampleQuery": REQUESTS_IN_WINDOW, "max": 0.02,
                 "minSamples": 10},
                {"name": "p95-latency", "query": LATENCY_P95, "sampleQuery": REQUESTS_IN_WINDOW,
                 "maxIncreasePercent": 150, "minSamples": 20},
                # Graded answers are users' answers: in the shadow step nobody grades the candidate's discarded ones.
                {"name": "accuracy", "template": "accuracy", "maxDropPercent": 5, "minSamples": 30,
                 "stepKinds": ["weight"]},
                {"name": "agreement", "template": "shadowAgreement", "min": AGREEMENT_MIN, "minSamples": 20},
                # The drift detector's binned inputs tested against the version's training data's, alpha 5 % spread
                # over the analyses of two minutes (the windows overlap: Bonferroni holds all the same).
                {"name": "drift", "template": "driftTest", "driftTest": {"looks": 60}},
            ],
        },
    }


def user_route(stable_version: str) -> dict[str, Any]:
    """The user's own HTTPRoute, all traffic to the stable version's Service; the operator drives its weights."""
    return {
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": ROUTE, "namespace": NAMESPACE, "annotations": {"modelops.io/deployment": MODEL}},
        "spec": {"parentRefs": [{"name": "gateway"}],
                 "rules": [{"backendRefs": [{"name": service_name(stable_version), "port": 80, "weight": 100}]}]},
    }


@dataclass
class Timeline:
    start: float = field(default_factory=time.time)
    points: list[dict[str, Any]] = field(default_factory=list)

    def record(self, status: dict[str, Any]) -> dict[str, Any] | None:
        point = {"t": time.time(), "phase": status.get("phase"), "stable": status.get("stableVersion"),
                 "canary": status.get("canaryVersion"), "weight": status.get("canaryWeight", 0),
                 "mirror": status.get("canaryMirror", 0),
                 "checks": {c["name"]: (c.get("value"), c["verdict"], c["limit"]) for c in status.get("checks", [])}}
        changed = not self.points or {k: v for k, v in point.items() if k != "t"} != \
            {k: v for k, v in self.points[-1].items() if k != "t"}
        self.points.append(point)
        return point if changed else None


class Demo:
    def __init__(self, out: Path, work: Path, live: bool, gateway_crds: Path):
        self.out, self.work, self.live, self.gateway_crds = out, work, live, gateway_crds
        self.timeline = Timeline()
        self.parts: list[Any] = []

    def say(self, text: str) -> None:
        if self.live:
            print(f"[{time.time() - self.timeline.start:6.1f}s] {text}", flush=True)

    def start(self) -> None:
        self.say("starting etcd and kube-apiserver")
        self.plane = ControlPlane(self.work / "controlplane").start()
        self.parts.append(self.plane)
        self.plane.install_crds(*sorted((REPO / "crds").glob("*.yaml")), self.gateway_crds)
        self.plane.kubectl("apply", "-f", str(REPO / "deploy" / "rbac.yaml"))
        self.say("starting Prometheus, the operator and the Gateway API stand-in")
        self.prometheus = Prometheus(self.work / "prometheus").start()
        self.parts.append(self.prometheus)
        # What an administrator declares once: the Prometheus every namespace's analyses query.
        self.plane.apply({"apiVersion": "modelops.io/v1alpha1", "kind": "ClusterMetricProvider",
                          "metadata": {"name": "default"},
                          "spec": {"prometheus": {"address": self.prometheus.url, "timeout": "2s"},
                                   "namespaceSelector": {}}})
        self.operator = OperatorProcess(self.plane.kubeconfig_for("modelops-operator"), self.work).start()
        self.parts.append(self.operator)
        self.standin = ServingStandIn("gatewayAPI", self.plane.kubeconfig, self.prometheus, self.work / "standin")
        self.parts.append(self.standin)

    def publish_models(self) -> list[Any]:
        self.say("training three versions of a digits classifier")
        trained = train_all(self.work / "artifacts")
        self.plane.kubectl("create", "namespace", NAMESPACE)
        for t in trained:
            service = service_name(t.version)
            self.plane.kubectl("create", "service", "clusterip", service, "--tcp=80:8080", "-n", NAMESPACE)
            command = [sys.executable, "-m", "demo.model_server", str(t.path), "{port}"]
            # The Gateway stand-in serves the pods behind a Service: one real model server per version's Service.
            self.standin.model_server(f"svc://{NAMESPACE}/{service}", MODEL, t.version, command)
            self.plane.apply(model_version(t, NAMESPACE))
            self.say(f"ModelVersion {t.version}: offline accuracy {t.accuracy:.3f}, {t.digest[:19]}...")
        return trained

    def status(self) -> dict[str, Any]:
        out = self.plane.kubectl("get", "mdep", MODEL, "-n", NAMESPACE, "-o", "json", check=False)
        return (json.loads(out.stdout).get("status") or {}) if out.returncode == 0 else {}

    def follow(self, done, timeout: float, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status()
            changed = self.timeline.record(status)
            if changed:
                checks = "  ".join(f"{n}={_fmt(v)} ({verdict}, {limit})" for n, (v, verdict, limit) in changed["checks"].items())
                share = f"mirrored {changed['mirror']}%" if changed["mirror"] else f"at {changed['weight']}%"
                canary = f" {changed['canary']} {share}" if changed["canary"] else ""
                self.say(f"{changed['phase']} stable {changed['stable']}{canary}  {checks}")
            if done(status):
                return status
            time.sleep(0.25)
        raise TimeoutError(f"{what} did not happen within {timeout}s; status: {json.dumps(self.status())[:2000]}")

    def stop(self) -> None:
        for part in reversed(self.parts):
            part.stop()


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.4g}"


def run_demo(out: Path, live: bool = True, upstream: Path | None = None) -> dict[str, Any]:
    """`upstream`: a folder holding Gateway API's standard CRDs; found or fetched first (before anything slow
    starts) when not given, raising UpstreamCRDsUnavailable if it cannot be."""
    gateway_crds = (upstream or upstream_crds([GATEWAY_STANDARD])) / GATEWAY_STANDARD
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="modelops-demo-") as tmp:
        demo = Demo(out, Path(tmp), live, gateway_crds)
        try:
            demo.start()
            trained = demo.publish_models()
            return rollout_story(demo, trained)
        finally:
            demo.stop()


def rollout_story(demo: Demo, trained: list[Any]) -> dict[str, Any]:
    from .report import write_report

    plane = demo.plane
    spec = deployment_spec([t.version for t in trained])
    plane.apply(user_route(spec["version"]))
    plane.apply({"apiVersion": "modelops.io/v1alpha1", "kind": "ModelDeployment",
                 "metadata": {"name": MODEL, "namespace": NAMESPACE}, "spec": spec})
    demo.follow(lambda s: s.get("phase") == "Stable" and s.get("stableVersion") == "1.0.0", 60, "v1 serving")
    traffic = GradedTraffic(demo.standin.split_file(NAMESPACE, ROUTE), NAMESPACE, MODEL, rps=RPS,
                            references={t.version: t.reference for t in trained})
    demo.prometheus.add_target(f"127.0.0.1:{traffic.metrics_port}", role="ground-truth")
    traffic.start()
    demo.prometheus.wait_for(f'rate(model_predictions_aged_total{{namespace="{NAMESPACE}", version="1.0.0"}}[10s]) > 0', 60)
    phases: dict[str, Any] = {}

    def chapter(version: str, done, what: str) -> None:
        demo.say(f"--- spec.version -> {version}")
        before, started = dict(traffic.results), time.time()
        plane.kubectl("patch", "mdep", MODEL, "-n", NAMESPACE, "--type", "merge", "-p",
                      json.dumps({"spec": {"version": version}}))
        status = demo.follow(done, 240, what)
        after = dict(traffic.results)
        delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
        phases[version] = {"started": started, "ended": time.time(), "phase": status.get("phase"),
                           "stable": status.get("stableVersion"), "requests": delta,
                           "history": status.get("history", [])}

    chapter("2.0.0", lambda s: s.get("phase") == "RolledBack", "v2 rolled back")
    demo.follow(lambda s: True, 5, "settle")
    chapter("3.0.0", lambda s: s.get("phase") == "Stable" and s.get("stableVersion") == "3.0.0", "v3 promoted")
    drill = rollback_drill(demo, traffic)
    time.sleep(3)  # a few more seconds of v3 alone on the chart
    traffic.stop()
    return write_report(demo, traffic, phases, drill, trained)


def rollback_drill(demo: Demo, traffic: GradedTraffic) -> dict[str, Any]:
    """`kubectl modelops drill`, as on-call would rehearse: all traffic to the fallback (v1) and back to v3, timed
    by the operator (status.lastDrill) and by the data plane (the split the traffic followed)."""
    demo.say("--- kubectl modelops drill digits: rehearse a rollback to the fallback and back")
    plane, before, started = demo.plane, dict(traffic.results), time.time()
    env = {**os.environ, "KUBECONFIG": str(plane.kubeconfig), "PATH": f"{plane.bin}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run([str(Path(sys.executable).with_name("kubectl-modelops")), "-n", NAMESPACE, "drill", MODEL,
                    "--reason", "quarterly rollback rehearsal"], env=env, check=True, capture_output=True, timeout=60)
    demo.follow(lambda s: s.get("phase") == "Stable" and (s.get("lastDrill") or {}).get("result"), 180,
                "the drill back on stable")
    # Requests lost are measured (or said not to be) once the drill's window is scraped.
    status = demo.follow(lambda s: {"requestsLost", "requestsLostNote"} & set(s["lastDrill"]), 60,
                         "the drill's requests lost")
    fallback = service_name(status["lastDrill"]["fallbackVersion"])
    on_fallback = traffic.wait_for_split(lambda t, split: t >= started and split.get(fallback) == 100, 10)
    back = traffic.wait_for_split(lambda t, split: t > on_fallback and fallback not in split, 10)
    delta = {k: n - before.get(k, 0) for k, n in traffic.results.items()}
    last = status["lastDrill"]
    returning = _epoch(last["endedAt"]) - last["secondsBack"]  # when the operator sent traffic back to stable
    return {"status": last, "started": started, "data_plane_to_fallback": on_fallback - started,
            "data_plane_back": back - returning, "requests": sum(delta.values()),
            "failed": sum(n for (_, code), n in delta.items() if code != 200), "history": status.get("history", [])}


def _epoch(text: str) -> float:
    from modelops.rollout.values import parse_rfc3339

    return parse_rfc3339(text).timestamp()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo.run", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("demo-output"), help="where the PNG and report go")
    args = parser.parse_args(argv)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    try:
        upstream = upstream_crds([GATEWAY_STANDARD])  # first: a missing CRD is one message, before anything starts
    except UpstreamCRDsUnavailable as exc:
        print(exc, file=sys.stderr)
        return 2
    result = run_demo(args.out, upstream=upstream)
    print(f"\nreport: {result['report']}\ntimeline: {result['png']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
