"""The llm-config-server commands and its configuration, run as a user would."""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
from pathlib import Path

import pytest

from server.config import ServerConfig
from server.storage.migrations import SQLITE_MIGRATIONS
from shared.errors import InvalidInput
from tests.support import REPO, SERVER_CMD, ServerProcess, free_port

VERSIONS = [v for v, _ in SQLITE_MIGRATIONS]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SERVER_CMD, *args], cwd=REPO, capture_output=True, text=True, timeout=60)


class TestInit:
    def test_prints_token_on_its_own_line(self, tmp_path: Path) -> None:
        """Human output puts the token alone on a line; the store file is private (0600)."""
        out = run("init", "--data", str(tmp_path / "d"))
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        tokens = [line for line in lines if line.startswith("lcm_")]
        assert len(tokens) == 1
        assert tokens[0].strip() == tokens[0]
        assert (tmp_path / "d" / "llmcm.db").stat().st_mode & 0o777 == 0o600

    def test_json_output_and_second_init_refused(self, tmp_path: Path) -> None:
        """--json prints tenant_id and token; a second init of the same store fails and changes nothing."""
        first = run("init", "--data", str(tmp_path), "--json")
        info = json.loads(first.stdout)
        assert set(info) == {"tenant_id", "token"}
        assert info["token"].startswith("lcm_")
        again = run("init", "--data", str(tmp_path), "--json")
        assert again.returncode == 1
        assert "already initialized" in again.stderr
        with sqlite3.connect(tmp_path / "llmcm.db") as db:
            assert db.execute("SELECT COUNT(*) FROM tenants").fetchone() == (1,)

    def test_token_is_stored_only_hashed(self, tmp_path: Path) -> None:
        """The token printed by init appears nowhere in the database files."""
        token = json.loads(run("init", "--data", str(tmp_path), "--json").stdout)["token"]
        for f in tmp_path.iterdir():
            assert token.encode() not in f.read_bytes(), f.name


class TestMigrate:
    def test_migrate_is_idempotent(self, tmp_path: Path) -> None:
        """migrate creates the schema once; running it again is a no-op that succeeds."""
        url = f"sqlite:///{tmp_path / 'm.db'}"
        for _ in range(2):
            out = run("migrate", "--storage", url)
            assert out.returncode == 0, out.stderr
        with sqlite3.connect(tmp_path / "m.db") as db:
            assert db.execute("SELECT version FROM schema_migrations").fetchall() == [(v,) for v in VERSIONS]

    def test_reports_what_it_applied(self, tmp_path: Path) -> None:
        """On a new store migrate lists the versions it applied; on a current one it names the version."""
        url = f"sqlite:///{tmp_path / 'm.db'}"
        first = run("migrate", "--storage", url)
        assert first.returncode == 0, first.stderr
        assert first.stdout.strip() == f"applied migrations: {', '.join(map(str, VERSIONS))}"
        second = run("migrate", "--storage", url)
        assert second.returncode == 0, second.stderr
        assert second.stdout.strip() == f"schema is up to date (version {VERSIONS[-1]})"

    def test_init_migrates_on_its_own(self, tmp_path: Path) -> None:
        """init leaves the schema current, so a later migrate has nothing to apply."""
        assert run("init", "--data", str(tmp_path), "--json").returncode == 0
        out = run("migrate", "--data", str(tmp_path))
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == f"schema is up to date (version {VERSIONS[-1]})"

    def test_unsupported_storage_url_is_a_clear_error(self, tmp_path: Path) -> None:
        """An unknown storage scheme fails with one line naming the scheme."""
        out = run("migrate", "--storage", "mysql://x")
        assert out.returncode == 1
        assert "mysql" in out.stderr
        assert "Traceback" not in out.stderr


class TestServe:
    def test_port_in_use_is_one_line(self, tmp_path: Path) -> None:
        """serve on a port another process holds exits 1 with one line naming the address, no traceback."""
        assert run("init", "--data", str(tmp_path), "--json").returncode == 0
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            port = busy.getsockname()[1]
            out = run("serve", "--data", str(tmp_path), "--host", "127.0.0.1", "--port", str(port))
        assert out.returncode == 1
        assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in out.stderr
        assert "Traceback" not in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr

    def test_uninitialized_store_is_refused(self, tmp_path: Path) -> None:
        """serve on a data dir init never ran on exits 1 and says to run init, instead of serving nothing."""
        data = tmp_path / "never-initialized"
        out = run("serve", "--data", str(data), "--port", str(free_port()))
        assert out.returncode == 1
        assert f"no tenant in the store at {data}" in out.stderr
        assert f"run 'llm-config-server init --data {data}' first" in out.stderr
        assert "Traceback" not in out.stderr


