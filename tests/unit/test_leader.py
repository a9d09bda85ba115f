"""Leader election: the pure decision (observed time, never the holder's clock) and the elector
against an in-memory Lease API with optimistic concurrency."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from kubernetes_asyncio.client import V1Lease, V1LeaseSpec, V1ObjectMeta
from kubernetes_asyncio.client.exceptions import ApiException

from modelops import leader
from modelops.leader import (Action, LeaderElector, LeadershipLost, LeaseRecord, Observation, decide, expired,
                             lease_spec, micro_time, observe, released_spec, run_elected)

ME, OTHER = "me_1", "other_2"
T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)


def held(holder: str = OTHER, renewed: datetime = T0, duration: float = 15, transitions: int = 0) -> LeaseRecord:
    return LeaseRecord(holder=holder, duration=duration, acquire_time=T0, renew_time=renewed, transitions=transitions)


def seen(record: LeaseRecord | None, at: float) -> Observation:
    return Observation(record, at)


# --- decide --------------------------------------------------------------------------------


def test_no_lease_is_created():
    assert decide(None, seen(None, 0), 0, ME, leading=False) is Action.CREATE


@pytest.mark.parametrize("holder", ["", ME])
def test_empty_holder_or_my_own_lease_is_taken_at_once(holder):
    record = held(holder)
    assert decide(record, seen(record, 100), 100, ME, leading=False) is Action.ACQUIRE


def test_lease_held_by_another_is_waited_for_until_duration_passes_on_my_clock():
    record = held(OTHER, duration=15)
    observation = seen(record, 100)
    assert decide(record, observation, 100, ME, leading=False) is Action.WAIT
    assert decide(record, observation, 114.9, ME, leading=False) is Action.WAIT
    assert decide(record, observation, 115, ME, leading=False) is Action.ACQUIRE
    assert decide(record, observation, 500, ME, leading=False) is Action.ACQUIRE


def test_the_records_own_duration_counts():
    record = held(OTHER, duration=3)
    assert decide(record, seen(record, 10), 12.9, ME, leading=False) is Action.WAIT
    assert decide(record, seen(record, 10), 13, ME, leading=False) is Action.ACQUIRE


def test_a_first_sight_always_waits_a_full_duration_however_old_the_renew_time():
    """A standby that just started cannot know how long the record has been unchanged."""
    stale = held(OTHER, renewed=T0 - timedelta(days=30))
    observation = observe(None, stale, now=1000)
    assert observation.at == 1000
    assert decide(stale, observation, 1000, ME, leading=False) is Action.WAIT
    assert decide(stale, observation, 1015, ME, leading=False) is Action.ACQUIRE


def test_a_renewing_holder_with_a_clock_far_behind_is_never_taken_over():
    """Its renewTimes are an hour in the past by our clock; they change, so it is alive."""
    observation, now = None, 0.0
    for step in range(20):
        record = held(OTHER, renewed=T0 - timedelta(hours=1) + timedelta(seconds=2 * step))
        observation = observe(observation, record, now)
        assert decide(record, observation, now, ME, leading=False) is Action.WAIT
        now += 2


def test_a_dead_holder_with_a_clock_far_ahead_is_taken_over_after_the_duration():
    """Its last renewTime lies an hour in our future; it stopped changing, so it is dead."""
    record = held(OTHER, renewed=T0 + timedelta(hours=1), duration=15)
    observation = observe(None, record, 0)
    for now in (2, 4, 8, 14):
        observation = observe(observation, record, now)
        assert observation.at == 0
        assert decide(record, observation, now, ME, leading=False) is Action.WAIT
    assert decide(record, observe(observation, record, 15), 15, ME, leading=False) is Action.ACQUIRE


def test_any_change_of_the_record_restarts_the_wait():
    first = held(OTHER, renewed=T0)
    observation = observe(None, first, 0)
    for changed in (held(OTHER, renewed=T0 + timedelta(seconds=2)), held("third"),
                    held(OTHER, transitions=1), held(OTHER, duration=20)):
        later = observe(observation, changed, 14)
        assert later.at == 14 and later.record == changed
        assert decide(changed, later, 16, ME, leading=False) is Action.WAIT


def test_the_resource_version_alone_is_no_change():
    a = LeaseRecord(holder=OTHER, renew_time=T0, resource_version="1")
    b = LeaseRecord(holder=OTHER, renew_time=T0, resource_version="2")
    assert observe(seen(a, 0), b, 10).at == 0


def test_an_observation_of_another_record_is_no_evidence_of_expiry():
    old, new = held(OTHER, renewed=T0), held(OTHER, renewed=T0 + timedelta(seconds=1))
    assert decide(new, seen(old, 0), 100, ME, leading=False) is Action.WAIT
    assert decide(new, None, 100, ME, leading=False) is Action.WAIT


def test_a_leader_renews_only_its_own_lease_and_loses_otherwise():
    assert decide(held(ME), None, 0, ME, leading=True) is Action.RENEW
    assert decide(held(OTHER), None, 0, ME, leading=True) is Action.LOST
    assert decide(held(""), None, 0, ME, leading=True) is Action.LOST
    assert decide(None, None, 0, ME, leading=True) is Action.LOST


def test_expired():
    assert expired(seen(None, 0), 0)
    assert not expired(seen(held(duration=15), 10), 24.99)
    assert expired(seen(held(duration=15), 10), 25)


# --- what is written -----------------------------------------------------------------------


def test_micro_time_always_has_six_fraction_digits_in_utc():
    assert micro_time(T0) == "2026-01-01T12:00:00.000000Z"
    plus_two = timezone(timedelta(hours=2))
    assert micro_time(datetime(2026, 1, 1, 14, 0, 0, 5, tzinfo=plus_two)) == "2026-01-01T12:00:00.000005Z"


def test_creating_taking_over_and_renewing_count_transitions_like_client_go():
    now = T0 + timedelta(seconds=30)
    created = lease_spec(None, ME, 15, now)
    assert created == {"holderIdentity": ME, "leaseDurationSeconds": 15, "acquireTime": micro_time(now),
                       "renewTime": micro_time(now), "leaseTransitions": 0}
    taken = lease_spec(held(OTHER, transitions=4), ME, 15, now)
    assert (taken["leaseTransitions"], taken["acquireTime"]) == (5, micro_time(now))
    from_empty = lease_spec(held("", transitions=4), ME, 15, now)
    assert from_empty["leaseTransitions"] == 5
    renewed = lease_spec(held(ME, transitions=4), ME, 15, now)
    assert (renewed["leaseTransitions"], renewed["acquireTime"], renewed["renewTime"]) == (4, micro_time(T0),
                                                                                           micro_time(now))
    assert lease_spec(None, ME, 2.2, now)["leaseDurationSeconds"] == 3  # rounded up, never down


def test_release_empties_the_holder_and_keeps_the_transitions():
    spec = released_spec(held(ME, transitions=3), T0)
    assert spec["holderIdentity"] == "" and spec["leaseTransitions"] == 3 and spec["leaseDurationSeconds"] == 1


def test_lease_record_from_a_lease_object():
    lease = V1Lease(metadata=V1ObjectMeta(name="l", resource_version="7"),
                    spec=V1LeaseSpec(holder_identity=OTHER, lease_duration_seconds=3, renew_time=T0,
                                     lease_transitions=2))
    record = LeaseRecord.from_lease(lease)
    assert (record.holder, record.duration, record.renew_time, record.transitions, record.resource_version) == \
        (OTHER, 3.0, T0, 2, "7")
    bare = LeaseRecord.from_lease(V1Lease(metadata=V1ObjectMeta(name="l", resource_version="8"), spec=V1LeaseSpec()),
                                  default_duration=9)
    assert (bare.holder, bare.duration, bare.transitions) == ("", 9.0, 0)


def test_timings_must_leave_the_leader_time_to_stop_before_a_takeover():
    for duration, deadline, retry in [(10, 10, 2), (15, 10, 10), (15, 20, 2), (15, 10, 0)]:
        with pytest.raises(ValueError):
            LeaderElector(FakeLeases(), lease_duration=duration, renew_deadline=deadline, retry_period=retry)


def test_identity_and_namespace_come_from_the_pod(monkeypatch):
    monkeypatch.setenv("POD_NAME", "modelops-0")
    monkeypatch.setenv("POD_NAMESPACE", "ops")
    elector = LeaderElector(FakeLeases())
    assert (elector.identity, elector.namespace) == ("modelops-0", "ops")
    monkeypatch.delenv("POD_NAME")
    monkeypatch.delenv("POD_NAMESPACE")
    elector = LeaderElector(FakeLeases())
    assert elector.identity.endswith(f"_{__import__('os').getpid()}") and elector.namespace == "modelops-system"


# --- the elector against an in-memory API ----------------------------------------------------


def _parse(value):
    return None if value is None else datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)


class FakeLeases:
    """The three Lease calls of CoordinationV1Api, with the API server's resourceVersion rules.
    `fail` (a callable of the method name) may raise or return an awaitable to stall on."""

    def __init__(self):
        self.stored: dict[tuple[str, str], tuple[int, dict]] = {}
        self.version = 0
        self.fail = lambda method: None
        self.calls: list[str] = []

    def _lease(self, key):
        version, spec = self.stored[key]
        return V1Lease(metadata=V1ObjectMeta(name=key[1], namespace=key[0], resource_version=str(version)),
                       spec=V1LeaseSpec(holder_identity=spec.get("holderIdentity"),
                                        lease_duration_seconds=spec.get("leaseDurationSeconds"),
                                        acquire_time=_parse(spec.get("acquireTime")),
                                        renew_time=_parse(spec.get("renewTime")),
                                        lease_transitions=spec.get("leaseTransitions")))

    async def _enter(self, method):
        self.calls.append(method)
        stall = self.fail(method)
        if stall is not None:
            await stall
        await asyncio.sleep(0)

    async def read_namespaced_lease(self, name, namespace, _request_timeout=None):
        await self._enter("read")
        if (namespace, name) not in self.stored:
            raise ApiException(status=404, reason="Not Found")
        return self._lease((namespace, name))

    async def create_namespaced_lease(self, namespace, body, _request_timeout=None):
        await self._enter("create")
        key = (namespace, body["metadata"]["name"])
        if key in self.stored:
            raise ApiException(status=409, reason="AlreadyExists")
        self.version += 1
        self.stored[key] = (self.version, dict(body["spec"]))
        return self._lease(key)

    async def replace_namespaced_lease(self, name, namespace, body, _request_timeout=None):
        await self._enter("replace")
        key = (namespace, name)
        if key not in self.stored:
            raise ApiException(status=404, reason="Not Found")
        if body["metadata"].get("resourceVersion") != str(self.stored[key][0]):
            raise ApiException(status=409, reason="Conflict")
        self.version += 1
        self.stored[key] = (self.version, dict(body["spec"]))
        return self._lease(key)

    def spec(self, name="modelops-operator", namespace="modelops-system") -> dict:
        return self.stored[(namespace, name)][1]

    def put(self, spec: dict, name="modelops-operator", namespace="modelops-system"):
        """A write by someone else (another replica, or a human with kubectl)."""
        self.version += 1
        self.stored[(namespace, name)] = (self.version, spec)

    def set_holder(self, holder, name="modelops-operator", namespace="modelops-system"):
        self.put({**self.spec(name, namespace), "holderIdentity": holder}, name, namespace)


# The API keeps whole seconds of lease duration; standbys go by what the Lease says.
FAST = {"lease_duration": 1, "renew_deadline": 0.6, "retry_period": 0.1, "request_timeout": 0.3}


def elector(api, identity, **timings):
    return LeaderElector(api, namespace="modelops-system", identity=identity, **{**FAST, **timings})


def run(coro, timeout=10):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def test_the_first_contender_creates_the_lease_and_leads():
    api = FakeLeases()
    a = elector(api, "a")
    assert run(a.try_acquire()) is True
    assert a.leading and leader.LEADER._value.get() == 1
    assert api.spec()["holderIdentity"] == "a" and api.spec()["leaseTransitions"] == 0


def test_two_contenders_at_once_never_both_win():
    for _ in range(20):
        api = FakeLeases()
        api.put({"holderIdentity": "", "leaseDurationSeconds": 1})
        a, b = elector(api, "a"), elector(api, "b")

        async def both():
            return await asyncio.gather(a.try_acquire(), b.try_acquire(), return_exceptions=True)

        outcomes = run(both())
        winners = [o for o in outcomes if o is True]
        assert len(winners) == 1, outcomes
        assert all(o is True or (isinstance(o, ApiException) and o.status == 409) for o in outcomes)
        assert api.spec()["holderIdentity"] == ("a" if a.leading else "b") and a.leading != b.leading


def test_a_standby_takes_over_only_after_the_holder_stops_renewing():
    api = FakeLeases()
    a, b = elector(api, "a"), elector(api, "b")

    async def scenario():
        await a.try_acquire()
        holding = asyncio.create_task(a.hold())
        started = time.monotonic()
        acquiring = asyncio.create_task(b.acquire())
        await asyncio.sleep(2.5)  # 2.5 lease durations: a keeps renewing, b keeps waiting
        assert not acquiring.done() and api.spec()["holderIdentity"] == "a"
        holding.cancel()  # a dies without a word
        died = time.monotonic()
        await acquiring
        return died - started, time.monotonic() - died

    waited, takeover = run(scenario())
    assert api.spec()["holderIdentity"] == "b" and api.spec()["leaseTransitions"] == 1
    assert 1 - 0.15 <= takeover <= 1 + 0.3  # one lease duration after the last change b saw


def test_a_leader_that_sees_another_holder_is_lost_at_once():
    api = FakeLeases()
    a = elector(api, "a", lease_duration=6, renew_deadline=4, retry_period=0.1)

    async def scenario():
        await a.try_acquire()
        holding = asyncio.create_task(a.hold())
        await asyncio.sleep(0.25)
        api.set_holder("intruder")
        started = time.monotonic()
        with pytest.raises(LeadershipLost, match="intruder"):
            await holding
        return time.monotonic() - started

    assert run(scenario()) < 0.5  # far before the 4 s renew deadline
    assert not a.leading and leader.LEADER._value.get() == 0


def test_failed_renewals_are_retried_until_the_deadline_then_lost():
    api = FakeLeases()
    a = elector(api, "a")
    failures = {"on": False}

    def fail(method):
        if failures["on"]:
            raise ApiException(status=500, reason="Internal Server Error")

    api.fail = fail

    async def scenario():
        await a.try_acquire()
        holding = asyncio.create_task(a.hold())
        await asyncio.sleep(0.3)
        failures["on"] = True
        last_renewal = a.renewed_at
        with pytest.raises(LeadershipLost, match="within 0.6s"):
            await holding
        return time.monotonic() - last_renewal

    lost_after = run(scenario())
    assert 0.6 <= lost_after < 0.8  # past the renew deadline, well before the lease duration (1)
    assert api.calls.count("read") >= 3  # it kept trying


def test_a_renewal_that_hangs_is_cut_at_the_deadline():
    api = FakeLeases()
    a = elector(api, "a", request_timeout=5)
    stall = {"on": False}
    api.fail = lambda method: asyncio.sleep(60) if stall["on"] else None

    async def scenario():
        await a.try_acquire()
        holding = asyncio.create_task(a.hold())
        await asyncio.sleep(0.25)
        stall["on"] = True
        last_renewal = a.renewed_at
        with pytest.raises(LeadershipLost):
            await holding
        return time.monotonic() - last_renewal

    assert run(scenario()) < 0.8


def test_a_transient_conflict_is_survived():
    api = FakeLeases()
    a = elector(api, "a")

    async def scenario():
        await a.try_acquire()
        holding = asyncio.create_task(a.hold())
        await asyncio.sleep(0.15)
        api.set_holder("a")  # someone else's write to our lease: our next write conflicts
        await asyncio.sleep(1.0)
        assert not holding.done()
        holding.cancel()

    run(scenario())
    assert api.spec()["holderIdentity"] == "a" and a.leading


def test_release_frees_the_lease_for_an_immediate_takeover():
    api = FakeLeases()
    a, b = elector(api, "a", lease_duration=60, renew_deadline=40, retry_period=0.1), elector(api, "b")

    async def scenario():
        await a.try_acquire()
        assert await b.try_acquire() is False
        assert await a.release() is True
        assert await b.try_acquire() is True

    run(scenario())
    assert api.spec()["holderIdentity"] == "b" and api.spec()["leaseTransitions"] == 1


def test_release_does_not_touch_a_lease_that_is_no_longer_ours():
    api = FakeLeases()
    a = elector(api, "a")

    async def scenario():
        await a.try_acquire()
        api.set_holder("b")
        a._mine = None
        return await a.release()

    assert run(scenario()) is False and api.spec()["holderIdentity"] == "b"


def test_run_elected_runs_the_work_only_while_leading_and_releases_after_it():
    api = FakeLeases()
    api.put({"holderIdentity": "other", "leaseDurationSeconds": 1, "leaseTransitions": 2})
    a = elector(api, "a")
    ran = []

    async def work():
        ran.append((api.spec()["holderIdentity"], leader.LEADER._value.get()))
        await asyncio.sleep(0.5)

    run(run_elected(a, work))
    assert ran == [("a", 1)]
    assert api.spec()["holderIdentity"] == "" and api.spec()["leaseTransitions"] == 3
    assert leader.LEADER._value.get() == 0


def test_run_elected_cancels_the_work_and_raises_when_the_lease_is_lost():
    api = FakeLeases()
    a = elector(api, "a")
    state = {}

    async def work():
        state["started"] = True
        api.set_holder("intruder")
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            state["cancelled"] = True
            raise

    with pytest.raises(LeadershipLost, match="intruder"):
        run(run_elected(a, work))
    assert state == {"started": True, "cancelled": True}
    assert api.spec()["holderIdentity"] == "intruder"  # never released: it is not ours


class CancelledAsTheRenewalAnswers(FakeLeases):
    """Cancels `victim` in the very step in which a renewal's answer arrives: the race in which Python 3.11's
    asyncio.wait_for returns the answer and drops the cancellation."""

    victim: asyncio.Task | None = None

    async def replace_namespaced_lease(self, *args, **kwargs):
        answer = await super().replace_namespaced_lease(*args, **kwargs)
        if self.victim is not None:
            self.victim.cancel()
        return answer


def test_renewal_stops_when_cancelled_as_a_renewal_answers():
    """The lease keeper stops renewing by cancelling `hold`; a cancellation lost in that race kept the keeper
    renewing for good, so the operator never stopped nor released the Lease (seen as a hung run_elected)."""
    api = CancelledAsTheRenewalAnswers()
    a = elector(api, "a")

    async def scenario():
        assert await a.try_acquire()
        api.victim = asyncio.create_task(a.hold())
        await asyncio.wait({api.victim}, timeout=3)  # a give-up bound: it ends at the first renewal
        return api.victim

    held = run(scenario())
    assert held.cancelled() and api.calls.count("replace") == 1, f"renewed on after its cancellation: {api.calls}"


def test_run_elected_releases_and_reraises_when_the_work_fails():
    api = FakeLeases()
    a = elector(api, "a")

    async def work():
        raise RuntimeError("login failed")

    with pytest.raises(RuntimeError, match="login failed"):
        run(run_elected(a, work))
    assert api.spec()["holderIdentity"] == ""


def test_renewals_go_on_while_the_operators_loop_is_blocked():
    """The keeper renews on a thread of its own: an operator loop busy for longer than the renew deadline (here
    blocked outright) neither loses the Lease nor lets a standby take it over."""
    api = FakeLeases()
    a = elector(api, "a")
    seen = {}

    async def work():
        before = api.calls.count("replace")
        time.sleep(3 * FAST["renew_deadline"])  # blocks the operator's loop, not the keeper's
        seen["renewals while blocked"] = api.calls.count("replace") - before
        seen["holder"] = api.spec()["holderIdentity"]

    run(run_elected(a, work))
    assert seen["holder"] == "a" and seen["renewals while blocked"] >= 5
    assert api.spec()["holderIdentity"] == ""  # released at the end, as usual


def test_a_lost_lease_is_reported_at_once_even_while_the_operators_loop_is_blocked():
    """`on_lost` runs on the keeper's thread (the operator exits there), not when the busy loop gets to it."""
    api = FakeLeases()
    a = elector(api, "a")
    lost = threading.Event()
    seen = {}

    async def work():
        api.set_holder("intruder")
        seen["reported while blocked"] = lost.wait(timeout=5)  # blocks the operator's loop

    with pytest.raises(LeadershipLost, match="intruder"):
        run(run_elected(a, work, on_lost=lambda error: lost.set()))
    assert seen == {"reported while blocked": True}


