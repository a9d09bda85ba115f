"""One scenario suite, the same for every backend, on the real control plane with real metrics."""

from __future__ import annotations

import json
import time

import pytest

from playground.controlplane import ADMIN_USER as ADMIN
from playground.loadgen import LoadGenerator
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
    if scenario.backend == "kserve":
        # A generation per change the rollout needs (created; 0 % until its revision is ready, then all on it; the
        # candidate's artifact at 0 %, 20 %, 50 %; promoted), none from the operator reacting to its own writes.
        assert scenario.get("inferenceservice")["metadata"]["generation"] <= 7
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


# --- Gateway API only -----------------------------------------------------------------------------------------

@pytest.fixture
def gateway(control_plane, namespace, stand_ins, operator):
    s = Scenario(control_plane, namespace, stand_ins("gatewayAPI"))
    yield s
    s.stop_load()


def route_conditions(route: dict, of_its_generation: bool = False) -> dict[str, str]:
    """The route's parent conditions; `of_its_generation`: only those observed for the spec it has now (the
    Gateway's write for the spec before may still stand)."""
    generation = route["metadata"]["generation"]
    return {c["type"]: c["status"] for p in (route.get("status") or {}).get("parents") or []
            for c in p.get("conditions", []) if not of_its_generation or c.get("observedGeneration") == generation}


def test_gateway_header_pin_stays_on_its_version_through_a_rollout_and_its_promotion(gateway, prometheus):
    """Testers (`x-cohort: testers`) are pinned to 1.0.0's Service by a rule of the user's: the rollout to 1.1.0
    and its promotion drive the model's default rule only, and the data plane keeps sending testers to 1.0.0."""
    gateway.version("1.0.0", **GOOD)
    gateway.version("1.1.0", **GOOD)
    pin = {"matches": [{"path": {"type": "PathPrefix", "value": "/"},
                        "headers": [{"type": "Exact", "name": "x-cohort", "value": "testers"}]}],
           "backendRefs": [{"group": "", "kind": "Service", "name": gateway.services["1.0.0"], "port": 80}]}
    gateway.pins = [pin]
    gateway.serve("1.0.0", fast_spec(prometheus.url, "gatewayAPI"), prometheus)
    written = gateway.get("httproute")["spec"]["rules"][0]
    assert written["backendRefs"] == [{**pin["backendRefs"][0], "weight": 1}]  # the API server's defaults
    gateway.patch({"version": "1.1.0"})
    status = gateway.wait(lambda st: st.get("canaryWeight", 0) > 0, 30, "1.1.0 taking traffic")
    assert status["canaryVersion"] == "1.1.0"
    assert gateway.get("httproute")["spec"]["rules"][0] == written
    gateway.wait(stable_on("1.1.0"), 60, "1.1.0 promoted")
    rules = gateway.get("httproute")["spec"]["rules"]
    assert rules[0] == written  # untouched: its match, its one ref, its weight
    assert [r["name"] for r in rules[1]["backendRefs"]] == ["fraud-v1-1-0"]
    assert rules[2]["backendRefs"] == [{"group": "", "kind": "Service", "name": "docs", "port": 80, "weight": 1}]
    # the data plane, asked: testers still reach 1.0.0, everyone else 1.1.0
    deadline = time.monotonic() + 10
    while [t["version"] for t in gateway.standin.route(gateway.ns, gateway.name)] != ["1.1.0"]:
        assert time.monotonic() < deadline, gateway.standin.route(gateway.ns, gateway.name)
        time.sleep(0.1)
    testers = gateway.standin.route(gateway.ns, gateway.name, "/", {"X-Cohort": "testers"})
    assert [(t["version"], t["percent"]) for t in testers] == [("1.0.0", 100)]
    code, body = LoadGenerator.post(testers[0]["url"], b'{"instances": [[1, 2, 3, 4]]}')
    assert code == 200 and json.loads(body)["version"] == "1.0.0"
    assert all(p["version"] == "1.1.0" for p in gateway.standin.route(gateway.ns, gateway.name, "/", {"x-cohort": "x"}))


