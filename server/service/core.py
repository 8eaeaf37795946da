"""What every service shares: storage, the clock, tenant settings, authorization.

``Core.authorize`` is the single place where a policy decision is taken and,
when it denies, audited before ``PermissionDenied`` is raised. If that audit
record can't be written the request still fails (with ``AuditWriteFailed``).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn

from server.cluster.base import Counters
from server.cluster.limits import DEFAULT_LIMITS, Limits, validate_limits
from server.cluster.local import MemoryCounters
from server.service import policy
from server.service.policy import Decision, Principal
from server.storage import AuditDraft, Storage, WriteTx
from shared.errors import AuditWriteFailed, InvalidInput, NotFound, PermissionDenied, StorageError
from shared.models import DEFAULT_CHAINS, Environment, parse_environment

Clock = Callable[[], datetime]
_DECISIONS_MAX = 10_000


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Ctx:
    """The caller of one service operation."""

    principal: Principal
    request_id: str
    # the connection is encrypted (TLS) or never leaves the machine (loopback): plaintext
    # secrets are served only then, unless the operator allows otherwise
    private_channel: bool = True


DEFAULT_SETTINGS: dict[str, Any] = {
    "chains": {env.value: [e.value for e in chain] for env, chain in DEFAULT_CHAINS.items()},
    "change_window": None,
    "audit_reads": False,
    "limits": DEFAULT_LIMITS,  # rate limits and quotas (server.cluster.limits)
}


def validate_settings(raw: Any) -> dict[str, Any]:
    """Merge ``raw`` over the defaults and check every field; return the full settings."""
    if not isinstance(raw, dict):
        raise InvalidInput("settings must be a JSON object")
    unknown = set(raw) - set(DEFAULT_SETTINGS)
    if unknown:
        raise InvalidInput(
            f"unknown settings: {', '.join(sorted(unknown))}; known: {', '.join(sorted(DEFAULT_SETTINGS))}"
        )
    out = copy.deepcopy(DEFAULT_SETTINGS)
    if "chains" in raw:
        chains = raw["chains"]
        if not isinstance(chains, dict):
            raise InvalidInput("settings.chains must map an environment to a list of environments")
        for env_name, chain in chains.items():
            env = parse_environment(env_name)
            if not isinstance(chain, list) or not chain:
                raise InvalidInput(f"settings.chains.{env.value} must be a non-empty list")
            parsed = [parse_environment(str(e)).value for e in chain]
            if len(set(parsed)) != len(parsed):
                raise InvalidInput(f"settings.chains.{env.value} lists an environment twice")
            if parsed[-1] != env.value:
                raise InvalidInput(
                    f"settings.chains.{env.value} must end with {env.value} (highest priority last)"
                )
            out["chains"][env.value] = parsed
    if "change_window" in raw:
        out["change_window"] = policy.validate_change_window(raw["change_window"])
    if "audit_reads" in raw:
        if not isinstance(raw["audit_reads"], bool):
            raise InvalidInput("settings.audit_reads must be true or false")
        out["audit_reads"] = raw["audit_reads"]
    if "limits" in raw:
        out["limits"] = validate_limits(raw["limits"])
    return out


class Core:
    def __init__(self, storage: Storage, *, clock: Clock = utc_now, counters: Counters | None = None) -> None:
        self.storage = storage
        self.clock = clock
        # other servers write to the same store (replicas): caches of stored rows are checked
        # against the tenant's revision in the store before they are used (server.cluster)
        self.replicated = False
        self.limits = Limits(storage, self.settings, counters or MemoryCounters())
        self._settings: dict[str, dict[str, Any]] = {}
        # tenant -> (token id, request) -> decision, for decisions that don't depend on time;
        # dropped with the tenant's settings, the only other input besides the immutable token
        self._decisions: dict[str, dict[tuple[str, policy.Request], Decision]] = {}
        # called with the tenant id after its settings changed (caches built on them drop)
        self.settings_listeners: list[Callable[[str], None]] = []

    def now_iso(self) -> str:
        return iso(self.clock())

    async def settings(self, tenant_id: str) -> dict[str, Any]:
        cached = self._settings.get(tenant_id)
        if cached is not None:
            return cached
        tenant = await self.storage.get_tenant(tenant_id)
        if tenant is None:
            raise NotFound("tenant not found")
        merged = copy.deepcopy(DEFAULT_SETTINGS)
        merged.update(tenant.settings)
        self._settings[tenant_id] = merged
        return merged

    def settings_if_loaded(self, tenant_id: str) -> dict[str, Any] | None:
        return self._settings.get(tenant_id)

    def loaded_tenants(self) -> list[str]:
        """Tenants whose settings are cached here."""
        return list(self._settings)

    async def settings_changed(self, tenant_id: str) -> bool:
        """Do the stored settings differ from the cached ones? (Another replica may have written them.)"""
        cached = self._settings.get(tenant_id)
        if cached is None:
            return False
        tenant = await self.storage.get_tenant(tenant_id)
        if tenant is None:
            return False
        stored = copy.deepcopy(DEFAULT_SETTINGS)
        stored.update(tenant.settings)
        return stored != cached

    def epoch(self) -> float:
        """Seconds since the epoch by this core's clock (the real one avoids a datetime)."""
        return time.time() if self.clock is utc_now else self.clock().timestamp()

    def forget_settings(self, tenant_id: str) -> None:
        self._settings.pop(tenant_id, None)
        self._decisions.pop(tenant_id, None)
        for listener in self.settings_listeners:
            listener(tenant_id)

    async def chain(self, tenant_id: str, env: Environment) -> tuple[Environment, ...]:
        names = (await self.settings(tenant_id))["chains"][env.value]
        return tuple(Environment(n) for n in names)

    def draft(
        self,
        ctx: Ctx,
        action: str,
        resource: str,
        result: str,
        metadata: dict[str, Any] | None = None,
    ) -> AuditDraft:
        return AuditDraft(
            time=self.now_iso(),
            tenant_id=ctx.principal.tenant_id,
            actor=ctx.principal.actor,
            action=action,
            resource=resource,
            result=result,
            request_id=ctx.request_id,
            metadata=metadata or {},
        )

    async def audit(self, chain: str, draft: AuditDraft) -> None:
        """Append one record durably before returning; fail closed.

        The store's group commit writes the records of concurrent callers in shared
        transactions, one fsync for many (``Storage.append_audit_batch``); this returns
        once this record is committed, and raises ``AuditWriteFailed`` if it was not.
        """
        try:
            await self.storage.append_audit_batch(chain, [draft])
        except Exception as exc:
            raise AuditWriteFailed("the audit record could not be written; nothing was done") from exc

    @staticmethod
    async def audit_in(tx: WriteTx, draft: AuditDraft) -> None:
        try:
            await tx.append_audit(draft)
        except StorageError as exc:
            raise AuditWriteFailed("the audit record could not be written; nothing was done") from exc

    def decide(self, principal: Principal, request: policy.Request, settings: dict[str, Any]) -> Decision:
        """The policy decision, memoized when it can't change with time."""
        if policy.depends_on_time(request):
            return policy.decide(principal, request, settings, self.clock)
        memo = self._decisions.setdefault(principal.tenant_id, {})
        key = (principal.token_id, request)
        decision = memo.get(key)
        if decision is None:
            if len(memo) >= _DECISIONS_MAX:
                memo.clear()
            decision = memo[key] = policy.decide(principal, request, settings, self.clock)
        return decision

    async def check(self, ctx: Ctx, request: policy.Request) -> Decision:
        settings = await self.settings(ctx.principal.tenant_id)
        return self.decide(ctx.principal, request, settings)

    async def authorize(self, ctx: Ctx, request: policy.Request, resource: object) -> Decision:
        """Decide; when denied, audit and raise. ``resource`` is stringified only then."""
        decision = await self.check(ctx, request)
        if not decision.allowed:
            await self.deny(ctx, request, decision, resource)
        return decision

    async def target_tenant(self, ctx: Ctx, tenant_id: str | None, own: policy.Action, what: str) -> str:
        """The caller's tenant (needing ``own``), or another one only with tenant:manage.

        Authorization comes before the lookup, so a caller who may not manage tenants
        learns nothing about whether another tenant exists.
        """
        if tenant_id is None or tenant_id == ctx.principal.tenant_id:
            await self.authorize(ctx, policy.Request(own), what)
            return ctx.principal.tenant_id
        await self.authorize(
            ctx, policy.Request(policy.Action.TENANT_MANAGE), f"tenant/{tenant_id[:64]}/{what}"
        )
        if await self.storage.get_tenant(tenant_id) is None:
            raise NotFound("tenant not found")
        return tenant_id

    async def deny(self, ctx: Ctx, request: policy.Request, decision: Decision, resource: object) -> NoReturn:
        name = resource if isinstance(resource, str) else f"config/{resource}"
        await self.audit(
            ctx.principal.tenant_id,
            self.draft(
                ctx, request.action.value, name, "denied", {"rule": decision.rule, "reason": decision.reason}
            ),
        )
        raise PermissionDenied(decision.reason, rule=decision.rule)
