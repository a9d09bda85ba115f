"""Shared fixtures and builders for all test tiers."""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from playground import upstream_crds as upstream

# `HYPOTHESIS_PROFILE=thorough make unit` searches much harder than the default run.
settings.register_profile("default", max_examples=300)
settings.register_profile("thorough", max_examples=5000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
# kubectl caches each API server's discovery under its address; the tests' control planes come and go on free ports,
# so one may find another's cache (a test CRD of another group with the same plural): a cache of this process's own.
os.environ.setdefault("KUBECACHEDIR", tempfile.mkdtemp(prefix="modelops-kubectl-cache-"))

DIGEST = "sha256:" + "ab" * 32


def model_version_manifest(model: str = "fraud", version: str = "1.0.0", **spec: Any) -> dict[str, Any]:
    body = {
        "model": model,
        "version": version,
        "artifact": {"uri": f"s3://models/{model}/{version}", "digest": DIGEST, "format": "sklearn"},
        "lineage": {
            "code": {"repository": "https://git.example/ml/fraud", "commit": "4f2a9c1"},
            "data": {"uri": "s3://data/fraud/2026-10", "digest": DIGEST},
            "parameters": {"max_depth": "6", "n_estimators": "200"},
            "environment": {"image": "registry.example/train@" + DIGEST, "python": "3.11"},
            "experiment": {"tracker": "mlflow", "runId": "run-7"},
        },
        "metrics": {"accuracy": 0.93},
    }
    body.update(spec)
    return {
        "apiVersion": "modelops.io/v1alpha1",
        "kind": "ModelVersion",
        "metadata": {"name": f"{model}-{version.replace('.', '-')}"},
        "spec": body,
    }


def model_deployment_manifest(name: str = "fraud", version: str = "1.0.0", **spec: Any) -> dict[str, Any]:
    body = {
        "model": "fraud",
        "version": version,
        "serving": {"backend": "kserve"},
        "strategy": {"steps": [{"weight": 10, "pause": "30s"}, {"weight": 50, "pause": "30s"}]},
        "analysis": {
            "interval": "10s",
            "failureLimit": 2,
            "checks": [{"name": "errors", "template": "errorRate", "max": 0.05}],
        },
    }
    body.update(spec)
    return {
        "apiVersion": "modelops.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": body,
    }


def with_path(manifest: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of `manifest` with the dotted `path` (list indexes as numbers) set to `value`."""
    out = copy.deepcopy(manifest)
    node: Any = out
    parts = path.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node[part]
    last = parts[-1]
    if last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return out


# Invalid specs, shared by the model tests and the API-server tests: (what, manifest, field named in the error).
INVALID_CASES = [
    ("weight 150", with_path(model_deployment_manifest(), "spec.strategy.steps.1.weight", 150), "weight"),
    ("decreasing steps", with_path(model_deployment_manifest(), "spec.strategy.steps",
                                   [{"weight": 50, "pause": "1m"}, {"weight": 20, "pause": "1m"}]), "steps"),
    ("unknown backend", with_path(model_deployment_manifest(), "spec.serving.backend", "triton"), "backend"),
    ("negative interval", with_path(model_deployment_manifest(), "spec.analysis.interval", "-5s"), "interval"),
    ("bad semver", with_path(model_deployment_manifest(), "spec.version", "1.2"), "version"),
    ("bad digest", with_path(model_version_manifest(), "spec.artifact.digest", "md5:abc"), "digest"),
    ("short digest", with_path(model_version_manifest(), "spec.artifact.digest", "sha256:abc"), "digest"),
    ("bad semver on a version", with_path(model_version_manifest(), "spec.version", "v1"), "version"),
    ("repeated check names", with_path(model_deployment_manifest(), "spec.analysis.checks", [
        {"name": "errors", "template": "errorRate", "max": 0.05},
        {"name": "errors", "template": "latencyP95", "max": 0.3}]), "unique"),
    ("minSamples without a sample query", with_path(model_deployment_manifest(), "spec.analysis.checks", [
        {"name": "accuracy", "query": "avg(accuracy)", "min": 0.9, "minSamples": 100}]), "sampleQuery"),
    ("template the backend lacks", model_deployment_manifest(
        serving={"backend": "seldonV2"}, analysis={"checks": [{"name": "p95", "template": "latencyP95", "max": 0.3}]}),
     "template"),
    ("a sequential check with an absolute limit", with_path(model_deployment_manifest(), "spec.analysis.checks", [
        {"name": "accuracy", "template": "accuracy", "maxDropPercent": 1, "min": 0.8, "sequential": {}}]),
     "exactly one of maxDropPercent or maxIncreasePercent"),
    ("a sequential check on a drift score", with_path(model_deployment_manifest(), "spec.analysis.checks", [
        {"name": "drift", "template": "driftScore", "maxIncreasePercent": 10, "sequential": {}}]), "needs counts"),
    ("a sequential query without counts", with_path(model_deployment_manifest(), "spec.analysis.checks", [
        {"name": "ctr", "query": "avg(ctr)", "maxDropPercent": 5, "sequential": {"confidence": 0.95}}]), "sampleQuery"),
    ("a sequential latency check tolerating a drop", with_path(model_deployment_manifest(), "spec.analysis.checks", [
        {"name": "p95", "template": "latencyP95", "maxDropPercent": 5, "sequential": {}}]), "maxIncreasePercent"),
    ("a sequential confidence of 0.5", with_path(model_deployment_manifest(), "spec.analysis.checks", [
        {"name": "errors", "template": "errorRate", "maxIncreasePercent": 5, "sequential": {"confidence": 0.5}}]),
     "confidence"),
    ("a sequential latency check without histograms", model_deployment_manifest(
        serving={"backend": "seldonV2"}, analysis={"checks": [
            {"name": "latency", "template": "meanLatency", "maxIncreasePercent": 10, "sequential": {}}]}),
     "latency histograms"),
    ("too many notifiers", model_deployment_manifest(notifications=[f"n{i}" for i in range(9)]), "notifications"),
    ("a notifier named twice", model_deployment_manifest(notifications=["oncall", "oncall"]), "notifications"),
    ("a notifier that is no object name", model_deployment_manifest(notifications=["On Call"]), "notifications"),
    ("a step of two kinds", with_path(model_deployment_manifest(), "spec.strategy.steps.0", {"weight": 10, "mirror": 10}),
     "exactly one of weight, mirror or match"),
    ("a mirror step on KServe", with_path(model_deployment_manifest(), "spec.strategy.steps.0", {"mirror": 100}),
     "KServe (serverless, on Knative) has no request mirroring"),
    ("a partial mirror on Seldon v1", with_path(model_deployment_manifest(serving={"backend": "seldon"}),
                                                "spec.strategy.steps.0", {"mirror": 50}), "mirror: 100 only"),
    ("a header cohort on Seldon v2", with_path(model_deployment_manifest(
        serving={"backend": "seldonV2"}, analysis={"checks": []}), "spec.strategy.steps.0",
        {"match": {"headers": [{"name": "x-cohort", "value": "testers"}]}}), "no match steps"),
    ("a header named twice", with_path(model_deployment_manifest(serving={
        "backend": "gatewayAPI", "gatewayAPI": {"route": "fraud", "services": {"1.0.0": "fraud-v1"}}}, analysis={"checks": []}),
        "spec.strategy.steps.0", {"match": {"headers": [{"name": "X-A", "value": "1"}, {"name": "x-a", "value": "2"}]}}),
     "named once"),
]


@pytest.fixture
def deployment_manifest():
    return model_deployment_manifest()


def upstream_crd_folder(names: list[str]) -> Path:
    """The folder holding these upstream CRDs (found or fetched); the test fails with the one clear message if none."""
    try:
        return upstream.upstream_crds(names)
    except upstream.UpstreamCRDsUnavailable as exc:
        message = str(exc)
    pytest.fail(message, pytrace=False)  # outside the except: the message once, without a chained traceback
