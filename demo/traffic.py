"""Real inference traffic with ground truth: digits from the held-out split, graded per version.

The grades are exported under the accuracy contract (docs/concepts/analysis.md, "Accuracy from labels that arrive late"):
model_predictions_aged_total by namespace, model, version and grade, each prediction counted once at its grading
age, here when it is made, since the truth is known at once; the inputs sent go through a drift detector, whose
scores are exported beside them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry, Counter, start_http_server

from playground.loadgen import Exchange, LoadGenerator
from playground.processes import free_port

from .drift import DriftDetector
from .models import dataset


class GradedTraffic(LoadGenerator):
    def __init__(self, split_file: Path, namespace: str, model: str, rps: float, references: dict[str, np.ndarray]):
        """`references`: version -> the brightness of its training inputs, for the drift detector."""
        super().__init__(split_file, rps)
        _, self.x, _, self.y = dataset()
        self.namespace, self.model, self.n = namespace, model, 0
        registry = CollectorRegistry()
        self.aged = Counter("model_predictions_aged", "Predictions at their grading age, by their grade.",
                            ["namespace", "model", "version", "grade"], registry=registry)
        self.drift = DriftDetector(references, namespace, model, registry)
        self.metrics_port = free_port()
        start_http_server(self.metrics_port, "127.0.0.1", registry=registry)

    def send(self, target: dict) -> Exchange:
        i, self.n = self.n % len(self.y), self.n + 1
        request = json.dumps({"instances": [self.x[i].tolist()]}).encode()
        self.drift.observe(self.x[i:i + 1])
        code, answer = self.post(target["url"], request, self.headers)
        if code == 200:
            right = json.loads(answer)["predictions"][0] == int(self.y[i])
            self.aged.labels(self.namespace, self.model, target["version"], "correct" if right else "wrong").inc()
        return Exchange(request, code, answer)
