"""The cluster interfaces for one process: no notices to send, no shared cache, counters in memory.

One server on SQLite uses these alone. Replicas on PostgreSQL without Redis use them too: their
``LocalNotifier`` says it is not connected, so each replica polls the store for other replicas'
commits (``server.cluster.node``). The Redis counters fall back to ``MemoryCounters`` while
Redis can't be reached, so limits still hold per replica.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping, Sequence

from server.cluster.base import Deliver, LoadUsage, Notice, Resync, Usage

USAGE_TTL_SECONDS = 600.0  # a known usage is read again from the store this often (drift repair)
_MAX_KEYS = 100_000


def retry_after(previous: int, current: int, elapsed: float, window: float, limit: int) -> float:
    """Seconds until a sliding window (``previous`` events in the last fixed window, ``current``
    in this one, ``elapsed`` seconds into it) would admit one more event under ``limit``."""
    if current >= limit:  # not in this window: the next one, once this window's weight has decayed
        room = max(limit - 1, 0)
        into_next = window * (1 - room / current) if current else 0.0
        wait = (window - elapsed) + into_next
    else:  # the previous window's weight must decay enough
        room = limit - 1 - current
        wait = window * (1 - room / previous) - elapsed if previous else 0.0
    return max(wait, 0.001)


def window_estimate(previous: int, current: int, elapsed: float, window: float) -> float:
    """Events in the last ``window`` seconds, the previous fixed window weighted by its overlap."""
    return previous * (window - elapsed) / window + current


def over_limit(usage: Mapping[str, int], deltas: Mapping[str, int], limits: Mapping[str, int]) -> str | None:
    """The first field a positive delta would take over its limit, if any."""
    for name, delta in deltas.items():
        limit = limits.get(name)
        if delta > 0 and limit is not None and usage.get(name, 0) + delta > limit:
            return name
    return None


class LocalNotifier:
    """No other replica to tell. ``alone``: nobody else writes to the store (SQLite), so nothing is
    missed; otherwise (a shared store without Redis) report not connected, so the store is polled."""

    def __init__(self, *, alone: bool) -> None:
        self.alone = alone

    @property
    def connected(self) -> bool:
        return self.alone

    async def publish(self, notices: Sequence[Notice]) -> bool:
        return self.alone

    async def run(self, deliver: Deliver, resync: Resync) -> None:
        resync()
        await asyncio.Event().wait()  # until cancelled


class NoSharedCache:
    """Every get is a miss; nothing is kept."""

    async def get(self, tenant_id: str, key: str) -> bytes | None:
        return None

    async def put(self, tenant_id: str, key: str, data: bytes) -> None:
        return None


class MemoryCounters:
    """Sliding-window rate counters and quota usage in this process."""

    def __init__(self, *, usage_ttl: float = USAGE_TTL_SECONDS) -> None:
        self.usage_ttl = usage_ttl
        self._windows: dict[str, tuple[int, int, int]] = {}  # key -> (window index, previous, current)
        self._usage: dict[str, tuple[float, Usage]] = {}  # key -> (loaded at, usage)
        self._loading: dict[str, asyncio.Lock] = {}

    async def hit(self, key: str, limit: int, window: float, now: float) -> float:
        return self.hit_now(key, limit, window, now)

    def hit_now(self, key: str, limit: int, window: float, now: float) -> float:
        index = math.floor(now / window)
        previous, current = 0, 0
        state = self._windows.get(key)
        if state is not None:
            if state[0] == index:
                previous, current = state[1], state[2]
            elif state[0] == index - 1:
                previous = state[2]
        elapsed = now - index * window
        if window_estimate(previous, current, elapsed, window) + 1 > limit:
            self._windows[key] = (index, previous, current)
            return retry_after(previous, current, elapsed, window, limit)
        if len(self._windows) >= _MAX_KEYS and key not in self._windows:
            self._windows.clear()
        self._windows[key] = (index, previous, current + 1)
        return 0.0

    async def reserve(
        self, key: str, deltas: Mapping[str, int], limits: Mapping[str, int], load: LoadUsage
    ) -> str | None:
        usage = await self._known(key, load)
        over = over_limit(usage, deltas, limits)
        if over is None:
            for name, delta in deltas.items():
                usage[name] = usage.get(name, 0) + delta
        return over

    async def add(self, key: str, deltas: Mapping[str, int]) -> None:
        known = self._usage.get(key)
        if known is not None:
            for name, delta in deltas.items():
                known[1][name] = known[1].get(name, 0) + delta

    def set_usage(self, key: str, usage: Usage) -> None:
        """Take a usage read elsewhere (the Redis counters hand theirs over while Redis is down)."""
        if len(self._usage) >= _MAX_KEYS and key not in self._usage:
            self._usage.clear()
        self._usage[key] = (time.monotonic(), dict(usage))

    async def _known(self, key: str, load: LoadUsage) -> Usage:
        known = self._usage.get(key)
        if known is not None and time.monotonic() - known[0] < self.usage_ttl:
            return known[1]
        lock = self._loading.setdefault(key, asyncio.Lock())
        async with lock:
            known = self._usage.get(key)
            if known is None or time.monotonic() - known[0] >= self.usage_ttl:
                self.set_usage(key, await load())
                known = self._usage[key]
        self._loading.pop(key, None)
        return known[1]
