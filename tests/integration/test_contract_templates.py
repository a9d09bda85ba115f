"""The accuracy and drift templates against the real Prometheus, over series shaped as their contracts say
(docs/concepts/analysis.md): each measures its version's value and counts its samples, and leaves the other
version's series alone."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from modelops.analysis.evaluate import evaluate
from modelops.analysis.measure import measure
from modelops.analysis.prometheus import PrometheusProvider, close_sessions
from modelops.analysis.promql import Subject
from modelops.api.modeldeployment import Check, Verdict
from modelops.routers import gateway_api, kserve, seldon

pytestmark = pytest.mark.integration

RATE = 20.0  # graded predictions (or feedbacks, or requests) per second
# version -> (share correct, drift score)
VERSIONS = {"1.0.0": (0.95, 0.05), "1.1.0": (0.80, 0.42)}
# version -> cumulative share of requests per latency bucket (KServe's Knative histogram): 1.1.0 is slower.
LATENCY_SHARES = {"1.0.0": {"0.05": 0.1, "0.1": 0.5, "0.25": 0.95, "0.5": 1.0, "+Inf": 1.0},
                  "1.1.0": {"0.05": 0.02, "0.1": 0.2, "0.25": 0.8, "0.5": 1.0, "+Inf": 1.0}}


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
            lines += [f'model_predictions_aged_total{{{labels},grade="correct"}} {graded * correct:.3f}',
                      f'model_predictions_aged_total{{{labels},grade="wrong"}} {graded * (1 - correct):.3f}',
                      f'model_predictions_aged_total{{{labels},grade="none"}} {graded:.3f}',
                      # The arrival-counting contract's counters, all right: the template never reads them.
                      f"model_predictions_graded_total{{{labels}}} {graded:.3f}",
                      f"model_predictions_correct_total{{{labels}}} {graded:.3f}",
                      f"model_drift_score{{{labels}}} {drift}",
                      f"seldon_api_model_feedback_total{{{predictor}}} {graded:.3f}",
                      f"seldon_api_model_feedback_reward_total{{{predictor}}} {graded * correct:.3f}"]
            revision = f'k8s_namespace_name="prod",kn_revision_name="v{version.replace(".", "-")}"'
            lines += [f'kn_serving_invocation_duration_seconds_bucket{{{revision},le="{le}"}} {graded * share:.3f}'
                      for le, share in LATENCY_SHARES[version].items()]
            lines.append(f"kn_serving_invocation_duration_seconds_count{{{revision}}} {graded:.3f}")
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


def subject(version: str, window: str = "10s") -> Subject:
    return Subject("prod", "fraud", version, f"v{version.replace('.', '-')}", "fraud", window)


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


async def judged_sequentially(provider, check, templates, series, candidate):
    """The check's first verdict other than no data or "not enough evidence yet" (Undecided), over everything since the series began, as
    the operator's window since the candidate began serving: at most 60 s."""
    deadline = time.monotonic() + 60
    while True:
        at = datetime.now(timezone.utc)
        window = f"{math.ceil(time.monotonic() - series.started)}s"
        measured = await measure(provider, check, templates, subject(candidate, window), subject("1.0.0", window), at)
        status = evaluate(check, measured, at.isoformat())
        if status.verdict not in (Verdict.NoData, Verdict.Undecided) or time.monotonic() > deadline:
            return status
        await asyncio.sleep(0.5)


SEQUENTIAL = {
    "accuracy": ({"name": "accuracy", "template": "accuracy", "maxDropPercent": 5, "sequential": {"confidence": 0.95}},
                 gateway_api.TEMPLATES, "vs stable 0.9"),
    # The median: half of the requests tell on it, so an equal candidate is proven within 20 % in well under 60 s
    # (a p95's 5 % tail would need many times the requests).
    "latency": ({"name": "p50", "template": "latencyP50", "maxIncreasePercent": 20, "sequential": {}},
                kserve.TEMPLATES, "slower than 0.1s, the bucket bound nearest stable's p50"),
}


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", list(SEQUENTIAL))
@pytest.mark.parametrize("candidate, verdict", [("1.1.0", Verdict.Fail), ("1.0.0", Verdict.Pass)])
async def test_a_sequential_check_weighs_both_versions_counts(prometheus, contract_series, kind, candidate, verdict):
    """Accuracy: the graded and correct counts of both versions; latency: both revisions' real histograms."""
    spec, templates, words = SEQUENTIAL[kind]
    provider = PrometheusProvider(prometheus.url, timeout=5)
    try:
        status = await judged_sequentially(provider, Check.model_validate(spec), templates, contract_series, candidate)
    finally:
        await close_sessions()
    assert status.verdict is verdict, status.message
    assert words in status.message and status.samples >= 30
