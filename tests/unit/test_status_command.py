"""`kubectl modelops status NAME --timeout D`: what a read of the object says of the rollout (pure), the command's
exit statuses over a stand-in watch, kubectl's watch stream read by a stand-in kubectl, and the target flags
(-n, --context, --kubeconfig) taken before or after any command."""

from __future__ import annotations

import json
import os
import stat
import sys
import time

import pytest

from modelops import view, view_commands
from modelops.cli import plugin_parser

from ..conftest import model_deployment_manifest


def args_for(argv):
    return plugin_parser().parse_args(argv)


def deployment(version="1.1.0", generation=3, **status):
    obj = model_deployment_manifest(version=version)
    obj["metadata"].update(namespace="prod", generation=generation)
    obj["status"] = {"observedGeneration": generation, **status}
    return obj


def ready(state="True", reason="StableServing"):
    return [{"type": "Ready", "status": state, "reason": reason, "message": "stable is serving",
             "lastTransitionTime": "2026-01-01T00:00:00Z"}]


STABLE_ON_IT = dict(phase="Stable", stableVersion="1.1.0", conditions=ready())


@pytest.mark.parametrize("obj, code, words", [
    (deployment(**STABLE_ON_IT), 0, "Stable: 1.1.0 serves all traffic"),
    (deployment(phase="RolledBack", stableVersion="1.0.0", failedVersion="1.1.0", message="errors 0.09 > 0.05"),
     1, "RolledBack (1.1.0 failed): errors 0.09 > 0.05"),
    (deployment(phase="Failed", stableVersion="1.0.0", message="stable ModelVersion is gone"), 1,
     "Failed: stable ModelVersion is gone"),
    (deployment(phase="Progressing", stableVersion="1.0.0", canaryVersion="1.1.0", message="step 1/2"), None,
     "Progressing: step 1/2"),
    (deployment(phase="Paused", stableVersion="1.0.0", canaryVersion="1.1.0"), None, "Paused: "),
    # the operator has not acted on the new spec.version yet: the old Stable says nothing of it
    (deployment(generation=4, **{**STABLE_ON_IT, "observedGeneration": 3}), None,
     "waiting for the operator to act on generation 4"),
    (deployment(phase="Stable", stableVersion="1.0.0", conditions=ready()), None, "Stable: "),
    # stable on it, but the backend does not report it serving: not done
    (deployment(phase="Stable", stableVersion="1.1.0", conditions=ready("False", "BackendNotReady")), None,
     "Stable on 1.1.0, not yet reported serving (BackendNotReady: stable is serving)"),
    (deployment(phase="Stable", stableVersion="1.1.0"), None, "Stable on 1.1.0, not yet reported serving "
                                                              "(no Ready condition yet)"),
])
def test_what_a_read_says_of_the_rollout(obj, code, words):
    assert view.rollout_outcome(obj) == (code, words)


def test_a_status_it_cannot_read_is_not_an_outcome():
    obj = deployment(phase="NoSuchPhase")
    code, words = view.rollout_outcome(obj)
    assert code is None and "cannot read the status" in words


def watching(*objects):
    """A stand-in for kubectl_watch: `objects` in turn (a None is the deadline passing)."""
    seen = []

    def watch(args, name, deadline):
        seen.append((args.namespace, name, deadline))
        yield from objects

    watch.seen = seen
    return watch


def test_status_prints_each_new_state_and_exits_0_once_stable_on_spec_version(capsys):
    progressing = deployment(phase="Progressing", stableVersion="1.0.0", canaryVersion="1.1.0", message="step 1/2")
    watch = watching(progressing, progressing, deployment(**STABLE_ON_IT), deployment(phase="Progressing"))
    started = time.monotonic()
    assert view_commands.run(args_for(["status", "fraud", "-n", "prod", "--timeout", "90s"]), watch=watch) == 0
    assert capsys.readouterr().out == "Progressing: step 1/2\nStable: 1.1.0 serves all traffic\n"
    [(namespace, name, deadline)] = watch.seen
    assert (namespace, name) == ("prod", "fraud") and started + 90 <= deadline <= time.monotonic() + 90


