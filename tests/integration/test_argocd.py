"""Argo CD's health checks and actions (deploy/argocd/) on real ModelDeployments and ModelVersions.

Real rollouts on the KServe stand-in: at each moment worth a health check the live object is read
and its Lua health is run the way Argo CD runs it (playground/argocd_lua.py); each action's Lua
runs on the live object, and its result is written as Argo CD's server writes it (the JSON merge
patch from the live object to the result) as Argo CD's ServiceAccount (in a namespace other than
argocd), with a real token, through the request-actor admission policies: the actions name no actor,
the API server fills it in; then the operator must carry it out with that actor recorded.

With MODELOPS_CAPTURE_ARGOCD_TESTDATA=1 the objects seen here (volatile metadata stripped, the
namespace renamed) become the committed testdata/, health_test.yaml and action_test.yaml that the
unit tier replays without a control plane.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelops.actions import merge_patch
from modelops.argocd import action_lua
from modelops.cli import plugin_parser, plugin_patch
from playground.argocd_lua import CUSTOMIZATIONS, TEST_CLOCK, ArgoCDLua

from .scenario import Scenario, fast_spec

pytestmark = pytest.mark.integration

CAPTURE = os.environ.get("MODELOPS_CAPTURE_ARGOCD_TESTDATA") == "1"
GOOD = {"error_rate": 0.0, "accuracy": 0.95}
PATIENT = {"strategy": {"steps": [{"weight": 20, "pause": "1h"}, {"weight": 50, "pause": "1h"}]}}
NAMESPACE = "ml-prod"  # the captured objects' namespace, in place of the test's own
# Argo CD installed in a namespace of its own choosing: the actions name no actor, the API server fills it in.
ARGOCD_NAMESPACE, ARGOCD_ACCOUNT = "gitops", "argocd-server"
ARGOCD_USER = f"system:serviceaccount:{ARGOCD_NAMESPACE}:{ARGOCD_ACCOUNT}"


# ---- what the tests saw, for the committed testdata ------------------------------------------

def stripped(obj: dict[str, Any], namespace: str) -> dict[str, Any]:
    """The object without what only this API server and this run gave it: uid, resourceVersion,
    managedFields, kubectl's last-applied annotation; the test's namespace becomes NAMESPACE."""
    obj = copy.deepcopy(obj)
    meta = obj["metadata"]
    for key in ("uid", "resourceVersion", "managedFields", "selfLink"):
        meta.pop(key, None)
    annotations = meta.get("annotations") or {}
    annotations.pop("kubectl.kubernetes.io/last-applied-configuration", None)
    if not annotations:
        meta.pop("annotations", None)
    return json.loads(json.dumps(obj).replace(namespace, NAMESPACE))


class Capture:
    """Objects by name, with the health and the actions tried on them; written out at the module's end."""

    REQUIRED = {
        "ModelDeployment": {"healthy_stable", "progressing_newGeneration", "progressing_canary", "suspended_paused",
                            "progressing_canary_resumed", "healthy_promoted", "degraded_rolledBackByHand",
                            "progressing_retried", "suspended_pinned", "degraded_aborted",
                            "degraded_modelVersionMissing", "degraded_rollingBack", "degraded_rolledBack",
                            "progressing_drilling", "progressing_noStatus", "degraded_neverDeployed",
                            "progressing_stableNotReady", "progressing_deleting"},
        "ModelVersion": {"progressing_new", "healthy_available", "healthy_serving", "degraded_duplicateVersion"},
    }

    def __init__(self):
        self.objects: dict[str, dict[str, tuple[dict[str, Any], str]]] = {k: {} for k in self.REQUIRED}
        self.discovered: list[str] = []
        self.actions: list[tuple[str, str, dict[str, str]]] = []

    def health(self, kind: str, name: str, obj: dict[str, Any], namespace: str, expected: str) -> None:
        self.objects[kind][name] = (stripped(obj, namespace), expected)

    def write(self, argo: dict[str, ArgoCDLua]) -> None:
        missing = {k: sorted(names - self.objects[k].keys()) for k, names in self.REQUIRED.items()}
        assert not any(missing.values()), f"not every moment was captured (run the whole module): {missing}"
        for kind, objects in self.objects.items():
            folder = CUSTOMIZATIONS / kind
            shutil.rmtree(folder / "testdata", ignore_errors=True)
            (folder / "testdata").mkdir()
            tests = []
            for name, (obj, expected) in sorted(objects.items()):
                write_yaml(folder / "testdata" / f"{name}.yaml", obj)
                health = argo[kind].health(obj)
                assert health["status"] == expected, (name, health)
                tests.append({"healthStatus": health, "inputPath": f"testdata/{name}.yaml"})
            write_yaml(folder / "health_test.yaml", {"tests": tests})
        md, actions = self.objects["ModelDeployment"], CUSTOMIZATIONS / "ModelDeployment" / "actions"
        shutil.rmtree(actions / "testdata", ignore_errors=True)
        (actions / "testdata").mkdir()
        inputs = sorted(set(self.discovered) | {name for _, name, _ in self.actions})
        for name in inputs:
            write_yaml(actions / "testdata" / f"{name}.yaml", md[name][0])
        discovery = [{"inputPath": f"testdata/{name}.yaml",
                      "result": list(argo["ModelDeployment"].discovery(md[name][0]).values())}
                     for name in sorted(set(self.discovered))]
        action_tests = []
        for action, name, params in self.actions:
            output = f"testdata/{name}_{action}.yaml"
            result = argo["ModelDeployment"].action(action, md[name][0], params, now=TEST_CLOCK)
            write_yaml(actions / output, result["object"])
            test = {"action": action, "inputPath": f"testdata/{name}.yaml", "expectedOutputPath": output}
            if params:
                test["parameters"] = params
            action_tests.append(test)
        write_yaml(actions / "action_test.yaml", {"discoveryTests": discovery, "actionTests": action_tests})


