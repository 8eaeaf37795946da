"""Watch over SSE and gRPC against real server processes: order, no loss, no duplicates.

The expected sequence is computed here, independently of the server, from the writes'
acknowledgements: every write of the test returns its revision, so the test knows the
whole committed history and can resolve each environment itself (flat values: the
override chain is a dict update) to say which events each watcher must see.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import grpc
import pytest

from shared.proto.llmconfig.v1 import config_pb2 as pb
from shared.proto.llmconfig.v1 import config_pb2_grpc as pb_grpc
from tests.server.api.helpers import ok, problem
from tests.support import ServerProcess

CHAINS = {
    "global": ("global",),
    "staging": ("global", "development", "staging"),
    "production": ("global", "development", "staging", "production"),
}
WRITE_ENVS = ("global", "staging", "production")
ENTRIES = [("a/x", "k1"), ("a/x", "k2"), ("a/y", "k1"), ("b", "k1"), ("b", "k2")]
Seen = tuple[int, str, str, str, Any]  # (revision, type, namespace, key, value)


# -- the oracle ---------------------------------------------------------------------------------


@dataclass
class History:
    """Acknowledged writes: revision -> (namespace, key, env, value or None for delete)."""

    writes: dict[int, tuple[str, str, str, dict[str, Any] | None]] = field(default_factory=dict)

    def expected(self, after: int, prefixes: tuple[str, ...], env: str) -> list[Seen]:
        layers: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
        resolved: dict[tuple[str, str], dict[str, Any]] = {}
        out: list[Seen] = []
        for revision in sorted(self.writes):
            ns, key, wenv, value = self.writes[revision]
            entry = (ns, key)
            if value is None:
                layers.setdefault(entry, {}).pop(wenv, None)
            else:
                layers.setdefault(entry, {})[wenv] = value
            merged: dict[str, Any] = {}
            present = False
            for layer_env in CHAINS[env]:
                if layer_env in layers.get(entry, {}):
                    merged.update(layers[entry][layer_env])
                    present = True
            before = resolved.get(entry)
            now = merged if present else None
            if now == before:
                continue
            if now is None:
                del resolved[entry]
            else:
                resolved[entry] = now
            visible = not prefixes or any(ns == p or ns.startswith(p + "/") for p in prefixes)
            if revision > after and visible:
                out.append((revision, "put" if now is not None else "delete", ns, key, now))
        return out


async def writer(
    session: aiohttp.ClientSession, base: str, token: str, history: History, seed: int, count: int
) -> None:
    rng = random.Random(seed)
    headers = {"Authorization": f"Bearer {token}"}
    for i in range(count):
        ns, key = rng.choice(ENTRIES)
        env = rng.choice(WRITE_ENVS)
        url = f"{base}/v1/configs/{ns}/{key}?env={env}"
        if rng.random() < 0.1:
            async with session.delete(url, headers=headers) as resp:
                if resp.status == 404:
                    continue
                assert resp.status == 200, await resp.text()
                body = await resp.json()
                history.writes[body["revision"]] = (ns, key, env, None)
            continue
        value = {"w": seed, "i": i, env: rng.randrange(3)}  # repeats make some writes change nothing
        async with session.put(url, json={"value": value}, headers=headers) as resp:
            assert resp.status in (200, 201), await resp.text()
            body = await resp.json()
            if body.get("changed", True):
                history.writes[body["revision"]] = (ns, key, env, value)


# -- two raw clients (no SDK: duplicates must be visible to the test) ---------------------------


async def sse_stream(
    session: aiohttp.ClientSession, base: str, token: str, env: str, prefixes: tuple[str, ...], since: int
) -> AsyncIterator[dict[str, Any]]:
    query = [("env", env), ("progress", "1s"), *(("prefix", p) for p in prefixes)]
    headers = {"Authorization": f"Bearer {token}", "Last-Event-ID": str(since)}
    async with session.get(f"{base}/v1/watch", params=query, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        data: list[str] = []
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("data: "):
                data.append(line[6:])
            elif line == "" and data:
                yield json.loads("\n".join(data))
                data = []


async def grpc_stream(
    channel: grpc.aio.Channel, token: str, env: str, prefixes: tuple[str, ...], since: int
) -> AsyncIterator[dict[str, Any]]:
    stub = pb_grpc.ConfigServiceStub(channel)
    request = pb.WatchRequest(
        prefixes=list(prefixes), environment=env, since_revision=since, progress_interval_seconds=1.0
    )
    call = stub.Watch(request, metadata=[("authorization", f"Bearer {token}")])
    try:
        async for event in call:
            yield {
                "type": event.type,
                "revision": event.revision,
                "namespace": event.namespace,
                "key": event.key,
                "value": json.loads(event.value_json) if event.value_json else None,
            }
    finally:
        call.cancel()


@dataclass
class Watcher:
    env: str
    prefixes: tuple[str, ...]
    start: int
    disconnects: list[int]  # after how many received events to drop the connection and resume
    seen: list[Seen] = field(default_factory=list)
    resumes: int = 0


async def follow(watcher: Watcher, opener: Any, done: asyncio.Event, final_revision: list[int]) -> None:
    """Follow until a progress mark at or past the final revision; resume after each drop."""
    cursor = watcher.start
    while True:
        stream = opener(watcher.env, watcher.prefixes, cursor)
        dropped = False
        try:
            async for event in stream:
                if event["type"] == "progress":
                    cursor = event["revision"]
                    if done.is_set() and cursor >= final_revision[0]:
                        return
                    continue
                watcher.seen.append(
                    (event["revision"], event["type"], event["namespace"], event["key"], event["value"])
                )
                cursor = event["revision"]
                if watcher.disconnects and len(watcher.seen) >= watcher.disconnects[0]:
                    watcher.disconnects.pop(0)
                    dropped = True
                    break
        finally:
            await stream.aclose()
        assert dropped, "the server ended a watch stream"
        watcher.resumes += 1


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("watch")).running() as srv:
        yield srv


@pytest.mark.parametrize("transport", ["sse", "grpc"])
async def test_fifty_watchers_five_writers_exact_sequence_with_resumes(
    server: ServerProcess, tenant: dict[str, str], transport: str
) -> None:
    rng = random.Random(transport)
    base = f"http://127.0.0.1:{server.port}"
    token = tenant["token"]
    history = History()
    total, writers = 2000, 5
    shapes = [(env, prefixes) for env in CHAINS for prefixes in ((), ("a",), ("b",), ("a/x", "b"))]
    timeout = aiohttp.ClientTimeout(total=None, sock_read=30)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel,
    ):

            def opener(env: str, prefixes: tuple[str, ...], since: int) -> AsyncIterator[dict[str, Any]]:
                if transport == "sse":
                    return sse_stream(session, base, token, env, prefixes, since)
                return grpc_stream(channel, token, env, prefixes, since)

            # a few writes before the watchers start: each starts from a revision of its own
            for i in range(20):
                await writer(session, base, token, history, 1000 + i, 1)
            start_max = max(history.writes)
            watchers = [
                Watcher(
                    *shapes[i % len(shapes)],
                    start=rng.randrange(0, start_max + 1),
                    disconnects=sorted(rng.sample(range(1, 400), 3)),
                )
                for i in range(50)
            ]
            done = asyncio.Event()
            final: list[int] = [0]
            async with asyncio.timeout(240):
                followers = [asyncio.create_task(follow(w, opener, done, final)) for w in watchers]
                await asyncio.gather(
                    *(writer(session, base, token, history, s, total // writers) for s in range(writers))
                )
                reply = await session.get(f"{base}/v1/changes", headers={"Authorization": f"Bearer {token}"})
                final[0] = (await reply.json())["revision"]
                done.set()
                await asyncio.gather(*followers)
    assert len(history.writes) > 1500
    for w in watchers:
        expected = history.expected(w.start, w.prefixes, w.env)
        assert w.seen == expected, (w.env, w.prefixes, w.start, len(w.seen), len(expected))
    assert sum(w.resumes for w in watchers) > 50  # the resumes really happened
    assert sum(len(w.seen) for w in watchers) > 10_000


async def test_watchers_resume_across_a_kill_9(tmp_path: Any) -> None:
    """Watchers reconnect after the server is killed and restarted; no acknowledged change is missing."""
    with ServerProcess(tmp_path / "data").running() as srv:
        base = f"http://127.0.0.1:{srv.port}"
        history = History()
        watchers = [Watcher("production", (), 0, []) for _ in range(10)]
        seen_all: list[list[Seen]] = [[] for _ in watchers]

        async def resilient(i: int, w: Watcher, until: list[int], session: aiohttp.ClientSession) -> None:
            cursor = 0
            async with asyncio.timeout(120):
                while True:
                    try:
                        async for event in sse_stream(session, base, srv.token, w.env, (), cursor):
                            cursor = event["revision"]
                            if event["type"] == "progress":
                                if until[0] and cursor >= until[0]:
                                    return
                                continue
                            seen_all[i].append(
                                tuple(event[f] for f in ("revision", "type", "namespace", "key", "value"))
                            )
                    except (aiohttp.ClientError, AssertionError, ConnectionError):
                        pass
                    await asyncio.sleep(0.2)

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_read=10)) as session:
            until = [0]
            tasks = [asyncio.create_task(resilient(i, w, until, session)) for i, w in enumerate(watchers)]
            await writer(session, base, srv.token, history, 1, 60)
            srv.kill9()
            srv.start()
            await writer(session, base, srv.token, history, 2, 60)
            reply = await session.get(f"{base}/v1/changes", headers={"Authorization": f"Bearer {srv.token}"})
            until[0] = (await reply.json())["revision"]
            await asyncio.gather(*tasks)
        expected = history.expected(0, (), "production")
        for seen in seen_all:
            assert seen == expected


def test_bad_watch_requests_fail_with_a_clear_error(server: ServerProcess, tenant: dict[str, str]) -> None:
    http = server.http(tenant["token"])
    assert "env" in problem(http.get("/v1/watch"), 400)["detail"]
    assert "environment" in problem(http.get("/v1/watch?env=moon"), 400)["detail"]
    assert "since" in problem(http.get("/v1/watch?env=global&since=abc"), 400)["detail"]
    assert "Last-Event-ID" in problem(http.get("/v1/watch?env=global", headers={"Last-Event-ID": "x1"}), 400)[
        "detail"
    ]
    assert "ahead" in problem(http.get("/v1/watch?env=global&since=999999"), 400)["detail"]
    problem(http.get("/v1/watch?env=global&prefix=../etc"), 400)
    problem(server.http("lcm_not-a-token").get("/v1/watch?env=global"), 401)
    # a service account limited to one namespace can't watch another one
    admin = server.http(tenant["token"])
    record = ok(
        admin.post("/v1/tokens", {"name": "sa", "roles": ["service-account"], "namespaces": ["mine"]}), 201
    )
    scoped = server.http(record["token"])
    assert problem(scoped.get("/v1/watch?env=production&prefix=theirs"), 403)["rule"]


def test_sse_frames_carry_revision_ids_and_resume_with_last_event_id(
    server: ServerProcess, tenant: dict[str, str]
) -> None:
    http = server.http(tenant["token"])
    first = ok(http.put("/v1/configs/s/app/k?env=global", {"value": {"n": 1}}), 201)["revision"]
    second = ok(http.put("/v1/configs/s/app/k?env=global", {"value": {"n": 2}}))["revision"]
    reply = http.get("/v1/watch?env=production&prefix=s&since=0")
    text = reply.body.decode()
    assert reply.headers["cache-control"] == "no-store"
    assert text.startswith("retry: ")
    frames = [f for f in text.split("\n\n") if f.startswith("id:")]
    assert [f.splitlines()[0] for f in frames] == [f"id: {first}", f"id: {second}", f"id: {second}"]
    assert [f.splitlines()[1] for f in frames] == ["event: put", "event: put", "event: progress"]
    path = "/v1/watch?env=production&prefix=s"
    resumed = http.get(path, headers={"Last-Event-ID": str(first)}).body.decode()
    ids = [line for line in resumed.splitlines() if line.startswith("id:")]
    assert ids == [f"id: {second}", f"id: {second}"]


def test_long_poll_of_resolved_events(server: ServerProcess, tenant: dict[str, str]) -> None:
    import threading

    http = server.http(tenant["token"])
    r1 = ok(http.put("/v1/configs/lp/app/k?env=global", {"value": {"n": 1, "m": 0}}), 201)["revision"]
    r2 = ok(http.put("/v1/configs/lp/app/k?env=staging", {"value": {"n": 2}}), 201)["revision"]
    path = "/v1/changes?resolve=true&env=staging&prefix=lp"
    body = ok(http.get(f"{path}&since=0"))
    got = [(c["revision"], c["value"]) for c in body["changes"]]
    assert got == [(r1, {"n": 1, "m": 0}), (r2, {"n": 2, "m": 0})]
    assert body["revision"] == r2
    # nothing new: at the deadline an empty list with the current revision
    body = ok(http.get(f"{path}&since={r2}&wait=300ms"))
    assert body == {"revision": r2, "changes": []}
    # a change during the wait is returned as soon as it is committed
    change = {"value": {"n": 1, "m": 5}}
    timer = threading.Timer(0.3, lambda: http.put("/v1/configs/lp/app/k?env=global", change))
    timer.start()
    # the client gives up long before the 120 s deadline: only a wake-up on the commit answers in time
    body = ok(http.get(f"{path}&since={r2}&wait=120s", timeout=30))
    timer.join()
    assert [c["value"] for c in body["changes"]] == [{"n": 2, "m": 5}]
    assert "env" in problem(http.get("/v1/changes?resolve=true"), 400)["detail"]


class ChunkedSse:
    """A chunked SSE response read off a raw socket, chunk by chunk, only when asked to."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader
        self.text = ""
        self.kinds: list[str] = []
        self.puts: list[int] = []

    async def read_until(self, done: Callable[[], bool]) -> None:
        for _ in range(100_000):
            if done():
                return
            size = int((await self.reader.readline()).strip(), 16)
            self.text += (await self.reader.readexactly(size + 2))[:-2].decode()
            *blocks, self.text = self.text.split("\n\n")
            for block in blocks:
                lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
                self.kinds.append(lines.get("event", ""))
                if lines.get("event") == "put":
                    self.puts.append(json.loads(lines["data"])["revision"])


