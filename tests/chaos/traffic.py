"""What the chaos tier watches: the traffic the KServe stand-in routes, sampled every 100 ms.

The KServe stand-in computes one split per InferenceService from its spec (storageUri makes a
revision, canaryTrafficPercent splits the latest and the last rolled-out revision) and the
readiness of its revisions, then (1) publishes it to the split file the load generator
follows, which is the data plane, and (2) reports it in `status.components.predictor.traffic`
(revision names and percents), as KServe does. The spec is only what was asked for: a
rollback first writes stable's artifact at 0 % and traffic moves when that revision exists.
So the watcher reads both stand-in outputs, maps revisions to versions (the split file names
each unit's version; the spec's storageUri names the latest revision's), and judges the
traffic by them. The spec is sampled too, for the record.

A violation is a rolled-back candidate regaining traffic: once the ModelDeployment's status
showed `RolledBack` with that candidate as `failedVersion`, and one sample of a source had it
at 0 %, any later sample of that source giving it more than 0 % fails the test (checked by
the test thread every time it polls, so at most ~100 ms after the sample). So is an overshoot:
a version routed more traffic than any status so far allowed it (the highest `canaryWeight`
it had as candidate; 100 % once it was `stableVersion`). Each sample reads the ModelDeployment
last, after both splits, and the operator writes status before the backend, so a sample's
status is never older than a split it caused.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import kubernetes

from playground.prometheus import Prometheus

GROUP, VERSION = "modelops.io", "v1alpha1"
KSERVE = ("serving.kserve.io", "v1beta1", "inferenceservices")
SOURCES = ("routed", "reported")  # the split file (data plane) and status.components.predictor.traffic


def version_of_uri(uri: str | None) -> str | None:
    """Scenario.version stores version V of a model at s3://models/NAME/NAMESPACE/V."""
    return uri.rstrip("/").rsplit("/", 1)[-1] if uri else None


@dataclass
class Sample:
    t: float  # wall clock (time.time()), comparable with Prometheus sample timestamps
    routed: dict[str, int]  # version -> percent, as the data plane routes it (the split file)
    reported: dict[str, int] | None  # version -> percent, status.components.predictor.traffic; None: unread
    status: dict[str, Any] | None  # the ModelDeployment's status; None: the API server could not be read
    spec_version: str | None = None  # InferenceService spec.predictor.model.storageUri's version
    spec_percent: Any = None  # spec.predictor.canaryTrafficPercent ("unset" when absent)


@dataclass
class Track:
    """One ModelDeployment (and its InferenceService of the same name)."""

    namespace: str
    name: str
    split_file: Path
    samples: list[Sample] = field(default_factory=list)
    units: dict[str, str] = field(default_factory=dict)  # revision (unit) name -> version
    rolled_back: dict[str, float] = field(default_factory=dict)  # version -> first sample showing RolledBack
    zeroed: dict[tuple[str, str], float] = field(default_factory=dict)  # (version, source) -> first 0 % after it
    violations: list[str] = field(default_factory=list)
    api_errors: int = 0
    last_error: tuple[float, str] | None = None
    quiet_until: float = 0.0
    allowed: dict[str, int] = field(default_factory=dict)  # version -> the most traffic a status allowed it

    @property
    def latest(self) -> Sample | None:
        return self.samples[-1] if self.samples else None

    def routed_on(self, version: str) -> bool:
        """Whether the last sample routes everything to `version`."""
        return bool(self.samples) and _only(self.samples[-1].routed, version)

    def status(self) -> dict[str, Any]:
        """The last status read (from the last sample that could read it)."""
        for sample in reversed(self.samples):
            if sample.status is not None:
                return sample.status
        return {}


