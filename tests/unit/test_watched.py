"""Backend objects read from the watch (watched.py): what a read returns between the operator's own
writes, their echoes, other writers' changes, conflicts and failures, and when it costs a GET."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from modelops.kube import FIELD_MANAGER, Resource
from modelops.watched import MAX_AGE_SECONDS, WatchedObjects

ROUTE = Resource("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute")
SECRET = Resource("", "v1", "secrets", "Secret")
OWNER = "modelops.io/deployment"


def route(rv: int, weight: int, owner: str | None = "m", **meta: Any) -> dict[str, Any]:
    annotations = {OWNER: owner} if owner else {}
    return {"metadata": {"namespace": "ns", "name": "r", "resourceVersion": str(rv), "annotations": annotations,
                         **meta},
            "spec": {"rules": [{"backendRefs": [{"name": "v1", "weight": weight}]}]}}


class ApiServer:
    """The object as stored, and every call made."""

    def __init__(self, stored: dict[str, Any] | None):
        self.stored, self.calls, self.fail, self.meanwhile = stored, [], None, lambda: None

    def _write(self, obj: dict[str, Any] | None) -> dict[str, Any] | None:
        self.calls.append("write")
        self.meanwhile()
        if self.fail is not None:
            error, self.fail = self.fail, None
            raise error
        self.stored = obj
        return obj

    async def get(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append("get")
        return self.stored

    async def apply(self, resource: Resource, namespace: str, name: str, config: dict[str, Any], *,
                    force: bool = True) -> dict[str, Any]:
        return self._write(config)

    async def patch(self, resource: Resource, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self._write(patch)

    async def delete(self, resource: Resource, namespace: str, name: str) -> bool:
        self._write(None)
        return True


def watched(stored: dict[str, Any] | None) -> tuple[WatchedObjects, ApiServer]:
    api = ApiServer(stored)
    return WatchedObjects(api, [ROUTE], lambda obj: OWNER in (obj.get("metadata") or {}).get("annotations", {})), api


def read(objects: WatchedObjects, resource: Resource = ROUTE) -> dict[str, Any] | None:
    return asyncio.run(objects.get(resource, "ns", "r"))


def weight(obj: dict[str, Any] | None) -> int | None:
    return None if obj is None else obj["spec"]["rules"][0]["backendRefs"][0]["weight"]


def see(objects: WatchedObjects, obj: dict[str, Any], event: str | None = "MODIFIED") -> None:
    objects.saw(ROUTE.group, ROUTE.plural, event, obj)


def test_an_object_is_read_once_with_a_get_then_from_the_watch():
    objects, api = watched(route(5, 100))
    see(objects, route(5, 100), None)  # the initial listing, before any deployment read it: not kept
    assert weight(read(objects)) == 100 and api.calls == ["get"]
    assert weight(read(objects)) == 100  # the GET's answer stands while the watch shows nothing else
    api.stored = route(6, 70)
    see(objects, api.stored)  # an SRE's hand edit: newer than the GET's answer, or older? a GET says
    assert weight(read(objects)) == 70 and api.calls == ["get", "get"]
    see(objects, route(7, 60))  # from here on the watch alone
    assert weight(read(objects)) == 60
    assert api.calls == ["get", "get"]


def test_an_older_event_still_queued_never_replaces_a_newer_get():
    objects, api = watched(route(10, 50))
    assert weight(read(objects)) == 50
    see(objects, route(9, 100), None)  # the initial listing, handled after the GET
    assert weight(read(objects)) == 50 and api.calls == ["get", "get"]


def test_an_object_found_absent_unowned_or_too_large_is_read_with_a_get_each_time(monkeypatch):
    objects, api = watched(None)
    assert read(objects) is None and read(objects) is None
    assert api.calls == ["get", "get"]
    api.stored = route(5, 100, owner=None)
    see(objects, route(5, 100, owner=None))  # not driven by any deployment: not kept
    assert weight(read(objects)) == 100
    see(objects, route(6, 100, owner=None))
    assert weight(read(objects)) == 100 and api.calls == ["get", "get", "get", "get"]
    monkeypatch.setattr("modelops.watched.MAX_COPY_CHARS", 100)
    see(objects, route(7, 100))
    assert weight(read(objects)) == 100 and api.calls[-1] == "get" and len(api.calls) == 5
    assert asyncio.run(objects.get(SECRET, "ns", "r")) is not None  # a kind that is not watched at all
    assert len(api.calls) == 6


def test_what_was_learnt_half_an_hour_ago_is_read_again_with_a_get():
    api = ApiServer(route(5, 100))
    now = [0.0]
    objects = WatchedObjects(api, [ROUTE], lambda obj: True, clock=lambda: now[0])
    read(objects)
    see(objects, route(5, 100))
    now[0] = MAX_AGE_SECONDS - 1
    read(objects)
    assert api.calls == ["get"]
    now[0] = MAX_AGE_SECONDS + 1  # a settled object: no event since; a resync in case one was lost
    assert weight(read(objects)) == 100 and api.calls == ["get", "get"]
    assert weight(read(objects)) == 100 and api.calls == ["get", "get"]


def test_objects_no_deployment_read_are_not_kept():
    objects, _ = watched(None)
    for i in range(100):
        see(objects, {**route(i, 100), "metadata": {**route(i, 100)["metadata"], "name": f"r{i}"}})
    assert objects.copies == {}


def test_own_write_is_read_until_the_watch_shows_its_echo_or_anything_newer():
    objects, api = watched(route(5, 100))
    read(objects)
    see(objects, route(5, 100))
    asyncio.run(objects.apply(ROUTE, "ns", "r", route(6, 90)))
    assert weight(read(objects)) == 90  # the watch still shows rv 5: the write's answer is newer
    see(objects, route(6, 90))  # the echo
    see(objects, route(7, 90, generation=2))  # then the Gateway's status write
    assert read(objects)["metadata"]["resourceVersion"] == "7"
    assert api.calls == ["get", "write"]


def test_a_later_write_by_someone_else_replaces_what_the_operator_wrote():
    objects, _ = watched(route(5, 100))
    read(objects)
    see(objects, route(5, 100))
    asyncio.run(objects.apply(ROUTE, "ns", "r", route(6, 90)))
    see(objects, route(6, 90))
    see(objects, route(7, 50))  # an SRE after the echo
    assert weight(read(objects)) == 50


def test_a_conflict_makes_the_next_read_a_get_whose_answer_stands_until_the_watch_moves():
    objects, api = watched(route(5, 100))
    read(objects)
    see(objects, route(5, 100))
    api.stored, api.calls = route(6, 50), []  # someone wrote rv 6; the watch still shows rv 5
    api.fail = ApiException(status=409, reason="Conflict")
    with pytest.raises(ApiException):
        asyncio.run(objects.apply(ROUTE, "ns", "r", route(6, 90)))
    assert weight(read(objects)) == 50 and api.calls == ["write", "get"]
    assert weight(read(objects)) == 50 and api.calls == ["write", "get"]  # the GET's answer, not the stale copy
    see(objects, route(6, 50))
    see(objects, route(7, 20))
    assert weight(read(objects)) == 20 and api.calls == ["write", "get"]


@pytest.mark.parametrize("failure", [asyncio.TimeoutError(), ApiException(status=500), OSError("reset")])
def test_a_write_that_may_or_may_not_have_landed_makes_the_next_read_a_get(failure):
    objects, api = watched(route(5, 100))
    read(objects)
    see(objects, route(5, 100))
    api.stored, api.calls = route(6, 90), []  # it landed, and no answer came back
    api.fail = failure
    with pytest.raises(type(failure)):
        asyncio.run(objects.apply(ROUTE, "ns", "r", route(6, 90)))
    assert weight(read(objects)) == 90 and api.calls == ["write", "get"]


def test_a_deleted_object_reads_absent_until_the_watch_shows_anything_of_it():
    objects, api = watched(route(5, 100))
    read(objects)
    see(objects, route(5, 100))
    api.calls = []
    assert asyncio.run(objects.delete(ROUTE, "ns", "r"))
    assert read(objects) is None and api.calls == ["write"]
    see(objects, route(6, 100), "DELETED")
    assert read(objects) is None and api.calls == ["write", "get"]  # nothing kept: a GET, which finds it gone


def test_an_object_created_by_the_operator_is_read_before_the_watch_shows_it():
    objects, api = watched(None)
    assert read(objects) is None and api.calls == ["get"]
    asyncio.run(objects.apply(ROUTE, "ns", "r", route(1, 100)))
    assert weight(read(objects)) == 100 and api.calls == ["get", "write"]
    see(objects, route(1, 100), "ADDED")
    assert weight(read(objects)) == 100 and api.calls == ["get", "write"]


def test_an_object_handed_away_is_no_longer_read_from_the_watch():
    objects, api = watched(route(5, 100))
    read(objects)
    see(objects, route(5, 100))
    api.stored = route(6, 100, owner=None)
    see(objects, route(6, 100, owner=None))  # its owner annotation removed
    assert OWNER not in read(objects)["metadata"]["annotations"] and api.calls == ["get", "get"]


def test_a_copy_keeps_only_the_operators_own_field_sets():
    fields = [{"manager": FIELD_MANAGER, "operation": "Apply", "fieldsV1": {"f:spec": {}}},
              {"manager": "kubectl", "operation": "Update", "fieldsV1": {"f:metadata": {}}}]
    objects, _ = watched(route(5, 100, managedFields=fields))
    read(objects)
    see(objects, route(5, 100, managedFields=fields))
    assert read(objects)["metadata"]["managedFields"] == fields[:1]


def test_each_read_hands_out_an_object_of_its_own():
    objects, _ = watched(route(4, 100))
    read(objects)
    see(objects, route(5, 100))
    first = read(objects)
    first["spec"]["rules"][0]["backendRefs"][0]["weight"] = 1  # a caller changing what it was given
    assert weight(read(objects)) == 100
    asyncio.run(objects.apply(ROUTE, "ns", "r", route(6, 90)))
    mine = read(objects)
    mine["spec"]["rules"][0]["backendRefs"][0]["weight"] = 1
    assert weight(read(objects)) == 90


def test_a_write_answered_after_the_watch_moved_on_is_not_read_over_the_newer_copy():
    """The controller's status write (rv 7) is delivered while the operator's apply (rv 6) is in flight."""
    objects, api = watched(route(5, 100))
    read(objects)
    see(objects, route(5, 100))
    api.meanwhile = lambda: see(objects, route(7, 90, generation=2))
    asyncio.run(objects.apply(ROUTE, "ns", "r", route(6, 90)))
    api.stored, api.calls = route(7, 90, generation=2), []
    assert read(objects)["metadata"]["resourceVersion"] == "7" and api.calls == ["get"]


def test_a_copy_of_an_object_found_gone_is_dropped():
    objects, api = watched(route(5, 100))
    read(objects)
    see(objects, route(5, 100))
    api.fail, api.stored = asyncio.TimeoutError(), None  # deleted while the watch was down: no DELETED came
    with pytest.raises(asyncio.TimeoutError):
        asyncio.run(objects.apply(ROUTE, "ns", "r", route(6, 90)))
    assert read(objects) is None and read(objects) is None
    assert api.calls == ["get", "write", "get", "get"]


def test_an_object_created_again_is_ordered_by_a_get():
    objects, api = watched(route(5, 100, uid="a"))
    read(objects)
    see(objects, route(5, 100, uid="a"))
    api.stored = route(9, 30, uid="b")
    see(objects, route(9, 30, uid="b"), "ADDED")  # the new object first
    see(objects, route(6, 100, uid="a"))  # then a late event of the old one
    assert weight(read(objects)) == 30 and api.calls == ["get", "get"]


def test_an_echo_delivered_before_the_writes_answer_is_simply_the_copy():
    objects, api = watched(route(5, 100))
    read(objects)
    see(objects, route(5, 100))
    api.meanwhile = lambda: see(objects, route(6, 90))  # the watch is quicker than the answer
    asyncio.run(objects.apply(ROUTE, "ns", "r", route(6, 90)))
    assert weight(read(objects)) == 90 and api.calls == ["get", "write"]
