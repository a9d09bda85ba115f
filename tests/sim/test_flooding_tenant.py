"""Other tenants flooding the operator's Prometheus gate (analysis/gate.py, the real FairGate) while this deployment
analyses, through the real round (World.flooding_tenant): its queries take their turns at the gate, its verdicts and
its rollback are those the metrics give, and no other namespace is served twice while one of its queries waits
within its bounds (invariant F, checked after every step)."""

from __future__ import annotations

import pytest

from modelops.api.modeldeployment import Phase, Verdict

from .test_measurements_in_flight import BACKENDS
from .test_named_defects import start
from .world import new_world


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_failing_candidate_is_rolled_back_on_its_own_verdicts_while_fifteen_namespaces_flood_the_gate(worlds, backend):
    w = new_world(worlds, backend, failure_limit=2, relative=True, min_samples=True)
    w.flooding_tenant(15, 3)
    start(w)
    w.metric("candidate", "bad")
    for _ in range(6):
        w.tick(10)
        if w.status().phase is Phase.RolledBack:
            break
    s = w.status()
    assert s.phase is Phase.RolledBack and s.failed_version == "1.1.0" and w.live() == {"1.0.0": 100}, w.trace[-6:]
    assert w.events.reasons().count("AnalysisFailed") == 2
    assert {c.name: c.verdict for c in s.checks} == {"errors": Verdict.Fail, "accuracy": Verdict.Fail}
    gate = w.flood.gate
    assert gate.grants["mine"] >= 8 and gate.grants["others"] > 10 * gate.grants["mine"], gate.grants
    assert gate.worst == 1  # served in its namespace's turn, every time another one was served meanwhile
