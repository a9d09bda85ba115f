"""A tiny real process exporting one counter, to prove the Prometheus tier end to end.

Run as `python -m tests.harness.counter_exporter PORT`: every request to /hit increments
`modelops_test_hits_total`, and /metrics exposes it in the Prometheus text format.
"""

from __future__ import annotations

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

registry = CollectorRegistry()
hits = Counter("modelops_test_hits", "Requests to /hit.", registry=registry)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (the stdlib's name)
        if self.path == "/hit":
            hits.inc()
            body, kind = b"ok\n", "text/plain"
        elif self.path == "/metrics":
            body, kind = generate_latest(registry), CONTENT_TYPE_LATEST
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
