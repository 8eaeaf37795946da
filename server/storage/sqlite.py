"""SQLite backend: the embedded default.

WAL mode with ``synchronous=FULL`` so an acknowledged write is on disk before
the response leaves. One writer connection, guarded by an asyncio lock and
``BEGIN IMMEDIATE``, serializes writes (no lost update, no duplicate
revision); a separate reader connection lets reads proceed during a write.
sqlite3 errors are translated to ``StorageError`` here and nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import os
import sqlite3
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import aiosqlite

from server.audit_chain import GENESIS_HASH, record_hash
from server.storage import rows as rowmap
from server.storage.base import AgentStatus, AuditDraft, SecretEvent
from server.storage.migrations import SQLITE_MIGRATIONS
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


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _translate(exc: Exception, what: str) -> StorageError:
    retriable = isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)
    return StorageError(f"SQLite failed while {what}: {type(exc).__name__}", retriable=retriable)


_AUDIT_VALUES = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_AUDIT_INSERT = f"INSERT INTO audit_log ({rowmap.AUDIT_COLS}) VALUES {_AUDIT_VALUES}"

# The audit group commit writes a batch with as few statements as it can: sqlite3 lets the GIL go
# around every statement, and each time the writer thread wants it back it may have to wait for
# the busy event loop to let it go. So its connection checks and moves the chain head itself, row
# by row, in two TEMP triggers (they exist on that connection only, never in the database file),
# and a batch of up to _AUDIT_ROWS_MAX rows is one multi-row INSERT that commits on its own (one
# transaction, one fsync). The writer remembers the head it left; when another writer has moved
# it since, the check refuses the whole statement and the batch is chained again on the new head.
_HEAD_MOVED = "audit chain head moved"
_AUDIT_TRIGGERS = (
    "CREATE TEMP TRIGGER IF NOT EXISTS audit_batch_check BEFORE INSERT ON audit_log "
    "WHEN NOT EXISTS (SELECT 1 FROM chains WHERE id = NEW.chain AND audit_seq = NEW.seq - 1 "
    f"AND audit_hash = NEW.prev_hash) BEGIN SELECT RAISE(ABORT, '{_HEAD_MOVED}'); END",
    "CREATE TEMP TRIGGER IF NOT EXISTS audit_batch_head AFTER INSERT ON audit_log "
    "BEGIN UPDATE chains SET audit_seq = NEW.seq, audit_hash = NEW.hash WHERE id = NEW.chain; END",
)
_AUDIT_ATTEMPTS = 3  # chain a batch on a head read again at most this often
_CHAIN_HEAD = "SELECT audit_seq, audit_hash FROM chains WHERE id = ?"
# rows per INSERT: 12 parameters a row, within the 32766 parameters a statement may have since
# SQLite 3.32 (999 before)
_AUDIT_ROWS_MAX = 1024 if sqlite3.sqlite_version_info >= (3, 32, 0) else 64


@functools.lru_cache(maxsize=64)
def _audit_insert(rows: int) -> str:
    """The INSERT of ``rows`` audit rows (the same str object each time: sqlite3 caches its statement)."""
    return f"INSERT INTO audit_log ({rowmap.AUDIT_COLS}) VALUES " + ", ".join([_AUDIT_VALUES] * rows)


def _json_encoder(*, sort_keys: bool) -> Callable[[Any], str]:
    """Compact JSON (no spaces, UTF-8 kept), with the C encoder built once: ``JSONEncoder.encode``
    sets one up on every call, which costs more than encoding a small metadata dict."""
    py = json.JSONEncoder(sort_keys=sort_keys, separators=(",", ":"), ensure_ascii=False)
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return py.encode
    # no circular-reference markers: metadata is built by the services, never self-referencing
    chunks = make(None, py.default, json.encoder.encode_basestring, None, ":", ",", sort_keys, False, True)

    def encode(value: Any) -> str:
        return "".join(chunks(value, 0))

    return encode


_CANONICAL = _json_encoder(sort_keys=True)
_COMPACT = _json_encoder(sort_keys=False)
# The audit group commit hashes every record it writes, so the hashed text is built from a
# template: the very bytes ``record_hash`` hashes (canonical JSON: sorted keys, no spaces, UTF-8)
# without setting up a JSON encoder per record. A field that is not a string takes the generic way.
_JSON_STR = json.encoder.encode_basestring
_HASHED_RECORD = (
    '{"action":%s,"actor":%s,"chain":%s,"metadata":%s,"prev_hash":%s,"request_id":%s,'
    '"resource":%s,"result":%s,"seq":%d,"tenant_id":%s,"time":%s}'
)


def _audit_hash(prev_hash: str, seq: int, chain: str, d: AuditDraft) -> str:
    """``record_hash(prev_hash, seq, chain, fields of d)``."""
    s = _JSON_STR
    try:
        text = _HASHED_RECORD % (
            s(d.action),
            s(d.actor),
            s(chain),
            _CANONICAL(d.metadata),
            s(prev_hash),
            s(d.request_id),
            s(d.resource),
            s(d.result),
            seq,
            s(d.tenant_id),
            s(d.time),
        )
    except TypeError:
        fields = {
            "time": d.time,
            "tenant_id": d.tenant_id,
            "actor": d.actor,
            "action": d.action,
            "resource": d.resource,
            "result": d.result,
            "request_id": d.request_id,
            "metadata": d.metadata,
        }
        return record_hash(prev_hash, seq, chain, fields)
    return hashlib.sha256(text.encode()).hexdigest()


def _chain_records(chain: str, head: Any, drafts: list[AuditDraft]) -> list[AuditRecord]:
    """Sequence and hash ``drafts`` after the chain head row (audit_seq, audit_hash) or genesis."""
    seq, prev_hash = (int(head[0]), str(head[1])) if head else (0, GENESIS_HASH)
    records = []
    for d in drafts:
        seq += 1
        digest = _audit_hash(prev_hash, seq, chain, d)
        records.append(
            AuditRecord(
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
                hash=digest,
            )
        )
        prev_hash = digest
    return records


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
        _COMPACT(r.metadata),
        r.prev_hash,
        r.hash,
    )


def _insert_audit_rows(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    """Insert ``rows`` into audit_log in order, all or none, on the group commit's connection (its
    triggers check and move the chain head): one statement that commits on its own, or, beyond
    ``_AUDIT_ROWS_MAX`` rows, several in one transaction."""
    if len(rows) <= _AUDIT_ROWS_MAX:
        conn.execute(_audit_insert(len(rows)), [value for row in rows for value in row])
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        for start in range(0, len(rows), _AUDIT_ROWS_MAX):
            part = rows[start : start + _AUDIT_ROWS_MAX]
            conn.execute(_audit_insert(len(part)), [value for row in part for value in row])
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


_AuditJob = tuple[str, list[AuditDraft], "asyncio.Future[list[AuditRecord]]"]
_AUDIT_LOCK_SECONDS = 0.02  # the audit writer keeps the write lock at most this long at a time


def _settle_audit_jobs(jobs: list[_AuditJob], records: list[AuditRecord], exc: Exception | None) -> None:
    """On the event loop: give each call its records, or its failure."""
    start = 0
    for _, drafts, done in jobs:
        if done.done():  # the caller went away (cancelled); its records stand
            start += len(drafts)
            continue
        if exc is None:
            done.set_result(records[start : start + len(drafts)])
        elif isinstance(exc, StorageError):
            done.set_exception(StorageError(exc.detail, retriable=exc.retriable))
        else:
            failed = _translate(exc, "writing the audit log")
            failed.__cause__ = exc
            done.set_exception(failed)
        start += len(drafts)


class SQLiteWriteTx:
    """A write transaction on the single writer connection."""

    def __init__(self, conn: aiosqlite.Connection, chain: str) -> None:
        self._conn = conn
        self.chain = chain

    async def _one(self, sql: str, params: tuple[Any, ...]) -> Any:
        try:
            async with self._conn.execute(sql, params) as cur:
                return await cur.fetchone()
        except sqlite3.Error as exc:
            raise _translate(exc, "writing") from exc

    async def _exec(self, sql: str, params: tuple[Any, ...]) -> int:
        """Run one statement; sqlite3 errors become StorageError here, inside the transaction."""
        try:
            cur = await self._conn.execute(sql, params)
        except sqlite3.Error as exc:
            raise _translate(exc, "writing") from exc
        return int(cur.rowcount)

    async def current_revision(self) -> int:
        row = await self._one("SELECT revision FROM chains WHERE id = ?", (self.chain,))
        return int(row[0]) if row else 0

    async def next_revision(self) -> int:
        row = await self._one(
            "UPDATE chains SET revision = revision + 1 WHERE id = ? RETURNING revision", (self.chain,)
        )
        return int(row[0])

    async def compact(self, revision: int) -> int:
        if revision > await self.current_revision():
            raise StorageError("cannot compact past the current revision")
        removed = await self._exec(
            "DELETE FROM config_versions AS v WHERE tenant_id = ? AND revision <= ? AND EXISTS ("
            "SELECT 1 FROM config_versions w WHERE w.tenant_id = v.tenant_id AND w.namespace = "
            "v.namespace AND w.key = v.key AND w.environment = v.environment AND w.revision > v.revision "
            "AND w.revision <= ?)",
            (self.chain, revision, revision),
        )
        await self._exec(
            "UPDATE chains SET compacted_revision = MAX(compacted_revision, ?) WHERE id = ?",
            (revision, self.chain),
        )
        return removed

    async def latest_version(self, ref: ConfigRef) -> ConfigVersion | None:
        row = await self._one(
            f"SELECT {rowmap.VERSION_COLS} FROM config_versions WHERE tenant_id = ? AND namespace = ? "
            "AND key = ? AND environment = ? ORDER BY version DESC LIMIT 1",
            (self.chain, ref.namespace, ref.key, ref.environment.value),
        )
        return rowmap.version_of(row) if row else None

    async def insert_version(self, v: ConfigVersion) -> None:
        await self._exec(
            f"INSERT INTO config_versions (tenant_id, {rowmap.VERSION_COLS}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                self.chain,
                v.namespace,
                v.key,
                v.environment.value,
                v.version,
                v.revision,
                _dumps(v.value),
                v.sha256,
                v.change_type.value,
                v.author,
                v.message,
                v.created_at,
                _dumps(v.patch),
                int(v.tombstone),
                _dumps(v.metadata),
            ),
        )

    async def append_audit(self, draft: AuditDraft) -> AuditRecord:
        row = await self._one("SELECT audit_seq, audit_hash FROM chains WHERE id = ?", (self.chain,))
        (record,) = _chain_records(self.chain, row, [draft])
        await self._exec(_AUDIT_INSERT, _audit_row(record))
        await self._exec(
            "UPDATE chains SET audit_seq = ?, audit_hash = ? WHERE id = ?",
            (record.seq, record.hash, self.chain),
        )
        return record

    async def insert_tenant(self, tenant: Tenant) -> None:
        if await self._one("SELECT 1 FROM tenants WHERE name = ?", (tenant.name,)):
            raise AlreadyExists(f"a tenant named {tenant.name!r} already exists")
        await self._exec(
            f"INSERT INTO tenants ({rowmap.TENANT_COLS}) VALUES (?, ?, ?, ?, ?)",
            (tenant.id, tenant.name, tenant.status, tenant.created_at, _dumps(tenant.settings)),
        )
        await self._exec(
            "INSERT INTO chains (id, revision, audit_seq, audit_hash) VALUES (?, 0, 0, ?) "
            "ON CONFLICT(id) DO NOTHING",
            (tenant.id, GENESIS_HASH),
        )

    async def update_tenant_settings(self, tenant_id: str, settings: dict[str, Any]) -> None:
        await self._exec("UPDATE tenants SET settings = ? WHERE id = ?", (_dumps(settings), tenant_id))

    async def insert_token(self, token: TokenRecord) -> None:
        await self._exec(
            f"INSERT INTO tokens ({rowmap.TOKEN_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                token.id,
                token.tenant_id,
                token.name,
                token.token_hash,
                _dumps(list(token.roles)),
                _dumps(list(token.namespaces)),
                token.created_at,
                token.expires_at,
                int(token.revoked),
                token.created_by,
            ),
        )

    async def revoke_token(self, tenant_id: str, token_id: str) -> bool:
        changed = await self._exec(
            "UPDATE tokens SET revoked = 1 WHERE tenant_id = ? AND id = ? AND revoked = 0",
            (tenant_id, token_id),
        )
        return changed > 0

    async def put_schema(self, tenant_id: str, record: SchemaRecord) -> None:
        await self._exec(
            "INSERT INTO schemas (tenant_id, name, schema, created_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(tenant_id, name) DO UPDATE SET schema = excluded.schema, "
            "created_at = excluded.created_at",
            (tenant_id, record.name, _dumps(record.schema), record.created_at),
        )

    async def insert_binding(self, tenant_id: str, binding: SchemaBinding) -> None:
        await self._exec(
            "INSERT INTO schema_bindings (id, tenant_id, schema_name, namespace_glob, key_glob, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (
                binding.id,
                tenant_id,
                binding.schema_name,
                binding.namespace_glob,
                binding.key_glob,
                binding.created_at,
            ),
        )

    async def delete_binding(self, tenant_id: str, binding_id: str) -> bool:
        changed = await self._exec(
            "DELETE FROM schema_bindings WHERE tenant_id = ? AND id = ?", (tenant_id, binding_id)
        )
        return changed > 0

    # -- keys and secrets -------------------------------------------------------------------

    async def keks(self, tenant_id: str) -> list[KekRecord]:
        try:
            async with self._conn.execute(
                "SELECT tenant_id, version, sealed, created_at, encryptions FROM keks "
                "WHERE tenant_id = ? ORDER BY version",
                (tenant_id,),
            ) as cur:
                return [KekRecord(*r) for r in await cur.fetchall()]
        except sqlite3.Error as exc:
            raise _translate(exc, "reading keys") from exc

    async def insert_kek(self, kek: KekRecord) -> None:
        await self._exec(
            "INSERT INTO keks (tenant_id, version, sealed, created_at, encryptions) VALUES (?, ?, ?, ?, ?)",
            (kek.tenant_id, kek.version, kek.sealed, kek.created_at, kek.encryptions),
        )

    async def count_encryption(self, tenant_id: str, version: int) -> int:
        row = await self._one(
            "UPDATE keks SET encryptions = encryptions + 1 WHERE tenant_id = ? AND version = ? "
            "RETURNING encryptions",
            (tenant_id, version),
        )
        if row is None:
            raise StorageError(f"no key version {version} for this tenant")
        return int(row[0])

    async def latest_secret(self, tenant_id: str, namespace: str, key: str) -> SecretVersion | None:
        row = await self._one(
            f"SELECT {rowmap.SECRET_COLS} FROM secret_versions WHERE tenant_id = ? AND "
            "namespace = ? AND key = ? "
            "ORDER BY version DESC LIMIT 1",
            (tenant_id, namespace, key),
        )
        return rowmap.secret_of(row) if row else None

    async def insert_secret(self, tenant_id: str, s: SecretVersion) -> None:
        await self._exec(
            f"INSERT INTO secret_versions (tenant_id, {rowmap.SECRET_COLS}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                tenant_id,
                s.namespace,
                s.key,
                s.version,
                s.revision,
                s.status.value,
                s.format,
                s.kek_id,
                s.kek_version,
                s.wrapped_dek,
                s.ciphertext,
                s.created_at,
                s.author,
                s.message,
                s.valid_until,
                s.expires_at,
                _dumps(s.metadata),
            ),
        )

    async def set_secret_wrapping(
        self, tenant_id: str, secret: SecretVersion, kek_version: int, wrapped_dek: str
    ) -> bool:
        changed = await self._exec(
            "UPDATE secret_versions SET kek_version = ?, wrapped_dek = ? WHERE tenant_id = ? "
            "AND namespace = ? AND key = ? AND version = ? AND kek_version = ?",
            (
                kek_version,
                wrapped_dek,
                tenant_id,
                secret.namespace,
                secret.key,
                secret.version,
                secret.kek_version,
            ),
        )
        return changed > 0

    async def set_secret_status(
        self, tenant_id: str, namespace: str, key: str, version: int, status: str, valid_until: str | None
    ) -> None:
        await self._exec(
            "UPDATE secret_versions SET status = ?, valid_until = ? WHERE tenant_id = ? AND namespace = ? "
            "AND key = ? AND version = ?",
            (status, valid_until, tenant_id, namespace, key, version),
        )

    async def insert_secret_event(self, tenant_id: str, event: SecretEvent) -> None:
        await self._exec(
            f"INSERT INTO secret_events (tenant_id, {rowmap.SECRET_EVENT_COLS}) VALUES (?, ?, "
            "?, ?, ?, ?, ?, ?)",
            (
                tenant_id,
                event.revision,
                event.namespace,
                event.key,
                event.kind,
                _dumps(list(event.versions)),
                event.created_at,
                _dumps(event.data),
            ),
        )

    async def has_secret_event(
        self, tenant_id: str, namespace: str, key: str, kind: str, versions: tuple[int, ...]
    ) -> bool:
        row = await self._one(
            "SELECT 1 FROM secret_events WHERE tenant_id = ? AND namespace = ? AND key = ? AND kind = ? "
            "AND versions = ? LIMIT 1",
            (tenant_id, namespace, key, kind, _dumps(list(versions))),
        )
        return row is not None

    # -- agents ------------------------------------------------------------------------------

    async def put_agent_status(self, status: AgentStatus) -> None:
        await self._exec(
            f"INSERT INTO agent_status ({rowmap.AGENT_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(tenant_id, agent_id) DO UPDATE SET namespaces = excluded.namespaces, "
            "environment = excluded.environment, applied_revision = excluded.applied_revision, "
            "state = excluded.state, last_error = excluded.last_error, reported_at = excluded.reported_at",
            (
                status.tenant_id,
                status.agent_id,
                _dumps(list(status.namespaces)),
                status.environment,
                status.applied_revision,
                status.state,
                status.last_error,
                status.reported_at,
            ),
        )


class SQLiteStorage:
    """``Storage`` on one SQLite file. Open with ``async with SQLiteStorage(path)``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.url_for_logs = f"sqlite:///{path.name}"
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()
        self._batch_conn: sqlite3.Connection | None = None  # audit batches, used under the lock
        self._audit_heads: dict[str, tuple[int, str]] = {}  # chain -> (seq, hash) the batches left
        # audit group commit: calls waiting (appended on the event loop, taken by the writer thread)
        self._audit_jobs: deque[_AuditJob] = deque()
        self._audit_drain: asyncio.Task[None] | None = None

    async def __aenter__(self) -> SQLiteStorage:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _connect(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA synchronous=FULL")
        await conn.execute("PRAGMA foreign_keys=ON")
        await conn.execute("PRAGMA busy_timeout=10000")
        return conn

    async def open(self, *, migrate: bool = True) -> None:
        """Connect, creating the file (mode 0600) if missing, and apply pending migrations.

        ``migrate=False`` leaves the schema alone, for a caller that runs ``migrate()``
        itself and wants to know what it applied.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not self.path.exists():
            fd = os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600)
            os.close(fd)
        try:
            self._writer = await self._connect()
            if migrate:
                await self.migrate()
            self._reader = await self._connect()
        except sqlite3.Error as exc:
            await self.close()
            raise _translate(exc, "opening the database") from exc
        except BaseException:
            await self.close()
            raise

    async def migrate(self) -> list[int]:
        """Apply missing schema migrations; return the versions applied."""
        conn = self._require_writer()
        try:
            return await self._migrate(conn)
        except sqlite3.Error as exc:
            raise _translate(exc, "migrating the schema") from exc

    async def _migrate(self, conn: aiosqlite.Connection) -> list[int]:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
            "applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)"
        )
        async with conn.execute("SELECT version FROM schema_migrations") as cur:
            done = {int(r[0]) for r in await cur.fetchall()}
        applied = []
        for version, statements in SQLITE_MIGRATIONS:
            if version in done:
                continue
            await conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in statements:
                    await conn.execute(statement)
                await conn.execute("INSERT INTO schema_migrations (version) VALUES (?)", (version,))
                await conn.execute("COMMIT")
            except BaseException:
                await conn.execute("ROLLBACK")
                raise
            applied.append(version)
        return applied

    async def close(self) -> None:
        if self._audit_drain is not None:  # let the audit writer finish with its connection
            await asyncio.wait({self._audit_drain})
        batch, self._batch_conn = self._batch_conn, None
        self._audit_heads.clear()
        if batch is not None:
            await asyncio.to_thread(batch.close)
        for attr in ("_reader", "_writer"):
            conn = getattr(self, attr)
            setattr(self, attr, None)
            if conn is not None:
                await conn.close()

    def _require_writer(self) -> aiosqlite.Connection:
        if self._writer is None:
            raise StorageError("storage is not open")
        return self._writer

    def _require_reader(self) -> aiosqlite.Connection:
        if self._reader is None:
            raise StorageError("storage is not open")
        return self._reader

    async def append_audit_batch(self, chain: str, drafts: list[AuditDraft]) -> list[AuditRecord]:
        """Append records durably, in one transaction (the audit group commit); fail closed.

        Calls queue up. One writer task holds the write lock (the one ``write()`` takes, so a
        chain stays serialized with the records written inside other transactions) and runs a
        loop in a worker thread: it takes every call queued so far, writes each chain's records
        in one transaction (one fsync for all of them), hands the results back to the event
        loop, and goes straight on with the calls queued meanwhile, so the next commit does not
        wait for the event loop to come round. After ``_AUDIT_LOCK_SECONDS`` it lets the lock go
        so that other writes get their turn. A call returns once its records are committed; if
        their transaction fails, every call in it fails.
        """
        if not drafts:
            return []
        self._require_writer()
        loop = asyncio.get_running_loop()
        done: asyncio.Future[list[AuditRecord]] = loop.create_future()
        self._audit_jobs.append((chain, drafts, done))
        if self._audit_drain is None:
            # started on the next turn of the loop: calls made ready together are written together
            self._audit_drain = loop.create_task(self._drain_audit_jobs(loop), name="audit-writer")
        return await done

    async def _drain_audit_jobs(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            while self._audit_jobs:  # calls are queued on this thread only: no call is missed
                async with self._write_lock:
                    work = loop.run_in_executor(None, self._write_audit_jobs, loop)
                    try:
                        await asyncio.shield(work)
                    except asyncio.CancelledError:
                        # keep the lock until the thread is done with the connection, then go on
                        with contextlib.suppress(BaseException):
                            await work
                        raise
        finally:
            self._audit_drain = None
            # cancelled (shutdown): nobody will write what is still queued; fail it closed
            while self._audit_jobs:
                _, _, done = self._audit_jobs.popleft()
                if not done.done():
                    done.set_exception(StorageError("the audit write was interrupted; retry"))

    def _write_audit_jobs(self, loop: asyncio.AbstractEventLoop) -> None:
        """Worker thread, under the write lock: commit queued calls until none are left (or time is up)."""
        until = time.monotonic() + _AUDIT_LOCK_SECONDS
        while self._audit_jobs and time.monotonic() < until:
            by_chain: dict[str, list[_AuditJob]] = {}
            while self._audit_jobs:  # popleft is atomic; the event loop only appends
                job = self._audit_jobs.popleft()
                by_chain.setdefault(job[0], []).append(job)
            for chain, jobs in by_chain.items():
                try:
                    if self._writer is None:
                        raise StorageError("storage is not open")
                    drafts = [d for _, job_drafts, _ in jobs for d in job_drafts]
                    records = self._append_audit_batch_sync(chain, drafts)
                except Exception as exc:
                    loop.call_soon_threadsafe(_settle_audit_jobs, jobs, [], exc)
                else:
                    loop.call_soon_threadsafe(_settle_audit_jobs, jobs, records, None)

    def _append_audit_batch_sync(self, chain: str, drafts: list[AuditDraft]) -> list[AuditRecord]:
        if self._batch_conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            for pragma in (
                "journal_mode=WAL",
                "synchronous=FULL",
                "foreign_keys=ON",
                "busy_timeout=10000",
                "temp_store=MEMORY",  # the triggers below
            ):
                conn.execute(f"PRAGMA {pragma}")
            for trigger in _AUDIT_TRIGGERS:
                conn.execute(trigger)
            self._batch_conn = conn
        conn = self._batch_conn
        head = self._audit_heads.pop(chain, None)  # as this writer left it; popped until this commits
        for attempt in range(1, _AUDIT_ATTEMPTS + 1):
            if head is None:
                head = conn.execute(_CHAIN_HEAD, (chain,)).fetchone()
            if head is None:  # a chain's first record: its row starts at genesis
                conn.execute(
                    "INSERT INTO chains (id, revision, audit_seq, audit_hash) VALUES (?, 0, 0, ?) "
                    "ON CONFLICT(id) DO NOTHING",
                    (chain, GENESIS_HASH),
                )
                head = (0, GENESIS_HASH)
            records = _chain_records(chain, head, drafts)
            try:
                _insert_audit_rows(conn, [_audit_row(r) for r in records])
            except sqlite3.IntegrityError as exc:
                if _HEAD_MOVED not in str(exc) or attempt == _AUDIT_ATTEMPTS:
                    raise
                head = None  # another writer appended to the chain: chain the batch on its new head
                continue
            self._audit_heads[chain] = (records[-1].seq, records[-1].hash)
            return records
        raise StorageError("the audit chain head kept moving while the audit log was written; retry")

    @asynccontextmanager
    async def write(self, chain: str) -> AsyncIterator[SQLiteWriteTx]:
        conn = self._require_writer()
        async with self._write_lock:
            try:
                await conn.execute("BEGIN IMMEDIATE")
                await conn.execute(
                    "INSERT INTO chains (id, revision, audit_seq, audit_hash) VALUES (?, 0, 0, ?) "
                    "ON CONFLICT(id) DO NOTHING",
                    (chain, GENESIS_HASH),
                )
            except sqlite3.Error as exc:
                raise _translate(exc, "starting a write") from exc
            try:
                yield SQLiteWriteTx(conn, chain)
            except BaseException as exc:
                with suppress(sqlite3.Error):
                    await conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise _translate(exc, "writing") from exc
                raise
            try:
                await conn.execute("COMMIT")
            except sqlite3.Error as exc:
                with suppress(sqlite3.Error):
                    await conn.execute("ROLLBACK")
                raise _translate(exc, "committing") from exc

    # -- reads -----------------------------------------------------------------------------

    async def _all(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        try:
            async with self._require_reader().execute(sql, params) as cur:
                return list(await cur.fetchall())
        except sqlite3.Error as exc:
            raise _translate(exc, "reading") from exc

    async def _first(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        rows = await self._all(sql, params)
        return rows[0] if rows else None

    async def ping(self) -> None:
        await self._first("SELECT 1")

    async def current_revision(self, tenant_id: str) -> int:
        row = await self._first("SELECT revision FROM chains WHERE id = ?", (tenant_id,))
        return int(row[0]) if row else 0

    async def audit_head(self, chain: str) -> tuple[int, str]:
        row = await self._first("SELECT audit_seq, audit_hash FROM chains WHERE id = ?", (chain,))
        return (int(row[0]), str(row[1])) if row else (0, GENESIS_HASH)

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        row = await self._first(f"SELECT {rowmap.TENANT_COLS} FROM tenants WHERE id = ?", (tenant_id,))
        return rowmap.tenant_of(row) if row else None

    async def get_tenant_by_name(self, name: str) -> Tenant | None:
        row = await self._first(f"SELECT {rowmap.TENANT_COLS} FROM tenants WHERE name = ?", (name,))
        return rowmap.tenant_of(row) if row else None

    async def list_tenants(self) -> list[Tenant]:
        found = await self._all(f"SELECT {rowmap.TENANT_COLS} FROM tenants ORDER BY name")
        return [rowmap.tenant_of(r) for r in found]

    async def get_token_by_hash(self, token_hash: str) -> TokenRecord | None:
        row = await self._first(f"SELECT {rowmap.TOKEN_COLS} FROM tokens WHERE token_hash = ?", (token_hash,))
        return rowmap.token_of(row) if row else None

    async def get_token(self, tenant_id: str, token_id: str) -> TokenRecord | None:
        row = await self._first(
            f"SELECT {rowmap.TOKEN_COLS} FROM tokens WHERE tenant_id = ? AND id = ?", (tenant_id, token_id)
        )
        return rowmap.token_of(row) if row else None

    async def list_tokens(self, tenant_id: str) -> list[TokenRecord]:
        rows = await self._all(
            f"SELECT {rowmap.TOKEN_COLS} FROM tokens WHERE tenant_id = ? ORDER BY created_at, "
            "id", (tenant_id,)
        )
        return [rowmap.token_of(r) for r in rows]

    async def get_version(
        self, tenant_id: str, ref: ConfigRef, version: int | None = None
    ) -> ConfigVersion | None:
        sql = (
            f"SELECT {rowmap.VERSION_COLS} FROM config_versions WHERE tenant_id = ? AND namespace = ? "
            "AND key = ? AND environment = ?"
        )
        params: tuple[Any, ...] = (tenant_id, ref.namespace, ref.key, ref.environment.value)
        if version is None:
            sql += " ORDER BY version DESC LIMIT 1"
        else:
            sql += " AND version = ?"
            params += (version,)
        row = await self._first(sql, params)
        return rowmap.version_of(row) if row else None

    async def latest_in_envs(
        self, tenant_id: str, namespace: str, key: str, environments: tuple[Environment, ...]
    ) -> dict[Environment, ConfigVersion]:
        marks = ",".join("?" for _ in environments)
        rows = await self._all(
            f"SELECT {rowmap.VERSION_COLS} FROM config_versions v WHERE tenant_id = ? AND namespace = ? "
            f"AND key = ? AND environment IN ({marks}) AND version = (SELECT MAX(version) FROM "
            "config_versions w WHERE w.tenant_id = v.tenant_id AND w.namespace = v.namespace "
            "AND w.key = v.key AND w.environment = v.environment)",
            (tenant_id, namespace, key, *(e.value for e in environments)),
        )
        found = [rowmap.version_of(r) for r in rows]
        return {v.environment: v for v in found}

    async def history(
        self, tenant_id: str, ref: ConfigRef, *, limit: int = 100, before_version: int | None = None
    ) -> list[ConfigVersion]:
        rows = await self._all(
            f"SELECT {rowmap.VERSION_COLS} FROM config_versions WHERE tenant_id = ? AND namespace = ? "
            "AND key = ? AND environment = ? AND version < ? ORDER BY version DESC LIMIT ?",
            (
                tenant_id,
                ref.namespace,
                ref.key,
                ref.environment.value,
                before_version if before_version is not None else 2**62,
                limit,
            ),
        )
        return [rowmap.version_of(r) for r in rows]

    async def list_latest(
        self, tenant_id: str, environments: tuple[Environment, ...] | None = None
    ) -> list[ConfigVersion]:
        sql = (
            f"SELECT {rowmap.VERSION_COLS} FROM config_versions v WHERE tenant_id = ? AND version = "
            "(SELECT MAX(version) FROM config_versions w WHERE w.tenant_id = v.tenant_id AND "
            "w.namespace = v.namespace AND w.key = v.key AND w.environment = v.environment)"
        )
        params: tuple[Any, ...] = (tenant_id,)
        if environments is not None:
            sql += f" AND environment IN ({','.join('?' for _ in environments)})"
            params += tuple(e.value for e in environments)
        sql += " ORDER BY namespace, key, environment"
        return [rowmap.version_of(r) for r in await self._all(sql, params)]

    async def latest_as_of(self, tenant_id: str, revision: int) -> list[ConfigVersion]:
        rows = await self._all(
            f"SELECT {rowmap.VERSION_COLS} FROM config_versions v WHERE tenant_id = ? AND revision <= ? AND "
            "version = (SELECT MAX(version) FROM config_versions w WHERE w.tenant_id = v.tenant_id AND "
            "w.namespace = v.namespace AND w.key = v.key AND w.environment = v.environment AND "
            "w.revision <= ?) ORDER BY namespace, key, environment",
            (tenant_id, revision, revision),
        )
        return [rowmap.version_of(r) for r in rows]

    async def compacted_revision(self, tenant_id: str) -> int:
        row = await self._first("SELECT compacted_revision FROM chains WHERE id = ?", (tenant_id,))
        return int(row[0]) if row else 0

    async def changes_since(self, tenant_id: str, revision: int, *, limit: int = 1000) -> list[ConfigVersion]:
        rows = await self._all(
            f"SELECT {rowmap.VERSION_COLS} FROM config_versions WHERE tenant_id = ? AND revision > ? "
            "ORDER BY revision LIMIT ?",
            (tenant_id, revision, limit),
        )
        return [rowmap.version_of(r) for r in rows]

    async def list_schemas(self, tenant_id: str) -> list[SchemaRecord]:
        rows = await self._all(
            "SELECT name, schema, created_at FROM schemas WHERE tenant_id = ? ORDER BY name", (tenant_id,)
        )
        return [SchemaRecord(r[0], json.loads(r[1]), False, r[2]) for r in rows]

    async def get_schema(self, tenant_id: str, name: str) -> SchemaRecord | None:
        row = await self._first(
            "SELECT name, schema, created_at FROM schemas WHERE tenant_id = ? AND name = ?",
            (tenant_id, name),
        )
        return SchemaRecord(row[0], json.loads(row[1]), False, row[2]) if row else None

    async def list_bindings(self, tenant_id: str) -> list[SchemaBinding]:
        rows = await self._all(
            "SELECT id, schema_name, namespace_glob, key_glob, created_at FROM schema_bindings "
            "WHERE tenant_id = ? ORDER BY created_at, id",
            (tenant_id,),
        )
        return [SchemaBinding(*r) for r in rows]

    async def list_agent_status(self, tenant_id: str) -> list[AgentStatus]:
        rows = await self._all(
            f"SELECT {rowmap.AGENT_COLS} FROM agent_status WHERE tenant_id = ? ORDER BY "
            "agent_id", (tenant_id,)
        )
        return [rowmap.agent_of(r) for r in rows]

    async def keks(self, tenant_id: str) -> list[KekRecord]:
        rows = await self._all(
            "SELECT tenant_id, version, sealed, created_at, encryptions FROM keks WHERE tenant_id = ? "
            "ORDER BY version",
            (tenant_id,),
        )
        return [KekRecord(*r) for r in rows]

    async def secret_versions(self, tenant_id: str, namespace: str, key: str) -> list[SecretVersion]:
        rows = await self._all(
            f"SELECT {rowmap.SECRET_COLS} FROM secret_versions WHERE tenant_id = ? AND "
            "namespace = ? AND key = ? "
            "ORDER BY version DESC",
            (tenant_id, namespace, key),
        )
        return [rowmap.secret_of(r) for r in rows]

    async def list_secrets(self, tenant_id: str) -> list[SecretVersion]:
        rows = await self._all(
            f"SELECT {rowmap.SECRET_COLS} FROM secret_versions v WHERE tenant_id = ? AND version = (SELECT "
            "MAX(version) FROM secret_versions w WHERE w.tenant_id = v.tenant_id AND w.namespace = "
            "v.namespace AND w.key = v.key) ORDER BY namespace, key",
            (tenant_id,),
        )
        return [rowmap.secret_of(r) for r in rows]

    async def secrets_below_kek(
        self, tenant_id: str, kek_version: int, *, limit: int, after_revision: int = 0
    ) -> list[SecretVersion]:
        rows = await self._all(
            f"SELECT {rowmap.SECRET_COLS} FROM secret_versions WHERE tenant_id = ? AND kek_version < ? "
            "AND revision > ? ORDER BY revision LIMIT ?",
            (tenant_id, kek_version, after_revision, limit),
        )
        return [rowmap.secret_of(r) for r in rows]

    async def secret_kek_counts(self, tenant_id: str) -> dict[int, int]:
        rows = await self._all(
            "SELECT kek_version, COUNT(*) FROM secret_versions WHERE tenant_id = ? GROUP BY kek_version",
            (tenant_id,),
        )
        return {int(v): int(n) for v, n in rows}

    async def tenants_with_secrets(self) -> list[str]:
        return [str(r[0]) for r in await self._all("SELECT DISTINCT tenant_id FROM secret_versions")]

    async def secret_versions_since(
        self, tenant_id: str, revision: int, *, limit: int = 1000
    ) -> list[SecretVersion]:
        rows = await self._all(
            f"SELECT {rowmap.SECRET_COLS} FROM secret_versions WHERE tenant_id = ? AND revision > ? "
            "ORDER BY revision LIMIT ?",
            (tenant_id, revision, limit),
        )
        return [rowmap.secret_of(r) for r in rows]

    async def secret_events_since(
        self, tenant_id: str, revision: int, *, limit: int = 1000
    ) -> list[SecretEvent]:
        rows = await self._all(
            f"SELECT {rowmap.SECRET_EVENT_COLS} FROM secret_events WHERE tenant_id = ? AND revision > ? "
            "ORDER BY revision LIMIT ?",
            (tenant_id, revision, limit),
        )
        return [rowmap.secret_event_of(r) for r in rows]

    async def audit_records(self, chain: str, *, after_seq: int = 0, limit: int = 1000) -> list[AuditRecord]:
        rows = await self._all(
            f"SELECT {rowmap.AUDIT_COLS} FROM audit_log WHERE chain = ? AND seq > ? ORDER BY seq LIMIT ?",
            (chain, after_seq, limit),
        )
        return [rowmap.audit_of(r) for r in rows]
