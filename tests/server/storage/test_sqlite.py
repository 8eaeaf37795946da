"""What the SQLite backend promises beyond the shared contract: durability pragmas, file mode, migrations."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from server.storage import SQLiteStorage
from server.storage.migrations import SQLITE_MIGRATIONS


async def _pragma(conn: aiosqlite.Connection | None, name: str) -> Any:
    assert conn is not None
    async with conn.execute(f"PRAGMA {name}") as cur:
        row = await cur.fetchone()
    assert row is not None
    return row[0]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStorage]:
    async with SQLiteStorage(tmp_path / "data" / "llmcm.db") as opened:
        yield opened


class TestSQLiteStorage:
    async def test_both_connections_use_wal(self, store: SQLiteStorage) -> None:
        """The writer and the reader connection both run with journal_mode=wal."""
        assert await _pragma(store._writer, "journal_mode") == "wal"
        assert await _pragma(store._reader, "journal_mode") == "wal"

    async def test_both_connections_sync_fully(self, store: SQLiteStorage) -> None:
        """The writer and the reader connection both run with synchronous=FULL (2)."""
        assert await _pragma(store._writer, "synchronous") == 2
        assert await _pragma(store._reader, "synchronous") == 2

    async def test_database_file_is_private(self, store: SQLiteStorage) -> None:
        """The database file is created with mode 0600 and its directory with 0700."""
        assert store.path.stat().st_mode & 0o777 == 0o600
        assert store.path.parent.stat().st_mode & 0o777 == 0o700

    async def test_open_without_migrate_leaves_schema_to_caller(self, tmp_path: Path) -> None:
        """open(migrate=False) applies nothing; migrate() then reports what it applied, and nothing twice."""
        store = SQLiteStorage(tmp_path / "m.db")
        await store.open(migrate=False)
        try:
            async with store._require_writer().execute(
                "SELECT name FROM sqlite_master WHERE name = 'tenants'"
            ) as cur:
                assert await cur.fetchall() == []
            assert await store.migrate() == [v for v, _ in SQLITE_MIGRATIONS]
            assert await store.migrate() == []
            assert await store.list_tenants() == []
        finally:
            await store.close()
