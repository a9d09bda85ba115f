"""The Helm chart, with Helm 3 and Helm 4 built from Go modules, against a real API server.

Rendered with five value sets, linted, created object by object with server-side dry-run;
installed, upgraded and uninstalled for real (no kubelet: objects are created, pods are not
scheduled); its pod template checked by the API server's own Pod Security admission; its
alerts checked and unit-tested by promtool; and the operator run as the chart's
ServiceAccount, with the chart's own arguments, through a rollout and a rollback.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from playground.controlplane import REPO
from playground.operator import OperatorProcess

from ..integration.scenario import Scenario, fast_spec
from .conftest import CHART, accepted, ensure_crds, helm, token_kubeconfig

pytestmark = pytest.mark.integration

HELMS = ["helm3", "helm4"]
PROVIDER = {"name": "team-prometheus", "prometheus": {"address": "http://prometheus.monitoring.svc:9090", "timeout": "5s"},
            "namespaceSelector": {"matchLabels": {"modelops.io/tenant": "a"}}}
NOTIFIER = {"name": "ml-oncall", "webhook": {"format": "slack", "urlSecret": {"name": "slack-webhook", "key": "url"}},
            "events": ["RolledBack", "Aborted"], "namespaceSelector": {}}
PROMETHEUS_PEER = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                   "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}
DIGEST = "sha256:" + "0123456789abcdef" * 4
VALUE_SETS: dict[str, tuple[str, dict[str, Any]]] = {  # name -> (release namespace, values)
    "defaults": ("modelops-system", {}),
    "ha-off": ("modelops-system", {"replicaCount": 1, "leaderElection": {"enabled": False}}),
    "monitoring": ("modelops-system", {"serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus"}},
                                       "prometheusRule": {"enabled": True},
                                       "dashboard": {"enabled": True, "annotations": {"grafana_folder": "ML"}}}),
    "custom": ("ml-platform", {"fullnameOverride": "mlops", "serviceAccount": {"name": "mlops-operator"},
                               "image": {"repository": "registry.example/mlops/modelops", "tag": "0.1.0"},
                               "watchNamespaces": ["team-a", "team-b"], "allowInlineProviders": True,
                               "metricProviders": [PROVIDER], "notifiers": [NOTIFIER],
                               "admissionPolicy": {"enabled": False}, "logFormat": "json",
                               "podLabels": {"team": "ml-platform"}}),
    "extras": ("modelops-system", {"image": {"repository": "registry.example/modelops", "tag": "0.1.0", "digest": DIGEST},
                                   "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy.example:3128"}],
                                   "extraEnvFrom": [{"secretRef": {"name": "proxy-credentials", "optional": True}},
                                                    {"configMapRef": {"name": "site"}, "prefix": "SITE_"}],
                                   "extraVolumes": [{"name": "ca", "configMap": {"name": "corporate-ca"}}],
                                   "extraVolumeMounts": [{"name": "ca", "mountPath": "/etc/ssl/corporate", "readOnly": True}],
                                   "networkPolicy": {"enabled": True, "metricsFrom": [PROMETHEUS_PEER]}}),
}


def values_file(tmp_path: Path, values: dict[str, Any]) -> Path:
    path = tmp_path / f"values-{len(list(tmp_path.glob('values-*')))}.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


MUTATING_POLICY = "admissionregistration.k8s.io/v1/MutatingAdmissionPolicy"  # served from Kubernetes 1.36


def render(helms, tmp_path, values: dict[str, Any], namespace: str = "modelops-system", which: str = "helm4",
           release: str = "modelops", api_versions: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    out = helm(helms, which, "template", release, str(CHART), "--namespace", namespace, "--include-crds",
               "-f", str(values_file(tmp_path, values)), *(f"--api-versions={v}" for v in api_versions)).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def find(objects, kind: str, name: str | None = None) -> dict[str, Any]:
    matching = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(matching) == 1, f"{len(matching)} {kind} {name or ''}: {[o['metadata']['name'] for o in matching]}"
    return matching[0]


def manifests(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


# --- rendering ------------------------------------------------------------------------------


@pytest.mark.parametrize("which", HELMS)
@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_lint_and_template(helms, tmp_path, which, value_set):
    namespace, values = VALUE_SETS[value_set]
    helm(helms, which, "lint", "--strict", str(CHART), "--namespace", namespace, "-f", str(values_file(tmp_path, values)))
    objects = render(helms, tmp_path, values, namespace, which)
    kinds = sorted(o["kind"] for o in objects)
    print(f"\n{which} {value_set}: {len(objects)} objects: {', '.join(kinds)}")
    deployment = find(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    assert deployment["spec"]["replicas"] == values.get("replicaCount", 2)
    assert ("--no-leader-election" in args) == (value_set == "ha-off")
    assert f"--log-format={'json' if value_set == 'custom' else 'text'}" in args
    assert ("PodDisruptionBudget" in kinds) == (value_set != "ha-off")  # one replica may always be evicted
    assert ("ServiceMonitor" in kinds) == ("PrometheusRule" in kinds) == (value_set == "monitoring")
    assert kinds.count("CustomResourceDefinition") == 4
    assert ("NetworkPolicy" in kinds) == (value_set == "extras")
    dashboards = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-dashboard")]
    assert len(dashboards) == (value_set == "monitoring")
    for dashboard in dashboards:  # the chart's dashboard JSON, whole, where Grafana's sidecar finds it
        assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert dashboard["metadata"]["annotations"] == {"grafana_folder": "ML"}
        assert json.loads(dashboard["data"]["modelops.json"]) == json.loads((CHART / "dashboards" / "modelops.json").read_text())
    if value_set == "custom":
        assert pod["serviceAccountName"] == "mlops-operator" and find(objects, "ServiceAccount", "mlops-operator")
        assert {"--namespace=team-a", "--namespace=team-b", "--allow-inline-providers",
                "--operator-namespace=ml-platform", "--lease-namespace=ml-platform"} <= set(args)
        assert find(objects, "ClusterMetricProvider", "team-prometheus")["spec"]["namespaceSelector"]
        assert find(objects, "ClusterNotifier", "ml-oncall")["spec"] == {k: v for k, v in NOTIFIER.items() if k != "name"}
        assert "ValidatingAdmissionPolicy" not in kinds and find(objects, "ClusterRole", "mlops-inline-providers")
        assert pod["containers"][0]["image"] == "registry.example/mlops/modelops:0.1.0"
    if value_set == "extras":  # pinned by digest, the tag ignored; the extras beside the chart's own
        container = pod["containers"][0]
        assert container["image"] == f"registry.example/modelops@{DIGEST}"
        assert container["env"][-1] == values["extraEnv"][0] and [e["name"] for e in container["env"]][:2] == ["POD_NAME", "POD_NAMESPACE"]
        assert container["envFrom"] == values["extraEnvFrom"]
        assert pod["volumes"][1:] == values["extraVolumes"] and pod["volumes"][0]["name"] == "tmp"
        assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}, *values["extraVolumeMounts"]]
    else:
        assert "@" not in pod["containers"][0]["image"] and "envFrom" not in pod["containers"][0]
        assert [v["name"] for v in pod["volumes"]] == ["tmp"]


def test_crds_are_one_source(tmp_path):
    """The chart's CRDs are crds/ byte for byte; crds/ is what the models generate (tests/unit/test_crds.py)."""
    ours = {p.name: p.read_bytes() for p in (REPO / "crds").glob("*.yaml")}
    charts = {p.name: p.read_bytes() for p in (CHART / "crds").glob("*.yaml")}
    assert charts == ours, "charts/modelops/crds differs from crds/: cp crds/*.yaml charts/modelops/crds/"


