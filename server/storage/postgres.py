"""PostgreSQL backend: the scale-out store that several server replicas share.

Writers are serialized per chain (tenant) in the database, not in this process: every write
transaction starts with ``SELECT … FROM chains WHERE id = $1 FOR UPDATE``, so a writer on any
replica waits for the chain's row lock, then reads what the previous holder committed (READ
COMMITTED takes a fresh snapshot per statement) and hands out the next revision. Revisions stay
strictly increasing per tenant with no gaps and no duplicates however many replicas write, and
the audit hash chain is extended under the same lock. Commits are durable by PostgreSQL's
defaults (``synchronous_commit=on``, set on every connection of ours).

Two pools: writers, and readers (read-only sessions). A reader never waits for a row lock, so a
writer that holds a chain lock can always read. asyncpg errors are translated to
``StorageError`` here and nowhere else; a message names the operation and the error class,
never a value (PostgreSQL's own messages quote the offending row).
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from server.audit_chain import GENESIS_HASH, record_hash
from server.storage import rows as rowmap
from server.storage.base import AgentStatus, AuditDraft, SecretEvent
from server.storage.migrations import POSTGRES_MIGRATIONS
from shared.errors import AlreadyExists, StorageError
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

# errors of the driver and the connection under it: translated at this boundary
_DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)
_OPEN_ERRORS: tuple[type[BaseException], ...] = (*_DRIVER_ERRORS, ValueError)  # ValueError: a bad URL
_ROLLBACK_ERRORS: tuple[type[BaseException], ...] = (*_DRIVER_ERRORS, asyncio.CancelledError)
# serialization failure, deadlock, lock timeout, shutdown, too many connections, cannot connect now
_RETRIABLE_STATES = frozenset({"40001", "40P01", "55P03", "57P01", "57P02", "57P03", "53300", "08000"})
_MIGRATION_LOCK = 0x6C6C6D636D  # pg_advisory_lock key: one migrating session at a time
_WRITE_POOL_SIZE = 8
_READ_POOL_SIZE = 8
_CONNECT_TIMEOUT = 10.0
_SETTINGS = {
    "application_name": "llm-config-server",
    "synchronous_commit": "on",  # an acknowledged commit is on disk (and on sync standbys)
    # a replica that hangs inside a write must not hold a tenant's lock forever
    "idle_in_transaction_session_timeout": "60000",
}


def _translate(exc: BaseException, what: str) -> StorageError:
    state = getattr(exc, "sqlstate", None) or ""
    retriable = (
        isinstance(exc, OSError | TimeoutError | asyncpg.PostgresConnectionError)
        or state in _RETRIABLE_STATES
        or state.startswith("08")
    )
    return StorageError(f"PostgreSQL failed while {what}: {type(exc).__name__}", retriable=retriable)


def _open_failure(exc: BaseException) -> str:
    """Why a connection could not be made, in words, without the driver's text (it may quote input)."""
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return "the database does not exist (create it first)"
    if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError | asyncpg.InvalidPasswordError):
        return "authentication failed (user or password)"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is PostgreSQL running there?)"
    if isinstance(exc, TimeoutError):
        return f"no answer within {_CONNECT_TIMEOUT:g} s"
    if isinstance(exc, ValueError):
        return "the URL is not a valid PostgreSQL connection URL"
    return type(exc).__name__


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _rowcount(status: str) -> int:
    """The row count of a command tag such as ``UPDATE 3`` or ``INSERT 0 1``."""
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


_AUDIT_INSERT = (
    f"INSERT INTO audit_log ({rowmap.AUDIT_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
)


def _audit_row(r: AuditRecord) -> tuple[Any, ...]:
    return (
        r.seq,
        r.chain,
        r.time,
        r.tenant_id,
        r.actor,
        r.action,
        r.resource,
        r.result,
        r.request_id,
        _dumps(r.metadata),
        r.prev_hash,
        r.hash,
    )


def hashed_fields_of(d: AuditDraft) -> dict[str, Any]:
    """The fields of a record that its hash covers (``server.audit_chain.hashed_fields``)."""
    return {
        "time": d.time,
        "tenant_id": d.tenant_id,
        "actor": d.actor,
        "action": d.action,
        "resource": d.resource,
        "result": d.result,
        "request_id": d.request_id,
        "metadata": d.metadata,
    }


