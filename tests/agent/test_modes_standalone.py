"""``run --standalone`` and the encrypted cache: served offline, --max-stale readiness, and a
tampered, truncated, swapped or foreign cache refused (never written out)."""

from __future__ import annotations

import base64
import os
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.agent.agent_support import AGENT_CMD, Setup, agent_env, read_json, run_init, running
from tests.support import Http, ServerProcess, free_port


@pytest.fixture
def setup(server: ServerProcess, tenant: dict[str, str], tmp_path: Path) -> Setup:
    return Setup(server, tenant["token"], tenant["id"], tmp_path)


@pytest.fixture
def cached(setup: Setup) -> Setup:
    """A cache written by an init against the live server (edge/a and edge/b)."""
    setup.put("edge", "a", {"v": 1})
    setup.put("edge", "b", {"w": 2})
    done = run_init(setup.env("edge"))
    assert done.returncode == 0, done.stderr
    return setup


def offline_env(setup: Setup, out: str, **extra: str) -> dict[str, str]:
    """The same agent settings, but the server is gone and the output directory is new."""
    return setup.env(
        "edge", CONFIG_SERVER=f"http://127.0.0.1:{free_port()}", CONFIG_DIR=str(setup.tmp / out), **extra
    )


def _db(setup: Setup) -> sqlite3.Connection:
    return sqlite3.connect(setup.tmp / "cache" / "agent.db")


def flip_a_byte(setup: Setup) -> None:
    with _db(setup) as db:
        (blob,) = db.execute("SELECT value FROM entries WHERE key = 'edge/a'").fetchone()
        blob = bytearray(blob)
        blob[-5] ^= 0x01
        db.execute("UPDATE entries SET value = ? WHERE key = 'edge/a'", (bytes(blob),))


def swap_entries(setup: Setup) -> None:
    with _db(setup) as db:
        rows = dict(db.execute("SELECT key, value FROM entries WHERE key IN ('edge/a', 'edge/b')").fetchall())
        db.execute("UPDATE entries SET value = ? WHERE key = 'edge/a'", (rows["edge/b"],))
        db.execute("UPDATE entries SET value = ? WHERE key = 'edge/b'", (rows["edge/a"],))


def truncate(setup: Setup) -> None:
    with _db(setup) as db:
        (blob,) = db.execute("SELECT value FROM entries WHERE key = 'edge/b'").fetchone()
        db.execute("UPDATE entries SET value = ? WHERE key = 'edge/b'", (blob[: len(blob) // 2],))


def foreign_key(setup: Setup) -> None:
    key_file = setup.tmp / "cache" / "agent.db.key"
    key_file.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")


class TestCacheRefused:
    def test_untouched_cache_is_used(self, cached: Setup) -> None:
        """The control case: the same cache, not tampered with, is written out."""
        done = run_init(offline_env(cached, "out"), "--init-timeout", "0.5s", "--allow-stale")
        assert done.returncode == 0, done.stderr
        assert read_json(cached.tmp / "out" / "edge" / "a.json") == {"v": 1}

    @pytest.mark.parametrize("tamper", [flip_a_byte, swap_entries, truncate, foreign_key])
    def test_tampered_cache_is_refused(self, cached: Setup, tamper: Callable[[Setup], None]) -> None:
        """Edited, moved, truncated, or sealed under another key: refused and logged; nothing written."""
        tamper(cached)
        done = run_init(offline_env(cached, "out"), "--init-timeout", "0.5s", "--allow-stale")
        assert done.returncode == 1
        assert "no usable cache" in done.stderr.strip().splitlines()[-1]
        assert '"event": "cache_entry_refused"' in done.stderr
        assert not (cached.tmp / "out" / "..data").exists()
        assert not (cached.tmp / "out" / "edge").exists()

    def test_standalone_refuses_a_tampered_cache(self, cached: Setup) -> None:
        """The edge agent behaves as if it had no cache: no files, not ready, the read API says so."""
        flip_a_byte(cached)
        env = offline_env(cached, "out")
        with running(env, "run", "--standalone", log_path=cached.tmp / "edge.log") as agent:
            agent.wait_for("agent_started")
            assert agent.events("cache_entry_refused")
            assert agent.health()[0] == 503
            assert Http(agent.port).get("/v1/configs/edge/a").status == 503
            assert not (cached.tmp / "out" / "edge").exists()


class TestStandalone:
    def test_serves_from_the_cache_without_a_server(self, cached: Setup) -> None:
        """No CONFIG_SERVER at all: the cache is the only source; files and read API are served."""
        env = agent_env(
            NAMESPACES="edge",
            ENVIRONMENT="production",
            CONFIG_DIR=str(cached.tmp / "out"),
            CACHE_PATH=str(cached.tmp / "cache" / "agent.db"),
        )
        with running(env, "run", "--standalone", log_path=cached.tmp / "edge.log") as agent:
            agent.wait_for("agent_started")
            assert read_json(cached.tmp / "out" / "edge" / "b.json") == {"w": 2}
            assert agent.health()[0] == 200
            reply = Http(agent.port).get("/v1/configs/edge/b")
            assert reply.status == 200 and reply.json["value"] == {"w": 2}
            assert reply.json["environment"] == "production"

    def test_max_stale_turns_readiness_false_but_keeps_serving(self, cached: Setup) -> None:
        """A cache older than --max-stale: readiness 503 naming why; the files and read API stay."""
        time.sleep(1.2)  # the cache is now more than a second old
        env = offline_env(cached, "out")
        args = ("run", "--standalone", "--max-stale", "1s")
        with running(env, *args, log_path=cached.tmp / "edge.log") as agent:
            agent.wait_for("agent_started")
            status, body = agent.health()
            assert status == 503
            assert "--max-stale" in body["reason"]
            assert read_json(cached.tmp / "out" / "edge" / "a.json") == {"v": 1}
            assert Http(agent.port).get("/v1/configs/edge/a").json["value"] == {"v": 1}
            assert b"llmcm_agent_staleness_seconds" in agent.health("/metrics")[1]

    def test_read_api_rejects_bad_paths(self, cached: Setup) -> None:
        env = offline_env(cached, "out")
        with running(env, "run", "--standalone", log_path=cached.tmp / "edge.log") as agent:
            agent.wait_for("agent_started")
            local = Http(agent.port)
            reply = local.get("/v1/configs/edge/..%2f..%2fetc")
            assert reply.status == 400
            assert reply.content_type == "application/problem+json"
            assert local.get("/v1/configs/other/a").status == 404

    def test_run_needs_standalone(self, tmp_path: Path) -> None:
        done = subprocess.run(
            [*AGENT_CMD, "run"], capture_output=True, text=True, env=agent_env(), timeout=30
        )
        assert done.returncode == 2
        assert "--standalone" in done.stderr
