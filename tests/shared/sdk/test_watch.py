"""``ConfigClient.watch`` over Server-Sent Events and over gRPC, against real server processes."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from typing import Any

import pytest
from structlog.testing import capture_logs

from shared.errors import PermissionDenied, Unauthenticated
from shared.models import sha256_of
from shared.sdk import Change, ConfigClient, Progress, WatchEvent
from tests.shared.sdk.conftest import endpoint_of
from tests.support import Http, ServerProcess

TIMEOUT = 30  # bound on waiting for any one event


def write(http: Http, path: str, value: dict[str, Any] | None) -> int:
    """PUT (or DELETE when value is None) and return the acknowledged revision."""
    reply = http.delete(path) if value is None else http.put(path, {"value": value})
    assert reply.status in (200, 201), reply.body
    return int(reply.json["revision"])


async def take(events: AsyncIterator[WatchEvent], n: int) -> list[WatchEvent]:
    out = []
    async with asyncio.timeout(TIMEOUT):
        for _ in range(n):
            out.append(await anext(events))
    return out


async def connected(events: AsyncIterator[WatchEvent]) -> int:
    """Wait for the first progress mark (the stream is live); its revision."""
    first = await take(events, 1)
    assert isinstance(first[0], Progress), first
    return first[0].revision


class TestWatch:
    async def test_changes_in_order_with_resolved_values(
        self, endpoint: str, server: ServerProcess, tenant: dict[str, str]
    ) -> None:
        """Each change of the key arrives once, in order, resolved for the environment; others don't."""
        http = Http(server.port, tenant["token"])
        async with ConfigClient(endpoint, tenant["id"], tenant["token"]) as client:
            events = client.watch("w/order", "model", environment="production", progress=True)
            await connected(events)
            r1 = write(http, "/v1/configs/w/order/model?env=global", {"model": "a", "t": 0})
            write(http, "/v1/configs/w/order/other?env=global", {"x": 1})  # another key
            r2 = write(http, "/v1/configs/w/order/model?env=production", {"model": "b"})
            write(http, "/v1/configs/w/order/model?env=edge", {"model": "e"})  # not in production's chain
            r3 = write(http, "/v1/configs/w/order/model?env=production", None)  # global shows through
            r4 = write(http, "/v1/configs/w/order/model?env=global", None)  # nothing left: a delete
            got: list[WatchEvent] = []
            while len(got) < 4:
                got += [e for e in await take(events, 1) if not isinstance(e, Progress)]
            await events.aclose()
        changes = [c for c in got if isinstance(c, Change)]
        assert [(c.type, c.revision) for c in changes] == [
            ("put", r1),
            ("put", r2),
            ("put", r3),
            ("delete", r4),
        ]
        assert {(c.namespace, c.key, c.environment) for c in changes} == {("w/order", "model", "production")}
        assert [c.value for c in changes] == [
            {"model": "a", "t": 0},
            {"model": "b", "t": 0},
            {"model": "a", "t": 0},
            None,
        ]
        assert all(c.sha256 == sha256_of(c.value) for c in changes[:3])

    async def test_since_replays_then_follows(
        self, endpoint: str, server: ServerProcess, tenant: dict[str, str]
    ) -> None:
        """since=REV replays every change after REV, then live ones; several prefixes at once."""
        http = Http(server.port, tenant["token"])
        start = write(http, "/v1/configs/w/replay-a/k?env=global", {"v": 0})
        revisions = [
            write(http, "/v1/configs/w/replay-a/k?env=global", {"v": 1}),
            write(http, "/v1/configs/w/replay-b/k?env=global", {"v": 2}),
            write(http, "/v1/configs/w/replay-c/k?env=global", {"v": 3}),  # not watched
        ]
        async with ConfigClient(endpoint, tenant["id"], tenant["token"]) as client:
            events = client.watch(["w/replay-a", "w/replay-b"], since=start)
            got = await take(events, 2)
            revisions.append(write(http, "/v1/configs/w/replay-b/k?env=global", {"v": 4}))
            got += await take(events, 1)
            await events.aclose()
        assert [(e.revision, e.namespace) for e in got if isinstance(e, Change)] == [
            (revisions[0], "w/replay-a"),
            (revisions[1], "w/replay-b"),
            (revisions[3], "w/replay-b"),
        ]

    async def test_refused_watch_raises(
        self, endpoint: str, server: ServerProcess, tenant: dict[str, str]
    ) -> None:
        """A watch the server refuses raises the error instead of retrying or yielding nothing."""
        async with ConfigClient(endpoint, None, "lcm_bogus", reconnect_attempts=None) as client:
            with pytest.raises(Unauthenticated):
                await take(client.watch("w/refused"), 1)
        http = Http(server.port, tenant["token"])
        reply = http.post(
            "/v1/tokens", {"name": "svc", "roles": ["service-account"], "namespaces": ["w/allowed"]}
        )
        assert reply.status == 201, reply.body
        async with ConfigClient(endpoint, tenant["id"], reply.json["token"]) as client:
            with pytest.raises(PermissionDenied):
                await take(client.watch("w/elsewhere"), 1)

    async def test_close_ends_a_running_watch(self, endpoint: str, tenant: dict[str, str]) -> None:
        """Closing the client ends a watch blocked on the stream, quietly."""
        client = ConfigClient(endpoint, tenant["id"], tenant["token"])
        events = client.watch("w/close", progress=True)
        await connected(events)
        pending = asyncio.ensure_future(anext(events))
        await asyncio.sleep(0)
        await client.close()
        with pytest.raises(StopAsyncIteration):
            async with asyncio.timeout(TIMEOUT):
                await pending


