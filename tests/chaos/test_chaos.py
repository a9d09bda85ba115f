"""The chaos tier: faults on the real control plane (etcd + kube-apiserver on loopback), a real
Prometheus, the operator as a process and the KServe stand-in, under graded traffic.

Every test runs a TrafficWatcher (traffic.py) that samples each InferenceService's traffic
every 100 ms and fails the test as soon as a rolled-back candidate regains traffic, or a
version is routed more traffic than the operator's status ever allowed it.

1. SIGKILL of the operator at 50 random points across rollouts, rollbacks and promotions.
2. kube-apiserver killed mid-rollout and restarted (etcd stays).
3. Prometheus killed mid-rollout and restarted; then replaced by a listener that never answers.
4. Isolation: four deployments whose Prometheus never answers, one bad candidate on the real one.

Figures are printed in the terminal summary (conftest.FIGURES). CHAOS_SEED=N replays the random
choices (kill modes and delays, the outage length); the timing around them is the machine's.
"""

from __future__ import annotations

import collections
import json
import os
import random
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from playground.controlplane import ControlPlane
from playground.loadgen import LoadGenerator
from playground.processes import Process, SilentListener
from ..integration.scenario import DIGEST, Scenario, fast_spec
from ..integration.scenario import check_history as rollout_history
from .conftest import figure
from .traffic import Track, TrafficWatcher, TransitionWatch, breach_visible, version_of_uri

pytestmark = pytest.mark.integration

GOOD = {"error_rate": 0.0, "accuracy": 0.95}
BAD = {"error_rate": 0.3, "accuracy": 0.95}
ERRORS = {"name": "errors", "template": "errorRate", "max": 0.05, "minSamples": 5}
RPS = 40
SCRAPE_SECONDS = 1.0  # the session Prometheus' scrape interval
KILL_RPS = 25  # per deployment in the SIGKILL test: three of them, and the operator's restarts want the CPU
SEED = int(os.environ.get("CHAOS_SEED", random.randrange(2**31)))  # every random choice of the tier derives from it


def merged(base: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    out = json.loads(json.dumps(base))
    for key, value in overrides.items():
        out[key] = {**out[key], **value} if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def chaos_spec(prometheus_url: str, steps: list[tuple[int, str]], **overrides: Any) -> dict[str, Any]:
    """fast_spec (1 s analyses), the error-rate check alone, a 3 s window, a history long enough to keep
    every entry of every rollout of a test."""
    spec = fast_spec(prometheus_url, strategy={"steps": [{"weight": w, "pause": p} for w, p in steps]},
                     analysis={"window": "3s", "checks": [ERRORS]})
    spec["historyLimit"] = 200
    return merged(spec, **overrides)


# --- lanes: one ModelDeployment each, in a namespace of its own ------------------------------------


class Lane:
    def __init__(self, control_plane: ControlPlane, namespace: str, kserve, watcher: TrafficWatcher,
                 name: str = "fraud"):
        self.scenario = Scenario(control_plane, namespace, kserve, name)
        self.ns, self.name, self.cp, self.standin = namespace, name, control_plane, kserve
        self.track: Track = watcher.track(namespace, name, kserve.split_file(namespace, name))

    def versions(self, behaviours: dict[str, dict[str, Any]]) -> None:
        """Declare every version at once: behaviours with the stand-in, ModelVersions in one apply."""
        items = []
        for version, behaviour in behaviours.items():
            uri = f"s3://models/{self.name}/{self.ns}/{version}"
            if "command" in behaviour:
                self.standin.model_server(uri, self.name, version, behaviour["command"])
            else:
                self.standin.artifact(uri, self.name, version, **behaviour)
            items.append({
                "apiVersion": "modelops.io/v1alpha1", "kind": "ModelVersion",
                "metadata": {"name": f"{self.name}-{version.replace('.', '-')}", "namespace": self.ns},
                "spec": {"model": self.name, "version": version,
                         "artifact": {"uri": uri, "digest": DIGEST, "format": "sklearn"}}})
        self.cp.apply({"apiVersion": "v1", "kind": "List", "items": items})


def namespaces(control_plane: ControlPlane, base: str, count: int) -> list[str]:
    names = [base] + [f"{base}-{i}" for i in range(1, count)]
    control_plane.apply({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}} for n in names[1:]]})
    return names


def serve_all(lanes: list[Lane], watcher: TrafficWatcher, prometheus, spec: dict[str, Any], rps: float = RPS) -> None:
    """Every lane's ModelDeployment on 1.0.0, serving under load, with its rates in Prometheus."""
    for lane in lanes:
        lane.scenario.deploy("1.0.0", spec)
    for lane in lanes:
        watcher.wait(lane.track, lambda st: st.get("phase") == "Stable" and st.get("stableVersion") == "1.0.0", 30,
                     "1.0.0 serving")
        lane.scenario.load = LoadGenerator(lane.standin.split_file(lane.ns, lane.name), rps)
        lane.scenario.load.start()
    for lane in lanes:
        prometheus.wait_for(f'rate(kn_serving_invocation_duration_seconds_count{{k8s_namespace_name="{lane.ns}"}}[5s]) > 0')


