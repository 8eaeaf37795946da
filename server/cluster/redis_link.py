"""The Redis connection shared by the cache and the counters, and those two on top of it.

Redis is never needed to answer a request: every operation here has a short timeout, and a
failure opens a breaker for ``BREAKER_SECONDS`` during which Redis is not asked at all (cache
misses, counters kept in this process), so a dead Redis costs a request nothing after the
first failure. Redis errors are logged by event name and never leave this module.

Keys (``P`` is the configured prefix): ``P cache:<tenant>:<key>`` (a resolved config, expires
after ``CACHE_TTL_SECONDS``), ``P rate:<key>:<window>`` (sliding-window counts),
``P usage:<tenant>`` (a hash of quota usage, expires after ``USAGE_TTL_SECONDS`` so it is read
again from the store).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Awaitable, Mapping
from typing import Any, TypeVar

import redis.asyncio as aioredis
import structlog
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from server.cluster.base import LoadUsage
from server.cluster.local import USAGE_TTL_SECONDS, MemoryCounters, retry_after, window_estimate
from shared.models import redact_url

log = structlog.get_logger("llmcm.cluster")

TIMEOUT_SECONDS = 0.5
BREAKER_SECONDS = 1.0
CACHE_TTL_SECONDS = 300
T = TypeVar("T")

# KEYS: previous window, current window; ARGV: limit, previous weight (0..1), window ms.
# Admit (count) when the weighted estimate stays within the limit; answer {admitted, prev, cur}.
_HIT = """
local prev = tonumber(redis.call('GET', KEYS[1]) or '0')
local cur = tonumber(redis.call('GET', KEYS[2]) or '0')
if prev * tonumber(ARGV[2]) + cur + 1 > tonumber(ARGV[1]) then
  return {0, prev, cur}
end
redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], 2 * tonumber(ARGV[3]))
return {1, prev, cur}
"""

# KEYS: usage hash; ARGV: n, then n triples (field, delta, limit or -1).
# -1: usage unknown (load it); 0: added; else the 1-based index of the field over its limit.
_RESERVE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local n = tonumber(ARGV[1])
for i = 0, n - 1 do
  local delta = tonumber(ARGV[3 + 3 * i])
  local limit = tonumber(ARGV[4 + 3 * i])
  if delta > 0 and limit >= 0 then
    local have = tonumber(redis.call('HGET', KEYS[1], ARGV[2 + 3 * i]) or '0')
    if have + delta > limit then return i + 1 end
  end
end
for i = 0, n - 1 do
  redis.call('HINCRBY', KEYS[1], ARGV[2 + 3 * i], tonumber(ARGV[3 + 3 * i]))
end
return 0
"""

# KEYS: usage hash; ARGV: ttl seconds, then field, value pairs. Sets them only if the hash is absent.
_LOAD = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
return 1
"""

# KEYS: usage hash; ARGV: field, delta pairs. Only a known usage moves.
_ADD = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for i = 1, #ARGV, 2 do redis.call('HINCRBY', KEYS[1], ARGV[i], tonumber(ARGV[i + 1])) end
return 1
"""


