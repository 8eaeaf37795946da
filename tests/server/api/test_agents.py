"""Agent status over REST: POST /v1/agents/status, GET /v1/agents, GET /v1/agents/rollout."""

from __future__ import annotations

from typing import Any

from tests.server.api.conftest import MakeToken
from tests.server.api.helpers import cfg, ok, problem
from tests.support import Http, ServerProcess


def status(agent_id: str, revision: int, state: str = "applied", **extra: Any) -> dict[str, Any]:
    return {
        "agent_id": agent_id,
        "namespaces": ["shop"],
        "environment": "production",
        "applied_revision": revision,
        "state": state,
        **extra,
    }


def write_revisions(tadmin: Http, count: int) -> None:
    for n in range(count):
        ok(tadmin.put(cfg("shop", "k", "production"), {"value": {"n": n}}), 201 if n == 0 else 200)


class TestReport:
    def test_service_account_reports_operator_lists(self, tadmin: Http, make_token: MakeToken) -> None:
        """An agent's service-account token reports; an operator sees the report in GET /v1/agents."""
        write_revisions(tadmin, 2)
        agent, _ = make_token(["service-account"], ["shop"])
        stored = ok(agent.post("/v1/agents/status", status("web-7f9c", 2)))
        assert stored["agent_id"] == "web-7f9c" and stored["applied_revision"] == 2
        assert stored["reported_at"].endswith("Z")
        operator, _ = make_token(["operator"])
        assert ok(operator.get("/v1/agents"))["agents"] == [stored]
        assert ok(tadmin.get("/v1/agents?env=staging"))["agents"] == []

    def test_refusals(self, tadmin: Http, make_token: MakeToken, server: ServerProcess) -> None:
        """No token is 401; another namespace is 403; a developer can't list; bad bodies are 400."""
        agent, _ = make_token(["service-account"], ["shop"])
        developer, _ = make_token(["developer"])
        problem(server.http().post("/v1/agents/status", status("a", 0)), 401)
        denied = problem(agent.post("/v1/agents/status", {**status("a", 0), "namespaces": ["billing"]}), 403)
        assert denied["rule"] == "deny:namespace-scope"
        problem(developer.get("/v1/agents"), 403)
        problem(developer.get("/v1/agents/rollout?revision=1"), 403)
        for body, fragment in (
            ({**status("a", 0), "colour": "red"}, "unknown fields in the report: colour"),
            ({**status("a", 0), "state": "ok"}, "'state' must be one of"),
            ({**status("a", 0), "applied_revision": 10**6}, "ahead of the tenant's current revision"),
            ({k: v for k, v in status("a", 0).items() if k != "agent_id"}, "'agent_id' is required"),
        ):
            assert fragment in problem(agent.post("/v1/agents/status", body), 400)["detail"]
        assert "JSON object" in problem(agent.post("/v1/agents/status", [1]), 400)["detail"]
        assert ok(tadmin.get("/v1/agents"))["agents"] == []

    def test_last_error_never_shows_a_token(self, tadmin: Http, make_token: MakeToken) -> None:
        """A token pasted into last_error is redacted before it is stored or shown."""
        agent, record = make_token(["service-account"], ["shop"])
        error = f"GET failed: Authorization: Bearer {record['token']}"
        ok(agent.post("/v1/agents/status", status("leaky", 0, "error", last_error=error)))
        listed = tadmin.get("/v1/agents")
        assert record["token"].encode() not in listed.body
        assert ok(listed)["agents"][0]["last_error"].startswith("GET failed: Authorization: Bearer")


class TestRollout:
    def test_counts_and_lists(self, tadmin: Http, make_token: MakeToken) -> None:
        """rollout?revision=R sorts agents into applied, behind and failed."""
        write_revisions(tadmin, 3)
        agent, _ = make_token(["service-account"], ["shop"])
        for body in (
            status("a", 3),
            status("b", 1),
            status("c", 3, "check_failed", last_error="nginx -t failed"),
        ):
            ok(agent.post("/v1/agents/status", body))
        result = ok(tadmin.get("/v1/agents/rollout?revision=2"))
        assert result["counts"] == {"applied": 1, "behind": 1, "failed": 1}
        assert [x["agent_id"] for x in (*result["applied"], *result["behind"], *result["failed"])] == [
            "a",
            "b",
            "c",
        ]
        assert result["failed"][0]["last_error"] == "nginx -t failed"

    def test_revision_is_required_and_checked(self, tadmin: Http) -> None:
        """A missing, malformed or future revision is 400 naming it."""
        assert "'revision' is required" in problem(tadmin.get("/v1/agents/rollout"), 400)["detail"]
        assert "'revision'" in problem(tadmin.get("/v1/agents/rollout?revision=abc"), 400)["detail"]
        assert "does not exist yet" in problem(tadmin.get("/v1/agents/rollout?revision=50"), 400)["detail"]


class TestIsolation:
    def test_tenants_see_only_their_agents(
        self, server: ServerProcess, tadmin: Http, make_token: MakeToken
    ) -> None:
        """The same agent id in two tenants is two agents; neither tenant's admin sees the other's."""
        other = ok(
            server.admin.post("/v1/tenants", {"name": f"agents-b-{server.port}", "admin_token": True}), 201
        )
        other_admin = server.http(other["admin_token"]["token"])
        write_revisions(tadmin, 1)
        ok(tadmin.post("/v1/agents/status", status("shared-name", 1)))
        ok(other_admin.post("/v1/agents/status", status("shared-name", 0, "starting")))
        assert [a["state"] for a in ok(tadmin.get("/v1/agents"))["agents"]] == ["applied"]
        assert [a["state"] for a in ok(other_admin.get("/v1/agents"))["agents"]] == ["starting"]
        # A's revision 1 is no revision of B's
        assert (
            "current revision is 0"
            in problem(other_admin.get("/v1/agents/rollout?revision=1"), 400)["detail"]
        )
