"""The storage contract: what every backend must do, tested through the Protocol only."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

import pytest

from server.audit_chain import ChainVerifier
from server.storage import AuditDraft, SQLiteStorage, Storage
from server.storage.base import AgentStatus, SecretEvent
from shared.errors import AlreadyExists, StorageError
from shared.models import (
    ChangeType,
    ConfigRef,
    ConfigVersion,
    Environment,
    SchemaBinding,
    SchemaRecord,
    SecretStatus,
    SecretVersion,
    Tenant,
    TokenRecord,
    sha256_of,
)

G, P = Environment.GLOBAL, Environment.PRODUCTION


def tenant(name: str) -> Tenant:
    return Tenant(id=f"id-{name}", name=name, status="active", created_at="2026-01-01T00:00:00Z")


def version(
    ref: ConfigRef, n: int, revision: int, value: dict[str, object], tombstone: bool = False
) -> ConfigVersion:
    return ConfigVersion(
        namespace=ref.namespace,
        key=ref.key,
        environment=ref.environment,
        version=n,
        revision=revision,
        value=value,
        sha256=sha256_of(value),
        change_type=ChangeType.CREATE if n == 1 else ChangeType.UPDATE,
        author="t",
        message="m",
        created_at="2026-01-01T00:00:00Z",
        patch=[],
        tombstone=tombstone,
        metadata={"classification": "internal"},
    )


def draft(action: str) -> AuditDraft:
    return AuditDraft("2026-01-01T00:00:00Z", "id-a", "token:x", action, "config/x", "ok", "req", {"n": 1})


async def add_tenant(storage: Storage, name: str) -> Tenant:
    t = tenant(name)
    async with storage.write(t.id) as tx:
        await tx.insert_tenant(t)
    return t


async def put(storage: Storage, tenant_id: str, ref: ConfigRef, value: dict[str, object]) -> ConfigVersion:
    async with storage.write(tenant_id) as tx:
        latest = await tx.latest_version(ref)
        v = version(ref, (latest.version if latest else 0) + 1, await tx.next_revision(), value)
        await tx.insert_version(v)
    return v


class TestTenantsAndTokens:
    async def test_tenant_roundtrip(self, storage: Storage) -> None:
        """A tenant written is found by id and by name, and listed."""
        t = await add_tenant(storage, "a")
        assert await storage.get_tenant(t.id) == t
        assert await storage.get_tenant_by_name("a") == t
        assert [x.id for x in await storage.list_tenants()] == [t.id]

    async def test_duplicate_tenant_name(self, storage: Storage) -> None:
        """A second tenant with the same name is refused and the first is unchanged."""
        t = await add_tenant(storage, "a")
        with pytest.raises(AlreadyExists):
            async with storage.write("other") as tx:
                await tx.insert_tenant(Tenant("id-2", "a", "active", "2026-01-01T00:00:00Z"))
        assert await storage.list_tenants() == [t]

    async def test_token_by_hash_and_revoke(self, storage: Storage) -> None:
        """Tokens are found by hash; revoking flips the flag once and only in the owning tenant."""
        t = await add_tenant(storage, "a")
        rec = TokenRecord("tok_1", t.id, "n", "h" * 64, ("developer",), ("ns",), "2026", None, False, "x")
        async with storage.write(t.id) as tx:
            await tx.insert_token(rec)
        assert await storage.get_token_by_hash("h" * 64) == rec
        async with storage.write(t.id) as tx:
            assert not await tx.revoke_token("id-other", "tok_1")
            assert await tx.revoke_token(t.id, "tok_1")
            assert not await tx.revoke_token(t.id, "tok_1")
        found = await storage.get_token(t.id, "tok_1")
        assert found is not None and found.revoked
        assert await storage.get_token("id-other", "tok_1") is None


class TestConfigVersions:
    async def test_revisions_count_per_tenant(self, storage: Storage) -> None:
        """Each tenant has its own revision counter, starting at 1, without gaps."""
        a, b = await add_tenant(storage, "a"), await add_tenant(storage, "b")
        ref = ConfigRef("ns", "k", G)
        revs_a = [(await put(storage, a.id, ref, {"i": i})).revision for i in range(3)]
        revs_b = [(await put(storage, b.id, ref, {"i": i})).revision for i in range(2)]
        assert revs_a == [1, 2, 3] and revs_b == [1, 2]
        assert await storage.current_revision(a.id) == 3

    async def test_latest_history_and_version(self, storage: Storage) -> None:
        """The newest version, a given version and history newest-first all agree."""
        a = await add_tenant(storage, "a")
        ref = ConfigRef("ns/sub", "k", P)
        for i in range(4):
            await put(storage, a.id, ref, {"i": i})
        latest = await storage.get_version(a.id, ref)
        assert latest is not None and latest.version == 4 and latest.value == {"i": 3}
        second = await storage.get_version(a.id, ref, 2)
        assert second is not None and second.value == {"i": 1}
        assert second.metadata == {"classification": "internal"}
        hist = await storage.history(a.id, ref, limit=2)
        assert [v.version for v in hist] == [4, 3]
        assert [v.version for v in await storage.history(a.id, ref, before_version=3)] == [2, 1]

    async def test_no_read_crosses_tenants(self, storage: Storage) -> None:
        """Tenant B sees none of tenant A's versions through any read."""
        a, b = await add_tenant(storage, "a"), await add_tenant(storage, "b")
        ref = ConfigRef("ns", "k", G)
        await put(storage, a.id, ref, {"secret-ish": 1})
        assert await storage.get_version(b.id, ref) is None
        assert await storage.latest_in_envs(b.id, "ns", "k", (G,)) == {}
        assert await storage.list_latest(b.id) == []
        assert await storage.changes_since(b.id, 0) == []
        assert await storage.history(b.id, ref) == []

    async def test_latest_in_envs_and_list_latest(self, storage: Storage) -> None:
        """Only the newest row per environment is returned, tombstones included."""
        a = await add_tenant(storage, "a")
        await put(storage, a.id, ConfigRef("ns", "k", G), {"v": 1})
        await put(storage, a.id, ConfigRef("ns", "k", G), {"v": 2})
        await put(storage, a.id, ConfigRef("ns", "k", P), {"v": 3})
        async with storage.write(a.id) as tx:
            ref = ConfigRef("ns", "gone", G)
            await tx.insert_version(version(ref, 1, await tx.next_revision(), {}, tombstone=True))
        found = await storage.latest_in_envs(a.id, "ns", "k", (G, P, Environment.STAGING))
        assert {e: v.value for e, v in found.items()} == {G: {"v": 2}, P: {"v": 3}}
        rows = await storage.list_latest(a.id, (G,))
        assert [(r.key, r.tombstone) for r in rows] == [("gone", True), ("k", False)]

    async def test_changes_since_in_revision_order(self, storage: Storage) -> None:
        """changes_since returns every version after a revision, in order, bounded by limit."""
        a = await add_tenant(storage, "a")
        for i in range(5):
            await put(storage, a.id, ConfigRef("ns", f"k{i % 2}", G), {"i": i})
        assert [v.revision for v in await storage.changes_since(a.id, 2)] == [3, 4, 5]
        assert [v.revision for v in await storage.changes_since(a.id, 0, limit=2)] == [1, 2]

    async def test_failed_transaction_leaves_nothing(self, storage: Storage) -> None:
        """An exception inside a write rolls back the version, the revision and the audit record."""
        a = await add_tenant(storage, "a")
        ref = ConfigRef("ns", "k", G)
        with pytest.raises(RuntimeError):
            async with storage.write(a.id) as tx:
                await tx.insert_version(version(ref, 1, await tx.next_revision(), {"x": 1}))
                await tx.append_audit(draft("config:put"))
                raise RuntimeError("boom")
        assert await storage.get_version(a.id, ref) is None
        assert await storage.current_revision(a.id) == 0
        assert await storage.audit_records(a.id) == []
        assert (await put(storage, a.id, ref, {"x": 2})).revision == 1

    async def test_duplicate_version_is_refused(self, storage: Storage) -> None:
        """Inserting the same (entry, version) twice fails with StorageError and keeps the first."""
        a = await add_tenant(storage, "a")
        ref = ConfigRef("ns", "k", G)
        await put(storage, a.id, ref, {"x": 1})
        with pytest.raises(StorageError):
            async with storage.write(a.id) as tx:
                await tx.insert_version(version(ref, 1, await tx.next_revision(), {"x": 2}))
        found = await storage.get_version(a.id, ref)
        assert found is not None and found.value == {"x": 1}

    async def test_concurrent_writers_get_distinct_gapless_revisions(self, storage: Storage) -> None:
        """50 concurrent read-modify-write transactions: no lost update, revisions 1..50."""
        a = await add_tenant(storage, "a")
        ref = ConfigRef("ns", "counter", G)

        async def bump() -> int:
            async with storage.write(a.id) as tx:
                latest = await tx.latest_version(ref)
                count = int(latest.value["n"]) if latest else 0
                await asyncio.sleep(0)
                v = version(
                    ref, (latest.version if latest else 0) + 1, await tx.next_revision(), {"n": count + 1}
                )
                await tx.insert_version(v)
                return v.revision

        revisions = await asyncio.gather(*(bump() for _ in range(50)))
        assert sorted(revisions) == list(range(1, 51))
        latest = await storage.get_version(a.id, ref)
        assert latest is not None and latest.value == {"n": 50} and latest.version == 50

    async def test_data_survives_reopen(self, make_storage: Callable[[], SQLiteStorage]) -> None:
        """What was committed is there after closing and opening the store again."""
        async with make_storage() as store:
            a = await add_tenant(store, "a")
            await put(store, a.id, ConfigRef("ns", "k", G), {"kept": True})
        async with make_storage() as store:
            found = await store.get_version(a.id, ConfigRef("ns", "k", G))
            assert found is not None and found.value == {"kept": True}


