"""A tenant flooding a shared Prometheus does not move another tenant's verdicts (analysis/gate.py), on the real
Prometheus and the operator as a process.

The shared provider is the real Prometheus behind a proxy that answers every request DELAY seconds late (a loaded
Prometheus). The flood: four deployments in two namespaces, enough to fill all 16 slots (a deployment holds at most 4,
a namespace 8), each rolling out with 32 dry-run checks of a custom query answering a scalar: such a query is never
batched, so each check is a request of its own, 32 per analysis, and the flood's own analyses cost it nothing.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from .scenario import Scenario, fast_spec

pytestmark = pytest.mark.integration

DELAY = 1.0
"""Seconds every answer of the shared provider takes."""
VICTIM_INTERVAL = 3.0
"""The victim's analysis interval: its budget, a second more, is three times DELAY. Alone an analysis takes DELAY
(its two requests at once); beside the flood at most DELAY waiting for its first turn, then at most 2 x DELAY (its
other request's turn, then its answer), within the budget. Served first come first served instead, it waits behind
the flood's 128 queued requests, 8 x DELAY."""
GOOD = {"error_rate": 0.0, "accuracy": 0.95}
FLOOD_CHECKS = 32


class SlowProxy:
    """Forwards Prometheus' query API, each answer DELAY seconds late; counts requests in flight."""

    def __init__(self, upstream: str, delay: float):
        proxy = self
        self.in_flight = self.peak = 0
        self._lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_):
                pass

            def forward(self, body: bytes | None) -> None:
                with proxy._lock:
                    proxy.in_flight += 1
                    proxy.peak = max(proxy.peak, proxy.in_flight)
                try:
                    time.sleep(delay)
                    request = urllib.request.Request(upstream + self.path, data=body, method=self.command)
                    if body is not None:
                        request.add_header("Content-Type", self.headers.get("Content-Type", ""))
                    try:
                        with urllib.request.urlopen(request, timeout=30) as answer:
                            status, payload = answer.status, answer.read()
                    except urllib.error.HTTPError as e:
                        status, payload = e.code, e.read()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the operator gave up on this one
                finally:
                    with proxy._lock:
                        proxy.in_flight -= 1

            def do_GET(self):
                self.forward(None)

            def do_POST(self):
                self.forward(self.rfile.read(int(self.headers.get("Content-Length") or 0)))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def promoted(version: str):
    return lambda st: (st.get("phase") == "Stable" and st.get("stableVersion") == version) or \
        st.get("phase") == "RolledBack"


def victim_figures(operator, namespace: str) -> dict[str, float]:
    labels = {"namespace": namespace, "deployment": "fraud"}
    return {"analyses": operator.metric("modelops_analyses_total", **labels),
            "seconds": operator.metric("modelops_analysis_duration_seconds_sum", **labels),
            "errors": sum(operator.metric("modelops_check_verdicts_total", **labels, check=c, verdict="Error")
                          for c in ("errors", "accuracy")),
            "fails": sum(operator.metric("modelops_check_verdicts_total", **labels, check=c, verdict="Fail")
                         for c in ("errors", "accuracy"))}


def rollout(scenario: Scenario, operator, version: str) -> dict[str, float]:
    """Roll out `version`: the victim's analyses meanwhile (counts, seconds, Error and Fail verdicts), how long it
    took, and whether it was promoted."""
    before = victim_figures(operator, scenario.ns)
    started = time.monotonic()
    scenario.patch({"version": version})
    status = scenario.wait(promoted(version), 90, f"{version} promoted or rolled back")
    after = victim_figures(operator, scenario.ns)
    figures = {k: after[k] - before[k] for k in after}
    figures["rollout seconds"] = time.monotonic() - started
    figures["promoted"] = float(status.get("phase") == "Stable")
    figures["reason"] = status["history"][-1]["reason"]
    return figures


