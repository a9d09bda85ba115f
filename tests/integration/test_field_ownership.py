"""Field ownership on the real API server: the operator writes backend objects with server-side apply as the field
manager `modelops`, owning exactly the fields it drives; a GitOps tool re-applying the object's Git manifest
server-side as its own manager (Argo CD: `argocd-controller`) mid-rollout moves no traffic, resets no step, re-runs
no request and loses no status: sent without the operator's fields (Argo CD with `ignoreDifferences:
managedFieldsManagers: [modelops]` and RespectIgnoreDifferences=true), it is accepted and changes nothing the
operator drives; sent with Git's values of those fields and without force, the API server refuses it with a
conflict naming `modelops`."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from .scenario import Scenario, fast_spec

pytestmark = pytest.mark.integration

GOOD = {"error_rate": 0.0, "accuracy": 0.95}
PATIENT = {"strategy": {"steps": [{"weight": 20, "pause": "1h"}, {"weight": 50, "pause": "1h"}]}}
BRISK = {"steps": [{"weight": 20, "pause": "1s"}, {"weight": 50, "pause": "1s"}]}
GITOPS = "argocd-controller"
KSERVE_FIELDS = {
    "metadata.labels.app.kubernetes.io/managed-by",
    "metadata.annotations.modelops.io/deployment",
    "metadata.annotations.modelops.io/applied-canary-traffic-percent",
    "metadata.annotations.modelops.io/artifact-generation",
    "metadata.annotations.modelops.io/revision-versions",
    "metadata.annotations.modelops.io/version-models",
    "metadata.annotations.serving.kserve.io/deploymentMode",  # created serverless, the only mode it drives
    "spec.predictor.model.modelFormat.name",
    "spec.predictor.model.storageUri",
}
"""What the operator owns on an InferenceService it created, once a rollout is over."""
KINDS = {"kserve": ("isvc", "serving.kserve.io/v1beta1", "InferenceService"),
         "gatewayAPI": ("httproute", "gateway.networking.k8s.io/v1", "HTTPRoute")}


@pytest.fixture(params=["kserve", "gatewayAPI"])
def scenario(request, control_plane, namespace, stand_ins, operator):
    s = Scenario(control_plane, namespace, stand_ins(request.param))
    yield s
    s.stop_load()


def owned(obj: dict[str, Any], manager: str) -> dict[tuple[str, str], set[str]]:
    """manager's managedFields entries on `obj`: (operation, subresource) -> the fields, as dotted paths."""
    def paths(fields: dict[str, Any], prefix: str) -> set[str]:
        out: set[str] = set()
        for key, sub in fields.items():
            if key == ".":
                out.add(prefix)
                continue
            path = f"{prefix}.{key[2:]}" if prefix else key[2:]
            out |= paths(sub, path) if sub else {path}
        return out

    return {(e["operation"], e.get("subresource", "")): paths(e.get("fieldsV1") or {}, "")
            for e in obj["metadata"].get("managedFields") or [] if e["manager"] == manager}


def backend(scenario: Scenario) -> dict[str, Any]:
    """The backend object with its metadata.managedFields (kubectl hides them unless asked)."""
    return json.loads(scenario.cp.kubectl("get", KINDS[scenario.backend][0], scenario.name, "-n", scenario.ns,
                                          "-o", "json", "--show-managed-fields").stdout)


def traffic(scenario: Scenario) -> Any:
    """What decides traffic: the predictor (storageUri, canaryTrafficPercent) or the route's rules."""
    spec = backend(scenario)["spec"]
    return spec["predictor"] if scenario.backend == "kserve" else spec["rules"]


