"""decide(spec, status, observations, now) -> Decision(status, traffic intent, events).

No I/O and no clock: time, metric verdicts and backend readiness come in as arguments, so
every transition is unit-testable and a restarted operator resumes from status alone.
Feeding the returned status back with the same observations changes nothing (a fixed
point), which is what makes a crash between "write traffic" and "write status" harmless.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Mapping

from ..analysis.evaluate import outcome, spend_budget
from ..api.modeldeployment import (
    Action,
    Check,
    CheckStatus,
    DrillResult,
    DrillStatus,
    HistoryEntry,
    LastDrill,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    Outcome,
    Phase,
    Request,
    RollbackMode,
    Step,
    StepKind,
    StrategyType,
    Verdict,
)
from ..api.types import duration_seconds
from .conditions import conditions_for, pin_condition


@dataclass(frozen=True)
class AnalysisReport:
    """The evaluated checks of one analysis; `at` is the end of the measured window."""

    at: datetime
    results: tuple[CheckStatus, ...] = ()


@dataclass(frozen=True)
class Observations:
    ready_versions: frozenset[str] | None = frozenset()
    """Versions the backend can serve right now; traffic never goes to any other. None: the backend
    could not be read, so nothing that needs readiness happens (rollbacks and aborts still do)."""
    analysis: AnalysisReport | None = None
    generation: int | None = None
    available_versions: frozenset[str] | None = None
    """Versions that have one valid ModelVersion; None counts every version as available. A rollout
    never starts toward a version that has none, and a candidate that loses it is rolled back."""
    queued: str | None = None
    """Why no rollout may start now (the operator's limit of rollouts in flight is reached); None: one may."""
    carried: Carried | None = None
    """The intent the backend has carried since when, as far as the operator has seen (None: unknown)."""
    drill_loss: DrillLoss | None = None
    """The requests the last drill lost, once measured (or why they cannot be)."""
    serving_versions: frozenset[str] = frozenset()
    """Versions taking traffic although not in `ready_versions` (see BackendState): they make stable Ready, no
    decision."""
    refused: str | None = None
    """Why the backend will not carry all the routing the operator decides, in words (a rule it will not drive, an
    object that is not its to drive); None: it refuses nothing. No status then says all traffic is on stable, and
    no step moves forward."""
    pins: Mapping[str, tuple[str, ...]] | None = None
    """Version -> the user's pins routing requests to it alone, in words (None: the backend could not be read)."""


@dataclass(frozen=True)
class TrafficIntent:
    stable: str
    candidate: str | None = None
    candidate_weight: int = 0
    mirror: int = 0
    """Percent of stable's requests copied to the candidate, its answers discarded."""
    match: tuple[tuple[str, str], ...] = ()
    """(header, value) pairs: a request carrying all of them goes to the candidate."""

    def weights(self) -> dict[str, int]:
        if self.candidate is None or self.candidate_weight == 0:
            return {self.stable: 100}
        if self.candidate_weight == 100:
            return {self.candidate: 100}
        return {self.stable: 100 - self.candidate_weight, self.candidate: self.candidate_weight}


@dataclass(frozen=True)
class Carried:
    """The backend has carried `intent` since `at`: the clock of the first round, in an unbroken run of rounds whose
    apply found nothing to write for it. The operator's rounds run one a second during a drill, so drill timings
    are to about 1 s."""

    intent: TrafficIntent
    at: datetime


@dataclass(frozen=True)
class DrillLoss:
    """The requests the drill that started at `started_at` lost: a number, or None and why not."""

    started_at: str
    lost: int | None
    note: str | None = None


@dataclass(frozen=True)
class Event:
    type: str  # Normal or Warning, as Kubernetes Events have it
    reason: str
    message: str
    version: str | None = None
    """The version the event is about (what its history entry names), for notifications."""
    actor: str | None = None
    """Who acted, as history records it (`modelops` for the operator's own decisions)."""


@dataclass(frozen=True)
class Decision:
    status: ModelDeploymentStatus
    intent: TrafficIntent | None
    """What the backend must carry; None before a first version is deployed."""
    events: tuple[Event, ...] = ()


ACTIVE = (Phase.Progressing, Phase.Paused, Phase.RollingBack)
HANDLED_REQUESTS_KEPT = 32
MAX_DRILL_SECONDS = 300.0
"""A rollback drill not back on stable within this is interrupted: all traffic on stable at once."""
DRILL_HOLD_CAP_SECONDS = 60.0
"""A drill holds all traffic on the fallback for one analysis interval, at most this long."""
ON_STABLE = "all traffic on stable "
"""How a decision that takes every version but stable off the backend ends its words, followed by stable."""
BACKEND_REFUSES = "rollback decided, backend refuses: "
"""What a status says in place of ON_STABLE while the backend refuses part of that routing, followed by why."""
ROUTING_GRACE_SECONDS = 2.0
"""A step's routing the backend is seen carrying within this of the step's decision counts from the decision:
analysis instants are whole seconds, and a write is seen carried by the round its echo wakes. Routing that took
longer (a saturated API server, a write retried after a conflict) counts from when it was seen carried."""


def rfc3339(t: datetime) -> str:
    """UTC with milliseconds: analyses a second apart must stay distinct and ordered."""
    return t.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_rfc3339(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass
class _Run:
    """One call of decide: the spec, the status being built, and the events so far."""

    spec: ModelDeploymentSpec
    s: ModelDeploymentStatus
    obs: Observations
    now: datetime
    events: list[Event] = field(default_factory=list)

    # --- bookkeeping -------------------------------------------------------------------

    def record(self, version: str, action: str, reason: str, *, actor: str = "modelops", warning: bool = False) -> None:
        self.s.history.append(HistoryEntry(version=version, action=action, reason=reason, actor=actor, time=rfc3339(self.now)))
        self.s.message = f"{action} {version}: {reason}"
        self.events.append(Event("Warning" if warning else "Normal", action, f"{version}: {reason}", version, actor))

    @property
    def backend_known(self) -> bool:
        return self.obs.ready_versions is not None

    def ready(self, version: str | None) -> bool:
        return version is not None and version in (self.obs.ready_versions or frozenset())

    def available(self, version: str) -> bool:
        return self.obs.available_versions is None or version in self.obs.available_versions

    def canary_steps(self) -> list[Step]:
        return steps_of(self.spec)

    def step_index(self) -> int:
        """The current step, within the steps the spec has now (they may have been edited mid-rollout)."""
        return min(self.s.current_step or 0, len(self.canary_steps()) - 1)

    def route_to_candidate(self, step: Step | None) -> None:
        """What the candidate gets: the step's share, mirror or cohort; None: nothing at all."""
        s = self.s
        s.canary_weight = (step.weight or 0) if step else 0
        s.canary_mirror = (step.mirror or 0) if step else 0
        s.canary_match = list(step.match.headers) if step and step.match else []

    # --- transitions -------------------------------------------------------------------

    def clear_candidate(self) -> None:
        """No candidate any more: everything that described the one in flight goes."""
        s = self.s
        self.route_to_candidate(None)
        s.canary_version, s.current_step = None, None
        s.step_started_at = s.analysis_since = s.waiting_since = None

    def reset_analysis(self) -> None:
        s = self.s
        s.last_outcome, s.consecutive_failures, s.consecutive_no_data, s.checks = None, 0, 0, []

    def start_rollout(self, version: str, reason: str, actor: str = "modelops") -> None:
        s = self.s
        self.clear_candidate()
        self.reset_analysis()
        s.phase, s.canary_version, s.current_step, s.failed_version = Phase.Progressing, version, 0, None
        self.record(version, "RolloutStarted", reason, actor=actor)

    def enter_step(self, index: int) -> None:
        s, steps = self.s, self.canary_steps()
        s.current_step, s.step_started_at, s.last_outcome = index, rfc3339(self.now), None
        self.route_to_candidate(steps[index])
        s.analysis_since = s.analysis_since or s.step_started_at
        assert s.canary_version is not None
        self.record(s.canary_version, "StepAdvanced", f"step {index + 1}/{len(steps)} {step_words(steps[index])}")

    def promote(self, reason: str, actor: str = "modelops") -> None:
        s = self.s
        candidate, previous = s.canary_version, s.stable_version
        assert candidate is not None and previous is not None
        self.retain(previous, instead_of=candidate)
        self.clear_candidate()
        s.stable_version, s.phase, s.failed_version = candidate, Phase.Stable, None
        self.record(candidate, "Promoted", reason, actor=actor)

    def retain(self, version: str, instead_of: str) -> None:
        """`version` leaves stable for the front of the retained ones, and `instead_of`, the new stable, leaves
        them: a stable version is never its own fallback, so `retention` N keeps N versions to go back to."""
        s = self.s
        kept = [version] + [v for v in s.retained_versions if v not in (version, instead_of)]
        s.retained_versions = kept[: self.spec.retention]
        s.fallback_version = s.retained_versions[0] if s.retained_versions else None

    def roll_back(self, action: str, reason: str, *, actor: str = "modelops", progressive: bool = False) -> None:
        s = self.s
        assert s.canary_version is not None
        s.failed_version = s.canary_version
        if progressive and self.lower_steps():
            s.phase = Phase.RollingBack
            self.record(s.canary_version, action, reason + "; stepping traffic back to stable", actor=actor, warning=True)
            return
        self.finish_rollback(action, reason, actor)

    def finish_rollback(self, action: str, reason: str, actor: str = "modelops") -> None:
        s = self.s
        candidate = s.canary_version
        assert candidate is not None
        s.failed_version = candidate
        self.clear_candidate()
        s.phase = Phase.RolledBack
        self.record(candidate, action, f"{reason}; {self.on_stable(s.stable_version)}", actor=actor, warning=True)

    def on_stable(self, stable: str) -> str:
        """What a decision that puts all traffic on stable may say of it: no more than the backend carries."""
        return ON_STABLE + stable if self.obs.refused is None else BACKEND_REFUSES + self.obs.refused

    def restate_return_to_stable(self) -> None:
        """The words of a return to stable follow the backend: why it refuses, for as long as it refuses (even
        when the refusal came after the decision); `all traffic on stable` again once it is seen carrying all of
        it (nothing refused, the intent carried)."""
        s, intent = self.s, intent_of(self.s)
        if s.message is None or intent is None or intent.candidate is not None:
            return
        said = next((words for words in (BACKEND_REFUSES, ON_STABLE) if words in s.message), None)
        if said is None:
            return
        head = s.message.rsplit(said, 1)[0]
        if self.obs.refused is not None:
            s.message = head + BACKEND_REFUSES + self.obs.refused
        elif said == BACKEND_REFUSES and self.obs.carried is not None and self.obs.carried.intent == intent:
            s.message = head + ON_STABLE + s.stable_version

    # --- the steps of one decision --------------------------------------------------------

    def bootstrap(self) -> None:
        """The first version of a deployment has nothing to compare with: it becomes stable
        (once its ModelVersion exists and the backend can be read)."""
        if not self.available(self.spec.version):
            self.s.message = self.missing_version_message(self.spec.version)
            return
        if not self.backend_known:
            return
        self.s.stable_version, self.s.phase = self.spec.version, Phase.Stable
        self.record(self.spec.version, "Deployed", "first version of this deployment")

    def missing_version_message(self, version: str) -> str:
        return f"waiting for a ModelVersion of model {self.spec.model} with version {version}"

    def handle_request(self, request: Request) -> None:
        """Carry out (or refuse) a request once; a Promote waits while the backend cannot be read."""
        s = self.s
        actor = request.actor or "unknown"
        active = s.phase in ACTIVE and s.canary_version is not None
        if request.action is Action.Promote and active and not self.backend_known:
            s.message = f"Promote ({request.id}) waits: the backend's readiness cannot be read"
            return
        if request.action is Action.Retry and s.stable_version is not None and not self.ready(s.stable_version):
            s.message = f"Retry ({request.id}) waits for stable {s.stable_version} to serve"
            return
        s.handled_requests = (s.handled_requests + [request.id])[-HANDLED_REQUESTS_KEPT:]
        if s.stable_version is None:
            self.ignore(request, "nothing is deployed yet")
        elif request.action is Action.Promote and active and self.ready(s.canary_version):
            self.promote(f"manual promotion: {request.reason}", actor)
        elif request.action is Action.Abort and active:
            self.roll_back("Aborted", f"manual abort: {request.reason}", actor=actor)
        elif request.action is Action.Abort and s.drill is not None:
            self.end_drill(DrillResult.Interrupted, f"manual abort: {request.reason}", actor=actor)
        elif request.action is Action.Rollback:
            if s.drill is not None:
                self.end_drill(DrillResult.Interrupted, "a manual rollback was requested", actor=actor)
            self.rollback_to(request, actor)
        elif request.action is Action.Drill:
            self.start_drill(request, actor)
        elif request.action is Action.Retry and s.phase is Phase.RolledBack and s.failed_version == self.spec.version:
            self.start_rollout(self.spec.version, f"manual retry: {request.reason}", actor)
        else:
            self.ignore(request, f"nothing to {request.action.value.lower()} in phase {s.phase.value if s.phase else 'none'}")

    def rollback_to(self, request: Request, actor: str) -> None:
        s = self.s
        target = request.version or s.fallback_version
        if target is None or target not in s.retained_versions:
            self.ignore(request, f"version {target} is not retained for rollback (retained: {s.retained_versions})")
            return
        self.clear_candidate()
        previous = s.stable_version
        assert previous is not None
        self.retain(previous, instead_of=target)
        s.stable_version = target
        # Rolled back away from spec.version, it stays so until spec.version changes; onto it, it is just stable.
        s.failed_version = self.spec.version if self.spec.version != target else None
        s.phase = Phase.RolledBack if s.failed_version else Phase.Stable
        words = f"manual rollback from {previous}: {request.reason}"
        if self.obs.refused is not None:  # said only when untrue: the usual words name no split
            words += f"; {self.on_stable(target)}"
        self.record(target, "RolledBack", words, actor=actor, warning=True)

    # --- rollback drills ---------------------------------------------------------------------

    def drill_refusal(self) -> str | None:
        """Why a Drill request cannot run now; None: it can."""
        s, spec = self.s, self.spec
        fallback = s.fallback_version
        if s.drill is not None:
            return f"a drill to {s.drill.fallback_version} is already in progress"
        if s.phase is not Phase.Stable:
            return f"a drill runs only in phase Stable (phase is {s.phase.value if s.phase else 'none'})"
        if spec.version != s.stable_version:
            return f"spec.version {spec.version} is not stable {s.stable_version}: a rollout is pending"
        if spec.traffic_override is not None:
            return "spec.trafficOverride is set"
        if spec.paused:
            return "spec.paused is set"
        if fallback is None or fallback not in s.retained_versions:
            return f"no fallback version is retained (retained: {s.retained_versions})"
        if not self.available(fallback):
            return f"fallback {fallback} has no valid ModelVersion"
        if not self.backend_known:
            return "the backend's readiness cannot be read"
        if not self.ready(s.stable_version):
            return f"stable {s.stable_version} is not serving on the backend"
        return None

    def start_drill(self, request: Request, actor: str) -> None:
        """The one place a drill begins: the fallback is deployed beside stable, at 0 % until the backend has it ready."""
        s = self.s
        why = self.drill_refusal()
        if why is not None:
            self.ignore(request, why)
            return
        assert s.fallback_version is not None and s.stable_version is not None
        s.drill = DrillStatus(fallback_version=s.fallback_version, returns_to=s.stable_version,
                              started_at=rfc3339(self.now), actor=actor, reason=request.reason)
        s.phase = Phase.Drilling
        self.record(s.fallback_version, "DrillStarted",
                    f"rollback drill: all traffic to fallback {s.fallback_version}, then back to stable "
                    f"{s.stable_version}: {request.reason}", actor=actor)
        self.drill_step()  # a fallback already ready takes all traffic in this very decision

    def end_drill(self, result: DrillResult, why: str, *, at: datetime | None = None, actor: str = "modelops") -> None:
        """The one place a drill ends: its figures go to lastDrill, and all traffic is on stable (intent_of)."""
        s, d = self.s, self.s.drill
        assert d is not None
        ended = at or self.now
        to_fallback = seconds_between(d.started_at, d.on_fallback_at)
        back = seconds_between(d.returning_at, rfc3339(ended)) if result is DrillResult.Completed else None
        due = ended + timedelta(seconds=duration_seconds(analysis_window(self.spec)))
        s.last_drill = LastDrill(fallback_version=d.fallback_version, returned_to=d.returns_to, started_at=d.started_at,
                                 ended_at=rfc3339(ended), seconds_to_fallback=to_fallback, seconds_back=back,
                                 requests_lost_due=rfc3339(due), result=result, message=why, actor=d.actor,
                                 reason=d.reason)
        s.drill = None
        s.phase = Phase.Stable
        if result is DrillResult.Completed:
            self.record(d.fallback_version, "DrillCompleted",
                        f"{why}; requests lost measured after {rfc3339(due)} (status.lastDrill)", actor=actor)
        else:
            self.record(d.fallback_version, "DrillInterrupted",
                        f"{why}; {self.on_stable(d.returns_to)}", actor=actor, warning=True)

    def take_drill_loss(self) -> None:
        """The one place the last drill's requests lost are recorded (measured by the shell, once)."""
        s, loss = self.s, self.obs.drill_loss
        last = s.last_drill
        if loss is None or last is None or last.requests_lost_due is None or loss.started_at != last.started_at:
            return
        s.last_drill = last.model_copy(update={"requests_lost": loss.lost, "requests_lost_due": None,
                                               "requests_lost_note": None if loss.lost is not None else loss.note})
        words = f"{loss.lost} requests lost" if loss.lost is not None else f"requests lost {loss.note}"
        self.events.append(Event("Normal", "DrillRequestsLost", f"{last.fallback_version}: drill of {last.started_at}: "
                                 f"{words}", last.fallback_version, last.actor))

    def carried_since(self, intent: TrafficIntent, since: str) -> datetime | None:
        """When the backend was seen carrying `intent`, if it was at or after `since`."""
        carried = self.obs.carried
        if carried is None or carried.intent != intent or carried.at < parse_rfc3339(since):
            return None
        return carried.at

    def guard_drill(self) -> None:
        """A drill gives way at once to anything a person asks of the deployment, and to a fallback that is gone."""
        spec, d = self.spec, self.s.drill
        if d is None:
            return
        why = None
        if spec.version != d.returns_to:
            why = f"spec.version changed to {spec.version}"
        elif spec.traffic_override is not None:
            why = "spec.trafficOverride was set"
        elif spec.paused:
            why = "spec.paused was set"
        elif not self.available(d.fallback_version):
            why = f"fallback {d.fallback_version} lost its ModelVersion"
        if why is not None:
            self.end_drill(DrillResult.Interrupted, why)

    def drill_step(self) -> None:
        """One round of a drill; its message says where it stands, every round (so that a replay says the same)."""
        self.advance_drill()
        d = self.s.drill
        if d is None:
            return
        fallback, stable = d.fallback_version, d.returns_to
        if d.returning_at is not None:
            self.s.message = f"drill: sending all traffic back to stable {stable}"
        elif d.on_fallback_at is not None:
            self.s.message = (f"drill: all traffic on fallback {fallback} since {d.on_fallback_at}, back to stable "
                              f"{stable} after {drill_hold_seconds(self.spec):g}s")
        elif d.routed_at is not None:
            self.s.message = f"drill: sending all traffic to fallback {fallback}"
        else:
            self.s.message = f"drill: waiting for fallback {fallback} to be ready on the backend (no traffic yet)"

    def advance_drill(self) -> None:
        """Fallback ready -> all traffic on it; carried -> held one interval (60 s at most); then back to stable;
        carried -> done. Interrupted when the fallback stops being ready, or past MAX_DRILL_SECONDS."""
        s, d = self.s, self.s.drill
        assert d is not None and s.stable_version is not None
        fallback = d.fallback_version
        if (self.now - parse_rfc3339(d.started_at)).total_seconds() >= MAX_DRILL_SECONDS:
            stage = "back on stable" if d.returning_at else "on the fallback and back"
            self.end_drill(DrillResult.Interrupted, f"not {stage} within {MAX_DRILL_SECONDS:g}s")
            return
        if d.returning_at is None:
            if d.routed_at is None:
                if not self.ready(fallback):
                    return
                d.routed_at = rfc3339(self.now)
            elif self.backend_known and not self.ready(fallback):
                self.end_drill(DrillResult.Interrupted, f"fallback {fallback} is no longer ready on the backend")
                return
            if d.on_fallback_at is None:
                seen = self.carried_since(TrafficIntent(s.stable_version, fallback, 100), d.routed_at)
                if seen is None:
                    return
                d.on_fallback_at = rfc3339(seen)
                self.record(fallback, "DrillOnFallback",
                            f"all traffic on fallback {fallback} {seconds_between(d.started_at, d.on_fallback_at):g}s "
                            "after the drill started", actor=d.actor)
            held = (self.now - parse_rfc3339(d.on_fallback_at)).total_seconds()
            if held < drill_hold_seconds(self.spec):
                return
            d.returning_at = rfc3339(self.now)
        back = self.carried_since(TrafficIntent(s.stable_version), d.returning_at)
        if back is not None:
            to_fallback = seconds_between(d.started_at, d.on_fallback_at)
            self.end_drill(DrillResult.Completed,
                           f"{to_fallback:g}s to all traffic on fallback {fallback}, "
                           f"{seconds_between(d.returning_at, rfc3339(back)):g}s back to stable {s.stable_version}",
                           at=back, actor=d.actor)

    def ignore(self, request: Request, why: str) -> None:
        self.events.append(Event("Warning", "RequestIgnored", f"{request.action.value} ({request.id}): {why}",
                                 request.version, request.actor or "unknown"))

    def follow_spec_version(self) -> None:
        s, target = self.s, self.spec.version
        if s.canary_version is not None and target != s.canary_version:
            old = s.canary_version
            self.clear_candidate()
            s.phase = Phase.Stable
            self.record(old, "Superseded", f"spec.version changed to {target}")
        if s.canary_version is not None:
            return
        if target == s.stable_version:
            if s.drill is not None:
                return  # drilling: stable stays what it is (guard_drill ends a drill spec.version left)
            if s.phase is not Phase.Stable or s.failed_version is not None:
                s.phase, s.failed_version = Phase.Stable, None
                s.message = f"spec.version is back on stable {target}"
        elif target == s.failed_version:
            s.phase = Phase.RolledBack  # stays rolled back until spec.version changes or a Retry
        elif not self.available(target):
            self.cannot_start(self.missing_version_message(target))
        elif not self.ready(s.stable_version):
            # A backend not yet serving stable has nothing to fall back on: on KServe the candidate
            # would take everything (no rolled-out revision to keep the rest).
            self.cannot_start(f"waiting for stable {s.stable_version} to serve before rolling out {target}")
        elif self.obs.queued is not None:
            if s.phase is not Phase.Queued:
                self.events.append(Event("Normal", "Queued", f"{target}: {self.obs.queued}", target))
            s.phase, s.message = Phase.Queued, f"{target} {self.obs.queued}"
        else:
            self.start_rollout(target, f"spec.version changed from {s.stable_version}")

    def cannot_start(self, why: str) -> None:
        """A rollout that cannot start holds no place in the queue for rollout slots, where it would keep the
        deployments behind it waiting: it leaves it, and queues anew, last, once it can start."""
        if self.s.phase is Phase.Queued:
            self.s.phase = Phase.Stable
        self.s.message = why

    def ingest_analysis(self) -> Outcome | None:
        """Take a new analysis into account once; a replayed one is ignored."""
        s, report = self.s, self.obs.analysis
        if report is None or (s.last_analysis_at is not None and report.at <= parse_rfc3339(s.last_analysis_at)):
            return None
        assert s.analysis_since is not None
        served = (report.at - parse_rfc3339(s.analysis_since)).total_seconds()
        by_name = {c.name: c for c in self.spec.analysis.checks}
        results = [spend_budget(by_name[r.name], r, served) if r.name in by_name else r for r in report.results]
        s.last_analysis_at, s.checks = rfc3339(report.at), results
        deciding = [c for c in checks_in_effect(self.spec, s) if not c.dry_run]
        judged = [c for c in deciding if grading_until(self.spec, s, c, report.at) is None]
        names = {c.name for c in judged}
        result = outcome(judged, [r for r in results if r.name in names])
        # A check still waiting for its labels is no missing data; but nothing passes before it has judged.
        waiting = len(judged) < len(deciding) and result is Outcome.Passed
        for r in results:
            if r.dry_run and r.verdict is Verdict.Fail:
                self.events.append(Event("Warning", "DryRunCheckFailed",
                                         f"{r.name} would have failed the analysis (dry run): {r.message}", s.canary_version))
        if waiting:
            result = Outcome.Inconclusive
        else:
            streaks, result = count_analysis(Streaks(s.consecutive_failures, s.consecutive_no_data), result,
                                             self.spec.analysis.no_data_limit,
                                             no_data_counts=result is Outcome.Inconclusive and self.no_data_counts(report.at))
            s.consecutive_failures, s.consecutive_no_data = streaks.failures, streaks.no_data
        if result is Outcome.Failed:
            self.events.append(Event("Warning", "AnalysisFailed", self.explain(result), s.canary_version))
        s.last_outcome = result
        return result

    def explain(self, result: Outcome) -> str:
        s = self.s
        failing = [f"{c.name}: {c.message}" for c in s.checks if c.verdict is not Verdict.Pass and not c.dry_run]
        detail = "; ".join(failing) or "all checks passed"
        if s.consecutive_no_data >= self.spec.analysis.no_data_limit:
            detail = f"inconclusive {s.consecutive_no_data} times in a row ({detail})"
        return f"{result.value} ({s.consecutive_failures}/{self.spec.analysis.failure_limit}): {detail}"

    def follow_manual_holds(self) -> None:
        s, spec = self.s, self.spec
        version = s.canary_version or s.stable_version or spec.version
        if spec.paused != s.paused:
            s.paused = spec.paused
            self.record(version, "Paused" if spec.paused else "Resumed", "spec.paused set to " + str(spec.paused).lower(), actor="spec")
        pinned = spec.traffic_override.weight if spec.traffic_override else None
        if pinned != s.pinned_weight:
            s.pinned_weight = pinned
            if spec.traffic_override:
                self.record(version, "ManualOverride", f"weight pinned at {pinned}%: {spec.traffic_override.reason}", actor="spec")
            else:
                self.record(version, "ManualOverride", "pinned weight removed; steps resume", actor="spec")

    def progress(self, result: Outcome | None) -> None:
        """Advance, hold, or roll back the candidate in flight."""
        s, spec = self.s, self.spec
        candidate = s.canary_version
        assert candidate is not None
        if not self.available(candidate):
            self.finish_rollback("RolledBack", f"its ModelVersion is gone or invalid ({self.missing_version_message(candidate)})")
            return
        if s.phase is Phase.RollingBack:
            self.step_back(result)
            return
        if s.pinned_weight is not None:
            # The SRE holds the wheel: no steps, no automatic rollback, the analysis is reported only.
            s.phase = Phase.Paused
            if self.backend_known:
                self.route_to_candidate(Step(weight=s.pinned_weight) if s.pinned_weight and self.ready(candidate) else None)
            if s.canary_weight > 0:
                s.analysis_since = s.analysis_since or rfc3339(self.now)
            return
        if result is Outcome.Failed and s.consecutive_failures >= spec.analysis.failure_limit:
            self.roll_back("RolledBack", self.explain(result), progressive=spec.strategy.rollback is RollbackMode.Progressive)
            return
        s.phase = Phase.Paused if s.paused else Phase.Progressing
        if not self.backend_known:
            return  # readiness unknown: no step moves either way until the backend can be read
        if not self.ready(candidate):
            self.wait_for_ready(candidate)
            return
        if s.waiting_since is not None:
            s.waiting_since, s.message = None, f"{candidate} is ready on the backend"
        if self.obs.refused is not None:
            return  # routing the operator does not wholly drive: no step moves forward
        if s.step_started_at is None:
            if s.paused:  # paused before its first step: it takes nothing until resumed
                s.message = f"{candidate} is ready on the backend; paused before step 1"
                return
            self.enter_step(self.step_index())
            return
        s.current_step = self.step_index()
        self.route_to_candidate(self.canary_steps()[s.current_step])
        if not s.paused and self.step_done():
            self.advance()

    def wait_for_ready(self, candidate: str) -> None:
        s, timeout = self.s, self.spec.strategy.ready_timeout
        self.route_to_candidate(None)
        s.waiting_since = s.waiting_since or rfc3339(self.now)
        if (self.now - parse_rfc3339(s.waiting_since)).total_seconds() >= duration_seconds(timeout):
            s.waiting_since = None
            self.roll_back("RolledBack", f"not ready on the backend within strategy.readyTimeout {timeout}")
        else:
            s.message = f"waiting for {candidate} to become ready on the backend (since {s.waiting_since})"

    def step_done(self) -> bool:
        s = self.s
        assert s.step_started_at is not None and s.current_step is not None
        pause = duration_seconds(self.canary_steps()[self.step_index()].pause)
        elapsed = (self.now - parse_rfc3339(s.step_started_at)).total_seconds()
        return elapsed >= pause and s.last_outcome is Outcome.Passed and s.last_analysis_at is not None \
            and self.of_own_traffic(parse_rfc3339(s.last_analysis_at))

    def of_own_traffic(self, at: datetime) -> bool:
        """Whether an analysis whose window ends at `at` measured the traffic this step routes: the backend is seen
        carrying the step's routing, and either took it within ROUTING_GRACE_SECONDS of the decision or before that
        analysis's window began. A step whose write landed late is not judged on the previous step's traffic."""
        s, carried = self.s, self.obs.carried
        assert s.step_started_at is not None
        if carried is None or carried.intent != intent_of(s):
            return False
        started = parse_rfc3339(s.step_started_at)
        if (carried.at - started).total_seconds() <= ROUTING_GRACE_SECONDS:
            return True
        window = timedelta(seconds=duration_seconds(analysis_window(self.spec)))
        return at - window >= carried.at

    def no_data_counts(self, at: datetime) -> bool:
        """Whether an inconclusive analysis whose window ends at `at` counts toward noDataLimit: it measured this
        step's own traffic (a candidate not yet routed has no requests to measure), or the step's routing has had
        strategy.readyTimeout since the step's decision to be seen carried, so that a step the backend never
        carries still ends; and always while no step is being judged (a pinned weight, a progressive rollback,
        which no data ends sooner)."""
        s = self.s
        if s.step_started_at is None or s.phase is Phase.RollingBack or s.pinned_weight is not None:
            return True
        if self.of_own_traffic(at):
            return True
        waited = (at - parse_rfc3339(s.step_started_at)).total_seconds()
        return waited >= duration_seconds(self.spec.strategy.ready_timeout)

    def advance(self) -> None:
        s = self.s
        assert s.current_step is not None
        steps = self.canary_steps()
        if s.current_step + 1 >= len(steps):
            last = steps[s.current_step]
            self.promote(f"analysis passed at every step up to {f'{last.weight}%' if last.weight else step_words(last)}")
            return
        self.enter_step(s.current_step + 1)

    def step_back(self, result: Outcome | None) -> None:
        """Progressive rollback: one step down per analysis; a new failure drops to zero at once."""
        s = self.s
        if self.backend_known and not self.ready(s.canary_version):
            self.finish_rollback("RolledBack", "the candidate is no longer ready")
            return
        if result is None:
            return
        lower = self.lower_steps()
        if result is Outcome.Failed or not lower:
            self.finish_rollback("RolledBack", "progressive rollback finished" if result is not Outcome.Failed else self.explain(result))
            return
        self.route_to_candidate(lower[-1])
        s.message = f"rolling back {s.canary_version}: {s.canary_weight}% still on it"
        self.events.append(Event("Normal", "StepBack", s.message, s.canary_version))

    def lower_steps(self) -> list[Step]:
        """The weighted steps below the candidate's weight now: where a progressive rollback can step back to."""
        weight = self.s.canary_weight
        return [step for step in self.canary_steps() if step.weight is not None and step.weight < weight]

    def finish(self, before: ModelDeploymentStatus) -> Decision:
        s = self.s
        s.history = s.history[-self.spec.history_limit :]
        s.observed_generation = self.obs.generation
        s.conditions = conditions_for(s, before.conditions, self.obs.ready_versions, rfc3339(self.now),
                                      self.obs.serving_versions)
        pinned = pin_condition(s, before.conditions, self.obs.pins, rfc3339(self.now))
        if pinned is not None:
            s.conditions.append(pinned)
            if all(c.type != pinned.type for c in before.conditions):
                self.events.append(Event("Warning", pinned.reason, pinned.message, s.failed_version))
        return Decision(s, intent_of(s), tuple(self.events))


@dataclass(frozen=True)
class Streaks:
    """Consecutive failed and consecutive inconclusive analyses of the candidate, as its status counts them."""

    failures: int = 0
    no_data: int = 0


def count_analysis(streaks: Streaks, result: Outcome, no_data_limit: int, *,
                   no_data_counts: bool) -> tuple[Streaks, Outcome]:
    """One analysis counted: the streaks after it, and its outcome, Failed once `no_data_limit` inconclusive ones
    that count (`no_data_counts`) are in a row. Every other outcome had every check measured and ends a run of
    inconclusive ones: Undecided too, which holds the step without counting toward either limit; only Passed ends
    a run of failures."""
    failures, no_data = streaks.failures, streaks.no_data
    if result is Outcome.Inconclusive:
        if no_data_counts:
            no_data += 1
            if no_data >= no_data_limit:
                result = Outcome.Failed
    else:
        no_data = 0
    if result is Outcome.Failed:
        failures += 1
    elif result is Outcome.Passed:
        failures = 0
    return Streaks(failures, no_data), result


def intent_of(status: ModelDeploymentStatus) -> TrafficIntent | None:
    """The traffic intent a status stands for: what the operator applied last."""
    if status.stable_version is None:
        return None
    drill = status.drill
    if drill is not None and drill.returning_at is None:
        # The fallback beside stable: at 0 % until the backend has it ready, then everything.
        return TrafficIntent(status.stable_version, drill.fallback_version, 100 if drill.routed_at else 0)
    if status.canary_version is None:
        return TrafficIntent(status.stable_version)
    return TrafficIntent(status.stable_version, status.canary_version, status.canary_weight, status.canary_mirror,
                         tuple((h.name, h.value) for h in status.canary_match))


def drill_hold_seconds(spec: ModelDeploymentSpec) -> float:
    """How long a drill holds all traffic on the fallback once the backend carries it."""
    return min(DRILL_HOLD_CAP_SECONDS, duration_seconds(spec.analysis.interval))


def seconds_between(start: str | None, end: str | None) -> float | None:
    if start is None or end is None:
        return None
    return round((parse_rfc3339(end) - parse_rfc3339(start)).total_seconds(), 3)


HOT_SWAP = Step(weight=100, pause="0s")
"""HotSwap's one step: everything to the candidate, no pause (the first passed analysis promotes)."""


def steps_of(spec: ModelDeploymentSpec) -> list[Step]:
    return [HOT_SWAP] if spec.strategy.type is StrategyType.HotSwap else spec.strategy.steps


def step_words(step: Step) -> str:
    if step.mirror is not None:
        return f"mirroring {step.mirror}% of stable's requests"
    if step.match is not None:
        return "for the cohort " + ", ".join(f"{h.name}: {h.value}" for h in step.match.headers)
    return f"at {step.weight}%"


def sent_to_candidate(status: ModelDeploymentStatus) -> Step | None:
    """What the candidate is sent now, as a step (None: nothing)."""
    if status.canary_weight:
        return Step(weight=status.canary_weight)
    if status.canary_mirror:
        return Step(mirror=status.canary_mirror)
    return Step(match={"headers": status.canary_match}) if status.canary_match else None


def step_kind(status: ModelDeploymentStatus) -> StepKind:
    sent = sent_to_candidate(status)
    return sent.kind if sent else StepKind.weight


def checks_in_effect(spec: ModelDeploymentSpec, status: ModelDeploymentStatus) -> list[Check]:
    """The checks an analysis of the current step measures and judges (see Check.step_kinds)."""
    kind = step_kind(status)
    return [c for c in spec.analysis.checks if c.applies_to(kind)]


def grading_until(spec: ModelDeploymentSpec, status: ModelDeploymentStatus, check: Check, at: datetime) -> datetime | None:
    """When a check with a grading delay judges first in this rollout, if it is still waiting for labels at `at`;
    None when it judges at `at`. It judges once the candidate has served for a window and the delay: its window
    then holds labels of the candidate's own predictions."""
    if check.grading_delay is None or status.analysis_since is None:
        return None
    delay = duration_seconds(analysis_window(spec)) + duration_seconds(check.grading_delay)
    first = parse_rfc3339(status.analysis_since) + timedelta(seconds=delay)
    return first if at < first else None


def check_window(spec: ModelDeploymentSpec, status: ModelDeploymentStatus, check: Check, at: datetime) -> str:
    """A check's query range at `at`: the analysis window; for a sequential check, everything since the candidate
    began taking traffic (its evidence accumulates over the rollout), never less than the analysis window."""
    window = analysis_window(spec)
    if check.sequential is None or status.analysis_since is None:
        return window
    served = math.ceil((at - parse_rfc3339(status.analysis_since)).total_seconds())
    return f"{max(served, math.ceil(duration_seconds(window)))}s"


def rollout_wanted(spec: ModelDeploymentSpec, status: ModelDeploymentStatus) -> bool:
    """spec.version names a version that is neither stable nor the candidate: a round may start a rollout to it
    (so it needs a slot when the operator limits rollouts in flight)."""
    return status.stable_version is not None and spec.version not in (status.stable_version, status.canary_version)


def candidate_takes_traffic(status: ModelDeploymentStatus) -> bool:
    """Analyses count only then: waiting for a candidate to become ready is no verdict."""
    return status.canary_version is not None and status.analysis_since is not None


def analysis_window(spec: ModelDeploymentSpec) -> str:
    return spec.analysis.window or spec.analysis.interval


def seconds_to_next_analysis(spec: ModelDeploymentSpec, status: ModelDeploymentStatus, now: datetime) -> float | None:
    """0 when an analysis is due now, None when none is running (the candidate takes no traffic).

    The first window of a rollout starts when the candidate began taking traffic, so no verdict
    is ever taken on time before it had any; later ones follow every interval. Analyses fall due
    on whole seconds (see `analysis_instant`).
    """
    if not candidate_takes_traffic(status):
        return None
    assert status.analysis_since is not None
    due = parse_rfc3339(status.analysis_since).timestamp() + duration_seconds(analysis_window(spec))
    if status.last_analysis_at is not None:
        due = max(due, parse_rfc3339(status.last_analysis_at).timestamp() + duration_seconds(spec.analysis.interval))
    return max(0.0, math.ceil(due) - now.timestamp())


def analysis_instant(now: datetime) -> datetime:
    """The instant an analysis due by `now` measures: `now` to the whole second below. Analyses of many
    deployments taken within one second then ask Prometheus about the same instant, so their queries can
    share requests; and since they fall due on whole seconds, the instant is never before the due time."""
    return now.replace(microsecond=0)


def progress_deadline(spec: ModelDeploymentSpec, status: ModelDeploymentStatus) -> datetime | None:
    """When the candidate's current wait or step has run longer than the spec allows it; None when
    no rollout is moving on its own (none in flight, paused, pinned, rolling back).

    A wait for readiness is allowed `readyTimeout`; a step its pause, the first analysis window,
    the longest grading delay, the longest budget of an undecided sequential check, and one
    analysis more than the no-data and failure limits together can hold it. Past that,
    the operator is not making progress (it cannot write, the backend does not converge): an
    alert's business, not a rollback's. (A step whose routing the backend does not carry gets its
    rollback later: its no data counts only from `readyTimeout` after its decision.)
    """
    if status.phase is not Phase.Progressing or status.canary_version is None or status.pinned_weight is not None:
        return None
    if status.waiting_since is not None:
        return parse_rfc3339(status.waiting_since) + timedelta(seconds=duration_seconds(spec.strategy.ready_timeout))
    if status.step_started_at is None or status.current_step is None:
        return None
    steps = steps_of(spec)
    pause = duration_seconds(steps[min(status.current_step, len(steps) - 1)].pause)
    analyses = spec.analysis.no_data_limit + spec.analysis.failure_limit + 1
    grading = max((duration_seconds(c.grading_delay) for c in spec.analysis.checks if c.grading_delay), default=0.0)
    undecided = max((duration_seconds(c.sequential.max_duration) for c in spec.analysis.checks if c.sequential),
                    default=0.0)
    allowed = (pause + duration_seconds(analysis_window(spec)) + grading + undecided
               + analyses * duration_seconds(spec.analysis.interval))
    return parse_rfc3339(status.step_started_at) + timedelta(seconds=allowed)


def decide(spec: ModelDeploymentSpec, status: ModelDeploymentStatus, observations: Observations, now: datetime) -> Decision:
    """The whole rollout policy, one step at a time."""
    run = _Run(spec, status.model_copy(deep=True), observations, now)
    s = run.s
    run.take_drill_loss()
    if s.stable_version is None:
        run.bootstrap()
    if s.stable_version is not None:
        run.follow_manual_holds()
        run.guard_drill()  # a drill gives way before anything else moves
        # spec.version first, then the request: a request written after a version bump acts on the new candidate.
        run.follow_spec_version()
        if s.drill is not None:
            run.drill_step()  # before the request, whose words (a Retry waiting, say) are then the last
        if spec.request is not None and spec.request.id not in s.handled_requests:
            run.handle_request(spec.request)
    if s.canary_version is not None:
        run.progress(run.ingest_analysis() if candidate_takes_traffic(s) else None)
        if spec.request is not None and spec.request.id not in s.handled_requests:
            run.handle_request(spec.request)  # it waited on what progress changed (a promotion's stable is ready)
    run.restate_return_to_stable()
    return run.finish(status)


def fail_safe(spec: ModelDeploymentSpec, status: ModelDeploymentStatus, error: str, now: datetime,
              observations: Observations = Observations(ready_versions=None)) -> Decision:
    """The decision when a tick could not run to its end (an unexpected error), or ran under a spec the operator
    refuses: a candidate in flight goes back to stable unless an SRE pinned its weight, and a drill ends. Unsure
    means stable. `observations` are what the round saw of the backend (by default nothing), so that the status
    claims no more than that."""
    run = _Run(spec, status.model_copy(deep=True), observations, now)
    if run.s.drill is not None:
        run.end_drill(DrillResult.Interrupted, f"the operator could not evaluate it ({error})")
    if run.s.canary_version is not None and run.s.pinned_weight is None:
        run.finish_rollback("RolledBack", f"the operator could not evaluate it ({error})")
    run.restate_return_to_stable()  # an earlier return to stable says no more than the backend now carries
    return run.finish(status)
