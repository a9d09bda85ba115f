"""Test-side handle on the KServe stand-in: which artifact behaves how."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .controlplane import REPO
from .processes import Process
from .prometheus import Prometheus


class KServeStandIn:
    def __init__(self, kubeconfig: Path, prometheus: Prometheus, work_dir: Path):
        self.behaviours = work_dir / "behaviours.json"
        self.behaviours.write_text("{}")
        self.process = Process("kserve-standin", [
            sys.executable, "-m", "tests.harness.kserve_standin", str(kubeconfig), str(self.behaviours),
            str(work_dir), str(prometheus.targets_file("kserve-standin")),
        ], work_dir, cwd=REPO)

    def artifact(self, uri: str, model: str, version: str, **behaviour: object) -> None:
        """Declare how the model stored at `uri` behaves once served."""
        known = json.loads(self.behaviours.read_text())
        known[uri] = {"model": model, "version": version, "behaviour": behaviour}
        tmp = self.behaviours.with_suffix(".tmp")
        tmp.write_text(json.dumps(known))
        tmp.replace(self.behaviours)

    def stop(self) -> None:
        self.process.stop()