def test_status_exits_1_on_a_rollback_2_at_the_timeout_and_3_when_unreadable(capsys):
    rolled_back = deployment(phase="RolledBack", stableVersion="1.0.0", failedVersion="1.1.0", message="errors")
    assert view_commands.run(args_for(["status", "fraud"]), watch=watching(rolled_back)) == view.STATUS_FAILED == 1
    capsys.readouterr()
    waiting = deployment(phase="Paused")
    assert view_commands.run(args_for(["status", "fraud", "--timeout", "1m"]),
                             watch=watching(waiting, None)) == view.STATUS_TIMEOUT == 2
    assert capsys.readouterr().err == "timed out after 1m00s: Paused: \n"
    without_a_timeout = watching(waiting, None)
    view_commands.run(args_for(["status", "fraud"]), watch=without_a_timeout)
    assert without_a_timeout.seen[0][2] == float("inf")

    def unreadable(args, name, deadline):
        raise view_commands.ReadError('modeldeployments.modelops.io "fraud" not found')
        yield

    assert view_commands.run(args_for(["status", "fraud"]), watch=unreadable) == view.STATUS_UNREADABLE == 3
    assert "not found" in capsys.readouterr().err
    assert view_commands.run(args_for(["status", "fraud"]), watch=watching(waiting)) == 3  # the watch ended


def test_a_timeout_that_is_not_a_duration_is_refused_naming_it(capsys):
    with pytest.raises(SystemExit):
        args_for(["status", "fraud", "--timeout", "soon"])
    assert "argument --timeout: 'soon' is not a duration" in capsys.readouterr().err


@pytest.fixture
def fake_kubectl(tmp_path, monkeypatch):
    """A kubectl on PATH that prints what `--watch -o json` prints: pretty JSON objects back to back, here in pieces
    (an object cut inside a two-byte character), then waits; or exits as told; or spoils its output as told (a
    warning line before the objects, a word for a number in the second, the second cut off before it exits). Its
    invocations are logged."""
    script = tmp_path / "kubectl"
    log = tmp_path / "calls"
    script.write_text(f"""#!{sys.executable}
import json, os, sys, time
open({str(log)!r}, "a").write(" ".join(sys.argv[1:]) + "\\n")
mode = os.environ["FAKE_KUBECTL"]
if mode == "refused":
    sys.stderr.write('Error from server (NotFound): modeldeployments.modelops.io "fraud" not found\\n')
    sys.exit(1)
text = "".join(json.dumps({{"n": n, "message": "caf\\u00e9"}}, indent=4, ensure_ascii=False) + "\\n" for n in (1, 2))
text = {{"warns": "Warning: modelops.io/v1alpha1 ModelDeployment is deprecated\\n" + text,
         "garbled": text.replace('"n": 2', '"n": two'), "cut": text[:-12]}}.get(mode, text)
data = text.encode()
cut = data.index("\\u00e9".encode()) + 1
for piece in (data[:cut], data[cut:]):
    sys.stdout.buffer.write(piece)
    sys.stdout.flush()
    time.sleep(0.05)
if mode in ("closes", "cut"):
    sys.exit(0)
time.sleep(30)
""")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    return log


def test_the_watch_stream_is_read_object_by_object_until_the_deadline(fake_kubectl, monkeypatch):
    monkeypatch.setenv("FAKE_KUBECTL", "waits")
    args = args_for(["status", "fraud", "--kubeconfig", "/tmp/k", "-n", "prod"])
    got = list(view_commands.kubectl_watch(args, "fraud", time.monotonic() + 1.5))
    assert got == [{"n": 1, "message": "café"}, {"n": 2, "message": "café"}, None]
    assert fake_kubectl.read_text() == "--kubeconfig /tmp/k --namespace prod get modeldeployments.modelops.io fraud " \
                                       "-o json --watch\n"