def check_history(lane: Lane, version: str, outcome: str, steps: list[int], status: dict | None = None) -> None:
    """The rollout of `version` is in history once: started once, each step once and in order, one outcome."""
    history = (status or lane.track.status()).get("history", [])
    rollout_history(history, version, outcome, steps, f"{lane.ns}/{lane.name}")


@pytest.fixture
def watcher(control_plane):
    w = TrafficWatcher(control_plane.kubeconfig)
    w.start()
    yield w
    w.stop()
    late = w.late_ticks / max(1, w.ticks)
    print(f"\nwatcher: {w.ticks} rounds of samples, {late:.0%} of them late")


@pytest.fixture
def lanes_to_stop():
    lanes: list[Lane] = []
    yield lanes
    for lane in lanes:
        lane.scenario.stop_load()


def ensure_running(operator) -> None:
    if operator.process is None or not operator.process.alive():
        operator.start()


# --- 1. SIGKILL of the operator at random points ---------------------------------------------------------


def backend_behind(status: dict[str, Any], isvc: dict[str, Any] | None) -> str | None:
    """How the InferenceService differs from the traffic intent the status stands for (None: it does not):
    the operator wrote its decision and died before writing the backend."""
    if isvc is None or not status.get("stableVersion"):
        return None
    predictor = (isvc.get("spec") or {}).get("predictor") or {}
    artifact, percent = version_of_uri((predictor.get("model") or {}).get("storageUri")), predictor.get("canaryTrafficPercent")
    candidate, weight = status.get("canaryVersion"), status.get("canaryWeight") or 0
    if candidate and (artifact != candidate or (percent or 0) != weight):
        return f"status says {candidate} at {weight} %, the InferenceService has {artifact} at {percent}"
    if not candidate and (artifact != status["stableVersion"] or percent not in (None, 0)):
        return f"status says all on {status['stableVersion']}, the InferenceService has {artifact} at {percent}"
    return None


def point_of(status: dict[str, Any], routed: dict[str, int]) -> str:
    """Where in its life a deployment was when the operator died."""
    phase, candidate, weight = status.get("phase"), status.get("canaryVersion"), status.get("canaryWeight") or 0
    if candidate:
        if status.get("waitingSince") or weight == 0:
            return "rollout: candidate not ready yet"
        return f"rollout: canary at {weight} %"
    settled = routed.get(status.get("stableVersion"), 0) == 100
    if phase == "RolledBack":
        return "rolled back" + ("" if settled else ": traffic still moving to stable")
    return "stable" + ("" if settled else ": traffic still moving (promotion)")


class Killer(threading.Thread):
    """Kills the operator (SIGKILL) `target` times and restarts it at once. Each kill is either at a
    uniform 0..max_delay s after the restart before it, or (one in `on_write` of them) the moment a
    status write that adds history arrives, which is where the write-ahead loop has persisted a
    decision and is about to write the backend."""

    def __init__(self, operator, rng: random.Random, watcher: TrafficWatcher, lanes: list[Lane], target: int,
                 max_delay: float = 3.0, on_write: float = 0.3):
        super().__init__(daemon=True, name="killer")
        self.operator, self.rng, self.watcher, self.lanes = operator, rng, watcher, lanes
        self.target, self.max_delay, self.on_write = target, max_delay, on_write
        self.kills: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        self.halt = threading.Event()
        self._lock = threading.Lock()
        self._armed = False
        self._fired = threading.Event()
        self._fired_by: tuple | None = None

    def on_transition(self, namespace: str, name: str, entries: list) -> None:
        """From the watch thread: a status write that added history just arrived."""
        with self._lock:
            if self._armed and not self._fired.is_set():
                self.operator.kill()
                self._armed = False
                self._fired_by = (namespace, [(e["action"], e["version"]) for e in entries])
                self._fired.set()

    def run(self) -> None:
        try:
            while len(self.kills) < self.target and not self.halt.is_set():
                life_started = time.monotonic()
                if self.rng.random() < self.on_write:
                    with self._lock:
                        self._fired.clear()
                        self._armed = True
                    fired = self._fired.wait(8)
                    with self._lock:
                        self._armed = False
                        fired = fired or self._fired.is_set()
                        if not fired:
                            self.operator.kill()
                    mode = "on a status write" if fired else "timer (no status write within 8 s)"
                else:
                    delay = self.rng.uniform(0, self.max_delay)
                    if self.halt.wait(delay):
                        break
                    self.operator.kill()
                    mode = "timer"
                self._record(mode, time.monotonic() - life_started)
                restarting = time.monotonic()
                self.operator.start()
                self.kills[-1]["restart"] = time.monotonic() - restarting
        except BaseException as e:  # noqa: BLE001 - reported by the test thread
            self.error = e

    def _record(self, mode: str, uptime: float) -> None:
        behind, points = [], []
        for lane in self.lanes:
            try:
                mdep = self.watcher.api.get_namespaced_custom_object("modelops.io", "v1alpha1", lane.ns,
                                                                     "modeldeployments", lane.name)
                isvc = self.watcher.api.get_namespaced_custom_object("serving.kserve.io", "v1beta1", lane.ns,
                                                                     "inferenceservices", lane.name)
            except Exception:  # noqa: BLE001
                continue
            status = mdep.get("status") or {}
            gap = backend_behind(status, isvc)
            if gap:
                behind.append(f"{lane.ns}: {gap}")
            latest = lane.track.latest
            points.append(point_of(status, latest.routed if latest else {}))
        self.kills.append({"at": time.time(), "mode": mode, "uptime": uptime, "behind": behind, "points": points,
                           "by": self._fired_by if mode == "on a status write" else None})

    def stop(self) -> None:
        self.halt.set()
        with self._lock:
            self._armed = False
        self.join(60)


