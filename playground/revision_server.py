"""A model server process for one serving unit (a KServe revision, a Seldon predictor or
Model, the pods behind a Service), exporting the metrics that serving system exports.

It plays the served model and its sidecar, so that Prometheus scrapes real per-unit
series. Its behaviour (error rate, latency, accuracy) is set per artifact by the test,
deterministically: with error rate 0.2 exactly every fifth request fails; with never_ready
its readiness probe (/ready) never passes. With an
"upstream" it is the revision's queue-proxy instead: it forwards to a real model server
and measures what that server does.

    python -m playground.revision_server '{"port": ..., "unit": ..., "flavour": ..., ...}'
"""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest


class Behaviour:
    def __init__(self, error_rate: float = 0.0, latency: float = 0.005, accuracy: float = 0.95,
                 accuracy_metrics: bool = True, never_ready: bool = False):
        self.error_rate, self.latency, self.accuracy = error_rate, latency, accuracy
        self.accuracy_metrics = accuracy_metrics
        self.never_ready = never_ready
        """The process runs but its readiness probe (/ready) never passes: a model that never loads."""
        self._n = 0
        self._lock = threading.Lock()

    def next(self) -> tuple[bool, bool]:
        """(fails, correct) for the next request: exact proportions, no randomness."""
        with self._lock:
            n, self._n = self._n, self._n + 1
        fails = int((n + 1) * self.error_rate) > int(n * self.error_rate)
        wrong = int((n + 1) * (1 - self.accuracy)) > int(n * (1 - self.accuracy))
        return fails, not wrong


def request_metrics(config: dict, registry: CollectorRegistry):
    """The per-request series each serving system exports, named and labelled as it names them.

    Returns observe(seconds, code)."""
    flavour, ns, unit = config.get("flavour", "knative"), config["namespace"], config["unit"]
    buckets = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
    if flavour == "knative":  # Knative >= 1.19 queue-proxy
        labels = {"k8s_namespace_name": ns, "kn_revision_name": unit, "kn_configuration_name": config["object"] + "-predictor"}
        histogram = Histogram("kn_serving_invocation_duration_seconds", "Request duration.",
                              [*labels, "http_response_status_code"], registry=registry, buckets=buckets)
        return lambda seconds, code: histogram.labels(**labels, http_response_status_code=str(code)).observe(seconds)
    if flavour == "seldon":  # Seldon Core v1 executor
        labels = {"namespace": ns, "deployment_name": config["object"], "predictor_name": unit}
        histogram = Histogram("seldon_api_executor_server_requests_seconds", "Request duration.", [*labels, "code"],
                              registry=registry, buckets=buckets)
        return lambda seconds, code: histogram.labels(**labels, code=str(code)).observe(seconds)
    if flavour == "seldonV2":  # Seldon Core v2: counters only, no histogram
        total = Counter("seldon_model_infer", "Inferences.", ["namespace", "model", "code"], registry=registry)
        seconds_total = Counter("seldon_model_infer_seconds", "Inference seconds.", ["namespace", "model"],
                                registry=registry)

        def observe(seconds: float, code: int) -> None:
            total.labels(ns, unit, str(code)).inc()
            seconds_total.labels(ns, unit).inc(seconds)

        return observe
    # Plain Deployments behind a Gateway API route: the application's own HTTP metrics.
    histogram = Histogram("http_request_duration_seconds", "Request duration.", ["namespace", "service", "code"],
                          registry=registry, buckets=buckets)
    return lambda seconds, code: histogram.labels(ns, unit, str(code)).observe(seconds)


def serve(config: dict) -> None:
    registry = CollectorRegistry()
    observe = request_metrics(config, registry)
    model_labels = {"namespace": config["namespace"], "model": config["model"], "version": config["version"]}
    graded = Counter("model_graded", "Predictions with ground truth.", list(model_labels), registry=registry)
    correct = Counter("model_correct", "Predictions that matched ground truth.", list(model_labels), registry=registry)
    behaviour = Behaviour(**config.get("behaviour", {}))
    upstream = config.get("upstream")

    def forward(method: str, path: str, body: bytes | None) -> tuple[int, bytes]:
        request = urllib.request.Request(f"{upstream}{path}", data=body, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()
        except OSError:
            return 503, b'{"error": "model server unreachable"}'

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):  # noqa: N802
            if self.path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif self.path == "/ready":
                ready = not behaviour.never_ready and (upstream is None or forward("GET", "/v1/models/model", None)[0] == 200)
                self._send(200 if ready else 503, b"ready\n" if ready else b"loading\n", "text/plain")
            else:
                self._send(404, b"", "text/plain")

        def do_POST(self):  # noqa: N802
            started = time.perf_counter()
            request = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if upstream is not None:  # queue-proxy in front of a real model server
                code, body = forward("POST", self.path, request)
                self._send(code, body, "application/json")
                observe(time.perf_counter() - started, code)
                return
            fails, right = behaviour.next()
            time.sleep(behaviour.latency)
            code = 500 if fails else 200
            if not fails and behaviour.accuracy_metrics:
                graded.labels(**model_labels).inc()
                if right:
                    correct.labels(**model_labels).inc()
            body = json.dumps({"version": config["version"], "unit": config["unit"]}).encode()
            self._send(code, body, "application/json")
            observe(time.perf_counter() - started, code)

        def _send(self, code: int, body: bytes, kind: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    ThreadingHTTPServer(("127.0.0.1", config["port"]), Handler).serve_forever()


if __name__ == "__main__":
    serve(json.loads(sys.argv[1]))