class TestServerConfig:
    def test_precedence_defaults_file_env_flags(self, tmp_path: Path) -> None:
        """Flags beat env vars, env vars beat the file, the file beats defaults."""
        cfg = tmp_path / "server.toml"
        cfg.write_text('[server]\nport = 9001\nhost = "127.0.0.2"\nlog_level = "debug"\n')
        env = {"LLMCM_PORT": "9002", "LLMCM_LOG_LEVEL": "warning"}
        loaded = ServerConfig.load(flags={"port": 9003}, environ=env, config_file=str(cfg))
        assert (loaded.port, loaded.host, loaded.log_level) == (9003, "127.0.0.2", "warning")
        assert ServerConfig.load(environ={}).port == 8080

    def test_storage_defaults_to_sqlite_in_data_dir(self, tmp_path: Path) -> None:
        """Without --storage the store is llmcm.db inside the data dir; LLMCM_STORAGE overrides it."""
        loaded = ServerConfig.load(flags={"data_dir": str(tmp_path)}, environ={})
        assert loaded.storage_url == f"sqlite:///{tmp_path.resolve() / 'llmcm.db'}"
        env = {"LLMCM_STORAGE": "sqlite:////x/y.db"}
        assert ServerConfig.load(environ=env).storage_url == "sqlite:////x/y.db"

    @pytest.mark.parametrize("env", [{"LLMCM_PORT": "eighty"}, {"LLMCM_LOG_LEVEL": "loud"}])
    def test_bad_values_are_named(self, env: dict[str, str]) -> None:
        """A bad setting is refused with its name in the message."""
        with pytest.raises(InvalidInput, match=next(iter(env)).removeprefix("LLMCM_").lower()):
            ServerConfig.load(environ=env)

    def test_config_is_frozen(self) -> None:
        """The configuration can't be changed after it is built."""
        loaded = ServerConfig.load(environ={})
        with pytest.raises(AttributeError):
            loaded.port = 1  # type: ignore[misc]


class TestFailClosedAudit:
    def test_write_fails_when_audit_cannot_be_written(self, fresh_server: ServerProcess) -> None:
        """If SQLite refuses the audit insert, the write is refused too and nothing is stored."""
        http = fresh_server.admin
        assert http.put("/v1/configs/audit/fc/k?env=global", {"value": {"v": 1}}).status == 201
        fresh_server.stop()
        with sqlite3.connect(fresh_server.data_dir / "llmcm.db") as db:
            db.execute(
                "CREATE TRIGGER no_audit BEFORE INSERT ON audit_log "
                "BEGIN SELECT RAISE(ABORT, 'audit storage unavailable'); END"
            )
        fresh_server.start()
        reply = http.put("/v1/configs/audit/fc/k?env=global", {"value": {"v": 2}})
        assert reply.status == 500
        assert reply.json["code"] == "audit_write_failed"
        current = http.get("/v1/configs/audit/fc/k?env=global").json
        assert current["value"] == {"v": 1}
        assert current["version"] == 1


class TestMasterKey:
    def test_serve_refuses_to_replace_a_lost_master_key(self, fresh_server: ServerProcess) -> None:
        """With secrets stored and master.key gone, serve exits with one line instead of making a new key."""
        reply = fresh_server.admin.put("/v1/secrets/api-keys/x", {"value": "v"})
        assert reply.status == 201
        fresh_server.stop()
        (fresh_server.data_dir / "master.key").unlink()
        out = run("serve", "--data", str(fresh_server.data_dir), "--port", str(fresh_server.port))
        assert out.returncode == 1
        assert "master key file" in out.stderr
        assert "Traceback" not in out.stderr
        assert not (fresh_server.data_dir / "master.key").exists()


class TestGrpcEngine:
    """The server picks gRPC's I/O engine before grpc is imported; an operator's choice wins."""

    PROBE = """
import asyncio, os, server, grpc
async def main():
    listener = grpc.aio.server()  # the core reads its settings here
    listener.add_insecure_port("127.0.0.1:0")
    await listener.start()
    await listener.stop(None)
asyncio.run(main())
print(os.environ.get("GRPC_EXPERIMENTS"))
"""

    def _probe(self, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        import os
        import sys

        clean = {k: v for k, v in os.environ.items() if k != "GRPC_EXPERIMENTS"}
        return subprocess.run(
            [sys.executable, "-c", self.PROBE],
            cwd=REPO,
            env={**clean, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )

    def test_default_is_set_and_known_to_grpc(self) -> None:
        from server import GRPC_EXPERIMENTS

        out = self._probe({})
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == GRPC_EXPERIMENTS
        assert "Unknown experiment" not in out.stderr  # grpc knows every name we set

    def test_operator_setting_wins(self) -> None:
        out = self._probe({"GRPC_EXPERIMENTS": "event_engine_listener"})
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "event_engine_listener"