def write_yaml(path: Path, document: Any) -> None:
    path.write_text(yaml.safe_dump(document, sort_keys=False, width=120))


@pytest.fixture(scope="module")
def argo():
    return {kind: ArgoCDLua(kind) for kind in Capture.REQUIRED}


@pytest.fixture(scope="module")
def capture(argo):
    seen = Capture()
    yield seen
    if CAPTURE:
        seen.write(argo)


# ---- Argo CD's identity ----------------------------------------------------------------------

@pytest.fixture(scope="session")
def argocd_server_kubeconfig(control_plane, tmp_path_factory):
    """A token of the ServiceAccount gitops/argocd-server from the TokenRequest API: the user Argo CD's
    server is when it runs an action on its own cluster (installed in the namespace gitops)."""
    control_plane.kubectl("create", "namespace", ARGOCD_NAMESPACE, check=False)
    control_plane.kubectl("create", "serviceaccount", ARGOCD_ACCOUNT, "-n", ARGOCD_NAMESPACE, check=False)
    token = control_plane.kubectl("create", "token", ARGOCD_ACCOUNT, "-n", ARGOCD_NAMESPACE,
                                  "--duration=2h").stdout.strip()
    config = yaml.safe_load(control_plane.kubeconfig.read_text())
    config["users"] = [{"name": ARGOCD_ACCOUNT, "user": {"token": token}}]
    for context in config["contexts"]:
        context["context"]["user"] = ARGOCD_ACCOUNT
    path = tmp_path_factory.mktemp("argocd") / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    assert control_plane.kubectl("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}",
                                 kubeconfig=path).stdout == ARGOCD_USER
    return path


@pytest.fixture
def scenario(control_plane, namespace, kserve, operator):
    s = Scenario(control_plane, namespace, kserve)
    yield s
    s.stop_load()