def comparable(obj: dict[str, Any]) -> Any:
    """What an RBAC object or admission policy grants or enforces, without names and labels."""
    body = {k: v for k, v in obj.items() if k not in ("metadata", "subjects", "roleRef", "apiVersion")}
    if obj["kind"] in ("ValidatingAdmissionPolicyBinding", "MutatingAdmissionPolicyBinding"):
        body["spec"] = {k: v for k, v in body["spec"].items() if k != "policyName"}
    aggregation = {k: v for k, v in obj["metadata"].get("labels", {}).items() if k.startswith("rbac.authorization")}
    return body, aggregation


def test_rbac_and_policies_are_those_of_deploy(helms, tmp_path):
    """deploy/*.yaml (what the tests run the operator under) and the chart grant exactly the same."""
    rendered = render(helms, tmp_path, {"allowInlineProviders": True}, api_versions=(MUTATING_POLICY,))
    by_kind: dict[str, list] = {}
    for obj in rendered:  # the `helm test` hook's Role (get its Lease) is the test pod's, not the operator's
        if obj["kind"] in ("ClusterRole", "Role", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding",
                           "MutatingAdmissionPolicy", "MutatingAdmissionPolicyBinding") \
                and "helm.sh/hook" not in (obj["metadata"].get("annotations") or {}):
            by_kind.setdefault(obj["kind"], []).append(comparable(obj))
    shipped: dict[str, list] = {}
    for name in ("rbac.yaml", "rbac-inline-providers.yaml", "admission.yaml", "user-roles.yaml"):
        for obj in manifests(REPO / "deploy" / name):
            if obj["kind"] in by_kind:
                shipped.setdefault(obj["kind"], []).append(comparable(obj))
    for kind in by_kind:
        assert sorted(map(json.dumps, by_kind[kind])) == sorted(map(json.dumps, shipped.get(kind, []))), kind
    assert {"MutatingAdmissionPolicy", "MutatingAdmissionPolicyBinding"} <= set(by_kind)
    # A cluster that does not serve MutatingAdmissionPolicy (before 1.36) gets the validation alone.
    older = {o["kind"] for o in render(helms, tmp_path, {"allowInlineProviders": True})}
    assert "ValidatingAdmissionPolicy" in older and not older & {"MutatingAdmissionPolicy", "MutatingAdmissionPolicyBinding"}
    binding = find(rendered, "ClusterRoleBinding", "modelops")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "modelops", "namespace": "modelops-system"}]