def git_manifest(scenario: Scenario) -> dict[str, Any]:
    """The backend object as its Git repository holds it: handed to the ModelDeployment, stable 1.0.0 serving.
    Written as the API server stores it (the Gateway CRD's defaults filled in), so that only the operator's fields
    can differ from the live object."""
    _, api_version, kind = KINDS[scenario.backend]
    meta = {"name": scenario.name, "namespace": scenario.ns, "labels": {"app.kubernetes.io/part-of": "fraud"},
            "annotations": {"modelops.io/deployment": scenario.name}}
    if scenario.backend == "kserve":
        spec: dict[str, Any] = {"predictor": {"model": {
            "modelFormat": {"name": "sklearn"}, "storageUri": f"s3://models/{scenario.name}/{scenario.ns}/1.0.0"}}}
    else:
        live = backend(scenario)["spec"]
        model_rule = {**live["rules"][0], "backendRefs": [
            {"group": "", "kind": "Service", "name": scenario.services["1.0.0"], "port": 80, "weight": 100}]}
        spec = {"parentRefs": live["parentRefs"], "rules": [model_rule, live["rules"][1]]}
    return {"apiVersion": api_version, "kind": kind, "metadata": meta, "spec": spec}


def without_operators_fields(manifest: dict[str, Any], live: dict[str, Any]) -> dict[str, Any]:
    """What Argo CD applies with managedFieldsManagers: [modelops] and RespectIgnoreDifferences: the manifest
    without each field the `modelops` manager owns whose Git value differs from the live one."""
    ours = set().union(*owned(live, "modelops").values())

    def prune(node: Any, live_node: Any, prefix: str) -> Any:
        if not isinstance(node, dict):
            return node
        out = {}
        for key, value in node.items():
            path = f"{prefix}.{key}" if prefix else key
            current = live_node.get(key) if isinstance(live_node, dict) else None
            if path in ours and value != current:
                continue
            kept = prune(value, current, path)
            if kept != {} or value == {}:
                out[key] = kept
        return out

    return prune(manifest, live, "")


def git_apply(scenario: Scenario, manifest: dict[str, Any]) -> Any:
    return scenario.cp.apply(manifest, "--server-side", f"--field-manager={GITOPS}", check=False)


def rollout_mid_way(scenario: Scenario, prometheus) -> dict[str, Any]:
    scenario.version("1.0.0", **GOOD)
    scenario.version("1.1.0", **GOOD)
    scenario.serve("1.0.0", fast_spec(prometheus.url, scenario.backend, **PATIENT), prometheus)
    scenario.patch({"version": "1.1.0"})
    status = scenario.wait(lambda st: st.get("canaryWeight") == 20 and st.get("currentStep") == 0, 30, "step 1 at 20%")
    scenario.load.wait_for_split(lambda t, split: sum(p for u, p in split.items()
                                                      if "1-1-0" in u or u.endswith("00002")) == 20, 15)
    return status


def settled(scenario: Scenario, seconds: float = 3.0) -> tuple[Any, dict[str, Any], str]:
    """The traffic fields, the status without its clock-driven parts, and the operator's last apply, after a few
    of the operator's rounds (one a second while it waits on a step)."""
    time.sleep(seconds)
    status = {k: v for k, v in scenario.status().items()
              if k in ("phase", "stableVersion", "canaryVersion", "canaryWeight", "currentStep", "stepStartedAt",
                       "history", "handledRequests", "failedVersion")}
    applied = next((e["time"] for e in backend(scenario)["metadata"]["managedFields"]
                    if e["manager"] == "modelops" and e["operation"] == "Apply"), "")
    return traffic(scenario), status, applied


