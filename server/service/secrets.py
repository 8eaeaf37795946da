"""Secrets: versioned values under envelope encryption, served only to those allowed.

Each version is sealed with its own data key (AES-256-GCM); the data key is
wrapped by the tenant's KEK through the ``KeyProvider``. Both seals bind the
tenant, namespace, key and version as AAD, so a ciphertext or wrapped key moved
to any other row fails to open. The plaintext exists only in memory while a put
seals it or a permitted get returns it; every plaintext read is audited, and so
is every failure to open a stored value. Metadata reads never touch plaintext.

A new value becomes the active version; the one it replaces stays valid for the
grace period given (then it is deprecated and no longer served).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from server.cluster.limits import secret_bytes
from server.keys import KeyProvider
from server.service import policy
from server.service.core import Core, Ctx, iso, utc_now
from server.service.policy import Action
from server.storage.base import AuditDraft, SecretEvent
from shared.crypto import (
    FORMAT_VERSION,
    DecryptionFailed,
    WrappedKey,
    aad_for,
    b64,
    new_key,
    open_sealed,
    seal,
    unb64,
)
from shared.errors import InvalidInput, NotFound, Unavailable
from shared.models import Environment, SecretStatus, SecretVersion, validate_key, validate_namespace

MAX_SECRET_BYTES = 64 * 1024
MAX_GRACE_SECONDS = 30 * 24 * 3600
# An opened value may be served again from memory for this long (each read still authorized and
# audited); any write to the tenant's secrets drops it at once.
PLAINTEXT_TTL_SECONDS = 5.0
PLAINTEXT_CACHE_MAX = 256


def secret_aad(
    purpose: str, tenant_id: str, namespace: str, key: str, version: int, environment: str
) -> bytes:
    """Binds the value (and its data key) to its row and to the environment it serves, so
    editing that environment in the database makes the value unreadable, not readable by more."""
    return aad_for(
        purpose=purpose,
        tenant=tenant_id,
        namespace=namespace,
        key=key,
        version=version,
        environment=environment,
    )


_RefusalKey = tuple[str, Action, tuple[Environment, ...], str]  # token id, action, environments, namespace
_EVERYWHERE = tuple(Environment)
_SERVED = {e.value: (e,) for e in Environment} | {Environment.GLOBAL.value: _EVERYWHERE}


def served_environments(env: Environment | str | None) -> tuple[Environment, ...]:
    """Where a secret stored for ``env`` is used: everywhere for global, else that one."""
    if env is None:
        return _EVERYWHERE
    served = _SERVED.get(env) if isinstance(env, str) else None
    return served if served is not None else (Environment(env),)  # Environment() names a bad one


def _environment(record: SecretVersion) -> str:
    return str(record.metadata.get("environment", Environment.GLOBAL.value))


def _served(record: SecretVersion | None) -> tuple[Environment, ...]:
    return served_environments(record.metadata.get("environment")) if record is not None else ()


Encoder = Callable[[str, SecretVersion], bytes]  # an answer made of (plaintext, record)


@dataclass(slots=True)
class _Opened:
    """A value opened for a read, kept in memory for ``PLAINTEXT_TTL_SECONDS``."""

    record: SecretVersion  # the very record object the version cache held when it was opened
    value: str
    expiry: float  # time.monotonic()
    # an answer encoded from value and record (get_encoded), with the encoder that made it
    encoded: tuple[Encoder, bytes] | None = None


_NO_VERSIONS: dict[tuple[str, str], list[SecretVersion]] = {}


def _seconds(value: Any, name: str, maximum: int) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= maximum:
        raise InvalidInput(f"{name} must be a whole number of seconds from 0 to {maximum}")
    return value


class SecretService:
    def __init__(self, core: Core, keys: KeyProvider | None, *, allow_insecure: bool = False) -> None:
        self.core = core
        self.keys = keys
        self.allow_insecure = allow_insecure  # serve plaintext over plain HTTP to remote peers
        # tenant -> (namespace, key) -> versions newest first; dropped on any secret write in the tenant
        self._versions: dict[str, dict[tuple[str, str], list[SecretVersion]]] = {}
        self._generation: dict[str, int] = {}
        # (tenant, namespace, key, version) -> the opened value (and an answer made of it), oldest
        # first; a hit needs the very record object the version cache holds now, so a reload
        # (after any write) opens the value again
        self._plain: dict[tuple[str, str, str, int], _Opened] = {}
        self._second: tuple[int, str] = (-1, "")  # a whole second since the epoch and its ISO text
        self._plain_sweep: tuple[asyncio.AbstractEventLoop, asyncio.TimerHandle] | None = None
        # tenant -> (token id, action, environments, namespace) -> refusal (None: allowed);
        # dropped with the tenant's settings, as Core drops its memo of decisions
        self._refusals: dict[str, dict[_RefusalKey, tuple[policy.Request, policy.Decision] | None]] = {}
        core.settings_listeners.append(self._forget_refusals)
        self.commit_listeners: list[Callable[[str], None]] = []  # called with the tenant after a write
        self._stamps: dict[str, int] = {}  # replicated store: the tenant revision the caches are of

    def _forget_refusals(self, tenant_id: str) -> None:
        """The tenant's settings changed: decisions taken on the old ones no longer hold."""
        self._refusals.pop(tenant_id, None)

    def forget(self, tenant_id: str) -> None:
        """Drop cached version lists of a tenant (after any write to its secrets)."""
        self._drop(tenant_id)
        for listener in self.commit_listeners:
            listener(tenant_id)

    def _drop(self, tenant_id: str) -> None:
        self._generation[tenant_id] = self._generation.get(tenant_id, 0) + 1
        self._versions.pop(tenant_id, None)
        for slot in [slot for slot in self._plain if slot[0] == tenant_id]:
            del self._plain[slot]

    async def _load(self, tenant_id: str, namespace: str, key: str) -> list[SecretVersion]:
        if self.core.replicated:  # another replica may have written: its revision dates the caches
            stamp = await self.core.storage.current_revision(tenant_id)
            if self._stamps.get(tenant_id) != stamp:
                self._drop(tenant_id)
                self._stamps[tenant_id] = stamp
        cached = self._versions.get(tenant_id, {}).get((namespace, key))
        if cached is not None:
            return cached
        generation = self._generation.get(tenant_id, 0)
        found = await self.core.storage.secret_versions(tenant_id, namespace, key)
        if self._generation.get(tenant_id, 0) == generation:  # no write raced the read
            entries = self._versions.setdefault(tenant_id, {})
            if len(entries) >= 10_000:
                entries.clear()
            entries[(namespace, key)] = found
        return found

    def _provider(self) -> KeyProvider:
        if self.keys is None:
            raise Unavailable("no key provider is configured on this server; secrets are unavailable")
        return self.keys

    async def _authorize(
        self, ctx: Ctx, action: Action, served: tuple[Environment, ...], namespace: str, key: str
    ) -> None:
        """The caller needs ``action`` in every environment the secret serves.

        A secret is not per environment, so the environment a caller names proves nothing;
        what counts is where the secret is used: a secret stored for global serves every
        environment, production included, so only principals allowed in all of them read it.
        """
        tenant_id = ctx.principal.tenant_id
        memo = self._refusals.get(tenant_id)
        slot = (ctx.principal.token_id, action, served, namespace)
        if memo is not None and slot in memo:  # no secret decision depends on the time
            refused = memo[slot]
        else:
            refused = self._refusal(ctx, action, served, namespace, await self.core.settings(tenant_id))
            memo = self._refusals.setdefault(tenant_id, {})
            if len(memo) >= 10_000:
                memo.clear()
            memo[slot] = refused
        if refused is not None:
            await self.core.deny(ctx, refused[0], refused[1], f"secret/{namespace}/{key}")

    def _refusal(
        self,
        ctx: Ctx,
        action: Action,
        served: tuple[Environment, ...],
        namespace: str,
        settings: dict[str, Any],
    ) -> tuple[policy.Request, policy.Decision] | None:
        """The first environment the secret serves where ``action`` is not granted, if any."""
        for env in served:
            request = policy.Request(action, env, namespace)
            decision = self.core.decide(ctx.principal, request, settings)
            if not decision.allowed:
                return request, decision
        return None

    # -- writes ----------------------------------------------------------------------------

    async def put(
        self,
        ctx: Ctx,
        namespace: str,
        key: str,
        value: Any,
        *,
        env: Environment = Environment.GLOBAL,
        message: str = "",
        grace_period: Any = None,
        expires_in: Any = None,
        rotation_interval: Any = None,
    ) -> SecretVersion:
        """Seal ``value`` as the new active version; the previous one enters its grace period."""
        validate_namespace(namespace)
        validate_key(key)
        if not isinstance(value, str) or not value:
            raise InvalidInput("'value' must be a non-empty string")
        plaintext = value.encode()
        if len(plaintext) > MAX_SECRET_BYTES:
            raise InvalidInput(f"the secret is {len(plaintext)} bytes; the limit is {MAX_SECRET_BYTES}")
        grace = _seconds(grace_period, "grace_period", MAX_GRACE_SECONDS) or 0
        expires = _seconds(expires_in, "expires_in", 10 * 365 * 24 * 3600)
        interval = _seconds(rotation_interval, "rotation_interval", 10 * 365 * 24 * 3600)
        provider = self._provider()
        tenant_id = ctx.principal.tenant_id
        versions = await self.core.storage.secret_versions(tenant_id, namespace, key)
        replaced = versions[0] if versions else None
        served = tuple(dict.fromkeys((*_served(replaced), *served_environments(env))))
        await self._authorize(ctx, Action.SECRET_WRITE, served, namespace, key)
        now = self.core.clock()
        quota = self.core.limits.hold(
            tenant_id,
            secrets=0 if replaced else 1,
            storage_bytes=len(plaintext) - (secret_bytes(replaced) if replaced else 0),
        )
        async with quota, self.core.storage.write(tenant_id) as tx:
            latest = await tx.latest_secret(tenant_id, namespace, key)
            version = (latest.version if latest else 0) + 1
            if interval is None and latest is not None:
                interval = latest.metadata.get("rotation_interval")
            meta: dict[str, Any] = {"environment": env.value}
            if interval:
                meta["rotation_interval"] = interval
            dek = new_key()
            sealed = seal(dek, plaintext, secret_aad("secret", tenant_id, namespace, key, version, env.value))
            wrapped = await provider.wrap(
                tx, tenant_id, dek, secret_aad("dek", tenant_id, namespace, key, version, env.value)
            )
            record = SecretVersion(
                namespace=namespace,
                key=key,
                version=version,
                revision=await tx.next_revision(),
                status=SecretStatus.ACTIVE,
                format=FORMAT_VERSION,
                kek_id=wrapped.kek_id,
                kek_version=wrapped.kek_version,
                wrapped_dek=wrapped.blob,
                ciphertext=b64(sealed),
                created_at=iso(now),
                author=ctx.principal.name,
                message=message[:2000],
                expires_at=iso(now + timedelta(seconds=expires)) if expires else None,
                metadata=meta,
            )
            await tx.insert_secret(tenant_id, record)
            if latest is not None and latest.status is SecretStatus.ACTIVE:
                status = SecretStatus.GRACE if grace else SecretStatus.DEPRECATED
                until = iso(now + timedelta(seconds=grace)) if grace else None
                await tx.set_secret_status(tenant_id, namespace, key, latest.version, status.value, until)
            await self.core.audit_in(
                tx,
                self.core.draft(
                    ctx,
                    "secret:put",
                    f"secret/{namespace}/{key}",
                    "ok",
                    {"version": version, "revision": record.revision, "kek_version": wrapped.kek_version},
                ),
            )
        self.forget(tenant_id)
        return record

    async def revoke(
        self,
        ctx: Ctx,
        namespace: str,
        key: str,
        *,
        env: Environment = Environment.GLOBAL,
        version: Any = None,
    ) -> list[SecretVersion]:
        """Revoke one version, or all of them; revoked versions are never served again."""
        validate_namespace(namespace)
        validate_key(key)
        if version is not None and (not isinstance(version, int) or isinstance(version, bool) or version < 1):
            raise InvalidInput("'version' must be a positive integer")
        tenant_id = ctx.principal.tenant_id
        versions = await self.core.storage.secret_versions(tenant_id, namespace, key)
        await self._authorize(
            ctx, Action.SECRET_WRITE, _served(versions[0]) if versions else (env,), namespace, key
        )
        targets = [v for v in versions if version is None or v.version == version]
        if not targets:
            raise NotFound(f"secret {namespace}/{key}{f' version {version}' if version else ''} not found")
        async with self.core.storage.write(tenant_id) as tx:
            for target in targets:
                await tx.set_secret_status(tenant_id, namespace, key, target.version, "revoked", None)
            # a revocation has no version row of its own: a notice keeps it in the change feed
            await tx.insert_secret_event(
                tenant_id,
                SecretEvent(
                    revision=await tx.next_revision(),
                    namespace=namespace,
                    key=key,
                    kind="revoked",
                    versions=tuple(t.version for t in targets),
                    created_at=iso(self.core.clock()),
                    data={"environment": _environment(versions[0]), "author": ctx.principal.name},
                ),
            )
            await self.core.audit_in(
                tx,
                self.core.draft(
                    ctx,
                    "secret:revoke",
                    f"secret/{namespace}/{key}",
                    "ok",
                    {"versions": [t.version for t in targets]},
                ),
            )
        self.forget(tenant_id)
        return await self.core.storage.secret_versions(tenant_id, namespace, key)

    # -- reads -----------------------------------------------------------------------------

    def _servable(self, record: SecretVersion, now: datetime) -> str | None:
        """Why ``record`` can't be served now, or None if it can."""
        if record.status is SecretStatus.REVOKED:
            return "revoked"
        if record.status is SecretStatus.DEPRECATED or (
            record.status is SecretStatus.GRACE
            and record.valid_until is not None
            and record.valid_until <= iso(now)
        ):
            return "deprecated (replaced, past its grace period)"
        if record.expires_at is not None and record.expires_at <= iso(now):
            return "expired"
        return None

    async def get(
        self,
        ctx: Ctx,
        namespace: str,
        key: str,
        *,
        env: Environment = Environment.GLOBAL,
        version: int | None = None,
    ) -> tuple[str, SecretVersion]:
        """The plaintext of the active version (or a given one still valid); audited."""
        opened = await self._read(ctx, namespace, key, env, version)
        return opened.value, opened.record

    async def get_encoded(
        self,
        ctx: Ctx,
        namespace: str,
        key: str,
        *,
        env: Environment = Environment.GLOBAL,
        version: int | None = None,
        encode: Encoder,
    ) -> bytes:
        """``get``, answered as ``encode(plaintext, record)``; audited like ``get``.

        The answer is encoded once per opened value and kept with it in memory (same lifetime,
        dropped by the same writes; never written anywhere), so reads in between only pay for
        authorization and the audit record.
        """
        opened = await self._read(ctx, namespace, key, env, version)
        encoded = opened.encoded
        if encoded is None or encoded[0] is not encode:
            encoded = opened.encoded = (encode, encode(opened.value, opened.record))
        return encoded[1]

    async def _read(
        self, ctx: Ctx, namespace: str, key: str, env: Environment, version: int | None
    ) -> _Opened:
        tenant_id = ctx.principal.tenant_id
        # names in the version cache were checked before they were loaded
        if (namespace, key) not in self._versions.get(tenant_id, _NO_VERSIONS):
            validate_namespace(namespace)
            validate_key(key)
        provider = self._provider()
        if not ctx.private_channel and not self.allow_insecure:
            insecure = policy.Decision(
                False,
                "deny:insecure-transport",
                "secret values are served only over TLS (or to clients on this machine); connect with "
                "https, or have the operator set allow_insecure_secrets",
            )
            await self.core.deny(
                ctx, policy.Request(Action.SECRET_READ, env, namespace), insecure, f"secret/{namespace}/{key}"
            )
        resource = f"secret/{namespace}/{key}"
        versions = await self._load(tenant_id, namespace, key)
        if not versions:  # same answer whether or not the caller could have read it
            await self._authorize(ctx, Action.SECRET_READ, (env,), namespace, key)
        if version is None:
            record = next((v for v in versions if v.status is SecretStatus.ACTIVE), None)
        else:
            record = next((v for v in versions if v.version == version), None)
        if record is None:
            what = f" version {version}" if version is not None else ""
            raise NotFound(f"secret {namespace}/{key}{what} not found (or no active version)")
        served = _served(record)
        await self._authorize(ctx, Action.SECRET_READ, served, namespace, key)
        if env is not Environment.GLOBAL and env not in served:
            raise NotFound(
                f"secret {namespace}/{key} is for {record.metadata.get('environment')} only, not {env.value}"
            )
        if record.status is not SecretStatus.ACTIVE or record.expires_at is not None:  # else: servable
            refusal = self._servable(record, self.core.clock())
            if refusal is not None:
                raise NotFound(f"secret {namespace}/{key} version {record.version} is {refusal}")
        slot = (tenant_id, namespace, key, record.version)
        cached = self._plain.get(slot)
        if cached is not None and cached.record is record and cached.expiry > time.monotonic():
            await self.core.audit(
                tenant_id, self._read_draft(ctx, resource, "ok", {"version": record.version})
            )
            return cached
        try:
            dek = await provider.unwrap(
                tenant_id,
                WrappedKey(record.kek_id, record.kek_version, record.wrapped_dek),
                secret_aad("dek", tenant_id, namespace, key, record.version, _environment(record)),
            )
            plaintext = open_sealed(
                dek,
                unb64(record.ciphertext, "secret ciphertext"),
                secret_aad("secret", tenant_id, namespace, key, record.version, _environment(record)),
                f"secret {namespace}/{key} version {record.version}",
            )
        except DecryptionFailed as exc:
            await self.core.audit(
                tenant_id,
                self._read_draft(
                    ctx, resource, "tamper_detected", {"version": record.version, "error": exc.detail}
                ),
            )
            raise
        await self.core.audit(tenant_id, self._read_draft(ctx, resource, "ok", {"version": record.version}))
        return self._remember(slot, record, plaintext.decode())

    def _read_draft(self, ctx: Ctx, resource: str, result: str, metadata: dict[str, Any]) -> AuditDraft:
        """``core.draft(ctx, "secret:read", ...)``, made on every read: with the real clock the
        time is formatted without a datetime (the text of the current second is kept)."""
        if self.core.clock is utc_now:
            second, fraction = divmod(time.time_ns(), 1_000_000_000)
            if self._second[0] != second:
                self._second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
            now = f"{self._second[1]}.{fraction // 1000:06d}Z"
        else:
            now = self.core.now_iso()
        principal = ctx.principal
        return AuditDraft(
            time=now,
            tenant_id=principal.tenant_id,
            actor=principal.actor,
            action="secret:read",
            resource=resource,
            result=result,
            request_id=ctx.request_id,
            metadata=metadata,
        )

    def _remember(self, slot: tuple[str, str, str, int], record: SecretVersion, value: str) -> _Opened:
        """Keep an opened value for ``PLAINTEXT_TTL_SECONDS``; a timer drops it when that is up."""
        self._plain.pop(slot, None)
        if len(self._plain) >= PLAINTEXT_CACHE_MAX:
            del self._plain[next(iter(self._plain))]
        opened = self._plain[slot] = _Opened(record, value, time.monotonic() + PLAINTEXT_TTL_SECONDS)
        loop = asyncio.get_running_loop()
        if self._plain_sweep is None or self._plain_sweep[0] is not loop:
            self._plain_sweep = (loop, loop.call_later(PLAINTEXT_TTL_SECONDS, self._sweep_plain))
        return opened

    def _sweep_plain(self) -> None:
        """Drop expired values (oldest first), then come back when the next one is due."""
        self._plain_sweep = None
        now = time.monotonic()
        while self._plain:
            slot, opened = next(iter(self._plain.items()))
            if opened.expiry > now:
                loop = asyncio.get_running_loop()
                self._plain_sweep = (loop, loop.call_later(opened.expiry - now, self._sweep_plain))
                return
            del self._plain[slot]

    async def versions(
        self, ctx: Ctx, namespace: str, key: str, *, env: Environment = Environment.GLOBAL
    ) -> list[SecretVersion]:
        validate_namespace(namespace)
        validate_key(key)
        found = await self.core.storage.secret_versions(ctx.principal.tenant_id, namespace, key)
        await self._authorize(ctx, Action.SECRET_READ, _served(found[0]) if found else (env,), namespace, key)
        if not found:
            raise NotFound(f"secret {namespace}/{key} not found")
        return found

    def listed(self, ctx: Ctx, environment: str | None, namespace: str, settings: dict[str, Any]) -> bool:
        """Would ``list`` show the caller a secret of ``namespace`` stored for ``environment``?
        (The change feed shows a secret's events to exactly those who may list it.)"""
        served = served_environments(environment)
        return self._refusal(ctx, Action.SECRET_READ, served, namespace, settings) is None

    def rotation_due(self, record: SecretVersion) -> bool:
        """Past its rotation interval (counted from when this version was stored)?"""
        interval = record.metadata.get("rotation_interval")
        if not interval or record.status is not SecretStatus.ACTIVE:
            return False
        created = datetime.fromisoformat(record.created_at.replace("Z", "+00:00"))
        return created + timedelta(seconds=int(interval)) <= self.core.clock()

    async def list(
        self,
        ctx: Ctx,
        *,
        env: Environment = Environment.GLOBAL,
        prefix: str | None = None,
        due: bool = False,
    ) -> list[SecretVersion]:
        """The newest version of each secret the caller may read, metadata only (``due``: only
        those past their rotation interval)."""
        settings = await self.core.settings(ctx.principal.tenant_id)
        out = []
        for record in await self.core.storage.list_secrets(ctx.principal.tenant_id):
            if prefix and not (
                record.namespace == prefix or record.namespace.startswith(prefix.rstrip("/") + "/")
            ):
                continue
            if due and not self.rotation_due(record):
                continue
            if env is not Environment.GLOBAL and env not in _served(record):
                continue
            if self._refusal(ctx, Action.SECRET_READ, _served(record), record.namespace, settings) is None:
                out.append(record)
        return out
