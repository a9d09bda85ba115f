"""Kubernetes-style conditions derived from the rollout status (pure).

Argo CD's health and `kubectl wait --for=condition=Ready` read these, so they follow the
usual convention: the transition time moves only when the condition's status flips.
"""

from __future__ import annotations

from ..api.modeldeployment import ModelDeploymentStatus, Outcome, Phase
from ..api.modelversion import Condition


def _wanted(s: ModelDeploymentStatus, ready_versions: frozenset[str]) -> list[tuple[str, bool | None, str, str]]:
    """(type, status, reason, message); a status of None means Unknown."""
    phase = s.phase.value if s.phase else "Unknown"
    stable_ready = s.stable_version in ready_versions
    progressing = s.phase in (Phase.Progressing, Phase.Paused, Phase.RollingBack)
    degraded = s.phase in (Phase.RolledBack, Phase.Failed)
    analysis = {Outcome.Passed: True, Outcome.Failed: False, Outcome.Inconclusive: None}.get(s.last_outcome, True) \
        if progressing else True
    message = s.message or ""
    return [
        ("Ready", stable_ready, "StableServing" if stable_ready else "BackendNotReady",
         f"stable {s.stable_version} is {'serving' if stable_ready else 'not ready on the backend'}"),
        ("Progressing", progressing, phase, message if progressing else f"no rollout in progress ({phase})"),
        ("Degraded", degraded, phase, message if degraded else "not degraded"),
        ("AnalysisHealthy", analysis, (s.last_outcome.value if s.last_outcome and progressing else "NoRollout"),
         "; ".join(f"{c.name}={c.value} ({c.verdict.value}, limit {c.limit})" for c in s.checks) if progressing else "no analysis running"),
    ]


def conditions_for(s: ModelDeploymentStatus, previous: list[Condition], ready_versions: frozenset[str], now: str) -> list[Condition]:
    before = {c.type: c for c in previous}
    out = []
    for type_, state, reason, message in _wanted(s, ready_versions):
        text = {True: "True", False: "False", None: "Unknown"}[state]
        old = before.get(type_)
        since = old.last_transition_time if old is not None and old.status == text else now
        out.append(Condition(type=type_, status=text, reason=reason, message=message, last_transition_time=since,
                             observed_generation=s.observed_generation))
    return out


def blocked(status: ModelDeploymentStatus, reason: str, message: str, ready_versions: frozenset[str],
            now: str, generation: int | None) -> ModelDeploymentStatus:
    """The status of a deployment the operator cannot act on (missing version, backend, bad spec).

    Nothing already serving is touched; the reason shows in the message and as Degraded.
    """
    s = status.model_copy(deep=True)
    s.message, s.observed_generation = message, generation
    s.phase = s.phase or Phase.Failed
    conditions = conditions_for(s, status.conditions, ready_versions, now)
    s.conditions = [
        c.model_copy(update={"status": "True", "reason": reason, "message": message,
                             "last_transition_time": c.last_transition_time if c.status == "True" else now})
        if c.type == "Degraded" else c
        for c in conditions
    ]
    return s