BACKEND_GROUPS = {"kserve": {"serving.kserve.io", "gateway.networking.k8s.io"}, "seldon": {"machinelearning.seldon.io"},
                  "seldonV2": {"mlops.seldon.io"}, "gatewayAPI": {"gateway.networking.k8s.io"}}


@pytest.mark.parametrize("off", [(), ("kserve",), ("seldon", "seldonV2"), ("gatewayAPI",), ("kserve", "gatewayAPI"),
                                 tuple(BACKEND_GROUPS)], ids=lambda off: "+".join(off) or "none")
def test_rbac_has_no_rules_for_a_backend_switched_off(helms, tmp_path, off):
    objects = render(helms, tmp_path, {"rbac": {"backends": {backend: False for backend in off}}})
    rules = find(objects, "ClusterRole", "modelops")["rules"]
    groups = {group for rule in rules for group in rule["apiGroups"]}
    wanted = set().union(*(g for backend, g in BACKEND_GROUPS.items() if backend not in off))
    unwanted = set().union(*BACKEND_GROUPS.values()) - wanted  # HTTPRoutes stay while KServe or Gateway API is on
    assert wanted <= groups and not unwanted & groups, (sorted(groups), off)
    # What is not a backend's stays whatever the switches: its own objects, Events, EndpointSlices, namespaces.
    assert {"modelops.io", "", "discovery.k8s.io", "apiextensions.k8s.io"} <= groups
    assert all(rule["verbs"] for rule in rules)


BAD_VALUES = [
    ({"replicaCount": 0}, "replicaCount"),
    ({"replicas": 2}, "replicas"),  # a typo of replicaCount: refused, not ignored
    ({"replicaCount": 2, "leaderElection": {"enabled": False}}, "leaderElection.enabled must be true"),
    ({"leaderElection": {"enabled": True, "renewDeadline": 20}}, "retryPeriod < renewDeadline < leaseDuration"),
    ({"leaderElection": {"enabled": True, "renewDeadline": 12}}, "leaseDuration - renewDeadline >= requestTimeout"),
    ({"resources": {"limits": {"memory": "lots"}}}, "memory"),
    ({"metrics": {"port": 80}}, "port"),
    ({"logFormat": "JSON"}, "logFormat"),
    ({"rbac": {"backends": {"seldonv2": False}}}, "seldonv2"),  # a typo would leave the rules in place
    ({"networkPolicy": {"enabled": True, "metricsFrom": [{"podSelectr": {}}]}}, "podSelectr"),
    ({"image": {"repository": "modelops", "digest": "sha256:abc"}}, "/image/digest"),
    ({"extraVolumeMounts": [{"name": "ca"}]}, "mountPath"),
    ({"extraVolumes": [{"name": "tmp", "emptyDir": {}}]}, "the name tmp is taken"),
    ({"extraEnvFrom": [{"secret": {"name": "s"}}]}, "/extraEnvFrom/0"),
    ({"podSecurityContext": {"runAsUSer": 1000}}, "runAsUSer"),  # a typo would leave the fixed UID in place
    ({"watchNamespaces": ["Team A"]}, "watchNamespaces"),
    ({"metricProviders": [{"name": "p"}]}, "prometheus"),
    ({"notifiers": [{"name": "n", "namespaceSelector": {}}]}, "webhook"),
]


