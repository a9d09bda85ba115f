"""What a spec and a status say, read without deciding anything: the steps and what a step sends to the candidate,
the checks in effect and their windows, when the next analysis is due, how analyses count, the traffic intent a
status stands for, and the rollout's progress deadline. Pure."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..api.modeldeployment import (Check, ModelDeploymentSpec, ModelDeploymentStatus, Outcome, Phase, Step, StepKind,
                                   StrategyType)
from ..api.types import duration_seconds
from .values import DRILL_HOLD_CAP_SECONDS, TrafficIntent, parse_rfc3339


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
    warm = tuple(w.version for w in status.warm_versions)
    drill = status.drill
    if drill is not None and drill.returning_at is None:
        # The fallback beside stable: at 0 % until the backend has it ready, then everything.
        return TrafficIntent(status.stable_version, drill.fallback_version, 100 if drill.routed_at else 0, warm=warm)
    if status.canary_version is None:
        return TrafficIntent(status.stable_version, warm=warm)
    return TrafficIntent(status.stable_version, status.canary_version, status.canary_weight, status.canary_mirror,
                         tuple((h.name, h.value) for h in status.canary_match), warm)


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
    then counts only predictions made since the candidate began serving."""
    if check.grading_delay is None or status.analysis_since is None:
        return None
    delay = duration_seconds(analysis_window(spec)) + grading_seconds(check)
    first = parse_rfc3339(status.analysis_since) + timedelta(seconds=delay)
    return first if at < first else None


def check_window(spec: ModelDeploymentSpec, status: ModelDeploymentStatus, check: Check, at: datetime) -> str:
    """A check's query range at `at`: the analysis window; for a sequential check, everything since the candidate
    began taking traffic (its evidence accumulates over the rollout), never less than the analysis window. With a
    grading delay the range starts that delay later: its metrics count each prediction once it is that old, so
    what they counted before were predictions made before the candidate served."""
    window = analysis_window(spec)
    if check.sequential is None or status.analysis_since is None:
        return window
    since = parse_rfc3339(status.analysis_since) + timedelta(seconds=grading_seconds(check))
    served = math.ceil((at - since).total_seconds())
    return f"{max(served, math.ceil(duration_seconds(window)))}s"


def grading_seconds(check: Check) -> float:
    return duration_seconds(check.grading_delay) if check.grading_delay else 0.0


def grading_lag(spec: ModelDeploymentSpec, status: ModelDeploymentStatus) -> float:
    """The longest grading delay (seconds) of the checks in effect that take part in decisions: how long after a
    prediction the last of them counts it."""
    return max((grading_seconds(c) for c in checks_in_effect(spec, status) if not c.dry_run), default=0.0)


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
    grading = max((grading_seconds(c) for c in spec.analysis.checks), default=0.0)
    undecided = max((duration_seconds(c.sequential.max_duration) for c in spec.analysis.checks if c.sequential),
                    default=0.0)
    allowed = (pause + duration_seconds(analysis_window(spec)) + grading + undecided
               + analyses * duration_seconds(spec.analysis.interval))
    return parse_rfc3339(status.step_started_at) + timedelta(seconds=allowed)
