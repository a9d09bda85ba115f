"""The four stand-ins: what each serving system's controller does to status and traffic."""

from __future__ import annotations

import json
from typing import Any

import kubernetes

from .standin import StandIn, Unit, condition


class KServe(StandIn):
    """KServe serverless: a new revision per predictor change; canaryTrafficPercent splits
    latest and last rolled-out revision; the status names revisions and traffic[]."""

    group, version, plural, flavour = "serving.kserve.io", "v1beta1", "inferenceservices", "knative"

    def __init__(self, *args: Any):
        super().__init__(*args)
        self.revisions: dict[tuple[str, str], list[tuple[str, Unit]]] = {}  # (template, unit) per service
        self.rolled: dict[tuple[str, str], tuple[Unit | None, Unit | None]] = {}  # (latest rolled out, previous)

    def reconcile(self, isvc: dict[str, Any]) -> None:
        meta, predictor = isvc["metadata"], isvc["spec"].get("predictor", {})
        key = (meta["namespace"], meta["name"])
        template = json.dumps({k: v for k, v in predictor.items() if k != "canaryTrafficPercent"}, sort_keys=True)
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
    """Seldon Core v1: one Deployment per predictor; status.deploymentStatus and state."""

    group, version, plural, flavour = "machinelearning.seldon.io", "v1", "seldondeployments", "seldon"

    def reconcile(self, sdep: dict[str, Any]) -> None:
        meta = sdep["metadata"]
        key = (meta["namespace"], meta["name"])
        split, deployments = [], {}
        for predictor in sdep["spec"].get("predictors", []):
            graph = predictor.get("graph", {})
            unit = self.unit(*key, predictor["name"], graph.get("modelUri", ""))
            split.append((unit, predictor.get("traffic", 0)))
            deployment = f"{meta['name']}-{predictor['name']}-0-{graph.get('name', 'model')}"
            deployments[deployment] = {"name": deployment, "replicas": 1, "availableReplicas": int(unit.ready),
                                       "status": "Available" if unit.ready else "Creating"}
        self.publish_split(*key, [(u, p) for u, p in split if u.ready])
        available = all(d["availableReplicas"] for d in deployments.values())
        self.write_status(*key, {"state": "Available" if available else "Creating", "deploymentStatus": deployments})


class SeldonV2(StandIn):
    """Seldon Core v2: a Model loads its artifact (in place on change), an Experiment weighs
    its candidates in proportion for requests to its default model."""

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
        routed = {}
        for experiment in experiments:
            meta, spec = experiment["metadata"], experiment["spec"]
            members = [(units.get((meta["namespace"], c["name"])), c["weight"]) for c in spec["candidates"]]
            ready = all(u is not None and u.ready for u, _ in members)
            self.write_status(meta["namespace"], meta["name"], {
                "observedGeneration": meta.get("generation"),
                "conditions": [condition("ExperimentReady", ready), condition("Ready", ready)]}, "experiments")
            if ready and spec.get("default"):
                total = sum(w for _, w in members) or 1
                routed[(meta["namespace"], spec["default"])] = [(u, round(100 * w / total)) for u, w in members]
        for (namespace, name), unit in units.items():
            self.publish_split(namespace, name, routed.get((namespace, name), [(unit, 100)]))


class Gateway(StandIn):
    """A Gateway API implementation: accepts routes, resolves backendRefs to Services,
    splits requests by backendRef weight; the pods behind each Service are one unit."""

    group, version, plural, flavour = "gateway.networking.k8s.io", "v1", "httproutes", "generic"

    def reconcile(self, route: dict[str, Any]) -> None:
        meta = route["metadata"]
        key = (meta["namespace"], meta["name"])
        resolved, split = True, []
        for rule in route["spec"].get("rules", []):
            for ref in rule.get("backendRefs", []):
                try:
                    self.core.read_namespaced_service(ref["name"], meta["namespace"])
                except kubernetes.client.ApiException:
                    resolved = False
                    continue
                unit = self.unit(*key, ref["name"], f"svc://{meta['namespace']}/{ref['name']}")
                resolved = resolved and unit.ready
                split.append((unit, ref.get("weight", 1)))
            break  # the first rule is the model's; the others are not under test
        total = sum(w for _, w in split) or 1
        self.publish_split(*key, [(u, round(100 * w / total)) for u, w in split if u.ready])
        generation = meta.get("generation")
        parents = route["spec"].get("parentRefs") or [{"name": "gateway"}]
        self.write_status(*key, {"parents": [{
            "parentRef": p, "controllerName": "modelops.io/test-gateway-stand-in",
            "conditions": [condition("Accepted", True, generation), condition("ResolvedRefs", resolved, generation)],
        } for p in parents]})


STAND_INS = {"kserve": KServe, "seldon": SeldonV1, "seldonV2": SeldonV2, "gatewayAPI": Gateway}
