import pytest

from modelops.api.modeldeployment import ModelDeploymentSpec
from modelops.cli import main, plugin_parser, plugin_patch

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


@pytest.mark.parametrize("timings, words", [
    (["--lease-duration", "15", "--renew-deadline", "12"], "--lease-request-timeout (5) <= --lease-duration minus"),
    (["--lease-duration", "3", "--renew-deadline", "2", "--retry-period", "0.5"], "(1)"),
    (["--renew-deadline", "20"], "--retry-period < --renew-deadline < --lease-duration"),
])
def test_election_timings_that_let_a_late_renewal_land_after_a_takeover_are_refused(timings, words, capsys):
    """A renewal sent just before the renew deadline may land up to a Lease request's timeout later: a standby must
    not be able to take over before then."""
    with pytest.raises(SystemExit):
        main(["run", *timings])
    assert words in capsys.readouterr().err


def test_short_election_timings_pass_with_a_request_timeout_within_their_margin(monkeypatch):
    import modelops.cli as cli

    started = []
    monkeypatch.setattr(cli, "run_operator", lambda args: started.append(args.lease_request_timeout) or 0)
    assert main(["run", "--lease-duration", "3", "--renew-deadline", "2", "--retry-period", "0.5",
                 "--lease-request-timeout", "1"]) == 0
    assert started == [1.0]


def test_the_operator_runs_for_a_uid_the_password_database_does_not_know(monkeypatch):
    """A pod's uid may have no passwd entry (the chart's 65532 on the image): kopf must not ask for one."""
    import getpass

    import kopf

    import modelops.cli as cli

    def no_such_user():
        raise KeyError("getpwuid(): uid not found: 65532")

    monkeypatch.setattr(getpass, "getuser", no_such_user)
    monkeypatch.setenv("POD_NAME", "modelops-abc12")
    monkeypatch.delenv("POD_ID", raising=False)
    given = {}

    async def operator(**kwargs):
        given.update(kwargs)
        # What kopf does with the identity it is given: with none it would call getuser() here.
        from kopf._core.engines import peering
        given["resolved"] = kwargs.get("identity") or peering.detect_own_id(manual=False)

    monkeypatch.setattr(kopf, "operator", operator)
    assert main(["run", "--no-leader-election", "--metrics-port", "0"]) == 0
    assert given["resolved"] == "modelops-abc12"
