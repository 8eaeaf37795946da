"""Rotation reminders: announce, once, every secret version whose rotation interval has passed.

A secret stored with ``rotation_interval`` is *due* once its active version is that old (the
rule ``secret list --due`` uses, ``SecretService.rotation_due``). ``RotationDue.scan`` finds the
due versions not yet announced and, in one write transaction per tenant, takes a revision for
each, stores a ``rotation_due`` notice (``secret_events``) and an audit record. The store keeps
one notice per version (a unique index), so a restart, a second replica or a scan racing
another announces nothing twice. Then the secrets' commit listeners run, which wakes long-poll
waiters of the change feed. Notices carry metadata only, never a value.

``run`` repeats the scan every ``interval`` seconds as a background task of ``serve``.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import structlog

from server.service.core import Core, iso
from server.service.secrets import SecretService
from server.storage import AuditDraft
from server.storage.base import SecretEvent
from shared.errors import LLMConfigError
from shared.models import SecretVersion

log = structlog.get_logger("llmcm.rotation")
ACTOR = "system:rotation-due"
KIND = "rotation_due"

_Due = tuple[str, str, int]  # namespace, key, version


def due_at(record: SecretVersion) -> str | None:
    """When ``record`` falls due for rotation (None: it has no rotation interval)."""
    interval = record.metadata.get("rotation_interval")
    if not interval:
        return None
    created = datetime.fromisoformat(record.created_at.replace("Z", "+00:00"))
    return iso(created + timedelta(seconds=int(interval)))


class RotationDue:
    def __init__(self, core: Core, secrets: SecretService) -> None:
        self.core = core
        self.secrets = secrets
        # tenant -> due versions known to be announced (spares a write transaction per scan)
        self._announced: dict[str, set[_Due]] = {}

    async def scan(self) -> list[SecretEvent]:
        """Announce every due version of every tenant not announced yet; returns the new notices."""
        out: list[SecretEvent] = []
        for tenant_id in await self.core.storage.tenants_with_secrets():
            out += await self.scan_tenant(tenant_id)
        return out

    async def scan_tenant(self, tenant_id: str) -> list[SecretEvent]:
        due = {
            (r.namespace, r.key, r.version): r
            for r in await self.core.storage.list_secrets(tenant_id)
            if self.secrets.rotation_due(r)
        }
        known = self._announced.setdefault(tenant_id, set())
        known &= set(due)  # a version no longer due (rotated, revoked) is never due again
        pending = [record for slot, record in due.items() if slot not in known]
        if not pending:
            return []
        written: list[SecretEvent] = []
        async with self.core.storage.write(tenant_id) as tx:
            for record in pending:
                versions = (record.version,)
                if await tx.has_secret_event(tenant_id, record.namespace, record.key, KIND, versions):
                    continue  # announced before this process started, or by another scan
                latest = await tx.latest_secret(tenant_id, record.namespace, record.key)
                if latest is None or latest.version != record.version:
                    continue  # rotated since the list was read
                if not self.secrets.rotation_due(latest):
                    continue  # revoked since
                now = self.core.now_iso()
                event = SecretEvent(
                    revision=await tx.next_revision(),
                    namespace=record.namespace,
                    key=record.key,
                    kind=KIND,
                    versions=versions,
                    created_at=now,
                    data={
                        "environment": str(record.metadata.get("environment", "global")),
                        "due_at": due_at(record),
                        "rotation_interval": int(record.metadata["rotation_interval"]),
                    },
                )
                await tx.insert_secret_event(tenant_id, event)
                await self.core.audit_in(
                    tx,
                    AuditDraft(
                        time=now,
                        tenant_id=tenant_id,
                        actor=ACTOR,
                        action="secret:rotation_due",
                        resource=f"secret/{record.namespace}/{record.key}",
                        result="ok",
                        request_id="rotation-due",
                        metadata={
                            "version": record.version,
                            "revision": event.revision,
                            "due_at": event.data["due_at"],
                        },
                    ),
                )
                written.append(event)
        known.update((r.namespace, r.key, r.version) for r in pending)
        if written:
            for listener in self.secrets.commit_listeners:  # long-poll waiters wake
                listener(tenant_id)
            log.info("rotation_due_announced", tenant=tenant_id, secrets=len(written))
        return written

    async def run(self, interval: float) -> None:
        """Scan now and then every ``interval`` seconds until cancelled."""
        while True:
            try:
                await self.scan()
            except LLMConfigError as exc:
                # the store is down or busy: try again on the next round
                log.warning("rotation_due_scan_failed", error=exc.code, retriable=exc.retriable)
            await asyncio.sleep(interval)
