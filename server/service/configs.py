"""Versioned configuration: put, get, resolve, list, history, diff, rollback, delete.

Every write runs in one storage transaction on the tenant's chain: check the
expected version, take the next revision, insert the version with its JSON
Patch from the previous one, append the audit record, commit. Reads of the
current value go through a per-tenant cache that every write in the tenant
invalidates (a generation counter stops a read that raced a write from
caching the old value). When other replicas write to the same store
(``core.replicated``), cache keys also carry the tenant's revision read from
the store, so a write acknowledged anywhere makes older entries unreachable;
``shared`` (Redis) then holds resolved answers for every replica under such keys.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any

import jsonpatch

from server.cluster.base import SharedCache
from server.cluster.limits import Hold, value_bytes
from server.service import policy
from server.service.core import Core, Ctx
from server.service.policy import Action, Principal, namespace_in_scope
from server.service.schemas import SchemaService, check_resolved
from server.service.secret_refs import SecretRef, inject, parse_refs
from server.service.secrets import SecretService
from server.storage import WriteTx
from shared.errors import Conflict, InvalidInput, NotFound, PermissionDenied, Unavailable
from shared.merge import deep_merge
from shared.models import (
    CLASSIFICATIONS,
    ChangeType,
    ConfigRef,
    ConfigVersion,
    Environment,
    canonical_json,
    sha256_of,
)

_CACHE_MAX_PER_TENANT = 50_000
_PREFIX_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-/*?")


@dataclass(frozen=True, slots=True)
class ReadResult:
    """A read answer: the body and its JSON bytes, encoded once and cached."""

    body: dict[str, Any]
    encoded: bytes
    classification: str | None
    etag: str = ""
    refs: tuple[SecretRef, ...] = ()  # secret references still to inject (resolved reads)

    def __post_init__(self) -> None:
        # over the whole answer: a rollback to the same value is a new version, a new ETag
        if not self.etag:
            object.__setattr__(self, "etag", f'"{hashlib.sha256(self.encoded).hexdigest()[:32]}"')


@dataclass(frozen=True, slots=True)
class WriteResult:
    version: ConfigVersion
    changed: bool

    def to_dict(self) -> dict[str, Any]:
        out = self.version.to_dict()
        out["changed"] = self.changed
        return out


def _classification(metadata: dict[str, Any]) -> str | None:
    value = metadata.get("classification")
    return value if isinstance(value, str) else None


def _live_classification(version: ConfigVersion | None) -> str | None:
    """The classification an entry has now (a deleted entry has none)."""
    if version is None or version.tombstone:
        return None
    return _classification(version.metadata)


def _inherited_metadata(latest: ConfigVersion | None) -> dict[str, Any]:
    if latest is None or latest.tombstone:
        return {}
    return {k: v for k, v in latest.metadata.items() if k != "rolled_back_to"}


def _strictest(*values: str | None) -> str | None:
    ranked = [v for v in values if v in CLASSIFICATIONS]
    return max(ranked, key=CLASSIFICATIONS.index) if ranked else None


def validate_metadata(metadata: Any) -> dict[str, Any]:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise InvalidInput("'metadata' must be a JSON object")
    if len(canonical_json(metadata)) > 16_384:
        raise InvalidInput("'metadata' is larger than 16 KiB")
    cls = metadata.get("classification")
    if cls is not None and cls not in CLASSIFICATIONS:
        raise InvalidInput(f"metadata.classification must be one of {', '.join(CLASSIFICATIONS)}")
    return metadata


def validate_prefix(prefix: str | None) -> str | None:
    if prefix is None or prefix == "":
        return None
    if len(prefix) > 500 or not set(prefix) <= _PREFIX_CHARS:
        raise InvalidInput(
            f"invalid prefix {prefix[:80]!r}: use a namespace or a glob of a-z, 0-9, '-', '/', '*', '?'"
        )
    return prefix


def _matches_prefix(namespace: str, prefix: str | None) -> bool:
    if prefix is None:
        return True
    if any(c in prefix for c in "*?"):
        return fnmatch.fnmatchcase(namespace, prefix) or (prefix.endswith("/*") and namespace == prefix[:-2])
    return namespace == prefix or namespace.startswith(prefix.rstrip("/") + "/")


def _encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


class ConfigService:
    def __init__(
        self,
        core: Core,
        schemas: SchemaService,
        *,
        max_value_bytes: int = 1 << 20,
        secrets: SecretService | None = None,
    ) -> None:
        self.secrets = secrets
        self.commit_listeners: list[Callable[[str], None]] = []  # called with the tenant after a commit
        self.core = core
        self.schemas = schemas
        self.max_value_bytes = max_value_bytes
        self._cache: dict[str, dict[tuple[Any, ...], ReadResult]] = {}
        self._generation: dict[str, int] = {}
        # (token id, caller's key) -> (generation, settings object, result): a read this token
        # already passed policy for; valid while no write and no settings change hit the tenant
        self._memo: dict[tuple[str, Hashable], tuple[int, dict[str, Any], ReadResult]] = {}
        core.settings_listeners.append(self._invalidate)  # chains shape resolved values
        self.shared: SharedCache | None = None  # answers shared by replicas (server.cluster)

    def forget(self, tenant_id: str) -> None:
        """Drop what is cached for the tenant (another replica wrote to it)."""
        self._invalidate(tenant_id)

    # -- cache -----------------------------------------------------------------------------

    def _invalidate(self, tenant_id: str) -> None:
        self._generation[tenant_id] = self._generation.get(tenant_id, 0) + 1
        self._cache.pop(tenant_id, None)

    def memo_get(self, principal: Principal, key: Hashable) -> ReadResult | None:
        """A read ``principal`` already made under ``key`` (e.g. its raw URL), if still valid.

        The token itself is authenticated by the caller on every request; its roles never
        change, and a write or a settings change in the tenant invalidates every entry.
        """
        hit = self._memo.get((principal.token_id, key))
        if hit is None:  # (never filled on a replicated store: each read asks it for the revision)
            return None
        generation, settings, result = hit
        tenant_id = principal.tenant_id
        if generation != self._generation.get(tenant_id, 0) or settings is not self.core.settings_if_loaded(
            tenant_id
        ):
            return None
        return result

    def _remember(self, tenant_id: str, generation: int, key: tuple[Any, ...], result: ReadResult) -> None:
        if self._generation.get(tenant_id, 0) != generation:
            return  # a write landed while we read: don't cache what may be stale
        entries = self._cache.setdefault(tenant_id, {})
        if len(entries) >= _CACHE_MAX_PER_TENANT:
            entries.clear()
        entries[key] = result

    # -- reads -----------------------------------------------------------------------------

    async def get(
        self,
        ctx: Ctx,
        ref: ConfigRef,
        *,
        version: int | None = None,
        resolve: bool = False,
        explain: bool = False,
        memo_key: Hashable | None = None,
    ) -> ReadResult:
        """Read one entry; with ``memo_key`` the answer is memoized for ``memo_get``."""
        tenant_id = ctx.principal.tenant_id
        start_generation = self._generation.get(tenant_id, 0)
        settings = await self.core.settings(tenant_id)
        request = policy.Request(Action.CONFIG_READ, ref.environment, ref.namespace)
        decision = self.core.decide(ctx.principal, request, settings)
        if not decision.allowed:
            await self.core.deny(ctx, request, decision, ref)
        if resolve:
            await self._authorize_chain(ctx, ref.environment, ref.namespace, settings)
        cache_key: tuple[Any, ...] = (ref, version, resolve, explain)
        if self.core.replicated:  # another replica may have written: the store's revision dates entries
            cache_key = (await self.core.storage.current_revision(tenant_id), *cache_key)
        result = self._cache.get(tenant_id, {}).get(cache_key)
        if result is None:
            # as of the settings read above: a change since then (a write, other settings) must
            # not let this answer into the cache
            generation = start_generation
            shared_key = self._shared_key(cache_key, settings) if self.shared is not None else ""
            result = await self._shared_get(tenant_id, shared_key, resolve)
            if result is None:
                if resolve:  # through the chain the shared key names
                    chain = tuple(Environment(e) for e in settings["chains"][ref.environment.value])
                    result = await self._resolve(tenant_id, ref, explain, chain)
                else:
                    result = await self._raw(tenant_id, ref, version)
                await self._shared_put(tenant_id, shared_key, result, resolve)
            self._remember(tenant_id, generation, cache_key, result)
        if result.classification == "restricted":
            restricted = policy.Request(Action.CONFIG_READ, ref.environment, ref.namespace, "restricted")
            await self.core.authorize(ctx, restricted, ref)
        if settings["audit_reads"]:
            await self._audit_read(ctx, settings, f"config/{ref}")
        if result.refs:
            return await self._inject(ctx, ref, result)  # never memoized: each secret read is audited
        if (
            memo_key is not None
            and not self.core.replicated
            and result.classification != "restricted"
            and not settings["audit_reads"]
        ):
            if len(self._memo) >= _CACHE_MAX_PER_TENANT:
                self._memo.clear()
            self._memo[(ctx.principal.token_id, memo_key)] = (start_generation, settings, result)
        return result

    def _shared_key(self, cache_key: tuple[Any, ...], settings: dict[str, Any]) -> str:
        """The shared cache's key: the tenant's revision first (a write makes older keys
        unreachable before it is acknowledged), then the chain this answer resolves through."""
        if not self.core.replicated:
            return ""
        stamp, ref, version, resolve, explain = cache_key
        chain = ">".join(settings["chains"][ref.environment.value]) if resolve else ""
        return f"{stamp}|{chain}|{ref}|{version or ''}|{int(resolve)}{int(explain)}"

    async def _shared_get(self, tenant_id: str, key: str, resolve: bool) -> ReadResult | None:
        if not key or self.shared is None:
            return None
        data = await self.shared.get(tenant_id, key)
        if data is None:
            return None
        head, _, encoded = data.partition(b"\n")
        try:
            classification = json.loads(head)
            body = json.loads(encoded)
        except ValueError:
            return None
        refs = tuple(parse_refs(body["value"])) if resolve else ()
        level = classification if isinstance(classification, str) else None
        return ReadResult(body, encoded, level, refs=refs)

    async def _shared_put(self, tenant_id: str, key: str, result: ReadResult, resolve: bool) -> None:
        if key and self.shared is not None:
            head = json.dumps(result.classification).encode()
            await self.shared.put(tenant_id, key, head + b"\n" + result.encoded)

    def _quota(self, tenant_id: str, before: ConfigVersion | None, after: dict[str, Any] | None) -> Hold:
        """The quota a write takes: an entry and bytes when it comes alive, their difference after."""
        was = before.value if before is not None and not before.tombstone else None
        return self.core.limits.hold(
            tenant_id,
            configs=int(after is not None) - int(was is not None),
            storage_bytes=value_bytes(after) - value_bytes(was),
        )

    async def _inject(self, ctx: Ctx, ref: ConfigRef, result: ReadResult) -> ReadResult:
        """The resolved value with each referenced secret's plaintext at its field_path.

        All or nothing: a reference the caller may not read is a 403 naming it, a missing
        secret a 404 naming it; a partial value is never returned.
        """
        if self.secrets is None:
            raise Unavailable("this config references secrets, and secrets are unavailable on this server")
        plaintexts = []
        versions = []
        used: list[dict[str, Any]] = []
        opened: dict[str, tuple[str, Any]] = {}  # one read per secret, however often referenced
        for secret in result.refs:
            if secret.name in opened:
                plaintexts.append((secret, opened[secret.name][0]))
                continue
            try:
                plaintext, record = await self.secrets.get(
                    ctx, secret.namespace, secret.key, env=ref.environment
                )
            except PermissionDenied as exc:
                raise PermissionDenied(
                    f"config {ref.namespace}/{ref.key} references secret {secret.name}, which this token "
                    f"may not read: {exc.detail}",
                    rule=exc.extra.get("rule"),
                    secret_ref=secret.name,
                ) from None
            except NotFound as exc:
                raise NotFound(
                    f"config {ref.namespace}/{ref.key} references secret {secret.name}: {exc.detail}",
                    secret_ref=secret.name,
                ) from None
            opened[secret.name] = (plaintext, record)
            plaintexts.append((secret, plaintext))
            versions.append(f"{secret.name}@{record.version}")
            used.append({"secret_ref": secret.name, "version": record.version, "revision": record.revision})
        # rotating a referenced secret is a change of this config: its revision moves with it
        revision = max([result.body["revision"], *(u["revision"] for u in used)])
        body = {
            **result.body,
            "value": inject(result.body["value"], plaintexts),
            "revision": revision,
            "secret_versions": used,
        }
        # the ETag follows versions, never the plaintext (an unsalted hash would confirm guesses)
        tag = hashlib.sha256(f"{result.etag}|{'|'.join(versions)}".encode()).hexdigest()[:32]
        return ReadResult(body, _encode(body), result.classification, etag=f'"{tag}"')

    async def _authorize_chain(
        self, ctx: Ctx, env: Environment, namespace: str | None, settings: dict[str, Any]
    ) -> None:
        """A resolved value shows every layer of its chain: each must be readable.

        With the default chains this follows from reading the target environment; a tenant
        chain that pulls in a more privileged environment (say production into development)
        must not hand its values to someone who can't read them.
        """
        for layer_env in settings["chains"][env.value]:
            request = policy.Request(Action.CONFIG_READ, Environment(layer_env), namespace)
            decision = self.core.decide(ctx.principal, request, settings)
            if not decision.allowed:
                await self.core.deny(ctx, request, decision, f"config/{namespace or '*'}@{env.value}")

    async def _raw(self, tenant_id: str, ref: ConfigRef, version: int | None) -> ReadResult:
        found = await self.core.storage.get_version(tenant_id, ref, version)
        if found is None or (version is None and found.tombstone):
            what = f"version {version} of " if version is not None else ""
            raise NotFound(f"{what}config {ref.namespace}/{ref.key} not found in {ref.environment.value}")
        body = found.to_dict()
        return ReadResult(body, _encode(body), _classification(found.metadata))

    async def _resolve(
        self, tenant_id: str, ref: ConfigRef, explain: bool, chain: tuple[Environment, ...] | None = None
    ) -> ReadResult:
        if chain is None:
            chain = await self.core.chain(tenant_id, ref.environment)
        found = await self.core.storage.latest_in_envs(tenant_id, ref.namespace, ref.key, chain)
        layers = [found[env] for env in chain if env in found and not found[env].tombstone]
        if not layers:
            names = " -> ".join(e.value for e in chain)
            raise NotFound(
                f"config {ref.namespace}/{ref.key} has no value in any environment of the "
                f"{ref.environment.value} chain ({names})"
            )
        body = self._resolved_body(ref, layers, explain)
        cls = _strictest(*(_classification(v.metadata) for v in layers))
        return ReadResult(body, _encode(body), cls, refs=tuple(parse_refs(body["value"])))

    @staticmethod
    def _resolved_body(ref: ConfigRef, layers: list[ConfigVersion], explain: bool) -> dict[str, Any]:
        value, provenance = deep_merge((v.environment.value, v.value) for v in layers)
        body: dict[str, Any] = {
            "namespace": ref.namespace,
            "key": ref.key,
            "environment": ref.environment.value,
            "resolved": True,
            "value": value,
            "sha256": sha256_of(value),
            "revision": max(v.revision for v in layers),
            "layers": [
                {"environment": v.environment.value, "version": v.version, "revision": v.revision}
                for v in layers
            ],
        }
        if explain:
            body["provenance"] = provenance
        return body

    async def list_entries(
        self, ctx: Ctx, env: Environment, *, prefix: str | None = None, resolve: bool = False
    ) -> list[dict[str, Any]]:
        tenant_id = ctx.principal.tenant_id
        prefix = validate_prefix(prefix)
        await self.core.authorize(ctx, policy.Request(Action.CONFIG_READ, env), f"configs/{prefix or ''}")
        settings = await self.core.settings(tenant_id)
        if resolve:
            await self._authorize_chain(ctx, env, None, settings)
        chain = await self.core.chain(tenant_id, env) if resolve else (env,)
        rows = await self.core.storage.list_latest(tenant_id, chain)
        scopes = ctx.principal.namespaces
        pii = "pii-authorized" in ctx.principal.roles
        grouped: dict[tuple[str, str], dict[Environment, ConfigVersion]] = {}
        for row in rows:
            if row.tombstone or not _matches_prefix(row.namespace, prefix):
                continue
            if scopes and not namespace_in_scope(row.namespace, scopes):
                continue
            grouped.setdefault((row.namespace, row.key), {})[row.environment] = row
        out = []
        for (namespace, key), by_env in sorted(grouped.items()):
            layers = [by_env[e] for e in chain if e in by_env]
            if not pii and any(_classification(v.metadata) == "restricted" for v in layers):
                continue
            if resolve:
                out.append(self._resolved_body(ConfigRef(namespace, key, env), layers, False))
            elif env in by_env:
                out.append(by_env[env].to_dict())
        await self._audit_read(ctx, settings, f"configs/{prefix or ''}@{env.value}")
        return out

    async def _audit_read(self, ctx: Ctx, settings: dict[str, Any], resource: str) -> None:
        """Reads are audited only where the tenant turned it on (denied reads always are)."""
        if settings["audit_reads"]:
            draft = self.core.draft(ctx, "config:read", resource, "ok")
            await self.core.audit(ctx.principal.tenant_id, draft)

    async def history(
        self, ctx: Ctx, ref: ConfigRef, *, limit: int = 100, before: int | None = None
    ) -> list[dict[str, Any]]:
        if not 1 <= limit <= 1000:
            raise InvalidInput("limit must be between 1 and 1000")
        await self._authorize_existing(ctx, ref, Action.CONFIG_READ)
        versions = await self.core.storage.history(
            ctx.principal.tenant_id, ref, limit=limit, before_version=before
        )
        await self._authorize_versions(ctx, ref, Action.CONFIG_READ, versions)
        await self._audit_read(
            ctx, await self.core.settings(ctx.principal.tenant_id), f"config/{ref}/history"
        )
        return [v.to_dict(with_patch=True) for v in versions]

    async def diff(
        self, ctx: Ctx, ref: ConfigRef, *, from_version: int | None, to_version: int | None
    ) -> dict[str, Any]:
        latest = await self._authorize_existing(ctx, ref, Action.CONFIG_READ)
        tenant_id = ctx.principal.tenant_id
        to_v = to_version if to_version is not None else latest.version
        from_v = from_version if from_version is not None else to_v - 1
        values: dict[int, dict[str, Any]] = {0: {}}  # version 0: before the entry existed
        found_versions = []
        for n in (from_v, to_v):
            if n == 0:
                continue
            found = await self.core.storage.get_version(tenant_id, ref, n)
            if found is None:
                raise NotFound(
                    f"version {n} of config {ref.namespace}/{ref.key} not found in {ref.environment.value}"
                )
            values[n] = found.value
            found_versions.append(found)
        await self._authorize_versions(ctx, ref, Action.CONFIG_READ, found_versions)
        await self._audit_read(ctx, await self.core.settings(tenant_id), f"config/{ref}/diff")
        patch = jsonpatch.make_patch(values[from_v], values[to_v]).patch
        return {
            "namespace": ref.namespace,
            "key": ref.key,
            "environment": ref.environment.value,
            "from_version": from_v,
            "to_version": to_v,
            "patch": patch,
        }

    async def _authorize_versions(
        self, ctx: Ctx, ref: ConfigRef, action: Action, versions: list[ConfigVersion]
    ) -> None:
        """Restricted content in any version shown or used needs the pii-authorized role."""
        if any(_classification(v.metadata) == "restricted" for v in versions):
            request = policy.Request(action, ref.environment, ref.namespace, "restricted")
            await self.core.authorize(ctx, request, ref)

    async def _authorize_existing(self, ctx: Ctx, ref: ConfigRef, action: Action) -> ConfigVersion:
        """Authorize on the entry's namespace, environment and classification; 404 if it never existed."""
        resource = f"config/{ref}"
        await self.core.authorize(ctx, policy.Request(action, ref.environment, ref.namespace), resource)
        latest = await self.core.storage.get_version(ctx.principal.tenant_id, ref)
        if latest is None:
            raise NotFound(f"config {ref.namespace}/{ref.key} not found in {ref.environment.value}")
        cls = _classification(latest.metadata)
        if cls == "restricted":
            await self.core.authorize(
                ctx, policy.Request(action, ref.environment, ref.namespace, cls), resource
            )
        return latest

    # -- writes ----------------------------------------------------------------------------

    def check_value(self, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise InvalidInput(
                f"'value' must be a JSON object, got {type(value).__name__ if value is not None else 'null'}"
            )
        size = len(canonical_json(value))
        if size > self.max_value_bytes:
            raise InvalidInput(f"'value' is {size} bytes; the limit is {self.max_value_bytes}")
        parse_refs(value)  # a malformed secret reference is refused at write time
        return value

    async def put(
        self,
        ctx: Ctx,
        ref: ConfigRef,
        value: Any,
        *,
        message: str = "",
        expected_version: int | None = None,
        metadata: Any = None,
    ) -> WriteResult:
        value = self.check_value(value)
        given = None if metadata is None else validate_metadata(metadata)
        tenant_id = ctx.principal.tenant_id
        resource = f"config/{ref}"
        current = await self.core.storage.get_version(tenant_id, ref)
        authorized_cls = _strictest(_live_classification(current), _classification(given or {}))
        await self.core.authorize(
            ctx,
            policy.Request(Action.CONFIG_WRITE, ref.environment, ref.namespace, authorized_cls),
            resource,
        )
        await self._validate_resolved(tenant_id, ref, value)

        async def build(tx: WriteTx, latest: ConfigVersion | None) -> ConfigVersion | None:
            # metadata not given: the entry keeps what it had (its classification above all)
            meta = given if given is not None else _inherited_metadata(latest)
            if _strictest(_live_classification(latest), _classification(meta)) != authorized_cls:
                raise Conflict(
                    f"the classification of {ref.namespace}/{ref.key} changed while writing; retry",
                    expected_version=expected_version,
                    current_version=latest.version if latest else 0,
                )
            if latest is not None and not latest.tombstone:
                if latest.sha256 == sha256_of(value) and latest.metadata == meta:
                    return None
                return await self._next(tx, ctx, ref, latest, value, ChangeType.UPDATE, message, meta)
            return await self._next(tx, ctx, ref, latest, value, ChangeType.CREATE, message, meta)

        async with self._quota(tenant_id, current, value) as held:
            result = await self._write(ctx, ref, "config:put", expected_version, build)
            if not result.changed:
                held.cancel()
        return result

    async def delete(
        self, ctx: Ctx, ref: ConfigRef, *, message: str = "", expected_version: int | None = None
    ) -> WriteResult:
        existing = await self._authorize_existing(ctx, ref, Action.CONFIG_WRITE)
        await self._validate_resolved(ctx.principal.tenant_id, ref, None)

        async def build(tx: WriteTx, latest: ConfigVersion | None) -> ConfigVersion | None:
            if latest is None or latest.tombstone:
                raise NotFound(f"config {ref.namespace}/{ref.key} not found in {ref.environment.value}")
            return await self._next(
                tx, ctx, ref, latest, {}, ChangeType.DELETE, message, latest.metadata, tombstone=True
            )

        async with self._quota(ctx.principal.tenant_id, existing, None):
            return await self._write(ctx, ref, "config:delete", expected_version, build)

    async def rollback(
        self,
        ctx: Ctx,
        ref: ConfigRef,
        version: Any,
        *,
        message: str = "",
        expected_version: int | None = None,
    ) -> WriteResult:
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise InvalidInput("'version' must be a positive integer")
        existing = await self._authorize_existing(ctx, ref, Action.CONFIG_WRITE)
        target = await self.core.storage.get_version(ctx.principal.tenant_id, ref, version)
        if target is None:
            raise NotFound(
                f"version {version} of config {ref.namespace}/{ref.key} not found in {ref.environment.value}"
            )
        if target.tombstone:
            raise InvalidInput(f"version {version} is a deletion; roll back to a version with a value")
        await self._authorize_versions(ctx, ref, Action.CONFIG_WRITE, [target])
        await self._validate_resolved(ctx.principal.tenant_id, ref, target.value)

        async def build(tx: WriteTx, latest: ConfigVersion | None) -> ConfigVersion | None:
            note = message or f"rollback to version {version}"
            return await self._next(
                tx,
                ctx,
                ref,
                latest,
                target.value,
                ChangeType.ROLLBACK,
                note,
                target.metadata,
                rolled_back_to=version,
            )

        async with self._quota(ctx.principal.tenant_id, existing, target.value):
            return await self._write(ctx, ref, "config:rollback", expected_version, build)

    async def _validate_resolved(self, tenant_id: str, ref: ConfigRef, value: dict[str, Any] | None) -> None:
        """Check bound schemas against what apps would see: the resolved value of every
        environment whose chain includes the written one (``value`` None: a deletion).

        A partial override (say production changing only ``temperature``) is valid when
        the value it resolves to is, not on its own.
        """
        schemas = await self.schemas.bound(tenant_id, ref.namespace, ref.key)
        if not schemas:
            return
        chains = {env: await self.core.chain(tenant_id, env) for env in Environment}
        affected = [env for env, chain in chains.items() if ref.environment in chain]
        wanted = tuple({e for env in affected for e in chains[env]})
        found = await self.core.storage.latest_in_envs(tenant_id, ref.namespace, ref.key, wanted)
        resolved: dict[str, dict[str, Any]] = {}
        for env in affected:
            layers = []
            for layer_env in chains[env]:
                if layer_env is ref.environment:
                    layer = value
                else:
                    row = found.get(layer_env)
                    layer = row.value if row is not None and not row.tombstone else None
                if layer is not None:
                    layers.append((layer_env.value, layer))
            if layers:
                resolved[env.value] = deep_merge(layers)[0]
        check_resolved(schemas, resolved, f"{ref.namespace}/{ref.key}")

    async def _next(
        self,
        tx: WriteTx,
        ctx: Ctx,
        ref: ConfigRef,
        latest: ConfigVersion | None,
        value: dict[str, Any],
        change: ChangeType,
        message: str,
        metadata: dict[str, Any],
        *,
        tombstone: bool = False,
        rolled_back_to: int | None = None,
    ) -> ConfigVersion:
        previous = latest.value if latest is not None else {}
        meta = dict(metadata)
        if rolled_back_to is not None:
            meta["rolled_back_to"] = rolled_back_to
        return ConfigVersion(
            namespace=ref.namespace,
            key=ref.key,
            environment=ref.environment,
            version=(latest.version if latest else 0) + 1,
            revision=await tx.next_revision(),
            value=value,
            sha256=sha256_of(value),
            change_type=change,
            author=ctx.principal.name,
            message=message[:2000],
            created_at=self.core.now_iso(),
            patch=jsonpatch.make_patch(previous, value).patch,
            tombstone=tombstone,
            metadata=meta,
        )

    async def _write(
        self,
        ctx: Ctx,
        ref: ConfigRef,
        action: str,
        expected_version: int | None,
        build: Callable[[WriteTx, ConfigVersion | None], Awaitable[ConfigVersion | None]],
    ) -> WriteResult:
        if expected_version is not None and (
            not isinstance(expected_version, int)
            or isinstance(expected_version, bool)
            or expected_version < 0
        ):
            raise InvalidInput("expected_version must be a non-negative integer (0: must not exist yet)")
        tenant_id = ctx.principal.tenant_id
        resource = f"config/{ref}"
        async with self.core.storage.write(tenant_id) as tx:
            latest = await tx.latest_version(ref)
            current = latest.version if latest else 0
            if expected_version is not None and expected_version != current:
                raise Conflict(
                    f"version conflict on {ref.namespace}/{ref.key} in {ref.environment.value}: "
                    f"expected version {expected_version}, current version is {current}",
                    expected_version=expected_version,
                    current_version=current,
                )
            new = await build(tx, latest)
            if new is None:
                assert latest is not None
                await self.core.audit_in(
                    tx, self.core.draft(ctx, action, resource, "unchanged", {"version": latest.version})
                )
                return WriteResult(latest, changed=False)
            await tx.insert_version(new)
            await self.core.audit_in(
                tx,
                self.core.draft(
                    ctx,
                    action,
                    resource,
                    "ok",
                    {
                        "version": new.version,
                        "revision": new.revision,
                        "change_type": new.change_type.value,
                    },
                ),
            )
        self._invalidate(tenant_id)
        for listener in self.commit_listeners:
            listener(tenant_id)
        return WriteResult(new, changed=True)