class TestResume:
    async def test_resumes_after_kill9_from_last_revision(
        self, scheme: str, restartable: tuple[ServerProcess, int]
    ) -> None:
        """kill -9, restart on the same ports and data: the watch reconnects from the last revision
        it delivered (SSE: Last-Event-ID) and gets exactly the acknowledged changes, including those
        made before it reconnected."""
        server, grpc_port = restartable
        http = server.admin
        path = "/v1/configs/w/resume/k?env=global"
        client = ConfigClient(
            endpoint_of(scheme, server, grpc_port), server.tenant_id, server.token, reconnect_max_delay=2.0
        )
        async with client:
            acked = [write(http, path, {"v": i}) for i in range(3)]
            events = client.watch("w/resume", "k", since=acked[0] - 1)
            got = await take(events, 3)
            # the consumer does not pull while the server dies and comes back, so the changes
            # written after the restart cannot have reached the old connection: only a
            # resume from the last delivered revision can bring them
            server.kill9()
            server.start("--grpc-port", str(grpc_port))
            acked += [write(http, path, {"v": i}) for i in (3, 4, 5)]
            got += await take(events, 3)
            await events.aclose()
        assert [e.revision for e in got] == acked
        assert [e.value for e in got if isinstance(e, Change)] == [{"v": i} for i in range(6)]

    async def test_silent_connection_counts_as_dead(
        self, scheme: str, restartable: tuple[ServerProcess, int]
    ) -> None:
        """A server that stops talking (SIGSTOP: the socket stays open) is given up on after three
        missed progress marks; the watch reconnects and resumes once the server answers again."""
        server, grpc_port = restartable
        assert server.proc is not None
        pid = server.proc.pid
        path = "/v1/configs/w/silent/k?env=global"
        client = ConfigClient(
            endpoint_of(scheme, server, grpc_port), server.tenant_id, server.token, reconnect_max_delay=1.0
        )
        async with client:
            events = client.watch("w/silent", "k", progress=True, progress_interval=0.5)
            await connected(events)
            with capture_logs() as logs:
                os.kill(pid, signal.SIGSTOP)
                try:
                    # not a timing assertion: only long enough for the watch to notice the silence
                    pulled = asyncio.ensure_future(anext(events))
                    await asyncio.sleep(4)
                finally:
                    os.kill(pid, signal.SIGCONT)
                acked = write(server.admin, path, {"v": 1})
                got: list[WatchEvent] = []
                async with asyncio.timeout(TIMEOUT):
                    got.append(await pulled)
                    while not any(isinstance(e, Change) for e in got):
                        got.append(await anext(events))
            await events.aclose()
        assert [e.revision for e in got if isinstance(e, Change)] == [acked]
        lost = [entry for entry in logs if entry["event"] == "watch_connection_lost"]
        assert lost, logs
        assert "in time" in lost[0]["error"] or "sent nothing" in lost[0]["error"]