class ArgoCD:
    """What Argo CD's server does for one application's ModelDeployment: health and actions."""

    def __init__(self, scenario: Scenario, argo: dict[str, ArgoCDLua], capture: Capture, kubeconfig: Path):
        self.s, self.argo, self.capture, self.kubeconfig = scenario, argo, capture, kubeconfig
        # Argo CD's server may patch what it manages (its own ClusterRole grants patch on everything).
        scenario.cp.kubectl("create", "role", "argocd-server", "--verb=get,patch",
                            "--resource=modeldeployments.modelops.io", "-n", scenario.ns)
        scenario.cp.kubectl("create", "rolebinding", "argocd-server", "--role=argocd-server",
                            f"--serviceaccount={ARGOCD_NAMESPACE}:{ARGOCD_ACCOUNT}", "-n", scenario.ns)

    def check(self, name: str, obj: dict[str, Any], expected: str, *, kind: str = "ModelDeployment",
              discovery: bool = False) -> dict[str, str]:
        """Argo CD's health of a live object; recorded under `name` for the testdata."""
        health = self.argo[kind].health(obj)
        assert health["status"] == expected, f"{name}: {health}"
        assert health["message"], health
        self.capture.health(kind, name, obj, self.s.ns, expected)
        if discovery:
            self.capture.discovered.append(name)
        return health

    def enabled(self, obj: dict[str, Any]) -> set[str]:
        return {name for name, a in self.argo["ModelDeployment"].discovery(obj).items() if not a.get("disabled")}

    def run(self, action: str, obj: dict[str, Any], name: str, params: dict[str, str] | None = None,
            argv: list[str] | None = None) -> dict[str, Any]:
        """Run an action on the live object `obj` (captured as `name`) and write it as Argo CD does.

        The result must be exactly what the plugin's merge patch (`argv`) makes of the same object,
        and the patch Argo CD sends must touch spec alone (no status subresource write)."""
        assert action in self.enabled(obj), f"{action} is not offered on {name}"
        result = self.argo["ModelDeployment"].action(action, obj, params)
        request_id = (result["object"]["spec"].get("request") or {}).get("id")
        plugin = plugin_patch(plugin_parser().parse_args(argv or [action, "fraud"]), request_id, None)
        assert result["object"] == merge_patch(obj, plugin), "Argo CD's action and the plugin differ"
        assert set(result["mergePatch"]) == {"spec"}, result["mergePatch"]
        self.s.cp.kubectl("patch", "mdep", self.s.name, "-n", self.s.ns, "--type", "merge",
                          "-p", json.dumps(result["mergePatch"]), kubeconfig=self.kubeconfig)
        self.capture.actions.append((action, name, params or {}))
        return result


@pytest.fixture
def argocd(scenario, argo, capture, argocd_server_kubeconfig):
    return ArgoCD(scenario, argo, capture, argocd_server_kubeconfig)


def stable_on(version):
    return lambda st: st.get("phase") == "Stable" and st.get("stableVersion") == version


