"""A cluster without one backend's CRDs: that ModelDeployment says why, the others keep working."""

from __future__ import annotations

import pytest

from playground.controlplane import REPO, ControlPlane
from playground.operator import OperatorProcess
from playground.serving import ServingStandIn
from playground.upstream_crds import KSERVE
from ..conftest import upstream_crd_folder
from .scenario import Scenario, fast_spec


@pytest.fixture(scope="module")
def kserve_only_cluster(tmp_path_factory, prometheus):
    """A second control plane with only our CRDs and KServe's: no Seldon, no Gateway API."""
    kserve_crd = upstream_crd_folder([KSERVE]) / KSERVE
    plane = ControlPlane(tmp_path_factory.mktemp("kserve-only")).start()
    operator = standin = None
    try:
        plane.install_crds(*sorted((REPO / "crds").glob("*.yaml")), kserve_crd)
        plane.kubectl("apply", "-f", str(REPO / "deploy" / "rbac.yaml"))
        operator = OperatorProcess(plane.kubeconfig_for("modelops-operator"), plane.dir).start()
        standin = ServingStandIn("kserve", plane.kubeconfig, prometheus, tmp_path_factory.mktemp("kserve-only-standin"))
        yield plane, standin
    finally:
        for part in (standin, operator, plane):
            if part is not None:
                part.stop()


def test_missing_backend_is_reported_and_others_keep_serving(kserve_only_cluster, prometheus):
    plane, standin = kserve_only_cluster
    plane.kubectl("create", "namespace", "apps")
    seldon = Scenario(plane, "apps", standin, name="ranker")
    seldon.backend = "seldonV2"
    seldon.version("1.0.0")
    seldon.deploy("1.0.0", fast_spec(prometheus.url, "seldonV2"))
    status = seldon.wait(lambda st: st.get("phase") == "Failed", 20, "reported")
    assert "Model API (mlops.seldon.io/v1alpha1) is not installed" in status["message"]
    conditions = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert conditions["Degraded"] == ("True", "BackendNotInstalled")
    assert conditions["Synced"] == ("False", "BackendNotInstalled")
    assert not status.get("history")  # nothing was deployed, and nothing claims so
    assert "BackendNotInstalled" in seldon.events()

    fraud = Scenario(plane, "apps", standin)
    fraud.version("1.0.0", error_rate=0.0, accuracy=0.95)
    fraud.version("1.1.0", error_rate=0.0, accuracy=0.95)
    fraud.serve("1.0.0", fast_spec(prometheus.url), prometheus)
    try:
        fraud.patch({"version": "1.1.0"})
        fraud.wait(lambda st: st.get("phase") == "Stable" and st.get("stableVersion") == "1.1.0", 60, "promoted")
    finally:
        fraud.stop_load()
