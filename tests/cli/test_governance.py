"""Schemas, tenants, tokens, audit, policy and --json output of ``llm-config``."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from tests.cli.conftest import Cli
from tests.support import ServerProcess

GOOD = {"provider": "anthropic", "model": "claude-sonnet", "temperature": 0.3}
BAD = {"provider": "nobody", "model": "", "temperature": 7}


def write(tmp_path: Path, name: str, value: object) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(value))
    return str(path)


class TestSchemaValidateOffline:
    def test_valid(self, home: Path, tmp_path: Path) -> None:
        """A value matching a built-in schema exits 0 with no server configured at all."""
        ok = Cli(home)("schema", "validate", write(tmp_path, "good.json", GOOD), "--schema", "model-endpoint")
        assert ok.code == 0, ok.err
        assert "is valid against schema model-endpoint" in ok.out

    def test_invalid_lists_every_violation(self, home: Path, tmp_path: Path) -> None:
        """An invalid value exits 1 and lists each violation as 'pointer: message'."""
        bad = Cli(home)("schema", "validate", write(tmp_path, "bad.json", BAD), "--schema", "model-endpoint")
        assert bad.code == 1
        first, *violations = bad.err_lines
        assert first.startswith("error: ") and "in 3 place(s)" in first
        assert [v.split(":")[0].strip() for v in violations] == ["/model", "/provider", "/temperature"]

    def test_schema_file(self, home: Path, tmp_path: Path) -> None:
        """--schema-file checks against a local JSON Schema; --json reports the violations."""
        schema = write(tmp_path, "s.json", {"type": "object", "required": ["limit"]})
        checked = Cli(home)(
            "schema", "validate", write(tmp_path, "v.json", {}), "--schema-file", schema, "--json"
        )
        assert checked.code == 1
        assert checked.json["valid"] is False
        assert [v["message"] for v in checked.json["violations"]] == ["'limit' is a required property"]


class TestSchemaBinding:
    def test_bound_schema_rejects_a_write(self, cli: Cli, tmp_path: Path) -> None:
        """After schema put + bind, a violating set exits 1 listing every violation."""
        schema = {
            "type": "object",
            "required": ["rpm"],
            "properties": {"rpm": {"type": "integer", "minimum": 1}},
        }
        assert cli("schema", "put", "rate-limit", "--file", write(tmp_path, "s.json", schema)).code == 0
        bound = cli("schema", "bind", "rate-limit", "--namespace", "limits/*")
        assert bound.code == 0, bound.err
        assert "bound schema rate-limit to limits/*" in bound.out
        rejected = cli("set", "limits/gateway", "default", "--value", '{"rpm": 0, "burst": "x"}')
        assert rejected.code == 1
        assert rejected.err_lines[0].startswith("error: limits/gateway/default would violate its schema")
        assert rejected.err_lines[1:] == [
            "  /rpm: is less than the minimum of 1 (schema rate-limit)"
            " [resolved in global, development, staging, production, edge]"
        ]
        assert cli("set", "limits/gateway", "default", "--value", '{"rpm": 5}').code == 0


class TestTenantsAndTokens:
    def test_tenant_create_prints_id_and_admin_token(self, root_cli: Cli, tmp_path: Path) -> None:
        """tenant create --admin-token prints the tenant id and a token that works."""
        name = f"cli-{tmp_path.name[-20:]}".replace("_", "-")
        created = root_cli("tenant", "create", name, "--admin-token")
        assert created.code == 0, created.err
        lines = created.out.splitlines()
        assert lines[0].startswith(f"created tenant {name} (id ")
        who = root_cli.with_token(lines[-1])("whoami", "--json")
        assert who.json["roles"] == ["tenant-admin"] and who.json["tenant_name"] == name
        assert root_cli("tenant", "create", name).code == 4
        tenants = root_cli("tenant", "list", "--json").json["tenants"]
        assert name in [t["name"] for t in tenants]

    def test_token_create_then_revoke(self, cli: Cli) -> None:
        """A created token works until token revoke; then it gets exit 5."""
        created = cli("token", "create", "--name", "ci", "--role", "operator", "--namespace", "llm-gateway")
        assert created.code == 0, created.err
        token = created.out.splitlines()[-1]
        token_id = created.out.split()[2]
        assert token.startswith("lcm_") and token_id.startswith("tok_")
        ci = cli.with_token(token)
        assert ci("list", "--env", "production").code == 0
        listed = cli("token", "list")
        assert any(line.split()[:2] == [token_id, "ci"] for line in listed.out.splitlines())
        assert cli("token", "revoke", token_id).code == 0
        revoked = ci("list")
        assert revoked.code == 5
        assert revoked.err_lines == ["error: token has been revoked"]

    def test_developer_cannot_create_tenant(self, cli: Cli) -> None:
        """A tenant-admin asking for tenant create is denied with exit 5 and the rule."""
        denied = cli("tenant", "create", "nope")
        assert denied.code == 5
        assert denied.err.startswith("error: ") and "(rule deny:default)" in denied.err


class TestAuditAndPolicy:
    def test_audit_verify_ok(self, cli: Cli) -> None:
        """audit verify exits 0 on an intact chain and says how many records it checked."""
        assert cli("set", "a", "b", "--value", "{}").code == 0
        verified = cli("audit", "verify")
        assert verified.code == 0, verified.err
        assert "ok: 1 records verified" in verified.out

    def test_audit_verify_tampered(self, cli: Cli, server: ServerProcess, tenant: dict[str, str]) -> None:
        """An edited audit record makes verify exit 1 with one line naming its seq."""
        assert cli("set", "a", "b", "--value", "{}").code == 0
        with sqlite3.connect(server.data_dir / "llmcm.db") as db:
            db.execute("UPDATE audit_log SET result = 'denied' WHERE chain = ? AND seq = 1", (tenant["id"],))
        broken = cli("audit", "verify")
        assert broken.code == 1
        assert len(broken.err_lines) == 1
        assert "is broken at record 1: record content does not match its hash" in broken.err

    def test_audit_list_filters(self, cli: Cli) -> None:
        """audit list --action shows only that action, in a table."""
        assert cli("set", "a", "b", "--value", "{}").code == 0
        listed = cli("audit", "list", "--action", "config:put")
        rows = listed.out.splitlines()
        assert rows[0].split() == ["SEQ", "TIME", "ACTOR", "ACTION", "RESOURCE", "RESULT"]
        assert [r.split()[4] for r in rows[1:]] == ["config:put"]

    def test_policy_explain_developer(self, cli: Cli) -> None:
        """A developer token explaining config:write in production is denied by deny:default."""
        token = cli("token", "create", "--name", "dev", "--role", "developer").out.splitlines()[-1]
        explained = cli.with_token(token)(
            "policy", "explain", "--action", "config:write", "--env", "production"
        )
        assert explained.code == 0, explained.err
        lines = explained.out.splitlines()
        assert lines[0].startswith("denied: config:write in production for dev")
        assert lines[1] == "rule: deny:default"
        assert lines[2] == "reason: no role of this token (developer) grants config:write in production"


class TestJsonOutput:
    def test_every_read_command_prints_json(self, cli: Cli) -> None:
        """--json output of every read command parses as JSON."""
        for model in ("a", "b"):
            assert cli("set", "app", "cfg", "--value", json.dumps({"model": model})).code == 0
        reads = [
            ["get", "app", "cfg"],
            ["get", "app", "cfg", "--version", "1"],
            ["resolve", "app", "cfg", "--env", "production"],
            ["list"],
            ["list", "app", "--resolve", "--env", "staging"],
            ["history", "app", "cfg"],
            ["diff", "app", "cfg", "--from", "1", "--to", "2"],
            ["whoami"],
            ["token", "list"],
            ["schema", "list"],
            ["schema", "get", "prompt-template"],
            ["schema", "bindings"],
            ["audit", "list"],
            ["audit", "verify"],
            ["policy", "explain", "--action", "config:read"],
            ["settings", "get"],
        ]
        for args in reads:
            ran = cli(*args, "--json")
            assert ran.code == 0, (args, ran.err)
            assert isinstance(ran.json, dict), args

    def test_help_documents_exit_codes(self, home: Path) -> None:
        """--help lists the exit codes scripts rely on."""
        helped = Cli(home)("--help")
        assert helped.code == 0
        for line in ("3  not found", "4  conflict", "5  authentication", "6  server unreachable"):
            assert line in helped.out
