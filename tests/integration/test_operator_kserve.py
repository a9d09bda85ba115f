"""The whole decision loop on a real API server with real Prometheus data, KServe backend."""

from __future__ import annotations

import pytest

from .scenario import Scenario, fast_spec

GOOD = {"error_rate": 0.0, "accuracy": 0.95}


@pytest.fixture
def scenario(control_plane, namespace, kserve, operator):
    s = Scenario(control_plane, namespace, kserve)
    yield s
    s.stop_load()


def stable_on(version):
    return lambda st: st.get("phase") == "Stable" and st.get("stableVersion") == version


def test_healthy_candidate_walks_every_step_and_is_promoted(scenario, prometheus):
    scenario.version("1.0.0", **GOOD)
    scenario.version("1.1.0", **GOOD)
    scenario.serve("1.0.0", fast_spec(prometheus.url), prometheus)
    scenario.patch({"version": "1.1.0"})
    status = scenario.wait(stable_on("1.1.0"), 90, "1.1.0 promoted")
    assert status["fallbackVersion"] == "1.0.0"
    steps = [a for a in scenario.actions() if a[1] == "1.1.0"]
    assert steps == [("RolloutStarted", "1.1.0"), ("StepAdvanced", "1.1.0"), ("StepAdvanced", "1.1.0"),
                     ("Promoted", "1.1.0")]
    print("requests by (revision, code):", dict(scenario.load.results))
    isvc = scenario.get("isvc")
    assert "canaryTrafficPercent" not in isvc["spec"]["predictor"]
    assert isvc["spec"]["predictor"]["model"]["storageUri"].endswith("/1.1.0")