@pytest.mark.parametrize("which", HELMS)
@pytest.mark.parametrize("values,words", BAD_VALUES, ids=[w for _, w in BAD_VALUES])
def test_bad_values_fail_at_install_with_a_clear_message(helms, tmp_path, which, values, words):
    done = helm(helms, which, "template", "modelops", str(CHART), "-f", str(values_file(tmp_path, values)), check=False)
    assert done.returncode != 0 and words in done.stderr, done.stderr
    print(f"\n{which}: {done.stderr.strip().splitlines()[-1][:200]}")


# --- install, upgrade, uninstall: first, on a cluster without our CRDs ---------------------------


def names_in(plane, namespace: str, release: str) -> set[str]:
    done = plane.kubectl("get", "deployment,serviceaccount,service,poddisruptionbudget,role,rolebinding",
                         "-n", namespace, "-l", f"app.kubernetes.io/instance={release}", "-o", "name")
    cluster = plane.kubectl("get", "clusterrole,clusterrolebinding,validatingadmissionpolicy,mutatingadmissionpolicy",
                            "-l", f"app.kubernetes.io/instance={release}", "-o", "name")
    return set((done.stdout + cluster.stdout).split())


@pytest.mark.parametrize("which", ["helm4", "helm3"])  # Helm 4 first: it creates the CRDs (see docs/operations/install.md)
def test_install_upgrade_uninstall(helms, deploy_plane, which, tmp_path):
    release, namespace = f"mo-{which}", f"modelops-{which}"
    kubeconfig = deploy_plane.kubeconfig
    started = time.monotonic()
    helm(helms, which, "install", release, str(CHART), "--namespace", namespace, "--create-namespace",
         kubeconfig=kubeconfig)
    installed = time.monotonic() - started
    objects = names_in(deploy_plane, namespace, release)
    assert {f"deployment.apps/{release}-modelops", f"serviceaccount/{release}-modelops",
            f"poddisruptionbudget.policy/{release}-modelops", f"clusterrole.rbac.authorization.k8s.io/{release}-modelops",
            f"validatingadmissionpolicy.admissionregistration.k8s.io/{release}-modelops-request-actor",
            f"mutatingadmissionpolicy.admissionregistration.k8s.io/{release}-modelops-request-actor"} <= objects, objects
    started = time.monotonic()
    helm(helms, which, "upgrade", release, str(CHART), "--namespace", namespace, "--reuse-values",
         "--set", "replicaCount=3", "--set", "resources.limits.memory=768Mi", kubeconfig=kubeconfig)
    upgraded = time.monotonic() - started
    deployment = json.loads(deploy_plane.kubectl("get", "deployment", f"{release}-modelops", "-n", namespace,
                                                 "-o", "json").stdout)
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] == "768Mi"
    assert json.loads(helm(helms, which, "history", release, "-n", namespace, "-o", "json",
                           kubeconfig=kubeconfig).stdout)[-1]["revision"] == 2
    started = time.monotonic()
    helm(helms, which, "uninstall", release, "--namespace", namespace, kubeconfig=kubeconfig)
    uninstalled = time.monotonic() - started
    assert names_in(deploy_plane, namespace, release) == set()
    # The CRDs stay: deleting one would delete every ModelDeployment in the cluster.
    assert deploy_plane.kubectl("get", "crd", "modeldeployments.modelops.io", check=False).returncode == 0
    print(f"\n{which}: {len(objects)} objects; install {installed:.2f} s, upgrade {upgraded:.2f} s,"
          f" uninstall {uninstalled:.2f} s")


# --- against the API server --------------------------------------------------------------------


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_every_rendered_object_passes_server_side_dry_run(helms, deploy_plane, tmp_path, value_set):
    namespace, values = VALUE_SETS[value_set]
    objects = render(helms, tmp_path, values, namespace)
    ensure_crds(deploy_plane)
    if deploy_plane.kubectl("get", "namespace", namespace, check=False).returncode != 0:
        deploy_plane.kubectl("create", "namespace", namespace)
    accepted(deploy_plane, objects)


def pod_from_template(objects, namespace: str, name: str) -> dict[str, Any]:
    template = find(objects, "Deployment")["spec"]["template"]
    spec = {k: v for k, v in template["spec"].items() if k != "serviceAccountName"}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace,
                                                           "labels": template["metadata"]["labels"]}, "spec": spec}


