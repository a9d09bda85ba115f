"""The operator's identity may do exactly what the operator calls, and the whole suite runs under it."""

from __future__ import annotations

import re

# `kubectl auth can-i --list`: Resources, Non-Resource URLs, Resource Names, Verbs.
RULE_LINE = re.compile(r"^(\S+)\s+\[\]\s+\[[^\]]*\]\s+\[([^\]]*)\]\s*$")

# Reviewed: every line is a call in operator/modelops (or kopf's own discovery, watches and events).
# Any other right, or any missing one, fails here: change the rules and this list together.
EVERYWHERE = {
    "modeldeployments.modelops.io": {"list", "watch", "patch"},
    "modelversions.modelops.io": {"get", "list", "watch"},
    "modeldeployments.modelops.io/status": {"patch"},
    "modelversions.modelops.io/status": {"patch"},
    "clustermetricproviders.modelops.io": {"list", "watch"},
    "clusternotifiers.modelops.io": {"list", "watch"},
    # the backend kinds are also watched: a change wakes the deployment that drives the object
    "inferenceservices.serving.kserve.io": {"get", "list", "watch", "create", "patch"},
    "seldondeployments.machinelearning.seldon.io": {"get", "list", "watch", "create", "patch"},
    "models.mlops.seldon.io": {"get", "list", "watch", "create", "patch", "delete"},
    "experiments.mlops.seldon.io": {"get", "list", "watch", "create", "patch", "delete"},
    "httproutes.gateway.networking.k8s.io": {"get", "list", "watch", "patch"},
    "endpointslices.discovery.k8s.io": {"list", "watch"},
    "events": {"create", "patch"},
    "customresourcedefinitions.apiextensions.k8s.io": {"list", "watch"},
    "namespaces": {"list", "watch"},
    # KServe's inferenceservice-config only (resourceNames; see the test below), wherever KServe runs.
    "configmaps": {"get"},
    # What every authenticated user may do (system:basic-user): ask what it may do.
    "selfsubjectreviews.authentication.k8s.io": {"create"},
    "selfsubjectaccessreviews.authorization.k8s.io": {"create"},
    "selfsubjectrulesreviews.authorization.k8s.io": {"create"},
}
# Only in its own namespace: its Lease, and the Secrets ClusterMetricProviders and ClusterNotifiers name.
OWN_NAMESPACE = {"leases.coordination.k8s.io": {"get", "create", "update"}, "secrets": {"get"}}


def rights(control_plane, namespace: str) -> dict[str, set[str]]:
    listed = control_plane.kubectl("auth", "can-i", "--list", "--as", "modelops-operator", "-n", namespace).stdout
    out: dict[str, set[str]] = {}
    for line in listed.splitlines()[1:]:
        if match := RULE_LINE.match(line):  # non-resource URLs (discovery, health) are not rules of ours
            out.setdefault(match.group(1), set()).update(match.group(2).split())
    return out


def test_the_operator_may_do_exactly_what_it_calls(control_plane, operator_kubeconfig, namespace):
    assert rights(control_plane, namespace) == EVERYWHERE
    assert rights(control_plane, "modelops-system") == EVERYWHERE | OWN_NAMESPACE


def test_of_all_config_maps_the_operator_may_read_kserves_settings_only(control_plane, operator_kubeconfig, namespace):
    def may(what: str, where: str) -> bool:
        answer = control_plane.kubectl("auth", "can-i", "get", what, "--as", "modelops-operator", "-n", where,
                                       check=False).stdout.strip()
        return answer == "yes"

    assert may("configmap/inferenceservice-config", "kserve") and may("configmap/inferenceservice-config", namespace)
    assert not may("configmap/app-settings", namespace) and not may("configmap/kube-root-ca.crt", "kserve")
    assert not may("configmaps", namespace)  # no list, no get by any other name


def test_the_operator_reads_no_tenants_secrets(control_plane, operator_kubeconfig, namespace):
    control_plane.kubectl("create", "secret", "generic", "db", "--from-literal=password=hunter2", "-n", namespace)
    denied = control_plane.kubectl("get", "secret", "db", "-n", namespace, kubeconfig=operator_kubeconfig, check=False)
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower()
