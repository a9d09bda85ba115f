"""In-memory stand-ins for everything `reconcile.run_round` does I/O with, and ways to break them.

What is faked, and why:

- FakeKube: the Kubernetes API calls the routers and the round make (get, create, patch,
  apply, patch_status, list, delete) on a dict keyed by (plural, namespace, name). It keeps
  the API server's rules the operator relies on: RFC 7386 merge patches, a resourceVersion
  bumped on every write, a conditional write (metadata.resourceVersion in the body) that
  loses a race is 409, generation bumped on spec changes only, create of an existing name
  is 409, the status subresource writes status only, the main resource ignores status, and
  a body holding NaN/Infinity is refused with 400 (the API server's JSON has none).
  Field ownership as server-side apply keeps it, in metadata.managedFields (fieldsV1), one
  entry per (manager, operation, subresource): an apply by manager M owns the leaves of its
  configuration, removes the leaves M owned before and no longer sends unless another
  manager owns them too (with the objects that leaves empty), and, where another manager owns a leaf with another value, is a 409
  naming that manager and the field, or with force takes the leaf from it; it creates the
  object when absent (with RBAC `create`, for the operator's calls: deploy/rbac.yaml), and a
  resourceVersion in it is a precondition on an existing object. An Update (create, merge
  patch) gives its manager the leaves it changes, taking them from the others, and a leaf it
  removes is nobody's. Not tracked, for speed, where nothing here reads it: status, and the
  operator's own ModelDeployments and ModelVersions (`FakeKube.untracked`).
  Objects are owned key by key and lists whole, as the backend CRDs'
  lists the operator writes are atomic (Seldon's predictors, the HTTPRoute's rules, the
  Experiment's candidates, a Model's requirements).
  A `hook` is consulted before and after every call and may raise: ApiException 409/429/
  500/503, asyncio.TimeoutError (a hung call that timed out), or `Crash` - the operator
  process died at that instruction, before the write or after it (written, never learned).
  Calls made by the world (a user's kubectl, a GitOps tool's apply, a serving controller) go
  through `world_*` methods that no fault reaches.
- KServeController / KServeStandardController / GatewayController / SeldonController / SeldonV2Controller:
  what KServe's serverless controller (with Knative's routing), KServe's Standard-mode controller (with a
  Gateway for the route in front of its predictor Services), a Gateway API implementation (and the Services'
  EndpointSlices the Gateway reads readiness from), Seldon Core v1's controller and Seldon Core
  v2's scheduler write to status, small and named as stand-ins, plus what each version really
  receives from the backend objects (live traffic, copies, cohorts).
- FakeProvider and `provider_factory`: the Prometheus provider, answering each PromQL text by
  the version label rendered into it, with the values and the ProviderErrors the real
  provider produces (scalars, strings and garbage are `bad_response` there); `AnswersAfter` runs
  something (watch events, say) before it answers each query: a measurement in flight meanwhile.
- Events: a list of (type, reason, message); FakeClock: the only clock of a simulation.
"""

from __future__ import annotations

import asyncio
import copy
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Awaitable, Callable

from kubernetes_asyncio.client.exceptions import ApiException

from modelops.analysis.gate import FairGate
from modelops.analysis.provider import Asker, ProviderError
from modelops.kube import FIELD_MANAGER, Resource
from modelops.rollout.values import rfc3339
from modelops.routers.inference_service import BOOKKEEPING
from modelops.routers.kserve import KServeRouter
from playground.standin_backends import kserve_disallowed
from modelops.routers.kserve_config import CONFIG_MAP, DEFAULT_NAMESPACE, KServeSettings


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


# --- field ownership (server-side apply) ------------------------------------------------------

FieldPath = tuple[str, ...]
NOBODYS: frozenset[FieldPath] = frozenset({
    ("apiVersion",), ("kind",), ("metadata", "name"), ("metadata", "namespace"), ("metadata", "uid"),
    ("metadata", "resourceVersion"), ("metadata", "generation"), ("metadata", "creationTimestamp"),
    ("metadata", "managedFields"), ("metadata", "selfLink"), ("metadata", "deletionTimestamp")})
"""System fields: in no manager's set."""
Owner = tuple[str, str, str]
"""(manager, operation, subresource ("" for the main resource))."""


def leaves(obj: Any, status: bool = False) -> dict[FieldPath, Any]:
    """The fields an owner can hold, path -> value: the main resource's (all but status), or status's.
    Objects key by key (an empty one holds none), lists and scalars whole."""
    out: dict[FieldPath, Any] = {}

    def walk(value: Any, path: FieldPath) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, path + (key,))
        elif path not in NOBODYS:
            out[path] = value

    for key, value in (obj or {}).items():
        if (key == "status") == status:
            walk(value, (key,))
    return out


