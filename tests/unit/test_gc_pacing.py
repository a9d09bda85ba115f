"""The operator's garbage-collector pacing: its thresholds are set and every collection's pause is measured."""

from __future__ import annotations

import gc

import pytest
from prometheus_client import REGISTRY

from modelops import gc_pacing


@pytest.fixture
def paced():
    thresholds = gc.get_threshold()
    gc_pacing.pace()
    gc.disable()  # only the collections a test asks for
    yield
    gc.enable()
    gc.set_threshold(*thresholds)
    gc.callbacks.remove(gc_pacing._measure)


def pauses(generation: int) -> float:
    return REGISTRY.get_sample_value("modelops_gc_pause_seconds_count", {"generation": str(generation)}) or 0.0


def test_pace_sets_the_thresholds(paced):
    assert gc.get_threshold() == (gc_pacing.YOUNG_THRESHOLD, gc_pacing.MIDDLE_THRESHOLD, gc_pacing.OLD_THRESHOLD)


def test_each_collection_is_one_pause_of_its_generation(paced):
    before = [pauses(g) for g in range(3)]
    gc.collect(2)
    gc.collect(0)
    assert [pauses(g) - b for g, b in zip(range(3), before)] == [1.0, 0.0, 1.0]


def test_pacing_twice_measures_each_pause_once(paced):
    gc_pacing.pace()
    before = pauses(1)
    gc.collect(1)
    assert pauses(1) - before == 1.0
