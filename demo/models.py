"""Three versions of a digits classifier, trained on the dataset scikit-learn ships (no download).

v1 is good; v2 is a worse model, trained on the dimmer half of the images only, that is also slower and fails on
bright inputs; v3 is better than v1. Each becomes a ModelVersion with its real artifact digest, data digest,
parameters, environment and offline metrics.
"""

from __future__ import annotations

import hashlib
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import sklearn
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier

from .drift import brightness

SEED = 7


class SlowAndBrittle:
    """A classifier wrapper that is slow and fails on bright inputs: what a bad release looks like."""

    def __init__(self, model: Any, delay: float, max_brightness: float):
        self.model, self.delay, self.max_brightness = model, delay, max_brightness

    def predict(self, x: np.ndarray) -> np.ndarray:
        time.sleep(self.delay)
        if float(np.asarray(x).mean()) > self.max_brightness:
            raise ValueError("input outside the range this model was validated on")
        return self.model.predict(x)


@dataclass
class Trained:
    version: str
    path: Path
    digest: str
    parameters: dict[str, str]
    accuracy: float
    reference: np.ndarray
    """The brightness of the inputs it was trained on, the drift detector's reference."""


def dataset():
    digits = load_digits()
    return train_test_split(digits.data, digits.target, test_size=0.3, random_state=SEED, stratify=digits.target)


def data_digest() -> str:
    digits = load_digits()
    return "sha256:" + hashlib.sha256(digits.data.tobytes() + digits.target.tobytes()).hexdigest()


def file_digest(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def train_all(out: Path) -> list[Trained]:
    x_train, x_test, y_train, y_test = dataset()
    candidates = {
        "1.0.0": (LogisticRegression(max_iter=2000, C=0.05), {"algorithm": "logistic_regression", "C": "0.05"}),
        "2.0.0": (DecisionTreeClassifier(max_depth=4, random_state=SEED),
                  {"algorithm": "decision_tree", "max_depth": "4", "training_slice": "dimmer half"}),
        "3.0.0": (SVC(C=5, gamma=0.001), {"algorithm": "svc", "C": "5", "gamma": "0.001"}),
    }
    trained = []
    bright = brightness(x_train)
    for version, (model, parameters) in candidates.items():
        # v2's data was a skewed slice: live traffic drifts from it, as its drift score shows.
        rows = bright <= np.median(bright) if version == "2.0.0" else np.ones(len(bright), dtype=bool)
        model.fit(x_train[rows], y_train[rows])
        accuracy = float((model.predict(x_test) == y_test).mean())
        # KServe runs a synchronous predict on its event loop, one request at a time, so the delay bounds v2's
        # throughput: 10 ms keeps it above the demo's 40 requests/s, all of which its shadow step copies to it.
        served = SlowAndBrittle(model, delay=0.01, max_brightness=5.6) if version == "2.0.0" else model
        path = out / version / "model.joblib"
        path.parent.mkdir(parents=True, exist_ok=True)
        joblib.dump(served, path)
        trained.append(Trained(version, path, file_digest(path), parameters, accuracy, bright[rows]))
    return trained


def model_version(t: Trained, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "modelops.io/v1alpha1", "kind": "ModelVersion",
        "metadata": {"name": f"digits-{t.version.replace('.', '-')}", "namespace": namespace},
        "spec": {
            "model": "digits", "version": t.version,
            "artifact": {"uri": t.path.resolve().as_uri(), "digest": t.digest, "format": "sklearn"},
            "lineage": {
                "data": {"uri": "sklearn.datasets.load_digits", "digest": data_digest(), "version": sklearn.__version__},
                "parameters": t.parameters,
                "environment": {"python": platform.python_version()},
                "code": {"repository": "modelops/demo", "commit": "local", "path": "demo/models.py"},
            },
            "metrics": {"accuracy": round(t.accuracy, 4)},
        },
    }
