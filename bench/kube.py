"""The benchmark's own Kubernetes client: plain HTTPS to the loopback API server, one keep-alive
connection per thread, and a count of every request it makes by the API server's verb and resource, so
that its calls can be taken out of the API server's request counts."""

from __future__ import annotations

import http.client
import json
import ssl
import threading
import time
from collections import Counter
from typing import Any, Callable
from urllib.parse import urlencode, urlsplit


def resource_of(path: str) -> str:
    """The resource a request path names, "plural" or "plural/subresource" ("" for /metrics and the like)."""
    parts = [p for p in path.split("?")[0].split("/") if p]
    if parts[:1] == ["api"]:
        parts = parts[2:]
    elif parts[:1] == ["apis"]:
        parts = parts[3:]
    else:
        return ""
    if parts[:1] == ["namespaces"] and len(parts) > 2:
        parts = parts[2:]
    return "/".join(parts[:1] + parts[2:3])


class ApiError(RuntimeError):
    def __init__(self, status: int, verb: str, path: str, body: str):
        super().__init__(f"{verb} {path}: {status} {body[:300]}")
        self.status = status


class Kube:
    def __init__(self, url: str, ca: str, cert: str, key: str):
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 443
        self.context = ssl.create_default_context(cafile=ca)
        self.context.load_cert_chain(cert, key)
        self.calls: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        self._local = threading.local()

    def connection(self, timeout: float | None = 60) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(self.host, self.port, context=self.context, timeout=timeout)

    def counts(self) -> dict[str, float]:
        """Requests made, by verb."""
        out: Counter[str] = Counter()
        with self._lock:
            for (verb, _), n in self.calls.items():
                out[verb] += n
        return {k: float(v) for k, v in out.items()}

    def counts_by_resource(self) -> dict[str, float]:
        """Requests made, by "VERB resource[/subresource]" (as `figures.by_resource` names the API server's)."""
        with self._lock:
            return {f"{verb} {resource}": float(n) for (verb, resource), n in self.calls.items()}

    def count(self, verb: str, path: str) -> None:
        with self._lock:
            self.calls[(verb, resource_of(path))] += 1

    def request(self, verb: str, method: str, path: str, body: Any = None,
                content_type: str = "application/json", raw: bool = False) -> Any:
        """One request, counted under `verb` (the API server's name for it: GET, LIST, POST, PATCH, ...)."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = content_type
        for attempt in (1, 2):
            conn = getattr(self._local, "conn", None)
            if conn is None:
                conn = self._local.conn = self.connection()
            self.count(verb, path)
            try:
                conn.request(method, path, body=data, headers=headers)
                response = conn.getresponse()
                text = response.read()
            except (http.client.HTTPException, OSError):
                conn.close()
                self._local.conn = None
                if attempt == 2:
                    raise
                continue
            if response.status >= 400:
                raise ApiError(response.status, verb, path, text.decode(errors="replace"))
            return text.decode() if raw else json.loads(text or b"null")
        raise AssertionError("unreachable")

    def create(self, path: str, obj: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", "POST", path, obj)

    def get(self, path: str) -> dict[str, Any]:
        return self.request("GET", "GET", path)

    def list(self, path: str, **query: str) -> dict[str, Any]:
        return self.request("LIST", "GET", path + (f"?{urlencode(query)}" if query else ""))

    def merge_patch(self, path: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self.request("PATCH", "PATCH", path, patch, "application/merge-patch+json")

    def metrics(self) -> str:
        return self.request("GET", "GET", "/metrics", raw=True)

    def cpu_profile(self, seconds: int) -> bytes:
        """kube-apiserver's Go CPU profile over the next `seconds` (it must run with --profiling)."""
        path = f"/debug/pprof/profile?seconds={seconds}"
        self.count("GET", path)
        conn = self.connection(timeout=seconds + 60)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        if response.status >= 400:
            raise ApiError(response.status, "GET", path, body.decode(errors="replace"))
        return body


class Informer:
    """LIST then WATCH one collection in a thread, keeping every object by name and calling `on_event`
    (type, object) for each change; relists when the watch expires (410) or breaks."""

    def __init__(self, kube: Kube, path: str, on_event: Callable[[str, dict[str, Any]], None] | None = None):
        self.kube, self.path, self.on_event = kube, path, on_event
        self.objects: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.synced = threading.Event()
        self._stop = threading.Event()
        self._conn: http.client.HTTPSConnection | None = None
        self._thread = threading.Thread(target=self._run, name=f"informer {path}", daemon=True)

    def start(self) -> Informer:
        self._thread.start()
        if not self.synced.wait(60):
            raise TimeoutError(f"no initial list of {self.path}")
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._conn is not None:
            try:
                self._conn.sock and self._conn.sock.shutdown(2)
            except OSError:
                pass
        self._thread.join(5)

    def snapshot(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.objects.values())

    def _handle(self, kind: str, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        with self.lock:
            if kind == "DELETED":
                self.objects.pop(name, None)
            else:
                self.objects[name] = obj
        if self.on_event is not None:
            self.on_event(kind, obj)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                listed = self.kube.list(self.path)
                version = listed["metadata"]["resourceVersion"]
                names = set()
                for item in listed["items"]:
                    names.add(item["metadata"]["name"])
                    self._handle("ADDED", item)
                for gone in set(self.objects) - names:
                    self._handle("DELETED", self.objects[gone])
                self.synced.set()
                self._watch(version)
            except Exception as error:  # noqa: BLE001 - a benchmark's helper must keep going; said once
                if not self._stop.is_set():
                    print(f"informer {self.path}: {type(error).__name__}: {error}; relisting", flush=True)
                    time.sleep(0.5)

    def _watch(self, version: str) -> None:
        conn = self._conn = self.kube.connection(timeout=None)
        try:
            query = urlencode({"watch": "1", "resourceVersion": version, "allowWatchBookmarks": "true"})
            self.kube.count("WATCH", self.path)
            conn.request("GET", f"{self.path}?{query}", headers={"Accept": "application/json"})
            response = conn.getresponse()
            if response.status != 200:
                raise ApiError(response.status, "WATCH", self.path, response.read().decode(errors="replace"))
            while not self._stop.is_set():
                line = response.readline()
                if not line:
                    return  # the server ended the watch: list again
                event = json.loads(line)
                kind, obj = event["type"], event["object"]
                if kind == "BOOKMARK":
                    continue
                if kind == "ERROR":
                    return  # 410 Gone and the like: list again
                self._handle(kind, obj)
        finally:
            conn.close()
