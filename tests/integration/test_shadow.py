"""Shadow and A/B steps on the real control plane, with real metrics: for each backend that can mirror, copies of
stable's requests really reach the candidate's server and its answers are really discarded; on Gateway API a header
cohort really reaches the candidate while nobody else does."""

from __future__ import annotations

import time

import pytest

from .scenario import Scenario, fast_spec
from .test_backends import GOOD, candidate_share, is_candidate, stable_on
from playground.controlplane import ADMIN_USER as ADMIN
from playground.loadgen import LoadGenerator

MIRRORING = ["seldon", "seldonV2", "gatewayAPI"]  # KServe cannot mirror: the API server refuses it (tests/conftest.py)
AGREEMENT = {"name": "agreement", "template": "shadowAgreement", "min": 0.97, "minSamples": 20}
COHORT = {"x-cohort": "testers"}


@pytest.fixture(params=MIRRORING)
def scenario(request, control_plane, namespace, stand_ins, operator):
    s = Scenario(control_plane, namespace, stand_ins(request.param))
    yield s
    s.stop_load()


def shadow_spec(prometheus, backend: str, steps: list[dict], **analysis) -> dict:
    spec = fast_spec(prometheus.url, backend, strategy={"steps": steps})
    spec["analysis"]["checks"].append(AGREEMENT)
    spec["analysis"].update(analysis)
    return spec


def start(scenario, prometheus, candidate: dict, steps: list[dict], **analysis) -> None:
    scenario.version("1.0.0", **GOOD)
    scenario.version("1.1.0", **candidate)
    scenario.serve("1.0.0", shadow_spec(prometheus, scenario.backend, steps, **analysis), prometheus)
    scenario.patch({"version": "1.1.0"})


def wait_until(condition, timeout: float, explain) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, explain()
        time.sleep(0.05)


def user_visible_failures(load: LoadGenerator) -> int:
    return sum(n for (unit, code), n in load.results.items() if code != 200)


def copies(load: LoadGenerator, code: int | None = None) -> int:
    return sum(n for (unit, c), n in load.mirrored.items() if is_candidate(unit) and (code is None or c == code))


def candidate_ever_served(load: LoadGenerator) -> bool:
    return any(candidate_share(split) > 0 for _, split in load.splits_seen)


def test_a_failing_candidate_in_a_shadow_step_is_rolled_back_without_a_user_seeing_it(scenario, prometheus):
    start(scenario, prometheus, {"error_rate": 0.4, "accuracy": 0.95},
          [{"mirror": 100, "pause": "1h"}, {"weight": 50, "pause": "2s"}])
    status = scenario.wait(lambda st: st.get("phase") == "RolledBack", 60, "rolled back in the shadow step")
    assert status["history"][-1]["action"] == "RolledBack" and "errors" in status["history"][-1]["reason"]
    load = scenario.load
    assert copies(load, 500) > 0, f"no failed copy reached the candidate: {load.mirrored}"  # its errors were real
    assert user_visible_failures(load) == 0, load.results
    assert not candidate_ever_served(load), load.splits_seen
    # the rollback took the mirror away: 50 more user requests later, no further copy reached the candidate
    wait_until(lambda: load.mirrors_seen and not any(is_candidate(u) for u in load.mirrors_seen[-1][1]), 15,
               lambda: f"the mirror is still published: {load.mirrors_seen}")
    copied, sent = copies(load), sum(load.results.values())
    wait_until(lambda: sum(load.results.values()) >= sent + 50, 15, lambda: load.results)
    assert copies(load) <= copied + 4  # at most the copies already in flight (the copier's four threads)


def test_a_candidate_that_disagrees_with_stable_is_rolled_back_on_agreement(scenario, prometheus):
    start(scenario, prometheus, {"error_rate": 0.0, "accuracy": 0.95, "agreement": 0.8},
          [{"mirror": 100, "pause": "1h"}, {"weight": 50, "pause": "2s"}])
    status = scenario.wait(lambda st: st.get("phase") == "RolledBack", 60, "rolled back on agreement")
    agreement = next(c for c in status["checks"] if c["name"] == "agreement")
    assert agreement["verdict"] == "Fail" and agreement["value"] == pytest.approx(0.8, abs=0.05), agreement
    assert user_visible_failures(scenario.load) == 0 and not candidate_ever_served(scenario.load)


