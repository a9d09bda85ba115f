"""Kubernetes API access for handlers and routers: native async, server-side apply, clear errors.

On kubernetes_asyncio (aiohttp): no worker threads, so a slow metric provider or a slow
API call of one deployment never takes a thread another one needs. Every call has a
timeout; one client (and its connection pool) serves the whole operator, and `Kube` keeps
at most as many calls in flight as the pool has connections.

Backend objects are written with server-side apply under the field manager `modelops`
(`Kube.apply`): each apply carries the operator's complete configuration of the fields it
drives, so the API server records exactly those as the operator's (`metadata.managedFields`,
operation Apply) and removes a field the operator owned and no longer sends, unless another
manager owns it too. GitOps tools can then leave those fields alone (Argo CD:
`ignoreDifferences: managedFieldsManagers: [modelops]`). API server facts relied on:

- An apply creates the object when it is absent (and then needs RBAC `create` as well as
  `patch`); `metadata.resourceVersion` in an applied configuration is a precondition (409
  when the object moved on), but not on creation.
- A field another manager owns with a different value is a conflict: 409 naming the manager,
  unless the apply is forced, which moves the field to the applier. Equal values are shared.
- An Update (merge patch, kubectl edit) moves each field it changes to its own manager, and a
  field it removes is gone from the object whoever owned it (the remover gains no entry for it).
- An apply that changes neither a value nor an ownership writes nothing (same resourceVersion).
- The managed set of an apply holds the applied leaves: an object's keys each, a list
  without `x-kubernetes-list-type` (or `atomic`) whole, never apiVersion, kind,
  metadata.name/namespace/resourceVersion and other system metadata.

Status and the operator's own resources are written with JSON merge patches. kubernetes_asyncio
deserializes only a 200 answer to a PATCH, so `apply` reads the answer itself (201: created).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from dataclasses import dataclass
from typing import Any, Iterable

import kubernetes_asyncio
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.client.rest import RESTResponse

API_TIMEOUT_SECONDS = 10.0
CONNECTIONS = 64
FIELD_MANAGER = "modelops"
"""The operator's field manager: Argo CD's `managedFieldsManagers` and kubectl's conflicts name it."""
APPLY_PATCH = "application/apply-patch+yaml"  # JSON is YAML: the body is sent as JSON


async def api_client() -> kubernetes_asyncio.client.ApiClient:
    """A client from KUBECONFIG (or ~/.kube/config), or the in-cluster service account."""
    configuration = kubernetes_asyncio.client.Configuration()
    try:
        await kubernetes_asyncio.config.load_kube_config(client_configuration=configuration)
    except kubernetes_asyncio.config.ConfigException:
        kubernetes_asyncio.config.load_incluster_config(client_configuration=configuration)
    configuration.connection_pool_maxsize = CONNECTIONS
    client = kubernetes_asyncio.client.ApiClient(configuration)
    # kubernetes_asyncio opens its aiohttp session with trust_env=True, which looks for a netrc file and proxy
    # variables on every request: a tenth of the operator's CPU in a 1,000-deployment rollout. The API server is
    # reached directly, as kopf does by default (a proxy, if wanted, is the kubeconfig's `proxy-url`).
    client.rest_client.pool_manager._trust_env = False
    return client


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"


class ApiNotInstalled(Exception):
    """The cluster does not serve this resource: its CRD is not installed."""

    def __init__(self, resource: Resource):
        super().__init__(f"the {resource.kind} API ({resource.api_version}) is not installed in this cluster")
        self.resource = resource


