"""Gateway API HTTPRoute: each version is a Service, the weights are `backendRefs[].weight`.

Only rules that already route to one of the ModelDeployment's Services are touched, and
within them only those Services' refs; every other rule and backend stays as it is. The
write is conditional on the route's resourceVersion, so a concurrent edit is never lost.
Readiness is what the Gateway implementation reports: the route Accepted with its
references resolved, for the generation that carries the version's ref.

Versions map to Services through serving.gatewayAPI.services alone, so ModelVersions
that are gone do not matter here. The HTTPRoute is the user's: the operator never
creates it. A missing route is nothing served (observe) and misconfigured (apply), except
when finalizing, where a route that is gone, or no longer routes to any of those
Services, is left as it is. A rule without backendRefs routes nowhere (it may redirect).

Field ownership (server-side apply, manager `modelops`; see `kube` and `base`). Gateway API's
CRD declares `spec.rules` and each rule's `backendRefs` `x-kubernetes-list-type: atomic`: a
weight cannot be owned alone, and whoever writes one (by apply or by merge patch alike) holds
the whole rules list. The operator applies `spec.rules` whole, with every rule it does not
route copied verbatim from the route it read, and `metadata.annotations`
`modelops.io/applied-weights`; nothing else (the owner annotation and parentRefs stay the
user's). The apply carries that read's resourceVersion as a precondition, so another
writer's concurrent change of any rule is a 409 and is never lost: other rules keep their
values, and their ownership moves to the operator only as the list's does. For GitOps this
means Argo CD's managedFieldsManagers leaves the whole rules list alone once the operator
drove it (edit other rules by hand, or route the model from an HTTPRoute of its own). An
apply to a route deleted after the read would create it: the operator's RBAC has no
`create` on HTTPRoutes, so that is refused (403) and the next read finds it gone.
"""

from __future__ import annotations

from typing import Any

from ..api.modeldeployment import CheckTemplate
from ..api.modelversion import ModelVersionSpec
from ..analysis.promql import TemplateQuery
from ..kube import Kube, Resource, is_applied
from ..rollout import TrafficIntent
from .base import (IDENTITY, OwnedObjects, APPLIED_WEIGHTS, BackendMisconfigured, BackendState, Target, applied_weights, dig, kept,
                   merged, objects_at, weight_drift)

HTTP_ROUTE = Resource("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute")
# Gateway API standardises no metrics: checks are the user's own PromQL, {{revision}} being the Service.
TEMPLATES: dict[CheckTemplate, TemplateQuery] = {}


def _resolved(route: dict[str, Any]) -> bool:
    generation = dig(route, "metadata", "generation") or 0
    parents = objects_at(route, "status", "parents")

    def holds(parent: dict[str, Any], kind: str) -> bool:
        return any(c.get("type") == kind and c.get("status") == "True" and (c.get("observedGeneration") or 0) >= generation
                   for c in objects_at(parent, "conditions"))

    return bool(parents) and all(holds(p, "Accepted") and holds(p, "ResolvedRefs") for p in parents)


def _rules(route: dict[str, Any]) -> list[dict[str, Any]]:
    return objects_at(route, "spec", "rules")


def _refs(rule: dict[str, Any]) -> list[dict[str, Any]]:
    return objects_at(rule, "backendRefs")


def routes_to(route: dict[str, Any], services: set[str]) -> bool:
    """Some rule of the route sends traffic to one of `services`."""
    return any(r.get("name") in services for rule in _rules(route) for r in _refs(rule))


def observe(route: dict[str, Any] | None, services: dict[str, str]) -> BackendState:
    if route is None:
        return BackendState()
    refs = [r for rule in _rules(route) for r in _refs(rule)]
    by_service = {svc: version for version, svc in services.items()}
    present = {by_service[r["name"]] for r in refs if r.get("name") in by_service}
    live = {r["name"]: r.get("weight", 1) for r in refs if r.get("name") in by_service}
    ready = present if _resolved(route) else set()
    units = {version: services[version] for version in present}
    return BackendState(frozenset(ready), units, weight_drift(route, live, "HTTPRoute backendRef"))


def config_for(route: dict[str, Any], intent: TrafficIntent, services: dict[str, str], port: int) -> dict[str, Any] | None:
    """The operator's complete applied configuration carrying `intent` (pure); None when the route holds it."""
    ours = set(services.values())
    wanted = {services[intent.stable]: 100 - intent.candidate_weight if intent.candidate else 100}
    if intent.candidate is not None:
        wanted[services[intent.candidate]] = intent.candidate_weight
    if not routes_to(route, ours):
        raise BackendMisconfigured(f"HTTPRoute {dig(route, 'metadata', 'name')} has no rule routing to any of "
                                   f"serving.gatewayAPI.services ({sorted(ours)})")
    rules = []
    for rule in _rules(route):
        refs = _refs(rule)
        if not any(r.get("name") in ours for r in refs):
            rules.append(rule)
            continue
        existing = {r["name"]: r for r in refs if r.get("name") in ours}
        others = [r for r in refs if r.get("name") not in ours]
        mine = [{**existing.get(svc, {"name": svc, "port": port}), "weight": w} for svc, w in wanted.items()]
        rules.append({**rule, "backendRefs": others + mine})
    config = merged(kept(route, *IDENTITY),
                    {"metadata": {"annotations": {APPLIED_WEIGHTS: applied_weights(wanted)}}, "spec": {"rules": rules}})
    if is_applied(route, config):
        return None
    config["metadata"]["resourceVersion"] = route["metadata"]["resourceVersion"]
    return config


class GatewayAPIRouter:
    templates = TEMPLATES

    def __init__(self, kube: Kube):
        self.objects = OwnedObjects(kube)

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

    async def observe(self, target: Target, versions: dict[str, ModelVersionSpec],
                      last: TrafficIntent | None) -> BackendState:
        route = await self.objects.get(HTTP_ROUTE, target, self._config(target).route)
        return observe(route, self._config(target).services)

    async def apply(self, target: Target, intent: TrafficIntent, versions: dict[str, ModelVersionSpec],
                    state: BackendState, *, create: bool = True) -> bool:
        config = self._config(target)
        route = await self.objects.get(HTTP_ROUTE, target, config.route)
        if not create and (route is None or not routes_to(route, set(config.services.values()))):
            return True  # finalizing: a route that is gone, or no longer ours, is left as it is
        if route is None:
            raise BackendMisconfigured(f"HTTPRoute {config.route} not found in {target.namespace}")
        applied = config_for(route, intent, self._services(target, intent.stable, intent.candidate), config.port)
        if applied is not None:
            await self.objects.apply(HTTP_ROUTE, target, config.route, applied)
        return applied is None
