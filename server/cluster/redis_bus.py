"""Change notices over Redis pub/sub: one channel, ``<prefix>changes``, for every tenant.

Pub/sub delivers at most once: a notice published while a replica is not subscribed is gone.
So ``run`` calls ``resync`` every time its subscription is (re)established, and reports
``connected`` False from the moment it is lost (a read fails, or no answer to a ping for
``DEAD_AFTER_SECONDS``), which switches the replica to polling the store. Publishing never
waits long: a notice that can't be sent is reported back (``publish`` returns False) and kept
by the caller to be sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Sequence
from typing import Any

import structlog
from redis.exceptions import RedisError

from server.cluster.base import Deliver, Notice, Resync
from server.cluster.redis_link import RedisLink
from shared.errors import InvalidInput

log = structlog.get_logger("llmcm.cluster")

PING_EVERY_SECONDS = 1.0
DEAD_AFTER_SECONDS = 3.0
RECONNECT_MAX_SECONDS = 1.0


class RedisNotifier:
    def __init__(self, link: RedisLink) -> None:
        self.link = link
        self.channel = link.key("changes")
        self._connected = False

    @property
    def connected(self) -> bool:
        return self._connected

    async def publish(self, notices: Sequence[Notice]) -> bool:
        if not notices:
            return True
        pipe = self.link.client.pipeline(transaction=False)
        for notice in notices:
            pipe.publish(self.channel, notice.encode())
        return await self.link.call("publish", pipe.execute()) is not None

    async def run(self, deliver: Deliver, resync: Resync) -> None:
        failures = 0
        while True:
            try:
                await self._subscribed(deliver, resync)
            except (RedisError, OSError, TimeoutError) as exc:
                if self._connected or failures == 0:
                    log.warning(
                        "redis_subscription_lost", redis=self.link.url_for_logs, error=type(exc).__name__
                    )
                self._connected = False
                failures += 1
                # jittered, so replicas don't all reconnect in the same instant
                await asyncio.sleep(min(0.05 * 2**failures, RECONNECT_MAX_SECONDS) * random.uniform(0.5, 1.0))
            else:
                failures = 0

    async def _subscribed(self, deliver: Deliver, resync: Resync) -> None:
        pubsub = self.link.client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self.channel)
            self._connected = True
            log.info("redis_subscribed", redis=self.link.url_for_logs, channel=self.channel)
            resync()  # whatever was published while we were not listening is lost: look now
            heard = time.monotonic()
            pinged = heard
            while True:
                message: Any = await pubsub.get_message(timeout=PING_EVERY_SECONDS)
                now = time.monotonic()
                if message is not None:
                    heard = now
                    if message.get("type") == "message":
                        self._deliver(message.get("data"), deliver)
                    continue
                if now - heard > DEAD_AFTER_SECONDS:
                    raise TimeoutError("no answer from Redis")
                if now - pinged >= PING_EVERY_SECONDS:
                    pinged = now
                    await pubsub.ping()  # the pong arrives as a message and counts as heard
        finally:
            self._connected = False
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    @staticmethod
    def _deliver(data: Any, deliver: Deliver) -> None:
        if not isinstance(data, (bytes, str)):
            return
        try:
            notice = Notice.decode(data)
        except InvalidInput:
            log.warning("redis_notice_unreadable", size=len(data))
            return
        deliver(notice)
