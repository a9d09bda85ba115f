"""The four stand-ins: what each serving system's controller does to status and traffic."""

from __future__ import annotations

import json
from typing import Any

import kubernetes

from .standin import StandIn, Unit, condition, traffic_entry


KSERVE_OWN_DISALLOWED = frozenset({"autoscaling.knative.dev/min-scale", "autoscaling.knative.dev/max-scale",
                                   "internal.serving.kserve.io/storage-initializer-sourceuri",
                                   "kubectl.kubernetes.io/last-applied-configuration", "modelFormat"})
"""KServe's own serviceAnnotationDisallowedList (pkg/constants/constants.go, v0.20.0)."""


def kserve_disallowed(data: dict[str, str] | None) -> frozenset[str]:
    """The annotations KServe leaves out of what it makes, given its ConfigMap's data: its own list followed by the
    ConfigMap's, only when the inferenceService entry exists (pkg/apis/serving/v1beta1/configmap.go). Without the
    ConfigMap, or with an entry it cannot parse, KServe reconciles nothing, which this leaves to the caller (an
    unparsable entry is taken here as listing nothing)."""
    if not data or "inferenceService" not in data:
        return frozenset()
    try:
        listed = json.loads(data["inferenceService"]).get("serviceAnnotationDisallowedList") or []
    except (ValueError, AttributeError):
        return frozenset()
    return KSERVE_OWN_DISALLOWED | frozenset(k for k in listed if isinstance(k, str))


class KServe(StandIn):
    """KServe serverless: a new revision per change of the revision template, which holds the predictor (but
    canaryTrafficPercent) and the InferenceService's annotations but those of serviceAnnotationDisallowedList
    (KServe's own, then the ConfigMap `inferenceservice-config` of the namespace `kserve`'s, read on every
    reconcile; without that ConfigMap nothing is reconciled, as KServe's reconcile fails);
    canaryTrafficPercent splits latest and last rolled-out revision; the status names revisions and traffic[]."""

    group, version, plural, flavour = "serving.kserve.io", "v1beta1", "inferenceservices", "knative"

    def __init__(self, *args: Any):
        super().__init__(*args)
        self.disallowed: frozenset[str] = frozenset()
        self.revisions: dict[tuple[str, str], list[tuple[str, Unit]]] = {}  # (template, unit) per service
        self.rolled: dict[tuple[str, str], tuple[Unit | None, Unit | None]] = {}  # (latest rolled out, previous)

    def reconcile_all(self) -> None:
        try:
            config = self.core.read_namespaced_config_map("inferenceservice-config", "kserve").data or {}
        except kubernetes.client.ApiException as e:
            print(f"KServe: unable to get configmap kserve/inferenceservice-config: {e.status}", flush=True)
            return
        self.disallowed = kserve_disallowed(config)
        super().reconcile_all()

    def reconcile(self, isvc: dict[str, Any]) -> None:
        meta, predictor = isvc["metadata"], isvc["spec"].get("predictor", {})
        key = (meta["namespace"], meta["name"])
        copied = {k: v for k, v in (meta.get("annotations") or {}).items() if k not in self.disallowed}
        template = json.dumps({"predictor": {k: v for k, v in predictor.items() if k != "canaryTrafficPercent"},
                               "annotations": copied}, sort_keys=True)
        revisions = self.revisions.setdefault(key, [])
        if not revisions or revisions[-1][0] != template:
            name = f"{meta['name']}-predictor-{len(revisions) + 1:05d}"
            revisions.append((template, self.unit(*key, name, predictor.get("model", {}).get("storageUri", ""))))
        latest = revisions[-1][1]
        canary = predictor.get("canaryTrafficPercent")
        rolled, previous = self.rolled.get(key, (None, None))
        if latest.ready and (canary is None or canary == 100 or rolled is None) and rolled is not latest:
            rolled, previous = latest, rolled
            self.rolled[key] = (rolled, previous)
        if rolled is None:
            split: list[tuple[Unit, int]] = []
        elif rolled is latest or canary is None or canary == 100:
            split = [(rolled, 100)]  # a ready latest revision would be the rolled-out one by now
        else:
            percent = canary if latest.ready else 0
            split = [(latest, percent), (rolled, 100 - percent)]
        self.publish_split(*key, split)
        ready = [u for _, u in revisions if u.ready]
        self.write_status(*key, {
            "observedGeneration": meta.get("generation"),
            "components": {"predictor": {
                "latestCreatedRevision": latest.name,
                "latestReadyRevision": ready[-1].name if ready else None,
                "latestRolledoutRevision": rolled.name if rolled else None,
                "previousRolledoutRevision": previous.name if previous else None,
                "traffic": [{"revisionName": u.name, "percent": p, "latestRevision": u is latest, "url": u.url,
                             "tag": "latest" if u is latest else "prev"} for u, p in split],
            }},
            "conditions": [condition("Ready", rolled is not None)],
        })


