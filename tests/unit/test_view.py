"""`kubectl modelops get | list | history`: the pure view over statuses the engine itself wrote."""

from __future__ import annotations

import argparse
import io
import json
import unicodedata
from datetime import timedelta

import pytest
from rich.console import Console

from modelops import view, view_commands
from modelops.analysis.evaluate import Measurement, evaluate
from modelops.api.modeldeployment import TrafficOverride
from modelops.cli import plugin_parser
from modelops.rollout import AnalysisReport
from modelops.rollout.conditions import pin_condition, unsynced
from modelops.rollout.values import rfc3339

from .rollout_sim import Sim, make_spec

CHECKS = [
    {"name": "errors", "template": "errorRate", "max": 0.05, "minSamples": 50},
    {"name": "accuracy", "query": "sum(rate(correct_total[{{window}}]))", "sampleQuery": "sum(graded)",
     "maxDropPercent": 5, "minSamples": 30},
]
GOOD = {"errors": Measurement(0.002, samples=400), "accuracy": Measurement(0.94, baseline=0.95, samples=120)}
BAD_ACCURACY = {**GOOD, "accuracy": Measurement(0.80, baseline=0.95, samples=120)}


class Rollout(Sim):
    """The engine's own rollout, fed with measurements of the two checks above."""

    def analyse(self, measured=GOOD, seconds: float = 10):
        self.now += timedelta(seconds=seconds)
        results = tuple(evaluate(c, measured[c.name], rfc3339(self.now)) for c in self.spec.analysis.checks)
        return self.step(AnalysisReport(self.now, results))

    def obj(self, namespace: str = "prod", name: str = "fraud") -> dict:
        """The ModelDeployment as `kubectl get -o json` prints it."""
        return {"apiVersion": "modelops.io/v1alpha1", "kind": "ModelDeployment",
                "metadata": {"name": name, "namespace": namespace, "generation": 2},
                "spec": self.spec.to_wire(), "status": self.status.to_wire()}


def in_step_two() -> Rollout:
    """1.0.0 stable, 1.1.0 in step 2/3 at 50% (steps 20/50/80, pause 30s, analyses every 10s)."""
    r = Rollout(make_spec(steps=(20, 50, 80), pause="30s", checks=CHECKS))
    r.step()
    r.set(version="1.1.0")
    for _ in range(4):  # the third one ends step 1; the fourth is 10 s into step 2
        r.analyse()
    assert (r.status.current_step, r.status.canary_weight) == (1, 50)
    return r


def test_bar_is_proportional_and_shows_any_traffic_and_any_gap():
    assert view.bar(0) == "░" * 20
    assert view.bar(100) == "█" * 20
    assert view.bar(80) == "█" * 16 + "░" * 4
    assert view.bar(20) == "████" + "░" * 16
    assert view.bar(1) == "█" + "░" * 19  # 1% is not nothing
    assert view.bar(99) == "█" * 19 + "░"  # 99% is not everything
    assert all(len(view.bar(w)) == 20 for w in range(101))
    assert view.bar(50, width=10) == "█████░░░░░"


@pytest.mark.parametrize("seconds, words", [(0, "0s"), (41.9, "41s"), (60, "1m00s"), (185, "3m05s"),
                                            (7440, "2h04m"), (3 * 86400 + 4 * 3600, "3d04h"), (-3, "0s"),
                                            (None, "-")])
def test_durations(seconds, words):
    assert view.duration(seconds) == words


def test_mid_rollout_weights_step_time_and_next_analysis():
    r = in_step_two()
    now = r.now + timedelta(seconds=3)  # 13 s into step 2, last analysis 3 s ago
    v = view.view(r.obj(), now)
    assert v["phase"] == "Progressing"
    assert v["versions"] == {"desired": "1.1.0", "stable": "1.0.0", "candidate": "1.1.0", "fallback": None,
                             "failed": None, "retained": [], "warm": []}
    assert v["traffic"] == [{"version": "1.0.0", "role": "stable", "weight": 50, "mirror": 0, "cohort": []},
                            {"version": "1.1.0", "role": "candidate", "weight": 50, "mirror": 0, "cohort": []}]
    assert v["step"] == {"number": 2, "of": 3, "kind": "weight", "what": "at 50%", "weight": 50, "pause": "30s",
                         "startedAt": r.status.step_started_at,
                         "elapsedSeconds": 13.0}
    assert v["analysis"]["nextInSeconds"] == 7.0 and v["analysis"]["lastOutcome"] == "Passed"
    assert (v["analysis"]["failureLimit"], v["analysis"]["noDataLimit"]) == (2, 3)
    assert v["problems"] == [] and v["overdue"] is False
    lines = view.plain_lines(v)
    text = "\n".join(lines)
    assert "  stable     1.0.0  ██████████░░░░░░░░░░  50%" in lines
    assert "  candidate  1.1.0  ██████████░░░░░░░░░░  50%" in lines
    assert "in step 2/3 (50%, pause 30s) for 13s, next analysis in 7s" in text
    assert "last analysis Passed 3s ago, failures 0/2, no data 0/3" in text
    assert "\x1b" not in text  # plain: no colour codes


