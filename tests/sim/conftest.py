"""The worlds fixture, and the fault simulation's figures printed at the end of the run (schedules, rounds, crashes, checks)."""

from __future__ import annotations

import pytest

from .world import STATS, World


@pytest.fixture
def worlds():
    """Worlds a test makes (world.new_world); closed after it."""
    made: list[World] = []
    yield made
    for w in made:
        w.close()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if STATS["schedules"]:
        terminalreporter.write_line(
            f"fault simulation: {STATS['schedules']} schedules, {STATS['rounds']} rounds, "
            f"{STATS['crashes']} crashes injected, {STATS['checks']} invariant checks")
    side = {k.removeprefix("rounds ending with "): v for k, v in STATS.items() if k.startswith("rounds ending with ")}
    if side:
        terminalreporter.write_line("rounds ending with a candidate exposed by mirror/match: " +
                                    ", ".join(f"{n} with {kind}" for kind, n in sorted(side.items())))
    git = {k.removeprefix("git re-applies "): v for k, v in STATS.items() if k.startswith("git re-applies ")}
    if git:
        terminalreporter.write_line("GitOps re-applies of backend objects: " +
                                    ", ".join(f"{n} {outcome}" for outcome, n in sorted(git.items())))
    if STATS["rounds beside a refused rule"]:
        terminalreporter.write_line(f"fault-free rounds beside a rule the operator refuses: "
                                    f"{STATS['rounds beside a refused rule']}, "
                                    f"{STATS['rounds beside a refused rule, rolled back']} of them rolled back")
    if STATS["analyses amid a flooding tenant"]:
        terminalreporter.write_line(f"analyses amid other namespaces flooding the Prometheus gate: "
                                    f"{STATS['analyses amid a flooding tenant']}")