def test_gateway_candidate_whose_pods_never_become_ready_gets_no_traffic_and_is_rolled_back(gateway, prometheus):
    """The route is Accepted with every ref resolved, but 1.1.0's Service never has a ready endpoint: no traffic,
    and rolled back after strategy.readyTimeout."""
    gateway.version("1.0.0", **GOOD)
    gateway.version("1.1.0", never_ready=True, **GOOD)
    gateway.serve("1.0.0", fast_spec(prometheus.url, "gatewayAPI", strategy={"readyTimeout": "6s"}), prometheus)
    gateway.patch({"version": "1.1.0"})
    gateway.wait(lambda st: "waiting for 1.1.0 to become ready" in (st.get("message") or ""), 15, "waiting for 1.1.0")
    deadline = time.monotonic() + 15
    while not (route_conditions(route := gateway.get("httproute"), of_its_generation=True) == {"Accepted": "True",
                                                                                             "ResolvedRefs": "True"}
               and "fraud-v1-1-0" in json.dumps(route["spec"]["rules"][0])):
        assert time.monotonic() < deadline, f"the route is not Accepted with 1.1.0's ref resolved: {route_conditions(route)}"
        time.sleep(0.1)
    slices = json.loads(gateway.cp.kubectl("get", "endpointslices", "-n", gateway.ns, "-l",
                                           "kubernetes.io/service-name=fraud-v1-1-0", "-o", "json").stdout)["items"]
    assert slices and all(e["conditions"]["ready"] is False for s in slices for e in s["endpoints"])
    status = gateway.wait(lambda st: st.get("phase") == "RolledBack", 30, "rolled back after readyTimeout")
    assert status["stableVersion"] == "1.0.0" and "readyTimeout" in status["history"][-1]["reason"]
    assert route_conditions(gateway.get("httproute")) == {"Accepted": "True", "ResolvedRefs": "True"}
    assert all(candidate_share(split) == 0 for _, split in gateway.load.splits_seen)
    assert not [unit for unit, _ in gateway.load.results if is_candidate(unit)]
    refs = gateway.get("httproute")["spec"]["rules"][0]["backendRefs"]
    assert [(r["name"], r["weight"]) for r in refs] == [("fraud-v1-0-0", 100)]


def test_gateway_rule_the_operator_refuses_added_at_the_50_percent_step_does_not_stop_a_rollback(gateway, prometheus):
    """An SRE adds a header rule naming both versions' Services while 1.1.0 has 50 %: the operator will not drive it,
    says so, and still measures; once 1.1.0's failures reach the (lowered) failureLimit it is rolled back on the
    model's path rule. No status says "all traffic on stable" while the rule still routes to 1.1.0."""
    gateway.version("1.0.0", **GOOD)
    gateway.version("1.1.0", error_rate=0.4, accuracy=0.95)
    spec = fast_spec(prometheus.url, "gatewayAPI", strategy={"steps": [{"weight": 50, "pause": "1h"}]},
                     analysis={"failureLimit": 1000})  # failing, but held at 50 % until the rule is in
    gateway.serve("1.0.0", spec, prometheus)
    gateway.patch({"version": "1.1.0"})
    gateway.wait(lambda st: st.get("canaryWeight") == 50, 30, "1.1.0 at 50 %")
    split = {"name": "debug-split", "matches": [{"path": {"type": "PathPrefix", "value": "/"},
                                                 "headers": [{"type": "Exact", "name": "x-debug", "value": "1"}]}],
             "backendRefs": [{"name": gateway.services[v], "port": 80, "weight": 50} for v in ("1.0.0", "1.1.0")]}
    gateway.cp.kubectl("patch", "httproute", gateway.name, "-n", gateway.ns, "--type", "json",
                       "-p", json.dumps([{"op": "add", "path": "/spec/rules/-", "value": split}]))

    def synced(st):
        return next((c for c in st.get("conditions") or [] if c["type"] == "Synced"), {})

    gateway.wait(lambda st: "debug-split" in synced(st).get("message", ""), 15, "the refused rule reported")
    lowered = time.monotonic()
    gateway.patch({"analysis": {"failureLimit": 1}})
    claims = []

    def rolled_back(st):
        claims.extend([st["message"]] if "all traffic on stable" in (st.get("message") or "") else [])
        return st.get("phase") == "RolledBack"

    status = gateway.wait(rolled_back, 30, "rolled back beside the refused rule")
    print(f"\nrolled back {time.monotonic() - lowered:.1f}s after failureLimit was lowered: {status['message']}")
    assert not claims and "rollback decided, backend refuses: HTTPRoute fraud rule 2 (debug-split)" in status["message"]
    assert synced(status)["status"] == "False" and synced(status)["reason"] == "BackendMisconfigured"
    gateway.wait(lambda st: rolled_back(st) and [r["name"] for r in gateway.get("httproute")["spec"]["rules"][0]
                                                 ["backendRefs"]] == [gateway.services["1.0.0"]], 15, "path rule on stable")
    rules = gateway.get("httproute")["spec"]["rules"]
    assert [(r["name"], r["weight"]) for r in rules[2]["backendRefs"]] == [(gateway.services["1.0.0"], 50),
                                                                           (gateway.services["1.1.0"], 50)]  # untouched
    assert not claims
    gateway.cp.kubectl("patch", "httproute", gateway.name, "-n", gateway.ns, "--type", "json",
                       "-p", json.dumps([{"op": "remove", "path": "/spec/rules/2"}]))
    status = gateway.wait(lambda st: (st.get("message") or "").endswith("all traffic on stable 1.0.0"), 15,
                          "the usual words once the rule is gone")
    assert synced(status)["status"] == "True"
