"""The watch fan-out helpers: per-event encodings shared by identity, and the slow-watcher guard."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from server.api.fanout import Encodings, StallGuard


@dataclass(frozen=True)
class Event:
    kind: str
    revision: int


async def test_an_event_is_encoded_once_and_equal_events_are_not_confused() -> None:
    calls: list[Event] = []

    def encode(event: Event) -> bytes:
        calls.append(event)
        return b"%s@%d" % (event.kind.encode(), event.revision)

    encodings = Encodings(encode)
    first, twin = Event("put", 7), Event("put", 7)
    assert [encodings.get(first) for _ in range(3)] == [b"put@7"] * 3
    assert calls == [first]
    assert encodings.get(twin) == b"put@7"  # another object: encoded for itself
    assert len(calls) == 2 and calls[1] is twin
    snapshot = Event("snapshot", 7)  # made for one watcher: never kept
    encodings.get(snapshot)
    encodings.get(snapshot)
    assert calls[2:] == [snapshot, snapshot]


async def test_encodings_stay_within_their_bounds() -> None:
    encodings = Encodings(lambda event: b"x" * 100, entries=3, size=250)
    events = [Event("put", n) for n in range(10)]
    for event in events:
        encodings.get(event)
    kept = encodings._cache
    assert len(kept) <= 3 and sum(len(data) for _, data in kept.values()) <= 250
    assert [kept[id(event)][0] for event in events[-2:]] == events[-2:]  # the newest are kept


async def _stuck_writer(guard: StallGuard, started: asyncio.Event) -> str:
    stream = guard.open()
    try:
        stream.busy()
        started.set()
        await asyncio.Event().wait()  # a write the client never takes
        return "written"
    except asyncio.CancelledError:
        if not stream.claim():
            raise
        return "ended as too slow"
    finally:
        guard.close(stream)


async def test_a_write_stuck_past_the_limit_ends_its_stream() -> None:
    guard = StallGuard(0.05, tick=0.01)
    started = asyncio.Event()
    task = asyncio.create_task(_stuck_writer(guard, started))
    async with asyncio.timeout(10):
        assert await task == "ended as too slow"
    assert guard.streams == 0
    assert not task.cancelled() and task.cancelling() == 0  # absorbed, not left pending


async def test_streams_that_keep_writing_or_wait_for_events_are_left_alone() -> None:
    guard = StallGuard(0.05, tick=0.01)
    stream = guard.open()
    try:
        for _ in range(30):  # ~0.3 s of writes, each quick, and idle waits in between
            stream.busy()
            await asyncio.sleep(0.001)
            stream.idle()
            await asyncio.sleep(0.01)
        assert not stream.stalled
    finally:
        guard.close(stream)
    assert guard.streams == 0


async def test_a_cancellation_that_is_not_the_guards_propagates() -> None:
    guard = StallGuard(60.0, tick=0.01)
    started = asyncio.Event()
    task = asyncio.create_task(_stuck_writer(guard, started))
    async with asyncio.timeout(10):
        await started.wait()
    task.cancel()  # the client went away (or the server stops)
    async with asyncio.timeout(10):
        done, _ = await asyncio.wait({task})
    assert task in done and task.cancelled()
    assert guard.streams == 0