async def test_sse_watcher_that_stops_reading_gets_every_event_once_and_in_order(
    server: ServerProcess, tenant: dict[str, str]
) -> None:
    """A reader that stops reading fills its socket: events stop being pushed to it and its own
    (awaited) writes take over; when it reads again it gets every event once, in order, and a
    watcher beside it is never held up by it."""
    import socket

    base = f"http://127.0.0.1:{server.port}"
    token = tenant["token"]
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills after a few events
    sock.connect(("127.0.0.1", server.port))
    reader, writer_ = await asyncio.open_connection(sock=sock, limit=1 << 20)
    request = (
        f"GET /v1/watch?env=production&prefix=stall&progress=0s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
    )
    writer_.write(request.encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert b"200" in head.split(b"\r\n", 1)[0] and b"chunked" in head.lower()
    stalled = ChunkedSse(reader)
    await asyncio.wait_for(stalled.read_until(lambda: "progress" in stalled.kinds), 10)  # caught up

    # 40 events of ~200 KB: more than the kernel's send buffer (at most 4 MB) and this socket's
    # small receive buffer hold, so the server's own buffer passes its push limit long before the end
    total = 40
    payload = "x" * 200_000
    acked: list[int] = []
    beside: list[int] = []
    timeout = aiohttp.ClientTimeout(total=None, sock_read=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        other = asyncio.create_task(
            _collect_sse(session, f"{base}/v1/watch?env=production&prefix=stall", token, total, beside)
        )
        await asyncio.sleep(0.5)
        headers = {"Authorization": f"Bearer {token}"}
        for i in range(total):
            body = {"value": {"i": i, "pad": payload}}
            url = f"{base}/v1/configs/stall/k?env=global"
            async with session.put(url, json=body, headers=headers) as reply:
                assert reply.status in (200, 201), await reply.text()
                acked.append((await reply.json())["revision"])
        async with asyncio.timeout(30):
            await other  # the other watcher has everything while this one still isn't reading
        assert beside == acked
        await asyncio.wait_for(stalled.read_until(lambda: len(stalled.puts) >= total), 30)
    writer_.close()
    assert stalled.puts == acked


async def _collect_sse(
    session: aiohttp.ClientSession, url: str, token: str, want: int, seen: list[int]
) -> None:
    headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
    async with session.get(url, headers=headers) as resp:
        assert resp.status == 200
        text = ""
        async for chunk in resp.content.iter_any():
            text += chunk.decode()
            *blocks, text = text.split("\n\n")
            for block in blocks:
                lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
                if lines.get("event") == "put":
                    seen.append(json.loads(lines["data"])["revision"])
            if len(seen) >= want:
                return