def test_a_watch_the_server_closes_is_opened_again_and_a_refusal_is_an_error(fake_kubectl, monkeypatch):
    monkeypatch.setenv("FAKE_KUBECTL", "closes")
    got = list(view_commands.kubectl_watch(args_for(["status", "fraud"]), "fraud", time.monotonic() + 1.6))
    assert got[:4] == [{"n": 1, "message": "café"}, {"n": 2, "message": "café"}] * 2 and got[-1] is None
    assert len(fake_kubectl.read_text().splitlines()) == 2
    monkeypatch.setenv("FAKE_KUBECTL", "refused")
    with pytest.raises(view_commands.ReadError, match="NotFound"):
        list(view_commands.kubectl_watch(args_for(["status", "fraud"]), "fraud", time.monotonic() + 5))


@pytest.mark.parametrize("mode, objects, words", [
    ("warns", 0, "kubectl get --watch printed something that is not JSON: 'Warning: modelops.io/v1alpha1 "
                 "ModelDeployment is deprecated'"),
    ("garbled", 1, "kubectl get --watch printed something that is not JSON: '{'"),
    ("cut", 1, """kubectl get --watch ended inside an object: '{\\n    "n": 2,"""),
])
def test_output_that_is_not_json_fails_at_once_with_an_exit_status_of_its_own(fake_kubectl, monkeypatch, capsys,
                                                                             mode, objects, words):
    """A warning or a garbled object used to wait for more output that never made it JSON: a hang until the
    timeout, or for ever; and an object cut off where kubectl exited was read anew every second."""
    monkeypatch.setenv("FAKE_KUBECTL", mode)
    got, started = [], time.monotonic()
    with pytest.raises(view_commands.NotJSON) as refused:
        for obj in view_commands.kubectl_watch(args_for(["status", "fraud"]), "fraud", started + 20):
            got.append(obj)
    assert words in str(refused.value)
    assert got == [{"n": 1, "message": "café"}] * objects and time.monotonic() - started < 5
    started = time.monotonic()
    assert view_commands.run(args_for(["status", "fraud", "--timeout", "20s"])) == view.STATUS_NOT_JSON == 4
    assert f"error: {words}" in capsys.readouterr().err and time.monotonic() - started < 5


PRETTY = json.dumps({"kind": "ModelDeployment", "metadata": {"name": "fraud", "generation": 3},
                     "status": {"phase": "Progressing", "weight": -12.5e-3, "paused": False, "pin": None, "ready": True,
                                "message": 'caf\u00e9 \\ "q" \ud83d\ude00', "steps": [1, [], {}, 20]}}, indent=4)


def test_every_cut_of_an_object_may_yet_be_json():
    for end in range(1, len(PRETTY)):
        with pytest.raises(json.JSONDecodeError) as error:
            json.JSONDecoder().raw_decode(PRETTY[:end])
        assert view_commands.cut_short(PRETTY[:end], error.value), PRETTY[:end]


@pytest.mark.parametrize("text", [
    '{"a": oops\n', '{"a": 1 2', r'{"a": "x\q"}', r'{"a": "x\u12G4"}', '{"a": tru ', '{"a": 1.5.', '{"a" 1',
    '{"a": [1 2]', '{"a": 1 error: unexpected EOF', '{"a": "x\ny"}', '{error from server',
])
def test_what_no_continuation_makes_json_is_not_cut_short(text):
    with pytest.raises(json.JSONDecodeError) as error:
        json.JSONDecoder().raw_decode(text)
    assert not view_commands.cut_short(text, error.value)


@pytest.mark.parametrize("argv", [
    ["-n", "prod", "pause", "fraud"],
    ["pause", "fraud", "-n", "prod"],
    ["pause", "-n", "prod", "fraud"],
    ["promote", "fraud", "--reason", "ok", "--namespace", "prod"],
    ["status", "fraud", "-n", "prod"],
    ["get", "fraud", "-n", "prod"],
])
def test_the_namespace_is_taken_before_or_after_any_command(argv):
    assert args_for(argv).namespace == "prod"


def test_kubeconfig_and_context_anywhere_reach_every_kubectl_call():
    args = args_for(["--kubeconfig", "/tmp/k", "pin", "fraud", "30", "--reason", "x", "--context", "east", "-n", "p"])
    assert view_commands.kubectl_flags(args) == ["--kubeconfig", "/tmp/k", "--context", "east", "--namespace", "p"]