class TrafficWatcher(threading.Thread):
    def __init__(self, kubeconfig: Path, period: float = 0.1):
        super().__init__(daemon=True, name="traffic-watcher")
        # No retries and short timeouts: while the API server is away (or starting, accepting connections it
        # does not answer yet) a read costs at most one timeout, and the split file is still sampled.
        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(str(kubeconfig), client_configuration=configuration)
        configuration.retries = 0
        self.api = kubernetes.client.CustomObjectsApi(kubernetes.client.ApiClient(configuration))
        self.period = period
        self.tracks: dict[tuple[str, str], Track] = {}
        self._halt = threading.Event()
        self._lock = threading.Lock()
        self.ticks = 0
        self.late_ticks = 0  # rounds of sampling that took longer than the period

    # --- the test side -------------------------------------------------------------------

    def track(self, namespace: str, name: str, split_file: Path) -> Track:
        with self._lock:
            return self.tracks.setdefault((namespace, name), Track(namespace, name, split_file))

    def check(self) -> None:
        """Fail now if any sample so far broke a rule."""
        for track in list(self.tracks.values()):
            if track.violations:
                raise AssertionError(f"{track.namespace}/{track.name}: {track.violations[0]}")

    def wait(self, track: Track, predicate: Callable[[dict[str, Any]], bool], timeout: float, what: str,
             also: Callable[[], None] = lambda: None) -> dict[str, Any]:
        """Poll the sampled status (no kubectl) until `predicate`; checks violations every 50 ms."""
        deadline = time.monotonic() + timeout
        while True:
            self.check()
            also()
            status = track.status()
            if status and predicate(status):
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"{track.namespace}/{track.name}: {what}: not within {timeout}s; status is "
                                     f"{json.dumps(status, indent=1)[:3000]}\nlast split: "
                                     f"{track.latest.routed if track.latest else None}")
            time.sleep(0.05)

    def all_on(self, track: Track, version: str, after: float, timeout: float = 30,
               sources: tuple[str, ...] = ("routed",)) -> float:
        """When the sampled traffic first put 100 % on `version` (at or after wall time `after`)."""
        deadline = time.monotonic() + timeout
        while True:
            self.check()
            for sample in list(track.samples):
                if sample.t >= after and all(_only(getattr(sample, s), version) for s in sources):
                    return sample.t
            if time.monotonic() > deadline:
                seen = [(round(s.t - after, 2), s.routed) for s in track.samples if s.t >= after][-10:]
                raise AssertionError(f"{track.namespace}/{track.name}: no sample with 100 % on {version} within "
                                     f"{timeout}s after {after}: last samples {seen}")
            time.sleep(0.05)

    def revisions_of(self, track: Track, version: str) -> list[str]:
        return sorted(unit for unit, v in track.units.items() if v == version)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)

    # --- the sampling thread -------------------------------------------------------------------

    def run(self) -> None:
        next_tick = time.monotonic()
        while not self._halt.is_set():
            for track in list(self.tracks.values()):
                try:
                    self._sample(track)
                except Exception as e:  # noqa: BLE001 - a sampling bug must show, not kill the thread
                    track.violations.append(f"watcher error: {type(e).__name__}: {e}")
            self.ticks += 1
            next_tick += self.period
            delay = next_tick - time.monotonic()
            if delay < 0:
                self.late_ticks += 1
                next_tick = time.monotonic()
            self._halt.wait(max(0.0, delay))

    def _get(self, track: Track, kind: tuple[str, str, str]) -> dict[str, Any] | None:
        if time.monotonic() < track.quiet_until:
            return None
        try:
            return self.api.get_namespaced_custom_object(*kind[:2], track.namespace, kind[2], track.name,
                                                         _request_timeout=(0.3, 0.7))
        except Exception as e:  # noqa: BLE001 - API server down, object not there yet: this sample has no status
            track.api_errors += 1
            track.last_error = (time.time(), f"{type(e).__name__}: {str(e)[:200]}")
            track.quiet_until = time.monotonic() + 0.5  # the next samples read the split file only
            return None

    def _sample(self, track: Track) -> None:
        t = time.time()
        routed: dict[str, int] = {}
        try:
            entries = json.loads(track.split_file.read_text())
        except (OSError, ValueError):
            entries = None
        for entry in entries or []:
            track.units[entry["unit"]] = entry.get("version", "")
            routed[entry.get("version", "?")] = routed.get(entry.get("version", "?"), 0) + entry["percent"]
        isvc = self._get(track, KSERVE)
        mdep = self._get(track, (GROUP, VERSION, "modeldeployments"))  # last: never older than a split it caused
        reported = spec_version = spec_percent = None
        if isvc is not None:
            predictor = (isvc.get("spec") or {}).get("predictor") or {}
            spec_version = version_of_uri((predictor.get("model") or {}).get("storageUri"))
            spec_percent = predictor.get("canaryTrafficPercent", "unset")
            status = isvc.get("status") or {}
            components = ((status.get("components") or {}).get("predictor")) or {}
            current = status.get("observedGeneration") == (isvc.get("metadata") or {}).get("generation")
            reported = {}
            for entry in components.get("traffic") or []:
                revision, percent = entry.get("revisionName"), entry.get("percent") or 0
                version = track.units.get(revision)
                if version is None and current and revision == components.get("latestCreatedRevision"):
                    version = spec_version  # the revision of the spec's current artifact
                reported[version or "?"] = reported.get(version or "?", 0) + percent
        status = None if mdep is None else {k: v for k, v in (mdep.get("status") or {}).items() if k != "kopf"}
        sample = Sample(t, routed if entries is not None else {}, reported, status, spec_version, spec_percent)
        if entries is None and track.samples:
            sample.routed = track.samples[-1].routed  # the file is replaced atomically; unreadable means absent
        self._judge(track, sample)
        track.samples.append(sample)

    @staticmethod
    def _judge(track: Track, sample: Sample) -> None:
        status = sample.status
        if status is not None:
            for version, allowed in ((status.get("stableVersion"), 100),
                                     (status.get("canaryVersion"), status.get("canaryWeight") or 0)):
                if version:
                    track.allowed[version] = max(track.allowed.get(version, 0), allowed)
            for source in SOURCES:
                for version, share in (getattr(sample, source) or {}).items():
                    if version != "?" and share > track.allowed.get(version, 0):
                        track.violations.append(
                            f"overshoot: {version} has {share} % in the {source} split at {sample.t:.2f}, no status "
                            f"ever allowed it more than {track.allowed.get(version, 0)} %: status {status}")
            failed = status.get("failedVersion")
            if status.get("phase") == "RolledBack" and failed and failed not in track.rolled_back:
                track.rolled_back[failed] = sample.t
            canary = status.get("canaryVersion")
            if canary in track.rolled_back:  # rolled out again (a Retry, or spec.version back on it): fair game
                del track.rolled_back[canary]
                for source in SOURCES:
                    track.zeroed.pop((canary, source), None)
        for version, since in track.rolled_back.items():
            for source in SOURCES:
                split = getattr(sample, source)
                if split is None:
                    continue
                share = split.get(version, 0)
                zeroed = track.zeroed.get((version, source))
                if zeroed is None:
                    if share == 0:
                        track.zeroed[(version, source)] = sample.t
                elif share > 0:
                    track.violations.append(
                        f"rolled-back candidate regained traffic: {version} has {share} % in the {source} split at "
                        f"{sample.t:.2f}, "
                        f"{sample.t - zeroed:.2f} s after it was at 0 % ({sample.t - since:.2f} s after "
                        f"the status showed RolledBack): {source} split {split}, status {sample.status}")


