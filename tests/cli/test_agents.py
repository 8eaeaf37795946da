"""``llm-config agents`` and ``llm-config rollout status`` against a real server."""

from __future__ import annotations

from typing import Any

from tests.cli.conftest import Cli
from tests.server.api.helpers import cfg, ok, token
from tests.support import Http, ServerProcess


def seed(server: ServerProcess, tenant: dict[str, str]) -> None:
    """Three revisions in namespace shop and three agents: one current, one behind, one failed."""
    admin = server.http(tenant["token"])
    for n in range(3):
        ok(admin.put(cfg("shop", "k", "production"), {"value": {"n": n}}), 201 if n == 0 else 200)
    agent = Http(server.port, token(admin, "agents", ["service-account"], ["shop"])["token"])
    reports: list[dict[str, Any]] = [
        {"agent_id": "web-1", "applied_revision": 3, "state": "applied"},
        {"agent_id": "web-2", "applied_revision": 1, "state": "applied"},
        {
            "agent_id": "web-3",
            "applied_revision": 3,
            "state": "check_failed",
            "last_error": "nginx -t exited 1",
        },
    ]
    for report in reports:
        ok(agent.post("/v1/agents/status", {"namespaces": ["shop"], "environment": "production", **report}))


class TestAgents:
    def test_table_and_json(self, cli: Cli, server: ServerProcess, tenant: dict[str, str]) -> None:
        """`agents` prints one row per agent; --json prints the server's answer."""
        seed(server, tenant)
        shown = cli("agents")
        assert shown.code == 0, shown.err
        header, *rows = shown.out.splitlines()
        assert header.split()[:5] == ["AGENT", "ENVIRONMENT", "NAMESPACES", "REVISION", "STATE"]
        assert [row.split()[:5] for row in rows] == [
            ["web-1", "production", "shop", "3", "applied"],
            ["web-2", "production", "shop", "1", "applied"],
            ["web-3", "production", "shop", "3", "check_failed"],
        ]
        assert rows[2].endswith("nginx -t exited 1")
        as_json = cli("agents", "--json", "--env", "prod").json
        assert [a["agent_id"] for a in as_json["agents"]] == ["web-1", "web-2", "web-3"]

    def test_none_yet(self, cli: Cli) -> None:
        """With no report the command says so."""
        shown = cli("agents")
        assert (shown.code, shown.out.strip()) == (0, "no agent has reported yet")

    def test_developer_is_refused(self, cli: Cli, server: ServerProcess, tenant: dict[str, str]) -> None:
        """A developer token gets exit 5 and one error line."""
        developer = token(server.http(tenant["token"]), "dev", ["developer"])["token"]
        refused = cli.with_token(developer)("agents")
        assert refused.code == 5
        assert refused.err_lines[0].startswith("error: no role of this token (developer) grants audit:read")


class TestRolloutStatus:
    def test_summary_and_groups(self, cli: Cli, server: ServerProcess, tenant: dict[str, str]) -> None:
        """`rollout status --revision 2` counts applied, behind and failed, then lists each group."""
        seed(server, tenant)
        shown = cli("rollout", "status", "--revision", "2")
        assert shown.code == 0, shown.err
        lines = shown.out.splitlines()
        assert lines[0] == "revision 2 (current 3): 1 applied, 1 behind, 1 failed of 3 agents"
        assert "failed:" in lines and "behind:" in lines and "applied:" in lines
        assert lines.index("failed:") < lines.index("behind:") < lines.index("applied:")
        assert cli("rollout", "status", "-r", "3", "--json").json["counts"] == {
            "applied": 1,
            "behind": 1,
            "failed": 1,
        }

    def test_revision_is_required(self, cli: Cli) -> None:
        """Without --revision it is a usage error (exit 2); a future revision is exit 1 with the reason."""
        assert cli("rollout", "status").code == 2
        future = cli("rollout", "status", "--revision", "99")
        assert future.code == 1
        assert "revision 99 does not exist yet" in future.err