def test_pod_template_passes_the_restricted_pod_security_standard(helms, deploy_plane, deploy_namespace, tmp_path):
    deploy_plane.kubectl("label", "namespace", deploy_namespace, "pod-security.kubernetes.io/enforce=restricted",
                         "pod-security.kubernetes.io/enforce-version=latest")
    objects = render(helms, tmp_path, {}, deploy_namespace)
    pod = pod_from_template(objects, deploy_namespace, "operator-from-template")
    created = deploy_plane.kubectl("create", "-f", "-", "-o", "name", input=yaml.safe_dump(pod), check=False)
    print(f"\nrestricted namespace, the chart's pod template: {(created.stdout or created.stderr).strip()}")
    assert created.returncode == 0 and created.stderr.strip() == "", created.stderr  # not even a warning
    # The control: the same pod without its security settings is refused, so the admission is really on.
    del pod["spec"]["securityContext"], pod["spec"]["containers"][0]["securityContext"]
    pod["metadata"]["name"] = "operator-without-security-context"
    refused = deploy_plane.kubectl("create", "-f", "-", input=yaml.safe_dump(pod), check=False)
    assert refused.returncode != 0 and 'violates PodSecurity "restricted:latest"' in refused.stderr, refused.stderr


API_SERVER_EGRESS = {"to": [{"ipBlock": {"cidr": "10.96.0.1/32"}}], "ports": [{"port": 443, "protocol": "TCP"}]}


def test_network_policy_admits_the_metrics_port_from_the_named_peers_only(helms, deploy_plane, deploy_namespace,
                                                                          tmp_path):
    assert not [o for o in render(helms, tmp_path, {}, deploy_namespace) if o["kind"] == "NetworkPolicy"]  # off by default
    cases = {  # name -> (values, whether egress is restricted)
        "ingress-only": ({"networkPolicy": {"enabled": True, "metricsFrom": [PROMETHEUS_PEER]},
                          "metrics": {"port": 9100}}, False),
        "with-egress": ({"networkPolicy": {"enabled": True, "metricsFrom": [PROMETHEUS_PEER],
                                           "egress": [API_SERVER_EGRESS]}}, True),
        "no-peers": ({"networkPolicy": {"enabled": True}}, False),
    }
    for case, (values, egress) in cases.items():
        objects = render(helms, tmp_path, values, deploy_namespace)
        policy = find(objects, "NetworkPolicy")
        spec = policy["spec"]
        assert spec["podSelector"] == find(objects, "Deployment")["spec"]["selector"], case
        assert spec["policyTypes"] == (["Ingress", "Egress"] if egress else ["Ingress"]), case
        peers = values["networkPolicy"].get("metricsFrom")
        port = values.get("metrics", {}).get("port", 8080)
        # One rule, the metrics port from the peers; none at all without peers (a rule without `from`
        # would admit every source).
        assert spec["ingress"] == ([{"ports": [{"port": port, "protocol": "TCP"}], "from": peers}] if peers else []), case
        assert spec.get("egress") == (values["networkPolicy"]["egress"] if egress else None), case
        created = deploy_plane.kubectl("create", "--dry-run=server", "-o", "json", "-f", "-",
                                       input=yaml.safe_dump(policy), check=False)
        assert created.returncode == 0, f"{case}: {created.stderr}"
        assert json.loads(created.stdout)["spec"]["policyTypes"] == spec["policyTypes"], case


OPENSHIFT = yaml.safe_load((CHART / "ci" / "openshift-values.yaml").read_text())
# A stand-in for the check of OpenShift's restricted SCC (MustRunAsRange): a UID or fsGroup that a
# pod sets must be in its namespace's range (one that the SCC would assign when it sets none).
SCC_RANGE = (1000680000, 1000689999)


def scc_stand_in(name: str, namespace: str) -> list[dict[str, Any]]:
    low, high = SCC_RANGE
    def in_range(field: str) -> str:
        return f"(!has({field}) || ({field} >= {low} && {field} <= {high}))"
    pod = "object.spec.securityContext"
    return [
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy", "metadata": {"name": name},
         "spec": {"failurePolicy": "Fail",
                  "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                                                          "operations": ["CREATE"], "resources": ["pods"]}]},
                  "validations": [
                      {"expression": f"!has({pod}) || ({in_range(pod + '.runAsUser')} && {in_range(pod + '.fsGroup')})",
                       "message": "pod securityContext: runAsUser/fsGroup outside the namespace's range"},
                      {"expression": "object.spec.containers.all(c, !has(c.securityContext) || "
                                     f"{in_range('c.securityContext.runAsUser')})",
                       "message": "container securityContext: runAsUser outside the namespace's range"}]}},
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
         "metadata": {"name": name},
         "spec": {"policyName": name, "validationActions": ["Deny"],
                  "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}}},
    ]


