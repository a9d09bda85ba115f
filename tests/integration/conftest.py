"""Session fixtures of the integration tier: a real control plane and a real Prometheus."""

from __future__ import annotations

import copy
import itertools
import json
import re
import time

import pytest

from ..conftest import model_deployment_manifest, upstream_crd_folder
from playground import upstream_crds as upstream
from playground.controlplane import REPO, ControlPlane
from playground.operator import OperatorProcess
from playground.prometheus import Prometheus
from playground.serving import ServingStandIn, install_kserve_config

TIMINGS: dict[str, float] = {}
# The real upstream CRDs of the serving systems this tier installs (see playground/upstream_crds.py).
UPSTREAM_CRD_FILES = [upstream.KSERVE, upstream.SELDON_V1, upstream.SELDON_V2_MODELS,
                      upstream.SELDON_V2_EXPERIMENTS, upstream.GATEWAY_STANDARD]
_namespace_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory):
    upstream_crds = upstream_crd_folder(UPSTREAM_CRD_FILES)
    plane = ControlPlane(tmp_path_factory.mktemp("controlplane"))
    try:
        plane.start()
        TIMINGS["control plane start (s)"] = plane.startup_seconds
        started = time.monotonic()
        plane.install_crds(*sorted((REPO / "crds").glob("*.yaml")), *(upstream_crds / f for f in UPSTREAM_CRD_FILES))
        TIMINGS["CRD install, ours and upstream (s)"] = time.monotonic() - started
        install_kserve_config(plane.kubeconfig)  # as a KServe install leaves it, before any test reads it
        plane.kubectl("apply", "-f", str(REPO / "deploy" / "admission.yaml"), "-f", str(REPO / "deploy" / "user-roles.yaml"))
        wait_until_admission_policy_enforced(plane)
        yield plane
    finally:
        plane.stop()


def wait_until_admission_policy_enforced(plane: ControlPlane, timeout: float = 30) -> None:
    """New admission policies take effect once the API server has compiled them: probe with dry runs until a
    forged actor is refused and a missing one is filled in."""
    forged = model_deployment_manifest()
    forged["metadata"]["namespace"] = "default"
    forged["spec"]["request"] = {"id": "probe", "action": "Abort", "reason": "probe", "actor": "nobody"}
    unnamed = copy.deepcopy(forged)
    del unnamed["spec"]["request"]["actor"]

    def filled_in() -> bool:
        done = plane.apply(unnamed, "--dry-run=server", "-o", "json", check=False)
        return done.returncode == 0 and "actor" in json.loads(done.stdout)["spec"]["request"]

    deadline = time.monotonic() + timeout
    while plane.apply(forged, "--dry-run=server", check=False).returncode == 0 or not filled_in():
        if time.monotonic() > deadline:
            raise AssertionError(f"the request-actor admission policies were not enforced within {timeout}s")
        time.sleep(0.2)


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory):
    with Prometheus(tmp_path_factory.mktemp("prometheus")) as server:
        yield server


@pytest.fixture
def namespace(control_plane, request):
    """A namespace of the test's own, so tests never see each other's objects.

    Not deleted afterwards: finishing a namespace's deletion is kube-controller-manager's
    job, which this control plane does not run; the whole etcd goes at the session's end.
    """
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower().removeprefix("test_"))[:40].strip("-")
    name = f"t{next(_namespace_numbers)}-{slug}"
    control_plane.kubectl("create", "namespace", name)
    return name


def pytest_terminal_summary(terminalreporter):
    for what, seconds in TIMINGS.items():
        terminalreporter.write_line(f"{what}: {seconds:.2f}")


@pytest.fixture(scope="session")
def operator_kubeconfig(control_plane):
    """The operator runs as its own user with only the ClusterRole the project ships."""
    control_plane.kubectl("apply", "-f", str(REPO / "deploy" / "rbac.yaml"))
    return control_plane.kubeconfig_for("modelops-operator")


@pytest.fixture(scope="session")
def operator(operator_kubeconfig, tmp_path_factory):
    process = OperatorProcess(operator_kubeconfig, tmp_path_factory.mktemp("operator")).start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="session")
def stand_ins(control_plane, prometheus, tmp_path_factory):
    """backend -> its serving stand-in, started on first use and kept for the session."""
    started: dict[str, ServingStandIn] = {}

    def get(backend: str) -> ServingStandIn:
        if backend not in started:
            started[backend] = ServingStandIn(backend, control_plane.kubeconfig, prometheus,
                                              tmp_path_factory.mktemp(f"{backend}-standin"))
        return started[backend]

    try:
        yield get
    finally:
        for standin in started.values():
            standin.stop()


@pytest.fixture(scope="session")
def kserve(stand_ins):
    return stand_ins("kserve")
