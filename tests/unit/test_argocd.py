"""Argo CD's health and actions (deploy/argocd/): generated from actions.py, run on gopher-lua as Argo CD
runs them, on the objects the integration tier captured from real rollouts (no control plane here)."""

from __future__ import annotations

import copy
import filecmp
import re
import shutil
from pathlib import Path

import pytest
import yaml

from modelops.actions import DEFINITIONS, enabled, merge_patch, spec_patch
from modelops.analysis.evaluate import Measurement
from modelops.argocd import ANALYSIS_FIELDS, ARGOCD_ACTIONS, DEFAULT_REASON, action_lua, lua_string
from modelops.cli import main, plugin_parser, plugin_patch
from playground.argocd_lua import CUSTOMIZATIONS, ArgoCDLua, argocd_lua_binary, run_tests

ARGOCD = CUSTOMIZATIONS.parents[1]
MD_TESTDATA = sorted((CUSTOMIZATIONS / "ModelDeployment" / "testdata").glob("*.yaml"))


@pytest.fixture(scope="module")
def md():
    return ArgoCDLua("ModelDeployment", binary=argocd_lua_binary())


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_committed_files_match_the_generator(tmp_path):
    """actions/*.lua and argocd-cm.yaml are generated: a change of actions.py without `modelops argocd` fails here."""
    copy_ = tmp_path / "argocd"
    shutil.copytree(ARGOCD, copy_)
    assert main(["argocd", "--out", str(copy_)]) == 0
    assert tree(copy_) == tree(ARGOCD), "run `modelops argocd` (generated files added or removed)"
    stale = [name for name in tree(ARGOCD) if not filecmp.cmp(ARGOCD / name, copy_ / name, shallow=False)]
    assert not stale, f"stale generated files {stale}: run `modelops argocd`"


def test_committed_lua_tests_pass_as_argo_cd_runs_them():
    """Every health_test.yaml and action_test.yaml, on the captured objects (argocd-lua test)."""
    done = run_tests(ARGOCD / "resource_customizations")
    print(done.stdout[-3000:])
    assert done.returncode == 0, done.stdout + done.stderr + (
        "\nAfter a deliberate change of a script, capture anew: MODELOPS_CAPTURE_ARGOCD_TESTDATA=1 "
        ".venv/bin/python -m pytest tests/integration/test_argocd.py")
    passed = int(re.search(r"^(\d+) passed, 0 failed$", done.stdout, re.M).group(1))
    health = sum(len(load(CUSTOMIZATIONS / k / "health_test.yaml")["tests"]) for k in ("ModelDeployment", "ModelVersion"))
    actions = load(CUSTOMIZATIONS / "ModelDeployment" / "actions" / "action_test.yaml")
    assert passed == health + len(actions["discoveryTests"]) + len(actions["actionTests"])
    assert {t["action"] for t in actions["actionTests"]} == set(ARGOCD_ACTIONS)


@pytest.mark.parametrize("kind, statuses", [("ModelDeployment", {"Healthy", "Progressing", "Suspended", "Degraded"}),
                                            ("ModelVersion", {"Healthy", "Progressing", "Degraded"})])
def test_captured_objects_cover_every_health(kind, statuses):
    tests = load(CUSTOMIZATIONS / kind / "health_test.yaml")["tests"]
    assert {t["healthStatus"]["status"] for t in tests} == statuses
    for t in tests:  # the file name says the status it shows, as in Argo CD's own testdata
        assert Path(t["inputPath"]).name.startswith(t["healthStatus"]["status"].lower() + "_"), t
        obj = load(CUSTOMIZATIONS / kind / t["inputPath"])
        assert not {"uid", "resourceVersion", "managedFields"} & obj["metadata"].keys()


@pytest.mark.parametrize("path", MD_TESTDATA, ids=lambda p: p.stem)
def test_discovery_is_enabled_when_the_operator_would_act(md, path):
    obj = load(path)
    discovered = md.discovery(obj)
    assert sorted(discovered) == sorted(ARGOCD_ACTIONS)
    for name, action in discovered.items():
        assert bool(action.get("disabled")) == (not enabled(name, obj)), name
        assert action["displayName"] == DEFINITIONS[name].title


@pytest.mark.parametrize("path", MD_TESTDATA, ids=lambda p: p.stem)
@pytest.mark.parametrize("action", ARGOCD_ACTIONS)
def test_each_action_makes_the_plugins_change(md, path, action):
    """The Lua action's result is the live object with `kubectl modelops ACTION`'s merge patch applied, and
    the merge patch Argo CD then sends touches spec alone."""
    obj = load(path)
    params = {"reason": "canary looks fine"} if DEFINITIONS[action].takes_reason else {}
    argv = [action, "fraud"] + (["--reason", "canary looks fine"] if params else [])
    for extra_params, extra_argv in [({}, []), ({"version": "1.0.0"}, ["--to", "1.0.0"])] if action == "rollback" \
            else [({}, [])]:
        result = md.action(action, obj, {**params, **extra_params}, now=1767225600)
        request_id = (result["object"]["spec"].get("request") or {}).get("id")
        if DEFINITIONS[action].request is not None:
            assert request_id == f"argocd-{action}-{obj['metadata']['generation']}"
        patch = plugin_patch(plugin_parser().parse_args(argv + extra_argv), request_id, None)
        assert result["object"] == merge_patch(obj, patch)
        assert set(result["mergePatch"]) <= {"spec"}