class TestSchemasAndAudit:
    async def test_schema_upsert_and_bindings(self, storage: Storage) -> None:
        """A schema put twice keeps the newest body; bindings are per tenant and deletable."""
        a = await add_tenant(storage, "a")
        async with storage.write(a.id) as tx:
            await tx.put_schema(a.id, SchemaRecord("s", {"type": "object"}, False, "t1"))
            await tx.put_schema(a.id, SchemaRecord("s", {"type": "string"}, False, "t2"))
            await tx.insert_binding(a.id, SchemaBinding("bnd_1", "s", "ns/*", "*", "t"))
        found = await storage.get_schema(a.id, "s")
        assert found is not None and found.schema == {"type": "string"}
        assert await storage.get_schema("id-other", "s") is None
        assert [b.id for b in await storage.list_bindings(a.id)] == ["bnd_1"]
        assert await storage.list_bindings("id-other") == []
        async with storage.write(a.id) as tx:
            assert not await tx.delete_binding("id-other", "bnd_1")
            assert await tx.delete_binding(a.id, "bnd_1")
        assert await storage.list_bindings(a.id) == []

    async def test_audit_chain_is_hashed_and_verifiable(self, storage: Storage) -> None:
        """Appended records form a chain that verifies, and the head records the last one."""
        for i in range(5):
            async with storage.write("chain-a") as tx:
                await tx.append_audit(draft(f"a{i}"))
        async with storage.write("chain-b") as tx:
            await tx.append_audit(draft("b0"))
        records = await storage.audit_records("chain-a")
        assert [r.seq for r in records] == [1, 2, 3, 4, 5]
        assert all(r.prev_hash == p.hash for p, r in itertools.pairwise(records))
        verifier = ChainVerifier()
        assert verifier.feed(records) and verifier.report().ok
        assert await storage.audit_head("chain-a") == (5, records[-1].hash)
        assert [r.seq for r in await storage.audit_records("chain-a", after_seq=3, limit=1)] == [4]
        assert [r.action for r in await storage.audit_records("chain-b")] == ["b0"]


