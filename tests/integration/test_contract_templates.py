"""The accuracy and drift templates against the real Prometheus, over series shaped as their contracts say
(README, "Metric contracts"): each measures its version's value and counts its samples, and leaves the other
version's series alone."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from modelops.analysis.measure import measure
from modelops.analysis.prometheus import PrometheusProvider, close_sessions
from modelops.analysis.promql import Subject
from modelops.api.modeldeployment import Check
from modelops.routers import gateway_api, seldon

pytestmark = pytest.mark.integration

RATE = 20.0  # graded predictions (or feedbacks) per second
# version -> (share correct, drift score)
VERSIONS = {"1.0.0": (0.95, 0.05), "1.1.0": (0.80, 0.42)}


class ContractExporter:
    """Counters growing at RATE per second from its start; the Seldon v1 feedback counters per predictor."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                body = exporter.render().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def render(self) -> str:
        graded = (time.monotonic() - self.started) * RATE
        lines = []
        for version, (correct, drift) in VERSIONS.items():
            labels = f'namespace="prod",model="fraud",version="{version}"'
            predictor = f'namespace="prod",deployment_name="fraud",predictor_name="v{version.replace(".", "-")}"'
            lines += [f"model_predictions_graded_total{{{labels}}} {graded:.3f}",
                      f"model_predictions_correct_total{{{labels}}} {graded * correct:.3f}",
                      f"model_drift_score{{{labels}}} {drift}",
                      f"seldon_api_model_feedback_total{{{predictor}}} {graded:.3f}",
                      f"seldon_api_model_feedback_reward_total{{{predictor}}} {graded * correct:.3f}"]
        return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def contract_series(prometheus):
    exporter = ContractExporter()
    prometheus.add_target(exporter.address, role="contracts")
    try:
        yield exporter
    finally:
        prometheus.remove_target(exporter.address)
        exporter.server.shutdown()


def subject(version: str) -> Subject:
    return Subject("prod", "fraud", version, f"v{version.replace('.', '-')}", "fraud", "10s")


async def measured_when_ready(provider, check, templates, version):
    """Measure until the window holds enough samples (scrapes are 1 s apart): at most 30 s."""
    deadline = time.monotonic() + 30
    while True:
        result = await measure(provider, check, templates, subject(version), subject("1.0.0"),
                               datetime.now(timezone.utc))
        if (result.samples or 0) >= check.min_samples or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.5)


@pytest.mark.asyncio
@pytest.mark.parametrize("templates", [gateway_api.TEMPLATES, seldon.TEMPLATES], ids=["contract", "seldon-feedback"])
@pytest.mark.parametrize("version", list(VERSIONS))
async def test_accuracy_is_the_share_of_graded_predictions_that_were_right(prometheus, contract_series, templates,
                                                                           version):
    check = Check.model_validate({"name": "accuracy", "template": "accuracy", "min": 0.9, "minSamples": 100,
                                  "gradingDelay": "1m"})
    provider = PrometheusProvider(prometheus.url, timeout=5)
    try:
        result = await measured_when_ready(provider, check, templates, version)
    finally:
        await close_sessions()
    assert result.error is None and result.samples >= 100
    assert result.value == pytest.approx(VERSIONS[version][0], abs=0.02)


@pytest.mark.asyncio
async def test_drift_is_the_versions_highest_score_and_compares_with_stable(prometheus, contract_series):
    check = Check.model_validate({"name": "drift", "template": "driftScore", "max": 0.3, "maxIncreasePercent": 100,
                                  "minSamples": 3})
    provider = PrometheusProvider(prometheus.url, timeout=5)
    try:
        result = await measured_when_ready(provider, check, gateway_api.TEMPLATES, "1.1.0")
    finally:
        await close_sessions()
    assert result.error is None and result.samples >= 3
    assert (result.value, result.baseline) == (pytest.approx(0.42), pytest.approx(0.05))
