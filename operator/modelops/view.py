"""What `kubectl modelops get | list | history` show: pure functions of a ModelDeployment and a time.

`view(obj, now)` turns a ModelDeployment as `kubectl get -o json` prints it into one plain
dict, the JSON that `-o json` prints; `plain_lines`/`plain_list`/`plain_history` draw text
without colour codes from it (pipes, files), and `renderable`/`rich_list`/`rich_history`
the same for a terminal with rich. Nothing here reads a clock, the cluster or the terminal.

Text from the object (a request's reason, a condition's message, any name) is drawn as text in
both renderings: never as rich markup, and with control and format characters (escape sequences,
bell, bidirectional overrides) dropped and line breaks and tabs turned into spaces, so whoever can
edit the object cannot act on the reader's terminal. The JSON carries the text unchanged, escaped.

The JSON shape (`"kind": "ModelDeploymentView"`, `"schemaVersion": 1`; fields are only
added within one schemaVersion). Times are RFC 3339 as status holds them, durations are
seconds (float) computed against `at`; a value that does not apply is null:

    {"kind": "ModelDeploymentView", "schemaVersion": 1, "at": time,
     "namespace": str|null, "name": str, "model": str|null,
     "phase": "Stable"|"Queued"|"Drilling"|"Progressing"|"Paused"|"RollingBack"|"RolledBack"|"Failed"|null,
     "message": str|null,
     "versions": {"desired": str|null, "stable": str|null, "candidate": str|null,
                  "fallback": str|null, "failed": str|null, "retained": [str],
                  "warm": [{"version": str, "ready": bool}]},         # retained versions kept deployed
     "traffic": [{"version": str, "role": "stable"|"candidate"|"fallback", "weight": int,  # weights sum to 100
                  "mirror": int, "cohort": [{"name": str, "value": str}]}],  # the candidate's copies, its cohort
     "step": null | {"number": int (from 1), "of": int|null, "kind": "weight"|"mirror"|"match", "what": str,
                     "weight": int, "pause": str|null, "startedAt": time, "elapsedSeconds": float},
     "waiting": null | {"since": time, "elapsedSeconds": float},      # candidate not ready on the backend yet
     "analysis": {"lastAt": time|null, "lastOutcome": "Passed"|"Failed"|"Inconclusive"|"Undecided"|null,
                  "nextInSeconds": float|null, "consecutiveFailures": int, "failureLimit": int|null,
                  "consecutiveNoData": int, "noDataLimit": int|null},
     "paused": bool, "pinnedWeight": int|null,
     "progressDeadline": time|null, "overdue": bool,
     "drill": null | {"fallback": str, "returnsTo": str,                 # a rollback drill in flight
                      "stage": "waitingForFallback"|"toFallback"|"onFallback"|"returning",
                      "startedAt": time, "elapsedSeconds": float, "onFallbackAt": time|null,
                      "secondsToFallback": float|null, "actor": str, "reason": str},
     "lastDrill": null | {"result": "Completed"|"Interrupted", "fallback": str, "returnedTo": str,
                          "startedAt": time, "endedAt": time, "ageSeconds": float|null,
                          "secondsToFallback": float|null, "secondsBack": float|null,
                          "requestsLost": int|null, "requestsLostNote": str|null, "requestsLostDue": time|null,
                          "message": str, "actor": str, "reason": str},
     "checks": [{"name": str, "verdict": "Pass"|"Fail"|"NoData"|"Undecided"|"Error", "value": float|null,
                 "limit": str, "baseline": float|null, "samples": int|null, "message": str, "time": time,
                 "dryRun": bool, "budgetLeft": str|null}],  # what an Undecided check's budget has left
     "problems": [{"type": str, "status": str, "reason": str, "message": str, "since": time|null}],
     "history": [{"time": time, "ageSeconds": float|null, "action": str, "version": str,
                  "actor": str, "reason": str}]}                          # oldest first, all of status.history

`problems` lists the conditions that are not fine (Synced or Ready not True, Degraded True, warm
fallbacks asked for that the backend does not keep; Synced first), and a spec or status this version of
the plugin cannot read.
"""

