"""The operator's HTTP endpoint: `/metrics`, `/healthz` (liveness) and `/readyz` (readiness).

All three are answered by the operator's own event loop, not by a side thread: a loop blocked
by a stuck handler cannot answer `/healthz`, so the kubelet restarts the process instead of
a thread reporting health for a loop that no longer runs anything.

`/readyz` says whether the process is doing its part: the leader always is (it exits when it
cannot renew), a standby is when it has read the Lease within the lease duration, and a
single replica without election is once it has started. Nothing routes requests to the
operator; readiness gates rolling updates and the metrics Service's endpoints.
"""

from __future__ import annotations

from typing import Callable

import prometheus_client
from aiohttp import web


def app(ready: Callable[[], bool]) -> web.Application:
    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=prometheus_client.generate_latest(),
                            headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n") if ready() else web.Response(status=503, text="not ready\n")

    application = web.Application()
    application.add_routes([web.get("/metrics", metrics), web.get("/healthz", healthz), web.get("/readyz", readyz)])
    return application


async def serve(port: int, ready: Callable[[], bool]) -> web.AppRunner:
    """Listen on all addresses (the kubelet and Prometheus come from outside the pod); the caller cleans up."""
    runner = web.AppRunner(app(ready), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, port=port).start()
    return runner
