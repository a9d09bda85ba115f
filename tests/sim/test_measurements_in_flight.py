"""What gives up a measurement in flight (an analysis, a drill's requests lost), through the real round: only a new
generation of the spec (the watch sets `Memory.spec_changed`, handlers.wake_on_spec_change). Every other wake-up
(a backend object's, an EndpointSlice's or a ModelVersion's event, the echo of the operator's own write) sets
`Memory.wake` only, and the measurement finishes.

A measurement here is slow in the only way that matters to the round: the events arrive while its queries are still
unanswered (the provider sets them before it answers)."""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

import pytest

from modelops.api.modeldeployment import Phase, Verdict

from .fakes import answering_after, provider_factory
from .test_drills import FALLBACK, STABLE, promoted
from .test_named_defects import start
from .world import World, new_world

BACKENDS = ["kserve", "gatewayAPI", "seldon", "seldonV2"]


def slow_provider(w: World, meanwhile: Callable[[], Awaitable[None]]) -> None:
    w.shell.providers = answering_after(provider_factory(w.behaviour, w.role), meanwhile)


def watch_events(w: World, wakes: list[int]) -> Callable[[], Awaitable[None]]:
    """Five wake-ups of the loop while a query is unanswered, as a busy watch delivers them."""

    async def storm() -> None:
        for _ in range(5):
            w.memory.wake.set()
            wakes.append(1)
            await asyncio.sleep(0.01)

    return storm


async def at_once() -> None:
    return None


def spec_change_then_hang(w: World, changes: list[int]) -> Callable[[], Awaitable[None]]:
    """A new generation of the spec while a query hangs (a Prometheus that never answers)."""

    async def hang() -> None:
        w.memory.spec_changed.set()
        changes.append(1)
        await asyncio.Event().wait()

    return hang


@pytest.mark.parametrize("backend", BACKENDS)
def test_watch_events_during_a_slow_analysis_let_it_finish_and_a_failing_candidate_is_rolled_back(worlds, backend):
    w = new_world(worlds, backend)
    start(w)
    w.metric("candidate", "bad")
    wakes: list[int] = []
    slow_provider(w, watch_events(w, wakes))
    for _ in range(3):
        w.tick(10)
        if w.status().phase is Phase.RolledBack:
            break
    s = w.status()
    assert wakes, "no analysis was due"
    assert s.phase is Phase.RolledBack and s.failed_version == "1.1.0", w.trace[-4:]
    assert [c.verdict for c in s.checks] == [Verdict.Fail]
    assert w.live() == {"1.0.0": 100}


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_spec_change_during_an_analysis_gives_it_up_and_the_next_round_acts_on_it(worlds, backend):
    w = new_world(worlds, backend)
    start(w)
    changes: list[int] = []
    slow_provider(w, spec_change_then_hang(w, changes))
    before = w.status().last_analysis_at
    for _ in range(3):
        w.tick(10)
        if changes:
            break
    assert changes, "no analysis was due"
    s = w.status()
    assert s.last_analysis_at == before and s.phase is Phase.Progressing  # no verdict, not even "gave no answer"
    slow_provider(w, at_once)
    w.request("A1", "Abort")  # the change the watch announced
    w.round()
    assert w.status().phase is Phase.RolledBack and w.live() == {"1.0.0": 100}


def test_a_spec_change_during_a_drills_requests_lost_measurement_gives_it_up_until_the_next_round(worlds):
    w = promoted(worlds, "kserve")
    w.request("D1", "Drill")
    for _ in range(40):
        w.tick(1)
        if w.status().drill is None:
            break
    due = w.status().last_drill.requests_lost_due
    assert due is not None
    changes: list[int] = []
    slow_provider(w, spec_change_then_hang(w, changes))
    w.tick(10)  # its window is scraped: the measurement is due, and the provider hangs
    last = w.status().last_drill
    assert changes and last.requests_lost_due == due and last.requests_lost_note is None  # still due, not "no answer"
    slow_provider(w, at_once)
    w.request("R1", "Rollback")  # the change the watch announced
    w.round()
    w.settle()
    w.round()
    s = w.status()
    assert s.stable_version == FALLBACK and w.live() == {FALLBACK: 100} and STABLE not in w.live()
    # measured once the provider answers (the sim's Prometheus does not know KServe's error rate: a note says so)
    assert s.last_drill.requests_lost_due is None
    assert "not a query this simulation knows" in s.last_drill.requests_lost_note


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_event_storm_of_every_kind_lets_each_analysis_finish_and_counts_its_failures(worlds, backend):
    """World.event_storm, as the schedules draw it; its invariant M is checked after each of its rounds."""
    w = new_world(worlds, backend, failure_limit=2)
    start(w)
    w.metric("candidate", "bad")
    for _ in range(6):
        w.advance(10)
        w.settle()
        w.event_storm(2, stale=False)
        if w.status().phase is Phase.RolledBack:
            break
    s = w.status()
    assert s.phase is Phase.RolledBack and s.failed_version == "1.1.0" and w.live() == {"1.0.0": 100}, w.trace[-6:]
    assert w.events.reasons().count("AnalysisFailed") == 2  # both failures counted, up to failureLimit