class RedisLink:
    """One client with a breaker; ``prefix`` starts every key and channel."""

    def __init__(self, url: str, prefix: str, *, timeout: float = TIMEOUT_SECONDS) -> None:
        self.url_for_logs = redact_url(url)
        self.prefix = prefix
        self.client: aioredis.Redis = aioredis.Redis.from_url(
            url,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            retry=Retry(NoBackoff(), 1),  # once: a pooled connection may predate a Redis restart
        )
        self._open_until = 0.0  # the breaker: Redis is not asked before this (monotonic)
        self._down = False

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._open_until

    def failed(self, operation: str, exc: BaseException) -> None:
        self._open_until = time.monotonic() + BREAKER_SECONDS
        if not self._down:
            self._down = True
            log.warning(
                "redis_unreachable", redis=self.url_for_logs, operation=operation, error=type(exc).__name__
            )

    def succeeded(self) -> None:
        if self._down:
            self._down = False
            log.info("redis_reachable", redis=self.url_for_logs)

    async def call(self, operation: str, request: Awaitable[T]) -> T | None:
        """``request``'s answer, or None when Redis failed (the breaker opens)."""
        try:
            answer = await request
        except (RedisError, OSError, TimeoutError) as exc:
            self.failed(operation, exc)
            return None
        self.succeeded()
        return answer

    async def ping(self) -> bool:
        return bool(await self.call("ping", self.client.ping()))

    async def close(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self.client.aclose()


class RedisCache:
    """Resolved configs shared by the replicas; keys name the tenant's revision (see ConfigService)."""

    def __init__(self, link: RedisLink, *, ttl: int = CACHE_TTL_SECONDS) -> None:
        self.link = link
        self.ttl = ttl

    async def get(self, tenant_id: str, key: str) -> bytes | None:
        if not self.link.available:
            return None
        data: Any = await self.link.call(
            "cache_get", self.link.client.get(self.link.key("cache", tenant_id, key))
        )
        return data if isinstance(data, bytes) else None

    async def put(self, tenant_id: str, key: str, data: bytes) -> None:
        if self.link.available:
            await self.link.call(
                "cache_put", self.link.client.set(self.link.key("cache", tenant_id, key), data, ex=self.ttl)
            )


class RedisCounters:
    """Counters in Redis, shared by every replica; this process's ``MemoryCounters`` while Redis is down."""

    def __init__(self, link: RedisLink, *, usage_ttl: float = USAGE_TTL_SECONDS) -> None:
        self.link = link
        self.usage_ttl = usage_ttl
        self.fallback = MemoryCounters(usage_ttl=usage_ttl)
        self._hit = link.client.register_script(_HIT)
        self._reserve = link.client.register_script(_RESERVE)
        self._load = link.client.register_script(_LOAD)
        self._add = link.client.register_script(_ADD)

    async def hit(self, key: str, limit: int, window: float, now: float) -> float:
        if not self.link.available:
            return self.fallback.hit_now(key, limit, window, now)
        index = math.floor(now / window)
        elapsed = now - index * window
        weight = (window - elapsed) / window
        keys = [self.link.key("rate", key, str(index - 1)), self.link.key("rate", key, str(index))]
        answer: Any = await self.link.call(
            "rate_hit", self._hit(keys=keys, args=[limit, f"{weight:.6f}", int(window * 1000)])
        )
        if answer is None:
            return self.fallback.hit_now(key, limit, window, now)
        admitted, previous, current = (int(x) for x in answer)
        if admitted:
            return 0.0
        if window_estimate(previous, current, elapsed, window) + 1 <= limit:  # rounding at the edge
            return 0.001
        return retry_after(previous, current, elapsed, window, limit)

    async def reserve(
        self, key: str, deltas: Mapping[str, int], limits: Mapping[str, int], load: LoadUsage
    ) -> str | None:
        if not self.link.available:
            return await self.fallback.reserve(key, deltas, limits, load)
        names = list(deltas)
        args: list[Any] = [len(names)]
        for name in names:
            args += [name, deltas[name], limits.get(name, -1)]
        redis_key = self.link.key(key)
        for _ in range(2):  # a second try after loading an unknown usage
            answer: Any = await self.link.call("quota_reserve", self._reserve(keys=[redis_key], args=args))
            if answer is None:
                return await self.fallback.reserve(key, deltas, limits, load)
            code = int(answer)
            if code == 0:
                await self.fallback.add(key, deltas)  # what to go on should Redis drop out
                return None
            if code > 0:
                return names[code - 1]
            usage = await load()
            self.fallback.set_usage(key, usage)
            pairs: list[Any] = [int(self.usage_ttl)]
            for name, value in usage.items():
                pairs += [name, value]
            if await self.link.call("quota_load", self._load(keys=[redis_key], args=pairs)) is None:
                return await self.fallback.reserve(key, deltas, limits, load)
        return await self.fallback.reserve(key, deltas, limits, load)  # the usage expired as it was loaded

    async def add(self, key: str, deltas: Mapping[str, int]) -> None:
        await self.fallback.add(key, deltas)
        if self.link.available:
            args: list[Any] = []
            for name, delta in deltas.items():
                args += [name, delta]
            await self.link.call("quota_add", self._add(keys=[self.link.key(key)], args=args))