def test_a_shadow_step_and_a_cohort_step_say_what_reaches_the_candidate():
    gateway = {"backend": "gatewayAPI", "gatewayAPI": {"route": "fraud", "services": {"1.0.0": "a", "1.1.0": "b"}}}
    cohort = {"match": {"headers": [{"name": "x-cohort", "value": "testers"}]}}
    checks = [{**CHECKS[0], "template": None, "query": "errors", "sampleQuery": "requests"}, CHECKS[1]]
    r = Rollout(make_spec(steps=({"mirror": 50}, cohort, 80), pause="30s", checks=checks, serving=gateway))
    r.step()
    r.set(version="1.1.0")
    v = view.view(r.obj(), r.now)
    assert v["traffic"][1] == {"version": "1.1.0", "role": "candidate", "weight": 0, "mirror": 50, "cohort": []}
    assert (v["step"]["kind"], v["step"]["what"]) == ("mirror", "mirroring 50% of stable's requests")
    text = "\n".join(view.plain_lines(v))
    assert "1.1.0 gets copies of 50% of stable's requests (its answers discarded)" in text
    assert "in step 1/3 (mirroring 50% of stable's requests, pause 30s)" in text
    while r.status.current_step == 0:
        r.analyse()
    v = view.view(r.obj(), r.now)
    assert v["traffic"][1]["cohort"] == [{"name": "x-cohort", "value": "testers"}]
    assert "1.1.0 serves the cohort x-cohort: testers; everyone else stays on stable" in "\n".join(view.plain_lines(v))


def test_checks_show_value_limit_baseline_samples_and_verdict():
    r = in_step_two()
    r.analyse(BAD_ACCURACY)
    v = view.view(r.obj(), r.now)
    accuracy = next(c for c in v["checks"] if c["name"] == "accuracy")
    assert (accuracy["verdict"], accuracy["value"], accuracy["baseline"], accuracy["samples"]) == ("Fail", 0.8, 0.95, 120)
    assert v["analysis"]["consecutiveFailures"] == 1
    rows = [line.split() for line in view.plain_lines(v) if line.strip().startswith(("CHECK", "errors", "accuracy"))]
    assert rows[0] == ["CHECK", "VALUE", "LIMIT", "BASELINE", "SAMPLES", "VERDICT"]
    assert rows[1] == ["errors", "0.002", "<=", "0.05", "-", "400", "Pass"]
    assert rows[2][:3] == ["accuracy", "0.8", ">="] and rows[2][-3:] == ["0.95", "120", "Fail"]
    assert "at most 5% below stable 0.95" in " ".join(rows[2])
    assert "failures 1/2" in "\n".join(view.plain_lines(v))


def test_rolled_back_shows_all_traffic_on_stable_and_the_failed_version():
    r = in_step_two()
    r.analyse(BAD_ACCURACY)
    r.analyse(BAD_ACCURACY)
    v = view.view(r.obj(), r.now)
    assert v["phase"] == "RolledBack" and v["versions"]["failed"] == "1.1.0" and v["versions"]["candidate"] is None
    assert v["traffic"] == [{"version": "1.0.0", "role": "stable", "weight": 100, "mirror": 0, "cohort": []}]
    assert v["step"] is None and v["analysis"]["nextInSeconds"] is None
    assert [p["type"] for p in v["problems"]] == ["Degraded"]  # the engine's own condition
    last = v["history"][-1]
    assert (last["action"], last["version"], last["actor"]) == ("RolledBack", "1.1.0", "modelops")
    assert "accuracy" in last["reason"]
    lines = view.plain_lines(v)
    assert "  stable  1.0.0  ████████████████████ 100%" in lines
    assert any(line.startswith("  ! Degraded=True RolledBack: ") for line in lines)


