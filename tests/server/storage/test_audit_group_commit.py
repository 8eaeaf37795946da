"""The SQLite audit group commit (``SQLiteStorage.append_audit_batch``) under concurrency.

Many callers append audit records to two chains at once while ordinary write transactions
(a revision and an audit record each) run on the same chains: every call commits, each chain is
gapless and verifies, and each call gets back its own records. A batch whose transaction fails
fails every caller in it, stores none of its records, and leaves the chain intact for the next.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from server.audit_chain import ChainVerifier
from server.storage import SQLiteStorage
from server.storage.base import AuditDraft
from server.storage.sqlite import _AUDIT_ROWS_MAX
from shared.errors import StorageError
from shared.models import AuditRecord

CHAINS = ("chain-a", "chain-b")
CLIENTS = 24  # concurrent callers of append_audit_batch, alternating between the chains
CALLS = 10  # sequential calls per caller
WRITERS = 4  # concurrent callers of write(), alternating between the chains
WRITES = 8  # sequential transactions per writer
POISON = "poison"  # a resource the injected trigger refuses


def draft(chain: str, who: str, n: int, resource: str = "secret/ns/key") -> AuditDraft:
    return AuditDraft(
        time="2026-11-26T12:00:00.000000Z",
        tenant_id=chain,
        actor=f"token:{who}",
        action="secret:read",
        resource=resource,
        result="ok",
        request_id=f"{who}-{n}",
        metadata={"version": n, "caller": who},
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStorage]:
    async with SQLiteStorage(tmp_path / "audit.db") as s:
        yield s


async def chain_records(store: SQLiteStorage, chain: str) -> list[AuditRecord]:
    return await store.audit_records(chain, limit=100_000)


async def assert_chain_intact(store: SQLiteStorage, chain: str, count: int) -> list[AuditRecord]:
    records = await chain_records(store, chain)
    assert [r.seq for r in records] == list(range(1, count + 1))
    verifier = ChainVerifier()
    assert verifier.feed(records), verifier.report()
    assert await store.audit_head(chain) == (count, records[-1].hash)
    return records


async def client(store: SQLiteStorage, chain: str, who: str) -> list[AuditRecord]:
    """CALLS appends one after the other; some carry two records."""
    got: list[AuditRecord] = []
    for n in range(CALLS):
        drafts = [draft(chain, who, n)] + ([draft(chain, who, n, "secret/ns/other")] if n % 3 == 0 else [])
        records = await store.append_audit_batch(chain, drafts)
        assert [(r.request_id, r.resource) for r in records] == [(d.request_id, d.resource) for d in drafts]
        got += records
    return got


async def writer(store: SQLiteStorage, chain: str, who: str) -> list[int]:
    """WRITES transactions, each taking a revision and writing an audit record inside it."""
    revisions = []
    for n in range(WRITES):
        async with store.write(chain) as tx:
            revision = await tx.next_revision()
            await asyncio.sleep(0)  # let the audit callers queue up behind this transaction
            await tx.append_audit(draft(chain, who, n, "config/ns/key"))
        revisions.append(revision)
    return revisions


def records_per_client() -> int:
    return CALLS + len([n for n in range(CALLS) if n % 3 == 0])


class TestConcurrentAudits:
    async def test_all_commit_and_both_chains_verify(self, store: SQLiteStorage) -> None:
        """24 callers x 10 appends and 4 writers x 8 transactions on two chains: all in, gapless, verified."""
        clients = [client(store, CHAINS[i % 2], f"c{i}") for i in range(CLIENTS)]
        writers = [writer(store, CHAINS[i % 2], f"w{i}") for i in range(WRITERS)]
        got, revisions = await asyncio.wait_for(
            asyncio.gather(asyncio.gather(*clients), asyncio.gather(*writers)), timeout=60
        )

        for chain in CHAINS:
            mine = [i for i in range(CLIENTS) if CHAINS[i % 2] == chain]
            writes = [i for i in range(WRITERS) if CHAINS[i % 2] == chain]
            count = len(mine) * records_per_client() + len(writes) * WRITES
            stored = await assert_chain_intact(store, chain, count)
            by_seq = {r.seq: r for r in stored}
            for i in mine:
                # each caller got its own records back, as stored, in the order it made them
                assert [by_seq[r.seq] for r in got[i]] == got[i]
                assert [r.seq for r in got[i]] == sorted(r.seq for r in got[i])
                assert {r.chain for r in got[i]} == {chain}
            # the write transactions kept their own, gapless revision sequence on the chain
            taken = sorted(r for i in writes for r in revisions[i])
            assert taken == list(range(1, len(writes) * WRITES + 1))
            assert await store.current_revision(chain) == len(writes) * WRITES
            assert len([r for r in stored if r.resource == "config/ns/key"]) == len(writes) * WRITES

    async def test_records_survive_a_reopen(self, tmp_path: Path) -> None:
        """What the callers were told is committed is there after the store is closed and reopened."""
        path = tmp_path / "reopen.db"
        async with SQLiteStorage(path) as s:
            got = await asyncio.gather(*(client(s, CHAINS[i % 2], f"c{i}") for i in range(6)))
        async with SQLiteStorage(path) as s:
            for chain in CHAINS:
                stored = await assert_chain_intact(s, chain, 3 * records_per_client())
                told = [r for i, records in enumerate(got) if CHAINS[i % 2] == chain for r in records]
                assert sorted(told, key=lambda r: r.seq) == stored


class TestOtherWriters:
    async def test_batches_follow_records_written_by_another_connection(self, store: SQLiteStorage) -> None:
        """Records appended inside write() transactions (another connection) between batches: each
        batch is chained after them, whatever head the batch writer saw last."""
        expected = 0
        for n in range(5):
            await store.append_audit_batch(
                CHAINS[0], [draft(CHAINS[0], "batch", n), draft(CHAINS[0], "batch", n)]
            )
            async with store.write(CHAINS[0]) as tx:
                await tx.append_audit(draft(CHAINS[0], "tx", n, "config/ns/key"))
            expected += 3
        stored = await assert_chain_intact(store, CHAINS[0], expected)
        assert [r.actor for r in stored[:3]] == ["token:batch", "token:batch", "token:tx"]

    async def test_records_written_by_another_store_are_kept(self, store: SQLiteStorage) -> None:
        """A record appended by another store on the same file (as another process would) is never
        overwritten or forked from: the next batch comes after it."""
        await store.append_audit_batch(CHAINS[0], [draft(CHAINS[0], "batch", 0)])
        async with SQLiteStorage(store.path) as other:
            await other.append_audit_batch(CHAINS[0], [draft(CHAINS[0], "other", 0)])
            async with other.write(CHAINS[0]) as tx:
                await tx.append_audit(draft(CHAINS[0], "other", 1, "config/ns/key"))
        await store.append_audit_batch(CHAINS[0], [draft(CHAINS[0], "batch", 1)])
        stored = await assert_chain_intact(store, CHAINS[0], 4)
        assert [r.actor for r in stored] == ["token:batch", "token:other", "token:other", "token:batch"]


def add_poison_trigger(path: Path) -> None:
    """A real failure inside the batch transaction: SQLite refuses the row (after earlier rows of
    the same batch were inserted, so they must be rolled back)."""
    with sqlite3.connect(path) as conn:
        conn.execute(
            f"CREATE TRIGGER refuse_poison BEFORE INSERT ON audit_log WHEN NEW.resource = '{POISON}' "
            "BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
        )


class TestFailingBatch:
    @pytest.mark.parametrize(
        ("calls", "poisoned"),
        [(100, 70), (_AUDIT_ROWS_MAX + 50, _AUDIT_ROWS_MAX + 10)],
        ids=["one-statement", "several-statements"],
    )
    async def test_every_caller_in_a_failing_batch_fails(
        self, store: SQLiteStorage, calls: int, poisoned: int
    ) -> None:
        """Calls queued together on chain a, one of them refused by the database after rows before it
        were inserted: all of them fail, none is stored; chain b's batch, queued at the same time,
        commits; chain a goes on afterwards."""
        add_poison_trigger(store.path)
        before = [draft(CHAINS[0], "seed", n) for n in range(3)]
        await store.append_audit_batch(CHAINS[0], before)

        def resource(i: int) -> str:
            return POISON if i == poisoned else "secret/ns/key"

        queued = [
            store.append_audit_batch(CHAINS[0], [draft(CHAINS[0], f"a{i}", 0, resource(i))])
            for i in range(calls)
        ]
        queued += [store.append_audit_batch(CHAINS[1], [draft(CHAINS[1], f"b{i}", 0)]) for i in range(20)]
        outcomes = await asyncio.wait_for(asyncio.gather(*queued, return_exceptions=True), timeout=30)

        failed, passed = outcomes[:calls], outcomes[calls:]
        assert all(isinstance(o, StorageError) for o in failed), [type(o).__name__ for o in failed]
        assert all(isinstance(o, list) and len(o) == 1 for o in passed)
        assert "audit log" in str(failed[0])  # names what failed
        stored = await assert_chain_intact(store, CHAINS[0], len(before))
        assert {r.request_id for r in stored} == {d.request_id for d in before}
        await assert_chain_intact(store, CHAINS[1], 20)

        after = await store.append_audit_batch(CHAINS[0], [draft(CHAINS[0], "later", 0)])
        assert [r.seq for r in after] == [len(before) + 1]
        await assert_chain_intact(store, CHAINS[0], len(before) + 1)

    async def test_a_failing_batch_does_not_stop_concurrent_writes(self, store: SQLiteStorage) -> None:
        """A batch failing while write transactions run on the same chain: the writes all commit."""
        add_poison_trigger(store.path)
        calls = [
            store.append_audit_batch(CHAINS[0], [draft(CHAINS[0], f"a{i}", 0, POISON if i == 0 else "x")])
            for i in range(10)
        ]
        results = await asyncio.wait_for(
            asyncio.gather(asyncio.gather(*calls, return_exceptions=True), writer(store, CHAINS[0], "w")),
            timeout=30,
        )
        outcomes, revisions = results
        assert all(isinstance(o, StorageError) for o in outcomes)
        assert revisions == list(range(1, WRITES + 1))
        stored = await assert_chain_intact(store, CHAINS[0], WRITES)
        assert {r.resource for r in stored} == {"config/ns/key"}
