"""Fixtures of the REST API tests: a client for the test's own tenant and a token factory."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest

from tests.server.api.helpers import token
from tests.support import Http, ServerProcess

_names = itertools.count(1)
MakeToken = Callable[..., tuple[Http, dict[str, Any]]]


@pytest.fixture
def tadmin(server: ServerProcess, tenant: dict[str, str]) -> Http:
    """HTTP client holding the tenant-admin token of a tenant of this test's own."""
    return server.http(tenant["token"])


@pytest.fixture
def make_token(server: ServerProcess, admin: Http, tenant: dict[str, str]) -> MakeToken:
    """Create a token in the test's tenant: make_token(roles, namespaces, **extra) -> (client, record).

    The global admin creates it: a tenant-admin may not grant roles it lacks (pii-authorized).
    """

    def make(
        roles: list[str], namespaces: list[str] | None = None, **extra: Any
    ) -> tuple[Http, dict[str, Any]]:
        extra.setdefault("tenant_id", tenant["id"])
        created = token(admin, f"tok-{next(_names)}", roles, namespaces, **extra)
        return server.http(created["token"]), created

    return make
