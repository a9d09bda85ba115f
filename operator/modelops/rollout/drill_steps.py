"""A rollback drill, step by step, as part of one decision (engine._Run): all traffic to the fallback once the
backend has it ready, held there one analysis interval (at most DRILL_HOLD_CAP_SECONDS) once it is carried, then back
to stable; timed from what the backend was seen carrying, and interrupted by anything a person asks of the deployment,
a fallback that stops being ready or is gone, or MAX_DRILL_SECONDS. Pure."""

from __future__ import annotations

from datetime import datetime, timedelta

from ..api.modeldeployment import (DrillResult, DrillStatus, LastDrill, ModelDeploymentSpec, ModelDeploymentStatus,
                                   Phase, Request)
from ..api.types import duration_seconds
from .plan import analysis_window, drill_hold_seconds, seconds_between
from .values import MAX_DRILL_SECONDS, Event, Observations, TrafficIntent, parse_rfc3339, rfc3339


class DrillSteps:
    """The drill's part of one decision; mixed into engine._Run, whose state and bookkeeping it uses."""

    spec: ModelDeploymentSpec
    s: ModelDeploymentStatus
    obs: Observations
    now: datetime
    events: list[Event]

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
        if self.obs.holds_rollouts is not None:
            return f"the backend holds rollouts: {self.obs.holds_rollouts}"
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
