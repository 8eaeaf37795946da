"""What the PostgreSQL backend promises beyond the shared contract: writers on several
connections and processes (replicas) serialized in the database, idempotent migrations,
durable commits, and errors that name the operation but never a value or a password."""

from __future__ import annotations

import asyncio
import inspect
import json
import subprocess
import sys

import asyncpg
import pytest

from server.audit_chain import ChainVerifier
from server.storage import PostgresStorage, schema_version
from server.storage.base import Storage, WriteTx
from server.storage.migrations import POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS
from server.storage.postgres import PostgresWriteTx
from shared.errors import AlreadyExists, StorageError
from shared.models import ConfigRef, Environment, Tenant
from tests.server.storage.test_contract import add_tenant, draft, put, version
from tests.support import REPO, SERVER_CMD, free_port

VERSIONS = [v for v, _ in POSTGRES_MIGRATIONS]
REF = ConfigRef("ns", "counter", Environment.GLOBAL)

# one replica's writer: read-modify-write of a counter plus an audit record per transaction
BUMPER = """
import asyncio, json, sys
from server.storage import PostgresStorage
from tests.server.storage.test_contract import draft, version
from shared.models import ConfigRef, Environment

REF = ConfigRef("ns", "counter", Environment.GLOBAL)

async def main(url, tenant_id, n):
    revisions = []
    async with PostgresStorage(url) as store:
        async def bump():
            async with store.write(tenant_id) as tx:
                latest = await tx.latest_version(REF)
                count = int(latest.value["n"]) if latest else 0
                await asyncio.sleep(0)
                n = (latest.version if latest else 0) + 1
                v = version(REF, n, await tx.next_revision(), {"n": count + 1})
                await tx.insert_version(v)
                await tx.append_audit(draft("config:put"))
                revisions.append(v.revision)
        await asyncio.gather(*(bump() for _ in range(n)))
    print(json.dumps(revisions))

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


async def bump(store: PostgresStorage, tenant_id: str) -> int:
    """One read-modify-write transaction on the counter; returns its revision."""
    async with store.write(tenant_id) as tx:
        latest = await tx.latest_version(REF)
        count = int(latest.value["n"]) if latest else 0
        await asyncio.sleep(0)
        v = version(REF, (latest.version if latest else 0) + 1, await tx.next_revision(), {"n": count + 1})
        await tx.insert_version(v)
        await tx.append_audit(draft("config:put"))
        return v.revision


async def assert_chain_intact(store: PostgresStorage, chain: str, count: int) -> None:
    records = await store.audit_records(chain, limit=10_000)
    assert [r.seq for r in records] == list(range(1, count + 1))
    verifier = ChainVerifier()
    assert verifier.feed(records) and verifier.report().ok
    assert await store.audit_head(chain) == (count, records[-1].hash)


class TestSerializedInTheDatabase:
    async def test_writers_on_separate_pools_get_gapless_revisions(self, postgres_url: str) -> None:
        """4 stores (as 4 replicas would: own pools, nothing shared in memory), 120 concurrent
        read-modify-writes on one tenant: revisions 1..120 once each, no lost update, audit chain intact."""
        stores = [PostgresStorage(postgres_url, write_pool_size=4) for _ in range(4)]
        for s in stores:
            await s.open()
        try:
            a = await add_tenant(stores[0], "a")
            revisions = await asyncio.gather(*(bump(stores[i % 4], a.id) for i in range(120)))
            assert sorted(revisions) == list(range(1, 121))
            latest = await stores[3].get_version(a.id, REF)
            assert latest is not None and latest.value == {"n": 120} and latest.version == 120
            history = await stores[1].history(a.id, REF, limit=1000)
            assert [v.revision for v in history] == list(range(120, 0, -1))  # newer version, newer revision
            await assert_chain_intact(stores[2], a.id, 120)
        finally:
            for s in stores:
                await s.close()

    async def test_writer_processes_get_gapless_revisions(self, postgres_url: str) -> None:
        """3 processes write 30 times each to one tenant at once: together revisions 1..90, each once."""
        async with PostgresStorage(postgres_url) as store:
            a = await add_tenant(store, "a")
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", BUMPER, postgres_url, a.id, "30"],
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for _ in range(3)
        ]
        revisions: list[int] = []
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err.decode()
            revisions += json.loads(out)
        assert sorted(revisions) == list(range(1, 91))
        async with PostgresStorage(postgres_url) as store:
            latest = await store.get_version(a.id, REF)
            assert latest is not None and latest.value == {"n": 90}
            assert await store.current_revision(a.id) == 90
            await assert_chain_intact(store, a.id, 90)

    async def test_audit_batches_from_several_stores_form_one_chain(self, postgres_url: str) -> None:
        """Audit group commits of 3 stores on one chain, mixed with writes: one verifiable chain."""
        stores = [PostgresStorage(postgres_url) for _ in range(3)]
        for s in stores:
            await s.open()
        try:
            a = await add_tenant(stores[0], "a")
            batches = asyncio.gather(
                *(stores[i % 3].append_audit_batch(a.id, [draft(f"b{i}"), draft(f"c{i}")]) for i in range(30))
            )
            writes = asyncio.gather(*(bump(stores[i % 3], a.id) for i in range(10)))
            batched, _ = await asyncio.gather(batches, writes)
            assert len({r.seq for records in batched for r in records}) == 60
            await assert_chain_intact(stores[1], a.id, 70)
        finally:
            for s in stores:
                await s.close()

    async def test_tenant_name_race_across_stores(self, postgres_url: str) -> None:
        """Two stores create a tenant of one name at once (on two chains): one wins, one: AlreadyExists."""
        one, two = PostgresStorage(postgres_url), PostgresStorage(postgres_url)
        await one.open()
        await two.open()
        try:

            async def create(store: PostgresStorage, tenant_id: str) -> str:
                try:
                    async with store.write(tenant_id) as tx:
                        await tx.insert_tenant(Tenant(tenant_id, "same", "active", "2026"))
                except AlreadyExists:
                    return "exists"
                return "created"

            outcomes = await asyncio.gather(create(one, "id-1"), create(two, "id-2"))
            assert sorted(outcomes) == ["created", "exists"]
            assert [t.name for t in await one.list_tenants()] == ["same"]
        finally:
            await one.close()
            await two.close()


class TestMigrations:
    async def test_migrate_applies_each_version_once(self, postgres_url: str) -> None:
        """open(migrate=False) applies nothing; migrate() applies every version, then nothing."""
        store = PostgresStorage(postgres_url)
        await store.open(migrate=False)
        try:
            with pytest.raises(StorageError):
                await store.list_tenants()
            assert await store.migrate() == VERSIONS
            assert await store.migrate() == []
            assert await store.list_tenants() == []
        finally:
            await store.close()

    async def test_replicas_migrating_together_apply_each_version_once(self, postgres_url: str) -> None:
        """4 stores migrate a new database at once: each version is applied by exactly one, without error."""
        stores = [PostgresStorage(postgres_url) for _ in range(4)]
        for s in stores:
            await s.open(migrate=False)
        try:
            applied = await asyncio.gather(*(s.migrate() for s in stores))
            assert sorted(v for a in applied for v in a) == VERSIONS
            conn = await asyncpg.connect(postgres_url)
            try:
                rows = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
            finally:
                await conn.close()
            assert [r[0] for r in rows] == VERSIONS
        finally:
            for s in stores:
                await s.close()

    def test_cli_migrate_is_idempotent(self, postgres_url: str) -> None:
        """`llm-config-server migrate --storage postgresql://…` applies all, then says it is current."""

        def migrate() -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*SERVER_CMD, "migrate", "--storage", postgres_url],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=60,
            )

        first = migrate()
        assert first.returncode == 0, first.stderr
        assert first.stdout.strip() == f"applied migrations: {', '.join(map(str, VERSIONS))}"
        second = migrate()
        assert second.returncode == 0, second.stderr
        assert second.stdout.strip() == f"schema is up to date (version {VERSIONS[-1]})"
        assert schema_version(postgres_url) == VERSIONS[-1]

    def test_versions_mirror_sqlite(self) -> None:
        """A schema version number means the same change on both backends: both lists have the same ones."""
        assert [v for v, _ in SQLITE_MIGRATIONS] == VERSIONS


class TestDurabilityAndErrors:
    async def test_commits_are_synchronous_and_readers_read_only(self, postgres_url: str) -> None:
        """Write sessions run with synchronous_commit=on; read sessions can't write."""
        async with PostgresStorage(postgres_url) as store:
            assert store._writers is not None and store._readers is not None
            assert await store._writers.fetchval("SHOW synchronous_commit") == "on"
            assert await store._readers.fetchval("SHOW default_transaction_read_only") == "on"

    async def test_unreachable_server_is_one_clear_error_without_password(self) -> None:
        """Nothing listening: StorageError naming host and reason, retriable, and never the password."""
        store = PostgresStorage(f"postgresql://app:hunter2@127.0.0.1:{free_port()}/llmcm")
        with pytest.raises(StorageError) as caught:
            await store.open()
        assert "connection refused" in caught.value.detail
        assert "127.0.0.1" in caught.value.detail
        assert "hunter2" not in str(caught.value) and "app:" not in caught.value.detail
        assert caught.value.retriable
        await store.close()  # safe after a failed open, and twice
        await store.close()

    async def test_missing_database_is_named(self, postgres_url: str) -> None:
        """A database that does not exist is reported as such."""
        with pytest.raises(StorageError, match="does not exist"):
            async with PostgresStorage(postgres_url + "_missing"):
                pass

    async def test_failed_statement_aborts_the_whole_write(self, postgres_url: str) -> None:
        """A caller that swallows a failed statement can't commit the rest: the write raises, nothing stays"""
        async with PostgresStorage(postgres_url) as store:
            a = await add_tenant(store, "a")
            ref = ConfigRef("ns", "k", Environment.GLOBAL)
            await put(store, a.id, ref, {"x": 1})
            with pytest.raises(StorageError, match="aborted"):
                async with store.write(a.id) as tx:
                    await tx.insert_version(version(ref, 2, await tx.next_revision(), {"x": 2}))
                    with pytest.raises(StorageError):
                        await tx.insert_version(version(ref, 2, 99, {"x": 3}))
            assert await store.current_revision(a.id) == 1
            found = await store.get_version(a.id, ref)
            assert found is not None and found.value == {"x": 1}

    async def test_cancelled_write_releases_the_chain(self, postgres_url: str) -> None:
        """A write cancelled mid-statement (client gone) rolls back and frees the tenant for the next."""
        async with PostgresStorage(postgres_url, write_pool_size=1) as store:
            a = await add_tenant(store, "a")
            started = asyncio.Event()

            async def stuck() -> None:
                async with store.write(a.id) as tx:
                    await tx.next_revision()
                    started.set()
                    await tx._one("SELECT pg_sleep(30)")

            task = asyncio.create_task(stuck())
            await asyncio.wait_for(started.wait(), 10)
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # the pool's only connection is usable again, and the chain lock is gone
            assert await asyncio.wait_for(bump(store, a.id), 20) == 1

    async def test_errors_never_carry_values(self, postgres_url: str) -> None:
        """PostgreSQL quotes the row in its messages; ours name the operation and error class only."""
        async with PostgresStorage(postgres_url) as store:
            a = await add_tenant(store, "a")
            ref = ConfigRef("ns", "k", Environment.GLOBAL)
            await put(store, a.id, ref, {"x": 1})
            with pytest.raises(StorageError) as caught:
                async with store.write(a.id) as tx:
                    await tx.insert_version(version(ref, 1, await tx.next_revision(), {"x": "VALUE-MARKER"}))
            assert "UniqueViolationError" in caught.value.detail
            assert "VALUE-MARKER" not in str(caught.value) and "ns" not in caught.value.detail


def _params(method: object) -> list[str]:
    return list(inspect.signature(method).parameters)  # type: ignore[arg-type]


class TestInterface:
    @pytest.mark.parametrize(
        ("protocol", "backend"), [(Storage, PostgresStorage), (WriteTx, PostgresWriteTx)]
    )
    def test_every_protocol_method_is_implemented(self, protocol: type, backend: type) -> None:
        """Each method of the Storage / WriteTx protocol exists on the backend with the same parameters."""
        wanted = {n for n, m in vars(protocol).items() if inspect.isfunction(m) and not n.startswith("_")}
        missing = sorted(n for n in wanted if not hasattr(backend, n))
        assert missing == []
        for name in wanted:
            assert _params(getattr(backend, name)) == _params(getattr(protocol, name)), name
