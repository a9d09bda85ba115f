"""Which watch events wake a deployment's loop, and which of them also give up a measurement in flight (handlers)."""

import asyncio

import kopf

from modelops import handlers
from modelops.reconcile import Memory


def deployment(generation: int) -> dict:
    return {"metadata": {"namespace": "ml", "name": "fraud", "generation": generation}, "spec": {"model": "fraud"}}


class Backends:
    def saw(self, *_):
        pass


def test_only_a_new_generation_of_the_spec_gives_up_a_measurement_every_watch_event_wakes_the_loop():
    memo = kopf.Memo(memory=Memory(), wakeups=handlers.Wakeups(), backends=Backends())
    memory = memo.memory
    memo.wakeups.follow("ml", "fraud", memory.wake, deployment(1)["spec"])

    async def events() -> list[tuple[bool, bool]]:
        seen = []
        for deliver in (
            lambda: handlers.wake_on_spec_change(body=deployment(1), memo=memo),  # first sight
            lambda: handlers.wake_on_spec_change(body=deployment(1), memo=memo),  # a status write's echo
            lambda: handlers.wake_the_driver(resource=kopf.Resource("serving.kserve.io", "v1beta1",
                                                                    "inferenceservices"),
                                             type="MODIFIED", body={}, namespace="ml",
                                             meta={"annotations": {handlers.OWNER_ANNOTATION: "fraud"}}, memo=memo),
            lambda: handlers.wake_on_spec_change(body=deployment(2), memo=memo),  # a spec edit
        ):
            memory.wake.clear()
            memory.spec_changed.clear()
            await deliver()
            seen.append((memory.wake.is_set(), memory.spec_changed.is_set()))
        return seen

    assert asyncio.run(events()) == [(True, True), (False, False), (True, False), (True, True)]


def test_kopf_drops_events_of_endpoint_slices_no_deployment_follows_before_calling_the_wake_handler():
    memo = kopf.Memo(wakeups=handlers.Wakeups())
    memory = Memory()
    spec = {"model": "fraud", "serving": {"gatewayAPI": {"services": {"1.0.0": "fraud-v1"}}}}
    memo.wakeups.follow("ml", "fraud", memory.wake, spec)
    [registered] = [h for h in kopf.get_default_registry()._watching.get_all_handlers()
                    if h.fn is handlers.wake_on_endpoints]
    assert registered.when is not None

    def passes(namespace: str, labels: dict) -> bool:
        return registered.when(namespace=namespace, labels=labels, memo=memo)

    assert passes("ml", {handlers.SERVICE_NAME_LABEL: "fraud-v1"})
    assert not passes("ml", {handlers.SERVICE_NAME_LABEL: "unrelated"})
    assert not passes("other", {handlers.SERVICE_NAME_LABEL: "fraud-v1"})  # same Service name, another namespace
    assert not passes("ml", {})

    async def deliver() -> bool:  # what does pass still wakes the follower
        await handlers.wake_on_endpoints(namespace="ml", labels={handlers.SERVICE_NAME_LABEL: "fraud-v1"}, memo=memo)
        return memory.wake.is_set()

    assert asyncio.run(deliver())
    memo.wakeups.forget("ml", "fraud")
    assert not passes("ml", {handlers.SERVICE_NAME_LABEL: "fraud-v1"})


def test_a_kserve_deployment_with_a_route_follows_the_predictor_services_its_readiness_reads():
    """KServe Standard mode: stable's predictor Service (as KServe first names it) and the desired version's."""
    wakeups = handlers.Wakeups()
    spec = {"model": "fraud", "version": "1.1.0", "serving": {"backend": "kserve", "kserve": {"httpRoute": {"name": "r"}}}}
    wakeups.follow("ml", "fraud", Memory().wake, spec)
    assert wakeups.followed_by_any("ml", ("service", "fraud-predictor"))
    assert wakeups.followed_by_any("ml", ("service", "fraud-v1-1-0-predictor"))
    # After a promotion, stable's Service is named after the promoted entry: the stable version's unit.
    assert wakeups.follow("ml", "fraud", Memory().wake, {**spec, "version": "1.2.0"}, stable="1.1.0")
    assert wakeups.followed_by_any("ml", ("service", "fraud-v1-1-0-predictor"))
    assert wakeups.followed_by_any("ml", ("service", "fraud-v1-2-0-predictor"))
    wakeups.follow("ml", "fraud", Memory().wake, {**spec, "serving": {"backend": "kserve"}})  # serverless: none
    assert not wakeups.followed_by_any("ml", ("service", "fraud-predictor"))
