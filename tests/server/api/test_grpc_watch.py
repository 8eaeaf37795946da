"""The gRPC Watch stream against a real server: replay, live events, progress marks, and bad
requests answered with a status before any event (never an empty stream)."""

from __future__ import annotations

import asyncio
import collections
import json
import resource
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from shared.proto.llmconfig.v1 import config_pb2 as pb
from shared.proto.llmconfig.v1 import config_pb2_grpc as pb_grpc
from tests.server.api.helpers import cfg, ok
from tests.support import Http, ServerProcess, free_port

Stub = pb_grpc.ConfigServiceStub
STREAM_TIMEOUT = 30.0
STORM = 2000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("grpc-watch")).running("--grpc-port", str(free_port())) as srv:
        yield srv


@pytest.fixture(scope="module")
def stub(server: ServerProcess) -> Iterator[Stub]:
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    try:
        yield pb_grpc.ConfigServiceStub(channel)
    finally:
        channel.close()


def auth(token_value: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token_value}")]


def take(stream: Any, count: int) -> list[Any]:
    """The next ``count`` events of a stream (each wait bounded by the call's deadline)."""
    return [next(stream) for _ in range(count)]


def value_of(event: Any) -> Any:
    return json.loads(event.value_json) if event.value_json else None


class TestReplayAndLive:
    def test_replay_then_progress_then_live(self, stub: Stub, tenant: dict[str, str], tadmin: Http) -> None:
        """since=0 replays every change in revision order, marks progress, then streams live writes."""
        for n in (1, 2):
            ok(tadmin.put(cfg("w/app", "k", "global"), {"value": {"n": n, "f": 0.5}}), 201 if n == 1 else 200)
        ok(tadmin.put(cfg("w/app", "k", "production"), {"value": {"n": 3}}), 201)
        request = pb.WatchRequest(prefixes=["w"], environment="production", since_revision=0)
        stream = stub.Watch(request, metadata=auth(tenant["token"]), timeout=STREAM_TIMEOUT)
        try:
            events = take(stream, 4)
            assert [(e.type, e.revision) for e in events] == [
                ("put", 1),
                ("put", 2),
                ("put", 3),
                ("progress", 3),
            ]
            assert [value_of(e) for e in events[:3]] == [
                {"n": 1, "f": 0.5},
                {"n": 2, "f": 0.5},
                {"n": 3, "f": 0.5},
            ]
            assert all(
                (e.namespace, e.key, e.environment) == ("w/app", "k", "production") for e in events[:3]
            )
            assert all(len(e.sha256) == 64 for e in events[:3])
            assert all(e.final for e in events)
            ok(tadmin.delete(cfg("w/app", "k", "production")))
            live = next(stream)
            assert (live.type, live.revision, value_of(live)) == ("put", 4, {"n": 2, "f": 0.5})
            ok(tadmin.delete(cfg("w/app", "k", "global")))
            gone = next(stream)
            assert (gone.type, gone.revision, gone.value_json, gone.sha256) == ("delete", 5, "", "")
        finally:
            stream.cancel()

    def test_from_now_starts_with_progress(self, stub: Stub, tenant: dict[str, str], tadmin: Http) -> None:
        """Without since_revision nothing is replayed: the first event is progress at the current revision."""
        ok(tadmin.put(cfg("n/app", "k"), {"value": {"old": True}}), 201)
        stream = stub.Watch(
            pb.WatchRequest(prefixes=["n"], environment="global"),
            metadata=auth(tenant["token"]),
            timeout=STREAM_TIMEOUT,
        )
        try:
            first = next(stream)
            assert (first.type, first.revision) == ("progress", 1)
            ok(tadmin.put(cfg("n/app", "k"), {"value": {"new": True}}))
            event = next(stream)
            assert (event.type, event.revision, value_of(event)) == ("put", 2, {"new": True})
        finally:
            stream.cancel()

    def test_only_the_watched_prefix_and_key(self, stub: Stub, tenant: dict[str, str], tadmin: Http) -> None:
        """Changes outside the prefixes or to another key are not sent."""
        ok(tadmin.put(cfg("a/x", "k"), {"value": {"i": 1}}), 201)
        ok(tadmin.put(cfg("b/x", "k"), {"value": {"i": 2}}), 201)
        ok(tadmin.put(cfg("a/x", "other"), {"value": {"i": 3}}), 201)
        request = pb.WatchRequest(prefixes=["a"], environment="global", since_revision=0, key="k")
        stream = stub.Watch(request, metadata=auth(tenant["token"]), timeout=STREAM_TIMEOUT)
        try:
            events = take(stream, 2)
            assert [(e.type, e.namespace, e.key, e.revision) for e in events] == [
                ("put", "a/x", "k", 1),
                ("progress", "", "", 3),
            ]
        finally:
            stream.cancel()