def ready_statuses(stream: str) -> list[tuple[str, str | None, str | None]]:
    """(resourceVersion, stableVersion, Ready's status) of each object in `kubectl get -w -o json`'s output."""
    decoder, seen, at = json.JSONDecoder(), [], 0
    while (at := stream.find("{", at)) >= 0:
        try:
            obj, at = decoder.raw_decode(stream, at)
        except json.JSONDecodeError:
            break  # the object being written
        status = obj.get("status") or {}
        ready = next((c.get("status") for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
        seen.append((obj["metadata"]["resourceVersion"], status.get("stableVersion"), ready))
    return seen


class StatusLog:
    """Every version of the ModelDeployment the API server's watch sends from its start on, so that a status the
    operator wrote and then overwrote between two reads is seen too. A context: the watch stops on leaving it."""

    def __init__(self, scenario: Scenario, path: Path):
        self.scenario, self.path, self.out = scenario, path, path.open("w")
        cp = scenario.cp
        self.proc = subprocess.Popen([str(cp.bin / "kubectl"), "--kubeconfig", str(cp.kubeconfig), "get", "mdep",
                                      scenario.name, "-n", scenario.ns, "-w", "-o", "json"], stdout=self.out)
        scenario.wait(lambda st: ready_statuses(self.path.read_text()), 15, "the watch's first object")

    def __enter__(self) -> StatusLog:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.out.close()

    def up_to_now(self) -> list[tuple[str, str | None, str | None]]:
        """Every version up to the one the API server holds now."""
        now = self.scenario.get()["metadata"]["resourceVersion"]
        self.scenario.wait(lambda st: any(rv == now for rv, _, _ in ready_statuses(self.path.read_text())), 15,
                           "the watch at the current version")
        return ready_statuses(self.path.read_text())


def rolled_out(scenario, version: str) -> bool:
    """KServe (the stand-in) marked the revision serving `version`'s artifact rolled out."""
    isvc = scenario.get("isvc", scenario.name)
    predictor = (isvc.get("status") or {}).get("components", {}).get("predictor", {})
    return version in isvc["spec"]["predictor"]["model"]["storageUri"] and \
        predictor.get("latestRolledoutRevision") == predictor.get("latestCreatedRevision")


def last(scenario) -> dict[str, Any]:
    return scenario.status()["history"][-1]


def test_health_and_every_action_through_a_release(scenario, prometheus, argocd, tmp_path):
    s, cp = scenario, scenario.cp
    s.version("1.0.0", **GOOD)
    s.version("1.1.0", **GOOD)
    # A ModelVersion as it is the moment it is created: no status yet.
    created = cp.kubectl("create", "-o", "json", "-f", "-", input=json.dumps({
        "apiVersion": "modelops.io/v1alpha1", "kind": "ModelVersion",
        "metadata": {"name": "fraud-1-2-0", "namespace": s.ns},
        "spec": {"model": "fraud", "version": "1.2.0",
                 "artifact": {"uri": f"s3://models/fraud/{s.ns}/1.2.0", "digest": "sha256:" + "2" * 64,
                              "format": "sklearn"}}}))
    argocd.check("progressing_new", json.loads(created.stdout), "Progressing", kind="ModelVersion")
    s.serve("1.0.0", fast_spec(prometheus.url, **PATIENT), prometheus)

    obj = s.get()
    argocd.check("healthy_stable", obj, "Healthy", discovery=True)
    assert argocd.enabled(obj) == {"pause"}
    s.wait(lambda st: s.get("mv", "fraud-1-0-0").get("status", {}).get("servedBy"), 15, "1.0.0 served")
    argocd.check("healthy_serving", s.get("mv", "fraud-1-0-0"), "Healthy", kind="ModelVersion")
    s.wait(lambda st: s.get("mv", "fraud-1-2-0").get("status", {}).get("phase") == "Available", 15, "1.2.0 valid")
    argocd.check("healthy_available", s.get("mv", "fraud-1-2-0"), "Healthy", kind="ModelVersion")

    # The object as the API server answers the write of a new version: not yet seen by the operator.
    bumped = json.loads(cp.kubectl("patch", "mdep", "fraud", "-n", s.ns, "--type", "merge", "-o", "json",
                                   "-p", '{"spec": {"version": "1.1.0"}}').stdout)
    assert bumped["status"]["observedGeneration"] < bumped["metadata"]["generation"]
    assert bumped["status"]["phase"] == "Stable"  # what a health check on phase alone would call done
    argocd.check("progressing_newGeneration", bumped, "Progressing")
    s.wait(lambda st: st.get("canaryWeight", 0) > 0, 30, "1.1.0 taking traffic")

    obj = s.get()
    argocd.check("progressing_canary", obj, "Progressing", discovery=True)
    assert argocd.enabled(obj) == {"promote", "abort", "pause"}
    argocd.run("pause", obj, "progressing_canary")
    s.wait(lambda st: st.get("phase") == "Paused", 15, "paused by Argo CD")

    obj = s.get()
    argocd.check("suspended_paused", obj, "Suspended", discovery=True)
    assert argocd.enabled(obj) == {"promote", "abort", "resume"}
    argocd.run("resume", obj, "suspended_paused")
    s.wait(lambda st: st.get("phase") == "Progressing" and not st.get("paused"), 15, "resumed by Argo CD")

    obj = s.get()
    argocd.check("progressing_canary_resumed", obj, "Progressing")
    with StatusLog(s, tmp_path / "promotion.json") as log:
        argocd.run("promote", obj, "progressing_canary_resumed", {"reason": "validated offline"},
                   ["promote", "fraud", "--reason", "validated offline"])
        status = s.wait(stable_on("1.1.0"), 20, "promoted by Argo CD")
        entry = status["history"][-1]
        assert (entry["action"], entry["actor"]) == ("Promoted", ARGOCD_USER) and "validated offline" in entry["reason"]
        s.wait(lambda st: rolled_out(s, "1.1.0"), 20, "1.1.0's revision rolled out by KServe")
        s.wait(lambda st: any(c["type"] == "Ready" and c["status"] == "True" for c in st.get("conditions", [])), 20,
               "Ready once rolled out")
        # Ready all along: the promoted revision takes all traffic before KServe marks it rolled out.
        assert [rv for rv, stable, ready in log.up_to_now() if stable == "1.1.0" and ready != "True"] == []

    obj = s.get()
    argocd.check("healthy_promoted", obj, "Healthy", discovery=True)
    assert argocd.enabled(obj) == {"pause", "rollback"}
    # A rollback drill (kubectl modelops drill; no Argo CD action): Progressing while the fallback serves.
    # The last request's actor removed: the API server names this one's (a merge patch would keep the old one).
    s.patch({"request": {"id": "drill-1", "action": "Drill", "reason": "game day", "actor": None}})
    s.wait(lambda st: st.get("phase") == "Drilling", 20, "drilling")
    health = argocd.check("progressing_drilling", s.get(), "Progressing")
    assert health["message"].startswith("Rollback drill: all traffic to fallback 1.0.0, then back to stable 1.1.0")
    s.wait(lambda st: st.get("phase") == "Stable" and (st.get("lastDrill") or {}).get("result") == "Completed", 30,
           "drill completed")
    obj = s.get()
    argocd.run("rollback", obj, "healthy_promoted", argv=["rollback", "fraud", "--reason", "Argo CD action"])
    s.wait(lambda st: st.get("phase") == "RolledBack" and st.get("stableVersion") == "1.0.0", 20,
           "rolled back to the fallback by Argo CD")
    assert (last(s)["action"], last(s)["actor"]) == ("RolledBack", ARGOCD_USER)

    obj = s.get()
    argocd.check("degraded_rolledBackByHand", obj, "Degraded", discovery=True)
    assert argocd.enabled(obj) == {"pause", "retry", "rollback"}
    argocd.run("retry", obj, "degraded_rolledBackByHand", argv=["retry", "fraud", "--reason", "Argo CD action"])
    s.wait(lambda st: st.get("phase") == "Progressing" and st.get("canaryWeight", 0) > 0, 40, "retried by Argo CD")
    assert any(h["action"] == "RolloutStarted" and h["actor"] == ARGOCD_USER and h["reason"] == "manual retry: "
               "Argo CD action" for h in s.status()["history"])

    s.patch({"trafficOverride": {"weight": 35, "reason": "load test"}})  # `kubectl modelops pin`: no Argo CD action
    s.wait(lambda st: st.get("phase") == "Paused" and st.get("canaryWeight") == 35, 15, "pinned")
    argocd.check("suspended_pinned", s.get(), "Suspended", discovery=True)
    s.patch({"trafficOverride": None})
    s.wait(lambda st: st.get("phase") == "Progressing", 15, "unpinned")

    obj = s.get()
    argocd.check("progressing_retried", obj, "Progressing")
    # The same action generated for another actor than its writer is refused by the admission policy.
    forged = tmp_path / "abort.lua"
    forged.write_text(action_lua("abort", "system:serviceaccount:argocd:someone-else"))
    result = argocd.argo["ModelDeployment"].run("action", forged, obj)[0]
    refused = cp.kubectl("patch", "mdep", "fraud", "-n", s.ns, "--type", "merge", "-p", json.dumps(result["mergePatch"]),
                         kubeconfig=argocd.kubeconfig, check=False)
    assert refused.returncode != 0 and f'must be the requesting user "{ARGOCD_USER}"' in refused.stderr
    argocd.run("abort", obj, "progressing_retried", {"reason": "wrong feature set"},
               ["abort", "fraud", "--reason", "wrong feature set"])
    s.wait(lambda st: st.get("phase") == "RolledBack" and st.get("failedVersion") == "1.1.0", 15, "aborted by Argo CD")
    assert (last(s)["action"], last(s)["actor"]) == ("Aborted", ARGOCD_USER)
    argocd.check("degraded_aborted", s.get(), "Degraded", discovery=True)

    impostor = {"apiVersion": "modelops.io/v1alpha1", "kind": "ModelVersion",
                "metadata": {"name": "fraud-1-1-0-retrained", "namespace": s.ns},
                "spec": {"model": "fraud", "version": "1.1.0",
                         "artifact": {"uri": "s3://models/fraud/elsewhere/1.1.0", "digest": "sha256:" + "1" * 64,
                                      "format": "sklearn"}}}
    cp.apply(impostor)
    s.wait(lambda st: s.get("mv", "fraud-1-1-0-retrained").get("status", {}).get("phase") == "Invalid", 15,
           "duplicate refused")
    health = argocd.check("degraded_duplicateVersion", s.get("mv", "fraud-1-1-0-retrained"), "Degraded",
                          kind="ModelVersion")
    assert health["message"].startswith("DuplicateVersion: ")

    s.patch({"version": "9.9.9"})  # no ModelVersion has it
    s.wait(lambda st: any(c["type"] == "Synced" and c["reason"] == "ModelVersionMissing"
                          for c in st.get("conditions", [])), 15, "ModelVersionMissing")
    health = argocd.check("degraded_modelVersionMissing", s.get(), "Degraded", discovery=True)
    assert health["message"].startswith("ModelVersionMissing: ")


def test_automatic_rollback_is_degraded_and_offers_retry(scenario, prometheus, argocd):
    s = scenario
    s.version("1.0.0", **GOOD)
    s.version("1.1.0", error_rate=0.3, accuracy=0.95)
    # Progressive, and an analysis every 3 s: the step back down lasts one analysis, long enough to be seen. A
    # rollback steps down only from above the first step, so the candidate's errors are within a loose limit until
    # it holds 50 %, and the limit is then tightened.
    spec = fast_spec(prometheus.url, strategy={"rollback": "Progressive", "steps": [
        {"weight": 20, "pause": "2s"}, {"weight": 50, "pause": "1h"}]}, analysis={"interval": "3s"})
    checks = spec["analysis"]["checks"]
    checks[0] = {**checks[0], "max": 0.5}
    s.serve("1.0.0", spec, prometheus)
    s.patch({"version": "1.1.0"})
    s.wait(lambda st: st.get("canaryWeight") == 50, 60, "1.1.0 at 50 %")
    s.patch({"analysis": {"checks": [{**checks[0], "max": 0.05}, *checks[1:]]}})
    status = s.wait(lambda st: st.get("phase") in ("RollingBack", "RolledBack"), 60, "rolling back")
    assert status["phase"] == "RollingBack", "the progressive rollback was not seen"
    health = argocd.check("degraded_rollingBack", s.get(), "Degraded", discovery=True)
    assert health["message"].startswith("Rolling back 1.1.0 (50% still on it)")
    s.wait(lambda st: st.get("phase") == "RolledBack", 20, "rolled back by the operator")
    obj = s.get()
    health = argocd.check("degraded_rolledBack", obj, "Degraded", discovery=True)
    assert "1.1.0 is rolled back; stable 1.0.0 serves" in health["message"] and "errors:" in health["message"]
    assert argocd.enabled(obj) == {"pause", "retry"}


def test_health_before_a_first_version_serves_and_while_deleted(scenario, argocd, kserve):
    """The moments before a rollout: no status yet (a shard no operator runs), a first version that does not
    exist (Failed), one whose backend never gets ready; and a ModelDeployment being deleted."""
    s, cp = scenario, scenario.cp
    unseen = Scenario(cp, s.ns, kserve, name="unseen")
    unseen.labels = {"modelops.io/shard": "nobody"}
    unseen.deploy("1.0.0", {})
    time.sleep(2)  # an operator that took it would have written a status by now
    health = argocd.check("progressing_noStatus", unseen.get(), "Progressing")
    assert health["message"] == "Waiting for the operator to report a status"

    ghost = Scenario(cp, s.ns, kserve, name="ghost")
    ghost.deploy("9.9.9", {})
    ghost.wait(lambda st: st.get("phase") == "Failed", 20, "failed: no such version")
    health = argocd.check("degraded_neverDeployed", ghost.get(), "Degraded")
    assert health["message"].startswith("ModelVersionMissing: "), health

    s.version("1.0.0", never_ready=True)
    s.deploy("1.0.0", {})
    s.wait(lambda st: st.get("phase") == "Stable" and any(c["type"] == "Ready" and c["status"] == "False"
                                                          for c in st.get("conditions", [])), 20, "stable, not ready")
    health = argocd.check("progressing_stableNotReady", s.get(), "Progressing")
    assert health["message"].startswith("BackendNotReady: stable 1.0.0 is not ready on the backend"), health

    # Held in deletion by a finalizer of the test's own, once the operator has let go of it.
    cp.kubectl("patch", "mdep", s.name, "-n", s.ns, "--type", "merge",
               "-p", json.dumps({"metadata": {"finalizers": ["modelops.io/finalizer", "test.modelops.io/hold"]}}))
    cp.kubectl("delete", "mdep", s.name, "-n", s.ns, "--wait=false")
    deadline = time.monotonic() + 20
    while (obj := s.get())["metadata"].get("finalizers") != ["test.modelops.io/hold"]:
        assert time.monotonic() < deadline, obj["metadata"]
        time.sleep(0.1)
    health = argocd.check("progressing_deleting", obj, "Progressing")
    assert health["message"] == "Pending deletion: waiting for finalizers test.modelops.io/hold", health
    cp.kubectl("patch", "mdep", s.name, "-n", s.ns, "--type", "merge", "-p", '{"metadata": {"finalizers": null}}')
