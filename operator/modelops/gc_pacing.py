"""CPython's cyclic garbage collector, paced for a heap of many long-lived objects, and its pauses measured.

Facts relied on (CPython 3.11, `Modules/gcmodule.c`): a collection of generation N scans every tracked object in
generations 0..N and stops every thread meanwhile, the Lease keeper's too (`leader.py`). Generation 0 is collected
once YOUNG_THRESHOLD more tracked objects have been allocated than freed (700 by default), generation 1 after
MIDDLE_THRESHOLD collections of generation 0 (10), and generation 2, which holds every long-lived object, after
OLD_THRESHOLD of generation 1 (10), and then only once the objects promoted into it since its last collection
reach a quarter of those it held then.

With 10,000 deployments the operator holds millions of tracked objects, and a collection of generation 2 took
2.3-9 s here. By default the young collections came every few tens of milliseconds, so the objects of a round
waiting seconds on a busy API server were promoted to generation 2 and soon made up that quarter: generation 2
was collected 45 times while 10,000 deployments were created, and every 30 s in their simultaneous rollout.
Collecting generation 0 every 50,000 allocations instead, and generation 1 every 20 of those (about once a
minute under that load), lets such objects die before they reach generation 2: generation 2 was then not collected
while they were created, and once in the rollout's first ten minutes (docs/benchmarks.md). A young
collection then frees tens of thousands of objects at once, up to 0.6 s.
"""

from __future__ import annotations

import gc
import time
from typing import Any

from prometheus_client import Histogram

YOUNG_THRESHOLD = 50_000
MIDDLE_THRESHOLD = 20
OLD_THRESHOLD = 10

GC_PAUSE = Histogram("modelops_gc_pause_seconds",
                     "Pauses of the operator process for Python's cyclic garbage collector, by generation: every"
                     " thread waits meanwhile, Lease renewals too.", ["generation"],
                     buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))

_started: list[float] = []


def _measure(phase: str, info: dict[str, Any]) -> None:
    """gc.callbacks: called by the collecting thread, before and after each collection (never nested)."""
    if phase == "start":
        _started[:] = [time.perf_counter()]
    elif _started:
        GC_PAUSE.labels(str(info["generation"])).observe(time.perf_counter() - _started.pop())


def pace() -> None:
    """For the operator process only: its thresholds, and its pauses measured."""
    gc.set_threshold(YOUNG_THRESHOLD, MIDDLE_THRESHOLD, OLD_THRESHOLD)
    if _measure not in gc.callbacks:
        gc.callbacks.append(_measure)
    for generation in range(3):
        GC_PAUSE.labels(str(generation))