from __future__ import annotations

import unicodedata
from datetime import datetime
from typing import Any, Iterable

from pydantic import ValidationError
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from .api.modeldeployment import ModelDeploymentSpec, ModelDeploymentStatus, Phase, Step, StrategyType
from .rollout.conditions import PIN_TO_FAILED, WARM_FALLBACKS
from .rollout.plan import (intent_of, progress_deadline, seconds_between, seconds_to_next_analysis, sent_to_candidate,
                           step_words, steps_of)
from .rollout.values import parse_rfc3339, rfc3339

KIND = "ModelDeploymentView"
SCHEMA_VERSION = 1
BAR_WIDTH = 20
HISTORY_SHOWN = 5
MESSAGE_WIDTH = 60

PHASE_STYLES = {"Stable": "bold green", "Queued": "bold blue", "Drilling": "bold magenta", "Progressing": "bold cyan",
                "Paused": "bold yellow",
                "RollingBack": "bold magenta", "RolledBack": "bold red", "Failed": "bold red"}
VERDICT_STYLES = {"Pass": "green", "Fail": "bold red", "NoData": "yellow", "Undecided": "cyan", "Error": "bold magenta"}
ROLE_STYLES = {"stable": "green", "candidate": "cyan", "fallback": "magenta"}
WARNING_ACTIONS = ("RolledBack", "Aborted", "DrillInterrupted")
# Conditions whose healthy status is True (False or Unknown is a problem) and those whose healthy status is
# False. AnalysisHealthy is left out: the checks table and the failure count say the same, check by check.
HEALTHY_WHEN_TRUE = ("Synced", "Ready")
HEALTHY_WHEN_FALSE = ("Degraded", PIN_TO_FAILED)


# --- small formatting helpers ---------------------------------------------------------------

def duration(seconds: float | None) -> str:
    """41s, 3m05s, 2h04m, 3d04h; '-' for None."""
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def bar(weight: int, width: int = BAR_WIDTH) -> str:
    """A weight as a bar of `width` cells; any traffic shows at least one cell, any traffic missing one gap."""
    weight = max(0, min(100, weight))
    filled = round(weight * width / 100)
    if weight > 0:
        filled = max(1, filled)
    if weight < 100:
        filled = min(width - 1, filled)
    return "█" * filled + "░" * (width - filled)


