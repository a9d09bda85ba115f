"""A model server process for one serving unit (a KServe revision, a Seldon predictor or
Model, the pods behind a Service), exporting the metrics that serving system exports.

It plays the served model and its sidecar, so that Prometheus scrapes real per-unit
series. Its behaviour is set per artifact by the test, deterministically (exact
proportions, no randomness):

- error_rate: the share of requests answered 500 (0.2: exactly every fifth request);
- latency: seconds each request takes;
- accuracy, accuracy_metrics: the share of answers graded correct in model_graded_total and
  model_correct_total (not exported with accuracy_metrics false);
- agreement: the share of answers whose prediction equals the reference model's ("a");
  the others predict "b" (answers follow KServe's v1 protocol: {"predictions": [...]});
- never_ready: its readiness probe (/ready) never passes.

A request carrying `X-Modelops-Shadow-Of: <predictions as JSON>` is a mirrored copy of one
another version answered with those predictions; once answered 200 it counts in
model_shadow_comparisons_total{outcome="agree"|"disagree"} (agree: the same predictions), and
is otherwise an ordinary request. With an "upstream" it is the revision's queue-proxy
instead: it forwards to a real model server, measures what that server does, and compares
that server's predictions the same way.

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
from typing import NamedTuple

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest


SHADOW_HEADER = "X-Modelops-Shadow-Of"
"""On a mirrored copy of a request: the predictions (JSON) the version that served it answered."""
REFERENCE_PREDICTION, OTHER_PREDICTION = "a", "b"


def _in_share(n: int, share: float) -> bool:
    """Whether event n (counting from 0) is one of `share` of the events, spread so that after any k events
    exactly floor(k * share) were (up to float noise, as in 1 - 0.9 = 0.0999...)."""
    return int((n + 1) * share + 1e-9) > int(n * share + 1e-9)


class Outcome(NamedTuple):
    fails: bool
    correct: bool
    agrees: bool
    """The prediction equals the reference model's."""

    @property
    def prediction(self) -> str:
        return REFERENCE_PREDICTION if self.agrees else OTHER_PREDICTION


class Behaviour:
    def __init__(self, error_rate: float = 0.0, latency: float = 0.005, accuracy: float = 0.95,
                 accuracy_metrics: bool = True, never_ready: bool = False, agreement: float = 1.0):
        self.error_rate, self.latency, self.accuracy = error_rate, latency, accuracy
        self.accuracy_metrics = accuracy_metrics
        self.agreement = agreement
        """The share of requests on which this version predicts what the reference model predicts."""
        self.never_ready = never_ready
        """The process runs but its readiness probe (/ready) never passes: a model that never loads."""
        self._n = 0
        self._lock = threading.Lock()

    def next(self) -> Outcome:
        """The next request's outcome: exact proportions, no randomness."""
        with self._lock:
            n, self._n = self._n, self._n + 1
        return Outcome(fails=_in_share(n, self.error_rate), correct=not _in_share(n, 1 - self.accuracy),
                       agrees=not _in_share(n, 1 - self.agreement))


def predictions_of(code: int, answer: bytes) -> list | None:
    """The "predictions" of a 200 JSON answer (KServe's v1 protocol), None for any other answer."""
    if code != 200:
        return None
    try:
        value = json.loads(answer)
    except ValueError:
        return None
    predictions = value.get("predictions") if isinstance(value, dict) else None
    return predictions if isinstance(predictions, list) else None


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
    comparisons = Counter("model_shadow_comparisons", "Mirrored requests whose prediction was compared with the "
                          "served version's.", [*model_labels, "outcome"], registry=registry)
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
                # Counted before the answer goes out, so that whoever got it reads /metrics with it counted.
                observe(time.perf_counter() - started, code)
                self._compare(predictions_of(code, body))
                self._send(code, body, "application/json")
                return
            outcome = behaviour.next()
            time.sleep(behaviour.latency)
            answer: dict = {"version": config["version"], "unit": config["unit"]}
            if not outcome.fails:
                answer["predictions"] = [outcome.prediction]
                if behaviour.accuracy_metrics:
                    graded.labels(**model_labels).inc()
                    if outcome.correct:
                        correct.labels(**model_labels).inc()
            code = 500 if outcome.fails else 200
            observe(time.perf_counter() - started, code)
            self._compare(answer.get("predictions"))
            self._send(code, json.dumps(answer).encode(), "application/json")

        def _compare(self, own: list | None) -> None:
            """A mirrored copy answered: do its predictions agree with those the serving version answered?"""
            served = self.headers.get(SHADOW_HEADER)
            if served is None or own is None:
                return
            try:
                agreed = json.loads(served) == own
            except ValueError:
                return  # not a copy this stand-in's data plane made
            comparisons.labels(**model_labels, outcome="agree" if agreed else "disagree").inc()

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