def test_a_healthy_candidate_walks_shadow_then_weights_to_promotion(scenario, prometheus):
    steps = [{"mirror": 100, "pause": "2s"}, {"weight": 20, "pause": "2s"}, {"weight": 50, "pause": "2s"}]
    cohort = None
    if scenario.backend == "gatewayAPI":
        # The cohort step is held until the data plane has routed the cohort to the candidate: its analyses may
        # pass on the shadow step's copies alone, so a short pause could end it before the cohort was ever routed.
        steps.insert(1, {"match": {"headers": [{"name": name, "value": value} for name, value in COHORT.items()]},
                         "pause": "1h"})
        cohort = LoadGenerator(scenario.standin.split_file(scenario.ns, scenario.name), 20, headers=COHORT)
        cohort.start()
    start(scenario, prometheus, GOOD, steps)
    try:
        if cohort is not None:
            cohort.wait_for_split(lambda t, split: candidate_share(split) == 100, 60)
            steps[1]["pause"] = "2s"
            scenario.patch({"strategy": {"steps": steps}})
        scenario.wait(stable_on("1.1.0"), 90, "1.1.0 promoted")
    finally:
        if cohort is not None:
            cohort.stop()
    reasons = [h["reason"] for h in scenario.status()["history"] if h["action"] == "StepAdvanced"]
    words = ["mirroring 100% of stable's requests"] + (["for the cohort x-cohort: testers"] if cohort else []) + \
        ["at 20%", "at 50%"]
    assert reasons == [f"step {i + 1}/{len(steps)} {w}" for i, w in enumerate(words)]
    load = scenario.load
    assert user_visible_failures(load) == 0 and copies(load, 200) > 0
    agreement = [c for c in scenario.status().get("checks", []) if c["name"] == "agreement"]
    assert agreement == []  # judged in the shadow step only: the last analyses (weighted steps) do not show it
    if cohort is not None:
        # the cohort reached the candidate before anyone else did, and only the cohort did meanwhile
        cohort_first = cohort.wait_for_split(lambda t, split: candidate_share(split) == 100, 1)
        everyone_first = load.wait_for_split(lambda t, split: candidate_share(split) > 0, 1)
        assert cohort_first < everyone_first
        assert sum(n for (unit, code), n in cohort.results.items() if is_candidate(unit) and code == 200) > 0
        assert user_visible_failures(cohort) == 0


def test_the_gateway_cohort_rule_is_the_operators_and_goes_with_a_rollback(control_plane, namespace, stand_ins,
                                                                           operator, prometheus):
    scenario = Scenario(control_plane, namespace, stand_ins("gatewayAPI"))
    try:
        cohort_step = {"match": {"headers": [{"name": "x-cohort", "value": "testers"}]}, "pause": "1h"}
        start(scenario, prometheus, GOOD, [cohort_step, {"weight": 50, "pause": "2s"}])
        scenario.wait(lambda st: st.get("canaryMatch"), 30, "the cohort step")
        rules = scenario.get("httproute")["spec"]["rules"]
        assert [r.get("name") for r in rules] == [None, "modelops-cohort-0", None]
        assert rules[1]["backendRefs"] == [{"group": "", "kind": "Service", "name": "fraud-v1-1-0", "port": 80,
                                            "weight": 1}]
        assert [h["name"] for m in rules[1]["matches"] for h in m["headers"]] == ["x-cohort"]
        # the data plane follows the route (the stand-in's next pass): the cohort to 1.1.0, everyone else on 1.0.0
        def routed(headers=None):
            return [(t["version"], t["percent"]) for t in scenario.standin.route(scenario.ns, scenario.name, "/", headers)]

        wait_until(lambda: routed({"X-Cohort": "testers"}) == [("1.1.0", 100)], 10, lambda: routed({"X-Cohort": "testers"}))
        assert routed() == [("1.0.0", 100)]
        scenario.patch({"request": {"id": "abort-1", "action": "Abort", "reason": "testing", "actor": ADMIN}})
        scenario.wait(lambda st: st.get("phase") == "RolledBack", 15, "aborted")
        rules = scenario.get("httproute")["spec"]["rules"]
        assert [r.get("name") for r in rules] == [None, None]
        assert [(r["name"], r["weight"]) for r in rules[0]["backendRefs"]] == [("fraud-v1-0-0", 100)]
    finally:
        scenario.stop_load()
