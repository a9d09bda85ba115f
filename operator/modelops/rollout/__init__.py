"""The rollout state machine: pure, deterministic, replayable."""

from .engine import decide, fail_safe, unread
from .plan import (analysis_instant, analysis_window, check_window, checks_in_effect, grading_until, intent_of,
                   rollout_wanted, seconds_to_next_analysis)
from .values import AnalysisReport, Carried, Decision, DrillLoss, Event, Observations, TrafficIntent

__all__ = [
    "AnalysisReport",
    "Carried",
    "Decision",
    "DrillLoss",
    "Event",
    "Observations",
    "TrafficIntent",
    "analysis_instant",
    "analysis_window",
    "check_window",
    "checks_in_effect",
    "decide",
    "fail_safe",
    "grading_until",
    "intent_of",
    "rollout_wanted",
    "seconds_to_next_analysis",
    "unread",
]
