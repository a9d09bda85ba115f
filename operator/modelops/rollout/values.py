"""What `decide` takes and gives: the observations of a round, the decision (status, traffic intent, events), and
the constants and time format the rollout's words and timings use."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Mapping

from ..api.modeldeployment import CheckStatus, ModelDeploymentStatus, Phase


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
    holds_rollouts: str | None = None
    """Why no rollout may start on the backend now (BackendState.holds_rollouts); None: one may."""
    warm_ready: frozenset[str] = frozenset()
    """Versions the backend keeps deployed with no traffic and reports ready (BackendState.warm_ready)."""
    keeps_no_warm: str | None = None
    """Why the backend keeps no version warm (BackendState.keeps_no_warm); None: it keeps those asked for."""


@dataclass(frozen=True)
class TrafficIntent:
    stable: str
    candidate: str | None = None
    candidate_weight: int = 0
    mirror: int = 0
    """Percent of stable's requests copied to the candidate, its answers discarded."""
    match: tuple[tuple[str, str], ...] = ()
    """(header, value) pairs: a request carrying all of them goes to the candidate."""
    warm: tuple[str, ...] = field(default=(), compare=False)
    """Versions to keep deployed with no traffic (ModelDeploymentSpec.keep_warm), newest first. Not part of what
    the intent routes, so not of its equality: whether the backend carries a step, a drill's stage or stable alone
    is a question of routing."""

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
BACKEND_UNREAD = "rollback decided, backend unread: "
"""What a status says in place of ON_STABLE while the backend cannot even be named (no accepted spec, its `serving`
refused), followed by why: a rule added meanwhile may route anywhere."""
ROUTING_GRACE_SECONDS = 2.0
"""A step's routing the backend is seen carrying within this of the step's decision counts from the decision:
analysis instants are whole seconds, and a write is seen carried by the round its echo wakes. Routing that took
longer (a saturated API server, a write retried after a conflict) counts from when it was seen carried."""


def rfc3339(t: datetime) -> str:
    """UTC with milliseconds: analyses a second apart must stay distinct and ordered."""
    return t.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_rfc3339(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