def test_request_ids_are_the_action_and_the_generation_whatever_the_time(md):
    """Argo CD's test runner compares a script's output exactly; and every request changes the spec, so the next
    click sees a new generation, while a second click on the same one is the same request (carried out once)."""
    obj = load(MD_TESTDATA[0])
    ids = {}
    for now, generation, action in [(100, 1, "promote"), (101, 1, "promote"), (100, 2, "promote"), (100, 2, "abort")]:
        obj["metadata"]["generation"] = generation
        ids[now, generation, action] = md.action(action, obj, now=now)["object"]["spec"]["request"]["id"]
    assert ids == {(100, 1, "promote"): "argocd-promote-1", (101, 1, "promote"): "argocd-promote-1",
                   (100, 2, "promote"): "argocd-promote-2", (100, 2, "abort"): "argocd-abort-2"}


def test_actions_work_without_action_parameters(md, tmp_path):
    """Argo CD before 3.1 has no actionParams global: the default reason, and the fallback for a rollback."""
    obj = load(MD_TESTDATA[0])
    obj["spec"]["request"] = {"id": "old", "action": "Rollback", "version": "0.9.0", "reason": "x", "actor": "y"}
    script = tmp_path / "action.lua"
    script.write_text(action_lua("rollback").replace("type(actionParams)", "type(nil)"))
    result = md.run("action", script, obj)[0]
    request = result["object"]["spec"]["request"]
    assert request["reason"] == DEFAULT_REASON and "version" not in request  # the old request's version is gone
    assert result["mergePatch"]["spec"]["request"]["version"] is None


def test_the_actions_name_no_actor_unless_generated_with_one(md, tmp_path):
    """By default the API server fills the actor in; the old request's actor is removed, not carried over."""
    obj = load(MD_TESTDATA[0])
    obj["spec"]["request"] = {"id": "old", "action": "Abort", "reason": "x", "actor": "someone-before"}
    result = md.action("promote", obj, {"reason": "ok"})
    assert "actor" not in result["object"]["spec"]["request"]
    assert result["mergePatch"]["spec"]["request"]["actor"] is None
    assert main(["argocd", "--out", str(tmp_path), "--actor", "system:serviceaccount:gitops:argocd-server"]) == 0
    promote = (tmp_path / "resource_customizations/modelops.io/ModelDeployment/actions/promote/action.lua").read_text()
    assert 'obj["spec"]["request"]["actor"] = "system:serviceaccount:gitops:argocd-server"' in promote
    cm = load(tmp_path / "argocd-cm.yaml")
    definitions = yaml.safe_load(cm["data"]["resource.customizations.actions.modelops.io_ModelDeployment"])
    assert sorted(d["name"] for d in definitions["definitions"]) == sorted(ARGOCD_ACTIONS)


def test_argocd_cm_installs_the_committed_scripts():
    cm = load(ARGOCD / "argocd-cm.yaml")
    for kind in ("ModelDeployment", "ModelVersion"):
        assert cm["data"][f"resource.customizations.health.modelops.io_{kind}"] == \
            (CUSTOMIZATIONS / kind / "health.lua").read_text()
    actions = yaml.safe_load(cm["data"]["resource.customizations.actions.modelops.io_ModelDeployment"])
    folder = CUSTOMIZATIONS / "ModelDeployment" / "actions"
    assert actions["discovery.lua"] == (folder / "discovery.lua").read_text()
    for d in actions["definitions"]:
        assert d["action.lua"] == (folder / d["name"] / "action.lua").read_text()


def test_lua_strings_are_escaped():
    assert lua_string('a "b" \\ c\n\x01') == '"a \\"b\\" \\\\ c\\010\\001"'


def test_rollback_always_names_its_version():
    """A rollback without --to clears a version an earlier request left, so it goes to the fallback."""
    assert spec_patch("rollback", request_id="r", actor="a", reason="x")["spec"]["request"]["version"] is None
    assert "version" not in spec_patch("promote", request_id="r", actor="a", reason="x")["spec"]["request"]
    left = {"spec": {"request": {"id": "1", "action": "Rollback", "version": "1.0.0", "reason": "x", "actor": "a"}}}
    assert "version" not in merge_patch(left, spec_patch("rollback", request_id="2", actor="a", reason="x"))["spec"]["request"]


