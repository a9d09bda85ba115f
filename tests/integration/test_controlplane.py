"""The integration tier itself: a real API server validating our CRDs, upstream CRDs, Prometheus."""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path

import pytest

from ..conftest import INVALID_CASES, model_deployment_manifest, model_version_manifest
from modelops.api.modeldeployment import ModelDeploymentSpec, full_weight_refusal
from playground.processes import Process, free_port

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


def test_api_server_is_the_pinned_release(control_plane):
    version = json.loads(control_plane.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == "v1.36.3"


def test_examples_apply(control_plane, namespace):
    for path in EXAMPLES:
        control_plane.kubectl("apply", "-n", namespace, "-f", str(path))
    names = control_plane.kubectl("get", "modelops", "-n", namespace, "-o", "name").stdout.split()
    assert sorted(names) == sorted([
        "modeldeployment.modelops.io/churn", "modeldeployment.modelops.io/embedder",
        "modeldeployment.modelops.io/fraud", "modeldeployment.modelops.io/iris", "modeldeployment.modelops.io/ranker",
        "modelversion.modelops.io/fraud-1-0-0", "modelversion.modelops.io/iris-1-0-0",
        "modelversion.modelops.io/iris-1-1-0"])


@pytest.mark.parametrize("what, manifest, field", INVALID_CASES, ids=[c[0] for c in INVALID_CASES])
def test_api_server_rejects_invalid_specs_naming_the_field(control_plane, namespace, what, manifest, field):
    result = control_plane.apply(manifest, "-n", namespace, check=False)
    assert result.returncode != 0, f"{what} was accepted"
    assert field in result.stderr, result.stderr
    assert "spec." in result.stderr, result.stderr


def test_api_server_applies_cel_rules(control_plane, namespace):
    check_without_limit = model_deployment_manifest()
    check_without_limit["spec"]["analysis"]["checks"] = [{"name": "x", "query": "up"}]
    result = control_plane.apply(check_without_limit, "-n", namespace, check=False)
    assert "a check needs at least one limit" in result.stderr
    no_route = model_deployment_manifest()
    no_route["spec"]["serving"] = {"backend": "gatewayAPI"}
    result = control_plane.apply(no_route, "-n", namespace, check=False)
    assert "serving.gatewayAPI is required when serving.backend is gatewayAPI" in result.stderr


@pytest.mark.parametrize("fields, field", [
    ({"strategy": {"type": "HotSwap"}}, "spec.strategy"),
    ({"strategy": {"steps": [{"weight": 10}, {"weight": 100}]}}, "spec.strategy"),
    ({"trafficOverride": {"weight": 100, "reason": "pin"}}, "spec.trafficOverride.weight"),
])
def test_api_server_refuses_a_candidate_at_100_percent_on_kserve(control_plane, namespace, fields, field):
    """The operator's own refusal (full_weight_refusal) is the API server's too, naming the same field."""
    manifest = model_deployment_manifest(**fields)
    assert full_weight_refusal(ModelDeploymentSpec.model_validate(manifest["spec"])).startswith(field[len("spec."):])
    result = control_plane.apply(manifest, "-n", namespace, check=False)
    assert result.returncode != 0 and field in result.stderr, result.stderr
    assert "on the kserve backend a candidate never takes 100 %" in result.stderr


def test_api_server_fills_in_defaults(control_plane, namespace):
    manifest = model_deployment_manifest()
    del manifest["spec"]["strategy"], manifest["spec"]["analysis"]
    control_plane.apply(manifest, "-n", namespace)
    stored = json.loads(control_plane.kubectl("get", "mdep", "fraud", "-n", namespace, "-o", "json").stdout)["spec"]
    assert [s["weight"] for s in stored["strategy"]["steps"]] == [10, 25, 50]
    assert stored["analysis"]["failureLimit"] == 2 and stored["retention"] == 2


def test_model_version_spec_is_immutable(control_plane, namespace):
    control_plane.apply(model_version_manifest(), "-n", namespace)
    result = control_plane.kubectl("patch", "mv", "fraud-1-0-0", "-n", namespace, "--type", "merge",
                                   "-p", '{"spec": {"metrics": {"accuracy": 0.99}}}', check=False)
    assert result.returncode != 0
    assert "spec is immutable" in result.stderr
    # Status is not spec: the operator can still write it.
    control_plane.kubectl("patch", "mv", "fraud-1-0-0", "-n", namespace, "--subresource", "status",
                          "--type", "merge", "-p", '{"status": {"phase": "Available"}}')


def test_printer_columns(control_plane, namespace):
    control_plane.apply(model_deployment_manifest(), "-n", namespace)
    control_plane.kubectl("patch", "mdep", "fraud", "-n", namespace, "--subresource", "status", "--type", "merge",
                          "-p", json.dumps({"status": {"phase": "Progressing", "stableVersion": "1.0.0",
                                                       "canaryVersion": "1.1.0", "canaryWeight": 25}}))
    header, row = control_plane.kubectl("get", "mdep", "-n", namespace).stdout.splitlines()
    assert header.split() == ["NAME", "MODEL", "STABLE", "CANARY", "WEIGHT", "PHASE", "AGE"]
    assert row.split()[:6] == ["fraud", "fraud", "1.0.0", "1.1.0", "25", "Progressing"]
    control_plane.apply(model_version_manifest(), "-n", namespace)
    header = control_plane.kubectl("get", "mv", "-n", namespace).stdout.splitlines()[0]
    assert header.split() == ["NAME", "MODEL", "VERSION", "DIGEST", "PHASE", "AGE"]


INFERENCE_SERVICE = {
    "apiVersion": "serving.kserve.io/v1beta1",
    "kind": "InferenceService",
    "metadata": {"name": "fraud"},
    "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": "s3://models/fraud/1.0.0"}}},
}