def test_operator_sigkilled_at_50_random_points(control_plane, namespace, kserve, operator, prometheus, watcher,
                                               lanes_to_stop):
    rng = random.Random(SEED)
    figure("chaos seed (CHAOS_SEED to replay)", str(SEED))
    target_kills, budget = 50, 240.0
    steps = [20, 50]
    spec = chaos_spec(prometheus.url, [(20, "1s"), (50, "1s")])
    lanes = [Lane(control_plane, ns, kserve, watcher) for ns in namespaces(control_plane, namespace, 3)]
    lanes_to_stop.extend(lanes)
    plans: dict[str, collections.deque] = {}
    for i, lane in enumerate(lanes):
        # Alternating bad and good candidates, each a version of its own; lanes start on different feet.
        kinds = ["bad", "good"] * 15 if i % 2 == 0 else ["good", "bad"] * 15
        plan = [(f"1.{n + 1}.0", kind) for n, kind in enumerate(kinds)]
        lane.versions({"1.0.0": GOOD, **{v: BAD if kind == "bad" else GOOD for v, kind in plan}})
        plans[lane.ns] = collections.deque(plan)
    serve_all(lanes, watcher, prometheus, spec, rps=KILL_RPS)

    killer = Killer(operator, rng, watcher, lanes, target_kills)
    transitions = TransitionWatch(control_plane.kubeconfig, {lane.ns for lane in lanes}, killer.on_transition)
    transitions.start()
    current: dict[str, dict[str, Any] | None] = {lane.ns: None for lane in lanes}
    stable = {lane.ns: "1.0.0" for lane in lanes}
    done: list[dict[str, Any]] = []
    started = time.monotonic()
    killing_since = None
    try:
        while True:
            watcher.check()
            if killer.error is not None:
                raise killer.error
            assert time.monotonic() - started < budget, (
                f"{len(killer.kills)} kills and {len(done)} rollouts in {budget:.0f}s: too slow; "
                f"in flight: {current}")
            if killing_since is None and len(done) == len(lanes):
                # Each lane's first rollout ran without faults: the baseline. Now the kills.
                killer.start()
                killing_since = time.monotonic()
            for lane in lanes:
                rollout = current[lane.ns]
                if rollout is None:
                    if killing_since is None and any(r["ns"] == lane.ns for r in done):
                        continue
                    if len(killer.kills) >= target_kills and {r["kind"] for r in done if r["ns"] == lane.ns} >= {"bad", "good"}:
                        continue
                    assert plans[lane.ns], (f"{lane.ns}: every planned rollout done and only {len(killer.kills)} "
                                            f"kills: {killer.kills}")
                    version, kind = plans[lane.ns].popleft()
                    lane.scenario.patch({"version": version})
                    current[lane.ns] = {"ns": lane.ns, "version": version, "kind": kind, "stable": stable[lane.ns],
                                        "started": time.time(), "kills": len(killer.kills), "settled": None,
                                        "faults": killing_since is not None}
                    continue
                status, version = lane.track.status(), rollout["version"]
                if rollout["settled"] is None:
                    if rollout["kind"] == "bad":
                        assert not (status.get("phase") == "Stable" and status.get("stableVersion") == version), (
                            f"{lane.ns}: bad candidate {version} promoted: {status.get('history')}")
                        if status.get("phase") == "RolledBack" and status.get("failedVersion") == version:
                            assert status.get("stableVersion") == rollout["stable"], status
                            check_history(lane, version, "RolledBack", steps)
                            rollout["settled"] = time.time()
                    else:
                        assert not (status.get("phase") == "RolledBack" and status.get("failedVersion") == version), (
                            f"{lane.ns}: good candidate {version} rolled back: {status.get('history')}")
                        if status.get("phase") == "Stable" and status.get("stableVersion") == version:
                            check_history(lane, version, "Promoted", steps)
                            rollout["settled"] = time.time()
                            stable[lane.ns] = version
                    assert time.time() - rollout["started"] < 90, f"{lane.ns}: rollout {rollout} not over in 90 s"
                    continue
                expected = stable[lane.ns]
                on_stable = [s.t for s in list(lane.track.samples)
                             if s.t >= rollout["settled"] - 1 and s.routed == {expected: 100}]
                if not on_stable:
                    assert time.time() - rollout["settled"] < 30, f"{lane.ns}: traffic never all on {expected}"
                    continue
                rollout["all_on_stable"] = on_stable[0]
                if on_stable[0] - rollout["settled"] > 3:  # the traffic lagged the status: show how
                    print(f"\n{lane.ns} {version}: traffic all on {expected} {on_stable[0] - rollout['settled']:.1f} s "
                          f"after the status; samples meanwhile (t, routed, reported, spec):")
                    shown = None
                    for s in list(lane.track.samples):
                        row = (s.routed, s.reported, s.spec_version, s.spec_percent)
                        if rollout["settled"] - 1 <= s.t <= on_stable[0] and row != shown:
                            print(f"  {s.t - rollout['settled']:6.2f} {row}")
                            shown = row
                rollout["kills"] = len(killer.kills) - rollout["kills"]
                if rollout["kind"] == "bad":
                    breach = breach_visible(prometheus, lane.ns, watcher.revisions_of(lane.track, version),
                                            not_before=rollout["started"])
                    rollout["breach_to_stable"] = watcher.all_on(lane.track, expected, after=breach) - breach
                done.append(rollout)
                current[lane.ns] = None
            if len(killer.kills) >= target_kills and all(r is None for r in current.values()):
                break
            time.sleep(0.05)
    finally:
        killer.stop()
        transitions.stop()
        ensure_running(operator)
    elapsed = time.monotonic() - (killing_since or started)

    kills = killer.kills
    on_write = [k for k in kills if k["mode"] == "on a status write"]
    behind = [k for k in kills if k["behind"]]
    points = collections.Counter(p for k in kills for p in k["points"])
    bad = [r for r in done if r["kind"] == "bad" and r["faults"]]
    good = [r for r in done if r["kind"] == "good" and r["faults"]]
    breaches = sorted(r["breach_to_stable"] for r in bad)
    quiet = sorted(r["breach_to_stable"] for r in done if r["kind"] == "bad" and not r["faults"])
    lost = sum(len(lane.scenario.load.lost) for lane in lanes)
    sent = sum(sum(lane.scenario.load.results.values()) for lane in lanes)
    assert bad and good, done
    finals = {lane.ns: lane.scenario.status() for lane in lanes}
    for rollout in done:  # once more on the final status: nothing was recorded twice after the checks either
        lane = next(lane for lane in lanes if lane.ns == rollout["ns"])
        check_history(lane, rollout["version"], "RolledBack" if rollout["kind"] == "bad" else "Promoted", steps,
                      finals[lane.ns])
    print(f"\nkills: {json.dumps(kills, indent=1, default=str)[:20000]}")
    print(f"rollouts: {json.dumps(done, indent=1, default=str)}")
    restarts = [k["restart"] for k in kills if "restart" in k]
    figure("operator SIGKILLs (restarted at once)",
           f"{len(kills)} in {elapsed:.0f} s over {len(done)} rollouts in {len(lanes)} namespaces "
           f"({len(bad)} rolled back, {len(good)} promoted); {len(on_write)} the moment a status write arrived, "
           f"the rest uniform 0..3 s after the restart before; a restart (to /metrics up) took "
           f"{statistics.mean(restarts):.2f} s on average")
    figure("kills between the status write and the backend write",
           f"{len(behind)} (the InferenceService still on the previous intent when the operator died)")
    figure("where the kills landed (per deployment)", ", ".join(f"{p}: {n}" for p, n in points.most_common()))
    figure("breach visible -> 100 % stable, bad from its first request (first 3 s analysis window included)",
           f"without faults {', '.join(f'{b:.2f} s' for b in quiet)}; under SIGKILLs median "
           f"{statistics.median(breaches):.2f} s, max {max(breaches):.2f} s over {len(breaches)} rollbacks")
    figure("requests without any answer during the SIGKILL run", f"{lost} of {sent}")
    assert len(kills) >= target_kills


