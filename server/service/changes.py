"""The change feed: wake waiters when a tenant's revision moves; long-poll over it.

``ChangeHub`` keeps, per tenant, the newest committed revision and an event that
is replaced on every commit, so any number of waiters sleep on one object and a
commit wakes them all at once (no per-watcher work at commit time). ``poll``
answers "everything after revision R" from the store, filtered by the same
policy decisions as a read, and waits (bounded) when there is nothing yet. A
wake-up does not guarantee a visible change (it may be one the caller can't
read): the caller simply gets the current revision back.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import Any

from server.service.configs import ConfigService
from server.service.core import Core, Ctx
from shared.errors import InvalidInput
from shared.models import ConfigVersion, Environment

MAX_WAIT_SECONDS = 300.0
MAX_CHANGES = 1000
_WAIT_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m)?", re.ASCII)


def parse_wait(raw: str | None) -> float:
    """``30s``, ``500ms``, ``2m`` or plain seconds; at most five minutes."""
    if raw is None or raw == "":
        return 0.0
    match = _WAIT_RE.fullmatch(raw.strip())
    if match is None:
        raise InvalidInput(f"wait must be a duration like 30s, 500ms or 2m, got {raw[:40]!r}")
    number, unit = float(match.group(1)), match.group(2) or "s"
    seconds = number / 1000 if unit == "ms" else number * 60 if unit == "m" else number
    if seconds > MAX_WAIT_SECONDS:
        raise InvalidInput(f"wait may be at most {int(MAX_WAIT_SECONDS)}s")
    return seconds


class ChangeHub:
    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    def notify(self, tenant_id: str) -> None:
        """A commit happened in the tenant: wake everyone waiting on it."""
        event = self._events.pop(tenant_id, None)
        if event is not None:
            event.set()

    def event(self, tenant_id: str) -> asyncio.Event:
        """The event the next commit sets. Take it *before* reading, so no commit slips between."""
        event = self._events.get(tenant_id)
        if event is None:
            event = self._events[tenant_id] = asyncio.Event()
        return event


async def _sleep_on(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


def _change(version: ConfigVersion) -> dict[str, Any]:
    out: dict[str, Any] = {
        "revision": version.revision,
        "type": "delete" if version.tombstone else "put",
        "namespace": version.namespace,
        "key": version.key,
        "environment": version.environment.value,
        "version": version.version,
        "change_type": version.change_type.value,
        "sha256": version.sha256,
        "time": version.created_at,
    }
    if not version.tombstone:
        out["value"] = version.value
    return out


_EVENT_TYPES = {"create": "created", "update": "updated", "rollback": "updated", "delete": "deleted"}


def as_cloudevent(tenant_id: str, change: dict[str, Any]) -> dict[str, Any]:
    """One change as a CloudEvents 1.0 structured-mode JSON event."""
    return {
        "specversion": "1.0",
        "id": f"{tenant_id}/{change['revision']}",
        "source": f"/llm-config-manager/tenants/{tenant_id}",
        "type": f"com.llmconfig.config.{_EVENT_TYPES[change['change_type']]}",
        "subject": f"{tenant_id}/{change['namespace']}/{change['key']}",
        "time": change["time"],
        "datacontenttype": "application/json",
        "environment": change["environment"],
        "revision": change["revision"],
        "data": change,
    }


class ChangeFeed:
    def __init__(self, core: Core, configs: ConfigService, hub: ChangeHub) -> None:
        self.core = core
        self.configs = configs
        self.hub = hub

    async def poll(
        self,
        ctx: Ctx,
        since: int,
        *,
        wait: float = 0.0,
        prefix: str | None = None,
        environment: Environment | None = None,
    ) -> dict[str, Any]:
        """Changes after ``since`` the caller may read; waits up to ``wait`` seconds for the first."""
        if since < 0:
            raise InvalidInput("since must be a revision (0 or more)")
        tenant_id = ctx.principal.tenant_id
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            woken = self.hub.event(tenant_id)  # a commit from here on sets it
            current = await self.core.storage.current_revision(tenant_id)
            rows = await self.configs.changes_since(ctx, since, limit=MAX_CHANGES)
            picked = [
                r
                for r in rows
                if (environment is None or r.environment is environment)
                and (
                    prefix is None
                    or r.namespace == prefix
                    or r.namespace.startswith(prefix.rstrip("/") + "/")
                )
            ]
            remaining = deadline - loop.time()
            if picked or remaining <= 0 or (current > since and not rows):
                if len(rows) >= MAX_CHANGES:  # truncated: resume right after the last row returned
                    last = rows[-1].revision
                else:  # rows read after ``current`` may already go past it
                    last = max(current, since, rows[-1].revision if rows else 0)
                return {"revision": last, "changes": [_change(r) for r in picked]}
            if rows:  # changes exist but none the caller wants: move past them and keep waiting
                since = rows[-1].revision
            await _sleep_on(woken, remaining)