def fields_v1(paths: set[FieldPath]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for path in sorted(paths):
        node = root
        for key in path:
            node = node.setdefault(f"f:{key}", {})
    return root


def _paths_of(fields: dict[str, Any], prefix: FieldPath = ()) -> set[FieldPath]:
    out: set[FieldPath] = set()
    for key, sub in fields.items():
        path = prefix + (key[2:],)
        out |= _paths_of(sub, path) if sub else {path}
    return out


def owners_of(obj: dict[str, Any] | None) -> dict[Owner, set[FieldPath]]:
    return {(e["manager"], e["operation"], e.get("subresource", "")): _paths_of(e["fieldsV1"])
            for e in (((obj or {}).get("metadata") or {}).get("managedFields") or [])}


def _times(obj: dict[str, Any] | None) -> dict[Owner, str]:
    return {(e["manager"], e["operation"], e.get("subresource", "")): e.get("time", "")
            for e in (((obj or {}).get("metadata") or {}).get("managedFields") or [])}


def _with_owners(obj: dict[str, Any], owners: dict[Owner, set[FieldPath]], times: dict[Owner, str]) -> dict[str, Any]:
    entries = [{"manager": m, "operation": op, "apiVersion": obj.get("apiVersion", ""), "time": times[(m, op, sub)],
                "fieldsType": "FieldsV1", "fieldsV1": fields_v1(paths), **({"subresource": sub} if sub else {})}
               for (m, op, sub), paths in owners.items() if paths]
    meta = {k: v for k, v in obj["metadata"].items() if k != "managedFields"}
    if entries:
        meta["managedFields"] = entries
    return {**obj, "metadata": meta}


def _value_at(obj: Any, path: FieldPath) -> tuple[bool, Any]:
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return False, None
        obj = obj[key]
    return True, obj


def _set(obj: dict[str, Any], path: FieldPath, value: Any) -> None:
    for key in path[:-1]:
        if not isinstance(obj.get(key), dict):
            obj[key] = {}
        obj = obj[key]
    obj[path[-1]] = clone(value)


def remove_leaf(obj: dict[str, Any], path: FieldPath) -> None:
    """Removes the leaf at `path`, and the objects that removal leaves empty: structured-merge-diff makes an object
    whose every field went null, and the API server drops a null field of a custom resource."""
    parents = [obj]
    for key in path[:-1]:
        parents.append(parents[-1].get(key))
        if not isinstance(parents[-1], dict):
            return
    parents[-1].pop(path[-1], None)
    for parent, key in zip(reversed(parents[:-1]), reversed(path[:-1])):
        if parent[key] != {}:
            break
        parent.pop(key)


def field_text(path: FieldPath) -> str:
    return "".join(f".{key}" for key in path)


def apply_conflict(conflicts: list[tuple[str, FieldPath]]) -> ApiException:
    """409 as the API server words it: `Apply failed with 1 conflict: conflict with "m": .a.b`, or N conflicts
    grouped by manager; an Update manager is named with its apiVersion and time. `conflicts`: (manager words, path)."""
    if len(conflicts) == 1:
        message = f"Apply failed with 1 conflict: conflict with {conflicts[0][0]}: {field_text(conflicts[0][1])}"
    else:
        message = f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(
            f"conflicts with {m}:\n" + "\n".join(f"- {field_text(p)}" for n, p in conflicts if n == m)
            for m in sorted({m for m, _ in conflicts}))
    error = api_error(409)
    error.body = json.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict",
                             "code": 409, "message": message, "details": {"causes": [
                                 {"reason": "FieldManagerConflict", "message": f"conflict with {m}",
                                  "field": field_text(p)} for m, p in conflicts]}})
    return error


def _manager_words(owner: Owner, obj: dict[str, Any], times: dict[Owner, str]) -> str:
    manager, operation, subresource = owner
    words = f'"{manager}"' + (f' with subresource "{subresource}"' if subresource else "")
    return words + (f" using {obj.get('apiVersion')} at {times.get(owner)}" if operation == "Update" else "")


def server_side_apply(live: dict[str, Any] | None, config: dict[str, Any], manager: str, force: bool,
                      time: str) -> dict[str, Any]:
    """`live` after `manager` applied `config` (main resource); ApiException 409 on conflicts without force.
    For an absent object (`live` None) the result is the created object, without system metadata."""
    me: Owner = (manager, "Apply", "")
    wanted = leaves(config)
    owners = owners_of(live)
    obj = {k: v for k, v in clone(live).items()} if live is not None else \
        {"apiVersion": config.get("apiVersion"), "kind": config.get("kind"), "metadata": {}}
    conflicts = []
    for owner, paths in owners.items():
        if owner == me:
            continue
        for path in sorted(paths & wanted.keys()):
            if _value_at(obj, path) != (True, wanted[path]):
                conflicts.append((owner, path))
    if conflicts and not force:
        raise apply_conflict([(_manager_words(o, obj, _times(live)), p) for o, p in conflicts])
    for owner, paths in owners.items():
        if owner != me:
            owners[owner] = paths - {p for _, p in conflicts}
    others = set().union(*(paths for owner, paths in owners.items() if owner != me))
    for path in owners.get(me, set()) - wanted.keys() - others:
        remove_leaf(obj, path)  # the applier's no more, nobody else's: gone
    for path, value in wanted.items():
        _set(obj, path, value)
    owners[me] = set(wanted)
    times = _times(live)
    if owners_of(live).get(me) != owners[me] or leaves(obj) != leaves(live):
        times[me] = time
    return _with_owners(obj, owners, times)


