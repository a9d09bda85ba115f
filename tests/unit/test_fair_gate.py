"""Fair shares of one Prometheus' request slots (analysis/gate.py), and an analysis' budget counted from its first
request sent (provider.answered_within). Driven by events, not by timing."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from modelops.analysis import provider as provider_module
from modelops.analysis.gate import ACROSS_NAMESPACES, FairGate
from modelops.analysis.provider import Asker, answered_within


class Requests:
    """Requests that take a slot and hold it until released one by one; records who got a slot, in order."""

    def __init__(self, gate: FairGate):
        self.gate, self.granted, self.tasks = gate, [], []
        self._release: dict[int, asyncio.Event] = {}

    def ask(self, namespace: str, deployment: str | None = None) -> int:
        number = len(self.tasks)
        self._release[number] = asyncio.Event()

        async def hold():
            async with self.gate.slot(namespace, deployment):
                self.granted.append((number, namespace, deployment))
                await self._release[number].wait()

        self.tasks.append(asyncio.ensure_future(hold()))
        return number

    async def settle(self):
        for _ in range(5):
            await asyncio.sleep(0)

    async def release(self, number: int):
        self._release[number].set()
        await self.settle()

    def holding(self) -> list[int]:
        return [n for n, *_ in self.granted if not self._release[n].is_set()]

    async def cancel_all(self):
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


@pytest.mark.asyncio
async def test_a_deployment_holds_at_most_a_quarter_of_the_slots_and_a_namespace_half():
    gate = FairGate(16)
    requests = Requests(gate)
    for _ in range(10):
        requests.ask("flood", "a")
    await requests.settle()
    assert gate.held == 4
    for deployment in ("b", "c"):
        for _ in range(10):
            requests.ask("flood", deployment)
    await requests.settle()
    assert gate.held == 8  # a, b and c together: the namespace's half
    for _ in range(10):
        requests.ask("victim", "v")
    await requests.settle()
    assert gate.held == 12
    held = Counter((ns, d) for _, ns, d in requests.granted)
    assert held == {("flood", "a"): 4, ("flood", "b"): 4, ("victim", "v"): 4}
    await requests.cancel_all()
    assert gate.held == 0


@pytest.mark.asyncio
async def test_batches_count_toward_their_namespace_and_cross_namespace_ones_toward_a_tenant_of_their_own():
    gate = FairGate(16)
    requests = Requests(gate)
    for _ in range(10):
        requests.ask("team", None)
        requests.ask(ACROSS_NAMESPACES)
    await requests.settle()
    assert gate.held == 16
    assert sum(1 for _, ns, _ in requests.granted if ns == "team") == 8
    await requests.cancel_all()


@pytest.mark.asyncio
async def test_waiting_requests_are_served_round_robin_by_namespace():
    """A namespace that queued first and most is served no sooner than every other waiting one, in turn."""
    gate = FairGate(1)
    requests = Requests(gate)
    first = requests.ask("earlier", "x")
    await requests.settle()
    for _ in range(3):
        requests.ask("flood", "f")
    requests.ask("victim", "v")
    requests.ask("third", "t")
    await requests.settle()
    while requests.holding():
        await requests.release(requests.holding()[0])
    assert first == 0
    assert [ns for _, ns, _ in requests.granted] == ["earlier", "flood", "victim", "third", "flood", "flood"]


@pytest.mark.asyncio
async def test_a_request_waiting_within_a_full_namespace_waits_only_for_its_own_namespace():
    """Bounds skip a namespace at its share, not the requests behind it: another namespace is served meanwhile."""
    gate = FairGate(4)  # a namespace holds at most 2, a deployment 1
    requests = Requests(gate)
    for _ in range(3):
        requests.ask("flood", "a")
    for _ in range(3):
        requests.ask("flood", "b")
    requests.ask("victim", "v")
    await requests.settle()
    assert sorted((ns, d) for _, ns, d in requests.granted) == [("flood", "a"), ("flood", "b"), ("victim", "v")]
    assert gate.held == 3  # the fourth slot is free: flood is at its half, and nobody else waits
    await requests.cancel_all()


@pytest.mark.asyncio
async def test_a_cancelled_wait_gives_up_its_place_and_a_cancelled_grant_its_slot():
    gate = FairGate(1)
    requests = Requests(gate)
    holder = requests.ask("a", "x")
    gone = requests.ask("b", "y")
    then = requests.ask("c", "z")
    await requests.settle()
    requests.tasks[gone].cancel()
    await requests.settle()
    await requests.release(holder)
    assert [n for n, *_ in requests.granted] == [holder, then]
    # Granted and cancelled in the same tick: the slot is passed on, not lost.
    late = requests.ask("d", "w")
    await requests.settle()
    requests._release[then].set()
    requests.tasks[late].cancel()
    await requests.settle()
    assert gate.held == 0
    after = requests.ask("e", "v")
    await requests.settle()
    assert requests.granted[-1][0] == after and gate.held == 1
    await requests.release(after)
    assert gate.held == 0


# --- an analysis' budget counts from its first request sent -------------------------------------------------------


@pytest.mark.asyncio
async def test_an_analysis_waiting_for_its_first_turn_is_not_given_up_for_it():
    """The turn comes after far longer than the budget (other tenants' requests held every slot); the analysis
    then answers at once and is not given up. Before, the budget counted from the start and it ended 'no answer'."""
    asker = Asker("victim", "fraud")

    async def analysis():
        await asyncio.sleep(0.3)  # waiting for a slot
        asker.first_turn.set()
        await asyncio.sleep(0)
        return "verdicts"

    assert await answered_within(analysis(), asker, 0.05) == "verdicts"


@pytest.mark.asyncio
async def test_an_analysis_is_given_up_its_budget_after_its_first_turn():
    asker = Asker("victim", "fraud")
    never = asyncio.Event()

    async def hung():
        asker.first_turn.set()
        await never.wait()

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(answered_within(hung(), asker, 0.05), 10)  # 10 s: a give-up bound only


@pytest.mark.asyncio
async def test_an_analysis_whose_first_turn_never_comes_is_given_up_all_the_same(monkeypatch):
    monkeypatch.setattr(provider_module, "FIRST_TURN_SECONDS", 0.1)
    never = asyncio.Event()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(answered_within(never.wait(), Asker("victim", "fraud"), 0.05), 10)
