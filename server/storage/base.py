"""The storage interface every backend implements (SQLite now, PostgreSQL later).

Reads are plain async methods that always take the tenant id: no query crosses
tenants. Writes happen inside ``Storage.write(chain)``, an async context
manager yielding a ``WriteTx``: the backend serializes writers per chain (one
chain per tenant, plus ``SYSTEM_CHAIN`` for events that have no tenant), hands
out the next revision, and commits the config change and its audit record
together or not at all. That is what makes audit fail-closed and revisions
gap-free. The same contract tests (tests/server/storage) run against every
backend.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from shared.models import (
    AuditRecord,
    ConfigRef,
    ConfigVersion,
    Environment,
    KekRecord,
    SchemaBinding,
    SchemaRecord,
    SecretVersion,
    Tenant,
    TokenRecord,
)

SYSTEM_CHAIN = "_system"


@dataclass(frozen=True, slots=True)
class AuditDraft:
    """An audit record before the store gives it a sequence number and hashes."""

    time: str
    tenant_id: str
    actor: str
    action: str
    resource: str
    result: str
    request_id: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AgentStatus:
    """The last report of one agent: what it applied, and how that went."""

    tenant_id: str
    agent_id: str
    namespaces: tuple[str, ...]
    environment: str
    applied_revision: int
    state: str
    last_error: str
    reported_at: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "agent_id": self.agent_id,
            "namespaces": list(self.namespaces),
            "environment": self.environment,
            "applied_revision": self.applied_revision,
            "state": self.state,
            "last_error": self.last_error,
            "reported_at": self.reported_at,
        }


@dataclass(frozen=True, slots=True)
class SecretEvent:
    """A notice about a secret that has no version row of its own (a revocation, a rotation
    reminder), kept so the change feed can replay it. Metadata only, never a value."""

    revision: int
    namespace: str
    key: str
    kind: str  # "revoked", "rotation_due"
    versions: tuple[int, ...]
    created_at: str
    data: dict[str, Any] = field(default_factory=dict)


class WriteTx(Protocol):
    """One serialized write transaction on one chain (tenant)."""

    chain: str

    async def current_revision(self) -> int: ...

    async def next_revision(self) -> int:
        """Increment and return the chain's revision counter."""
        ...

    async def compact(self, revision: int) -> int:
        """Drop versions superseded at or below ``revision``; returns how many rows went."""
        ...

    async def latest_version(self, ref: ConfigRef) -> ConfigVersion | None:
        """The newest version row (tombstone or not) of ``ref`` in this chain's tenant."""
        ...

    async def insert_version(self, version: ConfigVersion) -> None: ...

    async def append_audit(self, draft: AuditDraft) -> AuditRecord: ...

    async def insert_tenant(self, tenant: Tenant) -> None: ...

    async def update_tenant_settings(self, tenant_id: str, settings: dict[str, Any]) -> None: ...

    async def insert_token(self, token: TokenRecord) -> None: ...

    async def revoke_token(self, tenant_id: str, token_id: str) -> bool: ...

    async def put_schema(self, tenant_id: str, record: SchemaRecord) -> None: ...

    async def insert_binding(self, tenant_id: str, binding: SchemaBinding) -> None: ...

    async def delete_binding(self, tenant_id: str, binding_id: str) -> bool: ...

    async def put_agent_status(self, status: AgentStatus) -> None:
        """Store an agent's report, replacing its previous one (one row per tenant and agent)."""
        ...

    # keys and secrets
    async def keks(self, tenant_id: str) -> list[KekRecord]:
        """The tenant's KEK versions, oldest first."""
        ...

    async def insert_kek(self, kek: KekRecord) -> None: ...

    async def count_encryption(self, tenant_id: str, version: int) -> int:
        """Add one to the encryptions made with a KEK version; return the new count."""
        ...

    async def latest_secret(self, tenant_id: str, namespace: str, key: str) -> SecretVersion | None: ...

    async def insert_secret(self, tenant_id: str, secret: SecretVersion) -> None: ...

    async def set_secret_wrapping(
        self, tenant_id: str, secret: SecretVersion, kek_version: int, wrapped_dek: str
    ) -> bool:
        """Point a version at a re-wrapped data key, only if it is still on ``secret.kek_version``."""
        ...

    async def set_secret_status(
        self, tenant_id: str, namespace: str, key: str, version: int, status: str, valid_until: str | None
    ) -> None: ...

    async def insert_secret_event(self, tenant_id: str, event: SecretEvent) -> None:
        """Store a notice at its revision; ``StorageError`` if that revision already has one, or if
        it is a ``rotation_due`` of a version that was announced already (each is announced once)."""
        ...

    async def has_secret_event(
        self, tenant_id: str, namespace: str, key: str, kind: str, versions: tuple[int, ...]
    ) -> bool:
        """Is there a notice of this kind about exactly these versions of the secret?"""
        ...


