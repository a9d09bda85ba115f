"""A tenant of a shared cluster, with the rights a namespace editor has: what it can and cannot make the operator do."""

from __future__ import annotations

import json
import time

import pytest

from ..conftest import model_deployment_manifest, model_version_manifest


@pytest.fixture
def tenant(control_plane, namespace):
    """A user who may edit one namespace: Kubernetes' built-in `edit` and modelops' own roles (bound
    here directly: aggregating them into `edit` is kube-controller-manager's job, not run here)."""
    user = f"tenant-{namespace}"[:60]
    for role in ("edit", "modelops-view", "modelops-edit"):
        control_plane.kubectl("create", "rolebinding", f"{user}-{role}", f"--clusterrole={role}", f"--user={user}",
                              "-n", namespace)
    kubeconfig = control_plane.kubeconfig_for(user)

    def kubectl(*args: str, check: bool = False, input: str | None = None):
        return control_plane.kubectl(*args, "-n", namespace, kubeconfig=kubeconfig, check=check, input=input)

    kubectl.user = user
    return kubectl


def request(actor: str | None, id_: str = "r1") -> str:
    body = {"id": id_, "action": "Abort", "reason": "testing"}
    if actor is not None:
        body["actor"] = actor
    return json.dumps({"spec": {"request": body}})


def test_a_request_must_name_its_writer_as_actor(control_plane, namespace, tenant):
    created = tenant("apply", "-f", "-", input=json.dumps(model_deployment_manifest()))
    assert created.returncode == 0, created.stderr
    for forged in ("someone-else", "system:serviceaccount:kube-system:default"):
        refused = tenant("patch", "mdep", "fraud", "--type", "merge", "-p", request(forged))
        assert refused.returncode != 0
        assert "spec.request.actor must be the requesting user" in refused.stderr and tenant.user in refused.stderr
    accepted = tenant("patch", "mdep", "fraud", "--type", "merge", "-p", request(tenant.user))
    assert accepted.returncode == 0, accepted.stderr
    # A request naming nobody gets its writer's name from the API server (the MutatingAdmissionPolicy).
    unnamed = tenant("patch", "mdep", "fraud", "--type", "merge", "-p", request(None, "r2"), "-o", "json")
    assert unnamed.returncode == 0, unnamed.stderr
    assert json.loads(unnamed.stdout)["spec"]["request"] == {"id": "r2", "action": "Abort", "reason": "testing",
                                                             "actor": tenant.user}


def test_an_unchanged_request_survives_anyone_elses_edit(control_plane, namespace, tenant):
    """GitOps re-syncs and edits of other fields carry the request over without re-asserting its actor."""
    assert tenant("apply", "-f", "-", input=json.dumps(model_deployment_manifest())).returncode == 0
    assert tenant("patch", "mdep", "fraud", "--type", "merge", "-p", request(tenant.user)).returncode == 0
    control_plane.kubectl("patch", "mdep", "fraud", "-n", namespace, "--type", "merge", "-p", '{"spec": {"paused": true}}')
    changed = control_plane.kubectl("patch", "mdep", "fraud", "-n", namespace, "--type", "merge",
                                    "-p", request(tenant.user, "r2"), check=False)
    assert changed.returncode != 0 and "spec.request.actor" in changed.stderr


def test_tenants_cannot_write_status(control_plane, namespace, tenant):
    assert tenant("apply", "-f", "-", input=json.dumps(model_deployment_manifest())).returncode == 0
    forged = tenant("patch", "mdep", "fraud", "--subresource", "status", "--type", "merge",
                    "-p", '{"status": {"phase": "Stable", "stableVersion": "9.9.9"}}')
    assert forged.returncode != 0 and "forbidden" in forged.stderr.lower()


def test_another_teams_inference_service_cannot_be_borrowed(control_plane, namespace, tenant, operator):
    """Team B's InferenceService sits in the same namespace; team A's deployment names it."""
    isvc = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": "team-b-ranker", "namespace": namespace},
            "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": "s3://team-b/ranker"}}}}
    control_plane.apply(isvc)
    before = control_plane.kubectl("get", "isvc", "team-b-ranker", "-n", namespace, "-o", "json").stdout
    version = model_version_manifest()
    version["metadata"]["namespace"] = namespace
    control_plane.apply(version)
    borrowing = model_deployment_manifest(serving={"backend": "kserve", "kserve": {"name": "team-b-ranker"}})
    assert tenant("apply", "-f", "-", input=json.dumps(borrowing)).returncode == 0
    status = wait_for_status(control_plane, namespace, "fraud", lambda st: synced(st) == ("False", "BackendNotOwned"))
    assert "InferenceService team-b-ranker is not driven by any ModelDeployment" in condition(status, "Synced")["message"]
    assert "BackendNotOwned" in events(control_plane, namespace)
    after = control_plane.kubectl("get", "isvc", "team-b-ranker", "-n", namespace, "-o", "json").stdout

    def written_by_a_driver(isvc: str) -> tuple:  # the serving stand-in may write status; the operator never may
        obj = json.loads(isvc)
        return obj["spec"], obj["metadata"].get("annotations"), obj["metadata"].get("labels")

    assert written_by_a_driver(after) == written_by_a_driver(before)


