"""Tenants, bearer tokens and tenant settings; turning a token into a Principal.

Tokens are ``lcm_`` + 32 random bytes (base64url). Only their SHA-256 is
stored; the plaintext is returned once, at creation. Failed authentications
are audited with a short fingerprint of the presented token, never the token.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, NoReturn

from server.service import policy
from server.service.core import Core, Ctx, iso, validate_settings
from server.service.policy import ROLES, Action, Principal
from server.storage import SYSTEM_CHAIN, AuditDraft
from shared.errors import InvalidInput, NotFound, PermissionDenied, Unauthenticated
from shared.models import Tenant, TokenRecord

TOKEN_PREFIX = "lcm_"
_AUTH_CACHE_TTL = 30.0
_AUTH_CACHE_MAX = 10_000
_TENANT_NAME_MAX = 100


def new_token() -> str:
    return TOKEN_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def principal_of(token: TokenRecord) -> Principal:
    return Principal(
        token_id=token.id,
        tenant_id=token.tenant_id,
        name=token.name,
        roles=frozenset(token.roles),
        namespaces=token.namespaces,
    )


def external_principal(
    actor_id: str, tenant_id: str, name: str, roles: tuple[str, ...], namespaces: tuple[str, ...]
) -> Principal:
    """A principal from a client certificate or a JWT: no stored token behind it.

    Decisions and reads are memoized per token id on the promise that a token id's roles
    never change; an IdP may issue the same subject other roles tomorrow, so the id carries
    a digest of everything the decisions depend on.
    """
    facts = json.dumps([tenant_id, sorted(roles), list(namespaces)]).encode()
    return Principal(
        token_id=f"{actor_id}#{hashlib.sha256(facts).hexdigest()[:12]}",
        tenant_id=tenant_id,
        name=name,
        roles=frozenset(roles),
        namespaces=namespaces,
    )


def _check_roles(roles: Any) -> tuple[str, ...]:
    if not isinstance(roles, list) or not roles or not all(isinstance(r, str) for r in roles):
        raise InvalidInput(f"roles must be a non-empty list of: {', '.join(ROLES)}")
    unknown = [r for r in roles if r not in ROLES]
    if unknown:
        raise InvalidInput(f"unknown roles {', '.join(unknown)}; known: {', '.join(ROLES)}")
    return tuple(dict.fromkeys(roles))


def _check_scopes(namespaces: Any) -> tuple[str, ...]:
    if namespaces is None:
        return ()
    if not isinstance(namespaces, list) or not all(isinstance(n, str) and n for n in namespaces):
        raise InvalidInput("namespaces must be a list of namespace names or globs")
    allowed = set("abcdefghijklmnopqrstuvwxyz0123456789-/*?")
    for scope in namespaces:
        if not set(scope) <= allowed or len(scope) > 500:
            raise InvalidInput(f"invalid namespace scope {scope[:80]!r}: use a-z, 0-9, '-', '/', '*', '?'")
    return tuple(namespaces)


AUTH_FAILURES_PER_SECOND = 10


class _RateGate:
    """Per-key fixed one-second windows: admit ``limit`` events, count the rest."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._windows: dict[str, list[float | int]] = {}  # key -> [window start, admitted, suppressed]

    def admit(self, key: str, now: float) -> int | None:
        """None when over the rate (counted); else how many were suppressed before this one."""
        window = self._windows.get(key)
        if window is None or now - window[0] >= 1.0:
            suppressed = int(window[2]) if window is not None else 0
            self._windows[key] = [now, 1, 0]
            return suppressed
        if window[1] >= self.limit:
            window[2] += 1
            return None
        window[1] += 1
        suppressed, window[2] = int(window[2]), 0
        return suppressed


@dataclass(frozen=True, slots=True)
class _Authenticated:
    """An auth-cache entry: the stored token and what a request needs of it, computed once."""

    loaded_at: float
    token: TokenRecord
    principal: Principal
    expires: float  # epoch seconds; inf when the token never expires


def _expiry_epoch(token: TokenRecord) -> float:
    if token.expires_at is None:
        return math.inf
    return datetime.fromisoformat(token.expires_at.replace("Z", "+00:00")).timestamp()


def grantable_roles(creator: frozenset[str]) -> set[str]:
    """Roles a token with ``creator`` roles may put on a new token: never more than it has."""
    if "global-admin" in creator:
        return set(ROLES)
    grantable = set(creator)
    if "tenant-admin" in creator:
        grantable |= {"operator", "developer", "service-account"}
    return grantable