def test_a_pin_to_the_rolled_back_version_is_a_problem_shown():
    r = in_step_two()
    r.analyse(BAD_ACCURACY)
    r.analyse(BAD_ACCURACY)
    status = r.status.model_copy(deep=True)
    status.conditions.append(pin_condition(status, [], {"1.1.0": ("HTTPRoute fraud rule 0 (testers)",)}, rfc3339(r.now)))
    v = view.view({**r.obj(), "status": status.to_wire()}, r.now)
    assert [p["type"] for p in v["problems"]] == ["Degraded", "FailedVersionPinned"]
    assert any(line.startswith("  ! FailedVersionPinned=True PinToFailedVersion: rolled-back 1.1.0 still gets the "
                               "requests of HTTPRoute fraud rule 0 (testers)") for line in view.plain_lines(v))


def test_unsynced_condition_is_the_first_problem_shown():
    r = in_step_two()
    broken = unsynced(r.status, "Timeout", "the API server did not answer within 10s", rfc3339(r.now))
    obj = {**r.obj(), "status": broken.to_wire()}
    v = view.view(obj, r.now)
    assert v["problems"][0] == {"type": "Synced", "status": "False", "reason": "Timeout",
                                "message": "the API server did not answer within 10s", "since": rfc3339(r.now)}
    lines = view.plain_lines(v)
    assert lines[1] == "  ! Synced=False Timeout: the API server did not answer within 10s"
    assert view.list_row(v, False)[-1].startswith("Synced=False Timeout")


def test_waiting_candidate_and_pinned_weight():
    r = Rollout(make_spec(steps=(20, 50), checks=CHECKS))
    r.step()
    r.ready.discard("1.1.0")
    r.set(version="1.1.0")
    r.now += timedelta(seconds=12)
    r.step()
    v = view.view(r.obj(), r.now)
    assert v["waiting"] == {"since": r.status.waiting_since, "elapsedSeconds": 12.0}
    assert v["traffic"][1]["weight"] == 0
    assert "waiting 12s for 1.1.0 to be ready on the backend" in "\n".join(view.plain_lines(v))
    r.ready.add("1.1.0")
    r.set(traffic_override=TrafficOverride(weight=35, reason="load test"))
    v = view.view(r.obj(), r.now)
    assert v["pinnedWeight"] == 35 and v["phase"] == "Paused"
    assert "weight pinned at 35%" in "\n".join(view.plain_lines(v))


def test_past_the_progress_deadline_is_said():
    r = in_step_two()
    late = r.now + timedelta(hours=1)
    v = view.view(r.obj(), late)
    assert v["overdue"] is True and v["progressDeadline"] is not None
    assert any(line.startswith("  ! past its progress deadline") for line in view.plain_lines(v))


def test_json_shape_is_stable_and_serialisable():
    r = in_step_two()
    v = view.view(r.obj(), r.now)
    assert json.loads(json.dumps(v)) == v
    assert (v["kind"], v["schemaVersion"]) == ("ModelDeploymentView", 1)
    assert list(v) == ["kind", "schemaVersion", "at", "namespace", "name", "model", "phase", "message", "versions",
                       "traffic", "step", "waiting", "analysis", "paused", "pinnedWeight", "progressDeadline",
                       "overdue", "drill", "lastDrill", "checks", "problems", "history"]
    assert set(v["checks"][0]) == {"name", "verdict", "value", "limit", "baseline", "samples", "message", "time", "dryRun",
                                   "budgetLeft"}
    assert set(v["history"][0]) == {"time", "ageSeconds", "action", "version", "actor", "reason"}
    assert [h["action"] for h in v["history"]] == ["Deployed", "RolloutStarted", "StepAdvanced", "StepAdvanced"]
    assert view.list_json([v])["items"] == [v]
    assert view.history_json(v)["history"] == v["history"]


def test_only_the_last_history_entries_in_get_and_all_in_history():
    r = in_step_two()
    while r.status.canary_version is not None:  # through step 3 and promoted
        assert len(r.decisions) < 20
        r.analyse()
    v = view.view(r.obj(), r.now)
    assert v["phase"] == "Stable" and v["versions"]["fallback"] == "1.0.0"
    get_rows = [line for line in view.plain_lines(v, history=2) if "modelops" in line]
    assert len(get_rows) == 2 and "Promoted" in get_rows[-1]
    assert len(view.plain_history(v)) == 1 + len(v["history"])
    assert view.plain_history(v)[0].split() == ["TIME", "AGE", "ACTION", "VERSION", "ACTOR", "REASON"]
    stamp, age, action, version, actor, *reason = view.plain_history(v)[-1].split()
    assert (stamp, age, action, version, actor) == (v["history"][-1]["time"], "0s", "Promoted", "1.1.0", "modelops")


