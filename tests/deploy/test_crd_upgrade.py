"""The CRD upgrade step the docs give (docs/operations/install.md and upgrade.md): Helm never upgrades crds/, so an upgrade applies
them with `kubectl apply --server-side --force-conflicts`. Run here over an older copy of the
ModelDeployment CRD (one field fewer, installed as Helm does it), in a group of its own so that
the other tests' CRDs are left alone."""

from __future__ import annotations

import copy
import json
import time

import pytest
import yaml

from playground.controlplane import REPO

pytestmark = pytest.mark.integration

GROUP = "crd-upgrade.modelops.io"
COMMAND = "kubectl apply --server-side --force-conflicts -f charts/modelops/crds/"


def in_test_group(crd: dict) -> dict:
    crd = copy.deepcopy(crd)
    crd["spec"]["group"] = GROUP
    crd["metadata"]["name"] = f"{crd['spec']['names']['plural']}.{GROUP}"
    for key in ("shortNames", "categories"):  # `kubectl get mdep` stays the real CRD's
        crd["spec"]["names"].pop(key, None)
    return crd


def without_notifications(crd: dict) -> dict:
    """The CRD as it was before spec.notifications existed."""
    crd = copy.deepcopy(crd)
    for version in crd["spec"]["versions"]:
        del version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["notifications"]
    return crd


def test_the_docs_give_the_crd_upgrade_step():
    for page in ("install.md", "upgrade.md"):
        assert COMMAND in " ".join((REPO / "docs" / "operations" / page).read_text().split()), page


def test_applying_the_repos_crd_over_an_older_copy_keeps_existing_objects(deploy_plane, deploy_namespace, tmp_path):
    new = in_test_group(yaml.safe_load((REPO / "crds" / "modelops.io_modeldeployments.yaml").read_text()))
    old = without_notifications(new)
    name = new["metadata"]["name"]
    # Installed as Helm 4 installs crds/ (server-side apply, its own field manager).
    deploy_plane.kubectl("apply", "--server-side", "--field-manager=helm", "-f", "-", input=json.dumps(old))
    try:
        deploy_plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{name}")
        existing = yaml.safe_load((REPO / "examples" / "modeldeployment-kserve.yaml").read_text())
        existing["apiVersion"] = f"{GROUP}/v1alpha1"
        existing["spec"].pop("notifications", None)  # stored before the field existed
        stored = json.loads(deploy_plane.kubectl("create", "-n", deploy_namespace, "-o", "json", "-f", "-",
                                                 input=json.dumps(existing)).stdout)
        notified = {**existing, "metadata": {"name": "notified"},
                    "spec": {**existing["spec"], "notifications": ["ml-oncall"]}}
        # The control: the old schema does not know the field (kubectl's strict field validation refuses it).
        refused = deploy_plane.kubectl("create", "-n", deploy_namespace, "-f", "-", input=json.dumps(notified),
                                       check=False)
        assert refused.returncode != 0 and "notifications" in refused.stderr, refused.stderr

        path = tmp_path / "crds"
        path.mkdir()
        (path / "modeldeployments.yaml").write_text(yaml.safe_dump(new))
        # Without --force-conflicts kubectl stops at the fields Helm's install owns.
        conflict = deploy_plane.kubectl("apply", "--server-side", "-f", str(path), check=False)
        assert conflict.returncode != 0 and "conflict" in conflict.stderr.lower(), conflict.stderr
        upgraded = deploy_plane.kubectl(*COMMAND.split()[1:-1], str(path), check=False)
        assert upgraded.returncode == 0, upgraded.stderr
        deploy_plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{name}")

        kept = json.loads(deploy_plane.kubectl("get", f"modeldeployments.{GROUP}", "fraud", "-n", deploy_namespace,
                                               "-o", "json").stdout)
        assert kept["metadata"]["uid"] == stored["metadata"]["uid"] and kept["spec"] == stored["spec"]
        served = json.loads(deploy_plane.kubectl("get", "crd", name, "-o", "json").stdout)
        assert "notifications" in served["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        # The schema is published asynchronously after the update: retry the create until it takes the field.
        deadline = time.monotonic() + 30
        while True:
            created = deploy_plane.kubectl("create", "-n", deploy_namespace, "-o", "json", "-f", "-",
                                           input=json.dumps(notified), check=False)
            if created.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert created.returncode == 0, created.stderr
        assert json.loads(created.stdout)["spec"]["notifications"] == ["ml-oncall"]
    finally:
        deploy_plane.kubectl("delete", "crd", name, "--ignore-not-found", "--wait=false")