class SeldonV1(StandIn):
    """Seldon Core v1: one Deployment per predictor; status.deploymentStatus and state. A shadow predictor
    gets a copy of every request and no share of them (see `predictor_shares`)."""

    group, version, plural, flavour = "machinelearning.seldon.io", "v1", "seldondeployments", "seldon"

    def reconcile(self, sdep: dict[str, Any]) -> None:
        meta = sdep["metadata"]
        key = (meta["namespace"], meta["name"])
        served, copied, deployments = [], [], {}
        for predictor in sdep["spec"].get("predictors", []):
            graph = predictor.get("graph", {})
            unit = self.unit(*key, predictor["name"], graph.get("modelUri", ""))
            if unit.ready:
                share, copy = predictor_shares(predictor)
                served.append((unit, share))
                copied.append((unit, copy))
            deployment = f"{meta['name']}-{predictor['name']}-0-{graph.get('name', 'model')}"
            deployments[deployment] = {"name": deployment, "replicas": 1, "availableReplicas": int(unit.ready),
                                       "status": "Available" if unit.ready else "Creating"}
        self.publish_split(*key, served, copied)
        available = all(d["availableReplicas"] for d in deployments.values())
        self.write_status(*key, {"state": "Available" if available else "Creating", "deploymentStatus": deployments})


class SeldonV2(StandIn):
    """Seldon Core v2: a Model loads its artifact (in place on change), an Experiment weighs
    its candidates in proportion for requests to its default model and copies `mirror.percent`
    of them to its `mirror.name` model; it is ready when its candidates and its mirror are."""

    group, version, plural, flavour = "mlops.seldon.io", "v1alpha1", "models", "seldonV2"

    def reconcile_all(self) -> None:
        """Models and Experiments together: a model's split depends on both."""
        models = self.api.list_cluster_custom_object(self.group, self.version, "models")["items"]
        experiments = self.api.list_cluster_custom_object(self.group, self.version, "experiments")["items"]
        units = {}
        for model in models:
            meta = model["metadata"]
            unit = self.unit(meta["namespace"], meta["name"], meta["name"], model["spec"]["storageUri"])
            units[(meta["namespace"], meta["name"])] = unit
            ready = unit.ready and unit.replaced is None
            self.write_status(meta["namespace"], meta["name"], {
                "observedGeneration": meta.get("generation"), "replicas": 1, "availableReplicas": int(ready),
                "conditions": [condition("ModelReady", ready), condition("Ready", ready)]}, "models")
        routed, mirrored = {}, {}
        for experiment in experiments:
            meta, spec = experiment["metadata"], experiment["spec"]
            members = [(units.get((meta["namespace"], c["name"])), c["weight"]) for c in spec["candidates"]]
            mirror = spec.get("mirror")
            mirror_unit = units.get((meta["namespace"], mirror["name"])) if mirror else None
            candidates_ready = all(u is not None and u.ready for u, _ in members)
            mirror_ready = mirror is None or (mirror_unit is not None and mirror_unit.ready)
            ready = candidates_ready and mirror_ready
            self.write_status(meta["namespace"], meta["name"], {
                "observedGeneration": meta.get("generation"),
                "conditions": [condition("CandidatesReady", candidates_ready), condition("MirrorReady", mirror_ready),
                               condition("ExperimentReady", ready), condition("Ready", ready)]}, "experiments")
            if ready and spec.get("default"):
                default = (meta["namespace"], spec["default"])
                total = sum(w for _, w in members) or 1
                routed[default] = [(u, round(100 * w / total)) for u, w in members]
                if mirror:
                    # the CRD's percent is a uint32 without default: an unset one mirrors nothing
                    mirrored[default] = [(mirror_unit, mirror.get("percent", 0))]
        for (namespace, name), unit in units.items():
            key = (namespace, name)
            self.publish_split(namespace, name, routed.get(key, [(unit, 100)]), mirrored.get(key, []))


