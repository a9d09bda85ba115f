"""One scenario suite, the same for every backend, on the real control plane with real metrics."""

from __future__ import annotations

import pytest

from playground.controlplane import ADMIN_USER as ADMIN
from .scenario import Scenario, fast_spec

BACKENDS = ["kserve", "seldon", "seldonV2", "gatewayAPI"]
GOOD = {"error_rate": 0.0, "accuracy": 0.95}
PATIENT = {"strategy": {"steps": [{"weight": 20, "pause": "1h"}, {"weight": 50, "pause": "1h"}]}}


@pytest.fixture(params=BACKENDS)
def scenario(request, control_plane, namespace, stand_ins, operator):
    s = Scenario(control_plane, namespace, stand_ins(request.param))
    yield s
    s.stop_load()


def stable_on(version):
    return lambda st: st.get("phase") == "Stable" and st.get("stableVersion") == version


def start(scenario, prometheus, candidate, **overrides):
    scenario.version("1.0.0", **GOOD)
    scenario.version("1.1.0", **candidate)
    scenario.serve("1.0.0", fast_spec(prometheus.url, scenario.backend, **overrides), prometheus)
    scenario.patch({"version": "1.1.0"})
    scenario.wait(lambda st: st.get("canaryWeight", 0) > 0 or st.get("phase") == "RolledBack", 30, "1.1.0 taking traffic")


def is_candidate(unit: str) -> bool:
    """The serving unit of 1.1.0: its KServe revision, Seldon predictor or Model, or Service."""
    return "1-1-0" in unit or unit.endswith("00002")


def candidate_share(split: dict[str, int]) -> int:
    """Percent of requests the data plane sends to 1.1.0, as the stand-in publishes it."""
    return sum(p for unit, p in split.items() if is_candidate(unit))


def test_healthy_candidate_is_promoted(scenario, prometheus):
    start(scenario, prometheus, GOOD)
    scenario.wait(stable_on("1.1.0"), 60, "1.1.0 promoted")
    assert [a for a, v in scenario.actions() if v == "1.1.0"] == ["RolloutStarted", "StepAdvanced", "StepAdvanced",
                                                                   "Promoted"]
    failed = sum(n for (unit, code), n in scenario.load.results.items() if code != 200)
    assert failed == 0, f"{scenario.load.results} lost: {scenario.load.lost} splits: {scenario.load.splits_seen}"
    if scenario.backend == "gatewayAPI":  # the rule that is not the model's was left alone
        rules = scenario.get("httproute")["spec"]["rules"]
        assert [r["name"] for r in rules[0]["backendRefs"]] == ["fraud-v1-1-0"]
        assert rules[1]["backendRefs"] == [{"group": "", "kind": "Service", "name": "docs", "port": 80, "weight": 1}]


def test_bad_candidate_is_rolled_back(scenario, prometheus):
    start(scenario, prometheus, {"error_rate": 0.4, "accuracy": 0.95})
    status = scenario.wait(lambda st: st.get("phase") == "RolledBack", 30, "rolled back")
    assert status["stableVersion"] == "1.0.0" and "errors" in status["history"][-1]["reason"]
    scenario.load.wait_for_split(lambda t, split: split and candidate_share(split) == 0,
                                 15)


def test_manual_abort(scenario, prometheus):
    start(scenario, prometheus, GOOD, **PATIENT)
    scenario.patch({"request": {"id": "abort-1", "action": "Abort", "reason": "testing abort", "actor": ADMIN}})
    status = scenario.wait(lambda st: st.get("phase") == "RolledBack", 15, "aborted")
    assert status["history"][-1]["action"] == "Aborted"
    scenario.load.wait_for_split(lambda t, split: split and candidate_share(split) == 0,
                                 15)


def test_pinned_weight(scenario, prometheus):
    start(scenario, prometheus, GOOD, **PATIENT)
    scenario.patch({"trafficOverride": {"weight": 40, "reason": "capacity test"}})
    scenario.wait(lambda st: st.get("canaryWeight") == 40, 15, "pinned")
    scenario.load.wait_for_split(lambda t, split: candidate_share(split) == 40, 15)


def test_operator_restart_mid_rollout(scenario, prometheus, operator):
    start(scenario, prometheus, GOOD, strategy={"steps": [{"weight": 20, "pause": "2s"}, {"weight": 40, "pause": "2s"},
                                                          {"weight": 60, "pause": "2s"}]})
    scenario.wait(lambda st: st.get("currentStep") == 1, 30, "second step")
    operator.kill()
    operator.start()
    scenario.wait(stable_on("1.1.0"), 60, "promoted after the restart")
    steps = [h["reason"] for h in scenario.status()["history"] if h["action"] == "StepAdvanced"]
    assert steps == ["step 1/3 at 20%", "step 2/3 at 40%", "step 3/3 at 60%"]
