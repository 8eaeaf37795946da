"""Fixtures shared by every test package: a real server process per module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Http, ServerProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A running server on a fresh SQLite store, shared by the tests of one module."""
    with ServerProcess(tmp_path_factory.mktemp("server")).running() as srv:
        yield srv


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server of the test's own, for tests that kill or restart it."""
    with ServerProcess(tmp_path / "data").running() as srv:
        yield srv


@pytest.fixture
def admin(server: ServerProcess) -> Http:
    """HTTP client holding the bootstrap global-admin token."""
    return server.admin


_tenant_counter = iter(range(1, 1_000_000))


@pytest.fixture
def tenant(server: ServerProcess, admin: Http) -> dict[str, str]:
    """A new tenant with its own tenant-admin token: {'id', 'name', 'token'}."""
    name = f"t{next(_tenant_counter)}-{server.port}"
    reply = admin.post("/v1/tenants", {"name": name, "admin_token": True})
    assert reply.status == 201, reply.body
    data = reply.json
    return {"id": data["tenant"]["id"], "name": name, "token": data["admin_token"]["token"]}
