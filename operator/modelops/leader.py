"""Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection does it.

Only the process holding the Lease runs kopf; the others stand by and serve only their
metrics. The holder writes a fresh `renewTime` every `retry_period`. A standby never
trusts the holder's clock: it remembers when (on its own monotonic clock) it last saw
the Lease's record change, and takes the Lease over only once `leaseDurationSeconds` have
passed locally since then with no change. Every write carries the `resourceVersion` it
was decided on, so of two contenders at most one wins.

A leader that cannot renew within `renew_deadline` (shorter than the lease duration, so
that it stops before anyone may take over), or that sees another holder, stops at once:
the process exits with code 1 and, restarted, comes back as a standby. On a clean
shutdown the leader releases the Lease (empty holder), so a standby takes over at once.

The decision is the pure function `decide`; `LeaderElector` does the I/O around it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import logging
import math
import os
import signal
import socket
import threading
import time
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable

from prometheus_client import Gauge

logger = logging.getLogger("modelops.leader")

LEASE_NAME = "modelops-operator"
DEFAULT_NAMESPACE = "modelops-system"
LEASE_DURATION = 15.0  # seconds a standby waits, after the last change it saw, before taking over
RENEW_DEADLINE = 10.0  # a leader that has not renewed for this long stops (must be < LEASE_DURATION)
RETRY_PERIOD = 2.0  # the leader renews, and a standby retries, this often
REQUEST_TIMEOUT = 5.0  # any one API call
STOP_GRACE = 1.0  # how long a leader that lost its lease lets the operator's tasks wind down

LEADER = Gauge("modelops_leader", "1 when this process holds the leader lease and runs the handlers, else 0.")


def default_namespace() -> str:
    return os.environ.get("POD_NAMESPACE") or DEFAULT_NAMESPACE


def default_identity() -> str:
    """POD_NAME in a pod (a container restarted in place gets its lease back at once), else host_pid."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}_{os.getpid()}"


# --- the pure part ------------------------------------------------------------------------


@dataclass(frozen=True)
class LeaseRecord:
    """What a Lease's spec says. Equality is what a standby compares to notice a live holder."""

    holder: str = ""
    duration: float = LEASE_DURATION
    acquire_time: datetime | None = None
    renew_time: datetime | None = None
    transitions: int = 0
    resource_version: str | None = field(default=None, compare=False)

    @classmethod
    def from_lease(cls, lease: Any, default_duration: float = LEASE_DURATION) -> LeaseRecord:
        """From a kubernetes_asyncio V1Lease. A missing duration counts as ours (never as zero)."""
        spec, version = lease.spec, lease.metadata.resource_version
        if spec is None:
            return cls(holder="", duration=default_duration, resource_version=version)
        return cls(holder=spec.holder_identity or "",
                   duration=float(spec.lease_duration_seconds or default_duration),
                   acquire_time=spec.acquire_time, renew_time=spec.renew_time,
                   transitions=int(spec.lease_transitions or 0), resource_version=version)


@dataclass(frozen=True)
class Observation:
    """A record as last seen, and when (local monotonic seconds) it was first seen like that."""

    record: LeaseRecord | None
    at: float


class Action(str, enum.Enum):
    CREATE = "create"  # there is no Lease: create it, held by us
    ACQUIRE = "acquire"  # free, expired, or ours from a previous life: write it as ours
    RENEW = "renew"  # we lead and it is still ours: write a fresh renewTime
    WAIT = "wait"  # another holder's lease is still valid: stand by
    LOST = "lost"  # we led, and the lease is no longer ours: stop at once


def observe(previous: Observation | None, record: LeaseRecord | None, now: float) -> Observation:
    """The observation after reading `record` at `now`: its time moves only when the record changed."""
    if previous is not None and previous.record == record:
        return previous
    return Observation(record, now)


