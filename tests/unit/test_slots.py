"""The limit of rollouts in flight: slots held from the ask to the decision, a first-come queue, the index of a
restarted operator, and the engine's Queued phase."""

import pytest

from modelops.api.modeldeployment import ModelDeploymentStatus, Phase
from modelops.rollout import Observations, decide, rollout_wanted
from modelops.slots import IN_FLIGHT, RolloutSlots

from .rollout_sim import START, make_spec

ROLLING = ModelDeploymentStatus(phase=Phase.Progressing, stable_version="1.0.0", canary_version="1.1.0")
QUEUED = ModelDeploymentStatus(phase=Phase.Queued, stable_version="1.0.0")
DONE = ModelDeploymentStatus(phase=Phase.Stable, stable_version="1.1.0")


def slots(**limits) -> tuple[RolloutSlots, list[str]]:
    woken: list[str] = []
    return RolloutSlots(wake=lambda namespace, name: woken.append(name), **limits), woken


def test_without_a_limit_every_rollout_may_start():
    s, _ = slots()
    for name in "abc":
        assert s.ask("ns", name, "m") is None
        s.settle("ns", name, "m", ROLLING)
    assert s.in_flight() == {}  # nothing is even tracked


def test_one_at_a_time_first_come_first_served():
    s, woken = slots(max_rollouts=1)
    assert s.ask("ns", "a", "m") is None
    assert "at most 1" in s.ask("ns", "b", "m")  # a holds the slot from its ask on, before its decision lands
    s.settle("ns", "a", "m", ROLLING)
    s.settle("ns", "b", "m", QUEUED)
    assert "at most 1 rollouts at once" in s.ask("ns", "c", "m")
    s.settle("ns", "c", "m", QUEUED)
    assert s.ask("ns", "a", "m") is None  # a rollout in flight keeps its slot
    s.settle("ns", "a", "m", DONE)
    assert woken == ["b"]  # a rollout's end wakes the first in the queue, the one that may start
    assert s.ask("ns", "c", "m") is not None  # b queued first
    assert s.ask("ns", "b", "m") is None
    s.settle("ns", "b", "m", ROLLING)
    assert s.ask("ns", "c", "m") is not None


def test_a_decision_that_starts_nothing_gives_the_slot_back_without_waking_anyone():
    s, woken = slots(max_rollouts=1)
    s.settle("ns", "b", "m", QUEUED)
    assert s.ask("ns", "b", "m") is None
    s.settle("ns", "b", "m", ModelDeploymentStatus(phase=Phase.Stable, stable_version="1.0.0"))  # e.g. stable not ready
    assert s.in_flight() == {} and woken == []
    assert s.ask("ns", "c", "m") is None


def test_a_rollouts_end_wakes_only_those_that_may_start_and_the_queued_words_stay_put():
    s, woken = slots(max_rollouts=2)
    for name in ("a", "b"):
        s.ask("ns", name, "m")
        s.settle("ns", name, "m", ROLLING)
    queued = [f"q{i}" for i in range(1000)]
    for name in queued:
        s.settle("ns", name, "m", QUEUED)
    words = s.ask("ns", "q500", "m")
    s.settle("ns", "a", "m", DONE)
    assert woken == ["q0"]  # not the 1,000 queued: one round each for every rollout's end
    assert s.ask("ns", "q500", "m") == words  # nothing to write to its status while the queue moves
    assert s.ask("ns", "q0", "m") is None


def test_a_woken_deployment_that_does_not_start_passes_its_turn_on():
    s, woken = slots(max_rollouts=1)
    s.ask("ns", "a", "m")
    s.settle("ns", "a", "m", ROLLING)
    s.settle("ns", "b", "m", QUEUED)
    s.settle("ns", "c", "m", QUEUED)
    s.settle("ns", "a", "m", DONE)
    assert woken == ["b"]
    assert s.ask("ns", "b", "m") is None
    s.settle("ns", "b", "m", ModelDeploymentStatus(phase=Phase.Stable, stable_version="1.0.0"))  # its version reverted
    assert woken == ["b", "c"] and s.ask("ns", "c", "m") is None


def test_a_models_rollout_ending_wakes_the_first_queued_of_that_model():
    s, woken = slots(max_per_model=1)
    for name, model in (("a", "fraud"), ("d", "churn")):
        s.ask("ns", name, model)
        s.settle("ns", name, model, ROLLING)
    for name, model in (("c", "churn"), ("b", "fraud"), ("e", "fraud")):
        s.settle("ns", name, model, QUEUED)
    assert "model fraud" in s.ask("ns", "e", "fraud")
    s.settle("ns", "a", "fraud", DONE)
    assert woken == ["b"]  # c still waits for churn's slot, e behind b
    assert s.ask("ns", "e", "fraud") is not None and s.ask("ns", "b", "fraud") is None


