"""Every storage backend runs the same contract tests: add a backend to BACKENDS.

The PostgreSQL backend runs on a database of the test's own (``tests.support.postgres_database``);
without a reachable PostgreSQL its tests fail, they are never skipped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from server.storage import OpenableStorage, PostgresStorage, SQLiteStorage, Storage
from tests.support import postgres_database

Factory = Callable[[], OpenableStorage]


def _sqlite(request: pytest.FixtureRequest, tmp_path: Path) -> Factory:
    return lambda: SQLiteStorage(tmp_path / "contract.db")


def _postgresql(request: pytest.FixtureRequest, tmp_path: Path) -> Factory:
    url: str = request.getfixturevalue("postgres_url")
    return lambda: PostgresStorage(url)


BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path], Factory]] = {
    "sqlite": _sqlite,
    "postgresql": _postgresql,
}


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A new empty PostgreSQL database for this test, dropped after it."""
    with postgres_database() as url:
        yield url


@pytest.fixture(params=sorted(BACKENDS))
def make_storage(request: pytest.FixtureRequest, tmp_path: Path) -> Factory:
    """A factory of unopened backends over the same underlying store (for reopen tests)."""
    return BACKENDS[request.param](request, tmp_path)


@pytest.fixture
async def storage(make_storage: Factory) -> AsyncIterator[Storage]:
    async with make_storage() as store:
        yield store
