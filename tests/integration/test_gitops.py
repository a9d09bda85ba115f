"""GitOps re-applies of a ModelDeployment's Git manifest mid-rollout leave the SREs' actions alone.

`paused`, `trafficOverride` and `request` live in the spec, which Git owns. The plugin writes them
under its own field manager (`kubectl-modelops`); the Git manifest does not carry them. Argo CD
re-applies that manifest client-side (kubectl apply, its default) or server-side as
`argocd-controller`: neither may undo a pause, a pin or an executed request, reset a step or lose
status. A Git manifest that does carry such a field (`paused: false`) is refused server-side
without force (Argo CD with RespectIgnoreDifferences and the plugin's manager ignored would not
send it at all; see docs/gitops.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .scenario import Scenario, fast_spec

pytestmark = pytest.mark.integration

GOOD = {"error_rate": 0.0, "accuracy": 0.95}
ACTIONS = ("paused", "trafficOverride", "request")


@pytest.fixture
def scenario(control_plane, namespace, kserve, operator):
    s = Scenario(control_plane, namespace, kserve)
    yield s
    s.stop_load()


def plugin(scenario: Scenario, *args: str) -> None:
    env = {**os.environ, "KUBECONFIG": str(scenario.cp.kubeconfig),
           "PATH": f"{scenario.cp.bin}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run([str(Path(sys.executable).with_name("kubectl-modelops")), "-n", scenario.ns, *args],
                   env=env, check=True, capture_output=True)


def git_manifest(scenario: Scenario) -> dict:
    """What Git holds: the live spec without the SREs' fields (the version bump included: it came from Git)."""
    live = scenario.get()
    return {"apiVersion": "modelops.io/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": live["metadata"]["name"], "namespace": scenario.ns},
            "spec": {k: v for k, v in live["spec"].items() if k not in ACTIONS}}


def reapply(scenario: Scenario, manifest: dict) -> None:
    text = yaml.safe_dump(manifest)
    scenario.cp.kubectl("apply", "-f", "-", input=text)  # client-side, as Argo CD syncs by default
    scenario.cp.kubectl("apply", "--server-side", "--field-manager=argocd-controller", "--force-conflicts",
                        "-f", "-", input=text)


def managers_of(scenario: Scenario, field: str) -> set[str]:
    """Who owns spec.<field>."""
    live = json.loads(scenario.cp.kubectl("get", "modeldeployment", "fraud", "-n", scenario.ns, "-o", "json",
                                          "--show-managed-fields").stdout)
    return {e["manager"] for e in live["metadata"]["managedFields"] if field in e.get("fieldsV1", {}).get("f:spec", {})}


def settled(status: dict) -> dict:
    return {k: status.get(k) for k in ("phase", "canaryVersion", "canaryWeight", "currentStep", "stepStartedAt",
                                       "pinnedWeight", "handledRequests")} | {"history": len(status["history"])}


def test_a_git_reapply_leaves_a_pause_a_pin_and_an_executed_request(scenario, prometheus):
    scenario.version("1.0.0", **GOOD)
    scenario.version("1.1.0", **GOOD)
    patient = {"steps": [{"weight": 20, "pause": "1h"}, {"weight": 50, "pause": "1h"}]}
    scenario.serve("1.0.0", fast_spec(prometheus.url, strategy=patient), prometheus)
    scenario.patch({"version": "1.1.0"})
    scenario.wait(lambda st: st.get("canaryWeight") == 20, 30, "1.1.0 at 20%")
    manifest = git_manifest(scenario)

    plugin(scenario, "pause", "fraud")
    plugin(scenario, "pin", "fraud", "30", "--reason", "load test")
    before = scenario.wait(lambda st: st.get("phase") == "Paused" and st.get("canaryWeight") == 30, 15, "paused at 30%")
    assert managers_of(scenario, "f:paused") == managers_of(scenario, "f:trafficOverride") == {"kubectl-modelops"}

    reapply(scenario, manifest)
    spec = scenario.get()["spec"]
    assert spec["paused"] is True and spec["trafficOverride"]["weight"] == 30
    after = scenario.wait(lambda st: st.get("lastAnalysisAt", "") > before.get("lastAnalysisAt", ""), 15,
                          "an analysis after the re-apply")
    assert settled(after) == settled(before)  # no step reset, no lost status, traffic where the SRE put it
    assert scenario.get("isvc")["spec"]["predictor"]["canaryTrafficPercent"] == 30

    # A Git manifest that carries `paused: false` does not win without force.
    carrying = {**manifest, "spec": {**manifest["spec"], "paused": False}}
    refused = scenario.cp.kubectl("apply", "--server-side", "--field-manager=argocd-controller", "-f", "-",
                                  input=yaml.safe_dump(carrying), check=False)
    assert refused.returncode != 0 and "kubectl-modelops" in refused.stderr, refused.stderr
    assert scenario.get()["spec"]["paused"] is True

    plugin(scenario, "unpin", "fraud")
    plugin(scenario, "resume", "fraud")
    plugin(scenario, "promote", "fraud", "--reason", "validated")
    promoted = scenario.wait(lambda st: st.get("phase") == "Stable" and st.get("stableVersion") == "1.1.0", 20,
                             "promoted by the plugin")
    request = scenario.get()["spec"]["request"]
    reapply(scenario, manifest)
    assert scenario.get()["spec"]["request"] == request  # still there: Git never had it
    later = scenario.wait(lambda st: st.get("observedGeneration") == scenario.get()["metadata"]["generation"], 15,
                          "the re-apply seen")
    assert settled(later) == settled(promoted)
    assert [h["action"] for h in later["history"]].count("Promoted") == 1  # the request ran once
