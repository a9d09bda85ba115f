"""Kubernetes API access for handlers and routers: native async, merge patches, clear errors.

On kubernetes_asyncio (aiohttp): no worker threads, so a slow metric provider or a slow
API call of one deployment never takes a thread another one needs. Every call has a
timeout; one client (and its connection pool) serves the whole operator.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import kubernetes_asyncio
from kubernetes_asyncio.client.exceptions import ApiException

API_TIMEOUT_SECONDS = 10.0
CONNECTIONS = 64


async def api_client() -> kubernetes_asyncio.client.ApiClient:
    """A client from KUBECONFIG (or ~/.kube/config), or the in-cluster service account."""
    configuration = kubernetes_asyncio.client.Configuration()
    try:
        await kubernetes_asyncio.config.load_kube_config(client_configuration=configuration)
    except kubernetes_asyncio.config.ConfigException:
        kubernetes_asyncio.config.load_incluster_config(client_configuration=configuration)
    configuration.connection_pool_maxsize = CONNECTIONS
    return kubernetes_asyncio.client.ApiClient(configuration)


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


class Kube:
    def __init__(self, api_client: kubernetes_asyncio.client.ApiClient):
        self._custom = kubernetes_asyncio.client.CustomObjectsApi(api_client)

    async def _call(self, resource: Resource, method: str, *args: Any, **kwargs: Any) -> Any:
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

    async def create(self, resource: Resource, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        body = {"apiVersion": resource.api_version, "kind": resource.kind, **body}
        return await self._call(resource, "create_namespaced_custom_object", namespace, resource.plural, body)

    async def patch(self, resource: Resource, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return await self._call(resource, "patch_namespaced_custom_object", namespace, resource.plural, name, patch,
                                _content_type="application/merge-patch+json")

    async def patch_status(self, resource: Resource, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return await self._call(resource, "patch_namespaced_custom_object_status", namespace, resource.plural, name,
                                patch, _content_type="application/merge-patch+json")

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


class Secrets:
    """Reads one key of a Secret; the operator's RBAC grants `get` on secrets for this only."""

    def __init__(self, api_client: kubernetes_asyncio.client.ApiClient):
        self._core = kubernetes_asyncio.client.CoreV1Api(api_client)

    async def value(self, namespace: str, name: str, key: str) -> str:
        secret = await self._core.read_namespaced_secret(name, namespace, _request_timeout=API_TIMEOUT_SECONDS)
        data = secret.data or {}
        if key not in data:
            raise KeyError(f"secret {namespace}/{name} has no key {key!r}")
        return base64.b64decode(data[key]).decode()
