"""In-process services over a real SQLite file, with a controllable clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from server.service import Ctx, Services
from server.service.tenants import principal_of
from server.storage import SQLiteStorage


class FakeClock:
    """Only time is faked here: storage, hashing and policy are the real ones."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def services(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Services]:
    async with SQLiteStorage(tmp_path / "svc.db") as store:
        yield Services.build(store, clock=clock)


@pytest.fixture
async def admin_ctx(services: Services) -> Ctx:
    tenant, token = await services.tenants.bootstrap("acme")
    principal = await services.tenants.authenticate(token, "test")
    assert principal.tenant_id == tenant.id
    return Ctx(principal, "test")


async def token_ctx(services: Services, admin: Ctx, *roles: str, namespaces: list[str] | None = None) -> Ctx:
    _, record = await services.tenants.create_token(admin, name="t", roles=list(roles), namespaces=namespaces)
    return Ctx(principal_of(record), "test")