def test_unreadable_spec_or_status_is_a_problem_not_a_crash():
    r = in_step_two()
    obj = r.obj()
    obj["spec"]["fieldFromTheFuture"] = True
    obj["status"]["phase"] = "Hibernating"
    v = view.view(obj, r.now)
    assert [p["type"] for p in v["problems"]][:2] == ["Spec", "Status"]
    assert v["analysis"]["nextInSeconds"] is None
    view.plain_lines(v)  # still drawn
    empty = view.view({"metadata": {"name": "new"}, "spec": {}}, r.now)
    assert empty["phase"] is None and empty["traffic"] == []
    assert view.plain_lines(empty)[0] == "new  Unknown"
    assert any("no status yet" in line for line in view.plain_lines(empty))


def test_list_rows_with_and_without_namespaces():
    r = in_step_two()
    other = Rollout(make_spec(checks=CHECKS))
    other.step()
    views = [view.view(r.obj("prod", "fraud"), r.now), view.view(other.obj("team-b", "churn"), r.now)]
    lines = view.plain_list(views, all_namespaces=True)
    assert [line.split()[:6] for line in lines] == [
        ["NAMESPACE", "NAME", "PHASE", "STABLE", "CANDIDATE", "STEP"],
        ["prod", "fraud", "Progressing", "1.0.0", "1.1.0@50%", "2/3"],
        ["team-b", "churn", "Stable", "1.0.0", "-", "-"],
    ]
    assert view.plain_list(views[:1], all_namespaces=False)[1].split()[:5] == ["fraud", "Progressing", "1.0.0",
                                                                               "1.1.0@50%", "2/3"]
    long = {**views[0], "message": "x" * 200}
    assert len(view.list_row(long, False)[-1]) == view.MESSAGE_WIDTH


def test_rich_rendering_has_the_same_content_with_colours():
    r = in_step_two()
    r.analyse(BAD_ACCURACY)
    v = view.view(r.obj(), r.now)
    console = Console(file=io.StringIO(), width=160, force_terminal=True, color_system="truecolor", record=True)
    console.print(view.renderable(v))
    text = console.export_text()
    for expected in ("prod/fraud  Progressing", "1.1.0  ██████████░░░░░░░░░░  50%", "in step 2/3", "accuracy",
                     "Fail", "StepAdvanced"):
        assert expected in text, expected
    assert "\x1b[" in console.file.getvalue()  # coloured
    for renderable in (view.rich_list([v], True), view.rich_history(v)):
        console.print(renderable)


def test_unchanging_part_ignores_the_clock_only():
    r = in_step_two()
    a, b = view.view(r.obj(), r.now), view.view(r.obj(), r.now + timedelta(seconds=5))
    assert a != b and view.unchanging(a) == view.unchanging(b)
    r.analyse()
    assert view.unchanging(view.view(r.obj(), r.now)) != view.unchanging(a)


# --- the commands, with kubectl replaced by a function (stdout is not a terminal here) -------------

def args_for(argv):
    return plugin_parser().parse_args(argv)


def test_namespace_before_or_after_the_command_and_actions_untouched():
    assert args_for(["-n", "prod", "get", "fraud"]).namespace == "prod"
    assert args_for(["get", "fraud", "-n", "prod", "--watch"]).namespace == "prod"
    assert args_for(["list", "-A"]).all_namespaces is True
    assert args_for(["history", "fraud", "-o", "json", "--context", "east"]).context == "east"
    assert args_for(["-n", "prod", "pause", "fraud"]).namespace == "prod"


def fake_read(objects):
    """A stand-in for kubectl_get that hands out `objects` in turn, then stops the watch like Ctrl-C."""
    calls = []
    queue = list(objects)

    def read(args, *what):
        calls.append((getattr(args, "namespace", None), what))
        if not queue:
            raise KeyboardInterrupt
        return queue.pop(0)

    read.calls = calls
    return read