SELDON_DEPLOYMENT = {
    "apiVersion": "machinelearning.seldon.io/v1",
    "kind": "SeldonDeployment",
    "metadata": {"name": "churn"},
    "spec": {"predictors": [{
        "name": "stable", "traffic": 100, "replicas": 1,
        "graph": {"name": "classifier", "implementation": "SKLEARN_SERVER", "modelUri": "s3://models/churn/2.2.0"},
    }]},
}


def test_kserve_inference_service_can_be_created_and_patched(control_plane, namespace):
    control_plane.apply(INFERENCE_SERVICE, "-n", namespace)
    control_plane.kubectl("patch", "isvc", "fraud", "-n", namespace, "--type", "merge", "-p",
                          '{"spec": {"predictor": {"canaryTrafficPercent": 10}}}')
    stored = json.loads(control_plane.kubectl("get", "isvc", "fraud", "-n", namespace, "-o", "json").stdout)
    assert stored["spec"]["predictor"]["canaryTrafficPercent"] == 10
    # The full upstream schema is in force: an unknown predictor field is pruned.
    control_plane.kubectl("patch", "isvc", "fraud", "-n", namespace, "--type", "merge", "-p",
                          '{"spec": {"predictor": {"notAField": 1}}}')
    stored = json.loads(control_plane.kubectl("get", "isvc", "fraud", "-n", namespace, "-o", "json").stdout)
    assert "notAField" not in stored["spec"]["predictor"]


def test_seldon_deployment_can_be_created_and_patched(control_plane, namespace):
    control_plane.apply(SELDON_DEPLOYMENT, "-n", namespace)
    canary = {"name": "canary", "traffic": 10, "replicas": 1,
              "graph": {"name": "classifier", "implementation": "SKLEARN_SERVER", "modelUri": "s3://models/churn/2.3.0"}}
    stable = dict(SELDON_DEPLOYMENT["spec"]["predictors"][0], traffic=90)
    control_plane.kubectl("patch", "sdep", "churn", "-n", namespace, "--type", "merge", "-p",
                          json.dumps({"spec": {"predictors": [stable, canary]}}))
    stored = json.loads(control_plane.kubectl("get", "sdep", "churn", "-n", namespace, "-o", "json").stdout)
    assert [(p["name"], p["traffic"]) for p in stored["spec"]["predictors"]] == [("stable", 90), ("canary", 10)]


def test_rbac_is_enforced(control_plane, namespace):
    nobody = control_plane.kubeconfig_for("nobody")
    result = control_plane.kubectl("get", "mdep", "-n", namespace, kubeconfig=nobody, check=False)
    assert result.returncode != 0 and "forbidden" in result.stderr


def test_prometheus_scrapes_a_real_process(prometheus, tmp_path):
    port = free_port()
    config = {"port": port, "namespace": "scrape", "object": "svc", "unit": "svc-v1", "flavour": "generic",
              "model": "m", "version": "1.0.0"}
    server = Process("model-server", [sys.executable, "-m", "playground.revision_server", json.dumps(config)],
                     tmp_path, cwd=Path(__file__).resolve().parents[2])
    try:
        server.wait_until(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1).status == 200,
                          10, "ready endpoint")
        for _ in range(3):
            urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=b"{}"), timeout=2)
        prometheus.add_target(f"127.0.0.1:{port}", role="scrape-test")
        result = prometheus.wait_for('http_request_duration_seconds_count{role="scrape-test", code="200"} == 3')
        assert float(result[0]["value"][1]) == 3
    finally:
        prometheus.remove_target(f"127.0.0.1:{port}")
        server.stop()
