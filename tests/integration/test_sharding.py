"""Sharding: two replica groups, each with its own Lease, each driving only the ModelDeployments labelled for its
shard; every deployment is driven by exactly one of them and none is dropped."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from playground.operator import OperatorProcess, lease_holder
from .scenario import Scenario, fast_spec
from .test_backends import GOOD, stable_on
from .test_leader_election import STEADY_TIMINGS, wait_for

SHARDS = {"a": ["fraud", "churn"], "b": ["iris", "ranker"]}


def driven_by(process: OperatorProcess, namespace: str) -> set[str]:
    """The deployments of `namespace` this operator process took a decision for."""
    text = urllib.request.urlopen(process.metrics_url, timeout=5).read().decode()
    return {s.labels["deployment"] for family in text_string_to_metric_families(text) for s in family.samples
            if s.name == "modelops_decisions_total" and s.labels.get("namespace") == namespace and s.value > 0}


def test_two_shards_each_drive_their_own_deployments_and_none_is_dropped(control_plane, operator_kubeconfig,
                                                                        namespace, stand_ins, prometheus, tmp_path):
    standin = stand_ins("kserve")
    scenarios: dict[str, list[Scenario]] = {}
    for shard, names in SHARDS.items():
        scenarios[shard] = []
        for name in names:
            s = Scenario(control_plane, namespace, standin, name)
            s.labels = {"modelops.io/shard": shard}
            scenarios[shard].append(s)
    unlabelled = Scenario(control_plane, namespace, standin, "orphan")  # the unlabelled shard's
    # Each shard is a replica group of its own: it watches this test's namespace only, elects on its own Lease.
    operators = {shard: OperatorProcess(operator_kubeconfig, tmp_path, identity=f"shard-{shard}",
                                        args=["-n", namespace, "--shard", shard, *STEADY_TIMINGS])
                 for shard in SHARDS}
    try:
        for process in operators.values():
            process.start()
        for shard in SHARDS:
            wait_for(lambda: lease_holder(control_plane, f"modelops-operator-{shard}") == f"shard-{shard}", 15,
                     f"shard {shard}'s leader")
        everyone = [s for group in scenarios.values() for s in group]
        for s in everyone + [unlabelled]:
            s.version("1.0.0", **GOOD)
            s.version("1.1.0", **GOOD)
        for s in everyone:
            s.serve("1.0.0", fast_spec(prometheus.url), prometheus)
        unlabelled.deploy("1.0.0", fast_spec(prometheus.url))
        for s in everyone:
            s.patch({"version": "1.1.0"})
        for s in everyone:
            s.wait(stable_on("1.1.0"), 90, f"{s.name} promoted")
            actions = [a for a, v in s.actions()]
            # driven once: one Deployed, one rollout walked once (a second driver would repeat entries)
            assert actions == ["Deployed", "RolloutStarted", "StepAdvanced", "StepAdvanced", "Promoted"], actions
        for shard, process in operators.items():
            # its own and nothing else: not the other shard's, not the unlabelled one (the unlabelled shard's, which
            # the session's operator drives when it runs)
            assert driven_by(process, namespace) == set(SHARDS[shard])
    finally:
        for s in [s for group in scenarios.values() for s in group]:
            s.stop_load()
        for process in operators.values():
            process.stop()
