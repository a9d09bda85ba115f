"""Fixtures of the deploy tier: the chart and the image on a control plane of their own.

The integration tier runs one operator for the whole session, watching every namespace; the
operators here run as the chart's ServiceAccount or in the image, and two drivers of the same
deployments would prove nothing. So this tier starts its own control plane, with the upstream
CRDs of KServe and prometheus-operator and none of ours: the chart brings them.
"""

from __future__ import annotations

import base64
import itertools
import json
import subprocess
from pathlib import Path

import pytest
import yaml

from playground import upstream_crds as upstream
from playground.controlplane import REPO, ControlPlane
from playground.helm import helm_binaries
from playground.prometheus import Prometheus
from playground.serving import ServingStandIn

from ..conftest import upstream_crd_folder

UPSTREAM_CRD_FILES = [upstream.KSERVE, upstream.PROMETHEUS_OPERATOR]
CHART = REPO / "charts" / "modelops"
_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def deploy_plane(tmp_path_factory):
    folder = upstream_crd_folder(UPSTREAM_CRD_FILES)
    plane = ControlPlane(tmp_path_factory.mktemp("deploy-plane"))
    try:
        plane.start()
        plane.install_crds(*(folder / f for f in UPSTREAM_CRD_FILES))
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def deploy_prometheus(tmp_path_factory):
    with Prometheus(tmp_path_factory.mktemp("deploy-prometheus")) as server:
        yield server


@pytest.fixture(scope="session")
def deploy_kserve(deploy_plane, deploy_prometheus, tmp_path_factory):
    standin = ServingStandIn("kserve", deploy_plane.kubeconfig, deploy_prometheus, tmp_path_factory.mktemp("kserve-standin"))
    try:
        yield standin
    finally:
        standin.stop()


@pytest.fixture
def deploy_namespace(deploy_plane, request):
    name = f"d{next(_numbers)}-{request.node.originalname.removeprefix('test_')[:30].replace('_', '-').strip('-')}"
    deploy_plane.kubectl("create", "namespace", name)
    # kube-controller-manager, which would create it, does not run here; Pods need it.
    deploy_plane.kubectl("create", "serviceaccount", "default", "-n", name)
    return name


@pytest.fixture(scope="session")
def helms() -> dict[str, Path]:
    return helm_binaries()


def helm(helms: dict[str, Path], which: str, *args: str, kubeconfig: Path | None = None,
         check: bool = True) -> subprocess.CompletedProcess:
    env = {"HOME": "/nonexistent", "PATH": "/usr/bin:/bin", "HELM_CACHE_HOME": "/tmp/helm-cache",
           "HELM_CONFIG_HOME": "/tmp/helm-config", "HELM_DATA_HOME": "/tmp/helm-data"}
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    done = subprocess.run([str(helms[which]), *args], capture_output=True, text=True, env=env, timeout=120)
    if check and done.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return done


def accepted(plane, objects, label: str = "") -> None:
    """Every object but the CRDs accepted by the API server with server-side dry-run, except the ServiceAccounts
    that a Pod among them names (the chart's test hook's): a dry run makes nothing a later object could find, so
    those are created for real, and deleted again at the end."""
    named = {(o["metadata"].get("namespace"), o["spec"].get("serviceAccountName")) for o in objects if o["kind"] == "Pod"}
    made = []
    try:
        for obj in objects:
            if obj["kind"] == "CustomResourceDefinition":
                continue
            real = obj["kind"] == "ServiceAccount" and (obj["metadata"].get("namespace"), obj["metadata"]["name"]) in named
            done = plane.kubectl(*(("create",) if real else ("create", "--dry-run=server")), "-o", "name", "-f", "-",
                                 input=yaml.safe_dump(obj), check=False)
            assert done.returncode == 0, f"{label}{obj['kind']}/{obj['metadata']['name']}: {done.stderr}"
            if real:
                made.append(obj)
    finally:
        for obj in made:
            plane.kubectl("delete", "serviceaccount", obj["metadata"]["name"], "-n", obj["metadata"]["namespace"],
                          "--wait=false", check=False)


def ensure_crds(plane) -> None:
    """Ours, as the chart ships them, unless an install made them already (then they stay its own)."""
    for path in sorted((CHART / "crds").glob("*.yaml")):
        name = yaml.safe_load(path.read_text())["metadata"]["name"]
        if plane.kubectl("get", "crd", name, check=False).returncode != 0:
            plane.kubectl("create", "-f", str(path))
        plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{name}")


def token_kubeconfig(plane, namespace: str, account: str, path: Path) -> Path:
    """A kubeconfig with a token from the TokenRequest API: the operator is the ServiceAccount, nothing more."""
    token = plane.kubectl("create", "token", account, "-n", namespace, "--duration=1h").stdout.strip()
    assert json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "==")) ["sub"] == \
        f"system:serviceaccount:{namespace}:{account}"
    config = yaml.safe_load(plane.kubeconfig.read_text())
    config["users"] = [{"name": account, "user": {"token": token}}]
    for context in config["contexts"]:
        context["context"]["user"] = account
    path.write_text(yaml.safe_dump(config))
    return path