def merge_patch(old: Any, new: Any) -> Any:
    """The RFC 7386 merge patch turning `old` into `new`; None when they are equal."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return None if old == new else new
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif old[key] != value:
            patch[key] = merge_patch(old[key], value)
    return patch or None


FieldPath = tuple[str, ...]
# What no manager owns: the managed set of an apply never holds these (the API server strips them).
SYSTEM_FIELDS: frozenset[FieldPath] = frozenset({
    ("apiVersion",), ("kind",), ("metadata", "name"), ("metadata", "namespace"), ("metadata", "uid"),
    ("metadata", "resourceVersion"), ("metadata", "generation"), ("metadata", "creationTimestamp"),
    ("metadata", "managedFields"), ("metadata", "selfLink"), ("metadata", "deletionTimestamp"),
})


def applied_fields(config: dict[str, Any]) -> dict[FieldPath, Any]:
    """The fields an applied configuration makes its manager own, path -> value.

    Objects are walked key by key (an empty one owns nothing) and lists are owned whole: true of
    every list the operator applies (none of them declares an x-kubernetes-list-type)."""
    out: dict[FieldPath, Any] = {}

    def walk(value: Any, path: FieldPath) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, path + (key,))
        elif path not in SYSTEM_FIELDS and path:
            out[path] = value

    walk(config, ())
    return out


def managed_fields(obj: dict[str, Any] | None, manager: str = FIELD_MANAGER, operation: str = "Apply") -> set[FieldPath]:
    """The leaves `manager` owns on `obj` through `operation` on the main resource, from metadata.managedFields.

    fieldsV1 nests `f:<key>` per object key; an element `.` marks the parent itself owned; list
    elements (`k:`, `v:`, `i:`) are kept as they are written."""
    owned: set[FieldPath] = set()

    def walk(fields: Any, path: FieldPath) -> None:
        if not isinstance(fields, dict) or not fields:
            owned.add(path)
            return
        for key, sub in fields.items():
            if key == ".":
                owned.add(path)
            else:
                walk(sub, path + (key[2:] if key.startswith("f:") else key,))

    for entry in ((obj or {}).get("metadata") or {}).get("managedFields") or []:
        if isinstance(entry, dict) and entry.get("manager") == manager and entry.get("operation") == operation \
                and not entry.get("subresource") and isinstance(entry.get("fieldsV1"), dict):
            for key, sub in entry["fieldsV1"].items():
                walk({key: sub}, ())
    return owned


def _at(obj: Any, path: FieldPath) -> tuple[bool, Any]:
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return False, None
        obj = obj[key]
    return True, obj


def round_tripped(live: Any, value: Any) -> bool:
    """Whether `live` is `value` as a typed round trip leaves it: equal, except that an object (in a list too) may
    carry more keys whose values are empty. A Go webhook decodes an object into its structs and encodes it again,
    adding every field without `omitempty` at its zero value: KServe's turns a spec.canary[] entry's model into
    one with `name: ""` and `resources: {}`."""
    if isinstance(value, dict) and isinstance(live, dict):
        return all(key in live and round_tripped(live[key], item) for key, item in value.items()) and \
            not any(live[key] for key in live.keys() - value.keys())
    if isinstance(value, list) and isinstance(live, list):
        return len(value) == len(live) and all(map(round_tripped, live, value))
    return live == value


def is_applied(live: dict[str, Any], config: dict[str, Any], absent: Iterable[FieldPath] = ()) -> bool:
    """`live` holds every field of `config` with its value (`round_tripped`), owned by the operator's apply, and
    none of `absent`.

    What an apply would change: a value, a field the operator does not own yet (after an upgrade,
    on an object handed over, or taken by another manager), or a field that must go. Fields the
    operator owns beyond `config` (e.g. set by a mutating webhook on its apply) do not count, nor do empty ones a
    webhook's round trip added inside a list the operator owns whole (any other change to such a list takes its
    ownership from the operator)."""
    owned = managed_fields(live)
    for path, value in applied_fields(config).items():
        present, current = _at(live, path)
        if not present or not round_tripped(current, value) or path not in owned:
            return False
    return not any(_at(live, path)[0] for path in absent)


class Kube:
    """The operator's calls, at most CONNECTIONS in flight.

    The rest are queued here, untimed, in the order they came: aiohttp's timeout runs from the
    wait for a pooled connection on, so with a thousand rounds asking at once (a simultaneous
    version bump) calls timed out before they were sent, and each failed round came back with
    more calls after its backoff. So API_TIMEOUT_SECONDS bounds the API server's time, not the queue's (the
    rare calls around the queue, a Secret read every 30 s per credential and the check whether a CRD is
    installed after a 404, can still wait for a connection)."""

    def __init__(self, api_client: kubernetes_asyncio.client.ApiClient):
        self._custom = kubernetes_asyncio.client.CustomObjectsApi(api_client)
        self._turns = asyncio.Semaphore(CONNECTIONS)

    async def _call(self, resource: Resource, method: str, *args: Any, **kwargs: Any) -> Any:
        async with self._turns:
            return await self._sent(resource, method, *args, **kwargs)

    async def _sent(self, resource: Resource, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return await getattr(self._custom, method)(resource.group, resource.version, *args,
                                                       _request_timeout=API_TIMEOUT_SECONDS, **kwargs)
        except ApiException as e:
            if e.status == 404 and await self._api_missing(resource):
                raise ApiNotInstalled(resource) from e
            raise

    async def _api_missing(self, resource: Resource) -> bool:
        try:
            await self._custom.list_cluster_custom_object(resource.group, resource.version, resource.plural, limit=1,
                                                          _request_timeout=API_TIMEOUT_SECONDS)
        except ApiException as e:
            return e.status == 404
        return False

    async def get(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self._call(resource, "get_namespaced_custom_object", namespace, resource.plural, name)
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    async def patch(self, resource: Resource, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """A JSON merge patch (an Update: the fields it changes become the operator's, those it removes are gone)."""
        return await self._call(resource, "patch_namespaced_custom_object", namespace, resource.plural, name, patch,
                                field_manager=FIELD_MANAGER, _content_type="application/merge-patch+json")

    async def apply(self, resource: Resource, namespace: str, name: str, config: dict[str, Any], *,
                    force: bool = True) -> dict[str, Any]:
        """Server-side apply of `config`, the operator's complete configuration of the fields it drives.

        Creates the object when it is absent. `force` takes fields another manager holds with other
        values (the operator is authoritative for what it drives); without it that is a 409 conflict.
        apiVersion, kind and metadata.name are filled in. Returns the object as stored."""
        meta = {**(config.get("metadata") or {}), "name": name}
        body = {**config, "apiVersion": resource.api_version, "kind": resource.kind, "metadata": meta}
        # kubernetes_asyncio deserializes only a 200 answer to a patch: the 201 of an apply that created the
        # object would come back as None. So the answer is read here, and an error raised as the client would.
        async with self._turns:
            response = await self._sent(resource, "patch_namespaced_custom_object", namespace, resource.plural, name,
                                        body, field_manager=FIELD_MANAGER, force="true" if force else None,
                                        _content_type=APPLY_PATCH, _preload_content=False)
            try:
                answer = RESTResponse(response, await response.read())
            finally:
                response.release()
        if not 200 <= answer.status <= 299:
            error = ApiException(http_resp=answer)
            if error.status == 404 and await self._api_missing(resource):
                raise ApiNotInstalled(resource) from error
            raise error
        return json.loads(answer.data)

    async def patch_status(self, resource: Resource, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return await self._call(resource, "patch_namespaced_custom_object_status", namespace, resource.plural, name,
                                patch, field_manager=FIELD_MANAGER, _content_type="application/merge-patch+json")

    async def list(self, resource: Resource, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        result = await self._call(resource, "list_namespaced_custom_object", namespace, resource.plural,
                                  label_selector=label_selector)
        return result["items"]

    async def delete(self, resource: Resource, namespace: str, name: str) -> bool:
        """True when there was something to delete."""
        try:
            await self._call(resource, "delete_namespaced_custom_object", namespace, resource.plural, name)
        except ApiException as e:
            if e.status != 404:
                raise
            return False
        return True


SECRET_TTL_SECONDS = 30.0
"""A Secret read is used this long: a thousand analyses a minute read each credential twice, and a rotated token
is in use within half a minute."""
CONFIG_MAP_TTL_SECONDS = 10.0
"""A ConfigMap read is used this long: every round of every deployment on a backend may ask."""


class SharedReads:
    """Reads of one kind of core object, shared: concurrent askers wait for one GET, and its answer serves for `ttl`
    seconds (TTL unless given). A failed read is not kept (the next asker reads again)."""

    TTL: float

    def __init__(self, api_client: kubernetes_asyncio.client.ApiClient, *, ttl: float | None = None,
                 clock: Any = time.monotonic):
        self._core = kubernetes_asyncio.client.CoreV1Api(api_client)
        self._ttl, self._clock = self.TTL if ttl is None else ttl, clock
        self._reads: dict[tuple[str, str], tuple[float, asyncio.Future[Any]]] = {}

    async def _shared(self, namespace: str, name: str) -> Any:
        now, key = self._clock(), (namespace, name)
        read = self._reads.get(key)
        failed = read is not None and read[1].done() and (read[1].cancelled() or read[1].exception() is not None)
        if read is None or failed or now - read[0] >= self._ttl:
            read = self._reads[key] = (now, asyncio.ensure_future(self._read(namespace, name)))
        return await asyncio.shield(read[1])

    async def _read(self, namespace: str, name: str) -> Any:
        raise NotImplementedError


class Secrets(SharedReads):
    """Reads one key of a Secret; the operator's RBAC grants `get` on secrets for this only."""

    TTL = SECRET_TTL_SECONDS

    async def value(self, namespace: str, name: str, key: str) -> str:
        data = await self._shared(namespace, name)
        if key not in data:
            raise KeyError(f"secret {namespace}/{name} has no key {key!r}")
        return base64.b64decode(data[key]).decode()

    async def _read(self, namespace: str, name: str) -> dict[str, str]:
        secret = await self._core.read_namespaced_secret(name, namespace, _request_timeout=API_TIMEOUT_SECONDS)
        return secret.data or {}


class ConfigMaps(SharedReads):
    """Reads a ConfigMap's data; None when it does not exist."""

    TTL = CONFIG_MAP_TTL_SECONDS

    async def data(self, namespace: str, name: str) -> dict[str, str] | None:
        return await self._shared(namespace, name)

    async def _read(self, namespace: str, name: str) -> dict[str, str] | None:
        try:
            found = await self._core.read_namespaced_config_map(name, namespace, _request_timeout=API_TIMEOUT_SECONDS)
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return found.data or {}
