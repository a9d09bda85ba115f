"""In-memory stand-ins for everything `reconcile.run_round` does I/O with, and ways to break them.

What is faked, and why:

- FakeKube: the Kubernetes API calls the routers and the round make (get, create, patch,
  patch_status, list, delete) on a dict keyed by (plural, namespace, name). It keeps the
  API server's rules the operator relies on: RFC 7386 merge patches, a resourceVersion
  bumped on every write, a conditional write (metadata.resourceVersion in the body) that
  loses a race is 409, generation bumped on spec changes only, create of an existing name
  is 409, the status subresource writes status only, the main resource ignores status, and
  a body holding NaN/Infinity is refused with 400 (the API server's JSON has none).
  A `hook` is consulted before and after every call and may raise: ApiException 409/429/
  500/503, asyncio.TimeoutError (a hung call that timed out), or `Crash` - the operator
  process died at that instruction, before the write or after it (written, never learned).
  Calls made by the world (a user's kubectl, a serving controller) go through `world_*`
  methods that no fault reaches.
- KServeController / GatewayController: what KServe's serverless controller (with Knative's
  routing) and a Gateway API implementation write to status, small and named as stand-ins,
  plus `live_weights`: the traffic each version really receives from the backend object.
- FakeProvider and `provider_factory`: the Prometheus provider, answering each PromQL text by
  the version label rendered into it, with the values and the ProviderErrors the real
  provider produces (scalars, strings and garbage are `bad_response` there).
- Events: a list of (type, reason, message); FakeClock: the only clock of a simulation.
"""

from __future__ import annotations

import asyncio
import copy
import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from kubernetes_asyncio.client.exceptions import ApiException

from modelops.analysis.provider import ProviderError
from modelops.kube import Resource
from modelops.rollout.engine import rfc3339


class Crash(BaseException):
    """The operator process died at this instruction (not an Exception: nothing may catch it)."""


# --- merge patches ----------------------------------------------------------------------------

def clone(obj: Any) -> Any:
    """A deep copy of a JSON value (faster than copy.deepcopy, and it proves the value is JSON)."""
    return json.loads(json.dumps(obj))