def test_a_tenant_flooding_the_shared_prometheus_does_not_move_anothers_verdicts(control_plane, namespace, kserve,
                                                                                 operator, prometheus):
    proxy = SlowProxy(prometheus.url, DELAY)
    scenarios: list[Scenario] = []
    try:
        victim = Scenario(control_plane, namespace, kserve)
        scenarios.append(victim)
        for version in ("1.0.0", "1.1.0", "1.2.0"):
            victim.version(version, **GOOD)
        flood_spec = {
            "strategy": {"steps": [{"weight": 20, "pause": "5m"}]},
            "analysis": {"interval": "2s", "window": "5s", "prometheus": {"address": proxy.url, "timeout": "2s"},
                         "checks": [{"name": f"c{i}", "query": f"scalar(vector({i}))", "max": 1000, "dryRun": True}
                                    for i in range(FLOOD_CHECKS)]}}
        for flood_namespace in (f"{namespace}-f1", f"{namespace}-f2"):
            control_plane.kubectl("create", "namespace", flood_namespace)
            for name in ("flood-a", "flood-b"):
                flood = Scenario(control_plane, flood_namespace, kserve, name)
                scenarios.append(flood)
                for version in ("1.0.0", "1.1.0"):
                    flood.version(version, **GOOD)
                flood.deploy("1.0.0", flood_spec)  # stable: no analyses yet
        spec = fast_spec(proxy.url, analysis={"interval": f"{VICTIM_INTERVAL:g}s", "noDataLimit": 4})
        # Both versions answer 19 in 20 right; a 5 % limit on a 5 s window of a few dozen graded requests fails now
        # and then on counting alone (seen once in CI): this test is about the flood, so the limit is out of noise.
        spec["analysis"]["checks"] = [{**c, "maxDropPercent": 20} if c["name"] == "accuracy" else c
                                      for c in spec["analysis"]["checks"]]
        victim.serve("1.0.0", spec, prometheus)
        alone = rollout(victim, operator, "1.1.0")

        for flood in scenarios[1:]:
            flood.wait(lambda st: st.get("phase") == "Stable", 60, "flood on 1.0.0")
            flood.patch({"version": "1.1.0"})
        for flood in scenarios[1:]:
            flood.wait(lambda st: st.get("canaryWeight") == 20 and st.get("lastOutcome"), 60, "flood analysing")
        proxy.peak = 0
        deadline = time.monotonic() + 30  # a give-up bound: the flood fills every slot within a few analyses
        while proxy.peak < 16:
            assert time.monotonic() < deadline, f"the flood holds only {proxy.peak} slots"
            time.sleep(0.1)

        beside = rollout(victim, operator, "1.2.0")
        flood_peak = proxy.peak
    finally:
        for s in scenarios:
            s.stop_load()
        for flood in scenarios[1:]:
            flood.patch({"version": "1.0.0"})  # its analyses end: the shared Prometheus is quiet again
        proxy.close()

    print(f"\nshared Prometheus answering in {DELAY:g} s; flood: 4 deployments x {FLOOD_CHECKS} unbatchable dry-run "
          f"checks in 2 namespaces, {flood_peak} requests in flight at the peak")
    mean = {}
    for what, figures in (("alone", alone), ("beside the flood", beside)):
        mean[what] = figures["seconds"] / figures["analyses"] if figures["analyses"] else float("nan")
        print(f"victim {what}: {'promoted' if figures['promoted'] else 'ROLLED BACK'} after "
              f"{figures['rollout seconds']:.1f} s; {figures['analyses']:.0f} analyses, mean latency {mean[what]:.2f} s; "
              f"{figures['errors']:.0f} Error and {figures['fails']:.0f} Fail verdicts")
    assert alone["promoted"] and alone["errors"] == 0 and alone["fails"] == 0, alone
    # The verdicts beside the flood are those alone: every analysis answered, nothing failed, promoted.
    assert beside["promoted"], beside["reason"]
    assert beside["errors"] == 0 and beside["fails"] == 0, beside
    # And their timing: an analysis waits at most one turn behind the flood per request (VICTIM_INTERVAL).
    bound = mean["alone"] + 2 * DELAY
    print(f"victim's mean analysis latency beside the flood {mean['beside the flood']:.2f} s, bound {bound:.2f} s "
          f"(alone + 2 x {DELAY:g} s)")
    assert mean["beside the flood"] <= bound, mean
    assert flood_peak >= 16