def test_a_lease_api_that_cannot_be_connected_ends_run_elected_instead_of_hanging():
    """The keeper's failure before it ever acquired (no kubeconfig, say) reaches the operator's loop."""
    @contextlib.asynccontextmanager
    async def unreachable():
        raise RuntimeError("no kubeconfig")
        yield

    ran = []

    async def work():
        ran.append(True)

    with pytest.raises(RuntimeError, match="no kubeconfig"):
        run(run_elected(elector(FakeLeases(), "a"), work, connect=unreachable))
    assert ran == []


@pytest.mark.parametrize("flags", [["--lease-duration", "5", "--renew-deadline", "10"],
                                   ["--retry-period", "10"], ["--retry-period", "0"]])
def test_the_command_line_refuses_timings_that_could_let_two_leaders_overlap(flags, capsys):
    from modelops.cli import main

    with pytest.raises(SystemExit) as exit:
        main(["run", *flags])
    assert exit.value.code == 2 and "--renew-deadline" in capsys.readouterr().err


def test_readiness_follows_contact_with_the_api_server():
    now = [100.0]
    api = FakeLeases()
    api.put({"holderIdentity": "a", "leaseDurationSeconds": 1})
    b = LeaderElector(api, namespace="modelops-system", identity="b", clock=lambda: now[0], **FAST)
    assert not b.ready()  # has not heard from the API server yet
    assert run(b.try_acquire()) is False
    assert b.ready()  # a standby that reads the Lease
    now[0] += 1.0
    assert not b.ready()  # a lease duration without an answer
    api.fail = lambda method: (_ for _ in ()).throw(ApiException(status=500, reason="Internal"))
    with pytest.raises(ApiException):
        run(b.try_acquire())
    assert b.ready()  # an error status is an answer too
    api.fail = lambda method: None
    api.set_holder("")
    now[0] += 5.0
    assert run(b.try_acquire()) is True and b.ready()
    now[0] += 50.0
    assert b.ready()  # the leader: it exits when it cannot renew, so it is never unready
