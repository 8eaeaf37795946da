"""Every storage backend runs the same contract tests: add a backend to BACKENDS."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from server.storage import SQLiteStorage, Storage


def _sqlite(tmp_path: Path) -> SQLiteStorage:
    return SQLiteStorage(tmp_path / "contract.db")


BACKENDS: dict[str, Callable[[Path], SQLiteStorage]] = {"sqlite": _sqlite}


@pytest.fixture(params=sorted(BACKENDS))
def make_storage(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], SQLiteStorage]:
    """A factory of unopened backends over the same underlying store (for reopen tests)."""
    factory = BACKENDS[request.param]
    return lambda: factory(tmp_path)


@pytest.fixture
async def storage(make_storage: Callable[[], SQLiteStorage]) -> AsyncIterator[Storage]:
    async with make_storage() as store:
        yield store