def expired(observation: Observation, now: float) -> bool:
    """Whether the holder has had `duration` seconds, on our clock, to renew and did not.

    The record's own renewTime is never compared with our clock (the holder's clock may be
    skewed): only a change of the record, noticed by us, proves the holder alive.
    """
    record = observation.record
    return record is None or now >= observation.at + record.duration


def decide(record: LeaseRecord | None, observation: Observation | None, now: float, identity: str,
           leading: bool) -> Action:
    """What to do about the Lease as just read (`observation` is of that same read)."""
    if leading:
        return Action.RENEW if record is not None and record.holder == identity else Action.LOST
    if record is None:
        return Action.CREATE
    if not record.holder or record.holder == identity:
        return Action.ACQUIRE
    if observation is None or observation.record != record or not expired(observation, now):
        return Action.WAIT
    return Action.ACQUIRE


def micro_time(moment: datetime) -> str:
    """RFC 3339 with exactly six fractional digits, as the API server's MicroTime demands."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease_spec(record: LeaseRecord | None, identity: str, duration: float, wall_now: datetime) -> dict[str, Any]:
    """The spec that makes the Lease ours as of `wall_now`; a change of holder is one more transition.
    The API counts whole seconds: rounded up, so that standbys never wait less than we assume."""
    taking_over = record is None or record.holder != identity
    acquired = wall_now if taking_over or record.acquire_time is None else record.acquire_time
    transitions = 0 if record is None else record.transitions + (1 if taking_over else 0)
    return {"holderIdentity": identity, "leaseDurationSeconds": max(1, math.ceil(duration)),
            "acquireTime": micro_time(acquired), "renewTime": micro_time(wall_now), "leaseTransitions": transitions}


def released_spec(record: LeaseRecord, wall_now: datetime) -> dict[str, Any]:
    """client-go's release: no holder, so the next contender takes it without waiting."""
    return {"holderIdentity": "", "leaseDurationSeconds": 1, "acquireTime": micro_time(wall_now),
            "renewTime": micro_time(wall_now), "leaseTransitions": record.transitions}


# --- the I/O part -------------------------------------------------------------------------


class LeadershipLost(Exception):
    """This process may no longer act as the leader."""


def _describe(error: BaseException) -> str:
    status = getattr(error, "status", None)
    if status:
        return f"HTTP {status} {getattr(error, 'reason', '') or ''}".strip()
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