def record_update(old: dict[str, Any] | None, new: dict[str, Any], manager: str, status: bool, time: str) -> dict[str, Any]:
    """`new` with the ownership an Update by `manager` leaves: the leaves it changed are its own (and no one
    else's), those it removed nobody's."""
    me: Owner = (manager, "Update", "status" if status else "")
    before, after = leaves(old, status), leaves(new, status)
    changed = {p for p, v in after.items() if p not in before or before[p] != v}
    removed = before.keys() - after.keys()
    owners = owners_of(old)
    if not changed and not removed:
        return _with_owners(new, owners, _times(old))
    for owner in owners:
        owners[owner] = owners[owner] - changed - removed
    owners[me] = (owners.get(me, set()) | changed) - removed
    times = {**_times(old), me: time}
    return _with_owners(new, owners, times)


def _operator_may_create() -> frozenset[str]:
    """Plurals the operator's ClusterRole (deploy/rbac.yaml) lets it create: an apply creating anything else is 403."""
    import pathlib

    import yaml

    rbac = pathlib.Path(__file__).resolve().parents[2] / "deploy" / "rbac.yaml"
    for doc in yaml.safe_load_all(rbac.read_text()):
        if doc and doc.get("kind") == "ClusterRole" and doc["metadata"]["name"] == "modelops-operator":
            return frozenset(r for rule in doc["rules"] if "create" in rule.get("verbs", [])
                             for r in rule.get("resources", []))
    raise AssertionError("deploy/rbac.yaml has no ClusterRole modelops-operator")


