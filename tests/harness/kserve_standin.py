"""STAND-IN for KServe's serverless controller (KServe + Knative), which cannot run here.

It does to InferenceServices what that controller does, and nothing of the operator's:
each change of the predictor (anything but canaryTrafficPercent) makes a new revision,
served by its own model-server process on loopback; `canaryTrafficPercent` splits traffic
between the latest revision and the last rolled-out one; the status carries
latestCreatedRevision, latestReadyRevision, latestRolledoutRevision,
previousRolledoutRevision and traffic[] (with each revision's URL, which the load
generator follows). Revisions are registered with Prometheus through a file_sd file.

    python -m tests.harness.kserve_standin KUBECONFIG BEHAVIOURS_JSON WORKDIR TARGETS_JSON

BEHAVIOURS_JSON maps a storageUri to {"version": ..., "behaviour": {error_rate, latency, accuracy, ...}}.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Revision:
    name: str
    template: str
    port: int
    process: subprocess.Popen
    ready: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Service:
    revisions: list[Revision] = field(default_factory=list)
    rolled_out: Revision | None = None
    previous: Revision | None = None


class StandIn:
    def __init__(self, kubeconfig: str, behaviours: Path, workdir: Path, targets: Path):
        self.api = kubernetes.client.CustomObjectsApi(kubernetes.config.new_client_from_config(kubeconfig))
        self.behaviours_file, self.dir, self.targets = behaviours, workdir, targets
        self.services: dict[tuple[str, str], Service] = {}
        self.last_status: dict[tuple[str, str], dict] = {}

    def artifact(self, storage_uri: str) -> dict[str, Any]:
        """What the test says the model at this URI is and does."""
        try:
            return json.loads(self.behaviours_file.read_text()).get(storage_uri, {})
        except (OSError, ValueError):
            return {}

    def start_revision(self, namespace: str, name: str, number: int, template: str, predictor: dict) -> Revision:
        revision = f"{name}-predictor-{number:05d}"
        port = free_port()
        storage_uri = predictor.get("model", {}).get("storageUri", "")
        artifact = self.artifact(storage_uri)
        config = {"port": port, "namespace": namespace, "revision": revision, "configuration": f"{name}-predictor",
                  "model": artifact.get("model", name), "version": artifact.get("version", storage_uri),
                  "behaviour": artifact.get("behaviour", {})}
        log = (self.dir / f"{namespace}-{revision}.log").open("ab")
        process = subprocess.Popen([sys.executable, "-m", "tests.harness.revision_server", json.dumps(config)],
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return Revision(revision, template, port, process)

    def write_targets(self) -> None:
        groups = [{"targets": [f"127.0.0.1:{r.port}"], "labels": {"standin_revision": r.name}}
                  for s in self.services.values() for r in s.revisions]
        tmp = self.targets.with_suffix(".tmp")
        tmp.write_text(json.dumps(groups))
        tmp.replace(self.targets)

    def reconcile(self, isvc: dict) -> None:
        meta, predictor = isvc["metadata"], isvc["spec"].get("predictor", {})
        key = (meta["namespace"], meta["name"])
        service = self.services.setdefault(key, Service())
        template = json.dumps({k: v for k, v in predictor.items() if k != "canaryTrafficPercent"}, sort_keys=True)
        if not service.revisions or service.revisions[-1].template != template:
            service.revisions.append(self.start_revision(*key, len(service.revisions) + 1, template, predictor))
            self.write_targets()
        for revision in service.revisions:
            if not revision.ready:
                revision.ready = probe(revision.url)
        latest = service.revisions[-1]
        canary = predictor.get("canaryTrafficPercent")
        if latest.ready and (canary is None or canary == 100 or service.rolled_out is None):
            if service.rolled_out is not latest:
                service.previous, service.rolled_out = service.rolled_out, latest
        traffic = self.traffic(service, latest, canary)
        ready_revisions = [r for r in service.revisions if r.ready]
        status = {
            "observedGeneration": meta.get("generation"),
            "components": {"predictor": {
                "latestCreatedRevision": latest.name,
                "latestReadyRevision": ready_revisions[-1].name if ready_revisions else None,
                "latestRolledoutRevision": service.rolled_out.name if service.rolled_out else None,
                "previousRolledoutRevision": service.previous.name if service.previous else None,
                "traffic": traffic,
            }},
            "conditions": [{"type": "Ready", "status": "True" if service.rolled_out else "False",
                            "lastTransitionTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}],
        }
        comparable = json.dumps({**status, "conditions": [c["status"] for c in status["conditions"]]}, sort_keys=True)
        if self.last_status.get(key) != comparable:
            self.api.patch_namespaced_custom_object_status(GROUP, VERSION, key[0], PLURAL, key[1], {"status": status})
            self.last_status[key] = comparable

    @staticmethod
    def traffic(service: Service, latest: Revision, canary: int | None) -> list[dict]:
        def entry(revision: Revision, percent: int, tag: str) -> dict:
            return {"revisionName": revision.name, "percent": percent, "tag": tag, "url": revision.url,
                    "latestRevision": revision is latest}

        stable = service.rolled_out
        if stable is None:
            return []
        if stable is latest or canary is None:
            return [entry(stable, 100, "latest")]
        percent = canary if latest.ready else 0
        return [entry(latest, percent, "latest"), entry(stable, 100 - percent, "prev")]

    def run(self) -> None:
        while True:
            try:
                items = self.api.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]
            except kubernetes.client.ApiException as e:
                print(f"list failed: {e.status}", flush=True)
                items = []
            for isvc in items:
                try:
                    self.reconcile(isvc)
                except kubernetes.client.ApiException as e:
                    print(f"{isvc['metadata']['name']}: {e.status} {e.reason}", flush=True)
            time.sleep(0.1)

    def stop(self, *_: Any) -> None:
        for service in self.services.values():
            for revision in service.revisions:
                revision.process.kill()
        sys.exit(0)


def probe(url: str) -> bool:
    try:
        return urllib.request.urlopen(f"{url}/ready", timeout=0.5).status == 200
    except OSError:
        return False


if __name__ == "__main__":
    standin = StandIn(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
    signal.signal(signal.SIGTERM, standin.stop)
    standin.run()
