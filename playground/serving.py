"""Test-side handle on a serving stand-in process: which artifact behaves how, and where its split is."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import kubernetes

from .controlplane import REPO
from .processes import Process
from .prometheus import Prometheus

KSERVE_NAMESPACE = "kserve"
KSERVE_CONFIG = "inferenceservice-config"


# What docs/backends/kserve.md asks a cluster's KServe ConfigMap to list (the operator starts no rollout otherwise,
# so a key missing here fails every KServe test).
KSERVE_DISALLOWED_LIST = {"serviceAnnotationDisallowedList": [
    "modelops.io/applied-canary-traffic-percent", "modelops.io/artifact-generation",
    "modelops.io/revision-versions", "modelops.io/version-models"]}


def kserve_config_data() -> dict[str, str]:
    """KServe's ConfigMap as a KServe install makes it, with the list docs/backends/kserve.md asks for."""
    return {"inferenceService": json.dumps(KSERVE_DISALLOWED_LIST)}


def install_kserve_config(kubeconfig: Path) -> None:
    """The namespace `kserve` and its ConfigMap (kserve_config_data), made or replaced."""
    client = kubernetes.config.new_client_from_config(str(kubeconfig))
    core = kubernetes.client.CoreV1Api(client)
    body = {"metadata": {"name": KSERVE_CONFIG, "namespace": KSERVE_NAMESPACE}, "data": kserve_config_data()}
    for create in (lambda: core.create_namespace({"metadata": {"name": KSERVE_NAMESPACE}}),
                   lambda: core.create_namespaced_config_map(KSERVE_NAMESPACE, body)):
        try:
            create()
        except kubernetes.client.ApiException as e:
            if e.status != 409:
                raise
    core.replace_namespaced_config_map(KSERVE_CONFIG, KSERVE_NAMESPACE, body)


class ServingStandIn:
    def __init__(self, backend: str, kubeconfig: Path, prometheus: Prometheus, work_dir: Path):
        self.backend, self.dir = backend, work_dir
        if backend == "kserve":
            install_kserve_config(kubeconfig)
        work_dir.mkdir(parents=True, exist_ok=True)
        self.behaviours = work_dir / "behaviours.json"
        self.behaviours.write_text("{}")
        self.process = Process(f"{backend}-standin", [
            sys.executable, "-m", "playground.standin", backend, str(kubeconfig), str(self.behaviours),
            str(work_dir), str(prometheus.targets_file(backend)),
        ], work_dir, cwd=REPO)

    def artifact(self, key: str, model: str, version: str, **behaviour: object) -> None:
        """Declare how the model stored at `key` (an artifact URI or svc://ns/name) behaves once served."""
        self._declare(key, {"model": model, "version": version, "behaviour": behaviour})

    def model_server(self, key: str, model: str, version: str, command: list[str]) -> None:
        """Serve the artifact at `key` with a real model server: `command` with {port} where it listens."""
        self._declare(key, {"model": model, "version": version, "command": command})

    def _declare(self, key: str, entry: dict) -> None:
        known = json.loads(self.behaviours.read_text())
        known[key] = entry
        tmp = self.behaviours.with_suffix(".tmp")
        tmp.write_text(json.dumps(known))
        tmp.replace(self.behaviours)

    def split_file(self, namespace: str, obj: str) -> Path:
        return self.dir / f"split-{namespace}-{obj}.json"

    def mirror_file(self, namespace: str, obj: str) -> Path:
        """The units that get a copy of a share of the requests of `obj`'s default route: a list of
        {unit, version, url, percent}, [] when none."""
        return self.dir / f"mirror-{namespace}-{obj}.json"

    def route(self, namespace: str, obj: str, path: str = "/", headers: dict[str, str] | None = None) -> list[dict]:
        """Gateway API only: where the data plane sends a request on `path` with `headers` now, as the split
        ({unit, version, percent, url} per Service) of the HTTPRoute rule it reaches; [] when none."""
        return self._rule(namespace, obj, path, headers).get("split", [])

    def route_mirror(self, namespace: str, obj: str, path: str = "/",
                     headers: dict[str, str] | None = None) -> list[dict]:
        """Gateway API only: where the data plane copies a request on `path` with `headers` now, as the mirrors
        ({unit, version, url, percent} per Service) of the HTTPRoute rule it reaches; [] when none."""
        return self._rule(namespace, obj, path, headers).get("mirror", [])

    def _rule(self, namespace: str, obj: str, path: str, headers: dict[str, str] | None) -> dict:
        """The published HTTPRoute rule a request on `path` with `headers` reaches; {} when none."""
        from .standin_backends import route_for

        try:
            table = json.loads((self.dir / f"routes-{namespace}-{obj}.json").read_text())
        except (OSError, ValueError):
            return {}
        return route_for(table, path, headers or {}) or {}

    def stop(self) -> None:
        self.process.stop()
