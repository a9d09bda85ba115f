"""Prints the fault simulation's figures at the end of the run (schedules, rounds, crashes, checks)."""

from __future__ import annotations

from .world import STATS


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if STATS["schedules"]:
        terminalreporter.write_line(
            f"fault simulation: {STATS['schedules']} schedules, {STATS['rounds']} rounds, "
            f"{STATS['crashes']} crashes injected, {STATS['checks']} invariant checks")
