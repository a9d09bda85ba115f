"""Gateway API HTTPRoute: each version is a Service, the weights are `backendRefs[].weight`.

Only rules that already route to one of the ModelDeployment's Services are touched, and
within them only those Services' refs; every other rule and backend stays as it is. The
write is conditional on the route's resourceVersion, so a concurrent edit is never lost.
Readiness is what the Gateway implementation reports: the route Accepted with its
references resolved, for the generation that carries the version's ref.
"""

from __future__ import annotations

from typing import Any

from ..api.modeldeployment import CheckTemplate
from ..api.modelversion import ModelVersionSpec
from ..analysis.promql import TemplateQuery
from ..kube import Kube, Resource
from ..rollout import TrafficIntent
from .base import APPLIED_WEIGHTS, BackendMisconfigured, BackendState, Target, applied_weights, weight_drift

HTTP_ROUTE = Resource("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute")
# Gateway API standardises no metrics: checks are the user's own PromQL, {{revision}} being the Service.
TEMPLATES: dict[CheckTemplate, TemplateQuery] = {}


def _resolved(route: dict[str, Any]) -> bool:
    generation = route["metadata"].get("generation", 0)
    parents = (route.get("status") or {}).get("parents") or []

    def holds(conditions: list[dict], kind: str) -> bool:
        return any(c.get("type") == kind and c.get("status") == "True" and c.get("observedGeneration", 0) >= generation
                   for c in conditions)

    return bool(parents) and all(holds(p.get("conditions") or [], "Accepted") and
                                 holds(p.get("conditions") or [], "ResolvedRefs") for p in parents)


def observe(route: dict[str, Any] | None, services: dict[str, str]) -> BackendState:
    if route is None:
        return BackendState()
    refs = [r for rule in route["spec"].get("rules", []) for r in rule.get("backendRefs", [])]
    by_service = {svc: version for version, svc in services.items()}
    present = {by_service[r["name"]] for r in refs if r.get("name") in by_service}
    live = {r["name"]: r.get("weight", 1) for r in refs if r.get("name") in by_service}
    ready = present if _resolved(route) else set()
    units = {version: services[version] for version in present}
    return BackendState(frozenset(ready), units, weight_drift(route, live, "HTTPRoute backendRef"))


def patch_for(route: dict[str, Any], intent: TrafficIntent, services: dict[str, str], port: int) -> dict[str, Any] | None:
    ours = set(services.values())
    wanted = {services[intent.stable]: 100 - intent.candidate_weight if intent.candidate else 100}
    if intent.candidate is not None:
        wanted[services[intent.candidate]] = intent.candidate_weight
    rules, touched = [], False
    for rule in route["spec"].get("rules", []):
        refs = rule.get("backendRefs", [])
        if not any(r.get("name") in ours for r in refs):
            rules.append(rule)
            continue
        touched = True
        existing = {r["name"]: r for r in refs if r.get("name") in ours}
        kept = [r for r in refs if r.get("name") not in ours]
        mine = [{**existing.get(svc, {"name": svc, "port": port}), "weight": w} for svc, w in wanted.items()]
        rules.append({**rule, "backendRefs": kept + mine})
    if not touched:
        raise BackendMisconfigured(f"HTTPRoute {route['metadata']['name']} has no rule routing to any of "
                                   f"serving.gatewayAPI.services ({sorted(ours)})")
    recorded = applied_weights(wanted)
    if rules == route["spec"].get("rules") and route["metadata"].get("annotations", {}).get(APPLIED_WEIGHTS) == recorded:
        return None
    return {"metadata": {"resourceVersion": route["metadata"]["resourceVersion"], "annotations": {APPLIED_WEIGHTS: recorded}},
            "spec": {"rules": rules}}


class GatewayAPIRouter:
    templates = TEMPLATES

    def __init__(self, kube: Kube):
        self.kube = kube

    @staticmethod
    def _config(target: Target):
        assert target.serving.gateway_api is not None  # the spec's own validation requires it
        return target.serving.gateway_api

    def object_name(self, target: Target) -> str:
        return self._config(target).route

    def _services(self, target: Target, *versions: str | None) -> dict[str, str]:
        services = self._config(target).services
        missing = [v for v in versions if v is not None and v not in services]
        if missing:
            raise BackendMisconfigured(f"serving.gatewayAPI.services names no Service for version(s) {missing}")
        return services

    async def _route(self, target: Target) -> dict[str, Any]:
        route = await self.kube.get(HTTP_ROUTE, target.namespace, self._config(target).route)
        if route is None:
            raise BackendMisconfigured(f"HTTPRoute {self._config(target).route} not found in {target.namespace}")
        return route

    async def observe(self, target: Target, versions: dict[str, ModelVersionSpec],
                      last: TrafficIntent | None) -> BackendState:
        return observe(await self._route(target), self._config(target).services)

    async def apply(self, target: Target, intent: TrafficIntent, versions: dict[str, ModelVersionSpec],
                    state: BackendState) -> bool:
        services = self._services(target, intent.stable, intent.candidate)
        patch = patch_for(await self._route(target), intent, services, self._config(target).port)
        if patch is not None:
            await self.kube.patch(HTTP_ROUTE, target.namespace, self._config(target).route, patch)
        return patch is None
