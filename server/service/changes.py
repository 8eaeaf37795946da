"""The change feed: wake waiters when a tenant's revision moves; long-poll over it.

``ChangeHub`` keeps, per tenant, the newest committed revision and an event that
is replaced on every commit, so any number of waiters sleep on one object and a
commit wakes them all at once (no per-watcher work at commit time). ``poll``
answers "everything after revision R" from the store, filtered by the same
policy decisions as a read, and waits (bounded) when there is nothing yet. A
wake-up does not guarantee a visible change (it may be one the caller can't
read): the poll then goes on waiting, and at its deadline the caller gets the
current revision back.

The feed merges, in revision order, config versions and secret events: a new
version of a secret (``created``, ``rotated``) and the notices that have no version
row (``revoked``, ``rotation_due``). Secret events are metadata only, never a value,
a ciphertext or a wrapped key, and are shown to exactly those who may list the secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from server.service import policy
from server.service.core import Core, Ctx
from server.service.policy import Action
from server.service.rotation import due_at
from server.service.secrets import SecretService, served_environments
from server.storage.base import SecretEvent
from shared.errors import InvalidInput
from shared.models import ConfigVersion, Environment, SecretVersion

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

    def tenants(self) -> list[str]:
        """Tenants someone has waited on (the cluster layer wakes them when notices may be lost)."""
        return list(self._events)

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


KINDS = frozenset({"config", "secret"})


def parse_kinds(raw: str | None, default: frozenset[str]) -> frozenset[str]:
    """``config``, ``secret`` or ``config,secret``; ``default`` when not given."""
    if raw is None or raw.strip() == "":
        return default
    kinds = frozenset(part.strip() for part in raw.split(","))
    if not kinds <= KINDS:
        raise InvalidInput(f"kinds must be config, secret or config,secret, got {raw[:40]!r}")
    return kinds


def _change(version: ConfigVersion) -> dict[str, Any]:
    out: dict[str, Any] = {
        "kind": "config",
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


def _secret_head(kind: str, revision: int, namespace: str, key: str, environment: str) -> dict[str, Any]:
    return {
        "kind": "secret",
        "type": kind,
        "revision": revision,
        "namespace": namespace,
        "key": key,
        "environment": environment,  # stored for; it serves every environment in "serves"
        "serves": [e.value for e in served_environments(environment)],
    }


def _secret_version_change(record: SecretVersion) -> dict[str, Any]:
    """A new version: ``created`` (the first) or ``rotated``. Metadata only, never the sealed value
    or its wrapped key."""
    environment = str(record.metadata.get("environment", Environment.GLOBAL.value))
    kind = "created" if record.version == 1 else "rotated"
    out = _secret_head(kind, record.revision, record.namespace, record.key, environment)
    out["version"] = record.version
    if record.version > 1:
        out["previous_version"] = record.version - 1
    interval = record.metadata.get("rotation_interval")
    if interval:
        out["rotation_interval"] = interval
        out["due_at"] = due_at(record)
    if record.expires_at:
        out["expires_at"] = record.expires_at
    out["author"] = record.author
    out["time"] = record.created_at
    return out


def _notice_change(event: SecretEvent) -> dict[str, Any]:
    """A notice with no version row: ``revoked``, ``rotation_due``."""
    environment = str(event.data.get("environment", Environment.GLOBAL.value))
    out = _secret_head(event.kind, event.revision, event.namespace, event.key, environment)
    if len(event.versions) == 1:
        out["version"] = event.versions[0]
    out["versions"] = list(event.versions)
    out.update({k: v for k, v in event.data.items() if k not in out})
    out["time"] = event.created_at
    return out


_EVENT_TYPES = {"create": "created", "update": "updated", "rollback": "updated", "delete": "deleted"}


def as_cloudevent(tenant_id: str, change: dict[str, Any], *, id_suffix: str = "") -> dict[str, Any]:
    """One change as a CloudEvents 1.0 structured-mode JSON event."""
    if change.get("kind") == "secret":
        event_type = f"com.llmconfig.secret.{change['type']}"
    else:
        event_type = f"com.llmconfig.config.{_EVENT_TYPES[change['change_type']]}"
    return {
        "specversion": "1.0",
        "id": f"{tenant_id}/{change['revision']}{id_suffix}",
        "source": f"/llm-config-manager/tenants/{tenant_id}",
        "type": event_type,
        "subject": f"{tenant_id}/{change['namespace']}/{change['key']}",
        "time": change["time"],
        "datacontenttype": "application/json",
        "environment": change["environment"],
        "revision": change["revision"],
        "data": change,
    }


def as_cloudevents(tenant_id: str, changes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Changes (in revision order) as CloudEvents; ids are ``tenant/revision``, with ``-1``, ``-2``
    … appended when one revision carries several events, so every id is unique."""
    per_revision = Counter(change["revision"] for change in changes)
    seen: Counter[int] = Counter()
    out = []
    for change in changes:
        revision = change["revision"]
        seen[revision] += 1
        suffix = f"-{seen[revision]}" if per_revision[revision] > 1 else ""
        out.append(as_cloudevent(tenant_id, change, id_suffix=suffix))
    return out


