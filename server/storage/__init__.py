"""Storage backends behind one interface; ``open_storage`` picks one by URL."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from server.storage.base import SYSTEM_CHAIN, AuditDraft, Storage, WriteTx
from server.storage.migrations import POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS
from server.storage.postgres import PostgresStorage
from server.storage.sqlite import SQLiteStorage
from shared.errors import InvalidInput

__all__ = [
    "SYSTEM_CHAIN",
    "AuditDraft",
    "OpenableStorage",
    "PostgresStorage",
    "SQLiteStorage",
    "Storage",
    "WriteTx",
    "open_storage",
    "schema_version",
]

_POSTGRES_SCHEMES = ("postgresql://", "postgres://")


class OpenableStorage(Storage, Protocol):
    """A backend as ``open_storage`` hands it out: opened (and migrated) by ``async with``."""

    async def open(self, *, migrate: bool = True) -> None: ...

    async def migrate(self) -> list[int]:
        """Apply missing schema migrations; return the versions applied."""
        ...

    async def close(self) -> None: ...

    async def __aenter__(self) -> OpenableStorage: ...

    async def __aexit__(self, *exc_info: object) -> None: ...


def open_storage(url: str) -> OpenableStorage:
    """An unopened backend for ``url``; use it as ``async with open_storage(url) as s``.

    ``sqlite:///PATH`` (the embedded default) or ``postgresql://[user[:password]@]host[:port]/db``
    (several replicas share one database).
    """
    if url.startswith("sqlite:///"):
        return SQLiteStorage(Path(url.removeprefix("sqlite:///")))
    if url.startswith(_POSTGRES_SCHEMES):
        return PostgresStorage(url)
    raise InvalidInput(
        f"unsupported storage URL scheme in {url.split(':', 1)[0]!r}; "
        "use sqlite:///PATH or postgresql://HOST/DATABASE"
    )


def schema_version(url: str) -> int:
    """The newest schema version the backend for ``url`` knows."""
    migrations = POSTGRES_MIGRATIONS if url.startswith(_POSTGRES_SCHEMES) else SQLITE_MIGRATIONS
    return max(v for v, _ in migrations)
