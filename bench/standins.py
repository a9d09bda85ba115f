"""What the benchmark puts around the operator instead of a serving system, as cheap as it can be:

- `RouteStatusWriter`: a Gateway API implementation reduced to its status: every HTTPRoute is
  marked Accepted and ResolvedRefs for its current generation (no data plane at all).
- `endpoint_slice`: the one ready endpoint per Service an EndpointSlice controller would publish.
- `Exporter`: a synthetic metric per Service for the checks' PromQL: a request counter growing at a
  steady rate and an error counter that stays 0, served on loopback for Prometheus to scrape.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .kube import ApiError, Informer, Kube

CONTROLLER = "bench.modelops.io/gateway-status"
MANAGER = "bench.modelops.io"  # of the EndpointSlices (a label value: no slash)
REQUESTS_PER_SECOND = 10.0


def route_status(route: dict[str, Any]) -> dict[str, Any]:
    """Accepted and ResolvedRefs for the route's generation, for each of its parents."""
    generation = route["metadata"].get("generation")
    conditions = [{"type": kind, "status": "True", "reason": kind, "message": "", "observedGeneration": generation,
                   "lastTransitionTime": "2026-01-01T00:00:00Z"} for kind in ("Accepted", "ResolvedRefs")]
    parents = route["spec"].get("parentRefs") or [{"name": "gateway"}]
    return {"parents": [{"parentRef": p, "controllerName": CONTROLLER, "conditions": conditions} for p in parents]}


def accepted(route: dict[str, Any]) -> bool:
    generation = route["metadata"].get("generation")
    parents = (route.get("status") or {}).get("parents") or []
    return bool(parents) and all(
        {c["type"] for c in p.get("conditions", []) if c.get("status") == "True"
         and c.get("observedGeneration") == generation} >= {"Accepted", "ResolvedRefs"} for p in parents)


class RouteStatusWriter:
    def __init__(self, kube: Kube, namespace: str, workers: int = 4):
        self.kube, self.namespace = kube, namespace
        self.base = f"/apis/gateway.networking.k8s.io/v1/namespaces/{namespace}/httproutes"
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="route-status")
        self.pending: set[tuple[str, int]] = set()
        self.lock = threading.Lock()
        self.patches = 0
        self.informer = Informer(kube, self.base, self._changed)

    def start(self) -> RouteStatusWriter:
        self.informer.start()
        return self

    def stop(self) -> None:
        self.informer.stop()
        self.pool.shutdown(wait=False, cancel_futures=True)

    def _changed(self, kind: str, route: dict[str, Any]) -> None:
        if kind == "DELETED" or accepted(route):
            return
        key = (route["metadata"]["name"], route["metadata"].get("generation") or 0)
        with self.lock:
            if key in self.pending:
                return
            self.pending.add(key)
        self.pool.submit(self._write, key, route)

    def _write(self, key: tuple[str, int], route: dict[str, Any]) -> None:
        try:
            self.kube.merge_patch(f"{self.base}/{key[0]}/status", {"status": route_status(route)})
            self.patches += 1
        except ApiError as error:
            if error.status != 404:
                print(f"route status {key[0]}: {error}", flush=True)
        except OSError as error:
            print(f"route status {key[0]}: {error}", flush=True)
        finally:
            with self.lock:
                self.pending.discard(key)


def endpoint_slice(service: str, number: int) -> dict[str, Any]:
    """One ready endpoint for `service` (an address nothing connects to: the benchmark has no data plane)."""
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": f"{service}-bench", "labels": {"kubernetes.io/service-name": service,
                                                            "endpointslice.kubernetes.io/managed-by": MANAGER}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [f"10.{(number >> 16) & 255}.{(number >> 8) & 255}.{number & 255 or 1}"],
                       "conditions": {"ready": True, "serving": True, "terminating": False}}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }


class Exporter:
    """bench_requests_total and bench_errors_total per (namespace, service), from when it was added."""

    def __init__(self) -> None:
        self.services: dict[tuple[str, str], float] = {}
        self.lock = threading.Lock()
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                body = exporter.render(time.monotonic()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="exporter", daemon=True)

    def start(self) -> Exporter:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add(self, namespace: str, service: str) -> None:
        with self.lock:
            self.services.setdefault((namespace, service), time.monotonic())

    def render(self, now: float) -> str:
        with self.lock:
            services = list(self.services.items())
        lines = ["# TYPE bench_requests_total counter", "# TYPE bench_errors_total counter"]
        for (namespace, service), since in services:
            labels = f'namespace="{namespace}",service="{service}"'
            lines.append(f"bench_requests_total{{{labels}}} {int((now - since) * REQUESTS_PER_SECOND)}")
            lines.append(f"bench_errors_total{{{labels}}} 0")
        return "\n".join(lines) + "\n"


def checks() -> list[dict[str, Any]]:
    """Two checks that pass on the exporter's series: an error ratio and a request rate."""
    selector = 'namespace="{{namespace}}", service="{{revision}}"'
    return [
        {"name": "errors", "max": 0.05,
         "query": f"sum(rate(bench_errors_total{{{selector}}}[{{{{window}}}}]))"
                  f" / sum(rate(bench_requests_total{{{selector}}}[{{{{window}}}}]))"},
        {"name": "throughput", "min": 1,
         "query": f"sum(rate(bench_requests_total{{{selector}}}[{{{{window}}}}]))"},
    ]
