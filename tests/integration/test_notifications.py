"""Notifications from the operator process to webhook receivers on 127.0.0.1, during a real rollout and rollback.

One receiver answers at once, another never answers: the rollback must be as quick as without notifications, the
answering notifier must get every event in order with the right fields, and a deployment that did not opt in must
send nothing.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from .scenario import Scenario, fast_spec

pytestmark = pytest.mark.integration

GOOD = {"error_rate": 0.0, "accuracy": 0.95}
FAILING = {"error_rate": 0.3, "accuracy": 0.95}
TOKEN = "hook-token-0123456789"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    at: float
    """Wall-clock time it arrived."""


class Receiver:
    """Webhook receiver in a thread of the test process: /hang* never answers (until the test ends), anything else
    answers 204."""

    def __init__(self):
        self.got: list[Received] = []
        self.release = threading.Event()
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the stdlib's name
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                with receiver.lock:
                    receiver.got.append(Received(self.path, dict(self.headers), body, time.time()))
                if self.path.startswith("/hang"):
                    receiver.release.wait()
                    return
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def at(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.got if r.path == path]

    def wait(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                seen = [(r.path, r.body.get("reason")) for r in self.got]
                raise AssertionError(f"{what}: not within {timeout}s; received {seen}")
            time.sleep(0.1)

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.stop()


@pytest.fixture
def scenario(control_plane, namespace, kserve, operator):
    s = Scenario(control_plane, namespace, kserve)
    yield s
    s.stop_load()


def notifier(cp, name: str, webhook: dict[str, Any], selector: dict[str, Any] | None = None, **spec: Any) -> str:
    cp.apply({"apiVersion": "modelops.io/v1alpha1", "kind": "ClusterNotifier", "metadata": {"name": name},
              "spec": {"webhook": webhook, "namespaceSelector": selector if selector is not None else {}, **spec}})
    return name


def first_sample_time(prometheus, series: str) -> float:
    result = prometheus.query(f"{series}[10m]")
    return min(float(t) for r in result for t, v in r["values"] if float(v) > 0)


def rolled_back(scenario, prometheus, spec: dict[str, Any]) -> dict[str, Any]:
    scenario.version("1.0.0", **GOOD)
    scenario.version("1.1.0", **FAILING)
    scenario.serve("1.0.0", spec, prometheus)
    scenario.patch({"version": "1.1.0"})
    return scenario.wait(lambda st: st.get("phase") == "RolledBack", 45, "rollback")


def test_a_rollback_is_notified_in_order_and_a_hanging_receiver_does_not_slow_it(scenario, prometheus, operator,
                                                                                receiver):
    cp, ns = scenario.cp, scenario.ns
    cp.kubectl("label", "namespace", ns, f"modelops.io/tenant={ns}")
    cp.kubectl("create", "secret", "generic", f"hook-{ns}", f"--from-literal=token=Bearer {TOKEN}",
               "-n", "modelops-system")
    admits = {"matchLabels": {"modelops.io/tenant": ns}}
    plain = notifier(cp, f"{ns}-json", {"url": f"{receiver.url}/json", "format": "json", "secretHeader": {
        "name": f"hook-{ns}", "key": "token", "header": "Authorization"}}, admits)
    slack = notifier(cp, f"{ns}-slack", {"url": f"{receiver.url}/slack", "format": "slack"}, admits)
    hung = notifier(cp, f"{ns}-hang", {"url": f"{receiver.url}/hang", "timeout": "2s"}, admits)
    status = rolled_back(scenario, prometheus, fast_spec(prometheus.url, notifications=[hung, plain, slack]))
    assert status["stableVersion"] == "1.0.0" and status["failedVersion"] == "1.1.0"

    # As quick as without notifications: seconds from the first scrape showing a failed request to all on stable.
    failed = f'kn_serving_invocation_duration_seconds_count{{k8s_namespace_name="{ns}", http_response_status_code="500"}}'
    candidate = prometheus.query(failed)[0]["metric"]["kn_revision_name"]
    breach = first_sample_time(prometheus, failed)
    back = scenario.load.wait_for_split(lambda t, split: t > breach and split and candidate not in split, 10)
    hung_since = receiver.at("/hang")[0].at
    print(f"\nbreach visible in Prometheus -> 100% stable: {back - breach:.2f} s, with a receiver hanging since "
          f"{back - hung_since:.1f} s before")
    assert hung_since < breach and back - breach < 10

    receiver.wait(lambda: any(r.body["reason"] == "RolledBack" for r in receiver.at("/json"))
                  and len(receiver.at("/slack")) == len(receiver.at("/json")), 10, "the rollback notified")
    got = receiver.at("/json")
    reasons = [r.body["reason"] for r in got]
    collapsed = [r for i, r in enumerate(reasons) if i == 0 or r != reasons[i - 1]]
    print("notified:", reasons, f"RolledBack {got[-1].at - back:+.2f} s after the traffic moved")
    assert collapsed == ["RolloutStarted", "StepAdvanced", "AnalysisFailed", "RolledBack"]
    assert [r.body["time"] for r in got] == sorted(r.body["time"] for r in got)
    assert len({r.body["id"] for r in got}) == len(got)
    started, step, rollback = got[0].body, got[1].body, got[-1].body
    assert {k: started[k] for k in ("namespace", "deployment", "model", "version", "stable", "candidate", "actor",
                                    "notifier")} == {"namespace": ns, "deployment": "fraud", "model": "fraud",
                                                     "version": "1.1.0", "stable": "1.0.0", "candidate": "1.1.0",
                                                     "actor": None, "notifier": plain}
    assert (step["weight"], step["phase"]) == (20, "Progressing")
    assert {k: rollback[k] for k in ("version", "stable", "candidate", "weight", "phase", "type")} == {
        "version": "1.1.0", "stable": "1.0.0", "candidate": None, "weight": 0, "phase": "RolledBack", "type": "Warning"}
    assert rollback["message"].endswith("all traffic on stable 1.0.0") and "Failed (2/2)" in rollback["message"]
    errors = next(c for c in rollback["checks"] if c["name"] == "errors")
    assert errors["verdict"] == "Fail" and errors["value"] > 0.05
    assert rollback["summary"].startswith(f"fraud ({ns}): 1.1.0 rolled back — Failed (2/2)")
    assert all(r.headers["Authorization"] == f"Bearer {TOKEN}" for r in got)
    assert all(TOKEN not in json.dumps(r.body) for r in receiver.got)
    assert all("Authorization" not in r.headers for r in receiver.at("/slack"))
    slack_last = receiver.at("/slack")[-1].body
    assert set(slack_last) == {"text", "blocks"} and slack_last["text"].startswith(f"fraud ({ns}): 1.1.0 rolled back")

    receiver.wait(lambda: operator.metric("modelops_notifications_total", notifier=plain, outcome="delivered")
                  == len(receiver.at("/json")), 5, "every notification counted as delivered")
    assert operator.metric("modelops_notifications_total", notifier=plain, outcome="failed") == 0
    # The hung notifier gives up after its attempts (3 x 2 s + 3 s) and goes on with the next notification.
    receiver.wait(lambda: operator.metric("modelops_notifications_total", notifier=hung, outcome="failed") >= 1, 20,
                  "the hung notifier giving up on one notification")
    receiver.wait(lambda: len({r.body["id"] for r in receiver.at("/hang")}) >= 2, 10, "the next one sent")
    first_id = receiver.at("/hang")[0].body["id"]
    assert [r.body["id"] for r in receiver.at("/hang")][:3] == [first_id] * 3  # three attempts of the first
    assert "NotificationsNotSent" not in scenario.events()


def test_without_opt_in_nothing_is_sent_and_a_bad_name_is_one_warning(scenario, prometheus, receiver):
    cp, ns = scenario.cp, scenario.ns
    notifier(cp, f"{ns}-all", {"url": f"{receiver.url}/all"})  # admits every namespace; not named by the deployment
    picky = notifier(cp, f"{ns}-picky", {"url": f"{receiver.url}/picky"},
                     {"matchLabels": {"modelops.io/tenant": "someone-else"}})
    rolled_back(scenario, prometheus, fast_spec(prometheus.url))
    time.sleep(2)  # anything queued would be out by now
    assert receiver.got == []
    assert "NotificationsNotSent" not in scenario.events()

    scenario.patch({"notifications": [picky, "no-such-notifier"]})  # wakes the loop at once
    deadline = time.monotonic() + 15
    while "NotificationsNotSent" not in scenario.events():
        assert time.monotonic() < deadline, scenario.events()
        time.sleep(0.2)
    events = json.loads(cp.kubectl("get", "events", "-n", ns, "--field-selector", "reason=NotificationsNotSent",
                                   "-o", "json").stdout)["items"]
    assert len(events) == 1 and events[0]["type"] == "Warning" and events[0].get("count", 1) == 1
    assert events[0]["message"] == (f"spec.notifications: ClusterNotifier '{picky}' does not admit namespace {ns}; "
                                    "no ClusterNotifier named 'no-such-notifier': nothing is sent there")
    scenario.patch({"version": "1.0.0"})  # a decision of its own (back on stable): still nothing sent, no new warning
    scenario.wait(lambda st: st.get("phase") == "Stable", 15, "back on stable")
    time.sleep(1)
    assert receiver.got == []
    assert scenario.events().count("NotificationsNotSent") == 1


BAD_NOTIFIERS = [
    ({"webhook": {"url": "https://hooks.example/a", "urlSecret": {"name": "s", "key": "url"}}},
     "a webhook has exactly one of url or urlSecret"),
    ({"webhook": {"url": "https://hooks.example/a", "timeout": "31s"}},
     "spec.webhook.timeout: Invalid value: \"31s\": must be more than 0s and at most 30s"),
    ({"webhook": {"url": "https://hooks.example/a", "secretHeader": {"name": "s", "key": "k", "header": "Host"}}},
     "secretHeader.header may not be one of"),
    ({"webhook": {"url": "ftp://hooks.example/a"}}, "spec.webhook.url"),
    ({"webhook": {"url": "https://hooks.example/a"}, "events": ["RolloutFinished"]}, "spec.events[0]"),
]


@pytest.mark.parametrize("spec, words", BAD_NOTIFIERS, ids=[w[:40] for _, w in BAD_NOTIFIERS])
def test_the_api_server_refuses_bad_notifiers(control_plane, spec, words):
    done = control_plane.apply({"apiVersion": "modelops.io/v1alpha1", "kind": "ClusterNotifier",
                                "metadata": {"name": "bad-notifier"}, "spec": {"namespaceSelector": {}, **spec}},
                               check=False)
    assert done.returncode != 0 and words in done.stderr, done.stderr
