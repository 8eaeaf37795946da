"""Reading and verifying the audit log of a tenant (or the system chain)."""

from __future__ import annotations

from typing import Any

from server.audit_chain import ChainReport, ChainVerifier
from server.service import policy
from server.service.core import Core, Ctx
from server.service.policy import Action
from server.storage import SYSTEM_CHAIN
from shared.errors import InvalidInput, NotFound
from shared.models import AuditRecord

_PAGE = 1000


class AuditService:
    def __init__(self, core: Core) -> None:
        self.core = core

    async def _chain(self, ctx: Ctx, chain: str | None) -> str:
        if chain is None or chain == ctx.principal.tenant_id:
            await self.core.authorize(ctx, policy.Request(Action.AUDIT_READ), "audit")
            return ctx.principal.tenant_id
        await self.core.authorize(ctx, policy.Request(Action.TENANT_MANAGE), f"audit/{chain[:64]}")
        if chain != SYSTEM_CHAIN and await self.core.storage.get_tenant(chain) is None:
            raise NotFound("audit chain not found")
        return chain

    async def records(
        self,
        ctx: Ctx,
        *,
        chain: str | None = None,
        after: int = 0,
        limit: int = 100,
        action: str | None = None,
        result: str | None = None,
    ) -> list[AuditRecord]:
        if not 1 <= limit <= 1000:
            raise InvalidInput("limit must be between 1 and 1000")
        if after < 0:
            raise InvalidInput("after must be a non-negative sequence number")
        target = await self._chain(ctx, chain)
        out: list[AuditRecord] = []
        cursor = after
        while len(out) < limit:
            page = await self.core.storage.audit_records(target, after_seq=cursor, limit=_PAGE)
            if not page:
                break
            for record in page:
                if (action is None or record.action == action) and (
                    result is None or record.result == result
                ):
                    out.append(record)
            cursor = page[-1].seq
        return out[:limit]

    async def verify(self, ctx: Ctx, *, chain: str | None = None) -> dict[str, Any]:
        target = await self._chain(ctx, chain)
        verifier = ChainVerifier()
        cursor = 0
        while True:
            page = await self.core.storage.audit_records(target, after_seq=cursor, limit=_PAGE)
            if not page or not verifier.feed(page):
                break
            cursor = page[-1].seq
        report = verifier.report()
        if report.ok:
            head_seq, head_hash = await self.core.storage.audit_head(target)
            if head_seq != report.checked or (head_seq and head_hash != verifier.prev_hash):
                report = ChainReport(
                    False,
                    report.checked,
                    report.checked + 1,
                    f"the chain head records {head_seq} records but {report.checked} were found: "
                    "records after the last good one were deleted",
                )
        out = report.to_dict()
        out["chain"] = target
        return out
