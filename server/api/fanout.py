"""What the SSE and gRPC watch endpoints share to fan one event out to many watchers cheaply.

``Encodings``: the watch service hands the very same event object to every watcher of an
environment, so each transport encodes it once (an SSE frame, a protobuf) and looks the bytes
up by the event's identity; entries hold their events (an id is not reused while its entry
lives) and are bounded in count and bytes, oldest first.

``StallGuard``: a watch stream writes an event, then waits for the next. A client that stops
reading fills its connection's buffers until a write blocks; after ``limit`` seconds the stream
is ended (the client resumes later from its last revision) instead of holding memory for ever.
One ticker per guard looks at every open stream about once a second: a timer per write per
watcher (what ``asyncio.timeout`` around each write costs) was a large share of the fan-out.

    guard = StallGuard(30.0)
    stream = guard.open()                 # the current task
    try:
        for event in events:
            stream.busy()
            await write(encodings.get(event))
            stream.idle()
    except asyncio.CancelledError:
        if not stream.claim():            # not ours: the client went away, or shutdown
            raise
        ...                               # too slow: end the stream, naming where to resume
    finally:
        guard.close(stream)

A stream is ended between ``limit`` and ``limit`` + two ticks after its write started (the
clock a write is stamped with is the guard's coarse one, which is at most a tick behind).

``tune_collector``: the garbage collector set for a process holding thousands of streams
(called once the server is built, before it serves).
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable
from typing import Any

TICK_SECONDS = 1.0
GC_YOUNG_THRESHOLD = 20_000  # allocations between young collections (Python's default: 700)
GC_MIDDLE_THRESHOLD = 20  # young collections between middle ones (default 10)


class Encodings:
    """``encode(event)`` once per shared event; ``get(event)`` returns the bytes from then on."""

    def __init__(self, encode: Callable[[Any], bytes], *, entries: int = 4096, size: int = 32 << 20) -> None:
        self._encode = encode
        self._entries = entries
        self._size = size
        self._bytes = 0
        self._cache: dict[int, tuple[Any, bytes]] = {}

    def get(self, event: Any) -> bytes:
        found = self._cache.get(id(event))
        if found is not None and found[0] is event:
            return found[1]
        data = self._encode(event)
        if event.kind != "snapshot":  # a snapshot is made for one watcher
            cache = self._cache
            cache[id(event)] = (event, data)
            self._bytes += len(data)
            while len(cache) > self._entries or (self._bytes > self._size and len(cache) > 1):
                self._bytes -= len(cache.pop(next(iter(cache)))[1])
        return data


class Stream:
    """One stream's write state; ``busy()`` before a write, ``idle()`` after it."""

    __slots__ = ("_baseline", "_guard", "_task", "since", "stalled")

    def __init__(self, guard: StallGuard, task: asyncio.Task[object]) -> None:
        self._guard = guard
        self._task = task
        self._baseline = task.cancelling()
        self.since = 0.0  # the guard's clock when the pending write started; 0: no write pending
        self.stalled = False

    def busy(self) -> None:
        self.since = self._guard.now

    def idle(self) -> None:
        self.since = 0.0

    def claim(self) -> bool:
        """Whether the cancellation being handled is this guard's; if so it is absorbed.

        False when the stream was not stalled, or when someone else cancelled the task too
        (that cancellation wins and must propagate).
        """
        if not self.stalled:
            return False
        return self._task.uncancel() <= self._baseline

    def _cancel(self) -> None:
        self.stalled = True
        self._task.cancel("slow watcher")


class StallGuard:
    """Ends streams whose current write started more than ``limit`` seconds ago."""

    def __init__(self, limit: float, tick: float = TICK_SECONDS) -> None:
        self.limit = limit
        self.tick = tick
        self.now = 0.0  # a coarse clock (the loop's), advanced on every tick
        self._streams: dict[Stream, None] = {}
        self._timer: asyncio.TimerHandle | None = None

    def open(self) -> Stream:
        """Watch the current task's writes until ``close``."""
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("StallGuard.open() must be called from a task")
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self.now = loop.time()
            self._timer = loop.call_at(self.now + self.tick, self._sweep)
        stream = Stream(self, task)
        self._streams[stream] = None
        return stream

    def close(self, stream: Stream) -> None:
        self._streams.pop(stream, None)
        if not self._streams and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _sweep(self) -> None:
        assert self._timer is not None
        loop = asyncio.get_running_loop()
        self.now = now = loop.time()
        oldest = now - self.limit - self.tick  # ``since`` may be up to a tick early
        for stream in self._streams:
            if stream.since and stream.since <= oldest and not stream.stalled:
                stream._cancel()
        self._timer = loop.call_at(now + self.tick, self._sweep) if self._streams else None

    @property
    def streams(self) -> int:
        return len(self._streams)


def tune_collector() -> None:
    """Freeze what startup built and widen the young generation, for many open streams.

    Every event fanned out to N streams allocates a few objects per stream (futures, the
    transports' per-write state), and with Python's defaults thousands of them are alive at
    each young collection: they get promoted, and full collections, which scan every object
    of every open stream (about 60 each over gRPC), follow every event or two. At 5,000 gRPC
    watchers that was over a third of the server's CPU and pauses of 150-250 ms in the middle
    of fan-outs. Objects made by startup (modules, services, the app) are permanent: frozen,
    full collections never scan them again; a wider young generation lets a fan-out's
    short-lived objects die before a collection sees them.
    """
    gc.collect()
    gc.freeze()
    young, middle, old = gc.get_threshold()
    gc.set_threshold(max(young, GC_YOUNG_THRESHOLD), max(middle, GC_MIDDLE_THRESHOLD), old)
