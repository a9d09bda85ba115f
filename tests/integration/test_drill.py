"""A rollback drill on the real control plane with the operator process, on the KServe stand-in and real
Prometheus: 1.0.0 deployed, 1.1.0 rolled out (1.0.0 is the fallback), then `kubectl modelops drill`. The
InferenceService must really carry all traffic on 1.0.0 at some point and be back on 1.1.0 at the end, and
status.lastDrill must say Completed, with the time it took and the requests the drill lost, measured from the
backend's error-rate metrics: 1.0.0 answers 20 % of its requests with a 500 here, so the number is checked
against what the load generator itself saw fail on 1.0.0 during the drill."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from .scenario import Scenario, fast_spec

pytestmark = pytest.mark.integration

GOOD = {"error_rate": 0.0, "accuracy": 1.0}
FLAKY = {"error_rate": 0.2, "accuracy": 1.0}
"""Both versions answer every graded request right: this test is about the drill's traffic, and two versions of one
accuracy compared at a 5 % tolerance over a few seconds' samples can be told apart by chance."""
PLUGIN = Path(sys.executable).with_name("kubectl-modelops")
SPEC = {"analysis": {"interval": "5s"}}
"""A drill holds the fallback for one analysis interval: 5 s, long enough to be seen in the backend object, and for
Prometheus to scrape the drill's new revision several times (see the bounds on requests lost below)."""


@pytest.fixture
def scenario(control_plane, namespace, kserve, operator):
    s = Scenario(control_plane, namespace, kserve)
    yield s
    s.stop_load()


class Watcher(threading.Thread):
    """Reads the InferenceService over and over: every split of live traffic its status showed, by version."""

    def __init__(self, scenario: Scenario):
        super().__init__(daemon=True)
        self.s, self.halt, self.splits = scenario, threading.Event(), []

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                isvc = self.s.get("inferenceservice")
            except RuntimeError:  # the API server is going away with the session
                return
            annotations = isvc["metadata"].get("annotations") or {}
            revisions = json.loads(annotations.get("modelops.io/revision-versions") or "{}")
            traffic = (((isvc.get("status") or {}).get("components") or {}).get("predictor") or {}).get("traffic") or []
            split: dict[str, int] = {}
            for entry in traffic:
                version = revisions.get(entry.get("revisionName"), f"unknown:{entry.get('revisionName')}")
                split[version] = split.get(version, 0) + (entry.get("percent") or 0)
            if not self.splits or self.splits[-1] != split:
                self.splits.append(split)
            self.halt.wait(0.05)


def errors_on(load, version: str) -> int:
    return sum(n for (unit, code), n in load.results.items() if code >= 500 and load.unit_versions.get(unit) == version)


def test_drill_to_the_fallback_and_back_on_live_traffic(scenario, prometheus):
    s = scenario
    s.version("1.0.0", **FLAKY)
    s.version("1.1.0", **GOOD)
    s.serve("1.0.0", fast_spec(prometheus.url, **SPEC), prometheus)
    s.patch({"version": "1.1.0"})
    status = s.wait(lambda st: st.get("phase") == "Stable" and st.get("stableVersion") == "1.1.0", 60, "1.1.0 promoted")
    assert status["fallbackVersion"] == "1.0.0"
    s.load.wait_for_split(lambda t, split: split and all(s.load.unit_versions.get(u) == "1.1.0" for u in split), 15)

    watcher = Watcher(s)
    watcher.start()
    errors_before = errors_on(s.load, "1.0.0")
    env = {**os.environ, "KUBECONFIG": str(s.cp.kubeconfig), "PATH": f"{s.cp.bin}{os.pathsep}{os.environ['PATH']}"}
    try:
        done = subprocess.run([str(PLUGIN), "-n", s.ns, "drill", "fraud", "--reason", "quarterly game day"], env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        status = s.wait(lambda st: st.get("phase") == "Drilling" or st.get("lastDrill"), 15, "the drill started")
        status = s.wait(lambda st: (st.get("lastDrill") or {}).get("result") and st.get("phase") != "Drilling", 90,
                        "the drill over")
        time.sleep(1)  # the stand-in and the watcher catch up with the last write
    finally:
        watcher.halt.set()
        watcher.join(5)
    errors_during = errors_on(s.load, "1.0.0") - errors_before

    last = status["lastDrill"]
    assert last["result"] == "Completed", last
    assert (last["fallbackVersion"], last["returnedTo"]) == ("1.0.0", "1.1.0")
    assert 0 < last["secondsToFallback"] < 60 and 0 < last["secondsBack"] < 60, last
    assert status["stableVersion"] == "1.1.0" and status["phase"] == "Stable" and "drill" not in status
    # The backend object itself: all on 1.0.0 at some point during the drill, all on 1.1.0 at its end.
    assert {"1.0.0": 100} in watcher.splits, watcher.splits
    assert watcher.splits[-1] == {"1.1.0": 100}, watcher.splits
    served = [split for _, split in s.load.splits_seen if split]
    assert any(all(s.load.unit_versions.get(u) == "1.0.0" for u in split) for split in served), s.load.splits_seen
    assert all(s.load.unit_versions.get(u) == "1.1.0" for u in served[-1]), s.load.splits_seen
    actions = [h["action"] for h in status["history"]]
    assert actions[-3:] == ["DrillStarted", "DrillOnFallback", "DrillCompleted"], actions
    started = next(h for h in status["history"] if h["action"] == "DrillStarted")
    assert started["actor"] == last["actor"] != "unknown" and "quarterly game day" in started["reason"]
    assert {"DrillStarted", "DrillOnFallback", "DrillCompleted"} <= set(s.events())

    # Requests lost: once the drill's window is scraped, from the errorRate template's metrics of its revisions.
    status = s.wait(lambda st: (st.get("lastDrill") or {}).get("requestsLost") is not None
                    or (st.get("lastDrill") or {}).get("requestsLostNote"), 40, "the requests lost measured")
    last = status["lastDrill"]
    assert last.get("requestsLostNote") is None and "requestsLostDue" not in last, last
    assert errors_during > 10, (errors_during, s.load.results)
    # Counted as scraped: the drill's new revision counts from 0, so what it served before Prometheus first scraped
    # it is in; the load generator's count and the server's may still differ by requests in flight at either end.
    assert 0 < last["requestsLost"] <= 1.5 * errors_during + 5, (last, errors_during)
    print(f"\ndrill: {last['secondsToFallback']}s to fallback, {last['secondsBack']}s back, "
          f"{last['requestsLost']} requests lost (the load generator saw {errors_during} fail on 1.0.0)")