def test_get_plain_and_json(capsys):
    r = in_step_two()
    clock = lambda: r.now  # noqa: E731
    assert view_commands.run(args_for(["-n", "prod", "get", "fraud"]), fake_read([r.obj()]), clock) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "prod/fraud  Progressing" and "\x1b" not in out
    read = fake_read([r.obj()])
    assert view_commands.run(args_for(["get", "fraud", "-n", "prod", "-o", "json"]), read, clock) == 0
    assert json.loads(capsys.readouterr().out) == view.view(r.obj(), r.now)
    assert read.calls == [("prod", ("fraud",))]


def test_watch_without_a_terminal_prints_a_block_per_change_and_ctrl_c_exits_0(capsys, monkeypatch):
    monkeypatch.setattr(view_commands, "POLL_SECONDS", 0)
    r = in_step_two()
    first = r.obj()
    r.analyse()
    second = r.obj()
    clock = lambda: r.now  # noqa: E731
    status = view_commands.run(args_for(["get", "fraud", "--watch"]), fake_read([first, first, second, second]), clock)
    assert status == 0
    blocks = [b for b in capsys.readouterr().out.split("--- ") if b]
    assert len(blocks) == 2  # the repeated reads changed nothing shown
    status = view_commands.run(args_for(["get", "fraud", "-w", "-o", "json"]), fake_read([first, second]), clock)
    assert status == 0
    docs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [d["analysis"]["lastAt"] for d in docs] == [first["status"]["lastAnalysisAt"],
                                                         second["status"]["lastAnalysisAt"]]


def test_list_and_history_commands(capsys):
    r = in_step_two()
    clock = lambda: r.now  # noqa: E731
    listing = {"apiVersion": "v1", "kind": "List", "items": [r.obj("b", "fraud"), r.obj("a", "fraud")]}
    assert view_commands.run(args_for(["list", "-A"]), fake_read([listing]), clock) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["NAMESPACE", "a", "b"]
    assert view_commands.run(args_for(["list"]), fake_read([{"items": []}]), clock) == 0
    assert capsys.readouterr().out == "No ModelDeployments found.\n"
    assert view_commands.run(args_for(["history", "fraud", "-o", "json"]), fake_read([r.obj()]), clock) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["kind"] == "ModelDeploymentHistory" and len(shown["history"]) == 4


def test_a_kubectl_failure_is_its_message_and_status_1(capsys):
    def read(args, *what):
        raise view_commands.ReadError('modeldeployments.modelops.io "nope" not found')

    assert view_commands.run(args_for(["get", "nope"]), read, lambda: None) == 1
    assert capsys.readouterr().err == 'error: modeldeployments.modelops.io "nope" not found\n'


def test_kubectl_arguments(monkeypatch):
    seen = []

    def run(cmd, **kwargs):
        seen.append(cmd)
        return argparse.Namespace(returncode=0, stdout="{}", stderr="")

    monkeypatch.setattr(view_commands.subprocess, "run", run)
    view_commands.kubectl_get(args_for(["-n", "prod", "get", "fraud", "--context", "east"]), "fraud")
    view_commands.kubectl_get(args_for(["list", "-A"]))
    view_commands.kubectl_get(args_for(["history", "fraud"]), "fraud")
    assert seen == [
        ["kubectl", "--context", "east", "--namespace", "prod", "get", "modeldeployments.modelops.io", "fraud", "-o",
         "json"],
        ["kubectl", "get", "modeldeployments.modelops.io", "--all-namespaces", "-o", "json"],
        ["kubectl", "get", "modeldeployments.modelops.io", "fraud", "-o", "json"],
    ]


def test_a_drill_in_flight_and_the_last_drills_figures():
    from .test_drill import FALLBACK, STABLE, drilling

    world = drilling()
    world.until(lambda d: d.status.drill.on_fallback_at is not None)
    obj = {"metadata": {"name": "fraud", "namespace": "prod"}, "spec": world.spec.to_wire(),
           "status": world.status.to_wire()}
    v = view.view(obj, world.now)
    assert v["phase"] == "Drilling" and v["drill"]["stage"] == "onFallback" and v["drill"]["secondsToFallback"] == 1.0
    assert [(t["role"], t["version"], t["weight"]) for t in v["traffic"]] == [("stable", STABLE, 0),
                                                                             ("fallback", FALLBACK, 100)]
    text = "\n".join(view.plain_lines(v))
    assert f"rollback drill to fallback {FALLBACK} for 2s (all traffic on it, on it after 1.0s), then back to " \
           f"{STABLE}" in text
    done = world.until(lambda d: d.status.drill is None)
    obj["status"] = done.status.to_wire()
    v = view.view(obj, world.now)
    assert v["drill"] is None and v["lastDrill"]["result"] == "Completed"
    assert [(t["role"], t["weight"]) for t in v["traffic"]] == [("stable", 100)]
    line = next(line for line in view.plain_lines(v) if "last drill" in line)
    assert line.strip().startswith(f"last drill Completed 1s ago: 1.0s to fallback {FALLBACK}, 1.0s back to {STABLE}, "
                                   "requests lost measured after")
    measured = done.status.last_drill.model_copy(update={"requests_lost": 3, "requests_lost_due": None})
    obj["status"] = done.status.model_copy(update={"last_drill": measured}).to_wire()
    assert any(line.endswith("1.0s back to 1.1.0, 3 requests lost") for line in view.plain_lines(view.view(obj, world.now)))
    assert view.unchanging(view.view(obj, world.now)) == view.unchanging(view.view(obj, world.now + timedelta(hours=1)))
    console = Console(file=io.StringIO(), width=200)
    console.print(view.renderable(view.view(obj, world.now)))
    assert "3 requests lost" in console.file.getvalue()