def condition(status: dict, type_: str) -> dict:
    return next((c for c in status.get("conditions") or [] if c["type"] == type_), {})


def synced(status: dict) -> tuple[str, str] | None:
    c = condition(status, "Synced")
    return (c["status"], c["reason"]) if c else None


def wait_for_status(control_plane, namespace: str, name: str, predicate, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    status: dict = {}
    while time.monotonic() < deadline:
        got = control_plane.kubectl("get", "mdep", name, "-n", namespace, "-o", "json", check=False)
        status = (json.loads(got.stdout).get("status") or {}) if got.returncode == 0 else {}
        if predicate(status):
            return status
        time.sleep(0.2)
    raise AssertionError(f"status of {namespace}/{name} never matched: {json.dumps(status)[:3000]}")


def events(control_plane, namespace: str) -> list[str]:
    items = json.loads(control_plane.kubectl("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
    return [e["reason"] for e in items]


def oversized_cases() -> list[tuple[str, dict, str]]:
    checks = [{"name": f"c{i}", "query": "up", "max": 1} for i in range(200)]
    services = {f"1.0.{i}": f"svc-{i}" for i in range(10_000)}
    parameters = {f"p{i}": "x" for i in range(10_000)}
    version = model_version_manifest()
    version["spec"]["lineage"]["parameters"] = parameters
    return [
        ("200 checks", model_deployment_manifest(analysis={"checks": checks}), "spec.analysis.checks"),
        ("10,000 Services", model_deployment_manifest(serving={"backend": "gatewayAPI", "gatewayAPI": {
            "route": "r", "services": services}}), "spec.serving.gatewayAPI.services"),
        ("a 1 MB query", model_deployment_manifest(analysis={"checks": [
            {"name": "big", "query": "up" + " " * 1_000_000, "max": 1}]}), "spec.analysis.checks[0].query"),
        ("10,000 hyperparameters", version, "spec.lineage.parameters"),
    ]


@pytest.mark.parametrize("what, manifest, field", oversized_cases(), ids=[c[0] for c in oversized_cases()])
def test_oversized_specs_are_refused_naming_the_field(control_plane, namespace, tenant, what, manifest, field):
    refused = tenant("create", "-f", "-", input=json.dumps(manifest))
    assert refused.returncode != 0 and field in refused.stderr, refused.stderr[:2000]


def test_control_characters_and_unicode_in_free_text_stay_text(control_plane, namespace, tenant, operator):
    """A reason is the user's own words: kept as given, and never able to reach anything but status text."""
    version = model_version_manifest()
    version["metadata"]["namespace"] = namespace
    control_plane.apply(version)
    weird = "pinned\n\x1b[31mred\x1b[0m \u202eevil\u202c 🚀 \" } ] {{namespace}}"
    manifest = model_deployment_manifest(trafficOverride={"weight": 10, "reason": weird})
    assert tenant("create", "-f", "-", input=json.dumps(manifest)).returncode == 0
    status = wait_for_status(control_plane, namespace, "fraud", lambda st: bool(st.get("history")))
    assert status["phase"] in ("Stable", "Failed")  # nothing else moved: no candidate, no rollout


def test_an_inline_prometheus_is_never_contacted(control_plane, namespace, tenant, kserve, operator):
    """A tenant points the analysis at an address of its choice (an internal endpoint, say), with a Secret
    of its namespace as token: the operator, which honours no inline provider by default, sends nothing."""
    from playground.processes import SilentListener
    from .scenario import Scenario

    internal = SilentListener()
    try:
        scenario = Scenario(control_plane, namespace, kserve)
        for version in ("1.0.0", "1.1.0"):
            scenario.version(version, error_rate=0.0, accuracy=0.95)
        control_plane.kubectl("create", "secret", "generic", "token", "--from-literal=t=s3cr3t", "-n", namespace)
        manifest = model_deployment_manifest(analysis={
            "interval": "1s", "noDataLimit": 2, "prometheus": {"address": internal.url,
                                                               "bearerTokenSecret": {"name": "token", "key": "t"}},
            "checks": [{"name": "errors", "template": "errorRate", "max": 0.05}]},
            strategy={"steps": [{"weight": 20, "pause": "1s"}]})
        assert tenant("apply", "-f", "-", input=json.dumps(manifest)).returncode == 0
        wait_for_status(control_plane, namespace, "fraud", lambda st: st.get("phase") == "Stable")
        assert tenant("patch", "mdep", "fraud", "--type", "merge", "-p", '{"spec": {"version": "1.1.0"}}').returncode == 0
        status = wait_for_status(control_plane, namespace, "fraud", lambda st: st.get("phase") == "RolledBack", 40)
        assert all(c["verdict"] == "Error" and "analysis.prometheus is not allowed by this operator" in c["message"]
                   for c in status["checks"])
        assert internal.accepted == []  # not one connection
    finally:
        internal.close()