# --- 2. kube-apiserver killed and restarted mid-rollout ------------------------------------------------


SYSCALLS_SLEEPING = {"35", "230"}  # x86_64 nanosleep, clock_nanosleep: time.sleep, not a socket wait


def freeze_between_rounds(process: Process, timeout: float = 10) -> None:
    """SIGSTOP the stand-in while it sleeps between two rounds, never in the middle of an API call.

    The stand-in's loop dies on the first connection refused (it catches only ApiException), which
    real KServe controllers, retrying, do not; frozen, it keeps its memory of revisions, its units
    keep serving and the data plane keeps the last split, as Knative's does while its control plane
    is away."""
    pid = process.proc.pid
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process.suspend()
        for _ in range(100):
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T":
                break
            time.sleep(0.001)
        syscall = Path(f"/proc/{pid}/syscall").read_text().split()[0]
        if syscall in SYSCALLS_SLEEPING:
            return
        process.resume()
        time.sleep(0.011)
    raise TimeoutError("the stand-in was never caught between two rounds")


def test_apiserver_killed_mid_rollout(control_plane, namespace, kserve, operator, prometheus, watcher, lanes_to_stop):
    ensure_running(operator)
    rng = random.Random(SEED + 2)
    steps = [20, 50]
    spec = chaos_spec(prometheus.url, [(20, "2s"), (50, "2s")], analysis={"window": "5s"})
    good, bad = (Lane(control_plane, ns, kserve, watcher) for ns in namespaces(control_plane, namespace, 2))
    lanes_to_stop.extend([good, bad])
    good.versions({"1.0.0": GOOD, "1.1.0": GOOD})
    bad.versions({"1.0.0": GOOD, "1.1.0": BAD})
    serve_all([good, bad], watcher, prometheus, spec)
    pid = operator.process.proc.pid
    for lane in (good, bad):
        lane.scenario.patch({"version": "1.1.0"})
    for lane in (good, bad):  # taking traffic: the stand-in routes 20 % to it
        watcher.wait(lane.track, lambda st: st.get("canaryWeight") == 20, 30, "1.1.0 at 20 %")
        deadline = time.monotonic() + 10
        while (lane.track.latest.routed or {}).get("1.1.0") != 20:
            assert time.monotonic() < deadline, f"1.1.0 never routed 20 %: {lane.track.latest}"
            time.sleep(0.05)
    before = {lane.ns: len(lane.track.status().get("history", [])) for lane in (good, bad)}

    # Short: kube-apiserver itself needs ~7 s to be ready again (the upstream CRDs' OpenAPI), and the
    # operator's leader election gives up the lease (exit 1, by design) after 10 s without a renewal.
    down = rng.uniform(0.0, 1.0)
    freeze_between_rounds(kserve.process)
    try:
        control_plane.kill_apiserver()
        killed = time.time()
        time.sleep(down)
        restart_seconds = control_plane.restart_apiserver()
    finally:
        kserve.process.resume()
    back = time.time()
    assert kserve.process.alive(), f"the KServe stand-in died:\n{kserve.process.tail()}"
    try:
        watcher.wait(bad.track, lambda st: st.get("phase") == "RolledBack" and st.get("failedVersion") == "1.1.0",
                     40, "bad 1.1.0 rolled back after the API server came back")
        rolled_back = watcher.all_on(bad.track, "1.0.0", after=back, timeout=20)
        watcher.wait(good.track, lambda st: st.get("phase") == "Stable" and st.get("stableVersion") == "1.1.0",
                     40, "good 1.1.0 promoted after the API server came back")
        promoted = watcher.all_on(good.track, "1.1.0", after=back, timeout=20)
    finally:
        survived = operator.process.alive() and operator.process.proc.pid == pid
        if not survived:
            exit_code, log = operator.process.proc.poll(), operator.process.tail(60)
            ensure_running(operator)
            raise AssertionError(f"the operator process exited ({exit_code}) during a kube-apiserver outage of "
                                 f"{back - killed:.1f} s:\n{log}")
    check_history(bad, "1.1.0", "RolledBack", steps)
    check_history(good, "1.1.0", "Promoted", steps)
    breach = breach_visible(prometheus, bad.ns, watcher.revisions_of(bad.track, "1.1.0"))
    breach_to_stable = watcher.all_on(bad.track, "1.0.0", after=breach) - breach
    blind = max(b.t - a.t for a, b in zip(bad.track.samples, bad.track.samples[1:]) if b.t > killed)
    # The first decision after the kill (the API server answers a little before its /readyz says so).
    first = min(_seconds(h["time"]) for lane in (good, bad) for h in lane.track.status()["history"][before[lane.ns]:])
    figure("kube-apiserver outage mid-rollout",
           f"{back - killed:.2f} s to /readyz (held down {down:.2f} s, restart {restart_seconds:.2f} s; the "
           f"watcher's longest gap between samples {blind:.2f} s; first decision {first - killed:.2f} s after the "
           f"kill); operator process "
           f"survived; after the API server was back: bad candidate at 0 % in "
           f"{rolled_back - back:.2f} s, good one promoted (100 %) in {promoted - back:.2f} s; the bad one's breach "
           f"visible -> 100 % stable {breach_to_stable:.2f} s (the breach came during the outage)")