def agent(tenant_id: str, agent_id: str, revision: int, state: str = "applied") -> AgentStatus:
    return AgentStatus(tenant_id, agent_id, ("ns", "ns/sub"), "production", revision, state, "", "2026")


class TestAgentStatus:
    async def test_report_replaces_the_previous_one(self, storage: Storage) -> None:
        """One row per agent: a second report replaces every field of the first."""
        a = await add_tenant(storage, "a")
        async with storage.write(a.id) as tx:
            await tx.put_agent_status(agent(a.id, "pod-2", 3))
            await tx.put_agent_status(agent(a.id, "pod-1", 4))
        newer = AgentStatus(a.id, "pod-1", ("other",), "staging", 9, "check_failed", "check exited 1", "2027")
        async with storage.write(a.id) as tx:
            await tx.put_agent_status(newer)
        assert await storage.list_agent_status(a.id) == [newer, agent(a.id, "pod-2", 3)]

    async def test_agents_are_per_tenant(self, storage: Storage) -> None:
        """The same agent id in two tenants is two agents; neither tenant sees the other's."""
        a, b = await add_tenant(storage, "a"), await add_tenant(storage, "b")
        async with storage.write(a.id) as tx:
            await tx.put_agent_status(agent(a.id, "pod", 1))
        async with storage.write(b.id) as tx:
            await tx.put_agent_status(agent(b.id, "pod", 7, "error"))
        assert [s.applied_revision for s in await storage.list_agent_status(a.id)] == [1]
        assert [s.state for s in await storage.list_agent_status(b.id)] == ["error"]
        assert await storage.list_agent_status("id-other") == []

    async def test_failed_transaction_keeps_the_old_report(self, storage: Storage) -> None:
        """A report written in a transaction that fails is not stored."""
        a = await add_tenant(storage, "a")
        async with storage.write(a.id) as tx:
            await tx.put_agent_status(agent(a.id, "pod", 1))
        with pytest.raises(RuntimeError):
            async with storage.write(a.id) as tx:
                await tx.put_agent_status(agent(a.id, "pod", 2))
                raise RuntimeError("boom")
        assert [s.applied_revision for s in await storage.list_agent_status(a.id)] == [1]