class LeaderElector:
    """Acquires, renews and releases one Lease. `leases` is a CoordinationV1Api (or a fake of one), or None until
    `run_elected` connects one on the keeper's own loop."""

    def __init__(self, leases: Any, name: str = LEASE_NAME, namespace: str | None = None,
                 identity: str | None = None, lease_duration: float = LEASE_DURATION,
                 renew_deadline: float = RENEW_DEADLINE, retry_period: float = RETRY_PERIOD,
                 request_timeout: float = REQUEST_TIMEOUT, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)):
        if not 0 < retry_period < renew_deadline < lease_duration:
            raise ValueError(f"need 0 < retry period ({retry_period}) < renew deadline ({renew_deadline})"
                             f" < lease duration ({lease_duration})")
        self.leases, self.name = leases, name
        self.namespace = namespace or default_namespace()
        self.identity = identity or default_identity()
        self.lease_duration, self.renew_deadline = lease_duration, renew_deadline
        self.retry_period, self.request_timeout = retry_period, request_timeout
        self.clock, self.wall_clock = clock, wall_clock
        self.leading = False
        self.renewed_at = 0.0  # when the request of the last successful write was sent
        self.answered_at: float | None = None  # when the API server last answered a Lease call
        self._observation: Observation | None = None
        self._mine: LeaseRecord | None = None  # what we last wrote (its resourceVersion included)
        self._reported_holder: str | None = None

    @property
    def where(self) -> str:
        return f"{self.namespace}/{self.name}"

    # -- one API call each, bounded in time ---------------------------------------------

    async def _call(self, method: str, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        timeout = self.request_timeout if timeout is None else max(0.05, min(timeout, self.request_timeout))
        try:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a cancellation that comes as the
            # call ends, and a renewal loop that misses its cancellation never stops (nor releases the Lease).
            async with asyncio.timeout(timeout):
                result = await getattr(self.leases, method)(*args, _request_timeout=timeout, **kwargs)
        except Exception as error:
            if getattr(error, "status", None):  # an HTTP answer (404, 409) is contact too
                self.answered_at = self.clock()
            raise
        self.answered_at = self.clock()
        return result

    def ready(self) -> bool:
        """The leader, or a standby that heard from the API server within the lease duration."""
        return self.leading or (self.answered_at is not None
                                and self.clock() - self.answered_at < self.lease_duration)

    async def _read(self, timeout: float | None = None) -> LeaseRecord | None:
        try:
            lease = await self._call("read_namespaced_lease", self.name, self.namespace, timeout=timeout)
        except Exception as error:
            if getattr(error, "status", None) == 404:
                return None
            raise
        return LeaseRecord.from_lease(lease, self.lease_duration)

    def _body(self, spec: dict[str, Any], resource_version: str | None) -> dict[str, Any]:
        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if resource_version is not None:
            metadata["resourceVersion"] = resource_version
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": spec}

    async def _write(self, action: Action, record: LeaseRecord | None, timeout: float | None = None) -> LeaseRecord:
        spec = lease_spec(record, self.identity, self.lease_duration, self.wall_clock())
        if action is Action.CREATE:
            lease = await self._call("create_namespaced_lease", self.namespace, self._body(spec, None), timeout=timeout)
        else:  # never without the resourceVersion it was decided on: that would be a blind overwrite
            assert record is not None and record.resource_version is not None
            lease = await self._call("replace_namespaced_lease", self.name, self.namespace,
                                     self._body(spec, record.resource_version), timeout=timeout)
        return LeaseRecord.from_lease(lease, self.lease_duration)

    # -- acquisition ------------------------------------------------------------------------

    async def try_acquire(self) -> bool:
        """One attempt: read the Lease, and take it when `decide` says so. True when we hold it now."""
        started = self.clock()
        record = await self._read()
        now = self.clock()
        self._observation = observe(self._observation, record, now)
        action = decide(record, self._observation, now, self.identity, leading=False)
        if action is Action.WAIT:
            assert record is not None
            if record.holder != self._reported_holder:
                logger.info("Lease %s is held by %s; standing by as %s.", self.where, record.holder, self.identity)
                self._reported_holder = record.holder
            return False
        self._mine = await self._write(action, record)
        self.renewed_at, self.leading = started, True
        LEADER.set(1)
        previous = f" from {record.holder}" if record is not None and record.holder not in ("", self.identity) else ""
        logger.info("Acquired lease %s as %s%s (%s, transitions: %d).", self.where, self.identity, previous,
                    action.value, self._mine.transitions)
        return True

    async def acquire(self) -> None:
        """Return once this process holds the Lease; retry every `retry_period` until then."""
        logger.info("Waiting for lease %s as %s (duration %gs).", self.where, self.identity, self.lease_duration)
        while True:
            started = self.clock()
            try:
                if await self.try_acquire():
                    return
            except Exception as error:  # API errors, conflicts, timeouts: try again
                logger.info("Could not acquire lease %s: %s", self.where, _describe(error))
            await asyncio.sleep(max(0.0, started + self.retry_period - self.clock()))

    # -- renewal ----------------------------------------------------------------------------

    async def try_renew(self, timeout: float | None = None) -> None:
        """One renewal: a write on top of our own last write, or, when that conflicted or failed,
        a fresh read first. Raises LeadershipLost when the Lease is someone else's."""
        started = self.clock()
        if self._mine is None:
            record = await self._read(timeout)
            if decide(record, None, self.clock(), self.identity, leading=True) is Action.LOST:
                holder = record.holder if record is not None else None
                raise LeadershipLost(f"lease {self.where} is now held by {holder or 'nobody'}"
                                     if record is not None else f"lease {self.where} was deleted")
            self._mine = record
        try:
            self._mine = await self._write(Action.RENEW, self._mine, timeout)
        except BaseException:
            self._mine = None  # find out what is there before the next try
            raise
        self.renewed_at = started

    async def hold(self) -> None:
        """Renew every `retry_period`; raise LeadershipLost past `renew_deadline` without a renewal,
        or at once when another holder shows up. Never returns otherwise."""
        while True:
            deadline = self.renewed_at + self.renew_deadline
            await asyncio.sleep(max(0.0, min(self.renewed_at + self.retry_period, deadline) - self.clock()))
            while True:
                remaining = deadline - self.clock()
                if remaining <= 0:
                    self._lose()
                    raise LeadershipLost(f"could not renew lease {self.where} within {self.renew_deadline:g}s")
                attempt, blind = self.clock(), self._mine is not None
                try:
                    await self.try_renew(timeout=remaining)
                    break
                except LeadershipLost:
                    self._lose()
                    raise
                except Exception as error:
                    logger.warning("Failed to renew lease %s (%.1fs left): %s", self.where,
                                   max(0.0, deadline - self.clock()), _describe(error))
                    if blind and getattr(error, "status", None) == 409:
                        continue  # someone wrote the Lease since our last write: read it now, not later
                await asyncio.sleep(max(0.0, min(attempt + self.retry_period, deadline) - self.clock()))

    def _lose(self) -> None:
        self.leading, self._mine = False, None
        LEADER.set(0)

    # -- release ----------------------------------------------------------------------------

    async def release(self) -> bool:
        """Give the Lease up (empty holder) if we still hold it; True when it was released."""
        if not self.leading:
            return False
        self.leading = False
        LEADER.set(0)
        try:
            record = self._mine or await self._read()
            for _ in range(2):
                if record is None or record.holder != self.identity:
                    return False
                body = self._body(released_spec(record, self.wall_clock()), record.resource_version)
                try:
                    await self._call("replace_namespaced_lease", self.name, self.namespace, body)
                    logger.info("Released lease %s.", self.where)
                    return True
                except Exception as error:
                    if getattr(error, "status", None) != 409:
                        raise
                    record = await self._read()
        except Exception as error:
            logger.warning("Could not release lease %s: %s", self.where, _describe(error))
        finally:
            self._mine = None
        return False


async def run_elected(elector: LeaderElector, work: Callable[[], Awaitable[Any]], *,
                      connect: Callable[[], AbstractAsyncContextManager[Any]] | None = None,
                      on_lost: Callable[[LeadershipLost], None] | None = None,
                      stop_grace: float = STOP_GRACE) -> None:
    """Acquire the Lease, then run `work()` (the operator) while renewing it.

    The Lease is kept by a thread of its own, on its own event loop, with its own API client (`connect()` yields
    the Lease API for that loop; without it, `elector.leases` is used as it is). So a busy or blocked operator loop
    neither delays a renewal nor hides a loss: a leader must stop before a standby may take over, whatever its
    handlers are doing.
    - `work` returns (kopf stopped on SIGTERM, say): stop renewing, release, return.
    - SIGTERM/SIGINT while standing by: return without ever running `work`.
    - The Lease is lost: `on_lost(error)` is called at once, on the keeper's thread (it should end the process);
      then `work` is cancelled, given at most `stop_grace` seconds, and LeadershipLost raised. The caller must then
      end the process at once.
    """
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stopping.set)
            signals.append(signum)
    LEADER.set(0)
    keeper = _LeaseKeeper(elector, connect, on_lost, loop)
    try:
        # The stop watcher exists before `work` starts: kopf treats the tasks that existed before it as not its
        # own, and leaves them alone when it stops.
        stopped = asyncio.create_task(stopping.wait(), name="stop signal")
        try:
            await asyncio.wait({keeper.acquired, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not keeper.acquired.done():
                logger.info("Stopped while standing by for lease %s.", elector.where)
                return  # the keeper releases the Lease in case its acquisition had just won
            keeper.acquired.result()
            working = asyncio.create_task(_run(work), name="elected work")
            try:
                await asyncio.wait({keeper.lost, working, stopped}, return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                working.cancel()
                raise
            if keeper.lost.done():
                error = keeper.lost.result()
                logger.error("Leadership lost: %s. Stopping now.", error)
                working.cancel()
                await asyncio.wait({working}, timeout=stop_grace)
                raise error
            if not working.done():  # a stop signal before kopf installed its own handlers
                working.cancel()
                await asyncio.wait({working})
            if not working.cancelled():
                working.result()  # re-raise the operator's own failure, after releasing (below)
        finally:
            stopped.cancel()
            await keeper.stop()
        if keeper.lost.done():  # lost while the work was ending
            raise keeper.lost.result()
    finally:
        for signum in signals:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(signum)


class _LeaseKeeper:
    """The elector on a thread and event loop of its own: acquires, then renews until told to stop (then
    releases) or until the Lease is lost. Reports to the operator's loop through `acquired` and `lost`."""

    def __init__(self, elector: LeaderElector, connect: Callable[[], AbstractAsyncContextManager[Any]] | None,
                 on_lost: Callable[[LeadershipLost], None] | None, main: asyncio.AbstractEventLoop):
        self.elector, self.connect, self.on_lost, self.main = elector, connect, on_lost, main
        self.acquired: asyncio.Future[None] = main.create_future()
        self.lost: asyncio.Future[LeadershipLost] = main.create_future()
        self.finished: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._main, name=f"lease {elector.where}", daemon=True)
        self._thread.start()
        self._started.wait()

    async def stop(self) -> None:
        """Stop acquiring or renewing, release the Lease if held, and wait for the thread to end."""
        assert self._loop is not None and self._stop is not None
        with contextlib.suppress(RuntimeError):  # its loop has already ended
            self._loop.call_soon_threadsafe(self._stop.set)
        # Shielded: a caller given up (a timeout) must not cancel the future the thread is yet to settle.
        await asyncio.shield(asyncio.wrap_future(self.finished))

    def _main(self) -> None:
        try:
            asyncio.run(self._keep())
        except BaseException as error:  # noqa: BLE001 - e.g. no API client: the operator's loop must hear of it
            self._report(self.acquired, error=error)
            self._report(self.lost, LeadershipLost(f"lease {self.elector.where}: {_describe(error)}"))
        finally:
            self.finished.set_result(None)

    def _report(self, future: asyncio.Future[Any], value: Any = None, error: BaseException | None = None) -> None:
        def settle() -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(value)
        with contextlib.suppress(RuntimeError):  # the operator's loop has ended
            self.main.call_soon_threadsafe(settle)

    async def _keep(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        self._started.set()
        async with self.connect() if self.connect is not None else contextlib.nullcontext(self.elector.leases) as leases:
            self.elector.leases = leases
            if not await self._until_stopped(self.elector.acquire()):
                await self.elector.release()  # in case the acquisition had just won
                return
            self._report(self.acquired)
            try:
                if await self._until_stopped(self.elector.hold()):
                    raise LeadershipLost(f"lease {self.elector.where}: renewal ended")
            except LeadershipLost as error:
                if self.on_lost is not None:
                    self.on_lost(error)
                self._report(self.lost, error)
                return
            except Exception as error:  # noqa: BLE001 - any end of renewal is the end of leadership
                self._report(self.lost, LeadershipLost(f"lease {self.elector.where}: {_describe(error)}"))
                return
            await self.elector.release()

    async def _until_stopped(self, step: Awaitable[Any]) -> bool:
        """True when `step` ended first (its exception raised), False when told to stop first (it is cancelled)."""
        assert self._stop is not None
        task = asyncio.ensure_future(step)
        stopped = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
        if task.done():
            task.result()
            return True
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return False


async def _run(work: Callable[[], Awaitable[Any]]) -> Any:
    return await work()
