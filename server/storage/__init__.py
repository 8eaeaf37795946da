"""Storage backends behind one interface; ``open_storage`` picks one by URL."""

from __future__ import annotations

from pathlib import Path

from server.storage.base import SYSTEM_CHAIN, AuditDraft, Storage, WriteTx
from server.storage.sqlite import SQLiteStorage
from shared.errors import InvalidInput

__all__ = ["SYSTEM_CHAIN", "AuditDraft", "SQLiteStorage", "Storage", "WriteTx", "open_storage"]


def open_storage(url: str) -> SQLiteStorage:
    """An unopened backend for ``url``; use it as ``async with open_storage(url) as s``."""
    if url.startswith("sqlite:///"):
        return SQLiteStorage(Path(url.removeprefix("sqlite:///")))
    if url.startswith(("postgresql://", "postgres://")):
        raise InvalidInput("the PostgreSQL backend is not available in this version; use sqlite:///PATH")
    raise InvalidInput(f"unsupported storage URL scheme in {url.split(':', 1)[0]!r}; use sqlite:///PATH")