# What a live run cannot reach without a hand-edited CRD or operator, made from a captured object.

def variant(name: str, **status) -> dict:
    obj = load(CUSTOMIZATIONS / "ModelDeployment" / "testdata" / f"{name}.yaml")
    obj = copy.deepcopy(obj)
    obj["status"].update(status)
    return obj


def test_an_invalid_spec_is_degraded_though_never_observed(md):
    obj = variant("progressing_newGeneration")
    obj["status"]["conditions"] = [c if c["type"] != "Synced" else {**c, "status": "False", "reason": "InvalidSpec",
                                                                     "message": "spec is invalid: ..."}
                                   for c in obj["status"]["conditions"]]
    assert md.health(obj) == {"status": "Degraded", "message": "InvalidSpec: spec is invalid: ..."}


def test_an_unknown_phase_is_unknown(md):
    assert md.health(variant("healthy_stable", phase="Exploded"))["status"] == "Unknown"


def test_a_rollback_drill_is_progressing_and_names_the_fallback(md):
    """A drill's status as the engine writes it, on a captured promoted object: Progressing, naming the fallback and
    the stable version it returns to; then Healthy again once it is over."""
    from datetime import timedelta

    from modelops.api.modeldeployment import ModelDeploymentSpec, ModelDeploymentStatus, Request
    from modelops.rollout import Observations, decide

    obj = load(CUSTOMIZATIONS / "ModelDeployment" / "testdata" / "healthy_promoted.yaml")
    spec = ModelDeploymentSpec.model_validate(obj["spec"]).model_copy(
        update={"request": Request(id="d1", action="Drill", reason="game day", actor="sre")})
    status = ModelDeploymentStatus.model_validate(obj["status"])
    now = parse_time(status.history[-1].time) + timedelta(seconds=30)
    decision = decide(spec, status, Observations(frozenset({"1.0.0", "1.1.0"}), generation=obj["metadata"]["generation"]),
                      now)
    drilling = {**obj, "spec": spec.to_wire(), "status": decision.status.to_wire()}
    assert drilling["status"]["phase"] == "Drilling"
    health = md.health(drilling)
    assert health["status"] == "Progressing"
    assert health["message"].startswith("Rollback drill: all traffic to fallback 1.0.0, then back to stable 1.1.0: ")
    without_drill = {**drilling, "status": {k: v for k, v in drilling["status"].items() if k != "drill"}}
    assert "fallback 1.0.0" in md.health(without_drill)["message"]  # status.fallbackVersion, should drill be absent
    assert md.health(obj)["status"] == "Healthy"


def parse_time(text: str):
    from modelops.rollout.values import parse_rfc3339

    return parse_rfc3339(text)


def without_analysis_fields(obj: dict) -> dict:
    """The object as Argo CD compares it for ignoreResourceUpdates: ANALYSIS_FIELDS taken out."""
    out = copy.deepcopy(obj)
    status = out.get("status") or {}
    for pointer in ANALYSIS_FIELDS["jsonPointers"]:
        status.pop(pointer.removeprefix("/status/"), None)
    [expression] = ANALYSIS_FIELDS["jqPathExpressions"]
    kind = re.fullmatch(r'\.status\.conditions\[\] \| select\(\.type == "(\w+)"\)', expression).group(1)
    status["conditions"] = [c for c in status.get("conditions", []) if c["type"] != kind]
    return out


def test_the_fields_whose_updates_refresh_no_application_are_all_an_analysis_changes_and_nothing_health_reads(md):
    """Analyses that decide nothing (passing, within the failure limit, no data) change only ANALYSIS_FIELDS, and
    the health of every object (the engine's along a rollout, and every captured one) is the same without them."""
    from .test_view import GOOD, Rollout, in_step_two

    r: Rollout = in_step_two()
    objects, quiet = [r.obj()], 0
    noisy = [GOOD, {"errors": Measurement(0.004, samples=500), "accuracy": Measurement(0.95, baseline=0.95, samples=90)},
             {**GOOD, "errors": Measurement(0.2, samples=400)},  # one failure, below failureLimit 2
             {"errors": Measurement(None, samples=0), "accuracy": Measurement(None, samples=0)}, GOOD]
    for measured in noisy:
        before = r.status.model_copy(deep=True)
        r.analyse(measured, seconds=5)
        objects.append(r.obj())
        decided = (before.current_step, before.canary_weight, before.phase, before.message, len(before.history)) != \
            (r.status.current_step, r.status.canary_weight, r.status.phase, r.status.message, len(r.status.history))
        if not decided:
            quiet += 1
            assert without_analysis_fields(objects[-2]) == without_analysis_fields(objects[-1])
    assert quiet >= 4
    for obj in objects + [load(p) for p in MD_TESTDATA]:
        assert md.health(obj) == md.health(without_analysis_fields(obj)), obj.get("status")
