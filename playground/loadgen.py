"""A load generator that follows the traffic split a serving stand-in publishes.

In a cluster, Knative's activator, Seldon's executor or a Gateway split requests between
versions; here the stand-in publishes the split it computed from the object's spec (unit,
percent, URL) to a file, re-read every 100 ms in a thread of its own, and each request
goes straight to the chosen unit. Smooth weighted round-robin keeps the split exact over
any window, so metric ratios do not depend on luck.

Mirroring: the stand-in also publishes the units that get a copy of a share of the requests
(`mirror-<namespace>-<object>.json` next to the split file). For each target the same smooth
credit decides which requests are copied, so 30% is exactly 3 requests in 10. A real data
plane copies a request as it forwards it; this one sends the copy after the primary answered,
from a small thread pool (primaries keep their pace), with the same body and, when the primary
answered 200 with "predictions", those in `X-Modelops-Shadow-Of` (JSON), so the candidate's
server can count agreement itself (in a cluster a comparator joins the two predictions). Users never see a copy's answer: `results` counts primaries only, `mirrored`
the copies.

With `headers` the generator is a client that sends them on every request: it follows the
Gateway stand-in's routes file (`routes-...` next to the split file) and takes the split and
mirrors of the rule `route_for` gives a request on "/" with those headers.
"""

from __future__ import annotations

import collections
import json
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

from .revision_server import SHADOW_HEADER, predictions_of
from .standin_backends import route_for

REQUEST = b'{"instances": [[1, 2, 3, 4]]}'
"""The body of every request unless the generator is given another (the model servers of pods need inputs their
models accept)."""
MAX_COPIES_PENDING = 64
"""Copies waiting for a sender beyond this are dropped, as a data plane drops mirrored requests it cannot keep up with."""


class Exchange(NamedTuple):
    """One request and its answer: what a mirror target gets a copy of."""

    body: bytes
    code: int
    """The HTTP status, 0 when the request got no answer at all."""
    answer: bytes