def secret(n: int, revision: int, key: str = "k") -> SecretVersion:
    return SecretVersion(
        "ns", key, n, revision, SecretStatus.ACTIVE, 1, "kek", 1, "wrapped", "sealed", "2026", "t", "m"
    )


def notice(revision: int, kind: str = "rotation_due", versions: tuple[int, ...] = (1,)) -> SecretEvent:
    return SecretEvent(revision, "ns", "k", kind, versions, "2026", {"due_at": "2027"})


class TestSecretEvents:
    async def test_notices_and_versions_since_in_revision_order(self, storage: Storage) -> None:
        """Notices and secret versions come back after a revision, in revision order, bounded by limit."""
        a = await add_tenant(storage, "a")
        async with storage.write(a.id) as tx:
            await tx.insert_secret(a.id, secret(1, await tx.next_revision()))
            await tx.insert_secret_event(a.id, notice(await tx.next_revision(), "revoked", (1,)))
            await tx.insert_secret(a.id, secret(2, await tx.next_revision()))
            await tx.insert_secret_event(a.id, notice(await tx.next_revision(), "rotation_due", (2,)))
        assert await storage.secret_events_since(a.id, 0) == [
            notice(2, "revoked", (1,)),
            notice(4, "rotation_due", (2,)),
        ]
        assert [e.revision for e in await storage.secret_events_since(a.id, 2)] == [4]
        assert [e.revision for e in await storage.secret_events_since(a.id, 0, limit=1)] == [2]
        assert [(v.version, v.revision) for v in await storage.secret_versions_since(a.id, 1)] == [(2, 3)]
        assert [v.revision for v in await storage.secret_versions_since(a.id, 0, limit=1)] == [1]

    async def test_a_due_version_is_announced_once(self, storage: Storage) -> None:
        """A second rotation_due of the same version is refused; other versions and kinds are not."""
        a = await add_tenant(storage, "a")
        async with storage.write(a.id) as tx:
            assert not await tx.has_secret_event(a.id, "ns", "k", "rotation_due", (1,))
            await tx.insert_secret_event(a.id, notice(await tx.next_revision()))
            assert await tx.has_secret_event(a.id, "ns", "k", "rotation_due", (1,))
            assert not await tx.has_secret_event(a.id, "ns", "k", "rotation_due", (2,))
            assert not await tx.has_secret_event(a.id, "ns", "k", "revoked", (1,))
        with pytest.raises(StorageError):
            async with storage.write(a.id) as tx:
                await tx.insert_secret_event(a.id, notice(await tx.next_revision()))
        async with storage.write(a.id) as tx:
            await tx.insert_secret_event(a.id, notice(await tx.next_revision(), versions=(2,)))
            await tx.insert_secret_event(a.id, notice(await tx.next_revision(), "revoked"))
            await tx.insert_secret_event(a.id, notice(await tx.next_revision(), "revoked"))
        found = await storage.secret_events_since(a.id, 0)
        assert [(e.kind, e.versions) for e in found] == [
            ("rotation_due", (1,)),
            ("rotation_due", (2,)),
            ("revoked", (1,)),
            ("revoked", (1,)),
        ]
        assert await storage.current_revision(a.id) == 4  # the refused transaction left no revision

    async def test_one_notice_per_revision(self, storage: Storage) -> None:
        """Two notices at the same revision are refused."""
        a = await add_tenant(storage, "a")
        with pytest.raises(StorageError):
            async with storage.write(a.id) as tx:
                revision = await tx.next_revision()
                await tx.insert_secret_event(a.id, notice(revision, "revoked"))
                await tx.insert_secret_event(a.id, notice(revision, "revoked", (2,)))
        assert await storage.secret_events_since(a.id, 0) == []

    async def test_notices_are_per_tenant(self, storage: Storage) -> None:
        """The same due version in two tenants is announced in each; neither sees the other's."""
        a, b = await add_tenant(storage, "a"), await add_tenant(storage, "b")
        for t in (a, b):
            async with storage.write(t.id) as tx:
                await tx.insert_secret(t.id, secret(1, await tx.next_revision()))
                await tx.insert_secret_event(t.id, notice(await tx.next_revision()))
        async with storage.write(a.id) as tx:
            assert not await tx.has_secret_event("id-other", "ns", "k", "rotation_due", (1,))
        assert len(await storage.secret_events_since(a.id, 0)) == 1
        assert len(await storage.secret_events_since(b.id, 0)) == 1
        assert await storage.secret_events_since("id-other", 0) == []
        assert await storage.secret_versions_since("id-other", 0) == []

    async def test_failed_transaction_leaves_no_notice(self, storage: Storage) -> None:
        """A notice written in a transaction that fails is not stored and can be written again."""
        a = await add_tenant(storage, "a")
        with pytest.raises(RuntimeError):
            async with storage.write(a.id) as tx:
                await tx.insert_secret_event(a.id, notice(await tx.next_revision()))
                raise RuntimeError("boom")
        assert await storage.secret_events_since(a.id, 0) == []
        async with storage.write(a.id) as tx:
            await tx.insert_secret_event(a.id, notice(await tx.next_revision()))
        assert [e.revision for e in await storage.secret_events_since(a.id, 0)] == [1]