OPERATOR_MAY_CREATE = _operator_may_create()


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
          404: "NotFound", 403: "Forbidden"}


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
        self.untracked: set[str] = {"modeldeployments", "modelversions", "endpointslices"}
        """Plurals whose field ownership is not kept (the apply calls are for backend objects)."""

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

    def world_put(self, resource: Resource, namespace: str, obj: dict[str, Any], manager: str = "kubectl") -> dict[str, Any]:
        """Stores a copy of `obj`, created by `manager`; returns the stored object (read-only)."""
        obj = clone(obj)
        meta = obj.setdefault("metadata", {})
        meta.setdefault("namespace", namespace)
        meta.setdefault("generation", 1)
        meta.setdefault("creationTimestamp", rfc3339(self.now()))
        meta.setdefault("uid", f"uid-{meta['name']}-{self._rv}")
        obj.setdefault("apiVersion", resource.api_version)
        obj.setdefault("kind", resource.kind)
        if "managedFields" not in meta and resource.plural not in self.untracked:
            obj = record_update(None, obj, manager, False, rfc3339(self.now()))
        return self._store((resource.plural, namespace, meta["name"]), obj)

    def world_patch(self, resource: Resource, namespace: str, name: str, patch: dict[str, Any],
                    status: bool = False, manager: str | None = None) -> dict[str, Any]:
        """A merge patch by `manager` (default: kubectl for the main resource, the controller for status)."""
        return self._patch(resource, namespace, name, patch, status, manager or ("controller" if status else "kubectl"))

    def world_apply(self, resource: Resource, namespace: str, name: str, config: dict[str, Any], manager: str,
                    force: bool = False) -> dict[str, Any]:
        """A server-side apply by `manager` (a GitOps tool, kubectl --server-side); 409 on conflicts without force."""
        return self._apply(resource, namespace, name, config, manager, force, may_create=True)

    def world_delete(self, resource: Resource, namespace: str, name: str) -> None:
        self.objects.pop((resource.plural, namespace, name), None)

    def peek(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        obj = self.objects.get((resource.plural, namespace, name))
        return clone(obj) if obj is not None else None

    def view(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        """The stored object itself, read-only (for the world and the invariants)."""
        return self.objects.get((resource.plural, namespace, name))

    def _patch(self, resource: Resource, namespace: str, name: str, patch: dict[str, Any], status: bool,
               manager: str) -> dict[str, Any]:
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
            for fixed in ("resourceVersion", "generation", "uid", "creationTimestamp", "name", "namespace", "managedFields"):
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
        if not status and resource.plural not in self.untracked:
            new = record_update(live, new, manager, False, rfc3339(self.now()))
        stored = self._store(key, new)  # shares unchanged parts with `live`: both are immutable once stored
        if status:
            self.status_writes[key] = int(stored["metadata"]["resourceVersion"])
        return stored

    def _apply(self, resource: Resource, namespace: str, name: str, config: Any, manager: str, force: bool,
               may_create: bool) -> dict[str, Any]:
        key = (resource.plural, namespace, name)
        live = self.objects.get(key)
        meta = config.get("metadata") if isinstance(config, dict) else None
        if not isinstance(meta, dict) or meta.get("name") != name or config.get("apiVersion") != resource.api_version \
                or config.get("kind") != resource.kind or meta.get("namespace", namespace) != namespace:
            raise api_error(400)  # an applied configuration names its object: apiVersion, kind, metadata.name
        wanted_rv = meta.get("resourceVersion")
        if live is not None and wanted_rv is not None and wanted_rv != live["metadata"]["resourceVersion"]:
            raise api_error(409)
        if live is None and not may_create:
            raise api_error(403)
        body = {k: v for k, v in config.items() if k != "status"}  # the main resource ignores status
        new = server_side_apply(live, body, manager, force, rfc3339(self.now()))
        if live is None:
            new["metadata"] = {**new["metadata"], "name": name, "namespace": namespace, "generation": 1,
                               "creationTimestamp": rfc3339(self.now()), "uid": f"uid-{name}-{self._rv}"}
            return self._store(key, new)
        if new.get("spec") != live.get("spec"):
            new["metadata"] = {**new["metadata"], "generation": live["metadata"].get("generation", 1) + 1}
        if new == live:
            return live  # a no-op apply (nothing owned or valued differently) does not bump resourceVersion
        return self._store(key, new)

    # --- the operator's calls (faultable) ----------------------------------------------------

    async def get(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._do("get", resource, name, lambda call: self.peek(resource, namespace, name))

    async def patch(self, resource: Resource, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        def work(call: Call) -> dict[str, Any]:
            self._checked(call, patch)
            return clone(self._patch(resource, namespace, name, patch, False, FIELD_MANAGER))

        return await self._do("patch", resource, name, work)

    async def apply(self, resource: Resource, namespace: str, name: str, config: dict[str, Any], *,
                    force: bool = True) -> dict[str, Any]:
        """Server-side apply as the operator's Kube.apply sends it: field manager `modelops`."""
        def work(call: Call) -> dict[str, Any]:
            self._checked(call, config)
            body = {**config, "apiVersion": resource.api_version, "kind": resource.kind,
                    "metadata": {**(config.get("metadata") or {}), "name": name}}
            return clone(self._apply(resource, namespace, name, body, FIELD_MANAGER, force,
                                     may_create=resource.plural in OPERATOR_MAY_CREATE))

        return await self._do("apply", resource, name, work)

    async def patch_status(self, resource: Resource, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        def work(call: Call) -> dict[str, Any]:
            self._checked(call, patch)
            return clone(self._patch(resource, namespace, name, patch, True, FIELD_MANAGER))

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


KSERVE_CONFIGURED = {"inferenceService": json.dumps({"serviceAnnotationDisallowedList": list(BOOKKEEPING)})}
"""KServe's ConfigMap data on a cluster set up as docs/backends/kserve.md asks: the bookkeeping kept off pods and revisions."""


class FakeConfigMaps:
    """(namespace, name) -> data, answered as kube.ConfigMaps does (None: absent), or `error` raised."""

    def __init__(self, maps: dict[tuple[str, str], dict[str, str]] | None = None, error: BaseException | None = None):
        self.maps, self.error = dict(maps or {}), error

    async def data(self, namespace: str, name: str) -> dict[str, str] | None:
        if self.error is not None:
            raise self.error
        return self.maps.get((namespace, name))


def kserve_router(kube: Any, data: dict[str, str] | None = KSERVE_CONFIGURED) -> KServeRouter:
    """The kserve router on a cluster whose KServe ConfigMap holds `data` (None: there is no such ConfigMap)."""
    maps = {} if data is None else {(DEFAULT_NAMESPACE, CONFIG_MAP): data}
    return KServeRouter(kube, KServeSettings(FakeConfigMaps(maps)))


@dataclass
class Revision:
    name: str
    template: str
    uri: str | None
    ready: bool = False


LEGACY_MODES = {"RawDeployment": "Standard", "Serverless": "Knative"}


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
      latestRolledoutRevision, traffic[]; status.observedGeneration = the generation reconciled;
      status.deploymentMode as KServe resolves it (the recorded one, else the annotation with its older names
      mapped, else the cluster default, Knative here). Only serverless routing is modelled.
    """

    def __init__(self) -> None:
        self.revisions: dict[Key, list[Revision]] = {}
        self.rolled: dict[Key, str | None] = {}
        self.disallowed: Callable[[], frozenset[str]] = lambda: frozenset(BOOKKEEPING)
        """The annotations KServe leaves out of the revision template (its serviceAnnotationDisallowedList)."""

    def _plan(self, key: Key, isvc: dict[str, Any], make_ready: bool) -> tuple[list[Revision], str | None, dict[str, int]]:
        predictor = dig(isvc, "spec", "predictor") or {}
        disallowed = self.disallowed()
        copied = {k: v for k, v in (dig(isvc, "metadata", "annotations") or {}).items() if k not in disallowed}
        template = json.dumps({"predictor": {k: v for k, v in predictor.items() if k != "canaryTrafficPercent"},
                               "annotations": copied}, sort_keys=True)
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
        annotated = (isvc["metadata"].get("annotations") or {}).get("serving.kserve.io/deploymentMode")
        status = {
            "deploymentMode": dig(isvc, "status", "deploymentMode") or LEGACY_MODES.get(annotated, annotated) or "Knative",
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
    """Stand-in for a Gateway API implementation and the EndpointSlice controller: for each HTTPRoute it
    reports one parent with Accepted=True and ResolvedRefs (True when `ready`: the Services behind its refs
    answer), both for the route's current generation, and on a `ready` settle gives every Service the route
    refers to an EndpointSlice (discovery.k8s.io/v1, labelled kubernetes.io/service-name) with one endpoint,
    ready unless the Service is in `unready` (its pods never become ready). Traffic follows backendRefs weights
    as written."""

    SLICES = Resource("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice")

    def __init__(self, unready: set[str] | None = None) -> None:
        self.unready: set[str] = set(unready or ())

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
        if ready:
            for service in sorted({ref["name"] for rule in dig(route, "spec", "rules") or []
                                   for ref in (rule or {}).get("backendRefs") or []}):
                self.endpoints(kube, namespace, service, service not in self.unready)

    def endpoints(self, kube: FakeKube, namespace: str, service: str, ready: bool) -> None:
        """The Service's EndpointSlice, one endpoint ready or not (created on first use)."""
        endpoints = [{"addresses": ["10.0.0.1"], "conditions": {"ready": ready, "serving": ready, "terminating": False}}]
        if kube.view(self.SLICES, namespace, f"{service}-sim") is None:
            kube.world_put(self.SLICES, namespace, {
                "metadata": {"name": f"{service}-sim", "labels": {"kubernetes.io/service-name": service}},
                "addressType": "IPv4", "endpoints": endpoints, "ports": [{"port": 8080, "protocol": "TCP"}]},
                manager="endpointslice-controller")
        else:
            kube.world_patch(self.SLICES, namespace, f"{service}-sim", {"endpoints": endpoints},
                             manager="endpointslice-controller")

    @staticmethod
    def plain_rules(route: dict[str, Any] | None) -> list[dict[str, Any]]:
        """The rules a request selected by its path alone reaches: those with no match on headers, query
        parameters or method (a user's pin, e.g. `x-cohort: testers`, takes only the requests it selects)."""
        return [rule for rule in dig(route, "spec", "rules") or []
                if not any(m.get(k) for m in (rule or {}).get("matches") or [] for k in ("headers", "queryParams", "method"))]

    COHORT_PREFIX = "modelops-cohort-"

    @staticmethod
    def mirrors(route: dict[str, Any] | None) -> dict[str, int]:
        """Service -> percent of a rule's requests the Gateway copies to it (a RequestMirror filter on any rule;
        without percent or fraction Gateway API copies all of them; the highest over the rules)."""
        out: dict[str, int] = {}
        for rule in dig(route, "spec", "rules") or []:
            for flt in (rule or {}).get("filters") or []:
                if flt.get("type") != "RequestMirror":
                    continue
                mirror = flt.get("requestMirror") or {}
                service = dig(mirror, "backendRef", "name")
                fraction = mirror.get("fraction")
                percent = mirror.get("percent")
                if percent is None:
                    percent = 100 if not fraction else int(100 * fraction["numerator"] / fraction.get("denominator", 100))
                out[service] = max(out.get(service, 0), int(percent))
        return out

    @classmethod
    def cohorts(cls, route: dict[str, Any] | None) -> dict[str, int]:
        """Service -> how many rules named modelops-cohort-* (the operator's, for a match step) route to it."""
        out: dict[str, int] = {}
        for rule in dig(route, "spec", "rules") or []:
            if not str((rule or {}).get("name") or "").startswith(cls.COHORT_PREFIX):
                continue
            for service in {ref.get("name") for ref in rule.get("backendRefs") or [] if ref.get("weight", 1)}:
                out[service] = out.get(service, 0) + 1
        return out

    @classmethod
    def live_services(cls, kube: FakeKube, resource: Resource, namespace: str, name: str) -> dict[str, int]:
        route = kube.view(resource, namespace, name)
        out: dict[str, int] = {}
        for rule in cls.plain_rules(route):
            for ref in (rule or {}).get("backendRefs") or []:
                out[ref["name"]] = out.get(ref["name"], 0) + int(ref.get("weight", 1))
        return out


class KServeStandardController:
    """Stand-in for KServe's Standard-mode predictor reconciler (v0.20) and, in front of its predictor Services, a
    Gateway (GatewayController) for the HTTPRoute of the same name as the InferenceService.

    - Predictor Services: stable's `<isvc>-predictor` (`<isvc>-<predictor.name>-predictor` once named) and one
      per spec.canary entry, `<isvc>-<entry name>-predictor`, each serving its own artifact (the entry's model,
      else stable's). KServe deletes any other at once: a ref to it serves nothing.
    - status: deploymentMode Standard, address stable's predictor Service as reconciled, PredictorReady and each
      canaryStatuses[] entry ready on a `ready` settle (not on another: a new Deployment's pods are not ready).
    - Traffic follows the route alone (KServe routes nothing to a canary): a ref's weight goes to its Service's
      artifact, or to nothing when KServe has no such Service."""

    ISVC = Resource("serving.kserve.io", "v1beta1", "inferenceservices", "InferenceService")
    ROUTE = Resource("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute")

    def __init__(self) -> None:
        self.gateway = GatewayController()

    @staticmethod
    def services(isvc: dict[str, Any] | None) -> dict[str, str | None]:
        """Predictor Service -> the artifact URI it serves, as KServe has reconciled the spec as it is now."""
        if isvc is None:
            return {}
        name = isvc["metadata"]["name"]
        predictor = dig(isvc, "spec", "predictor") or {}
        stable = dig(predictor, "model", "storageUri")
        out = {f"{name}-{predictor['name']}-predictor" if predictor.get("name") else f"{name}-predictor": stable}
        for entry in dig(isvc, "spec", "canary") or []:
            out[f"{name}-{dig(entry, 'predictor', 'name')}-predictor"] = dig(entry, "predictor", "model", "storageUri") or stable
        return out

    def settle(self, kube: FakeKube, resource: Resource, namespace: str, name: str, ready: bool = True) -> None:
        isvc = kube.peek(resource, namespace, name)
        if isvc is not None:
            entries = dig(isvc, "spec", "canary") or []
            stable = next(iter(self.services(isvc)))
            status = {"deploymentMode": "Standard", "address": {"url": f"http://{stable}.{namespace}.svc.cluster.local"},
                      "conditions": [{"type": "PredictorReady", "status": "True" if ready else "False"}],
                      "canaryStatuses": [{"name": dig(e, "predictor", "name"), "ready": ready,
                                          "trafficPercent": e.get("trafficPercent")} for e in entries]}
            kube.world_patch(resource, namespace, name, {"status": merge_replace(isvc.get("status"), status)},
                             status=True)
        route = kube.peek(self.ROUTE, namespace, name)
        refs = {ref["name"] for rule in dig(route, "spec", "rules") or [] for ref in (rule or {}).get("backendRefs") or []}
        # A ref to a Service KServe does not have is unresolved, as a Gateway reports it.
        self.gateway.settle(kube, self.ROUTE, namespace, name, ready and refs <= set(self.services(isvc)))

    def per_uri(self, kube: FakeKube, namespace: str, name: str, per_service: dict[str, int]) -> dict[str | None, int]:
        served = self.services(kube.view(self.ISVC, namespace, name))
        out: dict[str | None, int] = {}
        for service, amount in per_service.items():
            uri = served.get(service, f"no Service {service}")
            out[uri] = out.get(uri, 0) + amount
        return out

    def live_uris(self, kube: FakeKube, namespace: str, name: str) -> dict[str | None, int]:
        return self.per_uri(kube, namespace, name, self.gateway.live_services(kube, self.ROUTE, namespace, name))

    def side_uris(self, kube: FakeKube, namespace: str, name: str) -> dict[str, dict[str | None, int]]:
        route = kube.view(self.ROUTE, namespace, name)
        return {"copies": self.per_uri(kube, namespace, name, self.gateway.mirrors(route)),
                "cohort": self.per_uri(kube, namespace, name, self.gateway.cohorts(route))}


class SeldonController:
    """Stand-in for Seldon Core v1's controller (routers.seldon reads what it writes): for each predictor it
    reports its one Deployment, `<sdep>-<predictor>-0-model`, in status.deploymentStatus with replicas 1 and
    availableReplicas 1 once a `ready` settle has seen the predictor as it is now (any change but `traffic` and
    `shadow` rolls its Deployment: not available until the next `ready` settle), and status.state Available when
    all are. Traffic follows the predictors as written: a non-shadow predictor gets its `traffic` (a lone one
    100), a shadow one a copy of every request."""

    def __init__(self) -> None:
        self.available: dict[str, str] = {}
        """Predictor name -> its spec (without traffic and shadow) as last made available."""

    @staticmethod
    def _template(predictor: dict[str, Any]) -> str:
        return json.dumps({k: v for k, v in predictor.items() if k not in ("traffic", "shadow")}, sort_keys=True)

    def settle(self, kube: FakeKube, resource: Resource, namespace: str, name: str, ready: bool = True) -> None:
        sdep = kube.peek(resource, namespace, name)
        if sdep is None:
            return
        predictors = [p for p in dig(sdep, "spec", "predictors") or [] if isinstance(p, dict) and p.get("name")]
        if ready:
            self.available = {p["name"]: self._template(p) for p in predictors}
        up = {p["name"]: self.available.get(p["name"]) == self._template(p) for p in predictors}
        status = {"state": "Available" if all(up.values()) else "Creating",
                  "deploymentStatus": {f"{name}-{p}-0-model": {"replicas": 1, "availableReplicas": int(ok)}
                                       for p, ok in up.items()}}
        kube.world_patch(resource, namespace, name, {"status": merge_replace(sdep.get("status"), status)}, status=True)

    SELDON_DEPLOYMENT = Resource("machinelearning.seldon.io", "v1", "seldondeployments", "SeldonDeployment")

    def exposure(self, kube: FakeKube, namespace: str, name: str) -> dict[str, dict[str, int]]:
        """"weight" and "copies" per artifact URI (graph.modelUri) the predictors serve."""
        sdep = kube.view(self.SELDON_DEPLOYMENT, namespace, name)
        predictors = [p for p in dig(sdep, "spec", "predictors") or [] if isinstance(p, dict)]
        routed = [p for p in predictors if not p.get("shadow")]
        weight: dict[str, int] = {}
        for p in routed:
            uri = str(dig(p, "graph", "modelUri"))
            weight[uri] = weight.get(uri, 0) + (100 if len(routed) == 1 else int(p.get("traffic") or 0))
        copies = {str(dig(p, "graph", "modelUri")): 100 for p in predictors if p.get("shadow")}
        return {"weight": weight, "copies": copies}


class SeldonV2Controller:
    """Stand-in for Seldon Core v2's scheduler (routers.seldon_v2 reads what it writes). A `ready` settle loads
    every Model as it is now: condition ModelReady True for its generation (observedGeneration); otherwise a Model
    not loaded at its generation yet reports ModelReady False. An Experiment reports Ready True when all the Models
    it names are ready. Traffic follows the objects as written: with an Experiment named `experiment`, its
    candidates' weights (proportional) and its mirror's percent as copies; without one, all to the Model `name`."""

    MODEL = Resource("mlops.seldon.io", "v1alpha1", "models", "Model")
    EXPERIMENT = Resource("mlops.seldon.io", "v1alpha1", "experiments", "Experiment")

    def __init__(self, experiment: str) -> None:
        self.experiment = experiment

    def _objects(self, kube: FakeKube, resource: Resource, namespace: str) -> list[dict[str, Any]]:
        return [o for (plural, ns, _), o in sorted(kube.objects.items()) if plural == resource.plural and ns == namespace]

    def settle(self, kube: FakeKube, resource: Resource, namespace: str, name: str, ready: bool = True) -> None:
        loaded: set[str] = set()
        for model in self._objects(kube, self.MODEL, namespace):
            generation = model["metadata"].get("generation")
            ok = ready or dig(model, "status", "observedGeneration") == generation and any(
                c.get("type") == "ModelReady" and c.get("status") == "True" for c in dig(model, "status", "conditions") or [])
            if ok:
                loaded.add(model["metadata"]["name"])
            self._report(kube, self.MODEL, namespace, model, "ModelReady", ok)
        for experiment in self._objects(kube, self.EXPERIMENT, namespace):
            named = {c.get("name") for c in dig(experiment, "spec", "candidates") or []} | \
                ({dig(experiment, "spec", "mirror", "name")} if dig(experiment, "spec", "mirror") else set())
            self._report(kube, self.EXPERIMENT, namespace, experiment, "Ready", named <= loaded)

    def _report(self, kube: FakeKube, resource: Resource, namespace: str, obj: dict[str, Any], kind: str,
                ok: bool) -> None:
        status = {"observedGeneration": obj["metadata"].get("generation"), "conditions": [
            {"type": kind, "status": "True" if ok else "False", "reason": kind if ok else "Loading"}]}
        if obj.get("status") != status:
            kube.world_patch(resource, namespace, obj["metadata"]["name"], {"status": merge_replace(obj.get("status"), status)},
                             status=True)

    def exposure(self, kube: FakeKube, namespace: str, name: str) -> dict[str, dict[str, int]]:
        """"weight" and "copies" per artifact URI (the Models' spec.storageUri)."""
        def uri(model: str | None) -> str:
            return str(dig(kube.view(self.MODEL, namespace, model or ""), "spec", "storageUri"))

        experiment = kube.view(self.EXPERIMENT, namespace, self.experiment)
        if experiment is None:
            return {"weight": {uri(name): 100} if kube.view(self.MODEL, namespace, name) else {}, "copies": {}}
        weight: dict[str, int] = {}
        for candidate in dig(experiment, "spec", "candidates") or []:
            weight[uri(candidate.get("name"))] = weight.get(uri(candidate.get("name")), 0) + int(candidate.get("weight") or 0)
        mirror = dig(experiment, "spec", "mirror") or {}
        copies = {uri(mirror.get("name")): int(mirror.get("percent") or 100)} if mirror.get("name") else {}
        return {"weight": weight, "copies": copies}


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

    async def query(self, promql: str, at: datetime, *, batch: str | None = None) -> float | None:
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


def provider_factory(behaviour: dict[str, str], role: Callable[[str], str], made: list[FakeProvider] | None = None,
                     gate: FairGate | None = None):
    """`async (config, asker, cap) -> provider`, failing as a provider_for would when the schedule says so. With a
    `gate`, each query waits for a slot of it first, as the Prometheus provider's requests do."""

    async def make(config: Any, asker: Asker, cap: float) -> FakeProvider | Gated:
        broken = set(behaviour.values())
        if "credentials" in broken:
            raise ProviderError("credentials", "secret prom-token has no key 'token'")
        if "factory_timeout" in broken:
            raise asyncio.TimeoutError()
        provider = FakeProvider(behaviour, role)
        if made is not None:
            made.append(provider)
        if gate is not None:
            return Gated(provider, gate, asker)
        asker.first_turn.set()  # no queue to wait in: every query is answered at once
        return provider

    return make


class Gated:
    """A provider whose every query holds a slot of a real FairGate while it is asked, for its asker's deployment,
    as prometheus.PrometheusProvider's unbatched requests do; the asker's first turn is its first slot."""

    def __init__(self, inner: FakeProvider, gate: FairGate, asker: Asker):
        self.inner, self.gate, self.asker = inner, gate, asker

    async def query(self, promql: str, at: Any, *, batch: str | None = None) -> float | None:
        async with self.gate.slot(self.asker.namespace, self.asker.deployment):
            self.asker.first_turn.set()
            return await self.inner.query(promql, at, batch=batch)


class WatchedGate(FairGate):
    """The real gate, watched from its choice of the next request: `worst` is the most slots one other namespace
    was granted while a request of namespace `mine` waited within its bounds, between two grants to `mine` (the
    gate's stated bound is one)."""

    def __init__(self, mine: str, capacity: int = 16):
        super().__init__(capacity)
        self.mine = mine
        self.passed: Counter[str] = Counter()
        self.worst = 0
        self.grants: Counter[str] = Counter()

    def _next(self):  # type: ignore[no-untyped-def]
        chosen = super()._next()
        if chosen is None:
            return None
        self.grants["mine" if chosen.namespace == self.mine else "others"] += 1
        if chosen.namespace == self.mine:
            self.passed.clear()
        elif self._mine_waits_within_bounds():
            self.passed[chosen.namespace] += 1
            self.worst = max(self.worst, self.passed[chosen.namespace])
        return chosen

    def _mine_waits_within_bounds(self) -> bool:
        if self._by_namespace[self.mine] >= self.per_namespace:
            return False
        return any(not w.granted.done() and (w.deployment is None or self._by_deployment[self.mine, w.deployment]
                                             < self.per_deployment) for w in self._waiting.get(self.mine, ()))


class AnswersAfter:
    """A provider that runs `meanwhile` before it answers each query as the wrapped one does: events that arrive
    while the query is still unanswered. Each query is added to `asked` as it is sent."""

    def __init__(self, inner: Any, meanwhile: Callable[[], Awaitable[None]], asked: list[str] | None = None):
        self.inner, self.meanwhile, self.asked = inner, meanwhile, asked

    async def query(self, promql: str, at: Any, *, batch: str | None = None) -> float | None:
        if self.asked is not None:
            self.asked.append(promql)
        await self.meanwhile()
        return await self.inner.query(promql, at, batch=batch)


def answering_after(made: Callable[..., Awaitable[Any]], meanwhile: Callable[[], Awaitable[None]],
                    asked: list[str] | None = None):
    """The provider factory `made`, its providers wrapped in AnswersAfter(meanwhile, asked)."""

    async def make(config: Any, asker: Asker, cap: float) -> AnswersAfter:
        return AnswersAfter(await made(config, asker, cap), meanwhile, asked)

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
