"""The config commands of ``llm-config`` against a real server: seed syntax, input, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.conftest import Cli
from tests.support import Http, ServerProcess

NS, KEY = "llm-gateway/routing", "primary-model"
MODEL = {"provider": "openai", "model": "gpt-4o", "temperature": 0.2}


def put(server: ServerProcess, token: str, value: dict[str, object], env: str = "global") -> None:
    reply = Http(server.port, token).put(f"/v1/configs/{NS}/{KEY}?env={env}", {"value": value})
    assert reply.status in (200, 201), reply.body


class TestSeedCommands:
    def test_set_then_get_as_written(self, cli: Cli, tmp_path: Path) -> None:
        """`set ... --file config.json --env production` then `get ... --env production` round-trips."""
        (tmp_path / "config.json").write_text(json.dumps(MODEL))
        wrote = cli("set", NS, KEY, "--file", "config.json", "--env", "production", cwd=tmp_path)
        assert wrote.code == 0, wrote.err
        assert "version 1, revision" in wrote.out
        got = cli("get", "llm-gateway/routing", "primary-model", "--env", "production")
        assert got.code == 0, got.err
        assert json.loads(got.out[got.out.index("{") :]) == MODEL

    def test_list_with_glob(self, cli: Cli, server: ServerProcess, tenant: dict[str, str]) -> None:
        """`list 'llm-gateway/*' --env production` shows the entry in a table."""
        put(server, tenant["token"], MODEL, "production")
        listed = cli("list", "llm-gateway/*", "--env", "production")
        assert listed.code == 0, listed.err
        header, row = listed.out.splitlines()
        assert header.split()[:3] == ["NAMESPACE", "KEY", "VERSION"]
        assert row.split()[:3] == [NS, KEY, "1"]

    def test_rollback_to_version_4(self, cli: Cli, server: ServerProcess, tenant: dict[str, str]) -> None:
        """`rollback ... --version 4` restores version 4's value as a new version."""
        for n in range(1, 6):
            put(server, tenant["token"], {"provider": "openai", "model": f"m{n}"})
        rolled = cli("rollback", "llm-gateway/routing", "primary-model", "--version", "4")
        assert rolled.code == 0, rolled.err
        assert "to version 4: now version 6" in rolled.out
        got = cli("get", NS, KEY, "--json").json
        assert (got["version"], got["value"]["model"], got["change_type"]) == (6, "m4", "rollback")


class TestSet:
    def test_from_stdin(self, cli: Cli) -> None:
        """With neither --file nor --value the value is read from stdin."""
        assert cli("set", NS, KEY, stdin=json.dumps(MODEL)).code == 0
        assert cli("get", NS, KEY, "--json").json["value"] == MODEL

    def test_from_file_dash(self, cli: Cli) -> None:
        """`--file -` reads stdin too, and --message lands in the history."""
        assert cli("set", NS, KEY, "--file", "-", "-m", "first cut", stdin=json.dumps(MODEL)).code == 0
        assert cli("history", NS, KEY, "--json").json["versions"][0]["message"] == "first cut"

    def test_from_value(self, cli: Cli) -> None:
        """--value takes the JSON object from the command line; --json prints the write result."""
        wrote = cli("set", NS, KEY, "--value", '{"a": {"b": 1}}', "--env", "dev", "--json")
        assert wrote.code == 0, wrote.err
        assert (wrote.json["environment"], wrote.json["version"]) == ("development", 1)

    def test_not_an_object(self, cli: Cli) -> None:
        """A JSON array is refused before any request, with exit 1 and one line."""
        bad = cli("set", NS, KEY, "--value", "[1, 2]")
        assert bad.code == 1
        assert bad.err_lines == ["error: --value must hold a JSON object, not an array"]

    def test_expect_version_conflict(self, cli: Cli) -> None:
        """A stale --expect-version gives exit 4 and one line naming both versions."""
        assert cli("set", NS, KEY, "--value", '{"a": 1}', "--expect-version", "0").code == 0
        stale = cli("set", NS, KEY, "--value", '{"a": 2}', "--expect-version", "0")
        assert stale.code == 4
        assert len(stale.err_lines) == 1
        assert stale.err.startswith("error: version conflict") and "current version is 1" in stale.err


class TestErrors:
    def test_missing_key_exit_3(self, cli: Cli) -> None:
        """get of a key that does not exist exits 3 with one error line."""
        missing = cli("get", NS, "nope", "--env", "production")
        assert missing.code == 3
        assert missing.err_lines == ["error: config llm-gateway/routing/nope not found in production"]

    def test_bad_token_exit_5(self, cli: Cli) -> None:
        """An unknown token exits 5 and the token never appears in the output."""
        bad = cli.with_token("lcm_not-a-real-token")("get", NS, KEY)
        assert bad.code == 5
        assert bad.err_lines == ["error: invalid token"]

    def test_unreachable_exit_6(self, cli: Cli, closed_url: str) -> None:
        """A server that refuses connections exits 6 naming the URL, never the token."""
        down = cli.with_server(closed_url)("get", NS, KEY)
        assert down.code == 6
        assert down.err_lines == [f"error: cannot reach server {closed_url}: connection refused"]
        assert cli.token is not None and cli.token not in down.err

    def test_invalid_namespace_is_usage_error(self, cli: Cli) -> None:
        """A namespace with '..' is rejected locally as a usage error (exit 2)."""
        bad = cli("get", "../etc", KEY)
        assert bad.code == 2
        assert "invalid namespace" in bad.err


class TestResolve:
    def test_provenance_table(self, cli: Cli, server: ServerProcess, tenant: dict[str, str]) -> None:
        """resolve merges the chain and names the environment of every leaf."""
        put(server, tenant["token"], {"model": "base", "limits": {"rpm": 10, "tpm": 100}}, "global")
        put(server, tenant["token"], {"model": "prod", "limits": {"rpm": 50}}, "production")
        resolved = cli("resolve", NS, KEY, "--env", "production")
        assert resolved.code == 0, resolved.err
        rows = dict(line.split() for line in resolved.out.split("POINTER")[1].splitlines()[1:])
        assert rows == {"/model": "production", "/limits/rpm": "production", "/limits/tpm": "global"}
        assert "global v1 -> production v1" in resolved.out


class TestLifecycle:
    def test_history_diff_rollback_delete(self, cli: Cli) -> None:
        """history lists versions, diff shows the change, rollback restores, delete needs --yes."""
        for model in ("a", "b"):
            assert cli("set", NS, KEY, "--value", json.dumps({"model": model}), "-e", "staging").code == 0
        history = cli("history", NS, KEY, "-e", "staging")
        assert [line.split()[0] for line in history.out.splitlines()] == ["VERSION", "2", "1"]
        diff = cli("diff", NS, KEY, "-e", "staging")
        assert diff.out.splitlines()[1:] == ['~ /model: "b"']
        assert cli("rollback", NS, KEY, "--version", "1", "-e", "staging").code == 0
        assert cli("get", NS, KEY, "-e", "staging", "--json").json["value"] == {"model": "a"}
        assert cli("delete", NS, KEY, "-e", "staging").code == 2  # no terminal, no --yes
        deleted = cli("delete", NS, KEY, "-e", "staging", "--yes", "--expect-version", "3")
        assert deleted.code == 0, deleted.err
        assert cli("get", NS, KEY, "-e", "staging").code == 3
        assert cli("get", NS, KEY, "-e", "staging", "--version", "1", "--json").json["value"] == {
            "model": "a"
        }
