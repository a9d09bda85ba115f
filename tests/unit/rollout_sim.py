"""A driver for the pure rollout engine: a clock, a backend's readiness and analysis results.

It only feeds inputs and keeps the engine's outputs; every judgement stays in the tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from modelops.analysis.evaluate import Measurement, evaluate
from modelops.api.modeldeployment import ModelDeploymentSpec, ModelDeploymentStatus
from modelops.rollout import AnalysisReport, Carried, Decision, Observations, decide

START = datetime(2026, 1, 1, tzinfo=timezone.utc)
# Measurements that make the single check `c` (max 0.05) pass, fail, or see no data.
MEASURED = {"Pass": Measurement(0.01), "Fail": Measurement(0.5), "NoData": Measurement(None)}


def make_spec(version: str = "1.0.0", *, steps=(10, 50), pause: str = "30s", checks=None, **spec) -> ModelDeploymentSpec:
    """A spec whose steps are weights (ints) or whole steps (dicts, e.g. {"mirror": 100})."""
    body = {
        "model": "fraud",
        "version": version,
        "serving": {"backend": "kserve"},
        "strategy": {"steps": [{"weight": s, "pause": pause} if isinstance(s, int) else {"pause": pause, **s} for s in steps]},
        "analysis": {
            "interval": "10s",
            "checks": checks if checks is not None else [{"name": "c", "query": "up", "max": 0.05}],
        },
    }
    for key, value in spec.items():
        if isinstance(value, dict) and isinstance(body.get(key), dict):
            body[key] = {**body[key], **value}
        else:
            body[key] = value
    return ModelDeploymentSpec.model_validate(body)


@dataclass
class Sim:
    spec: ModelDeploymentSpec
    status: ModelDeploymentStatus = field(default_factory=ModelDeploymentStatus)
    now: datetime = START
    ready: set[str] = field(default_factory=lambda: {"1.0.0", "1.1.0", "1.2.0", "2.0.0"})
    decisions: list[Decision] = field(default_factory=list)
    carried: Carried | None = None
    """What the backend has carried since when, as the shell reports it: a write lands at once and the round
    its echo wakes, at the same instant, finds it carried."""

    def step(self, report: AnalysisReport | None = None) -> Decision:
        observations = Observations(frozenset(self.ready), report, carried=self.carried)
        self.last_inputs = (self.spec, self.status, observations, self.now)
        decision = decide(*self.last_inputs)
        self.status = decision.status
        self.decisions.append(decision)
        if decision.intent is None:
            self.carried = None
        elif self.carried is None or self.carried.intent != decision.intent:
            self.carried = Carried(decision.intent, self.now)
        return decision

    def tick(self, verdict: str = "Pass", seconds: float = 10) -> Decision:
        """Let time pass, then hand over one analysis whose window ends now."""
        self.now += timedelta(seconds=seconds)
        results = tuple(evaluate(c, MEASURED[verdict], "t") for c in self.spec.analysis.checks)
        return self.step(AnalysisReport(self.now, results))

    def set(self, **changes) -> Decision:
        self.spec = self.spec.model_copy(update=changes)
        return self.step()

    def reasons(self) -> list[str]:
        return [e.reason for d in self.decisions for e in d.events]