class TestIsolation:
    def test_same_names_in_two_tenants_stay_apart(self, stub: Stub, server: ServerProcess) -> None:
        """Two tenants with the same entry at the same revision each get only their own value."""
        tokens = []
        for side in ("a", "b"):
            created = ok(
                server.admin.post("/v1/tenants", {"name": f"w-{side}-{free_port()}", "admin_token": True}),
                201,
            )
            tokens.append(created["admin_token"]["token"])
            ok(server.http(tokens[-1]).put(cfg("same", "k"), {"value": {"owner": side}}), 201)
        for side, token_value in zip(("a", "b"), tokens, strict=True):
            stream = stub.Watch(
                pb.WatchRequest(environment="global", since_revision=0),
                metadata=auth(token_value),
                timeout=STREAM_TIMEOUT,
            )
            try:
                event = next(stream)
            finally:
                stream.cancel()
            assert (event.type, event.revision, value_of(event)) == ("put", 1, {"owner": side})


class TestShutdown:
    def test_stream_ends_unavailable_naming_the_resume_revision(self, tmp_path: Path) -> None:
        """SIGTERM ends open watch streams at once with UNAVAILABLE and the revision to resume from."""
        with ServerProcess(tmp_path / "data").running() as own:
            ok(own.admin.put(cfg("s", "k"), {"value": {"a": 1}}), 201)
            with grpc.insecure_channel(f"127.0.0.1:{own.grpc_port}") as channel:
                stream = pb_grpc.ConfigServiceStub(channel).Watch(
                    pb.WatchRequest(environment="global", since_revision=0),
                    metadata=auth(own.token),
                    timeout=STREAM_TIMEOUT,
                )
                assert [(e.type, e.revision) for e in take(stream, 2)] == [("put", 1), ("progress", 1)]
                own.stop()
                with pytest.raises(grpc.RpcError) as caught:
                    next(stream)
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
        assert "reconnect with since_revision=1" in (caught.value.details() or "")


class TestBadRequests:
    @pytest.mark.parametrize(
        ("request_fields", "code"),
        [
            ({}, grpc.StatusCode.INVALID_ARGUMENT),
            ({"environment": "moon"}, grpc.StatusCode.INVALID_ARGUMENT),
            ({"environment": "global", "prefixes": ["Bad Prefix"]}, grpc.StatusCode.INVALID_ARGUMENT),
            ({"environment": "global", "since_revision": -1}, grpc.StatusCode.INVALID_ARGUMENT),
            ({"environment": "global", "since_revision": 10**9}, grpc.StatusCode.INVALID_ARGUMENT),
            ({"environment": "global", "progress_interval_seconds": -1.0}, grpc.StatusCode.INVALID_ARGUMENT),
        ],
    )
    def test_invalid_request_is_a_status(
        self, stub: Stub, tenant: dict[str, str], request_fields: dict[str, Any], code: grpc.StatusCode
    ) -> None:
        """A malformed watch fails with INVALID_ARGUMENT and a message, not an empty stream."""
        stream = stub.Watch(
            pb.WatchRequest(**request_fields), metadata=auth(tenant["token"]), timeout=STREAM_TIMEOUT
        )
        with pytest.raises(grpc.RpcError) as caught:
            next(stream)
        assert caught.value.code() is code
        assert len(caught.value.details() or "") >= 10

    def test_prefix_outside_the_token_scope_is_denied(self, stub: Stub, make_token: Any) -> None:
        """A service account watching a namespace outside its scope gets PERMISSION_DENIED."""
        _, record = make_token(["service-account"], ["mine"])
        stream = stub.Watch(
            pb.WatchRequest(prefixes=["theirs"], environment="production"),
            metadata=auth(record["token"]),
            timeout=STREAM_TIMEOUT,
        )
        with pytest.raises(grpc.RpcError) as caught:
            next(stream)
        assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED

    def test_bad_token_is_unauthenticated(self, stub: Stub) -> None:
        """A watch with an unknown token is UNAUTHENTICATED."""
        stream = stub.Watch(
            pb.WatchRequest(environment="global"), metadata=auth("lcm_" + "B" * 43), timeout=STREAM_TIMEOUT
        )
        with pytest.raises(grpc.RpcError) as caught:
            next(stream)
        assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED


class TestManyStreams:
    async def test_reconnect_storm_all_connect(self, server: ServerProcess, tenant: dict[str, str]) -> None:
        """2,000 watch streams opened at once, one connection each, all get their first progress mark."""
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        count = min(STORM, resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 200)
        options = [("grpc.use_local_subchannel_pool", 1)]  # a connection of its own, as each pod has
        channels = [
            grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}", options=options) for _ in range(count)
        ]

        async def first_event(channel: Any) -> str:
            call = pb_grpc.ConfigServiceStub(channel).Watch(
                pb.WatchRequest(environment="global"), metadata=auth(tenant["token"]), timeout=STREAM_TIMEOUT
            )
            try:
                event = await call.read()
                return str(event.type)
            except grpc.RpcError as exc:
                return str(exc.code())
            finally:
                call.cancel()

        try:
            kinds = await asyncio.gather(*(first_event(channel) for channel in channels))
        finally:
            await asyncio.gather(*(channel.close() for channel in channels))
        assert count >= 1000
        assert collections.Counter(kinds) == {"progress": count}