def test_a_restarted_operator_counts_the_rollouts_its_index_shows():
    s, _ = slots(max_rollouts=1)
    s.bind({IN_FLIGHT: [("ns", "a", "m")]})
    assert s.ask("ns", "b", "m") is not None


def test_our_decision_counts_until_the_index_shows_it():
    s, woken = slots(max_rollouts=1)
    index = {IN_FLIGHT: [("ns", "a", "m")]}
    s.bind(index)
    s.settle("ns", "b", "m", QUEUED)
    s.settle("ns", "a", "m", DONE)  # promoted: the index still shows a in flight
    assert woken == ["b"] and s.ask("ns", "b", "m") is None
    s.settle("ns", "b", "m", ROLLING)  # b's start is not in the index yet
    index[IN_FLIGHT] = []
    assert s.ask("ns", "c", "m") is not None
    index[IN_FLIGHT] = [("ns", "b", "m")]
    assert s.in_flight() == {("ns", "b"): "m"} and s.decided == {}


def test_per_model_limits_and_no_head_of_line_blocking():
    s, _ = slots(max_rollouts=2, max_per_model=1)
    assert s.ask("ns", "a", "fraud") is None
    s.settle("ns", "a", "fraud", ROLLING)
    assert "model fraud" in s.ask("ns", "b", "fraud")
    s.settle("ns", "b", "fraud", QUEUED)
    assert s.ask("other", "b", "fraud") is None  # a model is per namespace
    s.settle("other", "b", "fraud", ROLLING)
    s.settle("other", "b", "fraud", DONE)
    assert s.ask("ns", "c", "churn") is None  # b waits for its model, not for a global slot: c goes ahead


def test_a_deleted_deployment_frees_its_slot():
    s, woken = slots(max_rollouts=1)
    s.ask("ns", "a", "m")
    s.settle("ns", "a", "m", ROLLING)
    s.settle("ns", "b", "m", QUEUED)
    s.forget("ns", "a")
    assert woken == ["b"] and s.ask("ns", "b", "m") is None


def test_the_engine_queues_instead_of_starting_and_starts_once_allowed():
    spec = make_spec(version="1.1.0")
    status = ModelDeploymentStatus(phase=Phase.Stable, stable_version="1.0.0")
    ready = frozenset({"1.0.0", "1.1.0"})
    queued = decide(spec, status, Observations(ready, queued="queued: 1 rollouts in flight"), START)
    assert (queued.status.phase, queued.status.canary_version) == (Phase.Queued, None)
    assert queued.intent.weights() == {"1.0.0": 100}
    assert [e.reason for e in queued.events] == ["Queued"] and "1.1.0 queued" in queued.status.message
    again = decide(spec, queued.status, Observations(ready, queued="queued: 1 rollouts in flight"), START)
    assert not again.events  # one event per wait, not one per round
    started = decide(spec, again.status, Observations(ready), START)
    assert (started.status.phase, started.status.canary_version) == (Phase.Progressing, "1.1.0")


def engine_round(s: RolloutSlots, name: str, status: ModelDeploymentStatus, ready: set[str],
                 available: set[str]) -> ModelDeploymentStatus:
    """A round of deployment `name` toward 1.1.0 as reconcile takes it: ask for a slot when a rollout is wanted,
    let the engine decide, settle."""
    spec = make_spec(version="1.1.0")
    queued = s.ask("ns", name, spec.model) if rollout_wanted(spec, status) else None
    observed = Observations(frozenset(ready), available_versions=frozenset(available), queued=queued)
    decided = decide(spec, status, observed, START).status
    s.settle("ns", name, spec.model, decided)
    return decided


@pytest.mark.parametrize("ready, available", [({"1.1.0"}, {"1.0.0", "1.1.0"}),  # stable not ready
                                              ({"1.0.0", "1.1.0"}, {"1.0.0"})])  # its ModelVersion gone
def test_a_queued_deployment_that_cannot_start_does_not_hold_up_those_behind_it(ready, available):
    s, woken = slots(max_rollouts=1)
    fine = {"1.0.0", "1.1.0"}
    on_stable = ModelDeploymentStatus(phase=Phase.Stable, stable_version="1.0.0")
    a, b, c = (engine_round(s, name, on_stable, fine, fine) for name in "abc")
    assert (a.phase, b.phase, c.phase) == (Phase.Progressing, Phase.Queued, Phase.Queued)
    s.settle("ns", "a", "fraud", DONE)  # a's rollout ends: b, first in the queue, is woken
    b = engine_round(s, "b", b, ready, available)
    assert woken == ["b", "c"]  # b's turn passed on
    assert b.phase is Phase.Stable and b.message.startswith("waiting")  # out of the queue, saying why
    c = engine_round(s, "c", c, fine, fine)
    assert c.phase is Phase.Progressing
    b = engine_round(s, "b", b, fine, fine)  # b can start again: it queues anew, behind c
    assert b.phase is Phase.Queued