class TenantService:
    def __init__(self, core: Core) -> None:
        self.core = core
        self._auth_cache: dict[str, _Authenticated] = {}
        self._auth_failures = _RateGate(AUTH_FAILURES_PER_SECOND)
        # called with the tenant id after one of its tokens was revoked (other replicas drop theirs)
        self.token_listeners: list[Callable[[str], None]] = []

    def forget_tokens(self, tenant_id: str | None = None) -> None:
        """Drop cached tokens of a tenant (of every tenant with None): the next use reads the store."""
        if tenant_id is None:
            self._auth_cache = {}
        else:
            self._auth_cache = {h: v for h, v in self._auth_cache.items() if v.token.tenant_id != tenant_id}

    # -- authentication --------------------------------------------------------------------

    async def authenticate(self, raw: str | None, request_id: str) -> Principal:
        if not raw:
            await self._audit_auth_failure(SYSTEM_CHAIN, "", "no bearer token", None, request_id)
            raise Unauthenticated("missing bearer token: send 'Authorization: Bearer <token>'")
        digest = hash_token(raw)
        now = time.monotonic()
        cached = self._auth_cache.get(digest)
        if cached is None or now - cached.loaded_at >= _AUTH_CACHE_TTL:
            token = await self.core.storage.get_token_by_hash(digest)
            if token is None:
                await self._audit_auth_failure(SYSTEM_CHAIN, "", "unknown token", digest, request_id)
                raise Unauthenticated("invalid token")
            if len(self._auth_cache) >= _AUTH_CACHE_MAX:
                self._auth_cache.clear()
            cached = _Authenticated(now, token, principal_of(token), _expiry_epoch(token))
            self._auth_cache[digest] = cached
        token = cached.token
        if token.revoked:
            await self._audit_auth_failure(token.tenant_id, token.id, "revoked token", digest, request_id)
            raise Unauthenticated("token has been revoked")
        if cached.expires <= self.core.epoch():
            await self._audit_auth_failure(token.tenant_id, token.id, "expired token", digest, request_id)
            raise Unauthenticated("token has expired")
        return cached.principal

    async def _audit_auth_failure(
        self, chain: str, token_id: str, reason: str, digest: str | None, request_id: str
    ) -> None:
        """Record a failed authentication, at most AUTH_FAILURES_PER_SECOND per chain.

        Each record is a durable write; a flood of bad tokens must not slow real writes.
        Failures over the rate are counted and the count goes into the next record written.
        """
        suppressed = self._auth_failures.admit(chain, time.monotonic())
        if suppressed is None:
            return
        metadata: dict[str, Any] = {"reason": reason}
        if suppressed:
            metadata["suppressed_before"] = suppressed
        if digest:
            metadata["token_fingerprint"] = digest[:12]
        await self.core.audit(
            chain,
            AuditDraft(
                time=self.core.now_iso(),
                tenant_id="" if chain == SYSTEM_CHAIN else chain,
                actor=f"token:{token_id}" if token_id else "anonymous",
                action="auth",
                resource="token",
                result="denied",
                request_id=request_id,
                metadata=metadata,
            ),
        )

    # -- principals from client certificates and JWTs --------------------------------------

    async def refuse(
        self, detail: str, *, actor_id: str = "", digest: str | None = None, request_id: str
    ) -> NoReturn:
        """Audit a failed certificate or JWT authentication (rate-limited) and raise 401.

        ``detail`` goes to the client and the audit record: it must never quote a token.
        """
        await self._audit_auth_failure(SYSTEM_CHAIN, actor_id, detail, digest, request_id)
        raise Unauthenticated(detail)

    async def _tenant_of(self, ref: str) -> Tenant | None:
        """An active tenant by id, else by name (a certificate or IdP may name either)."""
        tenant = await self.core.storage.get_tenant(ref)
        if tenant is None:
            tenant = await self.core.storage.get_tenant_by_name(ref)
        return tenant if tenant is not None and tenant.status == "active" else None

    async def authenticate_workload(
        self, tenant_ref: str, service: str, spiffe_id: str, request_id: str
    ) -> Principal:
        """The service account a verified SPIFFE ID names: role service-account, reading only
        namespace ``service`` and those under it. Token id ``spiffe:<service>#<digest>``."""
        actor_id = f"spiffe:{service}"
        tenant = await self._tenant_of(tenant_ref)
        if tenant is None:
            await self.refuse(
                f"the SPIFFE ID names tenant {tenant_ref[:100]!r}, which does not exist",
                actor_id=actor_id,
                request_id=request_id,
            )
        return external_principal(actor_id, tenant.id, spiffe_id, ("service-account",), (service,))

    async def authenticate_claims(
        self,
        *,
        subject: str,
        tenant_ref: str,
        roles: tuple[str, ...],
        namespaces: tuple[str, ...] | None,
        allow_global_admin: bool,
        digest: str,
        request_id: str,
    ) -> Principal:
        """The principal a verified JWT describes; its roles must be roles of this server.

        ``global-admin`` is refused unless ``allow_global_admin``; ``service-account`` needs
        namespaces. Token id ``jwt:<sub>#<digest of tenant, roles, namespaces>``.
        """
        actor_id = f"jwt:{subject}"
        unknown = [r for r in roles if r not in ROLES]
        detail = ""
        if unknown:
            detail = f"JWT role {unknown[0][:60]!r} is not a role of this server; known: {', '.join(ROLES)}"
        elif "global-admin" in roles and not allow_global_admin:
            detail = (
                "JWT grants global-admin, which this server does not accept from JWTs "
                "(see --jwt-allow-global-admin)"
            )
        elif "service-account" in roles and not namespaces:
            detail = "JWT grants service-account but names no namespaces: a service account must be scoped"
        scopes: tuple[str, ...] = ()
        if not detail and namespaces:
            try:
                scopes = _check_scopes(list(namespaces))
            except InvalidInput as exc:
                detail = f"JWT namespaces claim: {exc.detail}"
        tenant = None if detail else await self._tenant_of(tenant_ref)
        if not detail and tenant is None:
            detail = f"JWT names tenant {tenant_ref[:100]!r}, which does not exist (unknown tenant)"
        if detail or tenant is None:
            await self.refuse(detail, actor_id=actor_id, digest=digest, request_id=request_id)
        return external_principal(actor_id, tenant.id, subject, tuple(dict.fromkeys(roles)), scopes)

    # -- tenants ---------------------------------------------------------------------------

    async def bootstrap(self, name: str) -> tuple[Tenant, str]:
        """Create the first tenant and a global-admin token (``llm-config-server init``)."""
        tenant = self._new_tenant(name)
        token, record = self._new_token_record(
            tenant.id, "bootstrap-admin", ("global-admin",), (), None, "init"
        )
        async with self.core.storage.write(tenant.id) as tx:
            await tx.insert_tenant(tenant)
            await tx.insert_token(record)
            await self.core.audit_in(
                tx,
                AuditDraft(
                    time=self.core.now_iso(),
                    tenant_id=tenant.id,
                    actor="init",
                    action="tenant:create",
                    resource=f"tenant/{tenant.id}",
                    result="ok",
                    request_id="init",
                    metadata={"name": name, "admin_token_id": record.id},
                ),
            )
        return tenant, token

    def _new_tenant(self, name: str) -> Tenant:
        if not isinstance(name, str) or not name or len(name) > _TENANT_NAME_MAX:
            raise InvalidInput(f"tenant name must be 1-{_TENANT_NAME_MAX} characters")
        if not all(c.isascii() and (c.isalnum() or c in "-_.") for c in name):
            raise InvalidInput("tenant name may contain only ASCII letters, digits, '-', '_' and '.'")
        return Tenant(id=str(uuid.uuid4()), name=name, status="active", created_at=self.core.now_iso())

    async def create_tenant(
        self, ctx: Ctx, name: str, *, admin_token: bool = False
    ) -> tuple[Tenant, str | None, TokenRecord | None]:
        await self.core.authorize(ctx, policy.Request(Action.TENANT_MANAGE), "tenants")
        tenant = self._new_tenant(name)
        token: str | None = None
        record: TokenRecord | None = None
        if admin_token:
            token, record = self._new_token_record(
                tenant.id, f"{name}-admin", ("tenant-admin",), (), None, ctx.principal.actor
            )
        # the record of the creation goes on the creator's chain; the tenant starts its own
        async with self.core.storage.write(ctx.principal.tenant_id) as tx:
            await tx.insert_tenant(tenant)
            if record is not None:
                await tx.insert_token(record)
            meta: dict[str, Any] = {"name": name}
            if record is not None:
                meta["admin_token_id"] = record.id
            await self.core.audit_in(
                tx, self.core.draft(ctx, "tenant:create", f"tenant/{tenant.id}", "ok", meta)
            )
        return tenant, token, record

    async def list_tenants(self, ctx: Ctx) -> list[Tenant]:
        await self.core.authorize(ctx, policy.Request(Action.TENANT_MANAGE), "tenants")
        return await self.core.storage.list_tenants()

    async def get_tenant(self, ctx: Ctx, tenant_id: str) -> Tenant:
        """Any token sees its own tenant; its effective settings only with settings:read."""
        if tenant_id != ctx.principal.tenant_id:
            await self.core.authorize(ctx, policy.Request(Action.TENANT_MANAGE), "tenants")
        tenant = await self.core.storage.get_tenant(tenant_id)
        if tenant is None:
            raise NotFound("tenant not found")
        if not (await self.core.check(ctx, policy.Request(Action.SETTINGS_READ))).allowed:
            return replace(tenant, settings={})
        return replace(tenant, settings=await self.core.settings(tenant_id))  # with defaults filled

    # -- settings --------------------------------------------------------------------------

    async def get_settings(self, ctx: Ctx) -> dict[str, Any]:
        await self.core.authorize(ctx, policy.Request(Action.SETTINGS_READ), "settings")
        return await self.core.settings(ctx.principal.tenant_id)

    async def put_settings(self, ctx: Ctx, raw: Any) -> dict[str, Any]:
        await self.core.authorize(ctx, policy.Request(Action.SETTINGS_WRITE), "settings")
        settings = validate_settings(raw)
        tenant_id = ctx.principal.tenant_id
        async with self.core.storage.write(tenant_id) as tx:
            await tx.update_tenant_settings(tenant_id, settings)
            await self.core.audit_in(
                tx, self.core.draft(ctx, "settings:write", "settings", "ok", {"fields": sorted(raw)})
            )
        self.core.forget_settings(tenant_id)
        return settings

    # -- tokens ----------------------------------------------------------------------------

    def _new_token_record(
        self,
        tenant_id: str,
        name: str,
        roles: tuple[str, ...],
        namespaces: tuple[str, ...],
        expires_at: str | None,
        created_by: str,
    ) -> tuple[str, TokenRecord]:
        token = new_token()
        record = TokenRecord(
            id="tok_" + uuid.uuid4().hex[:20],
            tenant_id=tenant_id,
            name=name,
            token_hash=hash_token(token),
            roles=roles,
            namespaces=namespaces,
            created_at=self.core.now_iso(),
            expires_at=expires_at,
            revoked=False,
            created_by=created_by,
        )
        return token, record

    async def _target_tenant(self, ctx: Ctx, tenant_id: str | None) -> str:
        return await self.core.target_tenant(ctx, tenant_id, Action.TOKEN_MANAGE, "tokens")

    async def create_token(
        self,
        ctx: Ctx,
        *,
        name: str,
        roles: Any,
        namespaces: Any = None,
        expires_in: Any = None,
        tenant_id: str | None = None,
    ) -> tuple[str, TokenRecord]:
        if not isinstance(name, str) or not name or len(name) > 100:
            raise InvalidInput("token name must be 1-100 characters")
        checked_roles = _check_roles(roles)
        scopes = _check_scopes(namespaces)
        expires_at: str | None = None
        if expires_in is not None:
            if not isinstance(expires_in, int) or isinstance(expires_in, bool) or expires_in <= 0:
                raise InvalidInput("expires_in must be a positive number of seconds")
            expires_at = iso(self.core.clock() + timedelta(seconds=expires_in))
        if "service-account" in checked_roles and not scopes:
            raise InvalidInput("a service-account token must name the namespaces it may read ('namespaces')")
        target = await self._target_tenant(ctx, tenant_id)
        beyond = sorted(set(checked_roles) - grantable_roles(ctx.principal.roles))
        if beyond:
            decision = policy.Decision(
                False,
                "deny:role-escalation",
                f"this token may not grant {', '.join(beyond)}: a token grants only roles it holds "
                "(admins may also grant operator, developer and service-account)",
            )
            await self.core.audit(
                ctx.principal.tenant_id,
                self.core.draft(ctx, "token:create", "tokens", "denied", decision.to_dict()),
            )
            raise PermissionDenied(decision.reason, rule=decision.rule)
        token, record = self._new_token_record(
            target, name, checked_roles, scopes, expires_at, ctx.principal.actor
        )
        async with self.core.storage.write(target) as tx:
            await tx.insert_token(record)
            await self.core.audit_in(
                tx,
                self.core.draft(
                    ctx,
                    "token:create",
                    f"token/{record.id}",
                    "ok",
                    {
                        "name": name,
                        "roles": list(checked_roles),
                        "namespaces": list(scopes),
                        "expires_at": expires_at,
                    },
                ),
            )
        return token, record

    async def list_tokens(self, ctx: Ctx, tenant_id: str | None = None) -> list[TokenRecord]:
        target = await self._target_tenant(ctx, tenant_id)
        return await self.core.storage.list_tokens(target)

    async def revoke_token(self, ctx: Ctx, token_id: str, tenant_id: str | None = None) -> TokenRecord:
        target = await self._target_tenant(ctx, tenant_id)
        record = await self.core.storage.get_token(target, token_id)
        if record is None:
            raise NotFound(f"token {token_id[:40]!r} not found")
        async with self.core.storage.write(target) as tx:
            await tx.revoke_token(target, token_id)
            await self.core.audit_in(tx, self.core.draft(ctx, "token:revoke", f"token/{token_id}", "ok"))
        self._auth_cache = {h: v for h, v in self._auth_cache.items() if v.token.id != token_id}
        for listener in self.token_listeners:
            listener(target)
        return replace(record, revoked=True)
