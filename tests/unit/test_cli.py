import pytest

from modelops.api.modeldeployment import ModelDeploymentSpec
from modelops.cli import plugin_parser, plugin_patch

from ..conftest import model_deployment_manifest


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["promote", "fraud", "--reason", "looks good"],
         {"request": {"id": "r1", "action": "Promote", "reason": "looks good", "actor": "sre"}}),
        (["rollback", "fraud", "--to", "1.0.0", "--reason", "bad"],
         {"request": {"id": "r1", "action": "Rollback", "reason": "bad", "actor": "sre", "version": "1.0.0"}}),
        (["drill", "fraud"],
         {"request": {"id": "r1", "action": "Drill", "reason": "rollback drill", "actor": "sre"}}),
        (["drill", "fraud", "--reason", "quarterly game day"],
         {"request": {"id": "r1", "action": "Drill", "reason": "quarterly game day", "actor": "sre"}}),
        (["pause", "fraud"], {"paused": True}),
        (["resume", "fraud"], {"paused": False}),
        (["pin", "fraud", "30", "--reason", "load test"], {"trafficOverride": {"weight": 30, "reason": "load test"}}),
        (["unpin", "fraud"], {"trafficOverride": None}),
    ],
)
def test_each_command_is_one_valid_spec_patch(argv, expected):
    patch = plugin_patch(plugin_parser().parse_args(argv), "r1", "sre")
    assert patch == {"spec": expected}
    spec = {**model_deployment_manifest()["spec"], **{k: v for k, v in expected.items() if v is not None}}
    ModelDeploymentSpec.model_validate(spec)  # what the patch writes is a valid spec


def test_reason_is_required_for_requests_and_weights_are_bounded():
    with pytest.raises(SystemExit):
        plugin_parser().parse_args(["abort", "fraud"])
    with pytest.raises(SystemExit):
        plugin_parser().parse_args(["pin", "fraud", "150", "--reason", "x"])


def test_drill_is_offered_only_where_the_operator_would_run_one():
    import yaml

    from modelops.actions import enabled
    from playground.argocd_lua import CUSTOMIZATIONS

    def captured(name):
        return yaml.safe_load((CUSTOMIZATIONS / "ModelDeployment" / "testdata" / f"{name}.yaml").read_text())

    promoted = captured("healthy_promoted")
    assert enabled("drill", promoted)
    assert not enabled("drill", captured("healthy_stable"))  # no fallback yet
    assert not enabled("drill", captured("progressing_canary"))
    assert not enabled("drill", captured("degraded_rolledBackByHand"))
    assert not enabled("drill", {**promoted, "spec": {**promoted["spec"], "paused": True}})
    assert not enabled("drill", {**promoted, "spec": {**promoted["spec"], "version": "1.2.0"}})
