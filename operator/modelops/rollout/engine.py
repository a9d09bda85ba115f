"""decide(spec, status, observations, now) -> Decision(status, traffic intent, events).

No I/O and no clock: time, metric verdicts and backend readiness come in as arguments, so
every transition is unit-testable and a restarted operator resumes from status alone.
Feeding the returned status back with the same observations changes nothing (a fixed
point), which is what makes a crash between "write traffic" and "write status" harmless.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ..analysis.evaluate import alpha_split, outcome, sequential_checks, spend_budget
from ..api.modeldeployment import (Action, CheckStatus, DrillResult, HistoryEntry, ModelDeploymentSpec,
                                   ModelDeploymentStatus, Outcome, Phase, Request, RollbackMode, Step, Verdict,
                                   WarmVersion)
from ..api.types import duration_seconds
from .conditions import WARM_FALLBACKS, conditions_for, pin_condition, warm_condition
from .drill_steps import DrillSteps
from .plan import (Streaks, analysis_window, candidate_takes_traffic, checks_in_effect, count_analysis, grading_lag,
                   grading_seconds, grading_until, intent_of, step_words, steps_of)
from .values import (ACTIVE, BACKEND_REFUSES, BACKEND_UNREAD, HANDLED_REQUESTS_KEPT, ON_STABLE, ROUTING_GRACE_SECONDS,
                     Decision, Event, Observations, parse_rfc3339, rfc3339)


@dataclass
class _Run(DrillSteps):
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
        claim = stable_claim(s.message)
        if claim is None:
            return
        head, said = claim
        if self.obs.refused is not None:
            s.message = head + BACKEND_REFUSES + self.obs.refused
        elif said != ON_STABLE and self.obs.carried is not None and self.obs.carried.intent == intent:
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
        elif request.action is Action.Retry and s.phase is Phase.RolledBack and s.failed_version == self.spec.version \
                and self.obs.holds_rollouts is not None:
            self.ignore(request, f"the backend holds rollouts: {self.obs.holds_rollouts}")
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
        if not self.available(target) and not self.ready(target):
            # Nothing to deploy it from, nothing serving it: persisted as done, the status would lie (G1).
            self.ignore(request, f"version {target} cannot be rolled back to: "
                                 f"{self.missing_version_message(target)}, and the backend does not serve it")
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

    def ignore(self, request: Request, why: str) -> None:
        self.events.append(Event("Warning", "RequestIgnored", f"{request.action.value} ({request.id}): {why}",
                                 request.version, request.actor or "unknown"))

    def follow_spec_version(self, refused: bool = False) -> None:
        """`refused`: spec.version is the last accepted one, perhaps written over since; it may still take a
        candidate off, but a failure it finds stands (an Abort just carried out, say) until a spec is accepted."""
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
            if refused and s.failed_version is not None:
                return
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
        elif self.obs.holds_rollouts is not None:
            self.cannot_start(f"{target} cannot start: {self.obs.holds_rollouts}")
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
        results = self.spend_budgets(report.results, served)
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

    def spend_budgets(self, results: tuple[CheckStatus, ...], served: float) -> list[CheckStatus]:
        """The checks' statuses with their budgets spent (see spend_budget); a budget not expected to reach a verdict
        is said in a Warning event once per rollout and check (budget_warned carries that on from the last
        analysis)."""
        by_name = {c.name: c for c in self.spec.analysis.checks}
        warned = {c.name for c in self.s.checks if c.budget_warned}
        split = sequential_checks(self.spec.analysis.checks)
        spent = []
        for r in results:
            check = by_name.get(r.name)
            if check is not None:
                r = spend_budget(check, r, served, evidence_seconds=served - grading_seconds(check),
                                 split=alpha_split(check, split))
            if r.budget_warning is not None and r.name not in warned:
                self.events.append(Event("Warning", "BudgetTooSmall", f"{r.name}: {r.budget_warning}",
                                         self.s.canary_version))
            spent.append(r.model_copy(update={"budget_warned": r.name in warned or r.budget_warning is not None}))
        return spent

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
            and self.graded_own_traffic(parse_rfc3339(s.last_analysis_at))

    def graded_own_traffic(self, at: datetime) -> bool:
        """Whether the analysis at `at` judged this step's own traffic: `of_own_traffic`, and in a check with a
        grading delay, whose metrics count a prediction only that long after it, a whole window of predictions made
        since the step began. A weight change thus holds the step for the window and the delay; evidence from
        before it still fails a check (a worse candidate is worse at any weight), it passes no step."""
        lag = grading_lag(self.spec, self.s)
        if not lag:
            return self.of_own_traffic(at)
        assert self.s.step_started_at is not None
        judged_until = at - timedelta(seconds=lag)
        window = timedelta(seconds=duration_seconds(analysis_window(self.spec)))
        return self.of_own_traffic(judged_until) and judged_until - window >= parse_rfc3339(self.s.step_started_at)

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

    def keep_warm(self) -> None:
        """The retained versions the backend is to keep deployed with no traffic: the newest spec.keepWarm of them
        that are neither stable nor routed to (a candidate, a drill's fallback until the drill turns back), each with
        whether the backend reports it ready; none where it keeps none. A version without its ModelVersion stays only
        while the backend reports it ready. Unread, the backend adds none, and each keeps its readiness as last
        seen."""
        s, obs = self.s, self.obs
        if obs.keeps_no_warm is not None:
            s.warm_versions = []
            return
        routed = {s.stable_version, s.canary_version,
                  s.drill.fallback_version if s.drill and s.drill.returning_at is None else None}
        wanted = [v for v in s.retained_versions[: self.spec.keep_warm]
                  if v not in routed and (self.available(v) or v in obs.warm_ready)]
        if not self.backend_known:
            s.warm_versions = [w for w in s.warm_versions if w.version in wanted]
            return
        s.warm_versions = [WarmVersion(version=v, ready=v in obs.warm_ready) for v in wanted]

    def finish(self, before: ModelDeploymentStatus, *, judged: bool = True) -> Decision:
        """`judged` False (fail_safe): the spec may be a stand-in that says nothing of warm versions, and warm
        versions carry no traffic, so they and their condition stay as they were."""
        s = self.s
        s.history = s.history[-self.spec.history_limit :]
        s.observed_generation = self.obs.generation
        if judged:
            self.keep_warm()
        s.conditions = conditions_for(s, before.conditions, self.obs.ready_versions, rfc3339(self.now),
                                      self.obs.serving_versions)
        warm = warm_condition(s, self.spec.keep_warm, self.obs.keeps_no_warm, self.backend_known, before.conditions,
                              rfc3339(self.now)) if judged else \
            next((c for c in before.conditions if c.type == WARM_FALLBACKS), None)
        if warm is not None:
            s.conditions.append(warm)
        pinned = pin_condition(s, before.conditions, self.obs.pins, rfc3339(self.now))
        if pinned is not None:
            s.conditions.append(pinned)
            if all(c.type != pinned.type for c in before.conditions):
                self.events.append(Event("Warning", pinned.reason, pinned.message, s.failed_version))
        return Decision(s, intent_of(s), tuple(self.events))


def decide(spec: ModelDeploymentSpec, status: ModelDeploymentStatus, observations: Observations, now: datetime, *,
           refused: bool = False) -> Decision:
    """The whole rollout policy, one step at a time. `refused`: `spec` is the last one accepted, with the SRE
    fields of a newer one the operator refuses; its version may be one the user has written over since."""
    run = _Run(spec, status.model_copy(deep=True), observations, now)
    s = run.s
    run.take_drill_loss()
    if s.stable_version is None:
        run.bootstrap()
    if s.stable_version is not None:
        run.follow_manual_holds()
        run.guard_drill()  # a drill gives way before anything else moves
        abort = spec.request if spec.request is not None and spec.request.action is Action.Abort else None
        if refused and abort is not None and abort.id not in s.handled_requests:
            run.handle_request(abort)  # G4: on the candidate in flight, not after an older version superseded it
        # spec.version first, then the request: a request written after a version bump acts on the new candidate.
        run.follow_spec_version(refused)
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
              observations: Observations = Observations(ready_versions=None), *,
              abort: Request | None = None) -> Decision:
    """The decision when a tick could not run to its end (an unexpected error), or ran under a spec the operator
    refuses: a candidate in flight goes back to stable unless an SRE pinned its weight, and a drill ends. Unsure
    means stable. `observations` are what the round saw of the backend (by default nothing), so that the status
    claims no more than that. An `abort` request not yet handled is carried out first, as decide would: a pin
    does not keep a candidate an SRE aborted."""
    run = _Run(spec, status.model_copy(deep=True), observations, now)
    if abort is not None and abort.id not in run.s.handled_requests:
        run.handle_request(abort)
    if run.s.drill is not None:
        run.end_drill(DrillResult.Interrupted, f"the operator could not evaluate it ({error})")
    if run.s.canary_version is not None and run.s.pinned_weight is None:
        run.finish_rollback("RolledBack", f"the operator could not evaluate it ({error})")
    run.restate_return_to_stable()  # an earlier return to stable says no more than the backend now carries
    return run.finish(status, judged=False)


def stable_claim(message: str | None) -> tuple[str, str] | None:
    """A return to stable's message split before its last words on the backend (ON_STABLE, BACKEND_REFUSES or
    BACKEND_UNREAD), and those words; None when it makes no such claim."""
    said = next((words for words in (BACKEND_REFUSES, BACKEND_UNREAD, ON_STABLE) if words in (message or "")), None)
    return None if message is None or said is None else (message.rsplit(said, 1)[0], said)


def unread(status: ModelDeploymentStatus, why: str) -> ModelDeploymentStatus:
    """The status when its backend cannot even be named (`why`): an earlier return to stable no longer claims what
    the backend carries, since a rule added meanwhile may route anywhere; it says so again once the backend is seen
    carrying all of it (restate_return_to_stable)."""
    claim = stable_claim(status.message)
    if claim is None or intent_of(status) is None or intent_of(status).candidate is not None:
        return status
    return status.model_copy(update={"message": claim[0] + BACKEND_UNREAD + why})
