"""A tenant of a shared cluster, with the rights a namespace editor has: what it can and cannot make the operator do."""

from __future__ import annotations

import json

import pytest

from ..conftest import model_deployment_manifest


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
    for forged in ("someone-else", "system:serviceaccount:kube-system:default", None):
        refused = tenant("patch", "mdep", "fraud", "--type", "merge", "-p", request(forged))
        assert refused.returncode != 0
        assert "spec.request.actor must be the requesting user" in refused.stderr and tenant.user in refused.stderr
    accepted = tenant("patch", "mdep", "fraud", "--type", "merge", "-p", request(tenant.user))
    assert accepted.returncode == 0, accepted.stderr


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