def _chain_records(chain: str, head: Any, drafts: list[AuditDraft]) -> list[AuditRecord]:
    """Sequence and hash ``drafts`` after the chain head (audit_seq, audit_hash) or genesis."""
    seq, prev_hash = (int(head[0]), str(head[1])) if head else (0, GENESIS_HASH)
    records = []
    for d in drafts:
        seq += 1
        record = AuditRecord(
            seq=seq,
            chain=chain,
            time=d.time,
            tenant_id=d.tenant_id,
            actor=d.actor,
            action=d.action,
            resource=d.resource,
            result=d.result,
            request_id=d.request_id,
            metadata=d.metadata,
            prev_hash=prev_hash,
            hash=record_hash(prev_hash, seq, chain, hashed_fields_of(d)),
        )
        records.append(record)
        prev_hash = record.hash
    return records


def _kek(row: Any) -> KekRecord:
    return KekRecord(row[0], int(row[1]), row[2], row[3], int(row[4]))


async def _lock_chain(conn: asyncpg.Connection, chain: str) -> Any:
    """Take the chain's row lock (creating the row on first use); returns (audit_seq, audit_hash).

    Every writer of the chain, on any replica, queues here until the holder commits or rolls back.
    """
    sql = "SELECT audit_seq, audit_hash FROM chains WHERE id = $1 FOR UPDATE"
    head = await conn.fetchrow(sql, chain)
    if head is None:
        # a concurrent creator makes this wait for its commit, then do nothing
        await conn.execute(
            "INSERT INTO chains (id, revision, audit_seq, audit_hash) VALUES ($1, 0, 0, $2) "
            "ON CONFLICT (id) DO NOTHING",
            chain,
            GENESIS_HASH,
        )
        head = await conn.fetchrow(sql, chain)
    return head


