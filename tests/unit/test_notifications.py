"""Notifications: payloads built from real decisions, who hears of what, the queue's bound, the retry policy, and the
sender against a real HTTP receiver on 127.0.0.1 that answers, fails, refuses, and hangs."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
import pytest_asyncio
from aiohttp import web
from prometheus_client import REGISTRY
from pydantic import ValidationError

from modelops import reconcile
from modelops.api.modeldeployment import ModelDeploymentSpec, ModelDeploymentStatus, Request
from modelops.api.notifier import ClusterNotifierSpec, NotificationFormat, SecretHeader, Webhook
from modelops.notifications import (
    WARNING_REASON,
    Attempt,
    Notification,
    Notifications,
    Outbox,
    RetryPolicy,
    build,
    judge,
    json_payload,
    parse_retry_after,
    payload,
    resolve,
    slack_payload,
    summary,
)
from modelops.rollout.values import Event

from .rollout_sim import START, Sim, make_spec

META = {"namespace": "prod", "name": "fraud", "uid": "3f1c"}
SECRET = "s3cr3t-t0ken-never-in-a-body"
FAST = RetryPolicy(attempts=3, backoff=0.05, max_retry_after=0.2)


def rolling_out(**spec_options) -> Sim:
    sim = Sim(make_spec(**spec_options))
    sim.step()
    sim.set(version="1.1.0")
    return sim


def request(action, rid="r1", **kw):
    return Request.model_validate({"id": rid, "action": action, "reason": "testing", "actor": "sre", **kw})


def notifications_of(sim: Sim, decision=None) -> list[Notification]:
    decision = decision or sim.decisions[-1]
    return build(META, sim.spec, decision.status, decision.events, sim.now)


def notifier(url: str, fmt: str = "json", timeout: str = "300ms", **spec) -> ClusterNotifierSpec:
    return ClusterNotifierSpec.model_validate({"webhook": {"url": url, "format": fmt, "timeout": timeout},
                                               "namespaceSelector": {}, **spec})


def counted(name: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("modelops_notifications_total", {"notifier": name, "outcome": outcome}) or 0.0


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def until(predicate, timeout: float, what: str) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout}s")
        await asyncio.sleep(0.01)
    return time.monotonic() - started


# --- the engine's events say which version and who ----------------------------------------------


def test_events_carry_the_version_and_the_actor():
    sim = rolling_out(analysis={"failureLimit": 2})
    started = next(e for e in sim.decisions[-1].events if e.reason == "RolloutStarted")
    assert (started.version, started.actor) == ("1.1.0", "modelops")
    sim.tick("Fail")
    failed = sim.decisions[-1].events
    assert [(e.reason, e.version) for e in failed] == [("AnalysisFailed", "1.1.0")]
    sim.spec = sim.spec.model_copy(update={"request": request("Abort")})
    aborted = next(e for e in sim.step().events if e.reason == "Aborted")
    assert (aborted.version, aborted.actor) == ("1.1.0", "sre")


# --- payloads (pure) ----------------------------------------------------------------------------


def test_an_automatic_rollback_notifies_analysis_failed_then_rolled_back_with_the_checks():
    sim = rolling_out(analysis={"failureLimit": 2})
    sim.tick("Fail")
    first = notifications_of(sim)
    sim.tick("Fail")
    second = notifications_of(sim)
    assert [n.reason for n in first] == ["AnalysisFailed"]
    assert [n.reason for n in second] == ["AnalysisFailed", "RolledBack"]
    rolled = second[1]
    assert (rolled.namespace, rolled.deployment, rolled.model, rolled.version) == ("prod", "fraud", "fraud", "1.1.0")
    assert (rolled.stable, rolled.candidate, rolled.weight, rolled.phase) == ("1.0.0", None, 0, "RolledBack")
    assert rolled.actor is None and rolled.type == "Warning" and rolled.time == "2026-01-01T00:00:20.000Z"
    assert rolled.checks == ({"name": "c", "verdict": "Fail", "value": 0.5, "limit": "<= 0.05"},)
    assert summary(rolled) == ("fraud (prod): 1.1.0 rolled back — Failed (2/2): c: 0.5 breaks the limit <= 0.05; "
                               "all traffic on stable 1.0.0")
    assert summary(second[0]).startswith("fraud (prod): analysis of 1.1.0 failed — Failed (2/2): c: 0.5")
    assert len({n.id for n in first + second}) == 3  # distinct, and the same on every attempt of one


def test_steps_and_promotion_name_the_weight_and_the_version():
    sim = rolling_out()
    started = notifications_of(sim)
    assert [n.reason for n in started] == ["RolloutStarted", "StepAdvanced"]  # the candidate was ready at once
    assert summary(started[0]) == "fraud (prod): rollout of 1.1.0 started — spec.version changed from 1.0.0"
    while sim.status.phase.value != "Stable":
        sim.tick("Pass")
    every = [n for d in sim.decisions for n in build(META, sim.spec, d.status, d.events, START)]
    steps = [n for n in every if n.reason == "StepAdvanced"]
    assert [(n.version, n.weight, n.candidate) for n in steps] == [("1.1.0", 10, "1.1.0"), ("1.1.0", 50, "1.1.0")]
    assert summary(steps[0]) == "fraud (prod): 1.1.0 advanced — step 1/2 at 10%"
    promoted = every[-1]
    assert (promoted.reason, promoted.stable, promoted.candidate, promoted.actor) == ("Promoted", "1.1.0", None, None)
    assert summary(promoted) == "fraud (prod): 1.1.0 promoted — analysis passed at every step up to 50%"


def test_manual_actions_name_their_actor():
    sim = rolling_out()
    sim.spec = sim.spec.model_copy(update={"request": request("Abort", reason="wrong feature set")})
    aborted = notifications_of(sim, sim.step())[-1]
    assert (aborted.reason, aborted.actor, aborted.version) == ("Aborted", "sre", "1.1.0")
    assert summary(aborted) == ("fraud (prod): 1.1.0 aborted by sre — manual abort: wrong feature set; "
                                "all traffic on stable 1.0.0")
    # Promote 1.2.0, then roll back by hand to the retained 1.0.0: the notification names the target.
    sim.set(version="1.2.0")
    sim.spec = sim.spec.model_copy(update={"request": request("Promote", rid="r2")})
    sim.step()
    sim.spec = sim.spec.model_copy(update={"request": request("Rollback", rid="r3", version="1.0.0")})
    back = notifications_of(sim, sim.step())[-1]
    assert (back.reason, back.version, back.stable, back.actor) == ("RolledBack", "1.0.0", "1.0.0", "sre")
    assert back.checks == ()
    assert summary(back) == "fraud (prod): rolled back to 1.0.0 by sre — manual rollback from 1.2.0: testing"
    paused = notifications_of(sim, sim.set(paused=True))
    assert [(n.reason, n.actor) for n in paused] == [("Paused", "spec")]
    assert summary(paused[0]) == "fraud (prod): paused at 1.0.0 — spec.paused set to true"


def test_the_generic_json_document():
    sim = rolling_out(analysis={"failureLimit": 1})
    sim.tick("Fail")
    rolled = notifications_of(sim)[-1]
    document = json_payload(rolled, "ml-oncall")
    assert document == {
        "apiVersion": "modelops.io/v1alpha1", "kind": "ModelDeploymentNotification", "id": rolled.id,
        "notifier": "ml-oncall", "reason": "RolledBack", "type": "Warning", "time": "2026-01-01T00:00:10.000Z",
        "namespace": "prod", "deployment": "fraud", "model": "fraud", "version": "1.1.0", "stable": "1.0.0",
        "candidate": None, "weight": 0, "phase": "RolledBack", "actor": None,
        "message": "1.1.0: Failed (1/1): c: 0.5 breaks the limit <= 0.05; all traffic on stable 1.0.0",
        "summary": summary(rolled),
        "checks": [{"name": "c", "verdict": "Fail", "value": 0.5, "limit": "<= 0.05"}],
    }
    json.dumps(document, allow_nan=False)
    assert payload(NotificationFormat.json, rolled, "ml-oncall") == document


def test_the_slack_payload_has_text_and_blocks_and_escapes_what_tenants_wrote():
    sim = rolling_out()
    sim.spec = sim.spec.model_copy(update={"request": request(
        "Abort", reason="<!channel> see <https://evil.example|here> & now", actor="eve <@U123>")})
    aborted = notifications_of(sim, sim.step())[-1]
    slack = slack_payload(aborted)
    assert set(slack) == {"text", "blocks"}
    assert slack["text"] == ("fraud (prod): 1.1.0 aborted by eve &lt;@U123&gt; — manual abort: &lt;!channel&gt; see "
                             "&lt;https://evil.example|here&gt; &amp; now; all traffic on stable 1.0.0")
    assert [b["type"] for b in slack["blocks"]] == ["section", "context"]
    wire = json.dumps(slack)
    assert "<!channel>" not in wire and "<@U123>" not in wire and "<https://" not in wire
    context = slack["blocks"][-1]["elements"][0]["text"]
    assert "model *fraud*" in context and "stable *1.0.0*" in context and "by eve &lt;@U123&gt;" in context
    assert payload(NotificationFormat.slack, aborted, "x") == slack


def test_the_slack_payload_lists_the_checks_of_a_failed_analysis():
    sim = rolling_out(analysis={"failureLimit": 2})
    sim.tick("Fail")
    slack = slack_payload(notifications_of(sim)[0])
    assert slack["text"].startswith("fraud (prod): analysis of 1.1.0 failed — Failed (1/2): c: 0.5 breaks the "
                                    "limit &lt;= 0.05")
    assert slack["blocks"][1]["text"]["text"] == "• *c* Fail: 0.5 (limit &lt;= 0.05)"
    assert "candidate *1.1.0* at 10%" in slack["blocks"][2]["elements"][0]["text"]


def test_long_messages_are_cut():
    event = Event("Warning", "AnalysisFailed", "x" * 5000, "1.1.0")
    (n,) = build(META, make_spec(), ModelDeploymentStatus(stable_version="1.0.0", canary_version="1.1.0"), [event],
                 START)
    assert len(n.message) == 1000 and len(summary(n)) == 1000
    assert len(slack_payload(n)["text"]) <= 3000


# --- who hears of it ----------------------------------------------------------------------------


def test_resolve_names_what_is_wrong_with_each_notifier():
    admitting = notifier("https://hooks.example/a")
    picky = notifier("https://hooks.example/b", namespaceSelector={"matchLabels": {"team": "risk"}})
    declared = {"a": admitting, "picky": picky, "broken": None}
    usable, problems = resolve(["a", "picky", "broken", "gone"], "prod", {"team": "ads"}, declared)
    assert usable == [("a", admitting)]
    assert problems == ["ClusterNotifier 'picky' does not admit namespace prod", "ClusterNotifier 'broken' is invalid",
                        "no ClusterNotifier named 'gone'"]
    assert resolve(["picky"], "prod", {"team": "risk"}, declared) == ([("picky", picky)], [])
    assert resolve(["a"], "prod", None, declared)[1] == ["ClusterNotifier 'a' does not admit namespace prod"]


def test_notifier_specs_are_validated():
    spec = notifier("https://hooks.example/x")
    assert [e.value for e in spec.events] == ["RolloutStarted", "StepAdvanced", "AnalysisFailed", "RolledBack",
                                              "Promoted", "Aborted", "Paused", "Resumed", "ManualOverride"]
    assert spec.webhook.format is NotificationFormat.json and spec.webhook.timeout == "300ms"
    for bad, words in [({"url": "ftp://x"}, "pattern"), ({"url": "https://x", "urlSecret": {"name": "s", "key": "k"}},
                                                          "exactly one of url or urlSecret"),
                       ({}, "exactly one of url or urlSecret"), ({"url": "https://x", "timeout": "31s"}, "at most 30s"),
                       ({"url": "https://x", "timeout": "0s"}, "more than 0s"),
                       ({"url": "https://" + "x" * 2050}, "2048"), ({"url": "https://x", "format": "teams"}, "format")]:
        with pytest.raises(ValidationError, match=words):
            Webhook.model_validate(bad)
    for header in ("Host", "content-length", "X Bad", "X-Token\r\nEvil"):
        with pytest.raises(ValidationError):
            SecretHeader(name="s", key="k", header=header)
    with pytest.raises(ValidationError, match="unique"):
        ClusterNotifierSpec.model_validate({"webhook": {"url": "https://x"}, "namespaceSelector": {},
                                            "events": ["RolledBack", "RolledBack"]})
    with pytest.raises(ValidationError, match="RolloutFinished"):
        ClusterNotifierSpec.model_validate({"webhook": {"url": "https://x"}, "namespaceSelector": {},
                                            "events": ["RolloutFinished"]})


def test_a_deployment_opts_in_with_a_bounded_list_of_names():
    spec = make_spec()
    assert spec.notifications == []
    assert make_spec(notifications=["ml-oncall", "risk"]).notifications == ["ml-oncall", "risk"]
    for bad in (["a", "a"], [f"n{i}" for i in range(9)], ["Not A Name"]):
        with pytest.raises(ValidationError, match="notifications"):
            make_spec(notifications=bad)


# --- the queue and the retry policy (pure) ------------------------------------------------------


def test_the_outbox_keeps_order_and_drops_the_oldest_when_full():
    box = Outbox(3)
    assert [box.put(i) for i in range(3)] == [None, None, None] and box.ready.is_set()
    assert box.put(3) == 0 and box.put(4) == 1
    assert len(box) == 3
    assert [box.take() for _ in range(3)] == [2, 3, 4]
    assert box.take() is None and not box.ready.is_set()
    with pytest.raises(ValueError):
        Outbox(0)


def test_retry_policy_backs_off_exponentially_and_honours_retry_after_within_its_bound():
    policy = RetryPolicy()
    assert (policy.attempts, [policy.wait(a) for a in (1, 2, 3)]) == (3, [1.0, 2.0, 4.0])
    assert policy.wait(1, retry_after=5) == 5 and policy.wait(1, retry_after=600) == 10
    assert policy.wait(2, retry_after=0) == 2  # never sooner than the backoff


def test_which_answers_are_retried():
    assert judge(200).delivered and judge(204).delivered and not judge(200).retriable
    for status in (500, 502, 503, 504, 408, 425, 429):
        assert judge(status).retriable and not judge(status).delivered, status
    for status in (301, 302, 400, 401, 403, 404, 410, 413, 422):
        result = judge(status)
        assert not result.retriable and not result.delivered and result.problem == f"HTTP {status}", status
    assert judge(429, "7").retry_after == 7 and judge(400, "7").retry_after is None


def test_retry_after_as_seconds_or_a_date():
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert parse_retry_after("3") == 3.0 and parse_retry_after(" 12 ") == 12.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now) == 0.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None and parse_retry_after("") is None


def test_a_failing_hook_never_costs_the_round():
    def broken(*_):
        raise RuntimeError("a bug in notifications")

    shell = reconcile.Shell(kube=None, routers={}, providers=None, events=lambda *_: None, notify=broken)
    decision = Sim(make_spec()).step()
    reconcile.notify(shell, {"metadata": META}, make_spec(), decision)  # logged, not raised
    assert reconcile.Shell(kube=None, routers={}, providers=None, events=lambda *_: None).notify is \
        reconcile.no_notifications


# --- the sender, against a real receiver on loopback --------------------------------------------


class Receiver:
    """An HTTP receiver on 127.0.0.1: /ok answers 200, /flaky 500 twice then 200, /bad 400, /busy 429 then 200,
    /redirect 302, /hang never answers."""

    def __init__(self):
        self.got: dict[str, list[dict]] = {}
        self.released = asyncio.Event()
        self.base = ""

    def bodies(self, path: str) -> list[dict]:
        return [r["body"] for r in self.got.get(path, [])]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        seen = self.got.setdefault(path, [])
        seen.append({"body": json.loads(await request.read()), "headers": dict(request.headers),
                     "at": time.monotonic()})
        case = path.split("-")[0]
        if case == "ok":
            return web.Response(status=200, text="thanks")
        if case == "flaky":
            return web.Response(status=500 if len(seen) <= 2 else 200)
        if case == "bad":
            return web.Response(status=400, text="no such channel " + SECRET)
        if case == "busy":
            return web.Response(status=429, headers={"Retry-After": "0"}) if len(seen) == 1 else web.Response()
        if case == "redirect":
            raise web.HTTPFound(self.base + "/ok")
        await self.released.wait()  # hang
        return web.Response(status=200)


@pytest_asyncio.fixture
async def receiver():
    r = Receiver()
    app = web.Application()
    app.router.add_post("/{path}", r.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    r.base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield r
    r.released.set()
    await runner.cleanup()


class FakeSecrets:
    def __init__(self, values: dict[tuple[str, str], str]):
        self.values, self.reads = values, []

    async def value(self, namespace: str, name: str, key: str) -> str:
        self.reads.append((namespace, name, key))
        if (name, key) not in self.values:
            raise KeyError(key)
        return self.values[(name, key)]


class Warnings(list):
    def __call__(self, obj, type_, reason, message):
        self.append((type_, reason, message))


def hub(notifiers: dict[str, ClusterNotifierSpec | None], secrets: FakeSecrets | None = None,
        labels: dict[str, dict[str, str]] | None = None, **options) -> Notifications:
    h = Notifications("modelops-system", secrets or FakeSecrets({}), Warnings(), **{"policy": FAST, **options})
    h.bind({name: [spec] for name, spec in notifiers.items()},
           {ns: [value] for ns, value in (labels or {"prod": {}}).items()})
    return h


def deployment(*notifiers: str) -> dict:
    return {"metadata": META, "spec": {"notifications": list(notifiers)}}


def rollback_decision(**spec) -> tuple[ModelDeploymentSpec, object]:
    sim = rolling_out(analysis={"failureLimit": 1}, **spec)
    return sim.spec, sim.tick("Fail")


def one_notification(reason: str = "RolledBack") -> Notification:
    spec, decision = rollback_decision()
    return next(n for n in build(META, spec, decision.status, decision.events, START) if n.reason == reason)


@pytest.mark.asyncio
async def test_delivered_at_once_with_the_secret_header_and_never_the_secret_in_the_body(receiver):
    name = unique("ok")
    spec = ClusterNotifierSpec.model_validate({
        "webhook": {"url": f"{receiver.base}/ok-1", "secretHeader": {"name": "hook", "key": "token",
                                                                       "header": "Authorization"}},
        "namespaceSelector": {}})
    secrets = FakeSecrets({("hook", "token"): f"Bearer {SECRET}\n"})
    h = hub({name: spec}, secrets)
    assert await h.deliver(name, spec, one_notification()) == "delivered"
    (got,) = receiver.got["ok-1"]
    assert got["headers"]["Authorization"] == f"Bearer {SECRET}"
    assert got["headers"]["Content-Type"] == "application/json"
    assert got["body"]["reason"] == "RolledBack" and SECRET not in json.dumps(got["body"])
    assert secrets.reads == [("modelops-system", "hook", "token")]  # the operator's namespace, never the tenant's
    await h.close()


@pytest.mark.asyncio
async def test_500_twice_then_200_is_delivered_on_the_third_attempt(receiver):
    name = unique("flaky")
    spec = notifier(f"{receiver.base}/flaky-1")
    h = hub({name: spec})
    n = one_notification()
    assert await h.deliver(name, spec, n) == "delivered"
    attempts = receiver.got["flaky-1"]
    assert len(attempts) == 3 and len({a["body"]["id"] for a in attempts}) == 1
    gaps = [b["at"] - a["at"] for a, b in zip(attempts, attempts[1:])]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1  # exponential backoff between attempts
    await h.close()


@pytest.mark.asyncio
async def test_400_is_final_and_redirects_are_not_followed(receiver):
    h = hub({})
    assert await h.deliver("bad", notifier(f"{receiver.base}/bad-1"), one_notification()) == "failed"
    assert len(receiver.got["bad-1"]) == 1
    assert await h.deliver("redirect", notifier(f"{receiver.base}/redirect-1"), one_notification()) == "failed"
    assert len(receiver.got["redirect-1"]) == 1 and "ok" not in receiver.got
    await h.close()


@pytest.mark.asyncio
async def test_429_is_retried_after_what_it_asks(receiver):
    h = hub({})
    assert await h.deliver("busy", notifier(f"{receiver.base}/busy-1"), one_notification()) == "delivered"
    assert len(receiver.got["busy-1"]) == 2
    await h.close()


@pytest.mark.asyncio
async def test_a_refused_connection_gets_its_attempts_then_fails():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    h = hub({})
    started = time.monotonic()
    attempts: list[Attempt] = []
    original = h._attempt

    async def counting(*args):
        attempts.append(await original(*args))
        return attempts[-1]

    h._attempt = counting
    assert await h.deliver("refused", notifier(f"http://127.0.0.1:{port}/x"), one_notification()) == "failed"
    assert len(attempts) == 3 and all(a.retriable and a.status is None for a in attempts)
    assert attempts[0].problem.startswith("unreachable: ")
    assert time.monotonic() - started < 2
    await h.close()


@pytest.mark.asyncio
async def test_a_missing_secret_sends_nothing(receiver):
    spec = ClusterNotifierSpec.model_validate({"webhook": {"urlSecret": {"name": "slack", "key": "url"}},
                                               "namespaceSelector": {}})
    h = hub({}, FakeSecrets({}))
    assert await h.deliver("nosecret", spec, one_notification()) == "failed"
    bad_header = ClusterNotifierSpec.model_validate({
        "webhook": {"url": f"{receiver.base}/ok-2", "secretHeader": {"name": "h", "key": "k", "header": "X-Token"}},
        "namespaceSelector": {}})
    h = hub({}, FakeSecrets({("h", "k"): "two\nlines"}))
    assert await h.deliver("badheader", bad_header, one_notification()) == "failed"
    assert "ok-2" not in receiver.got
    h = hub({}, FakeSecrets({("slack", "url"): f"{receiver.base}/ok-3\n"}))
    assert await h.deliver("fromsecret", spec, one_notification()) == "delivered"
    assert len(receiver.got["ok-3"]) == 1
    await h.close()


@pytest.mark.asyncio
async def test_a_hanging_receiver_holds_up_its_own_queue_only(receiver):
    hung, fine = unique("hang"), unique("ok")
    notifiers = {hung: notifier(f"{receiver.base}/hang-1", timeout="200ms"),
                 fine: notifier(f"{receiver.base}/ok-4", fmt="slack")}
    h = hub(notifiers, policy=RetryPolicy(attempts=2, backoff=0.05))
    spec, decision = rollback_decision()
    obj = deployment(hung, fine)
    spec = spec.model_copy(update={"notifications": [hung, fine]})
    started = time.monotonic()
    h.notify(obj, spec, decision.status, decision.events)  # AnalysisFailed, RolledBack
    h.notify(obj, spec, decision.status, decision.events)
    assert time.monotonic() - started < 0.05  # the round never waits
    await until(lambda: len(receiver.got.get("ok-4", [])) == 4, 1, "the other notifier's four notifications")
    assert time.monotonic() - started < 0.5
    assert [b["text"].split(" — ")[0] for b in receiver.bodies("ok-4")] == [
        "fraud (prod): analysis of 1.1.0 failed", "fraud (prod): 1.1.0 rolled back"] * 2
    assert len(receiver.got["hang-1"]) == 1  # the first attempt of the first notification still hangs
    # Each notification: 2 attempts of 0.2 s and 0.05 s between them; then the next one goes out.
    await until(lambda: counted(hung, "failed") == 2, 3, "the hung notifier giving up on two notifications")
    ids = [r["body"]["id"] for r in receiver.got["hang-1"]]
    assert len(ids) >= 4 and ids[0] == ids[1] and ids[2] == ids[3] and ids[0] != ids[2]
    assert counted(fine, "delivered") == 4 and counted(fine, "failed") == 0
    await h.close(grace=0.1)


@pytest.mark.asyncio
async def test_a_full_queue_drops_its_oldest(receiver):
    name = unique("ok")
    h = hub({name: notifier(f"{receiver.base}/ok-5", events=["AnalysisFailed", "RolledBack", "Promoted",
                                                             "RolloutStarted", "StepAdvanced"])}, queue_size=2)
    spec = make_spec(notifications=[name])
    status = ModelDeploymentStatus(stable_version="1.0.0")
    events = [Event("Normal", "StepAdvanced", f"1.1.0: step {i}", "1.1.0", "modelops") for i in range(5)]
    for event in events:  # the sender has not run yet: five in, two kept
        h.notify(deployment(name), spec, status, [event])
    assert counted(name, "dropped") == 3
    await until(lambda: counted(name, "delivered") == 2, 2, "the two kept")
    assert [b["message"] for b in receiver.bodies("ok-5")] == ["1.1.0: step 3", "1.1.0: step 4"]
    await h.close()


@pytest.mark.asyncio
async def test_only_the_reasons_a_notifier_hears_of_and_only_with_opt_in(receiver):
    quiet, loud = unique("ok"), unique("ok")
    h = hub({quiet: notifier(f"{receiver.base}/ok-6", events=["RolledBack"]),
             loud: notifier(f"{receiver.base}/ok-7")})
    spec, decision = rollback_decision()
    h.notify(deployment(), spec, decision.status, decision.events)  # no opt-in: nothing
    h.notify(deployment(quiet, loud), spec.model_copy(update={"notifications": [quiet, loud]}), decision.status,
             decision.events)
    await until(lambda: counted(loud, "delivered") == 2 and counted(quiet, "delivered") == 1, 2, "delivered")
    assert [b["reason"] for b in receiver.bodies("ok-6")] == ["RolledBack"]
    assert [b["reason"] for b in receiver.bodies("ok-7")] == ["AnalysisFailed", "RolledBack"]
    assert h.events == []
    await h.close()


@pytest.mark.asyncio
async def test_a_notifier_that_does_not_admit_the_namespace_or_does_not_exist_is_warned_of_once(receiver):
    picky = unique("ok")
    h = hub({picky: notifier(f"{receiver.base}/ok-8", namespaceSelector={"matchLabels": {"team": "risk"}})},
            labels={"prod": {"team": "ads"}})
    spec, decision = rollback_decision(notifications=[picky, "gone"])
    for _ in range(3):
        h.notify(deployment(picky, "gone"), spec, decision.status, decision.events)
    assert h.events == [("Warning", WARNING_REASON, f"spec.notifications: ClusterNotifier '{picky}' does not admit "
                         "namespace prod; no ClusterNotifier named 'gone': nothing is sent there")]
    h.bind({picky: [h.notifiers[picky][0]], "gone": [notifier(f"{receiver.base}/ok-9")]}, {"prod": [{"team": "risk"}]})
    h.notify(deployment(picky, "gone"), spec, decision.status, decision.events)
    await until(lambda: len(receiver.got.get("ok-9", [])) == 2 and len(receiver.got.get("ok-8", [])) == 2, 2,
                "sent once admitted")
    assert len(h.events) == 1
    h.bind({picky: [h.notifiers[picky][0]]}, {"prod": [{"team": "risk"}]})  # "gone" is gone again: warned again
    h.notify(deployment(picky, "gone"), spec, ModelDeploymentStatus(), ())
    assert h.events[-1] == ("Warning", WARNING_REASON,
                            "spec.notifications: no ClusterNotifier named 'gone': nothing is sent there")
    h.bind({picky: [None]}, {"prod": [{"team": "risk"}]})
    h.notify(deployment(picky), spec.model_copy(update={"notifications": [picky]}), ModelDeploymentStatus(), ())
    assert h.events[-1][2] == f"spec.notifications: ClusterNotifier '{picky}' is invalid: nothing is sent there"
    await h.close()


@pytest.mark.asyncio
async def test_close_gives_the_queue_a_moment_then_stops_a_hung_sender(receiver):
    fine, hung = unique("ok"), unique("hang")
    h = hub({fine: notifier(f"{receiver.base}/ok-10"), hung: notifier(f"{receiver.base}/hang-2", timeout="30s")})
    spec, decision = rollback_decision(notifications=[fine, hung])
    h.notify(deployment(fine, hung), spec, decision.status, decision.events)
    started = time.monotonic()
    await h.close(grace=0.3)
    assert time.monotonic() - started < 1
    assert counted(fine, "delivered") == 2 and len(receiver.got["hang-2"]) == 1
    h.notify(deployment(fine, hung), spec, decision.status, decision.events)  # after close: nothing more is queued
    await asyncio.sleep(0.05)
    assert len(receiver.got["ok-10"]) == 2
