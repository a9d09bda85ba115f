"""STAND-INS for the serving systems' controllers (KServe, Seldon Core v1 and v2, a Gateway
API implementation), which cannot run here. Each does to its objects what the real
controller does, and nothing of the operator's: it starts one model-server process per
serving unit (revision, predictor, Model, Service), reports readiness in the object's
status the way that controller does, and publishes the traffic split the object asks for
(with each unit's URL) to a file the load generator follows, `split-<namespace>-<object>.json`
(a list of {unit, version, percent, url}), and next to it the units that get a copy of a
share of those requests, `mirror-<namespace>-<object>.json` (a list of {unit, version, url,
percent}; [] when nothing is mirrored). Units are registered with Prometheus through a
file_sd file.

    python -m playground.standin BACKEND KUBECONFIG BEHAVIOURS_JSON WORKDIR TARGETS_JSON

BEHAVIOURS_JSON maps an artifact URI (or svc://namespace/service) to
{"model": ..., "version": ..., "behaviour": {error_rate, latency, accuracy, accuracy_metrics, agreement,
never_ready}}
or, for a real model server, {"model": ..., "version": ..., "command": [..., "{port}", ...]}.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes


DRAIN_SECONDS = 2.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Unit:
    name: str
    artifact: str
    port: int
    process: subprocess.Popen
    ready: bool = False
    replaced: Unit | None = None
    """The process this one replaces in place; it serves until this one is ready."""
    version: str = ""
    model_server: subprocess.Popen | None = None
    """A real model server behind this unit, which is then its queue-proxy."""

    def kill(self) -> None:
        for process in (self.process, self.model_server):
            if process is not None:
                process.kill()

    @property
    def url(self) -> str:
        serving = self if self.ready or self.replaced is None else self.replaced
        return f"http://127.0.0.1:{serving.port}"


class StandIn:
    group = version = plural = flavour = ""

    def __init__(self, kubeconfig: str, behaviours: Path, workdir: Path, targets: Path):
        client = kubernetes.config.new_client_from_config(kubeconfig)
        self.api, self.core = kubernetes.client.CustomObjectsApi(client), kubernetes.client.CoreV1Api(client)
        self.behaviours, self.dir, self.targets = behaviours, workdir, targets
        self.units: dict[tuple[str, str, str], Unit] = {}
        self.written: dict[tuple[str, str], str] = {}
        self.draining: list[tuple[float, Unit]] = []

    # --- units: one model-server process each ---------------------------------------------

    def unit(self, namespace: str, obj: str, name: str, artifact: str) -> Unit:
        """The unit serving `artifact` as `name`; a new artifact under the same name replaces it in place."""
        key = (namespace, obj, name)
        current = self.units.get(key)
        if current is not None and current.artifact == artifact:
            return current
        known = self._artifacts().get(artifact, {})
        port = free_port()
        config = {"port": port, "namespace": namespace, "object": obj, "unit": name, "flavour": self.flavour,
                  "model": known.get("model", obj), "version": known.get("version", artifact),
                  "behaviour": known.get("behaviour", {})}
        log = (self.dir / f"{namespace}-{name}.log").open("ab")
        model_server = None
        if "command" in known:  # a real model server for this artifact, with the unit as its queue-proxy
            upstream_port = free_port()
            command = [part.replace("{port}", str(upstream_port)) for part in known["command"]]
            model_server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            config["upstream"] = f"http://127.0.0.1:{upstream_port}"
        process = subprocess.Popen([sys.executable, "-m", "playground.revision_server", json.dumps(config)],
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.units[key] = Unit(name, artifact, port, process, replaced=current, version=config["version"],
                               model_server=model_server)
        self._write_targets()
        return self.units[key]

    def _artifacts(self) -> dict[str, Any]:
        try:
            return json.loads(self.behaviours.read_text())
        except (OSError, ValueError):
            return {}

    def _refresh_readiness(self) -> None:
        for unit in self.units.values():
            if not unit.ready:
                try:
                    unit.ready = urllib.request.urlopen(f"http://127.0.0.1:{unit.port}/ready", timeout=0.5).status == 200
                except OSError:
                    continue
                if unit.ready and unit.replaced is not None:
                    # Traffic moves to the new process now; the old one drains for a while, as a data plane's
                    # graceful shutdown lets requests already routed to it finish.
                    self.draining.append((time.monotonic() + DRAIN_SECONDS, unit.replaced))
                    unit.replaced = None
        for deadline, unit in [d for d in self.draining if d[0] <= time.monotonic()]:
            unit.kill()
            self.draining.remove((deadline, unit))

    def _write_targets(self) -> None:
        groups = [{"targets": [f"127.0.0.1:{u.port}"], "labels": {"standin_unit": u.name}} for u in self.units.values()]
        self._write(self.targets, groups)

    @staticmethod
    def _write(path: Path, content: Any) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(content))
        tmp.replace(path)

    # --- what every controller does --------------------------------------------------------

    def publish_split(self, namespace: str, obj: str, split: Sequence[tuple[Unit, int]],
                      mirror: Sequence[tuple[Unit, float]] = ()) -> None:
        """The load generator's view of the data plane: which URL gets which share of the requests, and which
        URL gets a copy of which share (a unit not serving gets neither)."""
        def entries(shares: Sequence[tuple[Unit, float]]) -> list[dict[str, Any]]:
            return [traffic_entry(u, p) for u, p in shares if p > 0 and (u.ready or u.replaced is not None)]

        self.publish(namespace, obj, entries(split), entries(mirror))

    def publish(self, namespace: str, obj: str, split: list[dict[str, Any]], mirror: list[dict[str, Any]]) -> None:
        """The split and mirror files of `obj`, as `traffic_entry` lists."""
        self._write(self.dir / f"split-{namespace}-{obj}.json", split)
        self._write(self.dir / f"mirror-{namespace}-{obj}.json", mirror)

    def write_status(self, namespace: str, name: str, status: dict[str, Any], plural: str | None = None) -> None:
        key, text = (namespace, f"{plural or self.plural}/{name}"), json.dumps(status, sort_keys=True)
        if self.written.get(key) != text:
            self.api.patch_namespaced_custom_object_status(self.group, self.version, namespace, plural or self.plural,
                                                           name, {"status": status})
            self.written[key] = text

    def reconcile(self, obj: dict[str, Any]) -> None:
        raise NotImplementedError

    def reconcile_all(self) -> None:
        for obj in self.api.list_cluster_custom_object(self.group, self.version, self.plural)["items"]:
            self.reconcile(obj)

    def run(self) -> None:
        while True:
            try:
                self._refresh_readiness()
                self.reconcile_all()
            except kubernetes.client.ApiException as e:
                print(f"{type(self).__name__}: {e.status} {e.reason} {(e.body or '')[:500]}", flush=True)
            time.sleep(0.1)

    def stop(self, *_: Any) -> None:
        for unit in self.units.values():
            unit.kill()
            if unit.replaced is not None:
                unit.replaced.kill()
        for _, unit in self.draining:
            unit.kill()
        sys.exit(0)


def traffic_entry(unit: Unit, percent: float) -> dict[str, Any]:
    """A unit's entry in a published split or mirror list."""
    return {"unit": unit.name, "version": unit.version, "percent": percent, "url": unit.url}


def condition(kind: str, ready: bool, generation: int | None = None) -> dict[str, Any]:
    out = {"type": kind, "status": "True" if ready else "False", "reason": kind if ready else "NotReady",
           "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}
    if generation is not None:
        out["observedGeneration"] = generation
    return out


def main() -> None:
    from .standin_backends import STAND_INS

    backend, kubeconfig, behaviours, workdir, targets = sys.argv[1:6]
    standin = STAND_INS[backend](kubeconfig, Path(behaviours), Path(workdir), Path(targets))
    signal.signal(signal.SIGTERM, standin.stop)
    standin.run()


if __name__ == "__main__":
    main()
