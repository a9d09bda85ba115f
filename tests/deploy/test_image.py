"""The operator's container image: built from the Dockerfile with podman (no Docker engine) on a
Debian base made locally (tools/image/), then run as a cluster would run it: the chart installed,
the container given the chart's arguments and a token of the chart's ServiceAccount. The
container, not a local process, drives a KServe rollout to promotion and serves its metrics and
probes. It shares the host's network (the API server and Prometheus listen on loopback only).
"""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from playground.image import operator_image, podman
from playground.operator import lease_holder
from playground.processes import free_port

from ..integration.scenario import Scenario, fast_spec
from .conftest import CHART, helm, token_kubeconfig

pytestmark = pytest.mark.integration

GOOD = {"error_rate": 0.0, "accuracy": 0.95}
NON_ROOT_UID = 65532  # the Dockerfile's USER


@pytest.fixture(scope="module")
def image() -> str:
    try:
        return operator_image()
    except RuntimeError as error:
        pytest.fail(str(error), pytrace=False)


def self_contained_kubeconfig(kubeconfig: Path, out: Path) -> Path:
    """The same identity with every file it names inlined: one file to mount, no host paths inside."""
    config = yaml.safe_load(kubeconfig.read_text())
    for entry, fields in (("clusters", ("certificate-authority",)), ("users", ("client-certificate", "client-key"))):
        for item in config[entry]:
            body = item["cluster" if entry == "clusters" else "user"]
            for field in (f for f in fields if f in body):
                body[f"{field}-data"] = base64.b64encode(Path(body.pop(field)).read_bytes()).decode()
    out.write_text(yaml.safe_dump(config))
    out.chmod(0o600)
    os.chown(out, NON_ROOT_UID, NON_ROOT_UID)  # readable by the container's user only
    return out


class Container:
    """The operator's image, run detached with the host's network; removed by `remove()` whatever happened."""

    def __init__(self, image: str, kubeconfig: Path, identity: str, args: list[str]):
        self.image, self.kubeconfig, self.identity, self.args = image, kubeconfig, identity, args
        self.name = f"modelops-image-test-{uuid.uuid4().hex[:8]}"
        self.port = free_port()

    def start(self) -> Container:
        podman("run", "--detach", "--name", self.name, "--network=host",
               "--read-only", "--cap-drop=all", "--security-opt=no-new-privileges",
               "--volume", f"{self.kubeconfig}:/etc/modelops/kubeconfig:ro",
               "--env", "KUBECONFIG=/etc/modelops/kubeconfig", "--env", f"POD_NAME={self.identity}",
               self.image, *self.args, "--verbose", f"--metrics-port={self.port}")
        deadline = time.monotonic() + 60
        while True:
            if not self.running():
                raise AssertionError(f"the container exited before serving /metrics:\n{self.logs()}")
            try:
                if self.get("/metrics")[0] == 200:
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"no /metrics from the container within 60 s:\n{self.logs()}")
            time.sleep(0.2)

    def running(self) -> bool:
        result = podman("inspect", "--format", "{{.State.Running}}", self.name, check=False)
        return result.stdout.strip() == "true"

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def metric(self, name: str, **labels: str) -> float:
        for family in text_string_to_metric_families(self.get("/metrics")[1]):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return sample.value
        return 0.0

    def logs(self, lines: int = 60) -> str:
        result = podman("logs", "--tail", str(lines), self.name, check=False)
        return result.stdout + result.stderr

    def remove(self) -> None:
        podman("stop", "--time", "10", self.name, check=False, timeout=60)  # SIGTERM: the Lease is released
        podman("rm", "--force", self.name, check=False, timeout=60)


def test_the_image_runs_the_operator_as_non_root_and_drives_a_rollout(
        image, helms, deploy_plane, deploy_kserve, deploy_prometheus, deploy_namespace, tmp_path):
    config = json.loads(podman("image", "inspect", image).stdout)[0]["Config"]
    assert config["Entrypoint"] == ["modelops", "run"] and config["User"] == f"{NON_ROOT_UID}:{NON_ROOT_UID}"
    assert "8080/tcp" in config.get("ExposedPorts", {})

    release, namespace = "modelops-image", "modelops-image"
    helm(helms, "helm4", "install", release, str(CHART), "--namespace", namespace, "--create-namespace",
         "--set", f"watchNamespaces[0]={deploy_namespace}", kubeconfig=deploy_plane.kubeconfig)
    manifest = [m for m in yaml.safe_load_all(helm(helms, "helm4", "get", "manifest", release, "-n", namespace,
                                                   kubeconfig=deploy_plane.kubeconfig).stdout) if m]
    deployment = next(m for m in manifest if m["kind"] == "Deployment")
    args = [a for a in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
            if not a.startswith("--metrics-port")]  # the host's network: a free port instead of 8080
    token = token_kubeconfig(deploy_plane, namespace, release, tmp_path / "token-kubeconfig")
    kubeconfig = self_contained_kubeconfig(token, tmp_path / "kubeconfig")
    container = Container(image, kubeconfig, identity="modelops-image-0", args=args)
    scenario = Scenario(deploy_plane, deploy_namespace, deploy_kserve)
    try:
        container.start()
        pid = podman("inspect", "--format", "{{.State.Pid}}", container.name).stdout.strip()
        uids = next(line.split()[1:] for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                    if line.startswith("Uid:"))
        assert set(uids) == {str(NON_ROOT_UID)}, uids  # real, effective, saved and fs uid, as the host sees them
        assert podman("exec", container.name, "id", "-u").stdout.strip() == str(NON_ROOT_UID)

        deadline = time.monotonic() + 30
        while lease_holder(deploy_plane, release, namespace) != container.identity:
            assert time.monotonic() < deadline, f"the container never took the Lease:\n{container.logs()}"
            time.sleep(0.2)

        scenario.version("1.0.0", **GOOD)
        scenario.version("1.1.0", **GOOD)
        scenario.serve("1.0.0", fast_spec(deploy_prometheus.url), deploy_prometheus)
        scenario.patch({"version": "1.1.0"})
        status = scenario.wait(lambda st: st.get("phase") == "Stable" and st.get("stableVersion") == "1.1.0", 90,
                               "1.1.0 promoted by the container")
        assert status["fallbackVersion"] == "1.0.0"
        assert [a for a in scenario.actions() if a[1] == "1.1.0"][-1] == ("Promoted", "1.1.0")
        assert "canaryTrafficPercent" not in scenario.get("isvc")["spec"]["predictor"]

        labels = {"namespace": deploy_namespace, "deployment": "fraud"}
        assert container.metric("modelops_leader") == 1
        analyses = container.metric("modelops_analyses_total", **labels)
        assert analyses >= 2, container.get("/metrics")[1][-4000:]
        for probe in ("/healthz", "/readyz"):
            assert container.get(probe)[0] == 200, probe
        assert container.running()
        print(f"container {container.name}: promoted 1.1.0 after {analyses:.0f} analyses; "
              f"uid {NON_ROOT_UID}; /metrics, /healthz, /readyz on 127.0.0.1:{container.port}")
    except BaseException:
        print(f"\n--- container log ---\n{container.logs()}")
        raise
    finally:
        scenario.stop_load()
        container.remove()
        helm(helms, "helm4", "uninstall", release, "--namespace", namespace, kubeconfig=deploy_plane.kubeconfig)
    assert podman("container", "exists", container.name, check=False).returncode == 1, "container left behind"
