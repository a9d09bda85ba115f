"""The operator's HTTP endpoint, served by its event loop: metrics, liveness, readiness."""

from __future__ import annotations

import asyncio

from aiohttp.test_utils import TestClient, TestServer

from modelops import health, leader


def test_metrics_liveness_and_readiness():
    ready = [False]

    async def probe():
        async with TestClient(TestServer(health.app(lambda: ready[0]))) as client:
            leader.LEADER.set(0)
            metrics = await client.get("/metrics")
            assert metrics.status == 200 and "modelops_leader 0.0" in await metrics.text()
            assert metrics.headers["Content-Type"].startswith("text/plain")
            assert (await client.get("/healthz")).status == 200
            assert (await client.get("/readyz")).status == 503
            ready[0] = True
            assert (await client.get("/readyz")).status == 200
            assert (await client.get("/other")).status == 404

    asyncio.run(probe())
