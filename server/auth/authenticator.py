"""Who is asking: one decision over the three ways a request can prove it.

1. ``Authorization: Bearer lcm_…`` — a token of this server (``TenantService.authenticate``).
2. ``Authorization: Bearer <JWT>`` — any other bearer value when JWT is configured,
   verified by ``JwtVerifier`` and mapped by ``TenantService.authenticate_claims``.
3. No ``Authorization`` header, and a client certificate verified during the TLS
   handshake (mTLS) whose SPIFFE ID names a tenant's service.

An ``Authorization`` header always wins over a certificate, so a client holding both
acts as its token says. Certificate and JWT principals are cached briefly, keyed by
everything they are built from, so the read path pays one dict lookup for them too.
The REST middleware calls ``authenticate``; the gRPC server will call the same.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from server.auth.jwt import JwtIdentity, JwtVerifier
from server.auth.tls import WorkloadId, parse_spiffe_id
from server.service.policy import Principal
from server.service.tenants import TOKEN_PREFIX, TenantService, hash_token
from shared.errors import Unauthenticated

_CACHE_TTL = 30.0
_CACHE_MAX = 10_000


class Authenticator:
    def __init__(
        self,
        tenants: TenantService,
        *,
        jwt: JwtVerifier | None = None,
        trust_domain: str = "",
        allow_jwt_global_admin: bool = False,
    ) -> None:
        self.tenants = tenants
        self.jwt = jwt
        self.trust_domain = trust_domain
        self.allow_jwt_global_admin = allow_jwt_global_admin
        self._principals: dict[WorkloadId | JwtIdentity, tuple[float, Principal]] = {}

    async def authenticate(
        self,
        authorization: str | None,
        peer_uris: Callable[[], list[str] | None],
        request_id: str,
    ) -> Principal:
        """The principal of a request; ``peer_uris`` reads the verified client certificate's URI SANs."""
        if authorization is None and self.trust_domain:
            uris = peer_uris()
            if uris is not None:
                return await self._workload(uris, request_id)
        scheme, _, value = (authorization or "").partition(" ")
        raw = value.strip() if scheme.lower() == "bearer" else ""
        if raw and self.jwt is not None and not raw.startswith(TOKEN_PREFIX):
            return await self._jwt(self.jwt, raw, request_id)
        return await self.tenants.authenticate(raw, request_id)

    def _cached(self, key: WorkloadId | JwtIdentity) -> Principal | None:
        hit = self._principals.get(key)
        if hit is None or time.monotonic() - hit[0] >= _CACHE_TTL:
            return None
        return hit[1]

    def _remember(self, key: WorkloadId | JwtIdentity, principal: Principal) -> Principal:
        if len(self._principals) >= _CACHE_MAX:
            self._principals.clear()
        self._principals[key] = (time.monotonic(), principal)
        return principal

    async def _workload(self, uris: list[str], request_id: str) -> Principal:
        try:
            workload = parse_spiffe_id(uris, self.trust_domain)
        except Unauthenticated as exc:
            await self.tenants.refuse(exc.detail, actor_id="spiffe:?", request_id=request_id)
        cached = self._cached(workload)
        if cached is not None:
            return cached
        principal = await self.tenants.authenticate_workload(
            workload.tenant, workload.service, workload.spiffe_id, request_id
        )
        return self._remember(workload, principal)

    async def _jwt(self, verifier: JwtVerifier, raw: str, request_id: str) -> Principal:
        digest = hash_token(raw)
        try:
            identity = await verifier.verify(raw)
        except Unauthenticated as exc:
            await self.tenants.refuse(exc.detail, actor_id="jwt:?", digest=digest, request_id=request_id)
        cached = self._cached(identity)
        if cached is not None:
            return cached
        principal = await self.tenants.authenticate_claims(
            subject=identity.subject,
            tenant_ref=identity.tenant,
            roles=identity.roles,
            namespaces=identity.namespaces,
            allow_global_admin=self.allow_jwt_global_admin,
            digest=digest,
            request_id=request_id,
        )
        return self._remember(identity, principal)
