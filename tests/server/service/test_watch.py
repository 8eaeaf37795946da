"""WatchService over a real SQLite file: resolved-value events, replay, snapshot, permissions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from server.keys import LocalKeyProvider
from server.service import Ctx, Services
from server.service.watch import Subscription, WatchEvent
from server.storage import SQLiteStorage
from shared.crypto import new_key
from shared.errors import InvalidInput, PermissionDenied
from shared.models import ConfigRef, Environment
from tests.server.service.conftest import FakeClock, token_ctx

G, S, P = Environment.GLOBAL, Environment.STAGING, Environment.PRODUCTION
PLAIN = "sk-PLANTED-WATCH-SECRET-0123456789"


@pytest.fixture
async def world(tmp_path: Path, clock: FakeClock) -> AsyncIterator[tuple[Services, Ctx, Path]]:
    db = tmp_path / "w.db"
    master = new_key()
    async with SQLiteStorage(db) as store:
        services = Services.build(store, clock=clock, keys=LocalKeyProvider(store, master))
        _, token = await services.tenants.bootstrap("acme")
        ctx = Ctx(await services.tenants.authenticate(token, "t"), "t")
        yield services, ctx, db


async def take(sub: Subscription, count: int, timeout: float = 10.0) -> list[WatchEvent]:
    """The next ``count`` events of an open subscription (its iterator is kept on it)."""
    out: list[WatchEvent] = []
    iterator = getattr(sub, "_it", None)
    if iterator is None:
        iterator = sub.__aiter__()
        sub._it = iterator  # type: ignore[attr-defined]
    async with asyncio.timeout(timeout):
        while len(out) < count:
            out.append(await anext(iterator))
    return out


async def until_progress(sub: Subscription, timeout: float = 10.0) -> list[WatchEvent]:
    """Events up to (not including) the next progress mark."""
    out: list[WatchEvent] = []
    while True:
        (event,) = await take(sub, 1, timeout)
        if event.kind == "progress":
            return out
        out.append(event)


def summary(events: list[WatchEvent]) -> list[tuple[Any, ...]]:
    return [(e.kind, e.revision, e.namespace, e.key, e.value) for e in events]


async def put(
    services: Services, ctx: Ctx, ns: str, key: str, env: Environment, value: dict[str, Any]
) -> int:
    result = await services.configs.put(ctx, ConfigRef(ns, key, env), value)
    return result.version.revision


async def test_a_global_change_reaches_only_environments_whose_value_it_changes(
    world: tuple[Services, Ctx, Path],
) -> None:
    services, ctx, _ = world
    await put(services, ctx, "gw", "routing", G, {"model": "a", "timeout": 10})
    await put(services, ctx, "gw", "routing", P, {"model": "p"})  # production overrides the model
    subs = {env: await services.watch.open(ctx, environment=env, prefixes=["gw"]) for env in (G, S, P)}
    for sub in subs.values():
        assert (await take(sub, 1))[0].kind == "progress"  # connected and caught up
    rev = await put(services, ctx, "gw", "routing", G, {"model": "b", "timeout": 10})
    marker = await put(services, ctx, "gw", "marker", G, {"n": 1})  # every environment sees this one
    got = {env: summary(await take(sub, 2 if env is not P else 1)) for env, sub in subs.items()}
    assert got[G] == [("put", rev, "gw", "routing", {"model": "b", "timeout": 10}), got[G][1]]
    assert got[S] == [("put", rev, "gw", "routing", {"model": "b", "timeout": 10}), got[S][1]]
    # production's resolved value did not change (its own model wins): no event, only the marker
    assert got[P] == [("put", marker, "gw", "marker", {"n": 1})]


async def test_replay_then_live_in_revision_order_each_once(world: tuple[Services, Ctx, Path]) -> None:
    services, ctx, _ = world
    r1 = await put(services, ctx, "app", "a", G, {"v": 1})
    r2 = await put(services, ctx, "app", "a", P, {"v": 2})
    r3 = await put(services, ctx, "other", "b", G, {"v": 3})
    await services.configs.delete(ctx, ConfigRef("app", "a", P))
    r4 = r3 + 1
    sub = await services.watch.open(ctx, environment=P, prefixes=["app"], since=0)
    replayed = await until_progress(sub)
    assert summary(replayed) == [
        ("put", r1, "app", "a", {"v": 1}),
        ("put", r2, "app", "a", {"v": 2}),
        ("put", r4, "app", "a", {"v": 1}),  # the override went: production falls back to global
    ]
    r5 = await put(services, ctx, "app", "a", G, {"v": 5})
    await services.configs.delete(ctx, ConfigRef("app", "a", G))
    live = await take(sub, 2)
    assert summary(live) == [("put", r5, "app", "a", {"v": 5}), ("delete", r5 + 1, "app", "a", None)]
    assert all(e.sha256 for e in replayed)
    # resuming from the middle replays only what came after
    again = await services.watch.open(ctx, environment=P, prefixes=["app"], since=r2)
    assert summary(await until_progress(again)) == summary([replayed[2], *live])


async def test_history_replay_equals_what_live_watchers_saw(world: tuple[Services, Ctx, Path]) -> None:
    services, ctx, db = world
    live = await services.watch.open(ctx, environment=S, progress_interval=0.1)
    await take(live, 1)
    for i in range(30):
        env = (G, S, P)[i % 3]
        await put(services, ctx, f"ns{i % 2}", f"k{i % 4}", env, {"i": i, "deep": {"x": i % 5}})
        if i % 7 == 6:
            await services.configs.delete(ctx, ConfigRef(f"ns{i % 2}", f"k{i % 4}", G))
    head = await services.core.storage.current_revision(ctx.principal.tenant_id)
    seen = await until_progress_after(live, head)
    # a second server process over the same file has no log: it recomputes from history
    async with SQLiteStorage(db) as store:
        other = Services.build(store)
        replay = await other.watch.open(ctx, environment=S, since=0)
        replayed = await until_progress(replay)
    assert [e.payload for e in replayed] == [e.payload for e in seen]
    assert len(seen) > 10


async def until_progress_after(sub: Subscription, revision: int) -> list[WatchEvent]:
    out: list[WatchEvent] = []
    while True:
        (event,) = await take(sub, 1)
        if event.kind != "progress":
            out.append(event)
        elif event.revision >= revision:
            return out


async def test_fan_out_is_shared_and_a_stuck_watcher_delays_nobody(world: tuple[Services, Ctx, Path]) -> None:
    services, ctx, _ = world
    stuck = await services.watch.open(ctx, environment=P)
    await take(stuck, 1)  # then never read again
    readers = [await services.watch.open(ctx, environment=P) for _ in range(5)]
    for reader in readers:
        await take(reader, 1)
    revisions = [await put(services, ctx, "app", f"k{i}", G, {"i": i}) for i in range(200)]
    got = [await take(reader, 200) for reader in readers]
    for events in got:
        assert [e.revision for e in events] == revisions
    # one event object per (environment, revision), shared by every watcher
    assert all(a is b for a, b in zip(got[0], got[1], strict=True))


async def test_snapshot_when_the_start_revision_was_compacted(world: tuple[Services, Ctx, Path]) -> None:
    services, ctx, _ = world
    for i in range(5):
        await put(services, ctx, "app", "a", G, {"i": i})
    last = await put(services, ctx, "app", "b", P, {"b": True})
    result = await services.watch.compact(ctx, last)
    assert result["removed_versions"] == 4
    sub = await services.watch.open(ctx, environment=P, since=1)
    (snapshot,) = await take(sub, 1)
    assert snapshot.kind == "snapshot"
    assert snapshot.revision == last
    assert [(i.namespace, i.key, i.value) for i in snapshot.items] == [
        ("app", "a", {"i": 4}),
        ("app", "b", {"b": True}),
    ]
    assert (await take(sub, 1))[0].kind == "progress"
    live = await put(services, ctx, "app", "a", G, {"i": 9})
    assert summary(await take(sub, 1)) == [("put", live, "app", "a", {"i": 9})]
    # a start at or after the compacted revision replays normally
    after = await services.watch.open(ctx, environment=P, since=last)
    assert summary(await until_progress(after)) == [("put", live, "app", "a", {"i": 9})]


async def test_secret_rotation_is_a_change_of_each_referencing_config(
    world: tuple[Services, Ctx, Path],
) -> None:
    services, ctx, _ = world
    await services.secrets.put(ctx, "api-keys", "anthropic", PLAIN)
    value = {"model": "claude", "secrets": [{"field_path": "$.api_key", "secret_ref": "api-keys/anthropic"}]}
    await put(services, ctx, "gw", "endpoint", G, value)
    sub = await services.watch.open(ctx, environment=P, since=0)
    (first,) = await until_progress(sub)
    ref = {"field_path": "$.api_key", "secret_ref": "api-keys/anthropic", "version": 1}
    assert first.secret_refs == (ref,)
    rotated = await services.secrets.put(ctx, "api-keys", "anthropic", PLAIN + "-v2")
    (event,) = await take(sub, 1)
    assert event.kind == "put"
    assert event.revision == rotated.revision
    assert event.secret_refs[0]["version"] == 2
    assert event.sha256 == first.sha256  # the config itself is unchanged; its secret moved
    assert PLAIN.encode() not in event.payload and PLAIN.encode() not in first.payload
    # an unrelated secret changes nothing the watcher sees
    await services.secrets.put(ctx, "api-keys", "unused", PLAIN)
    marker = await put(services, ctx, "gw", "marker", G, {"m": 1})
    assert summary(await take(sub, 1)) == [("put", marker, "gw", "marker", {"m": 1})]


async def test_bad_requests_fail_before_streaming(world: tuple[Services, Ctx, Path]) -> None:
    services, ctx, _ = world
    await put(services, ctx, "app", "a", G, {"v": 1})
    with pytest.raises(InvalidInput, match="ahead"):
        await services.watch.open(ctx, environment=P, since=99)
    with pytest.raises(InvalidInput, match="since"):
        await services.watch.open(ctx, environment=P, since=-1)
    with pytest.raises(InvalidInput):
        await services.watch.open(ctx, environment=P, prefixes=["../etc"])
    with pytest.raises(InvalidInput):
        await services.watch.open(ctx, environment=P, key="a/b")
    scoped = await token_ctx(services, ctx, "service-account", namespaces=["app"])
    with pytest.raises(PermissionDenied):
        await services.watch.open(scoped, environment=P, prefixes=["billing"])
    await put(services, ctx, "billing", "b", G, {"v": 2})
    for prefixes in (["app"], []):  # no prefix: every namespace the token may read
        ok = await services.watch.open(scoped, environment=P, prefixes=prefixes, since=0)
        assert summary(await until_progress(ok)) == [("put", 1, "app", "a", {"v": 1})]


async def test_watchers_see_only_what_they_may_read(world: tuple[Services, Ctx, Path]) -> None:
    services, ctx, _ = world
    dev = await token_ctx(services, ctx, "developer")
    with pytest.raises(PermissionDenied):
        await services.watch.open(dev, environment=P)  # developers don't read production
    pii = await token_ctx(services, ctx, "tenant-admin", "pii-authorized")
    await services.configs.put(
        pii, ConfigRef("hr", "people", G), {"x": 1}, metadata={"classification": "restricted"}
    )
    await put(services, ctx, "app", "a", G, {"v": 1})
    sub = await services.watch.open(dev, environment=Environment.DEVELOPMENT, since=0)
    assert summary(await until_progress(sub)) == [("put", 2, "app", "a", {"v": 1})]  # restricted hidden
    filtered = await services.watch.open(pii, environment=G, since=0, key="people")
    assert [e.key for e in await until_progress(filtered)] == ["people"]


async def test_a_chain_change_ends_streams_and_a_resume_resolves_with_the_new_chain(
    world: tuple[Services, Ctx, Path],
) -> None:
    services, ctx, _ = world
    await put(services, ctx, "app", "a", G, {"v": 1})
    rev = await put(services, ctx, "app", "a", S, {"v": 2})
    sub = await services.watch.open(ctx, environment=P, since=0)
    assert [e.value for e in await until_progress(sub)] == [{"v": 1}, {"v": 2}]
    await services.tenants.put_settings(ctx, {"chains": {"production": ["global", "production"]}})
    with pytest.raises(StopAsyncIteration):
        await take(sub, 1)
    resumed = await services.watch.open(ctx, environment=P, since=rev)
    assert await until_progress(resumed) == []
    marker = await put(services, ctx, "app", "a", G, {"v": 3})
    # staging is no longer in production's chain: the global change shows through
    assert summary(await take(resumed, 1)) == [("put", marker, "app", "a", {"v": 3})]


async def test_push_sink_delivers_once_and_hands_over_when_it_refuses_or_fails(
    world: tuple[Services, Ctx, Path],
) -> None:
    """Events pushed to a waiting watcher's sink are not yielded again; when a sink says it
    is not ready, or raises, that watcher's iterator takes over from where pushes stopped,
    and the other watchers' pushes go on."""
    services, ctx, _ = world
    await put(services, ctx, "p", "k", G, {"n": 0})
    good, refusing, failing = [
        await services.watch.open(ctx, environment=P, prefixes=["p"], progress_interval=0) for _ in range(3)
    ]
    pushed: dict[str, list[int]] = {"good": [], "refusing": [], "failing": []}
    accept = {"refusing": True}

    def sink(name: str) -> Any:
        def send(event: WatchEvent) -> None:
            if name == "failing" and len(pushed[name]) == 1:
                raise ConnectionResetError("peer went away")
            pushed[name].append(event.revision)

        return send

    good.deliver_with(lambda: True, sink("good"))
    refusing.deliver_with(lambda: accept["refusing"], sink("refusing"))
    failing.deliver_with(lambda: True, sink("failing"))
    for sub in (good, refusing, failing):
        assert (await take(sub, 1))[0].kind == "progress"
    iterated: dict[str, list[int]] = {"good": [], "refusing": [], "failing": []}

    async def drain(name: str, sub: Subscription) -> None:
        with pytest.raises(TimeoutError):
            while True:
                (event,) = await take(sub, 1, timeout=1.0)
                iterated[name].append(event.revision)

    # each stream's own task iterates, as a transport's handler does: that is where it waits
    streams = {"good": good, "refusing": refusing, "failing": failing}
    tasks = [asyncio.create_task(drain(name, sub)) for name, sub in streams.items()]
    revisions = [await put(services, ctx, "p", "k", G, {"n": i}) for i in range(1, 4)]
    for _ in range(100):
        if pushed["good"] == revisions:
            break
        await asyncio.sleep(0.02)
    accept["refusing"] = False
    revisions.append(await put(services, ctx, "p", "k", G, {"n": 4}))
    revisions.append(await put(services, ctx, "p", "k", G, {"n": 5}))
    await asyncio.gather(*tasks)
    assert pushed["good"] == revisions  # every change, pushed, in order
    assert iterated["good"] == []  # and none of them again through the iterator
    # what was pushed plus what was then iterated: every change once, in order
    assert pushed["refusing"] + iterated["refusing"] == revisions
    assert iterated["refusing"]  # the iterator really took over
    assert pushed["failing"] + iterated["failing"] == revisions
    assert pushed["failing"] == revisions[:1]
