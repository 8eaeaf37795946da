"""Fixtures of the scale-out tests (helpers.py has the rest): a PostgreSQL database, a Redis key
prefix and a Redis server of the test's own, each removed afterwards."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server.cluster.helpers import RedisServer, delete_prefix, redis_client
from tests.support import postgres_database


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test's own on the machine's Redis; its keys are deleted afterwards."""
    client = redis_client()
    prefix = f"llmcm-test-{os.getpid()}-{secrets.token_hex(4)}:"
    try:
        yield prefix
    finally:
        delete_prefix(client, prefix)
        client.close()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with postgres_database() as url:
        yield url


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()
