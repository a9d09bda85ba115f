"""The rollout state machine: pure, deterministic, replayable."""

from .engine import (
    AnalysisReport,
    Decision,
    Event,
    Observations,
    TrafficIntent,
    analysis_instant,
    analysis_window,
    checks_in_effect,
    decide,
    fail_safe,
    grading_until,
    intent_of,
    rollout_wanted,
    seconds_to_next_analysis,
)

__all__ = [
    "AnalysisReport",
    "Decision",
    "Event",
    "Observations",
    "TrafficIntent",
    "analysis_instant",
    "analysis_window",
    "checks_in_effect",
    "decide",
    "fail_safe",
    "grading_until",
    "intent_of",
    "rollout_wanted",
    "seconds_to_next_analysis",
]