@dataclass(frozen=True, slots=True)
class _Item:
    namespace: str
    environments: tuple[Environment, ...]  # a config row's environment; the ones a secret serves
    change: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Batch:
    items: list[_Item]  # what the caller may see, in revision order
    last: int  # the newest revision read (0: none)
    truncated: bool  # more rows wait after ``last``


def _under(namespace: str, prefix: str | None) -> bool:
    return prefix is None or namespace == prefix or namespace.startswith(prefix.rstrip("/") + "/")


class ChangeFeed:
    def __init__(self, core: Core, hub: ChangeHub, secrets: SecretService) -> None:
        self.core = core
        self.hub = hub
        self.secrets = secrets

    async def poll(
        self,
        ctx: Ctx,
        since: int,
        *,
        wait: float = 0.0,
        prefix: str | None = None,
        environment: Environment | None = None,
        kinds: frozenset[str] = KINDS,
    ) -> dict[str, Any]:
        """Changes after ``since`` the caller may see; waits up to ``wait`` seconds for the first.

        ``kinds`` picks config changes, secret events or both; a secret event is for an
        environment when the secret serves it.
        """
        if since < 0:
            raise InvalidInput("since must be a revision (0 or more)")
        if not kinds or not kinds <= KINDS:
            raise InvalidInput("kinds must be config, secret or both")
        tenant_id = ctx.principal.tenant_id
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            woken = self.hub.event(tenant_id)  # a commit from here on sets it
            current = await self.core.storage.current_revision(tenant_id)
            batch = await self._read(ctx, since, kinds)
            picked = [
                item.change
                for item in batch.items
                if _under(item.namespace, prefix)
                and (environment is None or environment in item.environments)
            ]
            # every revision up to here is read (rows read after ``current`` may go past it)
            seen = batch.last if batch.truncated else max(current, since, batch.last)
            remaining = deadline - loop.time()
            if picked or remaining <= 0:
                return {"revision": seen, "changes": picked}
            since = seen  # nothing the caller wants so far: move past it and keep waiting
            if not batch.truncated:
                await _sleep_on(woken, remaining)

    async def _read(self, ctx: Ctx, since: int, kinds: frozenset[str]) -> _Batch:
        """Rows after ``since`` of the wanted kinds, merged in revision order, at most
        ``MAX_CHANGES``, filtered by what the caller may see."""
        storage = self.core.storage
        tenant_id = ctx.principal.tenant_id
        configs: list[ConfigVersion] = []
        versions: list[SecretVersion] = []
        notices: list[SecretEvent] = []
        if "config" in kinds:
            configs = await storage.changes_since(tenant_id, since, limit=MAX_CHANGES)
        if "secret" in kinds:
            versions = await storage.secret_versions_since(tenant_id, since, limit=MAX_CHANGES)
            notices = await storage.secret_events_since(tenant_id, since, limit=MAX_CHANGES)
        # a full page may have more behind it: nothing past its last revision is known yet
        full = [page[-1].revision for page in (configs, versions, notices) if len(page) >= MAX_CHANGES]
        cut = min(full) if full else None
        rows: list[tuple[int, int, ConfigVersion | SecretVersion | SecretEvent]] = sorted(
            [(r.revision, 0, r) for r in configs]
            + [(r.revision, 1, r) for r in versions]
            + [(r.revision, 2, r) for r in notices],
            key=lambda row: (row[0], row[1]),
        )
        if cut is not None:
            rows = [row for row in rows if row[0] <= cut]
        if len(rows) > MAX_CHANGES:
            cut = rows[MAX_CHANGES - 1][0]
            rows = [row for row in rows if row[0] <= cut]
        if not rows:
            return _Batch([], 0, False)
        last = cut if cut is not None else rows[-1][0]
        settings = await self.core.settings(tenant_id)
        items = []
        for _, _, row in rows:
            if isinstance(row, ConfigVersion):
                classification = row.metadata.get("classification")
                request = policy.Request(
                    Action.CONFIG_READ,
                    row.environment,
                    row.namespace,
                    classification if isinstance(classification, str) else None,
                )
                if self.core.decide(ctx.principal, request, settings).allowed:
                    items.append(_Item(row.namespace, (row.environment,), _change(row)))
                continue
            change = _secret_version_change(row) if isinstance(row, SecretVersion) else _notice_change(row)
            if self.secrets.listed(ctx, change["environment"], row.namespace, settings):
                served = served_environments(change["environment"])
                items.append(_Item(row.namespace, served, change))
        return _Batch(items, last, cut is not None)
