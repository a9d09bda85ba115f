"""KServe's real controller (its `manager`, v0.20.0) as a process next to the test control plane.

What runs for real: KServe's InferenceService, TrainedModel and InferenceGraph controllers and its
admission webhooks (InferenceService defaulting and validation, the pod mutator), built from KServe's
source by tools/kserve/build.sh; with a `Node` (playground/node.py) the Deployments it makes run pods.

Settings, and why:
- CRDs: the pinned upstream InferenceService (full schema) and InferenceGraph files. The manager also
  watches ServingRuntime, ClusterServingRuntime and TrainedModel, and reads ClusterStorageContainer
  (the init container that fetches a storageUri's model); these are not pinned: they are installed
  schemaless here (spec and status keep any field, no defaults are filled in; the controller reads
  them typed), so nothing checks their shape but KServe itself.
- ConfigMap `inferenceservice-config` in the namespace `kserve` (the manager's POD_NAMESPACE):
  `deploy.defaultDeploymentMode: Standard` (raw Deployments and Services, no Knative); `ingress` with
  `disableIngressCreation` (no Ingress object: nothing here would serve it) and
  `disableIstioVirtualHost` (no Istio; otherwise every reconcile warns about the missing CRD);
  `inferenceService.serviceAnnotationDisallowedList` with the operator's bookkeeping annotations (see CONFIG);
  `agent`, `batcher`, `logger` and `storageInitializer` with resource values, because the pod mutator
  refuses every predictor pod when their quantities do not parse. Their images are never used:
  nothing here asks for an agent, a batcher, a logger or a storage URI.
- Webhooks: served, not disabled (the manager has no switch to turn them off, and without the
  defaulter an InferenceService lacks what KServe's own API path adds). The manager serves them on a
  free port with a certificate of the control plane's CA, for 127.0.0.1, from
  `$TMPDIR/k8s-webhook-server/serving-certs` (controller-runtime's default place); the
  webhook configurations point kube-apiserver at `https://127.0.0.1:<port>/<path>`.
- The manager's identity is in `system:masters`: KServe's ClusterRole is not part of its Go source,
  and the controller's rights are not what is under test here.
- Leader election off, metrics and health probes on loopback ports of their own.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import urllib.request
from pathlib import Path

import yaml

from .controlplane import REPO, ControlPlane
from .processes import Process, free_port
from .serving import KSERVE_DISALLOWED_LIST
from .upstream_crds import KSERVE, KSERVE_INFERENCEGRAPHS, upstream_crds

BUILD_SCRIPT = REPO / "tools" / "kserve" / "build.sh"
NAMESPACE = "kserve"
CONFIG_MAP = "inferenceservice-config"
GROUP = "serving.kserve.io"
# Not pinned upstream files: (kind, plural, scope, has a status subresource).
SCHEMALESS = [("ServingRuntime", "servingruntimes", "Namespaced", False),
              ("ClusterServingRuntime", "clusterservingruntimes", "Cluster", False),
              ("TrainedModel", "trainedmodels", "Namespaced", True),
              ("ClusterStorageContainer", "clusterstoragecontainers", "Cluster", False)]
# Resource values the pod mutator parses for every predictor pod (see the module docstring).
SIDECAR_RESOURCES = {"memoryRequest": "100Mi", "memoryLimit": "1Gi", "cpuRequest": "100m", "cpuLimit": "1"}
CONFIG = {
    "deploy": {"defaultDeploymentMode": "Standard"},
    "ingress": {"ingressGateway": "unused/unused", "ingressDomain": "example.com",
                "disableIngressCreation": True, "disableIstioVirtualHost": True},
    "agent": {"image": "unused", **SIDECAR_RESOURCES},
    "batcher": {"image": "unused", **SIDECAR_RESOURCES},
    "logger": {"image": "unused", "defaultUrl": "http://unused", **SIDECAR_RESOURCES},
    "storageInitializer": {"image": "unused", **SIDECAR_RESOURCES},
    # As docs/backends/kserve.md asks: KServe copies an InferenceService's annotations into its predictors' pods,
    # so each change of the operator's bookkeeping would restart them all (and the operator starts no rollout).
    "inferenceService": KSERVE_DISALLOWED_LIST,
}


def kserve_binaries() -> Path:
    """The folder holding KServe's `manager`; builds it on first use (~9 minutes on two cores)."""
    out = subprocess.run([str(BUILD_SCRIPT)], check=True, stdout=subprocess.PIPE, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


def schemaless_crd(kind: str, plural: str, scope: str, status: bool) -> dict:
    open_object = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {"group": GROUP, "scope": scope,
                 "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "listKind": f"{kind}List"},
                 "versions": [{"name": "v1alpha1", "served": True, "storage": True,
                               "subresources": {"status": {}} if status else {},
                               "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                                   "spec": open_object, "status": open_object}}}}]},
    }


def webhook_configurations(url: str, ca_bundle: str) -> list[dict]:
    """KServe's webhooks for InferenceServices and their pods, addressed by URL instead of a Service."""
    def hook(name: str, path: str, resource: tuple[str, str, str], operations: list[str], **extra) -> dict:
        group, version, plural = resource
        return {"name": name, "admissionReviewVersions": ["v1"], "sideEffects": "None", "failurePolicy": "Fail",
                "clientConfig": {"url": f"{url}{path}", "caBundle": ca_bundle},
                "rules": [{"apiGroups": [group], "apiVersions": [version], "resources": [plural],
                           "operations": operations}], **extra}

    isvc = (GROUP, "v1beta1", "inferenceservices")
    path = "serving-kserve-io-v1beta1-inferenceservice"  # controller-runtime's path for the kind
    name = "inferenceservice.kserve-webhook-server"
    return [
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
         "metadata": {"name": f"inferenceservice.{GROUP}"}, "webhooks": [
             hook(f"{name}.defaulter", f"/mutate-{path}", isvc, ["CREATE", "UPDATE"]),
             # Only InferenceServices' pods: the mutator passes any other pod unchanged, so other
             # pods need not wait on it (or fail with it).
             hook(f"{name}.pod-mutator", "/mutate-pods", ("", "v1", "pods"), ["CREATE"],
                  objectSelector={"matchExpressions": [{"key": f"{GROUP}/inferenceservice", "operator": "Exists"}]}),
         ]},
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
         "metadata": {"name": f"inferenceservice.{GROUP}"}, "webhooks": [
             hook(f"{name}.validator", f"/validate-{path}", isvc, ["CREATE", "UPDATE"]),
         ]},
    ]


class KServeController:
    """KServe's manager against `control_plane`, with what it needs installed there first."""

    def __init__(self, control_plane: ControlPlane, work_dir: Path):
        self.cp = control_plane
        self.dir = work_dir
        self.bin = kserve_binaries()
        self.process: Process | None = None

    def start(self, timeout: float = 120) -> KServeController:
        self.dir.mkdir(parents=True, exist_ok=True)
        crds = upstream_crds([KSERVE, KSERVE_INFERENCEGRAPHS])
        schemaless = self.dir / "schemaless-crds.yaml"
        schemaless.write_text(yaml.safe_dump_all([schemaless_crd(*s) for s in SCHEMALESS]))
        self.cp.install_crds(crds / KSERVE, crds / KSERVE_INFERENCEGRAPHS, schemaless)
        self.cp.apply({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": CONFIG_MAP, "namespace": NAMESPACE},
             "data": {key: json.dumps(value) for key, value in CONFIG.items()}},
        ]})
        return self.restart(timeout)

    def restart(self, timeout: float = 120) -> KServeController:
        """The manager started (again: after crash()), its webhooks registered at its new address."""
        webhook_port, probe_port = free_port(), free_port()
        tmp = self.dir / "tmp"
        certs = tmp / "k8s-webhook-server" / "serving-certs"
        certs.mkdir(parents=True, exist_ok=True)
        serving = self.cp.ca.issue("kserve-webhook", "kserve-webhook-server", server_ips=("127.0.0.1",))
        (certs / "tls.crt").write_bytes(serving.cert.read_bytes())
        (certs / "tls.key").write_bytes(serving.key.read_bytes())
        identity = self.cp.ca.issue("kserve-manager", "kserve-controller-manager", organizations=("system:masters",))
        kubeconfig = self.cp.write_kubeconfig(self.dir / "kubeconfig", identity.cert, identity.key)
        env = {"PATH": os.environ.get("PATH", ""), "KUBECONFIG": str(kubeconfig), "POD_NAMESPACE": NAMESPACE,
               "TMPDIR": str(tmp)}
        self.process = Process("kserve-manager", [
            str(self.bin / "manager"), "--leader-elect=false", "--webhook-port", str(webhook_port),
            "--metrics-addr", f"127.0.0.1:{free_port()}", "--health-probe-addr", f"127.0.0.1:{probe_port}",
        ], self.dir, env=env)
        self.process.wait_until(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{probe_port}/readyz", timeout=2).status == 200,
            timeout, "ready KServe manager (webhook server started)")
        ca_bundle = base64.b64encode(self.cp.ca.cert_path.read_bytes()).decode()
        self.cp.apply({"apiVersion": "v1", "kind": "List",
                       "items": webhook_configurations(f"https://127.0.0.1:{webhook_port}", ca_bundle)})
        return self

    def crash(self) -> None:
        """The manager dies and its webhooks stay registered, as when its pod is gone: the API server then refuses
        every write of an InferenceService (they fail closed) until restart() brings it back."""
        if self.process:
            self.process.stop()

    def stop(self) -> None:
        """The manager goes, and its webhooks with it: they fail closed, so left behind they would
        refuse every InferenceService (and its pods) on this control plane."""
        if self.process:
            for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
                self.cp.kubectl("delete", kind, f"inferenceservice.{GROUP}", "--ignore-not-found", check=False)
            self.process.stop()
