"""The operator under test, as a real process: `python -m modelops run`, killable with SIGKILL."""

from __future__ import annotations

import os
import sys
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from .processes import Process, free_port


class OperatorProcess:
    def __init__(self, kubeconfig: Path, work_dir: Path):
        self.kubeconfig, self.dir = kubeconfig, work_dir
        self.process: Process | None = None
        self.port = 0
        self.starts = 0

    def start(self) -> OperatorProcess:
        self.port = free_port()
        self.starts += 1
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        self.process = Process(f"operator-{self.starts}", [sys.executable, "-m", "modelops", "run", "--verbose",
                                                           "--metrics-port", str(self.port)], self.dir, env=env)
        self.process.wait_until(lambda: urllib.request.urlopen(self.metrics_url, timeout=1).status == 200, 30,
                                "metrics endpoint")
        return self

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

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

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