class PostgresWriteTx:
    """A write transaction holding one chain's row lock on one pooled connection.

    PostgreSQL aborts a transaction at its first failed statement (SQLite would let it go on),
    so the first failure is remembered: the transaction can then only roll back, and leaving
    the block normally raises ``StorageError`` instead of committing a partial change.
    """

    def __init__(self, conn: asyncpg.Connection, chain: str) -> None:
        self._conn = conn
        self.chain = chain
        self.failed: StorageError | None = None

    def _fail(self, exc: BaseException, what: str = "writing") -> StorageError:
        error = _translate(exc, what)
        self.failed = self.failed or error
        return error

    async def _one(self, sql: str, *args: Any) -> Any:
        try:
            return await self._conn.fetchrow(sql, *args)
        except _DRIVER_ERRORS as exc:
            raise self._fail(exc) from exc

    async def _all(self, sql: str, *args: Any) -> list[Any]:
        try:
            return list(await self._conn.fetch(sql, *args))
        except _DRIVER_ERRORS as exc:
            raise self._fail(exc) from exc

    async def _exec(self, sql: str, *args: Any) -> int:
        """Run one statement; returns the rows it touched."""
        try:
            return _rowcount(await self._conn.execute(sql, *args))
        except _DRIVER_ERRORS as exc:
            raise self._fail(exc) from exc

    async def current_revision(self) -> int:
        row = await self._one("SELECT revision FROM chains WHERE id = $1", self.chain)
        return int(row[0]) if row else 0

    async def next_revision(self) -> int:
        row = await self._one(
            "UPDATE chains SET revision = revision + 1 WHERE id = $1 RETURNING revision", self.chain
        )
        return int(row[0])

    async def compact(self, revision: int) -> int:
        if revision > await self.current_revision():
            raise StorageError("cannot compact past the current revision")
        removed = await self._exec(
            "DELETE FROM config_versions AS v WHERE tenant_id = $1 AND revision <= $2 AND EXISTS ("
            "SELECT 1 FROM config_versions w WHERE w.tenant_id = v.tenant_id AND w.namespace = "
            "v.namespace AND w.key = v.key AND w.environment = v.environment AND w.revision > v.revision "
            "AND w.revision <= $2)",
            self.chain,
            revision,
        )
        await self._exec(
            "UPDATE chains SET compacted_revision = GREATEST(compacted_revision, $1) WHERE id = $2",
            revision,
            self.chain,
        )
        return removed

    async def latest_version(self, ref: ConfigRef) -> ConfigVersion | None:
        row = await self._one(
            f"SELECT {rowmap.VERSION_COLS} FROM config_versions WHERE tenant_id = $1 AND namespace = $2 "
            "AND key = $3 AND environment = $4 ORDER BY version DESC LIMIT 1",
            self.chain,
            ref.namespace,
            ref.key,
            ref.environment.value,
        )
        return rowmap.version_of(row) if row else None

    async def insert_version(self, version: ConfigVersion) -> None:
        await self._exec(
            f"INSERT INTO config_versions (tenant_id, {rowmap.VERSION_COLS}) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
            self.chain,
            version.namespace,
            version.key,
            version.environment.value,
            version.version,
            version.revision,
            _dumps(version.value),
            version.sha256,
            version.change_type.value,
            version.author,
            version.message,
            version.created_at,
            _dumps(version.patch),
            bool(version.tombstone),
            _dumps(version.metadata),
        )

    async def append_audit(self, draft: AuditDraft) -> AuditRecord:
        # the chain row is locked by this transaction since it began
        head = await self._one("SELECT audit_seq, audit_hash FROM chains WHERE id = $1", self.chain)
        (record,) = _chain_records(self.chain, head, [draft])
        await self._exec(_AUDIT_INSERT, *_audit_row(record))
        await self._exec(
            "UPDATE chains SET audit_seq = $1, audit_hash = $2 WHERE id = $3",
            record.seq,
            record.hash,
            self.chain,
        )
        return record

    async def insert_tenant(self, tenant: Tenant) -> None:
        taken = AlreadyExists(f"a tenant named {tenant.name!r} already exists")
        if await self._one("SELECT 1 FROM tenants WHERE name = $1", tenant.name):
            raise taken
        try:
            await self._conn.execute(
                f"INSERT INTO tenants ({rowmap.TENANT_COLS}) VALUES ($1, $2, $3, $4, $5)",
                tenant.id,
                tenant.name,
                tenant.status,
                tenant.created_at,
                _dumps(tenant.settings),
            )
        except asyncpg.UniqueViolationError as exc:
            # another replica created the same name meanwhile (its chain lock is not ours)
            self._fail(exc)
            if exc.constraint_name == "tenants_name_key":
                raise taken from None
            raise _translate(exc, "writing") from exc
        except _DRIVER_ERRORS as exc:
            raise self._fail(exc) from exc
        await self._exec(
            "INSERT INTO chains (id, revision, audit_seq, audit_hash) VALUES ($1, 0, 0, $2) "
            "ON CONFLICT (id) DO NOTHING",
            tenant.id,
            GENESIS_HASH,
        )

    async def update_tenant_settings(self, tenant_id: str, settings: dict[str, Any]) -> None:
        await self._exec("UPDATE tenants SET settings = $1 WHERE id = $2", _dumps(settings), tenant_id)

    async def insert_token(self, token: TokenRecord) -> None:
        await self._exec(
            f"INSERT INTO tokens ({rowmap.TOKEN_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            token.id,
            token.tenant_id,
            token.name,
            token.token_hash,
            _dumps(list(token.roles)),
            _dumps(list(token.namespaces)),
            token.created_at,
            token.expires_at,
            bool(token.revoked),
            token.created_by,
        )

    async def revoke_token(self, tenant_id: str, token_id: str) -> bool:
        changed = await self._exec(
            "UPDATE tokens SET revoked = TRUE WHERE tenant_id = $1 AND id = $2 AND NOT revoked",
            tenant_id,
            token_id,
        )
        return changed > 0

    async def put_schema(self, tenant_id: str, record: SchemaRecord) -> None:
        await self._exec(
            "INSERT INTO schemas (tenant_id, name, schema, created_at) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (tenant_id, name) DO UPDATE SET schema = excluded.schema, "
            "created_at = excluded.created_at",
            tenant_id,
            record.name,
            _dumps(record.schema),
            record.created_at,
        )

    async def insert_binding(self, tenant_id: str, binding: SchemaBinding) -> None:
        await self._exec(
            "INSERT INTO schema_bindings (id, tenant_id, schema_name, namespace_glob, key_glob, "
            "created_at) VALUES ($1, $2, $3, $4, $5, $6)",
            binding.id,
            tenant_id,
            binding.schema_name,
            binding.namespace_glob,
            binding.key_glob,
            binding.created_at,
        )

    async def delete_binding(self, tenant_id: str, binding_id: str) -> bool:
        changed = await self._exec(
            "DELETE FROM schema_bindings WHERE tenant_id = $1 AND id = $2", tenant_id, binding_id
        )
        return changed > 0

    # -- agents ------------------------------------------------------------------------------

    async def put_agent_status(self, status: AgentStatus) -> None:
        await self._exec(
            f"INSERT INTO agent_status ({rowmap.AGENT_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
            "ON CONFLICT (tenant_id, agent_id) DO UPDATE SET namespaces = excluded.namespaces, "
            "environment = excluded.environment, applied_revision = excluded.applied_revision, "
            "state = excluded.state, last_error = excluded.last_error, reported_at = excluded.reported_at",
            status.tenant_id,
            status.agent_id,
            _dumps(list(status.namespaces)),
            status.environment,
            status.applied_revision,
            status.state,
            status.last_error,
            status.reported_at,
        )

    # -- keys and secrets -------------------------------------------------------------------

    async def keks(self, tenant_id: str) -> list[KekRecord]:
        rows = await self._all(
            "SELECT tenant_id, version, sealed, created_at, encryptions FROM keks WHERE tenant_id = $1 "
            "ORDER BY version",
            tenant_id,
        )
        return [_kek(r) for r in rows]

    async def insert_kek(self, kek: KekRecord) -> None:
        await self._exec(
            "INSERT INTO keks (tenant_id, version, sealed, created_at, encryptions) "
            "VALUES ($1, $2, $3, $4, $5)",
            kek.tenant_id,
            kek.version,
            kek.sealed,
            kek.created_at,
            kek.encryptions,
        )

    async def count_encryption(self, tenant_id: str, version: int) -> int:
        row = await self._one(
            "UPDATE keks SET encryptions = encryptions + 1 WHERE tenant_id = $1 AND version = $2 "
            "RETURNING encryptions",
            tenant_id,
            version,
        )
        if row is None:
            raise StorageError(f"no key version {version} for this tenant")
        return int(row[0])

    async def latest_secret(self, tenant_id: str, namespace: str, key: str) -> SecretVersion | None:
        row = await self._one(
            f"SELECT {rowmap.SECRET_COLS} FROM secret_versions WHERE tenant_id = $1 AND namespace = $2 "
            "AND key = $3 ORDER BY version DESC LIMIT 1",
            tenant_id,
            namespace,
            key,
        )
        return rowmap.secret_of(row) if row else None

    async def insert_secret(self, tenant_id: str, secret: SecretVersion) -> None:
        await self._exec(
            f"INSERT INTO secret_versions (tenant_id, {rowmap.SECRET_COLS}) VALUES "
            "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
            tenant_id,
            secret.namespace,
            secret.key,
            secret.version,
            secret.revision,
            secret.status.value,
            secret.format,
            secret.kek_id,
            secret.kek_version,
            secret.wrapped_dek,
            secret.ciphertext,
            secret.created_at,
            secret.author,
            secret.message,
            secret.valid_until,
            secret.expires_at,
            _dumps(secret.metadata),
        )

    async def set_secret_wrapping(
        self, tenant_id: str, secret: SecretVersion, kek_version: int, wrapped_dek: str
    ) -> bool:
        changed = await self._exec(
            "UPDATE secret_versions SET kek_version = $1, wrapped_dek = $2 WHERE tenant_id = $3 "
            "AND namespace = $4 AND key = $5 AND version = $6 AND kek_version = $7",
            kek_version,
            wrapped_dek,
            tenant_id,
            secret.namespace,
            secret.key,
            secret.version,
            secret.kek_version,
        )
        return changed > 0

    async def set_secret_status(
        self, tenant_id: str, namespace: str, key: str, version: int, status: str, valid_until: str | None
    ) -> None:
        await self._exec(
            "UPDATE secret_versions SET status = $1, valid_until = $2 WHERE tenant_id = $3 "
            "AND namespace = $4 AND key = $5 AND version = $6",
            status,
            valid_until,
            tenant_id,
            namespace,
            key,
            version,
        )

    async def insert_secret_event(self, tenant_id: str, event: SecretEvent) -> None:
        await self._exec(
            f"INSERT INTO secret_events (tenant_id, {rowmap.SECRET_EVENT_COLS}) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            tenant_id,
            event.revision,
            event.namespace,
            event.key,
            event.kind,
            _dumps(list(event.versions)),
            event.created_at,
            _dumps(event.data),
        )

    async def has_secret_event(
        self, tenant_id: str, namespace: str, key: str, kind: str, versions: tuple[int, ...]
    ) -> bool:
        row = await self._one(
            "SELECT 1 FROM secret_events WHERE tenant_id = $1 AND namespace = $2 AND key = $3 "
            "AND kind = $4 AND versions = $5 LIMIT 1",
            tenant_id,
            namespace,
            key,
            kind,
            _dumps(list(versions)),
        )
        return row is not None


