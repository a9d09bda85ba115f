"""The operator under test, as a real process: `python -m modelops run`, killable with SIGKILL."""

from __future__ import annotations

import json
import os
import sys
import uuid
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from .processes import Process, free_port


class OperatorProcess:
    """`identity` is the leader-election identity (POD_NAME), kept across restarts like a pod's name:
    a restarted process finds the Lease its own and leads again at once. `args` go after `run`."""

    def __init__(self, kubeconfig: Path, work_dir: Path, identity: str | None = None, args: Sequence[str] = (),
                 verbose: bool = True):
        self.kubeconfig, self.dir = kubeconfig, work_dir
        self.verbose = verbose  # debug logs, as the tests want them; off for the benchmark, as in production
        self.identity = identity or f"operator-{uuid.uuid4().hex[:8]}"
        self.args = list(args)
        self.process: Process | None = None
        self.port = 0
        self.starts = 0

    def start(self) -> OperatorProcess:
        self.port = free_port()
        self.starts += 1
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "POD_NAME": self.identity}
        env.pop("POD_NAMESPACE", None)
        name = f"operator-{self.starts}" if self.identity.startswith("operator-") else f"{self.identity}-{self.starts}"
        self.process = Process(name, [sys.executable, "-m", "modelops", "run", *(["--verbose"] if self.verbose else []),
                                      "--metrics-port", str(self.port), *self.args], self.dir, env=env)
        self.process.wait_until(lambda: urllib.request.urlopen(self.metrics_url, timeout=1).status == 200, 30,
                                "metrics endpoint")
        return self

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def probe(self, path: str) -> int:
        """HTTP status of one of the operator's endpoints (/healthz, /readyz)."""
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2).status
        except urllib.error.HTTPError as error:
            return error.code

    def metric(self, name: str, **labels: str) -> float:
        """Current value of one of the operator's own metrics (0 when it has no such series yet)."""
        text = urllib.request.urlopen(self.metrics_url, timeout=2).read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return sample.value
        return 0.0

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()

    def is_leader(self) -> bool:
        """What the process itself says (modelops_leader); False when it is not running."""
        if self.process is None or not self.process.alive():
            return False
        try:
            return self.metric("modelops_leader") == 1
        except OSError:
            return False

    def wait_exit(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.proc.wait(timeout)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


def lease(control_plane, name: str = "modelops-operator", namespace: str = "modelops-system") -> dict | None:
    """The Lease as the API server has it (read as the admin), or None when there is none."""
    result = control_plane.kubectl("get", "lease", name, "-n", namespace, "-o", "json", check=False)
    if result.returncode != 0:
        if "NotFound" in result.stderr:
            return None
        raise RuntimeError(f"kubectl get lease {namespace}/{name} failed:\n{result.stderr}")
    return json.loads(result.stdout)


def lease_holder(control_plane, name: str = "modelops-operator", namespace: str = "modelops-system") -> str:
    """Who holds the Lease: its holderIdentity, "" when free or absent."""
    found = lease(control_plane, name, namespace)
    return ((found or {}).get("spec") or {}).get("holderIdentity") or ""
