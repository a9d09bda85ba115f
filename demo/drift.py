"""The demo's drift detector: what Alibi Detect or Evidently would run beside a model, in a few lines.

It bins the brightness (mean pixel) of every input the model is sent, for each version at the deciles of the
inputs that version was trained on, and publishes both sides of the binned drift contract (docs/concepts/analysis.md, "Drift"):
model_input_bin_total{namespace, model, version, feature="brightness", bin} counts the live inputs (every bin's
counter created at 0), model_reference_bin_count{..., feature, bin} the training inputs; the driftTest check
template tests the one against the other.

It also scores the same inputs as the drift score contract's gauge model_drift_score{namespace, model, version},
which the driftScore template reads and the demo's report shows: the population stability index of the recent
inputs, PSI = sum (live - ref) * ln(live / ref) over the bins. By a common rule of thumb a PSI under 0.1 is no
shift and over 0.25 a significant one.
"""

from __future__ import annotations

import collections
import threading

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge

RECENT = 400
"""Live inputs compared: enough for a PSI of the same distribution to stay well under 0.1."""
BINS = 10
_FLOOR = 1e-4  # an empty bin would make the logarithm infinite


def brightness(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=float).reshape(len(x), -1).mean(axis=1)


FEATURE = "brightness"


def decile_edges(reference: np.ndarray) -> np.ndarray:
    return np.quantile(reference, np.linspace(0, 1, BINS + 1)[1:-1])


def binned(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    """How many of `values` fall in each of the BINS bins `edges` bound."""
    return np.bincount(np.searchsorted(edges, values), minlength=BINS)


def population_stability(reference: np.ndarray, live: np.ndarray) -> float:
    edges = decile_edges(reference)
    expected = binned(edges, reference) / len(reference)
    actual = binned(edges, live) / len(live)
    expected, actual = np.clip(expected, _FLOOR, None), np.clip(actual, _FLOOR, None)
    return float(((actual - expected) * np.log(actual / expected)).sum())


class DriftDetector:
    def __init__(self, references: dict[str, np.ndarray], namespace: str, model: str, registry: CollectorRegistry):
        """`references`: version -> the brightness of the inputs it was trained on."""
        self.references, self.namespace, self.model = references, namespace, model
        self.edges = {version: decile_edges(reference) for version, reference in references.items()}
        self.recent: collections.deque[float] = collections.deque(maxlen=RECENT)
        self.score = Gauge("model_drift_score", "Input drift of live traffic from the version's training data (PSI).",
                           ["namespace", "model", "version"], registry=registry)
        labels = ["namespace", "model", "version", "feature", "bin"]
        self.inputs = Counter("model_input_bin", "Live inputs in each bin of a feature, at the version's reference "
                              "deciles.", labels, registry=registry)
        reference_count = Gauge("model_reference_bin_count", "The version's training inputs in each bin of a feature.",
                                labels, registry=registry)
        for version, reference in references.items():
            for bin_, count in enumerate(binned(self.edges[version], reference)):
                reference_count.labels(namespace, model, version, FEATURE, str(bin_)).set(count)
                self.inputs.labels(namespace, model, version, FEATURE, str(bin_))  # at 0 until an input falls in it
        self._lock = threading.Lock()

    def observe(self, x: np.ndarray) -> None:
        values = brightness(x)
        for version, edges in self.edges.items():
            for bin_, count in enumerate(binned(edges, values)):
                if count:
                    self.inputs.labels(self.namespace, self.model, version, FEATURE, str(bin_)).inc(int(count))
        with self._lock:
            self.recent.extend(values.tolist())
            if len(self.recent) < RECENT // 4 or len(self.recent) % 20:
                return
            live = np.array(self.recent)
        for version, reference in self.references.items():
            self.score.labels(self.namespace, self.model, version).set(population_stability(reference, live))
