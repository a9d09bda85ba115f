"""Kubernetes-style conditions derived from the rollout status (pure).

Argo CD's health and `kubectl wait --for=condition=Ready` read these, so they follow the
usual convention: the transition time moves only when the condition's status flips.
"""

from __future__ import annotations

from typing import Mapping

from ..api.modeldeployment import ModelDeploymentStatus, Outcome, Phase
from ..api.modelversion import Condition


def _wanted(s: ModelDeploymentStatus, ready_versions: frozenset[str] | None,
            serving_versions: frozenset[str]) -> list[tuple[str, bool | None, str, str]]:
    """(type, status, reason, message); a status of None means Unknown."""
    phase = s.phase.value if s.phase else "Unknown"
    serving = s.stable_version
    if s.drill is not None and ready_versions is not None and s.stable_version not in ready_versions \
            and s.drill.fallback_version in ready_versions:
        serving = s.drill.fallback_version  # a rollback drill: the fallback serves (KServe: stable's revision waits)
    stable_ready = None if ready_versions is None else serving in ready_versions | serving_versions
    rolling = s.phase in (Phase.Progressing, Phase.Paused, Phase.RollingBack)
    # A queued rollout is a change still to come; a drill is one under way.
    progressing = rolling or s.phase in (Phase.Queued, Phase.Drilling)
    degraded = s.phase in (Phase.RolledBack, Phase.Failed)
    analysis = {Outcome.Passed: True, Outcome.Failed: False, Outcome.Inconclusive: None,
                Outcome.Undecided: None}.get(s.last_outcome, True) \
        if rolling else True
    message = s.message or ""
    ready_words = {True: ("StableServing", "serving"), False: ("BackendNotReady", "not ready on the backend"),
                   None: ("BackendUnknown", "of unknown readiness: the backend could not be read")}[stable_ready]
    return [
        ("Ready", stable_ready, ready_words[0], (f"stable {s.stable_version}" if serving == s.stable_version else
                                                 f"fallback {serving} (rollback drill)") + f" is {ready_words[1]}"),
        ("Progressing", progressing, phase, message if progressing else f"no rollout in progress ({phase})"),
        ("Degraded", degraded, phase, message if degraded else "not degraded"),
        ("AnalysisHealthy", analysis, (s.last_outcome.value if s.last_outcome and rolling else "NoRollout"),
         "; ".join(f"{c.name}={c.value} ({c.verdict.value}, limit {c.limit})" for c in s.checks) if rolling else "no analysis running"),
    ]


def _condition(type_: str, state: bool | None, reason: str, message: str, previous: Condition | None, now: str,
               generation: int | None) -> Condition:
    text = {True: "True", False: "False", None: "Unknown"}[state]
    since = previous.last_transition_time if previous is not None and previous.status == text else now
    return Condition(type=type_, status=text, reason=reason, message=message[:1000], last_transition_time=since,
                     observed_generation=generation)


def conditions_for(s: ModelDeploymentStatus, previous: list[Condition], ready_versions: frozenset[str] | None,
                   now: str, serving_versions: frozenset[str] = frozenset()) -> list[Condition]:
    """Conditions from the rollout status; `Synced` says the last round ran to its end (see `unsynced`)."""
    before = {c.type: c for c in previous}
    wanted = _wanted(s, ready_versions, serving_versions) + [("Synced", True, "ReconcileSuccess", "the last round ran to its end")]
    return [_condition(t, state, reason, message, before.get(t), now, s.observed_generation)
            for t, state, reason, message in wanted]


PIN_TO_FAILED = "FailedVersionPinned"


def pin_condition(s: ModelDeploymentStatus, previous: list[Condition], pins: Mapping[str, tuple[str, ...]] | None,
                  now: str) -> Condition | None:
    """`FailedVersionPinned=True` while a user's pin (a rule the operator never writes) still routes requests to the
    rolled-back version, naming the pins; None when none does. Unknown pins (the backend unread) keep what was."""
    before = next((c for c in previous if c.type == PIN_TO_FAILED), None)
    if pins is None:
        return before if s.failed_version is not None else None
    pinned = pins.get(s.failed_version or "", ())
    if not pinned:
        return None
    message = (f"rolled-back {s.failed_version} still gets the requests of {'; '.join(pinned)}: the operator never "
               "writes a pin, remove it or point it at stable")
    return _condition(PIN_TO_FAILED, True, "PinToFailedVersion", message, before, now, s.observed_generation)


WARM_FALLBACKS = "WarmFallbacks"


def warm_condition(s: ModelDeploymentStatus, keep_warm: int, keeps_no_warm: str | None, backend_known: bool,
                   previous: list[Condition], now: str) -> Condition | None:
    """`WarmFallbacks` while spec.keepWarm asks for any: True when every version of status.warmVersions is ready
    (none may be, when fewer versions are retained), False while one is not or when the backend keeps none (why, in
    its message), Unknown while the backend cannot be read; None without keepWarm."""
    if keep_warm == 0:
        return None
    before = next((c for c in previous if c.type == WARM_FALLBACKS), None)
    starting = [w.version for w in s.warm_versions if not w.ready]
    warm = ", ".join(w.version for w in s.warm_versions) or "none retained yet"
    if keeps_no_warm is not None:
        state, reason, message = False, "NotKept", f"keepWarm {keep_warm}: none is kept warm: {keeps_no_warm}"
    elif not backend_known:
        state, reason, message = None, "BackendUnknown", f"warm: {warm}; readiness unknown: the backend could not be read"
    elif starting:
        state, reason, message = False, "Starting", f"warm: {warm}; not ready yet: {', '.join(starting)}"
    else:
        state, reason, message = True, "Ready", f"warm and ready: {warm}"
    return _condition(WARM_FALLBACKS, state, reason, message, before, now, s.observed_generation)


def unsynced(status: ModelDeploymentStatus, reason: str, message: str, now: str) -> ModelDeploymentStatus:
    """The status with `Synced=False` and `Degraded=True`: what kept the operator from finishing its round.

    The rollout's own fields keep saying what was decided; a deployment that never got a first
    version deployed is Failed, with the reason as its message.
    """
    s = status.model_copy(deep=True)
    if s.phase in (None, Phase.Failed):
        s.phase, s.message = Phase.Failed, message
    before = {c.type: c for c in s.conditions}
    replaced = {t: _condition(t, state, reason, message, before.get(t), now, s.observed_generation)
                for t, state in (("Degraded", True), ("Synced", False))}
    s.conditions = [c for c in s.conditions if c.type not in replaced] + list(replaced.values())
    return s
