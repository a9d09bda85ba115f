"""The operator's limit of rollouts in flight (`--max-rollouts`): three deployments bumped at once by an operator that
allows one rollout at a time walk one after the other, the others Queued (visible in status, events, Argo CD's
health) while stable serves them; none is dropped."""

from __future__ import annotations

import json
import time

from playground.argocd_lua import ArgoCDLua
from playground.operator import OperatorProcess, lease_holder
from .scenario import Scenario, fast_spec
from .test_backends import GOOD, stable_on
from .test_leader_election import TIMINGS, wait_for

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


def test_one_rollout_at_a_time_the_others_queue_and_none_is_dropped(control_plane, operator_kubeconfig, namespace,
                                                                    stand_ins, prometheus, tmp_path):
    standin = stand_ins("kserve")
    scenarios = []
    for name in NAMES:
        s = Scenario(control_plane, namespace, standin, name)
        s.labels = {"modelops.io/shard": SHARD}
        scenarios.append(s)
    operator = OperatorProcess(operator_kubeconfig, tmp_path, identity="queue",
                               args=["-n", namespace, "--shard", SHARD, "--max-rollouts", "1", *TIMINGS])
    try:
        operator.start()
        wait_for(lambda: lease_holder(control_plane, f"modelops-operator-{SHARD}") == "queue", 15, "the leader")
        for s in scenarios:
            s.version("1.0.0", **GOOD)
            s.version("1.1.0", **GOOD)
            s.serve("1.0.0", fast_spec(prometheus.url), prometheus)
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
    finally:
        for s in scenarios:
            s.stop_load()
        operator.stop()
