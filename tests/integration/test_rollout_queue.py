"""The operator's limit of rollouts in flight (`--max-rollouts`): three deployments bumped at once by an operator that
allows one rollout at a time walk one after the other, the others Queued (visible in status, events, Argo CD's
health) while stable serves them; none is dropped; and one that cannot start holds up nobody behind it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from playground.argocd_lua import ArgoCDLua
from playground.operator import OperatorProcess, lease_holder
from .scenario import Scenario, fast_spec
from .test_backends import GOOD, stable_on
from .test_leader_election import STEADY_TIMINGS, wait_for

NAMES = ["fraud", "churn", "iris"]
SHARD = "queue"  # an operator of the test's own drives these: the session's does not


def rollout_span(s: Scenario) -> tuple[str, str]:
    history = s.status()["history"]
    started = next(h["time"] for h in history if h["action"] == "RolloutStarted")
    promoted = next(h["time"] for h in history if h["action"] == "Promoted")
    return started, promoted


def queued_events(s: Scenario) -> list[str]:
    events = json.loads(s.cp.kubectl("get", "events", "-n", s.ns, "-o", "json",
                                     "--field-selector", f"involvedObject.name={s.name}").stdout)["items"]
    return [e["message"] for e in events if e["reason"] == "Queued"]


@pytest.fixture
def under_one_slot(control_plane, operator_kubeconfig, namespace, stand_ins, prometheus,
                   tmp_path) -> Iterator[list[Scenario]]:
    """The deployments of NAMES serving 1.0.0, with 1.1.0 published for each, under an operator of their own that
    allows one rollout at a time."""
    standin = stand_ins("kserve")
    scenarios = []
    for name in NAMES:
        s = Scenario(control_plane, namespace, standin, name)
        s.labels = {"modelops.io/shard": SHARD}
        scenarios.append(s)
    operator = OperatorProcess(operator_kubeconfig, tmp_path, identity="queue",
                               args=["-n", namespace, "--shard", SHARD, "--max-rollouts", "1", *STEADY_TIMINGS])
    try:
        operator.start()
        wait_for(lambda: lease_holder(control_plane, f"modelops-operator-{SHARD}") == "queue", 15, "the leader")
        for s in scenarios:
            s.version("1.0.0", **GOOD)
            s.version("1.1.0", **GOOD)
            s.serve("1.0.0", fast_spec(prometheus.url), prometheus)
        yield scenarios
    finally:
        for s in scenarios:
            s.stop_load()
        operator.stop()


def test_one_rollout_at_a_time_the_others_queue_and_none_is_dropped(under_one_slot):
    scenarios = under_one_slot
    for s in scenarios:
        s.patch({"version": "1.1.0"})

    # While one rolls out, the others wait on stable, and say so.
    deadline, queued = time.monotonic() + 30, None
    while queued is None and time.monotonic() < deadline:
        queued = next((s.get() for s in scenarios if s.status().get("phase") == "Queued"), None)
    assert queued is not None, "no deployment was ever Queued"
    assert queued["status"]["stableVersion"] == "1.0.0" and "canaryVersion" not in queued["status"]
    assert "--max-rollouts" in queued["status"]["message"]
    health = ArgoCDLua("ModelDeployment").health(queued)
    assert health["status"] == "Progressing" and health["message"].startswith("Queued; stable 1.0.0 serves")

    for s in scenarios:
        s.wait(stable_on("1.1.0"), 120, f"{s.name} promoted")
        actions = [a for a, _ in s.actions()]
        assert actions == ["Deployed", "RolloutStarted", "StepAdvanced", "StepAdvanced", "Promoted"], actions
    spans = sorted(rollout_span(s) for s in scenarios)
    for (_, promoted), (started, _) in zip(spans, spans[1:]):
        assert promoted <= started, f"two rollouts in flight at once: {spans}"
    assert sum(1 for s in scenarios if queued_events(s)) == len(NAMES) - 1


def test_a_queued_deployment_that_cannot_start_does_not_hold_up_the_one_behind_it(under_one_slot, control_plane,
                                                                                    namespace):
    first, blocked, behind = under_one_slot
    first.patch({"version": "1.1.0"})
    first.wait(lambda st: st.get("canaryVersion") == "1.1.0", 30, "the first rolling out")
    for s in (blocked, behind):  # queued in this order
        s.patch({"version": "1.1.0"})
        s.wait(lambda st: st.get("phase") == "Queued", 30, f"{s.name} queued")
    control_plane.kubectl("delete", "mv", f"{blocked.name}-1-1-0", "-n", namespace)  # it cannot start now
    first.wait(stable_on("1.1.0"), 120, "the first promoted")
    behind.wait(stable_on("1.1.0"), 120, "the one behind the blocked one promoted")
    left = blocked.status()  # out of the queue, saying why, on stable
    assert (left["phase"], left["stableVersion"]) == ("Stable", "1.0.0")
    assert "waiting for a ModelVersion" in left["message"]
    assert [a for a, _ in blocked.actions()] == ["Deployed"]