_AuditJob = tuple[str, list[AuditDraft], "asyncio.Future[list[AuditRecord]]"]


def _settle_audit_jobs(jobs: list[_AuditJob], records: list[AuditRecord], exc: StorageError | None) -> None:
    """Give each call its records, or the failure of the transaction they shared."""
    start = 0
    for _, drafts, done in jobs:
        if not done.done():  # a caller that went away (cancelled): its records stand
            if exc is None:
                done.set_result(records[start : start + len(drafts)])
            else:
                done.set_exception(StorageError(exc.detail, retriable=exc.retriable))
        start += len(drafts)


def _safe_url(url: str) -> str:
    """scheme://host:port/database: no user, password or query (which may carry a password)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "localhost"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "postgresql://(unparsable URL)"
    return f"{parts.scheme}://{host}{port}{parts.path}"


class PostgresStorage:
    """``Storage`` on a PostgreSQL database. Open with ``async with PostgresStorage(url)``."""

    def __init__(
        self, url: str, *, write_pool_size: int = _WRITE_POOL_SIZE, read_pool_size: int = _READ_POOL_SIZE
    ) -> None:
        self._url = url
        self.url_for_logs = _safe_url(url)
        self._sizes = (write_pool_size, read_pool_size)
        self._writers: asyncpg.Pool | None = None
        self._readers: asyncpg.Pool | None = None
        # audit group commit: calls waiting for the writer task, which takes them all at once
        self._audit_jobs: deque[_AuditJob] = deque()
        self._audit_drain: asyncio.Task[None] | None = None

    async def __aenter__(self) -> PostgresStorage:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _pool(self, size: int, **settings: str) -> asyncpg.Pool:
        return await asyncpg.create_pool(
            self._url,
            min_size=1,
            max_size=size,
            timeout=_CONNECT_TIMEOUT,
            server_settings={**_SETTINGS, **settings},
        )

    async def open(self, *, migrate: bool = True) -> None:
        """Connect both pools and apply pending migrations.

        ``migrate=False`` leaves the schema alone, for a caller that runs ``migrate()``
        itself and wants to know what it applied.
        """
        try:
            self._writers = await self._pool(self._sizes[0])
            if migrate:
                await self.migrate()
            self._readers = await self._pool(self._sizes[1], default_transaction_read_only="on")
        except StorageError:
            await self.close()
            raise
        except _OPEN_ERRORS as exc:
            await self.close()
            raise StorageError(
                f"cannot open the PostgreSQL store at {self.url_for_logs}: {_open_failure(exc)}",
                retriable=not isinstance(exc, ValueError) and _translate(exc, "").retriable,
            ) from exc
        except BaseException:
            await self.close()
            raise

    async def migrate(self) -> list[int]:
        """Apply missing schema migrations; return the versions applied.

        Replicas starting together take turns (a session advisory lock), and each version
        is applied in a transaction of its own together with its row in schema_migrations.
        """
        try:
            async with self._require(self._writers).acquire() as conn:
                await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
                try:
                    return await self._migrate(conn)
                finally:
                    await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
        except _DRIVER_ERRORS as exc:
            raise _translate(exc, "migrating the schema") from exc

    @staticmethod
    async def _migrate(conn: asyncpg.Connection) -> list[int]:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
            "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        done = {int(r[0]) for r in await conn.fetch("SELECT version FROM schema_migrations")}
        applied = []
        for version, statements in POSTGRES_MIGRATIONS:
            if version in done:
                continue
            async with conn.transaction():
                for statement in statements:
                    await conn.execute(statement)
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
            applied.append(version)
        return applied

    async def close(self) -> None:
        """Let queued audit records be written, then close both pools; safe twice."""
        if self._audit_drain is not None:
            await asyncio.wait({self._audit_drain})
        for attr in ("_readers", "_writers"):
            pool: asyncpg.Pool | None = getattr(self, attr)
            setattr(self, attr, None)
            if pool is None:
                continue
            try:
                await asyncio.wait_for(pool.close(), timeout=10)
            except asyncio.CancelledError:
                pool.terminate()
                raise
            except _DRIVER_ERRORS:  # a connection still busy after the deadline, or already broken
                pool.terminate()

    @staticmethod
    def _require(pool: asyncpg.Pool | None) -> asyncpg.Pool:
        if pool is None:
            raise StorageError("storage is not open")
        return pool

    # -- writes ------------------------------------------------------------------------------

    @asynccontextmanager
    async def write(self, chain: str) -> AsyncIterator[PostgresWriteTx]:
        pool = self._require(self._writers)
        try:
            conn = await pool.acquire()
        except _DRIVER_ERRORS as exc:
            raise _translate(exc, "starting a write") from exc
        try:
            xact = conn.transaction()
            try:
                await xact.start()
                await _lock_chain(conn, chain)
            except _DRIVER_ERRORS as exc:
                await self._abandon(conn, xact)
                raise _translate(exc, "starting a write") from exc
            tx = PostgresWriteTx(conn, chain)
            try:
                yield tx
            except BaseException as exc:
                await self._abandon(conn, xact)
                if isinstance(exc, _DRIVER_ERRORS):
                    raise _translate(exc, "writing") from exc
                raise
            if tx.failed is not None:  # PostgreSQL aborted it already: nothing can be committed
                await self._abandon(conn, xact)
                raise StorageError(f"the write was aborted by an earlier error ({tx.failed.detail})")
            try:
                await xact.commit()
            except _DRIVER_ERRORS as exc:
                await self._abandon(conn, xact)
                raise _translate(exc, "committing") from exc
        finally:
            await pool.release(conn)

    @staticmethod
    async def _abandon(conn: asyncpg.Connection, xact: Any) -> None:
        """Roll back; a connection that can't (broken, or busy with a cancelled query) is closed,
        which rolls back on the server and keeps it out of the pool."""
        try:
            await xact.rollback()
        except _ROLLBACK_ERRORS:
            conn.terminate()

    async def append_audit_batch(self, chain: str, drafts: list[AuditDraft]) -> list[AuditRecord]:
        """Append records durably, in one transaction (the audit group commit); fail closed.

        Calls queue up; one writer task takes every call queued so far and writes each chain's
        records in one transaction under the chain's row lock (one commit for all of them), then
        goes on with the calls queued meanwhile. A call returns once its records are committed;
        if their transaction fails, every call in it fails.
        """
        if not drafts:
            return []
        self._require(self._writers)
        loop = asyncio.get_running_loop()
        done: asyncio.Future[list[AuditRecord]] = loop.create_future()
        self._audit_jobs.append((chain, drafts, done))
        if self._audit_drain is None:
            # started on the next turn of the loop: calls made ready together are written together
            self._audit_drain = loop.create_task(self._drain_audit_jobs(), name="audit-writer")
        return await done

    async def _drain_audit_jobs(self) -> None:
        try:
            while self._audit_jobs:
                by_chain: dict[str, list[_AuditJob]] = {}
                while self._audit_jobs:
                    job = self._audit_jobs.popleft()
                    by_chain.setdefault(job[0], []).append(job)
                await asyncio.gather(
                    *(self._write_audit_jobs(chain, jobs) for chain, jobs in by_chain.items())
                )
        finally:
            self._audit_drain = None
            # cancelled (shutdown): nobody will write what is still queued; fail it closed
            while self._audit_jobs:
                _, _, done = self._audit_jobs.popleft()
                if not done.done():
                    done.set_exception(StorageError("the audit write was interrupted; retry"))

    async def _write_audit_jobs(self, chain: str, jobs: list[_AuditJob]) -> None:
        drafts = [d for _, job_drafts, _ in jobs for d in job_drafts]
        try:
            async with self.write(chain) as tx:
                head = await tx._one("SELECT audit_seq, audit_hash FROM chains WHERE id = $1", chain)
                records = _chain_records(chain, head, drafts)
                try:
                    await tx._conn.executemany(_AUDIT_INSERT, [_audit_row(r) for r in records])
                except _DRIVER_ERRORS as exc:
                    raise tx._fail(exc, "writing the audit log") from exc
                await tx._exec(
                    "UPDATE chains SET audit_seq = $1, audit_hash = $2 WHERE id = $3",
                    records[-1].seq,
                    records[-1].hash,
                    chain,
                )
        except StorageError as exc:
            _settle_audit_jobs(jobs, [], exc)
        except asyncio.CancelledError:
            _settle_audit_jobs(jobs, [], StorageError("the audit write was interrupted; retry"))
            raise
        except Exception as exc:
            failed = StorageError(f"PostgreSQL failed while writing the audit log: {type(exc).__name__}")
            _settle_audit_jobs(jobs, [], failed)
        else:
            _settle_audit_jobs(jobs, records, None)

    # -- reads -----------------------------------------------------------------------------

    async def _all(self, sql: str, *args: Any) -> list[Any]:
        pool = self._require(self._readers)
        try:
            return list(await pool.fetch(sql, *args))
        except (asyncpg.PostgresConnectionError, OSError):
            pass  # a pooled connection that died (server restart, failover): once more, on a new one
        except _DRIVER_ERRORS as exc:
            raise _translate(exc, "reading") from exc
        try:
            return list(await pool.fetch(sql, *args))
        except _DRIVER_ERRORS as exc:
            raise _translate(exc, "reading") from exc

    async def _first(self, sql: str, *args: Any) -> Any:
        rows = await self._all(sql, *args)
        return rows[0] if rows else None

    async def ping(self) -> None:
        await self._first("SELECT 1")

    async def current_revision(self, tenant_id: str) -> int:
        row = await self._first("SELECT revision FROM chains WHERE id = $1", tenant_id)
        return int(row[0]) if row else 0

    async def audit_head(self, chain: str) -> tuple[int, str]:
        row = await self._first("SELECT audit_seq, audit_hash FROM chains WHERE id = $1", chain)
        return (int(row[0]), str(row[1])) if row else (0, GENESIS_HASH)

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        row = await self._first(f"SELECT {rowmap.TENANT_COLS} FROM tenants WHERE id = $1", tenant_id)
        return rowmap.tenant_of(row) if row else None

    async def get_tenant_by_name(self, name: str) -> Tenant | None:
        row = await self._first(f"SELECT {rowmap.TENANT_COLS} FROM tenants WHERE name = $1", name)
        return rowmap.tenant_of(row) if row else None

    async def list_tenants(self) -> list[Tenant]:
        found = await self._all(f"SELECT {rowmap.TENANT_COLS} FROM tenants ORDER BY name")
        return [rowmap.tenant_of(r) for r in found]

    async def get_token_by_hash(self, token_hash: str) -> TokenRecord | None:
        row = await self._first(f"SELECT {rowmap.TOKEN_COLS} FROM tokens WHERE token_hash = $1", token_hash)
        return rowmap.token_of(row) if row else None

    async def get_token(self, tenant_id: str, token_id: str) -> TokenRecord | None:
        row = await self._first(
            f"SELECT {rowmap.TOKEN_COLS} FROM tokens WHERE tenant_id = $1 AND id = $2", tenant_id, token_id
        )
        return rowmap.token_of(row) if row else None

    async def list_tokens(self, tenant_id: str) -> list[TokenRecord]:
        rows = await self._all(
            f"SELECT {rowmap.TOKEN_COLS} FROM tokens WHERE tenant_id = $1 ORDER BY created_at, id", tenant_id
        )
        return [rowmap.token_of(r) for r in rows]

    async def get_version(
        self, tenant_id: str, ref: ConfigRef, version: int | None = None
    ) -> ConfigVersion | None:
        sql = (
            f"SELECT {rowmap.VERSION_COLS} FROM config_versions WHERE tenant_id = $1 AND namespace = $2 "
            "AND key = $3 AND environment = $4"
        )
        args: tuple[Any, ...] = (tenant_id, ref.namespace, ref.key, ref.environment.value)
        if version is None:
            sql += " ORDER BY version DESC LIMIT 1"
        else:
            sql += " AND version = $5"
            args += (version,)
        row = await self._first(sql, *args)
        return rowmap.version_of(row) if row else None

    async def latest_in_envs(
        self, tenant_id: str, namespace: str, key: str, environments: tuple[Environment, ...]
    ) -> dict[Environment, ConfigVersion]:
        rows = await self._all(
            f"SELECT DISTINCT ON (environment) {rowmap.VERSION_COLS} FROM config_versions "
            "WHERE tenant_id = $1 "
            "AND namespace = $2 AND key = $3 AND environment = ANY($4::text[]) "
            "ORDER BY environment, version DESC",
            tenant_id,
            namespace,
            key,
            [e.value for e in environments],
        )
        found = [rowmap.version_of(r) for r in rows]
        return {v.environment: v for v in found}

    async def history(
        self, tenant_id: str, ref: ConfigRef, *, limit: int = 100, before_version: int | None = None
    ) -> list[ConfigVersion]:
        rows = await self._all(
            f"SELECT {rowmap.VERSION_COLS} FROM config_versions WHERE tenant_id = $1 AND namespace = $2 "
            "AND key = $3 AND environment = $4 AND version < $5 ORDER BY version DESC LIMIT $6",
            tenant_id,
            ref.namespace,
            ref.key,
            ref.environment.value,
            before_version if before_version is not None else 2**62,
            limit,
        )
        return [rowmap.version_of(r) for r in rows]

    async def list_latest(
        self, tenant_id: str, environments: tuple[Environment, ...] | None = None
    ) -> list[ConfigVersion]:
        sql = f"SELECT DISTINCT ON (namespace, key, environment) {rowmap.VERSION_COLS} FROM config_versions "
        sql += "WHERE tenant_id = $1"
        args: tuple[Any, ...] = (tenant_id,)
        if environments is not None:
            sql += " AND environment = ANY($2::text[])"
            args += ([e.value for e in environments],)
        sql += " ORDER BY namespace, key, environment, version DESC"
        return [rowmap.version_of(r) for r in await self._all(sql, *args)]

    async def latest_as_of(self, tenant_id: str, revision: int) -> list[ConfigVersion]:
        rows = await self._all(
            f"SELECT DISTINCT ON (namespace, key, environment) {rowmap.VERSION_COLS} FROM config_versions "
            "WHERE tenant_id = $1 AND revision <= $2 ORDER BY namespace, key, environment, version DESC",
            tenant_id,
            revision,
        )
        return [rowmap.version_of(r) for r in rows]

    async def compacted_revision(self, tenant_id: str) -> int:
        row = await self._first("SELECT compacted_revision FROM chains WHERE id = $1", tenant_id)
        return int(row[0]) if row else 0

    async def changes_since(self, tenant_id: str, revision: int, *, limit: int = 1000) -> list[ConfigVersion]:
        rows = await self._all(
            f"SELECT {rowmap.VERSION_COLS} FROM config_versions WHERE tenant_id = $1 AND revision > $2 "
            "ORDER BY revision LIMIT $3",
            tenant_id,
            revision,
            limit,
        )
        return [rowmap.version_of(r) for r in rows]

    async def list_schemas(self, tenant_id: str) -> list[SchemaRecord]:
        rows = await self._all(
            "SELECT name, schema, created_at FROM schemas WHERE tenant_id = $1 ORDER BY name", tenant_id
        )
        return [SchemaRecord(r[0], json.loads(r[1]), False, r[2]) for r in rows]

    async def get_schema(self, tenant_id: str, name: str) -> SchemaRecord | None:
        row = await self._first(
            "SELECT name, schema, created_at FROM schemas WHERE tenant_id = $1 AND name = $2", tenant_id, name
        )
        return SchemaRecord(row[0], json.loads(row[1]), False, row[2]) if row else None

    async def list_bindings(self, tenant_id: str) -> list[SchemaBinding]:
        rows = await self._all(
            "SELECT id, schema_name, namespace_glob, key_glob, created_at FROM schema_bindings "
            "WHERE tenant_id = $1 ORDER BY created_at, id",
            tenant_id,
        )
        return [SchemaBinding(*r) for r in rows]

    async def list_agent_status(self, tenant_id: str) -> list[AgentStatus]:
        rows = await self._all(
            f"SELECT {rowmap.AGENT_COLS} FROM agent_status WHERE tenant_id = $1 ORDER BY agent_id", tenant_id
        )
        return [rowmap.agent_of(r) for r in rows]

    async def keks(self, tenant_id: str) -> list[KekRecord]:
        rows = await self._all(
            "SELECT tenant_id, version, sealed, created_at, encryptions FROM keks WHERE tenant_id = $1 "
            "ORDER BY version",
            tenant_id,
        )
        return [_kek(r) for r in rows]

    async def secret_versions(self, tenant_id: str, namespace: str, key: str) -> list[SecretVersion]:
        rows = await self._all(
            f"SELECT {rowmap.SECRET_COLS} FROM secret_versions WHERE tenant_id = $1 AND namespace = $2 "
            "AND key = $3 ORDER BY version DESC",
            tenant_id,
            namespace,
            key,
        )
        return [rowmap.secret_of(r) for r in rows]

    async def list_secrets(self, tenant_id: str) -> list[SecretVersion]:
        rows = await self._all(
            f"SELECT DISTINCT ON (namespace, key) {rowmap.SECRET_COLS} FROM secret_versions "
            "WHERE tenant_id = $1 "
            "ORDER BY namespace, key, version DESC",
            tenant_id,
        )
        return [rowmap.secret_of(r) for r in rows]

    async def secrets_below_kek(
        self, tenant_id: str, kek_version: int, *, limit: int, after_revision: int = 0
    ) -> list[SecretVersion]:
        rows = await self._all(
            f"SELECT {rowmap.SECRET_COLS} FROM secret_versions WHERE tenant_id = $1 AND kek_version < $2 "
            "AND revision > $3 ORDER BY revision LIMIT $4",
            tenant_id,
            kek_version,
            after_revision,
            limit,
        )
        return [rowmap.secret_of(r) for r in rows]

    async def secret_kek_counts(self, tenant_id: str) -> dict[int, int]:
        rows = await self._all(
            "SELECT kek_version, COUNT(*) FROM secret_versions WHERE tenant_id = $1 GROUP BY kek_version",
            tenant_id,
        )
        return {int(v): int(n) for v, n in rows}

    async def tenants_with_secrets(self) -> list[str]:
        return [str(r[0]) for r in await self._all("SELECT DISTINCT tenant_id FROM secret_versions")]

    async def secret_versions_since(
        self, tenant_id: str, revision: int, *, limit: int = 1000
    ) -> list[SecretVersion]:
        rows = await self._all(
            f"SELECT {rowmap.SECRET_COLS} FROM secret_versions WHERE tenant_id = $1 AND revision > $2 "
            "ORDER BY revision LIMIT $3",
            tenant_id,
            revision,
            limit,
        )
        return [rowmap.secret_of(r) for r in rows]

    async def secret_events_since(
        self, tenant_id: str, revision: int, *, limit: int = 1000
    ) -> list[SecretEvent]:
        rows = await self._all(
            f"SELECT {rowmap.SECRET_EVENT_COLS} FROM secret_events WHERE tenant_id = $1 AND revision > $2 "
            "ORDER BY revision LIMIT $3",
            tenant_id,
            revision,
            limit,
        )
        return [rowmap.secret_event_of(r) for r in rows]

    async def audit_records(self, chain: str, *, after_seq: int = 0, limit: int = 1000) -> list[AuditRecord]:
        rows = await self._all(
            f"SELECT {rowmap.AUDIT_COLS} FROM audit_log WHERE chain = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            chain,
            after_seq,
            limit,
        )
        return [rowmap.audit_of(r) for r in rows]
