"""Notifications as the real round hands them over (World: fakes of the API server, KServe and Prometheus): only
persisted decisions, each once, in order, and a broken notifications hook never costs a round or a rollout."""

from __future__ import annotations

import pytest

from modelops.api.modeldeployment import Phase
from modelops.reconcile import DEPLOYMENTS

from .fakes import FailOn, Fault
from .world import World, new_world


class Recorder:
    """The notify hook: what it was handed, and the status stored when it was."""

    def __init__(self, world: World):
        self.world, self.handed = world, []

    def __call__(self, obj, spec, status, events):
        stored = self.world.status()
        self.handed.append(([e.reason for e in events], status.phase, stored.phase, stored.stable_version,
                            stored.canary_version, status.stable_version, status.canary_version))

    def reasons(self) -> list[str]:
        return [r for reasons, *_ in self.handed for r in reasons]


def roll_out_and_back(w: World) -> None:
    w.set_version("1.1.0")
    for _ in range(6):
        w.tick(10)
        if w.status().canary_weight:
            break
    w.metric("candidate", "bad")
    for _ in range(6):
        w.tick(10)
        if w.status().phase is Phase.RolledBack:
            return
    raise AssertionError(f"not rolled back: {w.trace[-6:]}")


def test_every_decision_is_handed_over_once_after_it_is_persisted(worlds):
    w = new_world(worlds, failure_limit=2)
    recorder = w.shell.notify = Recorder(w)
    roll_out_and_back(w)
    assert recorder.reasons() == ["RolloutStarted", "StepAdvanced", "AnalysisFailed", "AnalysisFailed", "RolledBack"]
    for _, phase, stored_phase, stored_stable, stored_canary, stable, canary in recorder.handed:
        assert (phase, stable, canary) == (stored_phase, stored_stable, stored_canary)  # write-ahead: stored first


@pytest.mark.parametrize("fault", [409, 500, "timeout"])
def test_a_decision_whose_status_write_fails_is_handed_over_only_when_it_lands(worlds, fault):
    w = new_world(worlds)
    recorder = w.shell.notify = Recorder(w)
    w.set_version("1.1.0")
    for _ in range(6):
        w.tick(10)
        if w.status().canary_weight:
            break
    w.metric("candidate", "bad")
    before = len(recorder.reasons())
    w.kube.hook = FailOn("patch_status", DEPLOYMENTS.plural, Fault(fault))
    w.tick(10)
    assert w.kube.hook.fired and recorder.reasons()[before:] == []
    w.heal()
    w.tick(10)
    assert recorder.reasons()[before:] == ["AnalysisFailed", "RolledBack"]


def test_a_broken_notifications_hook_costs_no_round_and_no_rollback(worlds):
    w = new_world(worlds)

    def broken(*_):
        raise RuntimeError("a bug in notifications")

    w.shell.notify = broken
    w.set_version("1.1.0")
    for _ in range(12):
        w.tick(10)
        if w.status().phase is Phase.Stable and w.status().stable_version == "1.1.0":
            break
    assert w.status().stable_version == "1.1.0" and w.live() == {"1.1.0": 100}  # promoted, not rolled back
    assert "InternalError" not in w.events.reasons() and "RolledBack" not in w.events.reasons()
    assert w.memory.failures_in_a_row == 0