class Storage(Protocol):
    """An opened store. Use ``async with open_storage(url) as storage``."""

    url_for_logs: str

    def write(self, chain: str) -> AbstractAsyncContextManager[WriteTx]: ...

    async def append_audit_batch(self, chain: str, drafts: list[AuditDraft]) -> list[AuditRecord]:
        """Append records to a chain durably, in one transaction of their own, before returning.

        The audit group commit: concurrent calls may share a transaction (one fsync for all).
        """
        ...

    async def ping(self) -> None:
        """Raise ``StorageError`` if the store can't answer."""
        ...

    async def current_revision(self, tenant_id: str) -> int: ...

    async def audit_head(self, chain: str) -> tuple[int, str]:
        """(last seq, last hash) of a chain as recorded at write time; detects truncation."""
        ...

    # tenants and tokens
    async def get_tenant(self, tenant_id: str) -> Tenant | None: ...

    async def get_tenant_by_name(self, name: str) -> Tenant | None: ...

    async def list_tenants(self) -> list[Tenant]: ...

    async def get_token_by_hash(self, token_hash: str) -> TokenRecord | None: ...

    async def get_token(self, tenant_id: str, token_id: str) -> TokenRecord | None: ...

    async def list_tokens(self, tenant_id: str) -> list[TokenRecord]: ...

    # configs
    async def get_version(
        self, tenant_id: str, ref: ConfigRef, version: int | None = None
    ) -> ConfigVersion | None:
        """A given version, or the newest row (which may be a tombstone) when ``version`` is None."""
        ...

    async def latest_in_envs(
        self, tenant_id: str, namespace: str, key: str, environments: tuple[Environment, ...]
    ) -> dict[Environment, ConfigVersion]:
        """The newest row of (namespace, key) in each of ``environments`` that has one."""
        ...

    async def history(
        self, tenant_id: str, ref: ConfigRef, *, limit: int = 100, before_version: int | None = None
    ) -> list[ConfigVersion]:
        """Versions newest first."""
        ...

    async def list_latest(
        self, tenant_id: str, environments: tuple[Environment, ...] | None = None
    ) -> list[ConfigVersion]:
        """The newest row of every entry (tombstones included), optionally in some environments."""
        ...

    async def latest_as_of(self, tenant_id: str, revision: int) -> list[ConfigVersion]:
        """The newest row of every entry as it stood at ``revision`` (tombstones included)."""
        ...

    async def compacted_revision(self, tenant_id: str) -> int:
        """History at or below this revision may be gone (0: nothing compacted)."""
        ...

    async def changes_since(self, tenant_id: str, revision: int, *, limit: int = 1000) -> list[ConfigVersion]:
        """Config versions with revision > ``revision``, in revision order."""
        ...

    # schemas
    async def list_schemas(self, tenant_id: str) -> list[SchemaRecord]: ...

    async def get_schema(self, tenant_id: str, name: str) -> SchemaRecord | None: ...

    async def list_bindings(self, tenant_id: str) -> list[SchemaBinding]: ...

    # agents
    async def list_agent_status(self, tenant_id: str) -> list[AgentStatus]:
        """The last report of every agent of the tenant, by agent id."""
        ...

    # keys and secrets
    async def keks(self, tenant_id: str) -> list[KekRecord]: ...

    async def secret_versions(self, tenant_id: str, namespace: str, key: str) -> list[SecretVersion]:
        """Versions newest first."""
        ...

    async def list_secrets(self, tenant_id: str) -> list[SecretVersion]:
        """The newest version of every secret of the tenant."""
        ...

    async def secrets_below_kek(
        self, tenant_id: str, kek_version: int, *, limit: int, after_revision: int = 0
    ) -> list[SecretVersion]:
        """Secret versions wrapped by a KEK version older than ``kek_version``, by revision after
        ``after_revision``."""
        ...

    async def secret_kek_counts(self, tenant_id: str) -> dict[int, int]:
        """How many secret versions each KEK version wraps."""
        ...

    async def tenants_with_secrets(self) -> list[str]: ...

    async def secret_versions_since(
        self, tenant_id: str, revision: int, *, limit: int = 1000
    ) -> list[SecretVersion]:
        """Secret versions stored with revision > ``revision``, in revision order."""
        ...

    async def secret_events_since(
        self, tenant_id: str, revision: int, *, limit: int = 1000
    ) -> list[SecretEvent]:
        """Secret notices with revision > ``revision``, in revision order."""
        ...

    # audit
    async def audit_records(self, chain: str, *, after_seq: int = 0, limit: int = 1000) -> list[AuditRecord]:
        """Records of one chain with seq > ``after_seq``, in stored order of seq."""
        ...