def test_openshift_values_drop_the_fixed_uid_and_the_pod_is_admitted(helms, deploy_plane, deploy_namespace, tmp_path):
    """With runAsUser/runAsGroup/fsGroup null the pod sets no UID, so OpenShift's restricted SCC can
    assign one; it still passes the restricted Pod Security Standard, and an SCC-like range check."""
    deploy_plane.kubectl("label", "namespace", deploy_namespace, "pod-security.kubernetes.io/enforce=restricted",
                         "pod-security.kubernetes.io/enforce-version=latest")
    default = pod_from_template(render(helms, tmp_path, {}, deploy_namespace), deploy_namespace, "fixed-uid")
    assert default["spec"]["securityContext"]["runAsUser"] == 65532  # the control: the default sets one
    pod = pod_from_template(render(helms, tmp_path, OPENSHIFT, deploy_namespace), deploy_namespace, "openshift-uid")
    contexts = [pod["spec"]["securityContext"], *(c["securityContext"] for c in pod["spec"]["containers"])]
    assert not any({"runAsUser", "runAsGroup", "fsGroup"} & set(context) for context in contexts), contexts
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    policy = f"scc-stand-in-{deploy_namespace}"
    deploy_plane.apply({"apiVersion": "v1", "kind": "List", "items": scc_stand_in(policy, deploy_namespace)})
    try:
        deadline = time.monotonic() + 30
        while True:  # the policy takes effect once the API server has loaded it: the fixed UID is refused
            refused = deploy_plane.kubectl("create", "--dry-run=server", "-f", "-", input=yaml.safe_dump(default),
                                           check=False)
            if refused.returncode != 0:
                break
            assert time.monotonic() < deadline, "the SCC stand-in never refused the fixed UID"
            time.sleep(0.5)
        assert "runAsUser/fsGroup outside the namespace's range" in refused.stderr, refused.stderr
        created = deploy_plane.kubectl("create", "-f", "-", "-o", "json", input=yaml.safe_dump(pod), check=False)
        assert created.returncode == 0 and created.stderr.strip() == "", created.stderr  # not even a warning
        stored = json.loads(created.stdout)["spec"]
        assert "runAsUser" not in stored["securityContext"] and "runAsUser" not in stored["containers"][0]["securityContext"]
        print(f"\nOpenShift-style values: pod admitted with securityContext {stored['securityContext']}")
    finally:
        deploy_plane.kubectl("delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", policy,
                             "--ignore-not-found")


CI_VALUES = sorted(p.name for p in (CHART / "ci").glob("*-values.yaml"))  # what chart-testing picks up


def test_ci_values_files_are_the_three_cases():
    assert CI_VALUES == ["default-values.yaml", "digest-networkpolicy-values.yaml", "openshift-values.yaml"]


@pytest.mark.parametrize("name", CI_VALUES)
def test_ci_values_pass_the_schema_lint_and_server_side_dry_run(helms, deploy_plane, tmp_path, name):
    path = CHART / "ci" / name
    for which in HELMS:  # both validate the values against values.schema.json, then render
        helm(helms, which, "lint", "--strict", str(CHART), "--namespace", "modelops-system", "-f", str(path))
    out = helm(helms, "helm4", "template", "modelops", str(CHART), "--namespace", "modelops-system", "-f", str(path)).stdout
    objects = [doc for doc in yaml.safe_load_all(out) if doc]
    pod = find(objects, "Deployment")["spec"]["template"]["spec"]
    kinds = {o["kind"] for o in objects}
    if name == "openshift-values.yaml":
        assert not {"runAsUser", "runAsGroup", "fsGroup"} & set(pod["securityContext"])
    else:
        assert pod["securityContext"]["runAsUser"] == 65532
    digest = name == "digest-networkpolicy-values.yaml"
    assert ("@sha256:" in pod["containers"][0]["image"]) == digest and ("NetworkPolicy" in kinds) == digest
    assert ("--log-format=json" in pod["containers"][0]["args"]) == digest
    if deploy_plane.kubectl("get", "namespace", "modelops-system", check=False).returncode != 0:
        deploy_plane.kubectl("create", "namespace", "modelops-system")
    ensure_crds(deploy_plane)
    accepted(deploy_plane, objects, f"{name}: ")


