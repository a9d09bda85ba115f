from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from modelops.api.metricprovider import ClusterMetricProviderSpec
from modelops.api.modeldeployment import ModelDeploymentSpec, RollbackMode, StrategyType
from modelops.api.modelversion import ModelVersionSpec, content_id
from modelops.api.notifier import ClusterNotifierSpec
from modelops.api.types import duration_seconds

from ..conftest import INVALID_CASES, model_deployment_manifest, model_version_manifest, with_path

SPEC_MODELS = {"ModelDeployment": ModelDeploymentSpec, "ModelVersion": ModelVersionSpec,
               "ClusterMetricProvider": ClusterMetricProviderSpec, "ClusterNotifier": ClusterNotifierSpec}


@pytest.mark.parametrize("what, manifest, field", INVALID_CASES, ids=[c[0] for c in INVALID_CASES])
def test_invalid_spec_is_rejected_naming_the_field(what, manifest, field):
    with pytest.raises(ValidationError) as caught:
        SPEC_MODELS[manifest["kind"]].model_validate(manifest["spec"])
    assert field in str(caught.value), str(caught.value)


def test_defaults_are_a_usable_canary():
    spec = ModelDeploymentSpec.model_validate({"model": "m", "version": "1.0.0", "serving": {"backend": "kserve"}})
    assert [s.weight for s in spec.strategy.steps] == [10, 25, 50]
    assert spec.strategy.type is StrategyType.Canary
    assert spec.strategy.rollback is RollbackMode.Immediate
    assert spec.analysis.failure_limit == 2
    assert spec.retention == 2
    assert spec.analysis.checks == []


@pytest.mark.parametrize("text, seconds", [("30s", 30), ("5m", 300), ("1h", 3600), ("1h30m", 5400), ("250ms", 0.25)])
def test_durations(text, seconds):
    assert duration_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "-5s", "1d", "5 m", "m5"])
def test_bad_durations(text):
    with pytest.raises(ValueError, match="duration"):
        duration_seconds(text)


@pytest.mark.parametrize("version", ["1.0.0", "0.1.0-rc.1", "2.3.4+build.7", "1.0.0-alpha.beta.1"])
def test_semantic_versions_accepted(version):
    ModelVersionSpec.model_validate(model_version_manifest(version=version)["spec"])


@pytest.mark.parametrize("version", ["1.0", "01.0.0", "1.0.0-", "v1.0.0", "1.0.0.0"])
def test_not_semantic_versions_rejected(version):
    with pytest.raises(ValidationError, match="semantic version"):
        ModelVersionSpec.model_validate(model_version_manifest(version=version)["spec"])


@pytest.mark.parametrize(
    "check, message",
    [
        ({"name": "a", "max": 1}, "exactly one of template or query"),
        ({"name": "a", "template": "errorRate", "query": "up", "max": 1}, "exactly one of template or query"),
        ({"name": "a", "template": "errorRate"}, "at least one limit"),
        ({"name": "a", "query": "up", "maxDropPercent": -1}, "max_drop_percent|maxDropPercent"),
    ],
)
def test_bad_checks(check, message):
    manifest = with_path(model_deployment_manifest(), "spec.analysis.checks", [check])
    with pytest.raises(ValidationError, match=message):
        ModelDeploymentSpec.model_validate(manifest["spec"])


def test_gateway_backend_needs_its_route():
    manifest = with_path(model_deployment_manifest(), "spec.serving", {"backend": "gatewayAPI"})
    with pytest.raises(ValidationError, match="serving.gatewayAPI is required"):
        ModelDeploymentSpec.model_validate(manifest["spec"])


def test_unknown_fields_are_rejected():
    manifest = with_path(model_deployment_manifest(), "spec.analysis.failurelimit", 3)
    with pytest.raises(ValidationError, match="failurelimit"):
        ModelDeploymentSpec.model_validate(manifest["spec"])


def test_wire_round_trip_uses_camel_case():
    spec = ModelDeploymentSpec.model_validate(model_deployment_manifest()["spec"])
    wire = spec.to_wire()
    assert wire["analysis"]["failureLimit"] == 2
    assert ModelDeploymentSpec.model_validate(wire) == spec


def test_content_id_is_stable_and_sensitive():
    spec = ModelVersionSpec.model_validate(model_version_manifest()["spec"])
    reordered = ModelVersionSpec.model_validate(dict(reversed(list(model_version_manifest()["spec"].items()))))
    other = ModelVersionSpec.model_validate(
        with_path(model_version_manifest(), "spec.lineage.parameters.max_depth", "7")["spec"])
    assert content_id(spec) == content_id(reordered)
    assert content_id(spec) != content_id(other)
    assert content_id(spec).startswith("sha256:") and len(content_id(spec)) == 71


EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_are_valid(path):
    manifests = [m for m in yaml.safe_load_all(path.read_text()) if m]
    assert manifests
    for manifest in manifests:
        SPEC_MODELS[manifest["kind"]].model_validate(manifest["spec"])