def _seconds(rfc3339: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


ROUND_OVERHEAD = 0.25  # a round's own work besides the analysis: reads, the status write, the backend write


def analysis_timeline(track: Track, since: float) -> list[str]:
    """Every analysis the samples saw after `since`: when, outcome, counters and each check's verdict."""
    lines, seen = [], set()
    for sample in list(track.samples):
        st = sample.status or {}
        at = st.get("lastAnalysisAt")
        if sample.t < since or not at or at in seen:
            continue
        seen.add(at)
        checks = "; ".join(f"{c['name']} {c['verdict']} {c.get('value', '')} {c.get('message', '')[:60]}"
                           for c in st.get("checks", []))
        lines.append(f"  {_seconds(at) - since:6.2f} s  {st.get('lastOutcome')}  failures {st.get('consecutiveFailures')}"
                     f"  noData {st.get('consecutiveNoData')}  step {st.get('currentStep')}  {checks}")
    return lines


# --- 3. Prometheus killed, restarted, then hung ------------------------------------------------------


def test_prometheus_killed_then_hung_mid_rollout(control_plane, namespace, kserve, operator, prometheus, watcher,
                                                 lanes_to_stop):
    ensure_running(operator)
    steps = [20, 40, 60, 80]
    # A Prometheus restarted after a crash scrapes nothing for ~4-5 s (its scrape manager applies
    # discovered targets on a 5 s tick), and rates need two scrapes in the window: a 2 s crash costs
    # about 8 analyses without data. noDataLimit 12 rides that out; a hang, which never ends, does not.
    no_data_limit, failure_limit, interval = 12, 2, 1.0
    spec = chaos_spec(prometheus.url, [(w, "2s") for w in steps], analysis={"noDataLimit": no_data_limit})
    lane = Lane(control_plane, namespace, kserve, watcher)
    lanes_to_stop.append(lane)
    lane.versions({"1.0.0": GOOD, "1.1.0": GOOD})
    serve_all([lane], watcher, prometheus, spec)
    lane.scenario.patch({"version": "1.1.0"})
    watcher.wait(lane.track, lambda st: st.get("currentStep") == 1, 30, "1.1.0 at its second step")

    def no_progress_since(moment: float, grace: float = interval + 0.5):
        """No step and no promotion decided on an analysis that started after `moment`."""
        def check():
            moved = [h for h in lane.track.status().get("history", [])
                     if h["action"] in ("StepAdvanced", "Promoted") and _seconds(h["time"]) > moment + grace]
            assert not moved, f"advanced while Prometheus was broken: {moved}"
        return check

    # (a) Killed outright, down for 2 s, restarted on the same port with its data.
    history_before = len(lane.track.status()["history"])
    killed = time.time()
    try:
        prometheus.kill()
        lane_check = no_progress_since(killed)
        watcher.wait(lane.track, lambda st: st.get("consecutiveNoData", 0) >= 1 and any(
            c.get("verdict") == "Error" for c in st.get("checks", [])), 10, "analyses without Prometheus", lane_check)
        time.sleep(max(0.0, killed + 2.0 - time.time()))
        lane_check()
    finally:
        restart_seconds = prometheus.restart()
    restarted = time.time()
    status = lane.track.status()
    assert status.get("phase") == "Progressing", status
    assert len(status["history"]) == history_before, status["history"][history_before:]
    resumed = watcher.wait(lane.track, lambda st: st.get("currentStep", 0) >= 2, 30, "a step after the restart")
    no_data_peak = max(s.status.get("consecutiveNoData", 0) for s in lane.track.samples if s.status and s.t >= killed)
    step_after = next(_seconds(h["time"]) for h in resumed["history"][history_before:] if h["action"] == "StepAdvanced")

    # (b) A listener on Prometheus' port that accepts and never answers.
    silent = None
    try:
        silent = prometheus.hang()
        hung = time.time()
        hang_check = no_progress_since(hung)
        status = watcher.wait(lane.track, lambda st: st.get("phase") == "RolledBack", 40,
                              "rollback after noDataLimit analyses without an answer", hang_check)
        rolled_back = _seconds(next(h["time"] for h in reversed(status["history"]) if h["action"] == "RolledBack"))
        all_stable = watcher.all_on(lane.track, "1.0.0", after=hung, timeout=20)
        connections = len(silent.accepted)
    finally:
        prometheus.restart()
    assert prometheus.query("up"), "Prometheus is not answering after its restore"
    print("\nanalyses:\n" + "\n".join(analysis_timeline(lane.track, killed - 3)))
    # Each analysis lasts the query timeout (the spec's 2 s, capped at the interval) when nothing answers,
    # plus the round's own writes; the one in flight at the hang counts too.
    timeout_cap = min(2.0, max(1.0, interval))
    period = max(interval, timeout_cap) + ROUND_OVERHEAD
    bound = (no_data_limit + failure_limit) * period
    errors = [c for c in status["checks"] if c["verdict"] == "Error"]
    assert errors and all("timed out" in c["message"] or "no answer" in c["message"] for c in errors), status["checks"]
    assert "inconclusive" in status["history"][-1]["reason"], status["history"][-1]
    assert ("Promoted", "1.1.0") not in [(h["action"], h["version"]) for h in status["history"]]
    assert connections > 0
    figure("Prometheus SIGKILLed mid-rollout",
           f"down {restarted - killed:.2f} s (restart {restart_seconds:.2f} s), up to {no_data_peak} inconclusive "
           f"analyses in a row, no step while down; next step {step_after - restarted:.2f} s after the restart")
    figure("Prometheus hung (accepts, never answers) mid-rollout",
           f"rolled back {rolled_back - hung:.2f} s after the hang (bound (noDataLimit {no_data_limit} + failureLimit "
           f"{failure_limit}) analyses x ({max(interval, timeout_cap):g} s + {ROUND_OVERHEAD:g} s) = {bound:.1f} s), "
           f"100 % stable after "
           f"{all_stable - hung:.2f} s; never promoted; {connections} connections left hanging")
    assert rolled_back - hung <= bound


# --- 4. isolation: four deployments whose Prometheus never answers, one bad candidate --------------------


WRITE_TO_TRAFFIC_SECONDS = 1.0
"""The rollback's writes reaching the data plane: the stand-in's reconcile and split file, the load generator's re-read."""
NEIGHBOUR_INTERVAL = 10.0  # the operator caps an analysis (and each query) at its interval, at most 30 s
FLAKY = [sys.executable, "-m", "tests.chaos.flaky_model", "{port}"]


def breach_mid_step(lane: Lane, watcher: TrafficWatcher, prometheus, version: str, control: Path) -> dict[str, float]:
    """Roll out `version` (healthy so far), let an analysis pass at 20 %, then break it: seconds from the
    first scrape showing its failures to all traffic on stable."""
    lane.scenario.patch({"version": version})
    watcher.wait(lane.track, lambda st: st.get("canaryVersion") == version and st.get("canaryWeight") == 20
                 and st.get("lastOutcome") == "Passed", 30, f"{version} at 20 % with a passed analysis")
    broken = time.time()
    control.write_text("broken")
    watcher.wait(lane.track, lambda st: st.get("phase") == "RolledBack" and st.get("failedVersion") == version, 30,
                 f"{version} rolled back")
    breach = breach_visible(prometheus, lane.ns, watcher.revisions_of(lane.track, version), not_before=broken - 1)
    stable = watcher.all_on(lane.track, "1.0.0", after=breach)
    return {"breach_to_stable": stable - breach, "broken_to_breach": breach - broken}


def test_isolation_from_deployments_whose_prometheus_hangs(control_plane, namespace, kserve, operator, prometheus,
                                                          watcher, lanes_to_stop, tmp_path):
    ensure_running(operator)
    failure_limit, interval = 2, 1.0
    bound = failure_limit * interval + SCRAPE_SECONDS + WRITE_TO_TRAFFIC_SECONDS
    names = namespaces(control_plane, namespace, 5)
    fifth = Lane(control_plane, names[0], kserve, watcher)
    lanes_to_stop.append(fifth)
    controls = {v: tmp_path / f"broken-{v}" for v in ("1.1.0", "1.2.0")}
    fifth.versions({"1.0.0": GOOD, **{v: {"command": [*FLAKY, str(c)]} for v, c in controls.items()}})
    # A first step far longer than the test: the candidate stays at 20 % until its breach.
    spec = chaos_spec(prometheus.url, [(20, "5m"), (50, "5m")])
    serve_all([fifth], watcher, prometheus, spec)

    # Without faults first: the same breach, nothing else going on.
    quiet = breach_mid_step(fifth, watcher, prometheus, "1.1.0", controls["1.1.0"])

    silent = SilentListener()
    try:
        neighbours = [Lane(control_plane, ns, kserve, watcher) for ns in names[1:]]
        hung_spec = chaos_spec(silent.url, [(20, "5m"), (50, "5m")], analysis={
            "interval": f"{NEIGHBOUR_INTERVAL:g}s", "window": "1s", "noDataLimit": 100, "failureLimit": 2,
            "prometheus": {"address": silent.url, "timeout": "1h"},
            "checks": [{"name": f"check-{i}", "template": "errorRate", "max": 0.05} for i in range(8)]})
        for lane in neighbours:
            lane.versions({"1.0.0": GOOD, "1.1.0": GOOD})
            lane.scenario.deploy("1.0.0", hung_spec)
        for lane in neighbours:
            # Stable is written before its revision serves; a rollout started before it serves is
            # test_rollout_before_stable_serves (an operator bug).
            watcher.all_on(lane.track, "1.0.0", after=0, sources=("routed", "reported"))
            lane.scenario.patch({"version": "1.1.0"})
        deadline = time.monotonic() + 30
        while len(silent.accepted) < 4 * len(neighbours):  # each analysis holds 4 queries at a time
            assert time.monotonic() < deadline, f"only {len(silent.accepted)} connections to the silent Prometheus"
            time.sleep(0.1)
        hanging_since = time.time()
        isolated = breach_mid_step(fifth, watcher, prometheus, "1.2.0", controls["1.2.0"])
        connections = len(silent.accepted)
        # The spec's 1h timeout was capped: each neighbour's analysis gave up after the interval and
        # was counted as inconclusive, and a new one (hanging again) began.
        for lane in neighbours:
            st = watcher.wait(lane.track, lambda st: st.get("consecutiveNoData", 0) >= 1, 2 * NEIGHBOUR_INTERVAL + 5,
                              "a neighbour's analysis given up")
            assert st.get("phase") == "Progressing" and st.get("canaryWeight") == 20, st
            assert all(c["verdict"] == "Error" and f"{NEIGHBOUR_INTERVAL:g}s" in c["message"] for c in st["checks"]), st
        capped = time.time() - hanging_since
    finally:
        silent.close()
    figure("breach visible -> 100 % stable, candidate broken mid-step, no faults",
           f"{quiet['breach_to_stable']:.2f} s (bound failureLimit {failure_limit} x interval {interval:g} s "
           f"+ scrape {SCRAPE_SECONDS:g} s + write to traffic {WRITE_TO_TRAFFIC_SECONDS:g} s = {bound:g} s)")
    figure("isolation: the same with 4 deployments hung on a silent Prometheus (8 checks each, timeout 1h)",
           f"{isolated['breach_to_stable']:.2f} s (bound {bound:g} s; {connections} hung connections; their 1h "
           f"timeout capped at the {NEIGHBOUR_INTERVAL:g} s interval, seen {capped:.1f} s into the hang)")
    assert quiet["breach_to_stable"] <= bound
    assert isolated["breach_to_stable"] <= bound


# --- found by this tier: a rollout started before the stable version served gave the candidate everything ------


def test_rollout_before_stable_serves(control_plane, namespace, kserve, operator, prometheus, watcher, lanes_to_stop,
                                      tmp_path):
    """GitOps pushes 1.0.0 and, before its (slow to load) model is ready, 1.1.0 - a bad one. The candidate must
    never carry more traffic than the weight the operator's status gives it, and a rollback must take it off."""
    ensure_running(operator)
    lane = Lane(control_plane, namespace, kserve, watcher)
    lanes_to_stop.append(lane)
    lane.versions({"1.0.0": {"command": [*FLAKY, str(tmp_path / "never"), "6"]}, "1.1.0": BAD})
    lane.scenario.deploy("1.0.0", chaos_spec(prometheus.url, [(20, "1h"), (50, "1h")]))
    deadline = time.monotonic() + 30
    while lane.track.status().get("phase") != "Stable":  # the bootstrap: status says Stable at once
        if time.monotonic() > deadline:  # not an AssertionError: only the bug's assertion is the expected failure
            raise TimeoutError(f"1.0.0 never deployed: {lane.track.status()}")
        time.sleep(0.05)
    lane.scenario.patch({"version": "1.1.0"})
    lane.scenario.load = LoadGenerator(kserve.split_file(lane.ns, lane.name), RPS)
    lane.scenario.load.start()
    deadline = time.monotonic() + 40
    while not (lane.track.status().get("phase") == "RolledBack" and lane.track.routed_on("1.0.0")):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no rollback to a serving 1.0.0: {lane.track.status()}")
        time.sleep(0.05)
    samples = list(lane.track.samples)
    allowed, over, rolled_back = 0, [], None
    for s in samples:
        st = s.status or {}
        if st.get("canaryVersion") == "1.1.0":
            allowed = max(allowed, st.get("canaryWeight") or 0)
        if rolled_back is None and st.get("phase") == "RolledBack":
            rolled_back = s.t
        if s.routed.get("1.1.0", 0) > allowed and not (rolled_back and s.t >= rolled_back):
            over.append(s)
    # Write-ahead: status says RolledBack first, the backend follows with one write; from its first
    # sample at 0 % on, the candidate never has traffic again.
    assert rolled_back is not None
    cleared = next((s.t for s in samples if s.t >= rolled_back and s.routed.get("1.1.0", 0) == 0), None)
    again = [s for s in samples if cleared is not None and s.t > cleared and s.routed.get("1.1.0", 0) > 0]
    print(f"\n1.1.0 over its weight for {len(over) / 10:.1f} s; off {cleared - rolled_back if cleared else None:.2f} s "
          f"after the status said RolledBack")
    assert not over, f"1.1.0 routed more than its canary weight (at most {allowed} %): e.g. {over[0].routed}"
    assert cleared is not None and cleared - rolled_back <= 2.0 and not again