def test_a_values_file_against_the_schema_is_refused(helms, tmp_path):
    """The control of the test above: the same lint refuses a file the schema does not allow."""
    bad = values_file(tmp_path, {**yaml.safe_load((CHART / "ci" / "digest-networkpolicy-values.yaml").read_text()),
                                 "logFormat": "yaml"})
    done = helm(helms, "helm4", "lint", "--strict", str(CHART), "-f", str(bad), check=False)
    assert done.returncode != 0 and "logFormat" in done.stdout + done.stderr, done.stdout + done.stderr


ALERT_TESTS = """
rule_files: [rules.yaml]
evaluation_interval: 1m
tests:
- interval: 1m
  input_series:
  - series: 'modelops_leader{job="modelops-metrics", pod="a"}'
    values: '1x10 0x10'
  - series: 'modelops_leader{job="modelops-metrics", pod="b"}'
    values: '0x20'
  - series: 'modelops_progress_deadline_timestamp_seconds{job="modelops-metrics", namespace="prod", deployment="fraud"}'
    values: '600x20'
  - series: 'modelops_decisions_total{job="modelops-metrics", namespace="prod", deployment="fraud", reason="RolledBack"}'
    values: '0x5 1x15'
  - series: 'modelops_check_verdicts_total{job="modelops-metrics", namespace="prod", deployment="fraud", check="errors", verdict="Error"}'
    values: '0+1x40'
  - series: 'modelops_reconcile_errors_total{job="modelops-metrics", reason="ApiError"}'
    values: '0+1x40'
  alert_rule_test:
  - {alertname: ModelopsNoLeader, eval_time: 9m, exp_alerts: []}
  - alertname: ModelopsNoLeader
    eval_time: 17m
    exp_alerts: [{exp_labels: {severity: critical}}]
  - {alertname: ModelopsRolloutStuck, eval_time: 12m, exp_alerts: []}
  - alertname: ModelopsRolloutStuck
    eval_time: 16m
    exp_alerts: [{exp_labels: {severity: warning, namespace: prod, deployment: fraud}}]
  - alertname: ModelopsRolledBack
    eval_time: 8m
    exp_alerts: [{exp_labels: {severity: warning, namespace: prod, deployment: fraud}}]
  - {alertname: ModelopsRolledBack, eval_time: 18m, exp_alerts: []}
  - alertname: ModelopsAnalysisErrors
    eval_time: 30m
    exp_alerts: [{exp_labels: {severity: warning, namespace: prod, deployment: fraud, check: errors}}]
  - alertname: ModelopsReconcileErrors
    eval_time: 30m
    exp_alerts: [{exp_labels: {severity: warning, reason: ApiError}}]
"""


def with_annotations(tests: dict[str, Any], rules: dict[str, Any]) -> dict[str, Any]:
    """promtool compares annotations too: expect each alert's own, its $labels filled in by hand."""
    annotations = {r["alert"]: r["annotations"] for g in rules["groups"] for r in g["rules"]}
    for case in tests["tests"][0]["alert_rule_test"]:
        for alert in case["exp_alerts"]:
            def fill(text: str) -> str:
                return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: alert["exp_labels"][m.group(1)], text)
            alert["exp_annotations"] = {k: fill(v) for k, v in annotations[case["alertname"]].items()}
    return tests


