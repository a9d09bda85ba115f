"""A load generator that follows the traffic split an InferenceService's status publishes.

Knative's activator and ingress split requests between revisions in a real cluster; here
the split is read from `status.components.predictor.traffic[]` (every 100 ms, in a thread of its own)
and each request goes straight to the chosen revision's URL. Smooth weighted round-robin
keeps the split exact over any window, so metric ratios do not depend on luck.
"""

from __future__ import annotations

import collections
import threading
import time
import urllib.error
import urllib.request

import kubernetes


class LoadGenerator(threading.Thread):
    def __init__(self, kubeconfig: str, namespace: str, name: str, rps: float = 50):
        super().__init__(daemon=True)
        self.api = kubernetes.client.CustomObjectsApi(kubernetes.config.new_client_from_config(kubeconfig))
        self.namespace, self.name, self.period = namespace, name, 1 / rps
        self.results: collections.Counter[tuple[str, int]] = collections.Counter()
        self.split: list[dict] = []
        self.splits_seen: list[tuple[float, dict[str, int]]] = []
        self._halt = threading.Event()
        self._credit: dict[str, float] = {}

    def refresh(self) -> None:
        isvc = self.api.get_namespaced_custom_object("serving.kserve.io", "v1beta1", self.namespace,
                                                     "inferenceservices", self.name)
        traffic = ((isvc.get("status") or {}).get("components", {}).get("predictor", {}).get("traffic")) or []
        self.split = [t for t in traffic if t.get("percent", 0) > 0]
        weights = {t["revisionName"]: t["percent"] for t in self.split}
        if not self.splits_seen or self.splits_seen[-1][1] != weights:
            self.splits_seen.append((time.time(), weights))

    def pick(self) -> dict | None:
        if not self.split:
            return None
        total = sum(t["percent"] for t in self.split)
        for t in self.split:
            self._credit[t["revisionName"]] = self._credit.get(t["revisionName"], 0) + t["percent"]
        chosen = max(self.split, key=lambda t: self._credit[t["revisionName"]])
        self._credit[chosen["revisionName"]] -= total
        return chosen

    def follow_split(self) -> None:
        while not self._halt.is_set():
            try:
                self.refresh()
            except Exception:  # noqa: BLE001  (the API server may be restarting; keep the load going)
                pass
            self._halt.wait(0.1)

    def run(self) -> None:
        threading.Thread(target=self.follow_split, daemon=True).start()
        next_send = time.monotonic()
        while not self._halt.is_set():
            target = self.pick()
            if target is not None:
                self.results[(target["revisionName"], self.send(target["url"]))] += 1
            next_send += self.period
            self._halt.wait(max(0.0, next_send - time.monotonic()))

    @staticmethod
    def send(url: str) -> int:
        request = urllib.request.Request(f"{url}/v1/models/model:predict", data=b'{"instances": [[1, 2, 3, 4]]}',
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                return response.status
        except urllib.error.HTTPError as e:
            return e.code
        except OSError:
            return 0  # connection failed: a request lost

    def wait_for_split(self, predicate, timeout: float) -> float:
        """When the published split first satisfied `predicate` (polling what this generator saw)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for seen_at, split in list(self.splits_seen):
                if predicate(seen_at, split):
                    return seen_at
            time.sleep(0.05)
        raise AssertionError(f"no such traffic split within {timeout}s: {self.splits_seen}")

    def stop(self) -> None:
        self._halt.set()
        self.join(5)
