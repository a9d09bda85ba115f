"""The operator refuses every generated refusal (tests/refusals.py) naming the field, and accepts every spec at the
edge of a rule; the integration tier holds the API server to the same lists."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from modelops.api.metricprovider import ClusterMetricProviderSpec
from modelops.api.modeldeployment import ModelDeploymentSpec
from modelops.api.notifier import ClusterNotifierSpec
from modelops.api.types import MAX_DURATION

from ..refusals import ACCEPTANCES, MODELS, REFUSALS, duration_fields, full_manifests


@pytest.mark.parametrize("case", REFUSALS, ids=[c.what for c in REFUSALS])
def test_the_operator_refuses_each_generated_refusal_naming_the_field(case):
    with pytest.raises(ValidationError) as refused:
        MODELS[case.manifest["kind"]].model_validate(case.manifest["spec"])
    assert case.model_field in str(refused.value)
    if case.words:
        assert case.words in str(refused.value)


@pytest.mark.parametrize("case", ACCEPTANCES, ids=[c.what for c in ACCEPTANCES])
def test_the_operator_accepts_each_spec_at_the_edge_of_a_rule(case):
    MODELS[case.manifest["kind"]].model_validate(case.manifest["spec"])


def test_every_duration_field_is_bounded_and_set_in_the_full_manifests():
    """A duration field without bounds, or one the full manifests do not set, would escape the generated cases."""
    found = {}
    for kind, (model, manifest) in full_manifests().items():
        for path, bounds in duration_fields(model):
            value = manifest["spec"]
            for part in path:
                value = value[int(part)] if part.isdigit() else value[part]
            found[f"{kind} {'.'.join(path)}"] = (bounds.most, bounds.positive)
    assert found == {
        "ModelDeployment strategy.steps.0.pause": (MAX_DURATION, False),
        "ModelDeployment strategy.readyTimeout": (MAX_DURATION, False),
        "ModelDeployment analysis.interval": (MAX_DURATION, True),
        "ModelDeployment analysis.window": (MAX_DURATION, True),
        "ModelDeployment analysis.checks.0.gradingDelay": (MAX_DURATION, False),
        "ModelDeployment analysis.checks.0.sequential.maxDuration": (MAX_DURATION, True),
        "ModelDeployment analysis.prometheus.timeout": (MAX_DURATION, False),
        "ClusterMetricProvider prometheus.timeout": (MAX_DURATION, False),
        "ClusterNotifier webhook.timeout": ("30s", True),
    }
    assert {ModelDeploymentSpec, ClusterMetricProviderSpec, ClusterNotifierSpec} == set(MODELS.values())


def test_an_overflowing_pause_is_refused_before_any_rollout_could_overflow():
    """`pause: 99999999999999h` was accepted and rolled back every rollout of its spec with OverflowError."""
    spec = full_manifests()["ModelDeployment"][1]["spec"]
    spec["strategy"]["steps"][0]["pause"] = "99999999999999h"
    with pytest.raises(ValidationError, match="strategy.steps.0.pause"):
        ModelDeploymentSpec.model_validate(spec)
