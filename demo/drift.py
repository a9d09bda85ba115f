"""The demo's drift detector: what Alibi Detect or Evidently would run beside a model, in a few lines.

It compares the inputs the model is sent now with the inputs each version was trained on, by the population
stability index of their brightness (mean pixel): the reference's deciles as bins, PSI = sum (live - ref) *
ln(live / ref) over the bins. By a common rule of thumb a PSI under 0.1 is no shift and over 0.25 a significant
one. Each version's score is exported as the contract's gauge model_drift_score{namespace, model, version}
(README, "Metric contracts"), which the driftScore check template reads.
"""

from __future__ import annotations

import collections
import threading

import numpy as np
from prometheus_client import CollectorRegistry, Gauge

RECENT = 400
"""Live inputs compared: enough for a PSI of the same distribution to stay well under 0.1."""
BINS = 10
_FLOOR = 1e-4  # an empty bin would make the logarithm infinite


def brightness(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=float).reshape(len(x), -1).mean(axis=1)


def population_stability(reference: np.ndarray, live: np.ndarray) -> float:
    edges = np.quantile(reference, np.linspace(0, 1, BINS + 1)[1:-1])
    expected = np.bincount(np.searchsorted(edges, reference), minlength=BINS) / len(reference)
    actual = np.bincount(np.searchsorted(edges, live), minlength=BINS) / len(live)
    expected, actual = np.clip(expected, _FLOOR, None), np.clip(actual, _FLOOR, None)
    return float(((actual - expected) * np.log(actual / expected)).sum())


class DriftDetector:
    def __init__(self, references: dict[str, np.ndarray], namespace: str, model: str, registry: CollectorRegistry):
        """`references`: version -> the brightness of the inputs it was trained on."""
        self.references, self.namespace, self.model = references, namespace, model
        self.recent: collections.deque[float] = collections.deque(maxlen=RECENT)
        self.score = Gauge("model_drift_score", "Input drift of live traffic from the version's training data (PSI).",
                           ["namespace", "model", "version"], registry=registry)
        self._lock = threading.Lock()

    def observe(self, x: np.ndarray) -> None:
        with self._lock:
            self.recent.extend(brightness(x).tolist())
            if len(self.recent) < RECENT // 4 or len(self.recent) % 20:
                return
            live = np.array(self.recent)
        for version, reference in self.references.items():
            self.score.labels(self.namespace, self.model, version).set(population_stability(reference, live))