def merge(live: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge, null removes, anything else replaces."""
    if not isinstance(patch, dict):
        return clone(patch)
    out = dict(live) if isinstance(live, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge(out.get(key), value)
    return out


# --- the Kubernetes API -----------------------------------------------------------------------

@dataclass(frozen=True)
class Call:
    index: int
    """Position among the operator's calls on this FakeKube, from 0."""
    verb: str
    plural: str
    name: str | None


FaultHook = Callable[[Call, str], None]
"""(call, "before"|"after") -> None, or raises the fault."""

ERRORS = {409: "Conflict", 429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable", 400: "BadRequest",
          404: "NotFound"}


def api_error(status: int) -> ApiException:
    return ApiException(status=status, reason=ERRORS.get(status, "Error"))


@dataclass(frozen=True)
class Fault:
    """One injected fault: `kind` is 409, 429, 500, 503, "timeout" or "crash"; `when` before or after the call."""

    kind: int | str
    when: str = "before"

    def fire(self) -> None:
        if self.kind == "crash":
            raise Crash(f"crash {self.when} the call")
        if self.kind == "timeout":
            raise asyncio.TimeoutError()
        raise api_error(int(self.kind))

    def __str__(self) -> str:
        return f"{self.kind}@{self.when}"


class FaultQueue:
    """A hook: the next calls get these faults in order (None: that call goes through)."""

    def __init__(self, faults: list[Fault | None]):
        self.pending = list(faults)
        self.fired: list[tuple[Call, Fault]] = []
        self._current: Fault | None = None

    def __call__(self, call: Call, phase: str) -> None:
        if phase == "before":
            self._current = self.pending.pop(0) if self.pending else None
        fault, self._current = self._current, (self._current if phase == "before" else None)
        if fault is not None and fault.when == phase:
            self._current = None
            self.fired.append((call, fault))
            fault.fire()


class FailOn:
    """A hook: the calls matching (verb, plural) fail with `fault`, `times` times, after `skip` such calls."""

    def __init__(self, verb: str, plural: str, fault: Fault, times: int = 1, skip: int = 0):
        self.verb, self.plural, self.fault, self.times, self.skip = verb, plural, fault, times, skip
        self.seen = 0
        self.fired: list[tuple[Call, Fault]] = []

    def __call__(self, call: Call, phase: str) -> None:
        if call.verb != self.verb or call.plural != self.plural:
            return
        if phase == "before":
            self.seen += 1
        if self.seen > self.skip and len(self.fired) < self.times and self.fault.when == phase:
            self.fired.append((call, self.fault))
            self.fault.fire()


class CrashAt:
    """A hook: the operator dies at its `index`-th call from now, before or after it."""

    def __init__(self, index: int, when: str):
        self.index, self.when, self.seen = index, when, -1
        self.fired: list[tuple[Call, Fault]] = []

    def __call__(self, call: Call, phase: str) -> None:
        if phase == "before":
            self.seen += 1
        if self.seen == self.index and phase == self.when:
            self.fired.append((call, Fault("crash", self.when)))
            raise Crash(f"crash {self.when} call {self.index} ({call.verb} {call.plural} {call.name})")


Key = tuple[str, str, str]


class FakeKube:
    """The API server's behaviour the operator relies on, for the operator's own calls."""

    def __init__(self) -> None:
        self.objects: dict[Key, dict[str, Any]] = {}
        self.revisions: dict[Key, list[dict[str, Any]]] = {}
        """Every stored version of each object, oldest first (what a watch would deliver)."""
        self._rv = 100
        self.hook: FaultHook | None = None
        self.calls: list[tuple[Call, str]] = []
        """(call, outcome): "ok", or the fault / error that ended it."""
        self.nan_rejections: list[tuple[Call, str]] = []
        self.status_writes: dict[Key, int] = {}
        """resourceVersion of the last status write on each object."""
        self.now: Callable[[], datetime] = lambda: datetime(2026, 1, 1, tzinfo=timezone.utc)

    # --- plumbing ------------------------------------------------------------------------

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _store(self, key: Key, obj: dict[str, Any]) -> dict[str, Any]:
        obj["metadata"] = {**obj["metadata"], "resourceVersion": self._next_rv()}
        self.objects[key] = obj
        self.revisions.setdefault(key, []).append(obj)  # stored objects are never mutated: writes replace them
        return obj

    def _checked(self, call: Call, body: Any) -> None:
        try:
            json.dumps(body, allow_nan=False)
        except ValueError as e:
            self.nan_rejections.append((call, str(e)))
            raise api_error(400) from None

    async def _do(self, verb: str, resource: Resource, name: str | None, work: Callable[[Call], Any]) -> Any:
        call = Call(len(self.calls), verb, resource.plural, name)
        entry = [call, "ok"]
        self.calls.append(entry)  # type: ignore[arg-type]
        try:
            if self.hook is not None:
                self.hook(call, "before")
            result = work(call)
            if self.hook is not None:
                self.hook(call, "after")
            return result
        except BaseException as e:
            entry[1] = f"{type(e).__name__}:{getattr(e, 'status', '') or ''}"
            raise

    # --- the world's own writes: kubectl users and serving controllers (never faulted) ---------

    def world_put(self, resource: Resource, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Stores a copy of `obj`; returns the stored object (read-only)."""
        obj = clone(obj)
        meta = obj.setdefault("metadata", {})
        meta.setdefault("namespace", namespace)
        meta.setdefault("generation", 1)
        meta.setdefault("creationTimestamp", rfc3339(self.now()))
        meta.setdefault("uid", f"uid-{meta['name']}-{self._rv}")
        obj.setdefault("apiVersion", resource.api_version)
        obj.setdefault("kind", resource.kind)
        return self._store((resource.plural, namespace, meta["name"]), obj)

    def world_patch(self, resource: Resource, namespace: str, name: str, patch: dict[str, Any],
                    status: bool = False) -> dict[str, Any]:
        return self._patch(resource, namespace, name, patch, status)

    def world_delete(self, resource: Resource, namespace: str, name: str) -> None:
        self.objects.pop((resource.plural, namespace, name), None)

    def peek(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        obj = self.objects.get((resource.plural, namespace, name))
        return clone(obj) if obj is not None else None

    def view(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        """The stored object itself, read-only (for the world and the invariants)."""
        return self.objects.get((resource.plural, namespace, name))

    def _patch(self, resource: Resource, namespace: str, name: str, patch: dict[str, Any], status: bool) -> dict[str, Any]:
        key = (resource.plural, namespace, name)
        live = self.objects.get(key)
        if live is None:
            raise api_error(404)
        if not isinstance(patch, dict):
            raise api_error(400)
        wanted_rv = (patch.get("metadata") or {}).get("resourceVersion")
        if wanted_rv is not None and wanted_rv != live["metadata"]["resourceVersion"]:
            raise api_error(409)
        if status:
            new = dict(live)
            if "status" in patch:
                new["status"] = merge(live.get("status"), patch["status"])
                if not new["status"]:
                    new.pop("status")
        else:
            body = {k: v for k, v in patch.items() if k != "status"}  # the main resource ignores status
            meta_patch = dict(body.get("metadata") or {})
            for fixed in ("resourceVersion", "generation", "uid", "creationTimestamp", "name", "namespace"):
                meta_patch.pop(fixed, None)
            if "metadata" in body:
                body["metadata"] = meta_patch
            new = merge(live, body)
            new["metadata"] = dict(new["metadata"])  # never write into the stored (shared) metadata
            new["metadata"]["generation"] = live["metadata"].get("generation", 1)
            if new.get("spec") != live.get("spec"):
                new["metadata"]["generation"] += 1
        if new == live:
            return live  # a no-op write does not bump resourceVersion
        stored = self._store(key, new)  # shares unchanged parts with `live`: both are immutable once stored
        if status:
            self.status_writes[key] = int(stored["metadata"]["resourceVersion"])
        return stored

    # --- the operator's calls (faultable) ----------------------------------------------------

    async def get(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._do("get", resource, name, lambda call: self.peek(resource, namespace, name))

    async def create(self, resource: Resource, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]

        def work(call: Call) -> dict[str, Any]:
            self._checked(call, body)
            if (resource.plural, namespace, name) in self.objects:
                raise api_error(409)
            obj = {k: v for k, v in clone(body).items() if k != "status"}
            obj["metadata"] = {k: v for k, v in obj["metadata"].items() if k != "resourceVersion"}
            return clone(self.world_put(resource, namespace, obj))

        return await self._do("create", resource, name, work)

    async def patch(self, resource: Resource, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        def work(call: Call) -> dict[str, Any]:
            self._checked(call, patch)
            return clone(self._patch(resource, namespace, name, patch, status=False))

        return await self._do("patch", resource, name, work)

    async def patch_status(self, resource: Resource, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        def work(call: Call) -> dict[str, Any]:
            self._checked(call, patch)
            return clone(self._patch(resource, namespace, name, patch, status=True))

        return await self._do("patch_status", resource, name, work)

    async def list(self, resource: Resource, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        def work(call: Call) -> list[dict[str, Any]]:
            wanted = dict(part.split("=", 1) for part in label_selector.split(",") if part)
            return [clone(o) for (plural, ns, _), o in sorted(self.objects.items())
                    if plural == resource.plural and ns == namespace
                    and all((o["metadata"].get("labels") or {}).get(k) == v for k, v in wanted.items())]

        return await self._do("list", resource, None, work)

    async def delete(self, resource: Resource, namespace: str, name: str) -> bool:
        return await self._do("delete", resource, name,
                              lambda call: self.objects.pop((resource.plural, namespace, name), None) is not None)


# --- serving controllers (stand-ins) ----------------------------------------------------------

def dig(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


@dataclass
class Revision:
    name: str
    template: str
    uri: str | None
    ready: bool = False


class KServeController:
    """Stand-in for KServe's serverless predictor reconciler and Knative's routing.

    - Any change of the predictor other than canaryTrafficPercent makes a new revision (not ready
      until a settle says so).
    - Routing (KServe's ksvc traffic + Knative): with canaryTrafficPercent P set and a rolled-out
      revision, the `latest` target gets P and the rolled-out revision 100-P; otherwise the `latest`
      target gets 100. Knative's `latest` target is the latest READY revision, which need not be the
      latest created one (it may be an older candidate's).
    - latestRolledoutRevision becomes the latest ready revision whenever that one gets all traffic
      (P unset, P == 100, or no rolled-out revision yet).
    - status.components.predictor: latestCreatedRevision, latestReadyRevision,
      latestRolledoutRevision, traffic[]; status.observedGeneration = the generation reconciled.
    """

    def __init__(self) -> None:
        self.revisions: dict[Key, list[Revision]] = {}
        self.rolled: dict[Key, str | None] = {}

    def _plan(self, key: Key, isvc: dict[str, Any], make_ready: bool) -> tuple[list[Revision], str | None, dict[str, int]]:
        predictor = dig(isvc, "spec", "predictor") or {}
        template = json.dumps({k: v for k, v in predictor.items() if k != "canaryTrafficPercent"}, sort_keys=True)
        revisions = [copy.copy(r) for r in self.revisions.get(key, [])]
        if not revisions or revisions[-1].template != template:
            revisions.append(Revision(f"{key[2]}-predictor-{len(revisions) + 1:05d}", template,
                                      dig(predictor, "model", "storageUri")))
        if make_ready:
            revisions[-1].ready = True
        rolled = self.rolled.get(key)
        ready = [r.name for r in revisions if r.ready]
        latest_ready = ready[-1] if ready else None
        percent = predictor.get("canaryTrafficPercent")
        split: dict[str, int] = {}
        if latest_ready is not None:
            if percent is not None and rolled is not None:
                split[latest_ready] = split.get(latest_ready, 0) + int(percent)
                split[rolled] = split.get(rolled, 0) + 100 - int(percent)
            else:
                split[latest_ready] = 100
            if percent is None or percent == 100 or rolled is None:
                rolled = latest_ready
        return revisions, rolled, {r: p for r, p in split.items() if p}

    def settle(self, kube: FakeKube, resource: Resource, namespace: str, name: str, ready: bool = True) -> None:
        key = (resource.plural, namespace, name)
        isvc = kube.peek(resource, namespace, name)
        if isvc is None:
            return
        revisions, rolled, split = self._plan(key, isvc, ready)
        self.revisions[key], self.rolled[key] = revisions, rolled
        ready_names = [r.name for r in revisions if r.ready]
        status = {
            "observedGeneration": isvc["metadata"].get("generation"),
            "components": {"predictor": {
                "latestCreatedRevision": revisions[-1].name,
                "latestReadyRevision": ready_names[-1] if ready_names else None,
                "latestRolledoutRevision": rolled,
                "traffic": [{"revisionName": r, "percent": p, "latestRevision": r == (ready_names or [None])[-1],
                             "tag": "latest" if r == (ready_names or [None])[-1] else "prev"}
                            for r, p in sorted(split.items())],
            }},
        }
        kube.world_patch(resource, namespace, name, {"status": merge_replace(isvc.get("status"), status)}, status=True)

    def live_uris(self, kube: FakeKube, resource: Resource, namespace: str, name: str) -> dict[str | None, int]:
        """The traffic KServe sends to each artifact URI once it has reconciled the spec as it is now,
        with no revision becoming ready meanwhile (so the operator's last write counts at once)."""
        key = (resource.plural, namespace, name)
        isvc = kube.view(resource, namespace, name)
        if isvc is None:
            return {}
        revisions, _, split = self._plan(key, isvc, False)
        uri = {r.name: r.uri for r in revisions}
        out: dict[str | None, int] = {}
        for revision, percent in split.items():
            out[uri[revision]] = out.get(uri[revision], 0) + percent
        return out

    def rolled_out_uri(self, kube: FakeKube, resource: Resource, namespace: str, name: str) -> str | None:
        key = (resource.plural, namespace, name)
        isvc = kube.view(resource, namespace, name)
        if isvc is None:
            return None
        revisions, rolled, _ = self._plan(key, isvc, False)
        return next((r.uri for r in revisions if r.name == rolled), None)


def merge_replace(old: Any, new: dict[str, Any]) -> dict[str, Any]:
    """A merge patch that makes `old` exactly `new` (nulls for keys that go)."""
    out: dict[str, Any] = {k: None for k in (old or {}) if k not in new} if isinstance(old, dict) else {}
    out.update(new)
    return out


class GatewayController:
    """Stand-in for a Gateway API implementation: for each HTTPRoute it reports one parent with
    Accepted=True and ResolvedRefs (True when `ready`: the Services behind its refs answer), both
    for the route's current generation. Traffic follows backendRefs weights as written."""

    def settle(self, kube: FakeKube, resource: Resource, namespace: str, name: str, ready: bool = True) -> None:
        route = kube.peek(resource, namespace, name)
        if route is None:
            return
        generation = route["metadata"].get("generation")

        def condition(kind: str, ok: bool) -> dict[str, Any]:
            return {"type": kind, "status": "True" if ok else "False", "reason": kind if ok else "BackendNotFound",
                    "observedGeneration": generation, "lastTransitionTime": rfc3339(kube.now())}

        status = {"parents": [{"parentRef": {"name": "gateway"}, "controllerName": "sim.example/gateway",
                               "conditions": [condition("Accepted", True), condition("ResolvedRefs", ready)]}]}
        kube.world_patch(resource, namespace, name, {"status": merge_replace(route.get("status"), status)}, status=True)

    @staticmethod
    def live_services(kube: FakeKube, resource: Resource, namespace: str, name: str) -> dict[str, int]:
        route = kube.view(resource, namespace, name)
        out: dict[str, int] = {}
        for rule in dig(route, "spec", "rules") or []:
            for ref in (rule or {}).get("backendRefs") or []:
                out[ref["name"]] = out.get(ref["name"], 0) + int(ref.get("weight", 1))
        return out


# --- Prometheus ---------------------------------------------------------------------------------

BEHAVIOURS = ("good", "bad", "+inf", "-inf", "nan", "none", "few", "inf_samples", "timeout", "unreachable", "http",
              "bad_response", "rejected", "many_series", "hang", "credentials", "factory_timeout")
"""What the metrics of one role (candidate or stable) do; the last two break the provider itself."""

VALUES = {"sim_error_ratio": {"good": 0.01, "bad": 0.5}, "sim_accuracy": {"good": 0.9, "bad": 0.5},
          "sim_requests": {"good": 1000.0, "bad": 1000.0}}


class FakeProvider:
    """Answers PromQL by its metric name and its rendered version label, as the schedule says.

    `role(version)` says whether a version is the candidate or the stable one. Errors mirror the
    real provider: a scalar, a string or garbage is ProviderError("bad_response"), a vector of
    several series "many_series"; NaN comes back raw (stricter than the real provider, which
    turns it into None)."""

    def __init__(self, behaviour: dict[str, str], role: Callable[[str], str]):
        self.behaviour, self.role = behaviour, role
        self.queries: list[str] = []

    async def query(self, promql: str, at: datetime) -> float | None:
        self.queries.append(promql)
        metric = re.match(r"\s*([a-zA-Z_:][a-zA-Z0-9_:]*)", promql)
        version = re.search(r'version="([^"]*)"', promql)
        if metric is None or version is None:
            raise ProviderError("bad_response", "sim: not a query this simulation knows")
        how = self.behaviour.get(self.role(version.group(1)), "good")
        name = metric.group(1)
        if how in ("good", "bad"):
            return VALUES[name][how]
        if how == "few":
            return 3.0 if name == "sim_requests" else VALUES[name]["good"]
        if how == "inf_samples":
            return math.inf if name == "sim_requests" else VALUES[name]["good"]
        if how in ("credentials", "factory_timeout"):
            return VALUES[name]["good"]  # the factory fails before any query
        if how == "hang":
            raise asyncio.TimeoutError()
        special = {"+inf": math.inf, "-inf": -math.inf, "nan": math.nan, "none": None}
        if how in special:
            return special[how]
        raise ProviderError(how, f"sim Prometheus: {how}")  # type: ignore[arg-type]


def provider_factory(behaviour: dict[str, str], role: Callable[[str], str], made: list[FakeProvider] | None = None):
    """`async (config, namespace, cap) -> provider`, failing as a provider_for would when the schedule says so."""

    async def make(config: Any, namespace: str, cap: float) -> FakeProvider:
        broken = set(behaviour.values())
        if "credentials" in broken:
            raise ProviderError("credentials", "secret prom-token has no key 'token'")
        if "factory_timeout" in broken:
            raise asyncio.TimeoutError()
        provider = FakeProvider(behaviour, role)
        if made is not None:
            made.append(provider)
        return provider

    return make


# --- events and time ----------------------------------------------------------------------------

@dataclass
class Events:
    posted: list[tuple[str, str, str]] = field(default_factory=list)

    def __call__(self, obj: Any, type_: str, reason: str, message: str) -> None:
        self.posted.append((type_, reason, message))

    def reasons(self) -> list[str]:
        return [r for _, r, _ in self.posted]


@dataclass
class FakeClock:
    now: datetime = datetime(2026, 1, 1, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
