"""The rollout state machine: pure, deterministic, replayable."""

from .engine import AnalysisReport, Decision, Event, Observations, TrafficIntent, decide

__all__ = ["AnalysisReport", "Decision", "Event", "Observations", "TrafficIntent", "decide"]
