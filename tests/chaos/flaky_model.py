"""A model server whose failure the test switches on: healthy until a control file exists, then
every request fails with HTTP 500. The KServe stand-in puts a revision's queue-proxy in front
of it (`ServingStandIn.model_server`), which counts those 500s in Knative's metrics, so a
candidate can turn bad in the middle of a step, after its analyses have been passing: the
breach then starts at a moment the test knows, and the operator's reaction is measured from
there, not from the end of the rollout's first analysis window.

    python -m tests.chaos.flaky_model PORT CONTROL_FILE [READY_AFTER_SECONDS]

READY_AFTER_SECONDS makes the model load slowly: it reports not ready (503) until then, as a
pod pulling a large image does.
"""

from __future__ import annotations

import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def serve(port: int, control: str, ready_after: float = 0.0) -> None:
    loaded_at = time.monotonic() + ready_after

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):  # noqa: N802 - readiness: whether the model is loaded
            ready = time.monotonic() >= loaded_at
            self._send(200 if ready else 503, {"name": "model", "ready": ready})

        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if os.path.exists(control):
                self._send(500, {"error": "model broken"})
            else:
                self._send(200, {"predictions": [0]})

        def _send(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    serve(int(sys.argv[1]), sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else 0.0)