class LoadGenerator(threading.Thread):
    def __init__(self, split_file: Path, rps: float = 50, headers: dict[str, str] | None = None,
                 body: bytes = REQUEST):
        super().__init__(daemon=True)
        self.split_file, self.period, self.body = split_file, 1 / rps, body
        self.headers = dict(headers or {})
        self.results: collections.Counter[tuple[str, int]] = collections.Counter()
        self.mirrored: collections.Counter[tuple[str, int]] = collections.Counter()
        """(unit, status) of every copy sent to a mirror target, 0 for a copy that got no answer."""
        self.split: list[dict] = []
        self.mirror: list[dict] = []
        self.splits_seen: list[tuple[float, dict[str, int]]] = []
        self.sent_by_split: list[collections.Counter[tuple[str, int]]] = []
        """(unit, status) of the requests picked from each entry of `splits_seen`, in the same order."""
        self._routing: tuple[list[dict], collections.Counter[tuple[str, int]]] = ([], collections.Counter())
        """The split requests follow and its tally, in one attribute so that the sender reads both at once."""
        self._tally: collections.Counter[tuple[str, int]] = collections.Counter()
        self.mirrors_seen: list[tuple[float, dict[str, float]]] = []
        self.unit_versions: dict[str, str] = {}
        self.lost: list[tuple[float, str, str]] = []
        """(when, unit, URL) of every request that got no answer at all."""
        self._halt = threading.Event()
        self._credit: dict[str, float] = {}
        self._mirror_credit: dict[str, float] = {}
        self._copier = ThreadPoolExecutor(max_workers=4, thread_name_prefix="mirror-copy")
        self._mirrored_lock = threading.Lock()
        self._copies_pending = 0
        self.copies_dropped = 0
        """Copies never sent: too many already waiting, or their target no longer mirrored when their turn came."""

    def sibling(self, kind: str) -> Path:
        """The stand-in's `kind` file (routes, mirror) for the object whose split this generator follows."""
        return self.split_file.with_name(self.split_file.name.replace("split-", f"{kind}-", 1))

    def published(self) -> tuple[list[dict], list[dict]]:
        """The split and mirror targets requests follow now (raises OSError or ValueError while unpublished)."""
        if self.headers:
            rule = route_for(json.loads(self.sibling("routes").read_text()), "/", self.headers)
            return (rule["split"], rule["mirror"]) if rule else ([], [])
        split = json.loads(self.split_file.read_text())
        try:
            mirror = json.loads(self.sibling("mirror").read_text())
        except FileNotFoundError:  # written just after the split file
            mirror = []
        return split, mirror

    def refresh(self) -> None:
        try:
            self.split, self.mirror = self.published()
        except (OSError, ValueError):
            return
        self.unit_versions.update({t["unit"]: t.get("version", "") for t in self.split + self.mirror})
        for seen, targets in ((self.splits_seen, self.split), (self.mirrors_seen, self.mirror)):
            percents = {t["unit"]: t["percent"] for t in targets}
            if not seen or seen[-1][1] != percents:
                seen.append((time.time(), percents))
        if len(self.sent_by_split) < len(self.splits_seen):
            self.sent_by_split.append(collections.Counter())
        self._routing = (self.split, self.sent_by_split[-1])

    def pick(self) -> dict | None:
        """The next request's unit, from the split last seen (whose tally the following `request` counts in)."""
        split, self._tally = self._routing
        if not split:
            return None
        total = sum(t["percent"] for t in split)
        for t in split:
            self._credit[t["unit"]] = self._credit.get(t["unit"], 0) + t["percent"]
        chosen = max(split, key=lambda t: self._credit[t["unit"]])
        self._credit[chosen["unit"]] -= total
        return chosen

    def copies_due(self) -> list[dict]:
        """The mirror targets the current request is copied to: each target's credit grows by its percent per
        request, and a copy is due whenever it reaches 100, so after n requests floor(n * percent / 100) were."""
        due = []
        for t in self.mirror:
            credit = self._mirror_credit.get(t["unit"], 0) + t["percent"]
            if credit >= 100 - 1e-9:  # a fractional percent such as 100/3 sums to 99.999...
                credit -= 100
                due.append(t)
            self._mirror_credit[t["unit"]] = credit
        return due

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
                self.request(target)
            next_send += self.period
            self._halt.wait(max(0.0, next_send - time.monotonic()))

    def request(self, target: dict) -> None:
        """One user request to `target`, then its copies to the mirror targets due."""
        exchange = self.send(target)
        self.results[(target["unit"], exchange.code)] += 1
        self._tally[(target["unit"], exchange.code)] += 1
        if exchange.code == 0:
            self.lost.append((time.time(), target["unit"], target["url"]))
        served = predictions_of(exchange.code, exchange.answer)
        copy_headers = self.headers if served is None else {**self.headers, SHADOW_HEADER: json.dumps(served)}
        for mirror in self.copies_due():
            with self._mirrored_lock:
                if self._copies_pending >= MAX_COPIES_PENDING:
                    self.copies_dropped += 1
                    continue
                self._copies_pending += 1
            self._copier.submit(self.copy, mirror, exchange.body, copy_headers)

    def copy(self, target: dict, body: bytes, headers: dict[str, str]) -> None:
        """A mirrored copy: its answer is discarded, only its status counted. Like a data plane's mirror it is
        fire-and-forget: one whose target is no longer mirrored by the time its turn comes is dropped."""
        try:
            if not any(t["unit"] == target["unit"] for t in self.mirror):
                with self._mirrored_lock:
                    self.copies_dropped += 1
                return
            code = self.post(target["url"], body, headers)[0]
            with self._mirrored_lock:
                self.mirrored[(target["unit"], code)] += 1
        finally:
            with self._mirrored_lock:
                self._copies_pending -= 1

    def send(self, target: dict) -> Exchange:
        """One inference request to the chosen unit."""
        return Exchange(self.body, *self.post(target["url"], self.body, self.headers))

    @staticmethod
    def post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        request = urllib.request.Request(f"{url}/v1/models/model:predict", data=body,
                                         headers={"Content-Type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                code, answer = response.status, response.read()
        except urllib.error.HTTPError as e:
            code, answer = e.code, b""
        except OSError:
            code, answer = 0, b""  # connection failed: a request lost
        return code, answer

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
        """Stop sending; returns once the copies already due are sent, so `mirrored` is complete."""
        self._halt.set()
        if self.ident is not None:
            self.join(5)
        self._copier.shutdown(wait=True)