def number(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"


def _printable_char(ch: str) -> str:
    if ch.isspace():  # line breaks and tabs too: one entry stays on one line, in its column
        return " "
    return "" if unicodedata.category(ch) in ("Cc", "Cf") else ch


def printable(text: str) -> str:
    """`text` as a terminal shows it literally: any whitespace as a space, control and format characters
    (Unicode categories Cc and Cf: ESC, BEL, bidirectional overrides, ...) removed."""
    return "".join(_printable_char(ch) for ch in text)


def _printable_view(value: Any) -> Any:
    """Every text in a view (or any part of one) made printable."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {k: _printable_view(val) for k, val in value.items()}
    if isinstance(value, list):
        return [_printable_view(item) for item in value]
    return value


def truncate(text: str | None, width: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _since(stamp: str | None, now: datetime) -> float | None:
    if not stamp:
        return None
    try:
        return round((now - parse_rfc3339(stamp)).total_seconds(), 3)
    except ValueError:
        return None


# --- the view ---------------------------------------------------------------------------------

def _read(obj: dict[str, Any]) -> tuple[ModelDeploymentSpec | None, ModelDeploymentStatus, list[dict[str, Any]]]:
    """Spec and status as models; what cannot be read becomes a problem, never an exception."""
    problems: list[dict[str, Any]] = []
    try:
        spec: ModelDeploymentSpec | None = ModelDeploymentSpec.model_validate(obj.get("spec") or {})
    except ValidationError as exc:
        spec = None
        problems.append({"type": "Spec", "status": "Unreadable", "reason": "NotUnderstood",
                         "message": f"this plugin cannot read the spec ({exc.error_count()} errors): steps and "
                                    "analysis timing are not shown", "since": None})
    try:
        status = ModelDeploymentStatus.model_validate(obj.get("status") or {})
    except ValidationError as exc:
        status = ModelDeploymentStatus()
        problems.append({"type": "Status", "status": "Unreadable", "reason": "NotUnderstood",
                         "message": f"this plugin cannot read the status ({exc.error_count()} errors)", "since": None})
    return spec, status, problems


def _problems(status: ModelDeploymentStatus) -> list[dict[str, Any]]:
    out = []
    for c in status.conditions:
        bad = (c.type in HEALTHY_WHEN_TRUE and c.status != "True") \
            or (c.type in HEALTHY_WHEN_FALSE and c.status == "True") \
            or (c.type == WARM_FALLBACKS and c.reason == "NotKept")  # asked for, and the backend keeps none
        if bad:
            out.append({"type": c.type, "status": c.status, "reason": c.reason, "message": c.message,
                        "since": c.last_transition_time})
    # Synced first: when the operator cannot finish its rounds, everything else may be stale.
    return sorted(out, key=lambda p: (p["type"] != "Synced", p["type"]))


def _traffic(status: ModelDeploymentStatus) -> list[dict[str, Any]]:
    if status.stable_version is None:
        return []
    drill, intent = status.drill, intent_of(status)
    if drill is not None and intent is not None and intent.candidate == drill.fallback_version:
        on_fallback = intent.candidate_weight
        return [{"version": status.stable_version, "role": "stable", "weight": 100 - on_fallback, "mirror": 0,
                 "cohort": []},
                {"version": drill.fallback_version, "role": "fallback", "weight": on_fallback, "mirror": 0, "cohort": []}]
    weight = status.canary_weight if status.canary_version is not None else 0
    out = [{"version": status.stable_version, "role": "stable", "weight": 100 - weight, "mirror": 0, "cohort": []}]
    if status.canary_version is not None:
        out.append({"version": status.canary_version, "role": "candidate", "weight": weight,
                    "mirror": status.canary_mirror, "cohort": [h.to_wire() for h in status.canary_match]})
    return out


def _step(spec: ModelDeploymentSpec | None, status: ModelDeploymentStatus, now: datetime) -> dict[str, Any] | None:
    if status.canary_version is None or status.current_step is None or status.step_started_at is None:
        return None
    index, pause, of, step = status.current_step, None, None, None
    if spec is not None:
        steps = steps_of(spec)
        index = min(index, len(steps) - 1)
        of, step = len(steps), steps[index]
        pause = step.pause if spec.strategy.type is StrategyType.Canary else None
    # What the candidate is sent now, else (not ready yet) the step's: an override or an edit may differ from it.
    shown = sent_to_candidate(status) or step or Step(weight=status.canary_weight or 100)
    return {"number": index + 1, "of": of, "kind": shown.kind.value, "what": step_words(shown),
            "weight": shown.weight or 0, "pause": pause, "startedAt": status.step_started_at,
            "elapsedSeconds": _since(status.step_started_at, now)}


def _seconds_between(start: str | None, end: str | None) -> float | None:
    """The engine's seconds_between, for a status that may hold any text (a hand-edited one)."""
    try:
        return seconds_between(start or None, end or None)
    except ValueError:
        return None


def _drill(status: ModelDeploymentStatus, now: datetime) -> dict[str, Any] | None:
    d = status.drill
    if d is None:
        return None
    stage = "returning" if d.returning_at else "onFallback" if d.on_fallback_at else \
        "toFallback" if d.routed_at else "waitingForFallback"
    return {"fallback": d.fallback_version, "returnsTo": d.returns_to, "stage": stage, "startedAt": d.started_at,
            "elapsedSeconds": _since(d.started_at, now), "onFallbackAt": d.on_fallback_at,
            "secondsToFallback": _seconds_between(d.started_at, d.on_fallback_at), "actor": d.actor, "reason": d.reason}


def _last_drill(status: ModelDeploymentStatus, now: datetime) -> dict[str, Any] | None:
    d = status.last_drill
    if d is None:
        return None
    return {"result": d.result.value, "fallback": d.fallback_version, "returnedTo": d.returned_to,
            "startedAt": d.started_at, "endedAt": d.ended_at, "ageSeconds": _since(d.ended_at, now),
            "secondsToFallback": d.seconds_to_fallback, "secondsBack": d.seconds_back,
            "requestsLost": d.requests_lost, "requestsLostNote": d.requests_lost_note,
            "requestsLostDue": d.requests_lost_due, "message": d.message, "actor": d.actor, "reason": d.reason}


def view(obj: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The whole view of one ModelDeployment (the JSON of `-o json`; see the module's docstring)."""
    meta = obj.get("metadata") or {}
    spec, status, problems = _read(obj)
    raw_spec = obj.get("spec") or {}
    next_analysis = deadline = None
    if spec is not None:
        try:
            next_analysis = seconds_to_next_analysis(spec, status, now)
            next_analysis = None if next_analysis is None else round(next_analysis, 3)
            deadline = progress_deadline(spec, status)
        except ValueError:  # a timestamp that is not RFC 3339
            pass
    return {
        "kind": KIND,
        "schemaVersion": SCHEMA_VERSION,
        "at": rfc3339(now),
        "namespace": meta.get("namespace"),
        "name": meta.get("name", ""),
        "model": raw_spec.get("model"),
        "phase": status.phase.value if status.phase else None,
        "message": status.message,
        "versions": {"desired": raw_spec.get("version"), "stable": status.stable_version,
                     "candidate": status.canary_version, "fallback": status.fallback_version,
                     "failed": status.failed_version, "retained": list(status.retained_versions),
                     "warm": [{"version": w.version, "ready": w.ready} for w in status.warm_versions]},
        "traffic": _traffic(status),
        "step": _step(spec, status, now),
        "waiting": None if status.waiting_since is None or status.canary_version is None else
        {"since": status.waiting_since, "elapsedSeconds": _since(status.waiting_since, now)},
        "analysis": {"lastAt": status.last_analysis_at,
                     "lastOutcome": status.last_outcome.value if status.last_outcome else None,
                     "nextInSeconds": next_analysis,
                     "consecutiveFailures": status.consecutive_failures,
                     "failureLimit": spec.analysis.failure_limit if spec else None,
                     "consecutiveNoData": status.consecutive_no_data,
                     "noDataLimit": spec.analysis.no_data_limit if spec else None},
        "paused": status.paused,
        "pinnedWeight": status.pinned_weight,
        "progressDeadline": rfc3339(deadline) if deadline else None,
        "overdue": deadline is not None and deadline < now,
        "drill": _drill(status, now),
        "lastDrill": _last_drill(status, now),
        "checks": [{"name": c.name, "verdict": c.verdict.value, "value": c.value, "limit": c.limit,
                    "baseline": c.baseline, "samples": c.samples, "message": c.message, "time": c.time,
                    "dryRun": c.dry_run, "budgetLeft": c.budget_left}
                   for c in status.checks],
        "problems": problems + _problems(status),
        "history": [{"time": h.time, "ageSeconds": _since(h.time, now), "action": h.action, "version": h.version,
                     "actor": h.actor, "reason": h.reason} for h in status.history],
    }


STATUS_STABLE, STATUS_FAILED, STATUS_TIMEOUT, STATUS_UNREADABLE, STATUS_NOT_JSON = 0, 1, 2, 3, 4
"""`kubectl modelops status` exit statuses, for CI pipelines."""


def rollout_outcome(obj: dict[str, Any]) -> tuple[int | None, str]:
    """What one read of a ModelDeployment says of its rollout to spec.version: STATUS_STABLE once the operator has
    acted on this generation and stable is spec.version with the backend reporting it serving (the Ready
    condition), STATUS_FAILED when it was rolled back or failed, None while it is under way; with words to show."""
    meta = obj.get("metadata") or {}
    _, status, problems = _read(obj)
    desired = (obj.get("spec") or {}).get("version")
    generation = meta.get("generation")
    if problems:
        return None, problems[0]["message"]
    if status.observed_generation is None or (generation is not None and status.observed_generation < generation):
        return None, f"waiting for the operator to act on generation {generation}"
    phase, message = status.phase, printable(status.message or "")
    if phase in (Phase.RolledBack, Phase.Failed):
        failed = f" ({status.failed_version} failed)" if status.failed_version else ""
        return STATUS_FAILED, f"{phase.value}{failed}: {message}"
    if phase is Phase.Stable and status.stable_version == desired:
        ready = next((c for c in status.conditions if c.type == "Ready"), None)
        if ready is not None and ready.status == "True":
            return STATUS_STABLE, f"Stable: {desired} serves all traffic"
        why = f"{ready.reason}: {printable(ready.message or '')}" if ready else "no Ready condition yet"
        return None, f"Stable on {desired}, not yet reported serving ({why})"
    return None, f"{phase.value if phase else 'no phase yet'}: {message}"


def unchanging(v: dict[str, Any]) -> dict[str, Any]:
    """The view without what moves with the clock alone: two equal ones show the same object state."""
    out = {k: val for k, val in v.items() if k not in ("at", "overdue")}
    for key in ("step", "waiting", "drill", "lastDrill"):
        if out.get(key) is not None:
            out[key] = {k: val for k, val in out[key].items() if k not in ("elapsedSeconds", "ageSeconds")}
    out["analysis"] = {k: val for k, val in out["analysis"].items() if k != "nextInSeconds"}
    out["history"] = [{k: val for k, val in h.items() if k != "ageSeconds"} for h in out["history"]]
    return out


# --- words shared by both renderings ---------------------------------------------------------

def title(v: dict[str, Any]) -> str:
    where = f"{v['namespace']}/" if v["namespace"] else ""
    model = f"  model {v['model']}" if v["model"] and v["model"] != v["name"] else ""
    return f"{where}{v['name']}{model}"


def versions_line(v: dict[str, Any]) -> str:
    versions = v["versions"]
    words = [f"stable {versions['stable'] or '-'}", f"candidate {versions['candidate'] or '-'}",
             f"fallback {versions['fallback'] or '-'}"]
    if versions.get("warm"):
        words.append("warm " + " ".join(w["version"] + ("" if w["ready"] else " (starting)") for w in versions["warm"]))
    if versions["failed"]:
        words.append(f"failed {versions['failed']}")
    if versions["desired"] and versions["desired"] not in (versions["stable"], versions["candidate"],
                                                            versions["failed"]):
        words.append(f"spec.version {versions['desired']} (not acted on yet)")
    return ", ".join(words)


def candidate_route_lines(v: dict[str, Any]) -> list[str]:
    """What reaches the candidate besides its weight: copies of stable's requests, a header cohort."""
    lines = []
    for t in v["traffic"]:
        if t["mirror"]:
            lines.append(f"{t['version']} gets copies of {t['mirror']}% of stable's requests (its answers discarded)")
        if t["cohort"]:
            cohort = ", ".join(f"{h['name']}: {h['value']}" for h in t["cohort"])
            lines.append(f"{t['version']} serves the cohort {cohort}; everyone else stays on stable")
    return lines


def progress_lines(v: dict[str, Any]) -> list[str]:
    """'in step 2/3 (50%, pause 5s) for 41s, next analysis in 3s' and the analysis counters, while a
    candidate is in flight; the progress deadline when it has passed."""
    parts = []
    step, waiting, analysis = v["step"], v["waiting"], v["analysis"]
    if waiting is not None:
        parts.append(f"waiting {duration(waiting['elapsedSeconds'])} for {v['versions']['candidate']} "
                     "to be ready on the backend")
    elif step is not None:
        of = f"/{step['of']}" if step["of"] else ""
        pause = f", pause {step['pause']}" if step["pause"] else ""
        what = f"{step['weight']}%" if step["kind"] == "weight" else step["what"]
        parts.append(f"in step {step['number']}{of} ({what}{pause}) for {duration(step['elapsedSeconds'])}")
    if v["pinnedWeight"] is not None:
        parts.append(f"weight pinned at {v['pinnedWeight']}%")
    elif v["paused"]:
        parts.append("paused")
    if analysis["nextInSeconds"] is not None:
        due = analysis["nextInSeconds"]
        parts.append("next analysis due now" if due <= 0 else f"next analysis in {duration(max(1.0, due))}")
    lines = [", ".join(parts)] if parts else []
    if v["versions"]["candidate"] is not None:
        last = analysis["lastOutcome"] or "none yet"
        if analysis["lastAt"] and analysis["lastOutcome"]:
            last += f" {duration(_since(analysis['lastAt'], parse_rfc3339(v['at'])))} ago"
        lines.append(f"last analysis {last}, failures {analysis['consecutiveFailures']}/{analysis['failureLimit'] or '?'}"
                     f", no data {analysis['consecutiveNoData']}/{analysis['noDataLimit'] or '?'}")
    if v["overdue"]:
        lines.append(f"! past its progress deadline {v['progressDeadline']}: the rollout is not moving")
    return lines


DRILL_STAGES = {"waitingForFallback": "waiting for the fallback to be ready", "toFallback": "moving traffic to it",
                "onFallback": "all traffic on it", "returning": "moving traffic back"}


def seconds_words(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f}s"


def drill_lines(v: dict[str, Any]) -> list[str]:
    """The rollback drill in flight, and the last one's figures."""
    lines = []
    d, last = v.get("drill"), v.get("lastDrill")
    if d is not None:
        reached = f", on it after {seconds_words(d['secondsToFallback'])}" if d["secondsToFallback"] is not None else ""
        lines.append(f"rollback drill to fallback {d['fallback']} for {duration(d['elapsedSeconds'])} "
                     f"({DRILL_STAGES.get(d['stage'], d['stage'])}{reached}), then back to {d['returnsTo']}")
    if last is not None:
        if last["requestsLost"] is not None:
            lost = f"{last['requestsLost']} requests lost"
        elif last["requestsLostDue"] is not None:
            lost = f"requests lost measured after {last['requestsLostDue']}"
        else:
            lost = last["requestsLostNote"] or "requests lost not measured"
        ago = f" {duration(last['ageSeconds'])} ago" if last["ageSeconds"] is not None else ""
        figures = f"{seconds_words(last['secondsToFallback'])} to fallback {last['fallback']}, " \
                  f"{seconds_words(last['secondsBack'])} back to {last['returnedTo']}, {lost}"
        lines.append(f"last drill {last['result']}{ago}: {figures}"
                     + ("" if last["result"] == "Completed" else f" ({last['message']})"))
    return lines


def message(v: dict[str, Any]) -> str | None:
    """status.message, or what an empty status means."""
    if v["message"] is None and v["phase"] is None and not v["history"]:
        return "no status yet: the operator has not acted on this ModelDeployment (is it running?)"
    return v["message"]


def problem_line(p: dict[str, Any]) -> str:
    return f"{p['type']}={p['status']} {p['reason']}: {p['message']}"


def history_row(h: dict[str, Any]) -> list[str]:
    return [h["time"], duration(h["ageSeconds"]), h["action"], h["version"], h["actor"], h["reason"]]


def check_row(c: dict[str, Any]) -> list[str]:
    samples = "-" if c["samples"] is None else str(c["samples"])
    verdict = c["verdict"] + (f", budget left {c['budgetLeft']}" if c["budgetLeft"] else "") + (
        " (dry run)" if c["dryRun"] else "")
    return [c["name"], number(c["value"]), c["limit"], number(c["baseline"]), samples, verdict]


CHECK_HEADER = ["CHECK", "VALUE", "LIMIT", "BASELINE", "SAMPLES", "VERDICT"]
HISTORY_HEADER = ["TIME", "AGE", "ACTION", "VERSION", "ACTOR", "REASON"]


def columns(rows: Iterable[list[str]], indent: str = "") -> list[str]:
    """Rows as left-aligned columns, two spaces apart (the last column is not padded)."""
    rows = list(rows)
    if not rows:
        return []
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return [indent + "  ".join([cell.ljust(w) for cell, w in zip(r, widths)] + [r[-1]]).rstrip() for r in rows]


# --- plain text ---------------------------------------------------------------------------------

def plain_lines(v: dict[str, Any], history: int = HISTORY_SHOWN) -> list[str]:
    """`get` as text without colour codes."""
    v = _printable_view(v)
    lines = [f"{title(v)}  {v['phase'] or 'Unknown'}"]
    for p in v["problems"]:
        lines.append(f"  ! {problem_line(p)}")
    if message(v):
        lines.append(f"  {message(v)}")
    lines.append(f"  {versions_line(v)}")
    lines += columns(([t["role"], t["version"], f"{bar(t['weight'])} {t['weight']:>3}%"] for t in v["traffic"]),
                     indent="  ")
    lines += [f"  {line}" for line in candidate_route_lines(v) + progress_lines(v) + drill_lines(v)]
    if v["checks"]:
        lines.append("")
        lines += columns([CHECK_HEADER] + [check_row(c) for c in v["checks"]], indent="  ")
    if v["history"] and history > 0:
        lines.append("")
        lines += columns([HISTORY_HEADER] + [history_row(h) for h in v["history"][-history:]], indent="  ")
    return lines


def list_row(v: dict[str, Any], all_namespaces: bool) -> list[str]:
    step = v["step"]
    candidate = v["versions"]["candidate"]
    weight = next((t["weight"] for t in v["traffic"] if t["role"] == "candidate"), 0)
    row = [v["name"], v["phase"] or "Unknown", v["versions"]["stable"] or "-",
           f"{candidate}@{weight}%" if candidate else "-",
           (f"{step['number']}/{step['of'] or '?'}" if step else "-"),
           truncate(problem_line(v["problems"][0]) if v["problems"] else v["message"], MESSAGE_WIDTH) or "-"]
    return [v["namespace"] or "-"] + row if all_namespaces else row


def list_header(all_namespaces: bool) -> list[str]:
    header = ["NAME", "PHASE", "STABLE", "CANDIDATE", "STEP", "MESSAGE"]
    return ["NAMESPACE"] + header if all_namespaces else header


def plain_list(views: list[dict[str, Any]], all_namespaces: bool) -> list[str]:
    return columns([list_header(all_namespaces)] + [list_row(v, all_namespaces) for v in _printable_view(views)])


def plain_history(v: dict[str, Any]) -> list[str]:
    return columns([HISTORY_HEADER] + [history_row(h) for h in _printable_view(v["history"])])


def history_json(v: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "ModelDeploymentHistory", "schemaVersion": SCHEMA_VERSION, "at": v["at"],
            "namespace": v["namespace"], "name": v["name"], "history": v["history"]}


def list_json(views: list[dict[str, Any]]) -> dict[str, Any]:
    return {"kind": "ModelDeploymentViewList", "schemaVersion": SCHEMA_VERSION, "items": views}


# --- rich ---------------------------------------------------------------------------------------

def _table(header: list[str], **kwargs: Any) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold", **kwargs)
    for name in header:
        table.add_column(name, overflow="fold")
    return table


def _add_row(table: Table, cells: list[str | Text]) -> None:
    """A row whose text cells are Text: rich would read a plain string as markup."""
    table.add_row(*(Text(c) if isinstance(c, str) else c for c in cells))


def renderable(v: dict[str, Any], history: int = HISTORY_SHOWN, error: str | None = None) -> RenderableType:
    """`get` for a terminal: the same content as `plain_lines`, coloured."""
    v = _printable_view(v)
    parts: list[RenderableType] = []
    head = Text(title(v), style="bold")
    head.append("  ")
    head.append(v["phase"] or "Unknown", style=PHASE_STYLES.get(v["phase"] or "", "bold"))
    head.append(f"   at {v['at'][:19]}Z", style="dim")
    parts.append(head)
    if error:
        parts.append(Text(f"! {printable(error)}", style="bold red"))
    for p in v["problems"]:
        parts.append(Text(f"! {problem_line(p)}", style="bold red reverse" if p["type"] == "Synced" else "bold red"))
    if message(v):
        parts.append(Text(message(v), style="italic"))
    parts.append(Text(versions_line(v)))
    if v["traffic"]:
        weights = Table.grid(padding=(0, 2))
        for t in v["traffic"]:
            style = ROLE_STYLES[t["role"]]
            filled = bar(t["weight"])
            cells = Text(filled.rstrip("░"), style=style)
            cells.append(filled[len(filled.rstrip("░")):], style="dim")
            cells.append(f" {t['weight']:>3}%", style="bold")
            weights.add_row(Text(t["role"], style=style), Text(t["version"], style="bold"), cells)
        parts.append(weights)
    for line in candidate_route_lines(v):
        parts.append(Text(line, style=ROLE_STYLES["candidate"]))
    for line in progress_lines(v):
        parts.append(Text(line, style="bold yellow" if line.startswith("!") else ""))
    for line in drill_lines(v):
        parts.append(Text(line, style=ROLE_STYLES["fallback"] if line.startswith("rollback drill") else ""))
    if v["checks"]:
        parts.append(Text())
        checks = _table(CHECK_HEADER, title="checks", title_justify="left", title_style="bold")
        for c in v["checks"]:
            row = check_row(c)
            _add_row(checks, [*row[:-1], Text(row[-1], style=VERDICT_STYLES.get(c["verdict"], ""))])
        parts.append(checks)
    if v["history"] and history > 0:
        parts.append(Text())
        parts.append(rich_history(v, last=history))
    return Group(*parts)


def rich_history(v: dict[str, Any], last: int | None = None) -> Table:
    entries = _printable_view(v["history"] if last is None else v["history"][-last:])
    table = _table(HISTORY_HEADER, title="history" if last is not None else None, title_justify="left",
                   title_style="bold")
    for h in entries:
        row = history_row(h)
        _add_row(table, [*row[:2], Text(row[2], style="red" if h["action"] in WARNING_ACTIONS else ""), *row[3:]])
    return table


def rich_list(views: list[dict[str, Any]], all_namespaces: bool) -> Table:
    table = _table(list_header(all_namespaces))
    for v in _printable_view(views):
        row = list_row(v, all_namespaces)
        phase_at = 2 if all_namespaces else 1
        cells: list[Any] = list(row)
        cells[phase_at] = Text(row[phase_at], style=PHASE_STYLES.get(v["phase"] or "", ""))
        if v["problems"]:
            cells[-1] = Text(row[-1], style="red")
        _add_row(table, cells)
    return table
