"""This server as one replica among several: tell the others about local commits, act on theirs.

Every place that drops a per-process cache or wakes watchers after a commit is a listener
list on a service (configs and secrets commits, settings changes, token revocations); ``Node``
adds one listener to each that queues a ``Notice``, and a publisher task sends the queue
(coalesced per tenant and kind, with the tenant's revision read once) through the
``Notifier``. A notice from another replica runs the very hooks a local commit runs: the
config and secret caches drop the tenant, watchers and long-polls wake and read the new rows
from the store by revision (so events stay in revision order and none is lost or repeated
however notices arrive), settings and tokens are read again.

Notices can be lost (Redis restarts, a replica reconnects), so the store is also polled:
every ``fallback_poll`` seconds while the notifier is not connected (Redis down, or no
Redis: every replica then finds the others' commits this way), every ``safety_poll`` seconds
while it is, and at once after each (re)subscription. A poll compares each watched tenant's
revision with the newest this replica has acted on, re-reads cached settings, and drops
cached tokens, so a revocation or settings change made elsewhere holds here within one poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

import structlog

from server.auth import Authenticator
from server.cluster.base import Counters, Kind, Notice, Notifier, SharedCache
from server.cluster.limits import Limits
from server.cluster.local import LocalNotifier, MemoryCounters, NoSharedCache
from server.cluster.redis_bus import RedisNotifier
from server.cluster.redis_link import RedisCache, RedisCounters, RedisLink
from server.service import Services
from server.service.policy import Principal
from shared.errors import LLMConfigError

log = structlog.get_logger("llmcm.cluster")

PUBLISH_RETRY_SECONDS = 0.25


class Cluster:
    """The pieces one server runs with: alone (SQLite), replicas without Redis, or with Redis.

    An async context manager (closes the Redis client); ``wire`` hooks it into the services and
    returns the ``Node`` whose ``run`` is the background work."""

    def __init__(
        self,
        *,
        replicated: bool,
        redis_url: str = "",
        redis_prefix: str = "llmcm:",
        fallback_poll: float = 1.0,
        safety_poll: float = 10.0,
    ) -> None:
        self.replicated = replicated
        self.fallback_poll = fallback_poll
        self.safety_poll = safety_poll
        self.link = RedisLink(redis_url, redis_prefix) if redis_url else None
        self.notifier: Notifier
        self.cache: SharedCache
        self.counters: Counters
        if self.link is not None:
            self.notifier = RedisNotifier(self.link)
            self.cache = RedisCache(self.link)
            self.counters = RedisCounters(self.link)
        else:
            self.notifier = LocalNotifier(alone=not replicated)
            self.cache = NoSharedCache()
            self.counters = MemoryCounters()

    async def __aenter__(self) -> Cluster:
        if self.link is not None and not await self.link.ping():
            # serve anyway: the store is the truth, Redis only speeds things up
            log.warning("redis_down_at_start", redis=self.link.url_for_logs, fallback="polling the store")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self.link is not None:
            link, self.link = self.link, None
            await link.close()

    def wire(self, services: Services) -> Node:
        services.core.replicated = self.replicated
        if self.replicated and not isinstance(self.cache, NoSharedCache):
            services.configs.shared = self.cache
        node = Node(services, self.notifier, fallback_poll=self.fallback_poll, safety_poll=self.safety_poll)
        if self.replicated:  # alone on its store (SQLite), a server has nobody to tell or hear
            node.attach()
        return node


class Node:
    def __init__(
        self,
        services: Services,
        notifier: Notifier,
        *,
        fallback_poll: float = 1.0,
        safety_poll: float = 10.0,
        replica_id: str | None = None,
    ) -> None:
        self.services = services
        self.notifier = notifier
        self.fallback_poll = fallback_poll
        self.safety_poll = safety_poll
        self.replica_id = replica_id or secrets.token_hex(8)
        self._applying = False  # True while other replicas' changes are applied: not ours to publish
        self._pending: dict[tuple[str, Kind], None] = {}  # (tenant, kind) to publish, in order
        self._publish_wake = asyncio.Event()
        self._poll_wake = asyncio.Event()
        self._resync = False
        self._seen: dict[str, int] = {}  # tenant -> newest revision this replica has acted on
        self.received = 0  # notices from other replicas applied
        self.attached = False

    def attach(self) -> None:
        self.attached = True
        s = self.services
        s.configs.commit_listeners.append(self._listener("config"))
        s.secrets.commit_listeners.append(self._listener("secret"))
        s.core.settings_listeners.append(self._listener("settings"))
        s.tenants.token_listeners.append(self._listener("tokens"))

    def _listener(self, kind: Kind) -> Callable[[str], None]:
        def committed(tenant_id: str) -> None:
            if not self._applying:
                self._pending[(tenant_id, kind)] = None
                self._publish_wake.set()

        return committed

    async def run(self) -> None:
        """Publish, listen and poll until cancelled (nothing to do unless attached)."""
        if not self.attached:
            await asyncio.Event().wait()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._supervised("publish", self._publisher), name="cluster-publish")
            tasks.create_task(
                self._supervised("listen", lambda: self.notifier.run(self._deliver, self._resubscribed)),
                name="cluster-listen",
            )
            tasks.create_task(self._supervised("poll", self._poller), name="cluster-poll")

    @staticmethod
    async def _supervised(name: str, loop: Callable[[], Awaitable[None]]) -> None:
        """Run ``loop`` again (after a pause) if it fails: a bug here must not stop the server,
        whose store stays the truth however notices fare."""
        while True:
            try:
                await loop()
            except Exception as exc:
                log.error("cluster_task_failed", task=name, error_type=type(exc).__name__)
                await asyncio.sleep(1.0)

    # -- sending -----------------------------------------------------------------------------

    async def _publisher(self) -> None:
        while True:
            await self._publish_wake.wait()
            self._publish_wake.clear()
            batch = list(self._pending)
            self._pending.clear()
            if not batch:
                continue
            revisions = {
                tenant: await self._revision(tenant) for tenant in dict.fromkeys(t for t, _ in batch)
            }
            for tenant, revision in revisions.items():
                # our own commits: everything up to here is in the store, so a poll need not wake
                # this tenant again (watchers read by revision whatever woke them)
                self._seen[tenant] = max(self._seen.get(tenant, 0), revision)
            notices = [Notice(tenant, revisions[tenant], kind, self.replica_id) for tenant, kind in batch]
            if not await self.notifier.publish(notices):
                for slot in batch:  # keep them (after anything newer) until the notifier is back
                    self._pending.setdefault(slot, None)
                await asyncio.sleep(PUBLISH_RETRY_SECONDS)
                self._publish_wake.set()

    async def _revision(self, tenant_id: str) -> int:
        try:
            return await self.services.core.storage.current_revision(tenant_id)
        except LLMConfigError:
            return 0

    # -- receiving ---------------------------------------------------------------------------

    def _deliver(self, notice: Notice) -> None:
        if notice.origin == self.replica_id:
            return
        self.received += 1
        self._apply(notice.tenant_id, (notice.kind,))
        if notice.kind in ("config", "secret"):
            self._seen[notice.tenant_id] = max(self._seen.get(notice.tenant_id, 0), notice.revision)

    def _resubscribed(self) -> None:
        """Notices sent while we were not subscribed are lost: poll everything now."""
        self._resync = True
        self._poll_wake.set()

    def _apply(self, tenant_id: str, kinds: tuple[Kind, ...]) -> None:
        """Run the hooks a local commit of these kinds runs (synchronously: nothing of ours
        can commit in between and be mistaken for theirs)."""
        s = self.services
        self._applying = True
        try:
            for kind in kinds:
                if kind == "config":
                    s.configs.forget(tenant_id)
                    s.watch.notify(tenant_id)
                    s.changes.hub.notify(tenant_id)
                elif kind == "secret":
                    s.secrets.forget(tenant_id)  # its listeners wake watchers and long-polls
                elif kind == "settings":
                    s.core.forget_settings(tenant_id)
                else:
                    s.tenants.forget_tokens(tenant_id)
        finally:
            self._applying = False

    # -- polling -----------------------------------------------------------------------------

    async def _poller(self) -> None:
        last = time.monotonic()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.fallback_poll):
                    await self._poll_wake.wait()
            self._poll_wake.clear()
            resync, self._resync = self._resync, False
            now = time.monotonic()
            if resync or not self.notifier.connected or now - last >= self.safety_poll:
                last = now
                try:
                    await self.poll(wake_all=resync)
                except LLMConfigError as exc:  # the store is down: the next round tries again
                    log.warning("cluster_poll_failed", error=exc.code, retriable=exc.retriable)

    async def poll(self, *, wake_all: bool = False) -> None:
        """Act on whatever other replicas committed that no notice told us about."""
        s = self.services
        tenants = dict.fromkeys([*s.watch.tenants(), *s.changes.hub.tenants()])
        for tenant_id in tenants:
            revision = await s.core.storage.current_revision(tenant_id)
            if wake_all or revision > self._seen.get(tenant_id, 0):
                self._seen[tenant_id] = max(self._seen.get(tenant_id, 0), revision)
                self._apply(tenant_id, ("config", "secret"))
        for tenant_id in s.core.loaded_tenants():
            if await s.core.settings_changed(tenant_id):
                self._apply(tenant_id, ("settings",))
        self._applying = True
        try:
            s.tenants.forget_tokens()  # revocations made elsewhere: read each token again
        finally:
            self._applying = False


class MeteredAuthenticator(Authenticator):
    """An ``Authenticator`` that counts every authenticated call against its tenant's rate
    limit (REST and gRPC both authenticate through it)."""

    def __init__(self, limits: Limits, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits

    async def authenticate(
        self,
        authorization: str | None,
        peer_uris: Callable[[], list[str] | None],
        request_id: str,
    ) -> Principal:
        principal = await super().authenticate(authorization, peer_uris, request_id)
        await self.limits.count_call(principal.tenant_id)
        return principal