class Gateway(StandIn):
    """A Gateway API implementation with the EndpointSlice controller of its Services: accepts routes,
    resolves backendRefs to Services (ResolvedRefs: every Service exists), routes each request to the rule
    that matches it best (Gateway API precedence) and splits it by that rule's backendRef weights among the
    Services with a ready endpoint; the pods behind each Service are one unit.

    Each Service a route refers to gets the EndpointSlice `<service>-standin` (labelled
    kubernetes.io/service-name) with one endpoint, the unit's process on loopback: ready while the process
    is up and its readiness probe passes, not ready otherwise (never_ready, exited, or the stand-in stopped).
    The API server refuses loopback addresses in IPv4 slices (they may not be in 127.0.0.0/8), so the slice
    is of addressType FQDN (deprecated, still served by discovery.k8s.io/v1), the address written as
    `127.0.0.1` (which every resolver maps to itself).
    A rule's RequestMirror filters (see `requested_mirrors`) copy their share of the rule's requests to their
    Service, if it has a ready endpoint; a mirrored Service that does not exist leaves ResolvedRefs False.
    The split and mirrors a request on `/` without headers gets are published for the load generator, every
    rule's in `routes-<namespace>-<route>.json`, a list of {matches, split, mirror} (see `route_for`)."""

    group, version, plural, flavour = "gateway.networking.k8s.io", "v1", "httproutes", "generic"
    MANAGED_BY = "test-gateway-stand-in.modelops.io"

    def __init__(self, *args: Any):
        super().__init__(*args)
        self.discovery = kubernetes.client.DiscoveryV1Api(self.core.api_client)
        self.slices: dict[tuple[str, str], str] = {}  # (namespace, service) -> what was written last

    def reconcile(self, route: dict[str, Any]) -> None:
        meta = route["metadata"]
        key = (meta["namespace"], meta["name"])
        resolved, table = True, []
        for rule in route["spec"].get("rules") or []:
            split, mirror = [], []
            for ref in rule.get("backendRefs") or []:
                unit = self.service_unit(*key, ref["name"])
                resolved = resolved and unit is not None
                if unit is not None:
                    split.append((unit, ref.get("weight", 1)))
            for service, percent in requested_mirrors(rule):
                unit = self.service_unit(*key, service)
                resolved = resolved and unit is not None
                if unit is not None and self.up(unit) and percent > 0:
                    mirror.append(traffic_entry(unit, percent))
            total = sum(w for u, w in split if self.up(u)) or 1
            serving = [(u, round(100 * w / total)) for u, w in split if self.up(u)]
            table.append({"matches": rule.get("matches") or [{}],
                          "split": [traffic_entry(u, p) for u, p in serving if p > 0], "mirror": mirror})
        self._write(self.dir / f"routes-{key[0]}-{key[1]}.json", table)
        chosen = route_for(table, "/", {})
        self.publish(*key, chosen["split"] if chosen else [], chosen["mirror"] if chosen else [])
        generation = meta.get("generation")
        parents = route["spec"].get("parentRefs") or [{"name": "gateway"}]
        self.write_status(*key, {"parents": [{
            "parentRef": p, "controllerName": "modelops.io/test-gateway-stand-in",
            "conditions": [condition("Accepted", True, generation), condition("ResolvedRefs", resolved, generation)],
        } for p in parents]})

    def service_unit(self, namespace: str, route: str, service: str) -> Unit | None:
        """The unit of the pods behind `service` with its EndpointSlice brought up to date; None when there is
        no such Service."""
        try:
            svc = self.core.read_namespaced_service(service, namespace)
        except kubernetes.client.ApiException:
            return None
        unit = self.unit(namespace, route, service, f"svc://{namespace}/{service}")
        self.endpoint_slice(namespace, service, svc, unit)
        return unit

    @staticmethod
    def up(unit: Unit) -> bool:
        return unit.ready and unit.process.poll() is None

    def endpoint_slice(self, namespace: str, service: str, svc: Any, unit: Unit | None) -> None:
        """The Service's EndpointSlice as the unit's process stands now (written when that changes)."""
        ready = unit is not None and self.up(unit)
        port = {"port": unit.port if unit else 1, "protocol": "TCP"}
        name = (svc.spec.ports or [None])[0].name if svc is not None and svc.spec else None
        if name:
            port["name"] = name
        body = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": f"{service}-standin", "namespace": namespace,
                             "labels": {"kubernetes.io/service-name": service,
                                        "endpointslice.kubernetes.io/managed-by": self.MANAGED_BY}},
                "addressType": "FQDN", "ports": [port],
                "endpoints": [{"addresses": ["127.0.0.1"],
                               "conditions": {"ready": ready, "serving": ready, "terminating": False}}]}
        text = json.dumps(body, sort_keys=True)
        if self.slices.get((namespace, service)) == text:
            return
        try:
            self.discovery.replace_namespaced_endpoint_slice(f"{service}-standin", namespace, body)
        except kubernetes.client.ApiException as e:
            if e.status != 404:
                raise
            self.discovery.create_namespaced_endpoint_slice(namespace, body)
        self.slices[(namespace, service)] = text

    def stop(self, *args: Any) -> None:
        """The processes stop: every endpoint is not ready any more."""
        for namespace, service in list(self.slices):
            try:
                self.endpoint_slice(namespace, service, None, None)
            except Exception:  # noqa: BLE001 - best effort on the way out
                pass
        super().stop(*args)


