"""Health, readiness and metrics served by the agent's real HTTP server on a free loopback port
(asked with aiohttp, an independent client)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.health import AgentStatus, HealthServer, Route
from agent.http1 import Reply
from shared.errors import InvalidInput


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def status(clock: Clock) -> AgentStatus:
    return AgentStatus(max_stale=60.0, clock=clock)


@pytest.fixture
async def server(status: AgentStatus) -> AsyncIterator[HealthServer]:
    async with HealthServer(status, "127.0.0.1", 0) as srv:
        yield srv


async def get(server: HealthServer, path: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{server.port}{path}") as r:
        body = await r.json() if r.content_type == "application/json" else await r.text()
        return r.status, body


def metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


class TestEndpoints:
    async def test_live(self, server: HealthServer) -> None:
        """/health/live answers 200 while the agent runs, before anything is applied."""
        assert await get(server, "/health/live") == (200, {"status": "ok"})

    async def test_not_ready_before_first_apply(self, server: HealthServer) -> None:
        """/health/ready is 503 until the first successful apply, with the reason."""
        code, body = await get(server, "/health/ready")
        assert code == 503 and body["status"] == "not_ready"
        assert body["reason"] == "no configuration applied yet"

    async def test_ready_after_apply_then_stale(
        self, server: HealthServer, status: AgentStatus, clock: Clock
    ) -> None:
        """Ready after an apply; not ready once the set is older than max-stale; ready again after a sync."""
        status.record_apply(12)
        code, body = await get(server, "/health/ready")
        assert code == 200 and body["revision"] == 12
        clock.now += 61
        code, body = await get(server, "/health/ready")
        assert code == 503 and "more than --max-stale 60 s" in body["reason"]
        status.mark_synced()
        assert (await get(server, "/health/ready"))[0] == 200

    async def test_apply_from_cache_keeps_its_age(
        self, server: HealthServer, status: AgentStatus, clock: Clock
    ) -> None:
        """A set applied from a cache saved long ago is stale at once (synced_at is the cache's time)."""
        status.record_apply(3, synced_at=clock.now - 3600)
        code, body = await get(server, "/health/ready")
        assert code == 503 and body["staleness_seconds"] == 3600

    async def test_no_max_stale_means_always_ready_after_apply(self, clock: Clock) -> None:
        """Without --max-stale, age never makes the agent unready."""
        status = AgentStatus(clock=clock)
        status.record_apply(1)
        clock.now += 10**6
        assert status.readiness() == (True, "ok")

    async def test_metrics(self, server: HealthServer, status: AgentStatus, clock: Clock) -> None:
        """/metrics shows revision, last apply time, applies, reloads, failures by kind, staleness, ready."""
        status.record_apply(7)
        status.record_reload()
        status.record_failure("check")
        status.record_failure("check")
        status.record_failure("made-up-kind")
        clock.now += 5
        code, text = await get(server, "/metrics")
        assert code == 200
        got = metrics(text)
        assert got[("llmcm_agent_applied_revision", ())] == 7
        assert got[("llmcm_agent_last_apply_timestamp_seconds", ())] == 1_000_000.0
        assert got[("llmcm_agent_applies_total", ())] == 1
        assert got[("llmcm_agent_reloads_total", ())] == 1
        assert got[("llmcm_agent_failures_total", (("kind", "check"),))] == 2
        assert got[("llmcm_agent_failures_total", (("kind", "other"),))] == 1
        assert got[("llmcm_agent_failures_total", (("kind", "sync"),))] == 0
        assert got[("llmcm_agent_staleness_seconds", ())] == 5
        assert got[("llmcm_agent_ready", ())] == 1

    async def test_metrics_before_apply(self, server: HealthServer) -> None:
        """Before an apply there is no revision sample and ready is 0."""
        got = metrics((await get(server, "/metrics"))[1])
        assert ("llmcm_agent_applied_revision", ()) not in got
        assert got[("llmcm_agent_ready", ())] == 0


class TestServer:
    async def test_extra_routes(self, status: AgentStatus) -> None:
        """Extra routes (the standalone read API) are served beside the health endpoints."""

        async def hello(path: str, query: Mapping[str, str]) -> Reply:
            return Reply.json({"hello": path, "query": dict(query)})

        routes = [Route("/v1/hello", hello), Route("/v1/under/", hello)]
        async with HealthServer(status, "127.0.0.1", 0, routes=routes) as srv:
            assert await get(srv, "/v1/hello") == (200, {"hello": "/v1/hello", "query": {}})
            under = {"hello": "/v1/under/a/b/c", "query": {"x": "1"}}
            assert await get(srv, "/v1/under/a%2Fb/c?x=1") == (200, under)
            assert (await get(srv, "/v1/hello/more"))[0] == 404
            assert (await get(srv, "/v1/other"))[0] == 404

    async def test_only_get(self, server: HealthServer) -> None:
        """Other methods than GET and HEAD are refused with 405, a body is refused with 413."""
        async with aiohttp.ClientSession() as session:
            async with session.post(f"http://127.0.0.1:{server.port}/health/live") as reply:
                assert reply.status == 405 and reply.headers["Allow"] == "GET, HEAD"
            async with session.get(f"http://127.0.0.1:{server.port}/health/live", data=b"x") as reply:
                assert reply.status == 413
            async with session.head(f"http://127.0.0.1:{server.port}/health/live") as reply:
                assert reply.status == 200

    async def test_malformed_request(self, server: HealthServer) -> None:
        """Something that is not HTTP gets 400, and the server keeps serving."""
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"NONSENSE\r\n\r\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 400 ")
        assert (await get(server, "/health/live"))[0] == 200

    async def test_port_in_use(self, status: AgentStatus, server: HealthServer) -> None:
        """A port that is taken is a clear error naming the address."""
        with pytest.raises(InvalidInput, match=f"cannot listen on 127.0.0.1:{server.port}"):
            await HealthServer(status, "127.0.0.1", server.port).start()

    async def test_stop_twice(self, status: AgentStatus) -> None:
        """stop() is safe to call twice, and the port is closed after it."""
        srv = HealthServer(status, "127.0.0.1", 0)
        await srv.start()
        port = srv.port
        await srv.stop()
        await srv.stop()
        with pytest.raises(aiohttp.ClientConnectionError):
            async with aiohttp.ClientSession() as session:
                await session.get(f"http://127.0.0.1:{port}/health/live")
