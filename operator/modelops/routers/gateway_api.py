"""Gateway API HTTPRoute: each version is a Service, the weights are `backendRefs[].weight`.

The model's rules. The operator drives only the rules that route the model's traffic as a
split, and leaves every other rule as it is, refs and weights included. A rule's kind follows
from its `matches` (each entry of a rule is an alternative; no `matches` is a match on `/`):

- path-only: no `matches`, or every entry selects by `path` alone (no `headers`, `queryParams`
  or `method`). Such a rule is the default route for its path. When it names at least one of
  serving.gatewayAPI.services it is one of THE MODEL'S RULES: its refs to those Services are
  replaced by the split (stable alone, or stable and candidate), its other refs are kept.
- conditional: every entry selects by `headers`, `queryParams` or `method`. When it names
  exactly one of those Services it is a user's PIN (e.g. `x-cohort: testers` to 1.0.0's
  Service): never written, and not read for readiness, units or drift either.
- Refused: a conditional rule that names several of those Services (a split of its own, or
  one the operator cannot tell from the model's), and a rule mixing path-only and conditional
  entries that names any of them. Such a rule is never written nor read for readiness, units
  or drift; observe reports it in words (`BackendState.refused`, naming it by index and
  `name`), and the operator goes on driving the model's other rules, so that a rollback
  still takes the candidate off every rule it owns. A route where no path-only rule names
  any of those Services is BackendMisconfigured (nothing written).

Every rule without a ref to those Services (another model, a redirect) is left alone, and a
rule without backendRefs routes nowhere.

Mirror and match steps. A mirror step adds to each of the model's rules a `RequestMirror`
filter to the candidate's Service with `percent` (Gateway API v1.6 standard, Extended
support: the Gateway copies that share of the rule's requests to the Service and discards
its answers). A match step adds, after each of the model's rules, a rule named
`modelops-cohort-<n>`: the model rule's path matches, each with the step's header matches
(type Exact) added, routing to the candidate's Service alone, with the model rule's other
filters. Header matches outrank a path-only match of the same path in Gateway API's
precedence, so the cohort reaches the candidate and nobody else does. Rules named
`modelops-cohort-*` are the operator's: rewritten on every apply, dropped when no match
step runs. Mirror filters to another Service (an audit sink) stay the user's. A rollback or
promotion applies the rules without either, in the same write that sets the weights. The write is conditional on the route's
resourceVersion, so a concurrent edit is never lost.

Readiness. A version is ready when (1) it has a ref in the model's rules, (2) the Gateway
implementation reports the route Accepted with its references resolved (ResolvedRefs) by
every parent, and (3) its Service has at least one ready endpoint: an endpoint of a discovery.k8s.io/v1 EndpointSlice labelled
`kubernetes.io/service-name=<Service>` in the route's namespace whose `conditions.ready` is
true or absent (the API documents a nil `ready` as "true"). For (2) a verdict on an older
generation of the route counts while it is True: every write of the operator's (a step)
makes a new generation, and until the implementation has caught up it keeps routing as it
did; requiring the newest generation's verdict made each step drop the candidate to 0 and
back. A ref new in that generation is still held by (3), its Service's own endpoints, and a
False verdict of any generation makes nothing ready. Accepted and ResolvedRefs say
that the route and its Services exist, not that anything answers behind them: a Service
whose pods never become ready stays unready, gets no traffic, and is rolled back after
strategy.readyTimeout. EndpointSlices come from an `EndpointSlices` source: in the operator
a watch-fed index (RBAC: `list` and `watch` on endpointslices), elsewhere one list per
Service (label selector) of the model's rules per round.

Versions map to Services through serving.gatewayAPI.services alone, so ModelVersions
that are gone do not matter here. The HTTPRoute is the user's: the operator never
creates it. A missing route is nothing served (observe) and misconfigured (apply), except
when finalizing, where a route that is gone, or no longer routes to any of those
Services, is left as it is.

Field ownership (server-side apply, manager `modelops`; see `kube` and `base`). Gateway API's
CRD declares `spec.rules` and each rule's `backendRefs` `x-kubernetes-list-type: atomic`: a
weight cannot be owned alone, and whoever writes one (by apply or by merge patch alike) holds
the whole rules list. The operator applies `spec.rules` whole, with every rule it does not
route (pins included) copied verbatim from the route it read, and `metadata.annotations`
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

from dataclasses import replace
from typing import Any, Protocol

from ..api.modeldeployment import CheckTemplate
from ..api.modelversion import ModelVersionSpec
from ..analysis.promql import TemplateQuery
from ..kube import Kube, Resource, is_applied
from ..rollout import TrafficIntent
from .base import (CONTRACT_TEMPLATES, IDENTITY, SHADOW_AGREEMENT, OwnedObjects, APPLIED_WEIGHTS, BackendMisconfigured, BackendState, Target, applied_weights, dig, kept,
                   merged, objects_at, weight_drift)

HTTP_ROUTE = Resource("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute")
ENDPOINT_SLICES = Resource("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice")
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
"""The label that ties an EndpointSlice to its Service (set by the EndpointSlice controller and other managers)."""
# Gateway API standardises no metrics: checks are the user's own PromQL, {{revision}} being the Service; only the
# shadow-comparison contract is built in.
TEMPLATES: dict[CheckTemplate, TemplateQuery] = {**CONTRACT_TEMPLATES, CheckTemplate.shadowAgreement: SHADOW_AGREEMENT}
CONDITIONAL = ("headers", "queryParams", "method")
"""What makes a match entry select requests by more than their path."""
COHORT_RULE = "modelops-cohort-"
"""Name prefix of the rules the operator adds for a match step."""


def _resolved(route: dict[str, Any]) -> bool:
    parents = objects_at(route, "status", "parents")

    def holds(parent: dict[str, Any], kind: str) -> bool:
        verdicts = [c.get("status") for c in objects_at(parent, "conditions") if c.get("type") == kind]
        return bool(verdicts) and all(v == "True" for v in verdicts)

    return bool(parents) and all(holds(p, "Accepted") and holds(p, "ResolvedRefs") for p in parents)


def _parent_key(ref: dict[str, Any], namespace: str | None) -> tuple[Any, ...]:
    """A parentRef with Gateway API's defaults filled in (group, kind Gateway, the route's namespace)."""
    return (ref.get("group", "gateway.networking.k8s.io"), ref.get("kind", "Gateway"),
            ref.get("namespace", namespace), ref.get("name"), ref.get("sectionName"), ref.get("port"))


def caught_up(route: dict[str, Any] | None) -> bool:
    """Whether the Gateways the route names have processed its current generation: each verdict of a parent that
    spec.parentRefs still names, and that says which generation it judged (observedGeneration), judged this one.
    An implementation routes by the generation it last processed, so a Service that generation still names may
    still get requests. A parent the route no longer names routes none of it: its stale verdict is not waited on."""
    if route is None:
        return True
    namespace, generation = dig(route, "metadata", "namespace"), dig(route, "metadata", "generation") or 0
    named = {_parent_key(ref, namespace) for ref in objects_at(route, "spec", "parentRefs")}
    return all(c.get("observedGeneration") is None or c["observedGeneration"] >= generation
               for parent in objects_at(route, "status", "parents")
               if _parent_key(parent.get("parentRef") or {}, namespace) in named
               for c in objects_at(parent, "conditions"))


def _rules(route: dict[str, Any]) -> list[dict[str, Any]]:
    return objects_at(route, "spec", "rules")


def _refs(rule: dict[str, Any]) -> list[dict[str, Any]]:
    return objects_at(rule, "backendRefs")


def _rule_words(route: dict[str, Any], index: int, rule: dict[str, Any]) -> str:
    name = rule.get("name")
    return f"HTTPRoute {dig(route, 'metadata', 'name')} rule {index}{f' ({name})' if name else ''}"


def model_rules(route: dict[str, Any], services: set[str]) -> list[int]:
    """Indexes of the model's rules among the route's (see the module's docstring); neither pins nor refused
    rules are among them."""
    return _classified(route, services)[0]


def refused_rules(route: dict[str, Any], services: set[str]) -> tuple[str, ...]:
    """Why each rule naming those Services that the operator will not drive is refused, in words naming it."""
    return _classified(route, services)[1]


def _classified(route: dict[str, Any], services: set[str]) -> tuple[list[int], tuple[str, ...], list[int]]:
    """(the model's rules, why each refused rule is refused, the pins) among the rules naming those Services."""
    model, refused, pinned = [], [], []
    for index, rule in enumerate(_rules(route)):
        ours = {r.get("name") for r in _refs(rule)} & services
        if not ours or _is_cohort_rule(rule):
            continue
        conditional = [any(m.get(k) for k in CONDITIONAL) for m in objects_at(rule, "matches")]
        if not any(conditional):
            model.append(index)
        elif not all(conditional):
            refused.append(
                f"{_rule_words(route, index, rule)} routes to {sorted(ours)} with matches that select by path alone "
                f"and others by {'/'.join(CONDITIONAL)}: split it into a rule for the model (path only) and a pin")
        elif len(ours) > 1:
            refused.append(
                f"{_rule_words(route, index, rule)} selects by {'/'.join(CONDITIONAL)} and routes to several of "
                f"serving.gatewayAPI.services ({sorted(ours)}): a pin routes to one version's Service only; "
                "the model's split is driven on its path-only rule(s)")
        else:
            pinned.append(index)
    return model, tuple(refused), pinned


def _is_cohort_rule(rule: dict[str, Any]) -> bool:
    return str(rule.get("name") or "").startswith(COHORT_RULE)


def _mirrors_to(flt: dict[str, Any], services: set[str]) -> bool:
    return flt.get("type") == "RequestMirror" and dig(flt, "requestMirror", "backendRef", "name") in services


def _cohort_rule(number: int, rule: dict[str, Any], filters: list[dict[str, Any]], headers: tuple[tuple[str, str], ...],
                 ref: dict[str, Any]) -> dict[str, Any]:
    """The rule sending the model rule's requests that carry `headers` to `ref` alone."""
    exact = [{"type": "Exact", "name": name, "value": value} for name, value in headers]
    matches = [{**m, "headers": exact} for m in objects_at(rule, "matches") or [{}]]
    cohort = {k: v for k, v in rule.items() if k != "filters"}
    # weight 1 is what the API server stores for a ref without one: written out, the stored rule equals the next
    # apply's, and the step is seen carried rather than applied again every round.
    cohort.update({"name": f"{COHORT_RULE}{number}", "matches": matches, "backendRefs": [{**ref, "weight": 1}]})
    if filters:
        cohort["filters"] = filters
    return cohort


def served_services(route: dict[str, Any] | None, services: set[str]) -> set[str]:
    """Which of `services` the model's rules route to (the ones whose EndpointSlices readiness reads)."""
    if route is None:
        return set()
    rules = _rules(route)
    return {r["name"] for i in model_rules(route, services) for r in _refs(rules[i]) if r.get("name") in services}


def routes_to(route: dict[str, Any], services: set[str]) -> bool:
    """Some path-only or refused rule of the route sends traffic to one of `services`."""
    model, refused, _ = _classified(route, services)
    return bool(model or refused)


def has_ready_endpoint(service: str, slices: list[dict[str, Any]]) -> bool:
    """An endpoint of one of `service`'s EndpointSlices is ready (`conditions.ready` true or absent: nil means true)."""
    for item in slices:
        if (dig(item, "metadata", "labels") or {}).get(SERVICE_NAME_LABEL) != service:
            continue
        for endpoint in objects_at(item, "endpoints"):
            if (endpoint.get("conditions") or {}).get("ready") is not False:
                return True
    return False


def readiness_view(endpoint_slice: dict[str, Any]) -> dict[str, Any]:
    """What `has_ready_endpoint` reads of an EndpointSlice, and nothing else (what an index keeps of one)."""
    labels = dig(endpoint_slice, "metadata", "labels") or {}
    endpoints = [{"conditions": {"ready": (e.get("conditions") or {}).get("ready")}}
                 for e in objects_at(endpoint_slice, "endpoints")]
    return {"metadata": {"labels": {SERVICE_NAME_LABEL: labels.get(SERVICE_NAME_LABEL)}}, "endpoints": endpoints}


class EndpointSlices(Protocol):
    async def of(self, namespace: str, service: str) -> list[dict[str, Any]]:
        """The EndpointSlices of a Service (at least what `readiness_view` keeps of each)."""
        ...


class ListedEndpointSlices:
    """One list per Service and call."""

    def __init__(self, kube: Kube):
        self.kube = kube

    async def of(self, namespace: str, service: str) -> list[dict[str, Any]]:
        return await self.kube.list(ENDPOINT_SLICES, namespace, f"{SERVICE_NAME_LABEL}={service}")


GATEWAY_KEEPS_NO_WARM = ("the gatewayAPI backend routes to Services it does not run: whether a retained version's "
                         "pods keep running is up to whoever deploys them")


def observe(route: dict[str, Any] | None, services: dict[str, str],
            slices: dict[str, list[dict[str, Any]]] | None = None) -> BackendState:
    """What the route serves: `slices` maps each Service of the model's rules to its EndpointSlices."""
    if route is None:
        return BackendState(keeps_no_warm=GATEWAY_KEEPS_NO_WARM)
    rules = _rules(route)
    by_service = {svc: version for version, svc in services.items()}
    model, refused, pin_rules = _classified(route, set(by_service))
    mine = [[r for r in _refs(rules[i]) if r.get("name") in by_service] for i in model]
    present = {by_service[r["name"]] for refs in mine for r in refs}
    resolved = _resolved(route)
    ready = {v for v in present if resolved and has_ready_endpoint(services[v], (slices or {}).get(services[v], []))}
    units = {version: services[version] for version in present}
    drift: list[str] = []
    for refs in mine:
        for words in weight_drift(route, {r["name"]: r.get("weight", 1) for r in refs}, "HTTPRoute backendRef"):
            if words not in drift:
                drift.append(words)
    pins: dict[str, tuple[str, ...]] = {}
    for i in pin_rules:  # a pin names exactly one of the Services
        version = next(by_service[r["name"]] for r in _refs(rules[i]) if r.get("name") in by_service)
        pins[version] = pins.get(version, ()) + (_rule_words(route, i, rules[i]),)
    return BackendState(frozenset(ready), units, tuple(drift), refused=refused, pins=pins,
                        keeps_no_warm=GATEWAY_KEEPS_NO_WARM)


def config_for(route: dict[str, Any], intent: TrafficIntent, services: dict[str, str], port: int,
               field: str = "serving.gatewayAPI.services") -> dict[str, Any] | None:
    """The operator's complete applied configuration carrying `intent` (pure); None when the route holds it.
    `field` names where `services` come from, for a refusal."""
    ours = set(services.values())
    wanted = {services[intent.stable]: 100 - intent.candidate_weight if intent.candidate else 100}
    if intent.candidate is not None:
        wanted[services[intent.candidate]] = intent.candidate_weight
    driven = set(model_rules(route, ours))
    if not driven:
        refused = "".join(f"; {words}" for words in refused_rules(route, ours))
        raise BackendMisconfigured(f"HTTPRoute {dig(route, 'metadata', 'name')} has no rule routing to any of "
                                   f"{field} ({sorted(ours)}) by path alone (rules matching "
                                   f"{'/'.join(CONDITIONAL)} are pins, left alone){refused}")
    rules: list[dict[str, Any]] = []
    cohorts = 0
    for index, rule in enumerate(_rules(route)):
        if _is_cohort_rule(rule):
            continue  # the operator's own, made anew below while a match step runs
        if index not in driven:
            rules.append(rule)
            continue
        refs = _refs(rule)
        existing = {r["name"]: r for r in refs if r.get("name") in ours}
        others = [r for r in refs if r.get("name") not in ours]
        mine = [{**existing.get(svc, {"name": svc, "port": port}), "weight": w} for svc, w in wanted.items()]
        filters = [f for f in objects_at(rule, "filters") if not _mirrors_to(f, ours)]
        driven_rule = {k: v for k, v in rule.items() if k != "filters"}
        driven_rule["backendRefs"] = others + mine
        candidate_ref = None
        if intent.candidate is not None:
            service = services[intent.candidate]
            candidate_ref = {k: v for k, v in existing.get(service, {"name": service, "port": port}).items() if k != "weight"}
        mirror = [{"type": "RequestMirror", "requestMirror": {"backendRef": candidate_ref, "percent": intent.mirror}}] \
            if candidate_ref and intent.mirror else []
        if filters + mirror:
            driven_rule["filters"] = filters + mirror
        rules.append(driven_rule)
        if candidate_ref and intent.match:
            rules.append(_cohort_rule(cohorts, rule, filters, intent.match, candidate_ref))
            cohorts += 1
    config = merged(kept(route, *IDENTITY),
                    {"metadata": {"annotations": {APPLIED_WEIGHTS: applied_weights(wanted)}}, "spec": {"rules": rules}})
    if is_applied(route, config):
        return None
    config["metadata"]["resourceVersion"] = route["metadata"]["resourceVersion"]
    return config


async def read_route(objects: OwnedObjects, endpoint_slices: EndpointSlices, target: Target, name: str,
                     services: dict[str, str]) -> BackendState:
    """The route `name` read and observed (`observe`), with the EndpointSlices of the Services its model's rules
    route to; `read` is the route."""
    route = await objects.get(HTTP_ROUTE, target, name)
    slices = {}
    for service in sorted(served_services(route, set(services.values()))):
        slices[service] = await endpoint_slices.of(target.namespace, service)
    return replace(observe(route, services, slices), read=route)


async def write_route(objects: OwnedObjects, target: Target, name: str, route: dict[str, Any] | None,
                      intent: TrafficIntent, services: dict[str, str], port: int, *, create: bool = True,
                      field: str = "serving.gatewayAPI.services") -> bool:
    """Make the route `name` (as read: `route`) carry `intent` over `services` (version -> Service, from `field`);
    True when it already did. Finalizing (`create` False), a route that is gone or no longer routes to those Services is left
    as it is."""
    if not create and (route is None or not routes_to(route, set(services.values()))):
        return True
    if route is None:
        raise BackendMisconfigured(f"HTTPRoute {name} not found in {target.namespace}")
    missing = [v for v in (intent.stable, intent.candidate) if v is not None and v not in services]
    if missing:
        raise BackendMisconfigured(f"{field} names no Service for version(s) {missing}")
    applied = config_for(route, intent, services, port, field)
    if applied is not None:
        await objects.apply(HTTP_ROUTE, target, name, applied)
    return applied is None


class GatewayAPIRouter:
    templates = TEMPLATES

    def __init__(self, kube: Kube, endpoint_slices: EndpointSlices | None = None):
        self.objects = OwnedObjects(kube)
        self.endpoint_slices = endpoint_slices or ListedEndpointSlices(kube)

    @staticmethod
    def _config(target: Target):
        assert target.serving.gateway_api is not None  # the spec's own validation requires it
        return target.serving.gateway_api

    def object_name(self, target: Target) -> str:
        return self._config(target).route

    async def observe(self, target: Target, versions: dict[str, ModelVersionSpec],
                      last: TrafficIntent | None) -> BackendState:
        config = self._config(target)
        return await read_route(self.objects, self.endpoint_slices, target, config.route, config.services)

    async def apply(self, target: Target, intent: TrafficIntent, versions: dict[str, ModelVersionSpec],
                    state: BackendState, *, create: bool = True) -> bool:
        config = self._config(target)
        route = state.read or await self.objects.get(HTTP_ROUTE, target, config.route)
        return await write_route(self.objects, target, config.route, route, intent, config.services, config.port,
                                 create=create)