def predictor_shares(predictor: dict[str, Any]) -> tuple[int, int]:
    """(percent of the requests it serves, percent it gets a copy of) for a Seldon Core v1 predictor: a shadow
    serves none whatever its `traffic` says (its answers are discarded) and gets a copy of every request."""
    return (0, 100) if predictor.get("shadow") else (predictor.get("traffic", 0), 0)


def requested_mirrors(rule: dict[str, Any]) -> list[tuple[str, float]]:
    """(Service, percent of the rule's requests copied to it) per RequestMirror filter of an HTTPRoute rule, as
    Gateway API v1.6 reads one: `percent`, else `fraction` (numerator / denominator, denominator 100 unless
    set), else every request."""
    mirrors = []
    for rule_filter in rule.get("filters") or []:
        if rule_filter.get("type") != "RequestMirror":
            continue
        spec = rule_filter["requestMirror"]
        fraction = spec.get("fraction")
        if "percent" in spec:
            percent = spec["percent"]
        elif fraction:
            percent = 100 * fraction["numerator"] / fraction.get("denominator", 100)
        else:
            percent = 100
        mirrors.append((spec["backendRef"]["name"], percent))
    return mirrors


def _path_matches(match: dict[str, Any], path: str) -> tuple[bool, int, int]:
    """(matches, exact, length) of a match's path (default PathPrefix /)."""
    spec = match.get("path") or {}
    kind, value = spec.get("type", "PathPrefix"), spec.get("value", "/")
    if kind == "Exact":
        return path == value, 1, len(value)
    prefix = value.rstrip("/")
    return path == value or not prefix or path == prefix or path.startswith(prefix + "/"), 0, len(value)


def route_for(table: list[dict[str, Any]], path: str, headers: dict[str, str], method: str = "POST",
              query: dict[str, str] | None = None) -> dict[str, Any] | None:
    """The rule of `table` (as the Gateway stand-in publishes it) a request reaches, by Gateway API's precedence:
    an Exact path, the longest path, a method match, the most header matches, the most query matches, then the
    first rule. Headers and query parameters match exactly (header names case-insensitively)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    best: tuple[tuple[int, ...], int] | None = None
    for index, rule in enumerate(table):
        for match in rule["matches"]:
            ok, exact, length = _path_matches(match, path)
            ok = ok and all(lowered.get(h["name"].lower()) == h["value"] for h in match.get("headers") or [])
            ok = ok and all((query or {}).get(q["name"]) == q["value"] for q in match.get("queryParams") or [])
            ok = ok and match.get("method") in (None, method)
            if not ok:
                continue
            score = (exact, length, int("method" in match), len(match.get("headers") or []),
                     len(match.get("queryParams") or []))
            if best is None or score > best[0]:
                best = (score, index)
    return table[best[1]] if best is not None else None


STAND_INS = {"kserve": KServe, "seldon": SeldonV1, "seldonV2": SeldonV2, "gatewayAPI": Gateway}