def _only(split: dict[str, int] | None, version: str) -> bool:
    return bool(split) and split.get(version, 0) == 100 and all(p == 0 for v, p in split.items() if v != version)


def breach_visible(prometheus: Prometheus, namespace: str, revisions: list[str], not_before: float = 0.0) -> float:
    """When Prometheus first scraped a failed request of one of `revisions` (a raw sample's timestamp)."""
    selector = (f'kn_serving_invocation_duration_seconds_count{{k8s_namespace_name="{namespace}", '
                f'kn_revision_name=~"{"|".join(revisions)}", http_response_status_code="500"}}')
    deadline = time.monotonic() + 10
    while True:
        times = [float(t) for r in prometheus.query(f"{selector}[10m]") for t, v in r["values"]
                 if float(v) > 0 and float(t) >= not_before]
        if times:
            return min(times)
        if time.monotonic() > deadline:
            raise AssertionError(f"no failed request of {revisions} in Prometheus")
        time.sleep(0.2)


class TransitionWatch(threading.Thread):
    """A watch on ModelDeployments: calls `on_transition(namespace, name, new history entries)` the
    moment a status write that adds history arrives, so that a kill can land right after it."""

    def __init__(self, kubeconfig: Path, namespaces: set[str], on_transition: Callable[[str, str, list], None]):
        super().__init__(daemon=True, name="transition-watch")
        client = kubernetes.config.new_client_from_config(str(kubeconfig))
        self.api = kubernetes.client.CustomObjectsApi(client)
        self.namespaces, self.on_transition = namespaces, on_transition
        self.lengths: dict[tuple[str, str], int] = {}
        self.transitions: list[tuple[float, str, str, dict]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            watch = kubernetes.watch.Watch()
            try:
                for event in watch.stream(self.api.list_cluster_custom_object, GROUP, VERSION, "modeldeployments",
                                          timeout_seconds=5, _request_timeout=10):
                    self._event(event["object"])
                    if self._halt.is_set():
                        break
            except Exception:  # noqa: BLE001 - API server away: watch again
                self._halt.wait(0.2)
            finally:
                watch.stop()

    def _event(self, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        if meta.get("namespace") not in self.namespaces:
            return
        key = (meta["namespace"], meta["name"])
        history = (obj.get("status") or {}).get("history") or []
        known = self.lengths.get(key)
        self.lengths[key] = len(history)
        if known is not None and len(history) > known:
            new = history[known:]
            now = time.time()
            for entry in new:
                self.transitions.append((now, *key, entry))
            self.on_transition(*key, new)

    def stop(self) -> None:
        self._halt.set()
        self.join(10)
