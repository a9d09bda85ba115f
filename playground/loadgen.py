"""A load generator that follows the traffic split a serving stand-in publishes.

In a cluster, Knative's activator, Seldon's executor or a Gateway split requests between
versions; here the stand-in publishes the split it computed from the object's spec (unit,
percent, URL) to a file, re-read every 100 ms in a thread of its own, and each request
goes straight to the chosen unit. Smooth weighted round-robin keeps the split exact over
any window, so metric ratios do not depend on luck.
"""

from __future__ import annotations

import collections
import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path


class LoadGenerator(threading.Thread):
    def __init__(self, split_file: Path, rps: float = 50):
        super().__init__(daemon=True)
        self.split_file, self.period = split_file, 1 / rps
        self.results: collections.Counter[tuple[str, int]] = collections.Counter()
        self.split: list[dict] = []
        self.splits_seen: list[tuple[float, dict[str, int]]] = []
        self.unit_versions: dict[str, str] = {}
        self.lost: list[tuple[float, str, str]] = []
        """(when, unit, URL) of every request that got no answer at all."""
        self._halt = threading.Event()
        self._credit: dict[str, float] = {}

    def refresh(self) -> None:
        try:
            self.split = json.loads(self.split_file.read_text())
        except (OSError, ValueError):
            return
        self.unit_versions.update({t["unit"]: t.get("version", "") for t in self.split})
        weights = {t["unit"]: t["percent"] for t in self.split}
        if not self.splits_seen or self.splits_seen[-1][1] != weights:
            self.splits_seen.append((time.time(), weights))

    def pick(self) -> dict | None:
        if not self.split:
            return None
        split = self.split
        total = sum(t["percent"] for t in split)
        for t in split:
            self._credit[t["unit"]] = self._credit.get(t["unit"], 0) + t["percent"]
        chosen = max(split, key=lambda t: self._credit[t["unit"]])
        self._credit[chosen["unit"]] -= total
        return chosen

    def follow_split(self) -> None:
        while not self._halt.is_set():
            self.refresh()
            self._halt.wait(0.1)

    def run(self) -> None:
        threading.Thread(target=self.follow_split, daemon=True).start()
        next_send = time.monotonic()
        while not self._halt.is_set():
            target = self.pick()
            if target is not None:
                code = self.send(target)
                self.results[(target["unit"], code)] += 1
                if code == 0:
                    self.lost.append((time.time(), target["unit"], target["url"]))
            next_send += self.period
            self._halt.wait(max(0.0, next_send - time.monotonic()))

    def send(self, target: dict) -> int:
        """One inference request to the chosen unit; its HTTP status, or 0 when the request was lost."""
        return self.post(target["url"], b'{"instances": [[1, 2, 3, 4]]}')[0]

    @staticmethod
    def post(url: str, body: bytes) -> tuple[int, bytes]:
        request = urllib.request.Request(f"{url}/v1/models/model:predict", data=body,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as e:
            return e.code, b""
        except OSError:
            return 0, b""  # connection failed: a request lost

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