def test_alerts_pass_promtool_and_fire_when_they_should(helms, tmp_path):
    rule = find(render(helms, tmp_path, VALUE_SETS["monitoring"][1]), "PrometheusRule")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule["spec"]))
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(with_annotations(yaml.safe_load(ALERT_TESTS), rule["spec"])))
    checked = subprocess.run(["promtool", "check", "rules", "rules.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    print("\n" + checked.stdout.strip())
    tested = subprocess.run(["promtool", "test", "rules", "tests.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def stable_on(version):
    return lambda st: st.get("phase") == "Stable" and st.get("stableVersion") == version


def test_operator_as_the_charts_service_account_rolls_out_and_back(helms, deploy_plane, deploy_prometheus,
                                                                    deploy_kserve, deploy_namespace, tmp_path):
    release, namespace = "modelops", "modelops-system"
    helm(helms, "helm4", "install", release, str(CHART), "--namespace", namespace, "--create-namespace",
         "--set", f"watchNamespaces[0]={deploy_namespace}", kubeconfig=deploy_plane.kubeconfig)
    try:
        manifest = yaml.safe_load_all(helm(helms, "helm4", "get", "manifest", release, "-n", namespace,
                                           kubeconfig=deploy_plane.kubeconfig).stdout)
        container = find([m for m in manifest if m], "Deployment")["spec"]["template"]["spec"]["containers"][0]
        # The chart's own arguments, but for the metrics port (loopback here, shared with other processes).
        args = [a for a in container["args"] if not a.startswith("--metrics-port")]
        kubeconfig = token_kubeconfig(deploy_plane, namespace, "modelops", tmp_path / "kubeconfig")
        operator = OperatorProcess(kubeconfig, tmp_path, identity="modelops-0", args=args).start()
        try:
            scenario = Scenario(deploy_plane, deploy_namespace, deploy_kserve)
            scenario.version("1.0.0", error_rate=0.0, accuracy=0.95)
            scenario.version("1.1.0", error_rate=0.0, accuracy=0.95)
            scenario.version("1.2.0", error_rate=0.4, accuracy=0.95)
            scenario.serve("1.0.0", fast_spec(deploy_prometheus.url), deploy_prometheus)
            scenario.patch({"version": "1.1.0"})
            scenario.wait(stable_on("1.1.0"), 90, "1.1.0 promoted")
            scenario.patch({"version": "1.2.0"})
            status = scenario.wait(lambda st: st.get("phase") == "RolledBack", 60, "1.2.0 rolled back")
            assert status["stableVersion"] == "1.1.0" and status["failedVersion"] == "1.2.0"
            scenario.stop_load()
            rss = next(int(line.split()[1]) for line in Path(f"/proc/{operator.process.proc.pid}/status").read_text()
                       .splitlines() if line.startswith("VmRSS:"))
            print(f"\noperator resident memory after a rollout and a rollback: {rss / 1024:.0f} MiB"
                  f" (the chart requests {yaml.safe_load((CHART / 'values.yaml').read_text())['resources']['requests']['memory']})")
            log = operator.process.log.read_text()
            assert "Forbidden" not in log and " 403" not in log, "the chart's RBAC fell short"
            holder = deploy_plane.kubectl("get", "lease", release, "-n", namespace,
                                          "-o", "jsonpath={.spec.holderIdentity}").stdout
            assert holder == "modelops-0"
            print("\nas system:serviceaccount:modelops-system:modelops, with the chart's args:",
                  " ".join(args), "\nhistory:", [(h["action"], h["version"]) for h in status["history"]])
        finally:
            operator.stop()
    finally:
        helm(helms, "helm4", "uninstall", release, "--namespace", namespace, kubeconfig=deploy_plane.kubeconfig)


def test_the_kind_path_is_valid_against_the_api_server(helms, deploy_plane, deploy_namespace, tmp_path):
    """What `make kind-up` applies that can be checked without Docker: the chart with its kind
    values, the Prometheus' RBAC and PodMonitor, and the sample model, each by server-side dry-run."""
    config = yaml.safe_load((REPO / "kind-config.yaml").read_text())
    assert config["kind"] == "Cluster" and [n["role"] for n in config["nodes"]] == ["control-plane", "worker"]
    objects = render(helms, tmp_path, yaml.safe_load((REPO / "tools" / "kind" / "values.yaml").read_text()),
                     deploy_namespace)
    ensure_crds(deploy_plane)
    checked = [o for o in objects if o["kind"] != "CustomResourceDefinition"]
    # Not its Namespace (a dry run creates none), nor the Prometheus: the upstream CRD file here has
    # ServiceMonitor, PodMonitor and PrometheusRule only.
    checked += [o for o in manifests(REPO / "tools" / "kind" / "prometheus.yaml") if o["kind"] not in ("Namespace", "Prometheus")]
    for obj in checked:
        if obj["kind"] in ("PodMonitor", "ServiceAccount"):
            obj["metadata"]["namespace"] = deploy_namespace
    accepted(deploy_plane, checked)
    sample = deploy_plane.kubectl("create", "--dry-run=server", "-n", deploy_namespace, "-o", "name",
                                  "-f", str(REPO / "examples" / "kind-sample.yaml"), check=False)
    assert sample.returncode == 0 and len(sample.stdout.split()) == 3, sample.stderr
