"""Scale-out settings are checked when the configuration is built, and notices read off the wire
are checked before anything acts on them."""

from __future__ import annotations

import subprocess

import pytest

from server.cluster.base import Notice
from server.config import ServerConfig
from shared.errors import InvalidInput
from tests.support import REPO, SERVER_CMD

PG = "postgresql://llmcm@db.example:5432/llmcm"


class TestServerConfig:
    def test_redis_with_postgresql(self) -> None:
        """LLMCM_REDIS and LLMCM_REDIS_PREFIX are read with a PostgreSQL store."""
        config = ServerConfig.load(
            environ={"LLMCM_STORAGE": PG, "LLMCM_REDIS": "redis://r:6379/0", "LLMCM_REDIS_PREFIX": "prod:"}
        )
        assert (config.redis, config.redis_prefix) == ("redis://r:6379/0", "prod:")

    @pytest.mark.parametrize(
        ("environ", "words"),
        [
            ({"LLMCM_REDIS": "redis://r:6379/0"}, "PostgreSQL"),  # SQLite serves one replica
            ({"LLMCM_STORAGE": PG, "LLMCM_REDIS": "http://r:6379"}, "redis://"),
            ({"LLMCM_STORAGE": PG, "LLMCM_REDIS_PREFIX": "a b"}, "redis_prefix"),
            ({"LLMCM_FALLBACK_POLL_INTERVAL": "0"}, "fallback_poll_interval"),
        ],
    )
    def test_refused(self, environ: dict[str, str], words: str) -> None:
        """A half-configured cluster is refused with the setting named."""
        with pytest.raises(InvalidInput, match=words):
            ServerConfig.load(environ=environ)

    def test_serve_refuses_redis_on_sqlite(self, tmp_path: object) -> None:
        """``serve --redis`` on the SQLite default exits 1 with one clear line."""
        out = subprocess.run(
            [*SERVER_CMD, "serve", "--data", str(tmp_path), "--redis", "redis://127.0.0.1:6379/0"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 1
        assert "PostgreSQL" in out.stderr and "Traceback" not in out.stderr


class TestNotice:
    def test_round_trip(self) -> None:
        """What one replica encodes, another decodes to the same notice."""
        notice = Notice("t1", 42, "config", "replica-a")
        assert Notice.decode(notice.encode()) == notice

    @pytest.mark.parametrize(
        "raw",
        [
            b"",
            b"[]",
            b'{"t": "x"}',
            b'{"t": "x", "r": "1", "k": "config", "o": "a"}',
            b'{"t": "x", "r": 1, "k": "drop", "o": "a"}',
        ],
    )
    def test_garbage_is_refused(self, raw: bytes) -> None:
        """Anything but a well-formed notice is refused (and dropped by the listener)."""
        with pytest.raises(InvalidInput):
            Notice.decode(raw)
