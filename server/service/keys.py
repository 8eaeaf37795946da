"""Key-encryption-key rotation and the background rewrap of data keys.

``rotate`` adds a KEK version for a tenant; new secrets are wrapped by it at
once. ``Rewrapper`` then moves every existing data key onto the newest version,
one secret version per transaction with a compare-and-set on the KEK version it
read, so a crash at any point loses nothing and a restart simply continues with
the rows still behind. Sealed values are never touched: only the wrapped data
key changes. The pace is bounded (``rate`` rows per second) to spare the store.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog

from server.keys import KeyProvider
from server.service.core import Core, Ctx
from server.service.policy import Action
from server.service.secrets import SecretService, secret_aad
from server.storage import AuditDraft
from shared.crypto import DecryptionFailed, WrappedKey
from shared.errors import LLMConfigError, Unavailable

log = structlog.get_logger("llmcm.keys")
_BATCH = 100


class KeyService:
    def __init__(self, core: Core, keys: KeyProvider | None, secrets: SecretService) -> None:
        self.core = core
        self.keys = keys
        self.secrets = secrets
        self.wake = asyncio.Event()  # set by rotate: the rewrapper starts at once

    def _provider(self) -> KeyProvider:
        if self.keys is None:
            raise Unavailable("no key provider is configured on this server")
        return self.keys

    async def _tenant(self, ctx: Ctx, tenant_id: str | None) -> str:
        return await self.core.target_tenant(ctx, tenant_id, Action.KEY_MANAGE, "keys")

    async def rotate(self, ctx: Ctx, tenant_id: str | None = None) -> dict[str, Any]:
        provider = self._provider()
        target = await self._tenant(ctx, tenant_id)
        async with self.core.storage.write(target) as tx:
            version = await provider.rotate(tx, target)
            await self.core.audit_in(
                tx,
                self.core.draft(ctx, "keys:rotate", "keys", "ok", {"tenant": target, "kek_version": version}),
            )
        self.wake.set()
        return await self._status(target)

    async def status(self, ctx: Ctx, tenant_id: str | None = None) -> dict[str, Any]:
        self._provider()
        return await self._status(await self._tenant(ctx, tenant_id))

    async def _status(self, tenant_id: str) -> dict[str, Any]:
        provider = self._provider()
        current = await provider.current_version(tenant_id)
        counts = await self.core.storage.secret_kek_counts(tenant_id)
        keks = {k.version: k for k in await self.core.storage.keks(tenant_id)}
        versions = sorted(set(counts) | set(keks))
        return {
            "tenant_id": tenant_id,
            "provider": provider.name,
            "current_version": current,
            "versions": [
                {
                    "version": v,
                    "secret_versions": counts.get(v, 0),
                    "encryptions": keks[v].encryptions if v in keks else None,
                    "created_at": keks[v].created_at if v in keks else None,
                }
                for v in versions
            ],
            "rewrap_pending": sum(n for v, n in counts.items() if v < current),
            "rewrap_done": counts.get(current, 0),
        }

    async def rewrap_tenant(self, tenant_id: str, *, rate: float, limit: int | None = None) -> int:
        """Move data keys onto the current KEK version; returns how many were moved."""
        provider = self._provider()
        current = await provider.current_version(tenant_id)
        moved = 0
        cursor = 0  # by revision: a row that can't be re-wrapped is passed over, not retried forever
        pause = 1.0 / rate if rate > 0 else 0.0
        while limit is None or moved < limit:
            batch = await self.core.storage.secrets_below_kek(
                tenant_id, current, limit=_BATCH, after_revision=cursor
            )
            if not batch:
                break
            for record in batch:
                cursor = record.revision
                env = str(record.metadata.get("environment", "global"))
                aad = secret_aad("dek", tenant_id, record.namespace, record.key, record.version, env)
                old = WrappedKey(record.kek_id, record.kek_version, record.wrapped_dek)
                try:
                    async with self.core.storage.write(tenant_id) as tx:
                        new = await provider.rewrap(tx, tenant_id, old, aad)
                        await tx.set_secret_wrapping(tenant_id, record, new.kek_version, new.blob)
                except DecryptionFailed as exc:
                    # tampered or moved: it stays behind (status shows it pending) and is audited
                    await self._audit_tamper(tenant_id, record, exc)
                    continue
                self.secrets.forget(tenant_id)
                moved += 1
                if pause:
                    await asyncio.sleep(pause)
                if limit is not None and moved >= limit:
                    break
        return moved

    async def _audit_tamper(self, tenant_id: str, record: Any, exc: DecryptionFailed) -> None:
        log.error(
            "rewrap_failed",
            tenant=tenant_id,
            secret=f"{record.namespace}/{record.key}",
            version=record.version,
            error=exc.code,
        )
        await self.core.audit(
            tenant_id,
            AuditDraft(
                time=self.core.now_iso(),
                tenant_id=tenant_id,
                actor="system:rewrap",
                action="keys:rewrap",
                resource=f"secret/{record.namespace}/{record.key}",
                result="tamper_detected",
                request_id="rewrap",
                metadata={"version": record.version, "error": exc.detail},
            ),
        )


class Rewrapper:
    """Background task: rewrap every tenant that is behind, now and after each rotation."""

    def __init__(self, keys: KeyService, *, rate: float, idle_seconds: float = 300.0) -> None:
        self.keys = keys
        self.rate = rate
        self.idle_seconds = idle_seconds

    async def run(self) -> None:
        if self.keys.keys is None:
            return
        while True:
            self.keys.wake.clear()
            try:
                for tenant_id in await self.keys.core.storage.tenants_with_secrets():
                    moved = await self.keys.rewrap_tenant(tenant_id, rate=self.rate)
                    if moved:
                        log.info("rewrap_done", tenant=tenant_id, moved=moved)
            except LLMConfigError as exc:
                # the store or the key service is down: try again on the next round
                log.warning("rewrap_paused", error=exc.code, retriable=exc.retriable)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.keys.wake.wait(), timeout=self.idle_seconds)