def test_after_a_rollout_the_operator_owns_exactly_the_fields_it_drives(scenario, prometheus):
    scenario.version("1.0.0", **GOOD)
    scenario.version("1.1.0", **GOOD)
    scenario.serve("1.0.0", fast_spec(prometheus.url, scenario.backend), prometheus)
    scenario.patch({"version": "1.1.0"})
    scenario.wait(lambda st: st.get("phase") == "Stable" and st.get("stableVersion") == "1.1.0", 90, "1.1.0 promoted")
    obj = backend(scenario)
    entries = owned(obj, "modelops")
    print(f"\nmanagedFields of {obj['kind']} {scenario.name} for modelops: "
          f"{json.dumps({f'{op}/{sub}' if sub else op: sorted(p) for (op, sub), p in entries.items()}, indent=1)}")
    if scenario.backend == "kserve":
        assert entries == {("Apply", ""): KSERVE_FIELDS}
        assert "canaryTrafficPercent" not in obj["spec"]["predictor"]
    else:  # the rules list is atomic: the whole of it; the route itself, its parentRefs, its owner annotation the user's
        assert entries == {("Apply", ""): {"metadata.annotations.modelops.io/applied-weights", "spec.rules"}}
        users = set().union(*(p for e in obj["metadata"]["managedFields"] if e["manager"] != "modelops"
                              for p in [owned(obj, e["manager"]).get((e["operation"], e.get("subresource", "")), set())]))
        assert {"spec.parentRefs", "metadata.annotations.modelops.io/deployment"} <= users


def test_a_git_reapply_mid_rollout_moves_nothing_and_the_rollout_goes_on(scenario, prometheus):
    rollout_mid_way(scenario, prometheus)
    before = settled(scenario, 0)
    handled_before = scenario.status().get("handledRequests")

    # (b) Git's values of the operator's fields, applied without force: refused, naming the operator's manager.
    refused = git_apply(scenario, git_manifest(scenario))
    fields = ([".spec.predictor.model.storageUri"] if scenario.backend == "kserve" else [".spec.rules"])
    print(f"\nGit values applied without force: {refused.stderr.strip()}")
    assert refused.returncode != 0 and "conflict" in refused.stderr and 'with "modelops"' in refused.stderr
    assert all(f in refused.stderr for f in fields)
    if scenario.backend == "kserve":  # with Git's canaryTrafficPercent too: both fields named
        with_percent = git_manifest(scenario)
        with_percent["spec"]["predictor"]["canaryTrafficPercent"] = 100
        refused = git_apply(scenario, with_percent)
        print(f"with Git's canaryTrafficPercent too: {refused.stderr.split(chr(10) + 'Please')[0].strip()}")
        assert refused.returncode != 0 and ".spec.predictor.canaryTrafficPercent" in refused.stderr
    assert settled(scenario) == before  # nothing moved, and the operator had nothing to write back

    # (a) without the operator's fields, as Argo CD sends it: accepted, nothing the operator drives changes.
    manifest = without_operators_fields(git_manifest(scenario), backend(scenario))
    accepted = git_apply(scenario, manifest)
    assert accepted.returncode == 0, accepted.stderr
    obj = backend(scenario)
    assert owned(obj, GITOPS).get(("Apply", "")), "the GitOps tool's apply is recorded as its own"
    assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "fraud"
    assert settled(scenario) == before
    assert scenario.status().get("handledRequests") == handled_before
    scenario.load.wait_for_split(lambda t, split: sum(p for u, p in split.items()
                                                      if "1-1-0" in u or u.endswith("00002")) == 20, 5)

    # The rollout goes on from where it was, to promotion.
    scenario.patch({"strategy": BRISK})
    status = scenario.wait(lambda st: st.get("phase") == "Stable" and st.get("stableVersion") == "1.1.0", 60,
                           "1.1.0 promoted")
    actions = [(h["action"], h["reason"]) for h in status["history"] if h["version"] == "1.1.0"]
    assert [a for a, _ in actions].count("RolloutStarted") == 1
    steps = [r for a, r in actions if a == "StepAdvanced"]
    assert steps == sorted(set(steps), key=steps.index), f"a step was repeated: {steps}"
    assert "step 1/2 at 20%" in steps[0]
    if scenario.backend == "kserve":
        assert "canaryTrafficPercent" not in backend(scenario)["spec"]["predictor"]
