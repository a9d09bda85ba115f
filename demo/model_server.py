"""One KServe ModelServer process serving one artifact: `python -m demo.model_server ARTIFACT PORT`."""

from __future__ import annotations

import json
import sys

import joblib
import kserve
import numpy as np


class JoblibModel(kserve.Model):
    def __init__(self, name: str, artifact: str):
        super().__init__(name)
        self.artifact = artifact
        self.load()

    def load(self) -> bool:
        self.model = joblib.load(self.artifact)
        self.ready = True
        return self.ready

    def predict(self, payload, headers=None, response_headers=None):
        if isinstance(payload, (bytes, str)):
            payload = json.loads(payload)
        instances = np.asarray(payload["instances"], dtype=float)
        return {"predictions": [int(p) for p in self.model.predict(instances)]}


def main() -> None:
    artifact, port = sys.argv[1], int(sys.argv[2])
    sys.argv = sys.argv[:1]  # kserve parses the command line itself
    kserve.ModelServer(http_port=port, enable_grpc=False, workers=1).start([JoblibModel("model", artifact)])


if __name__ == "__main__":
    main()