# A namespace editor's text: rich markup (a live link, a closing tag that crashes a markup parser), a terminal
# hyperlink and screen-clearing escape, a bell, a right-to-left override, a line break.
HOSTILE = "[link=https://evil.example]click[/link] [/bold] \x1b]8;;https://evil.example\x1b\\x\x1b[2J\x07\u202eok\nnext"
SHOWN_HOSTILE = "[link=https://evil.example]click[/link] [/bold] ]8;;https://evil.example\\x[2Jok next"


def hostile_object() -> dict:
    """In step 2, with hostile text where tenants write: a request's reason, a check's name, a condition's message."""
    r = in_step_two()
    obj = r.obj()
    obj["status"]["history"][-1]["reason"] = HOSTILE
    obj["status"]["checks"][0]["name"] = HOSTILE
    obj["status"]["message"] = HOSTILE
    return obj, r.now


def test_tenant_text_reaches_a_terminal_as_text_never_as_markup_or_escape_sequences():
    obj, now = hostile_object()
    v = view.view(obj, now)
    assert v["history"][-1]["reason"] == HOSTILE  # the JSON carries the text as it is (json.dumps escapes it)
    console = Console(file=io.StringIO(), width=400, force_terminal=True, color_system="truecolor", record=True)
    for renderable in (view.renderable(v, error=HOSTILE), view.rich_list([v], True), view.rich_history(v)):
        console.print(renderable)
    raw = console.file.getvalue()
    assert "\x1b]8" not in raw and "\x1b[2J" not in raw and "\x07" not in raw and "\u202e" not in raw
    assert SHOWN_HOSTILE in console.export_text()


def test_plain_output_has_no_control_characters_and_keeps_one_entry_per_line():
    obj, now = hostile_object()
    v = view.view(obj, now)
    for lines in (view.plain_lines(v), view.plain_list([v], True), view.plain_history(v)):
        text = "\n".join(lines)
        assert SHOWN_HOSTILE[:40] in text
        assert not [ch for ch in text if ch != "\n" and unicodedata.category(ch) in ("Cc", "Cf")]
        assert not [line for line in lines if line.startswith("next")]  # the line break stayed inside its entry
    assert SHOWN_HOSTILE in "\n".join(view.plain_history(v))


def test_an_undecided_sequential_check_shows_its_evidence_and_the_budget_left():
    errors = {"name": "errors", "template": "errorRate", "maxIncreasePercent": 10, "sequential": {"maxDuration": "30m"}}
    r = Rollout(make_spec(steps=(20, 50), pause="30s", checks=[errors]))
    r.step()
    r.set(version="1.1.0")
    r.analyse({"errors": Measurement(0.01, baseline=0.01, samples=1000, baseline_samples=4000)}, seconds=60)
    v = view.view(r.obj(), r.now)
    (check,) = v["checks"]
    assert (check["verdict"], check["samples"], check["budgetLeft"]) == ("Undecided", 1000, "29m of maxDuration 30m")
    assert check["message"].startswith("not enough evidence yet: 0.01 vs stable 0.01, 1000 and 4000 samples")
    row = next(line for line in view.plain_lines(v) if line.strip().startswith("errors"))
    assert row.endswith(" 1000     Undecided, budget left 29m of maxDuration 30m")
    assert v["analysis"]["lastOutcome"] == "Undecided" and v["analysis"]["consecutiveNoData"] == 0
