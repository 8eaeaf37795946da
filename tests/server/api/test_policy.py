"""Policy over REST: what each role may do, default deny, deny rules, auditing and explain."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.server.api.conftest import MakeToken
from tests.server.api.helpers import audit_records, cfg, listed, ok, problem, token
from tests.support import Http

ENVS = ("global", "development", "staging", "production", "edge")
NS, KEY = "app/routing", "model"
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@pytest.fixture
def seeded(tadmin: Http) -> Http:
    """The entry NS/KEY written in every environment by the tenant-admin."""
    for env in ENVS:
        ok(tadmin.put(cfg(NS, KEY, env), {"value": {"env": env}}), 201)
    return tadmin


def read(http: Http, env: str, ns: str = NS) -> int:
    return http.get(cfg(ns, KEY, env)).status


def write(http: Http, env: str, ns: str = NS, value: dict[str, Any] | None = None) -> int:
    return http.put(cfg(ns, KEY, env), {"value": value or {"by": "test", "env": env}}).status


class TestDeveloper:
    """developer: read and write development, read staging and global, nothing in production."""

    @pytest.mark.parametrize(
        ("env", "status"), [("global", 200), ("development", 200), ("staging", 200), ("production", 403)]
    )
    def test_read(self, seeded: Http, make_token: MakeToken, env: str, status: int) -> None:
        """A developer reads global, development and staging but not production."""
        dev, _ = make_token(["developer"])
        assert read(dev, env) == status

    @pytest.mark.parametrize(
        ("env", "status"), [("development", 200), ("global", 403), ("staging", 403), ("production", 403)]
    )
    def test_write(self, seeded: Http, make_token: MakeToken, env: str, status: int) -> None:
        """A developer writes only development."""
        dev, _ = make_token(["developer"])
        assert write(dev, env) == status

    def test_denied_write_changes_nothing(self, seeded: Http, make_token: MakeToken) -> None:
        """A refused production write leaves the production value as it was."""
        dev, _ = make_token(["developer"])
        write(dev, "production")
        assert ok(seeded.get(cfg(NS, KEY, "production")))["version"] == 1

    def test_production_list_denied(self, seeded: Http, make_token: MakeToken) -> None:
        """A developer cannot list production."""
        dev, _ = make_token(["developer"])
        problem(dev.get("/v1/configs?env=production"), 403)

    def test_production_delete_denied(self, seeded: Http, make_token: MakeToken) -> None:
        """A developer cannot delete in production."""
        dev, _ = make_token(["developer"])
        problem(dev.delete(cfg(NS, KEY, "production")), 403)
        ok(seeded.get(cfg(NS, KEY, "production")))

    def test_production_resolve_denied(self, seeded: Http, make_token: MakeToken) -> None:
        """A developer cannot read production through resolve either."""
        dev, _ = make_token(["developer"])
        problem(dev.get(cfg(NS, KEY, "production", "resolve=true")), 403)

    def test_cannot_manage_tokens(self, make_token: MakeToken) -> None:
        """A developer cannot create tokens."""
        dev, _ = make_token(["developer"])
        problem(dev.post("/v1/tokens", {"name": "x", "roles": ["developer"]}), 403)


class TestServiceAccount:
    """service-account: read only, and only its listed namespaces."""

    @pytest.fixture
    def svc(self, seeded: Http, make_token: MakeToken) -> Http:
        for ns in ("svc-a", "svc-a/sub", "svc-ab", "other"):
            ok(seeded.put(cfg(ns, KEY, "production"), {"value": {"ns": ns}}), 201)
        client, _ = make_token(["service-account"], ["svc-a"])
        return client

    @pytest.mark.parametrize("ns", ["svc-a", "svc-a/sub"])
    def test_reads_listed_namespace(self, svc: Http, ns: str) -> None:
        """The listed namespace and its descendants are readable in production."""
        assert ok(svc.get(cfg(ns, KEY, "production")))["value"] == {"ns": ns}

    @pytest.mark.parametrize("ns", ["other", "svc-ab", NS])
    def test_other_namespace_denied(self, svc: Http, ns: str) -> None:
        """A namespace outside the list (even one sharing the prefix text) is 403 deny:namespace-scope."""
        assert problem(svc.get(cfg(ns, KEY, "production")), 403)["rule"] == "deny:namespace-scope"

    def test_cannot_write(self, svc: Http) -> None:
        """A service account cannot write, even in its own namespace."""
        assert write(svc, "production", "svc-a") == 403

    def test_list_only_shows_listed_namespaces(self, svc: Http) -> None:
        """A list shows only the entries of its namespaces."""
        assert sorted(i["namespace"] for i in listed(svc, "production")) == ["svc-a", "svc-a/sub"]

    def test_cannot_read_audit(self, svc: Http) -> None:
        """A service account cannot read the audit log."""
        problem(svc.get("/v1/audit"), 403)


class TestOperator:
    """operator: reads and writes configs everywhere, but does not administer the tenant."""

    @pytest.mark.parametrize("env", ENVS)
    def test_writes_every_environment(self, seeded: Http, make_token: MakeToken, env: str) -> None:
        """An operator writes every environment, production included."""
        client, _ = make_token(["operator"])
        assert write(client, env) == 200

    @pytest.mark.parametrize(
        ("method", "path", "body"),
        [
            ("POST", "/v1/tokens", {"name": "x", "roles": ["operator"]}),
            ("PUT", "/v1/settings", {"audit_reads": True}),
            ("PUT", "/v1/schemas/s1", {"schema": {"type": "object"}}),
            ("POST", "/v1/tenants", {"name": "nope"}),
        ],
        ids=["token", "settings", "schema", "tenant"],
    )
    def test_cannot_administer(self, make_token: MakeToken, method: str, path: str, body: Any) -> None:
        """An operator cannot manage tokens, settings, schemas or tenants."""
        client, _ = make_token(["operator"])
        problem(client.request(method, path, body), 403)


class TestDefaultDeny:
    """With no role granting an action, the default rule denies it."""

    def test_role_without_grants_is_denied(self, seeded: Http, make_token: MakeToken) -> None:
        """A token whose only role is pii-authorized cannot read anything: deny:default."""
        client, _ = make_token(["pii-authorized"])
        assert problem(client.get(cfg(NS, KEY, "global")), 403)["rule"] == "deny:default"

    def test_tenant_admin_cannot_manage_tenants(self, tadmin: Http) -> None:
        """A tenant-admin cannot list tenants."""
        assert problem(tadmin.get("/v1/tenants"), 403)["rule"] == "deny:default"

    def test_tenant_admin_cannot_create_global_admin(self, tadmin: Http) -> None:
        """A tenant-admin asking for a global-admin token is refused and no token is made."""
        before = ok(tadmin.get("/v1/tokens"))["tokens"]
        doc = problem(tadmin.post("/v1/tokens", {"name": "esc", "roles": ["global-admin"]}), 403)
        assert "global-admin" in doc["detail"]
        assert ok(tadmin.get("/v1/tokens"))["tokens"] == before

    def test_operator_cannot_create_global_admin(self, tadmin: Http, make_token: MakeToken) -> None:
        """Nobody below global-admin can mint one, including by mixing roles."""
        problem(tadmin.post("/v1/tokens", {"name": "esc", "roles": ["developer", "global-admin"]}), 403)

    def test_unknown_role_is_400(self, tadmin: Http) -> None:
        """A token with a role that does not exist is refused with 400."""
        problem(tadmin.post("/v1/tokens", {"name": "x", "roles": ["superuser"]}), 400)


def _window_excluding_now() -> dict[str, Any]:
    today = datetime.now(UTC).weekday()
    return {"days": [DAYS[(today + 3) % 7]], "start": "00:00", "end": "23:59"}


class TestChangeWindow:
    """A production change window outside now denies production writes, and only those."""

    @pytest.fixture
    def closed(self, seeded: Http) -> Http:
        ok(seeded.put("/v1/settings", {"change_window": _window_excluding_now()}))
        return seeded

    def test_production_write_denied(self, closed: Http) -> None:
        """A production write outside the window is 403 with rule deny:production-change-window."""
        doc = problem(closed.put(cfg(NS, KEY, "production"), {"value": {"x": 1}}), 403)
        assert doc["rule"] == "deny:production-change-window"
        assert ok(closed.get(cfg(NS, KEY, "production")))["value"] == {"env": "production"}

    def test_production_delete_denied(self, closed: Http) -> None:
        """A production delete outside the window is denied too."""
        doc = problem(closed.delete(cfg(NS, KEY, "production")), 403)
        assert doc["rule"] == "deny:production-change-window"

    def test_production_rollback_denied(self, closed: Http) -> None:
        """A production rollback outside the window is denied too."""
        reply = closed.post(f"/v1/configs/{NS}/{KEY}/rollback?env=production", {"version": 1})
        assert problem(reply, 403)["rule"] == "deny:production-change-window"

    def test_development_write_allowed(self, closed: Http) -> None:
        """Development writes are unaffected by the window."""
        assert write(closed, "development") == 200

    def test_production_read_allowed(self, closed: Http) -> None:
        """The window limits writes only."""
        ok(closed.get(cfg(NS, KEY, "production")))

    def test_window_applies_to_a_writer_allowed_before(self, seeded: Http) -> None:
        """A writer whose production write succeeded is denied once a closed window is set."""
        assert write(seeded, "production") == 200
        ok(seeded.put("/v1/settings", {"change_window": _window_excluding_now()}))
        assert write(seeded, "production", value={"again": 1}) == 403

    def test_window_reopens_when_cleared(self, closed: Http) -> None:
        """Setting change_window to null lifts the rule."""
        ok(closed.put("/v1/settings", {"change_window": None}))
        assert write(closed, "production") == 200

    @pytest.mark.parametrize(
        "window",
        [
            {"days": ["funday"], "start": "09:00", "end": "17:00"},
            {"days": ["mon"], "start": "9am", "end": "17:00"},
            {"days": ["mon"], "start": "09:00", "end": "09:00"},
            {"days": [], "start": "09:00", "end": "17:00"},
            "always",
        ],
        ids=["bad-day", "bad-time", "empty-window", "no-days", "not-object"],
    )
    def test_invalid_window_is_400(self, tadmin: Http, window: Any) -> None:
        """A malformed change window is refused with 400."""
        problem(tadmin.put("/v1/settings", {"change_window": window}), 400)


class TestRestricted:
    """Configs with classification restricted need the pii-authorized role to read or write."""

    @pytest.fixture
    def pii(self, make_token: MakeToken) -> Http:
        """An operator token with pii-authorized that wrote a restricted entry."""
        client, _ = make_token(["operator", "pii-authorized"])
        ok(
            client.put(
                cfg("users", "pii", "production"),
                {"value": {"email": "a@example.com"}, "metadata": {"classification": "restricted"}},
            ),
            201,
        )
        return client

    def test_pii_role_reads(self, pii: Http) -> None:
        """The pii-authorized token reads the restricted entry."""
        assert ok(pii.get(cfg("users", "pii", "production")))["value"] == {"email": "a@example.com"}

    def test_read_without_pii_denied(self, pii: Http, make_token: MakeToken) -> None:
        """An operator without pii-authorized gets 403 deny:restricted-classification."""
        op, _ = make_token(["operator"])
        doc = problem(op.get(cfg("users", "pii", "production")), 403)
        assert doc["rule"] == "deny:restricted-classification"
        assert "a@example.com" not in doc["detail"]

    def test_admin_without_pii_denied(self, pii: Http, tadmin: Http) -> None:
        """Even the tenant-admin needs pii-authorized to read it."""
        problem(tadmin.get(cfg("users", "pii", "production")), 403)

    @pytest.mark.parametrize("sub", ["history", "diff"])
    def test_history_and_diff_without_pii_denied(self, pii: Http, make_token: MakeToken, sub: str) -> None:
        """History and diff of a restricted entry are denied without pii-authorized."""
        op, _ = make_token(["operator"])
        problem(op.get(f"/v1/configs/users/pii/{sub}?env=production"), 403)

    def test_old_version_without_pii_denied(self, pii: Http, make_token: MakeToken) -> None:
        """Reading a stored version of a restricted entry is denied without pii-authorized."""
        op, _ = make_token(["operator"])
        problem(op.get(cfg("users", "pii", "production", "version=1")), 403)

    def test_resolve_without_pii_denied(self, pii: Http, make_token: MakeToken) -> None:
        """A resolved read that includes a restricted layer is denied without pii-authorized."""
        op, _ = make_token(["operator"])
        problem(op.get(cfg("users", "pii", "production", "resolve=true")), 403)

    def test_write_without_pii_denied(self, pii: Http, make_token: MakeToken) -> None:
        """Overwriting a restricted entry without pii-authorized is denied and changes nothing."""
        op, _ = make_token(["operator"])
        problem(op.put(cfg("users", "pii", "production"), {"value": {"email": "x"}}), 403)
        assert ok(pii.get(cfg("users", "pii", "production")))["version"] == 1

    def test_delete_without_pii_denied(self, pii: Http, make_token: MakeToken) -> None:
        """Deleting a restricted entry without pii-authorized is denied."""
        op, _ = make_token(["operator"])
        problem(op.delete(cfg("users", "pii", "production")), 403)

    def test_create_restricted_without_pii_denied(self, make_token: MakeToken) -> None:
        """Writing a new entry classified restricted needs pii-authorized."""
        op, _ = make_token(["operator"])
        reply = op.put(
            cfg("users", "new", "production"),
            {"value": {"a": 1}, "metadata": {"classification": "restricted"}},
        )
        assert problem(reply, 403)["rule"] == "deny:restricted-classification"

    def test_reclassified_entry_denies_earlier_reader(self, tadmin: Http, make_token: MakeToken) -> None:
        """An operator who read an entry is refused the same read once it is reclassified restricted."""
        op, _ = make_token(["operator"])
        pii, _ = make_token(["operator", "pii-authorized"])
        ok(pii.put(cfg("users", "later", "production"), {"value": {"email": "b@example.com"}}), 201)
        ok(op.get(cfg("users", "later", "production")))
        reclassify = {"value": {"email": "b@example.com"}, "metadata": {"classification": "restricted"}}
        ok(pii.put(cfg("users", "later", "production"), reclassify))
        problem(op.get(cfg("users", "later", "production")), 403)

    def test_list_hides_restricted_without_pii(self, pii: Http, make_token: MakeToken) -> None:
        """A list by a token without pii-authorized leaves the restricted entry out."""
        op, _ = make_token(["operator"])
        assert [i["key"] for i in listed(op, "production", "prefix=users")] == []
        assert [i["key"] for i in listed(pii, "production", "prefix=users")] == ["pii"]


class TestDenialAudit:
    """Every denial appends an audit record with the rule that decided."""

    @pytest.mark.parametrize(
        ("roles", "namespaces", "env", "ns", "rule"),
        [
            (["developer"], None, "production", NS, "deny:default"),
            (["service-account"], ["svc"], "production", NS, "deny:namespace-scope"),
        ],
        ids=["default", "namespace-scope"],
    )
    def test_denied_write_is_audited(
        self,
        tadmin: Http,
        make_token: MakeToken,
        roles: list[str],
        namespaces: list[str] | None,
        env: str,
        ns: str,
        rule: str,
    ) -> None:
        """GET /v1/audit?result=denied shows the denied request with actor, resource and rule."""
        client, record = make_token(roles, namespaces)
        problem(client.put(cfg(ns, KEY, env), {"value": {"a": 1}}), 403)
        denied = audit_records(tadmin, result="denied")
        mine = [r for r in denied if r["actor"] == f"token:{record['id']}"]
        assert len(mine) == 1
        assert mine[0]["action"] == "config:write"
        assert mine[0]["resource"] == f"config/{ns}/{KEY}@{env}"
        assert mine[0]["metadata"]["rule"] == rule

    def test_change_window_denial_is_audited(self, seeded: Http) -> None:
        """A change-window denial is in the audit log with its rule."""
        ok(seeded.put("/v1/settings", {"change_window": _window_excluding_now()}))
        problem(seeded.put(cfg(NS, KEY, "production"), {"value": {"x": 1}}), 403)
        rules = [r["metadata"].get("rule") for r in audit_records(seeded, result="denied")]
        assert "deny:production-change-window" in rules

    def test_denied_read_is_audited(self, seeded: Http, make_token: MakeToken) -> None:
        """A denied read is audited too (reads that succeed are not, by default)."""
        client, record = make_token(["developer"])
        problem(client.get(cfg(NS, KEY, "production")), 403)
        mine = [r for r in audit_records(seeded, result="denied") if r["actor"] == f"token:{record['id']}"]
        assert [r["action"] for r in mine] == ["config:read"]

    def test_escalation_attempt_is_audited(self, tadmin: Http) -> None:
        """A refused global-admin token request is audited."""
        problem(tadmin.post("/v1/tokens", {"name": "esc", "roles": ["global-admin"]}), 403)
        assert [r["action"] for r in audit_records(tadmin, result="denied")] == ["token:create"]


class TestExplain:
    """POST /v1/policy/explain says which rule decides."""

    @pytest.mark.parametrize(
        ("roles", "namespaces", "request_body", "allowed", "rule"),
        [
            (
                ["developer"],
                None,
                {"action": "config:write", "environment": "development"},
                True,
                "allow:role:developer",
            ),
            (
                ["developer"],
                None,
                {"action": "config:write", "environment": "production"},
                False,
                "deny:default",
            ),
            (["developer"], None, {"action": "config:read", "environment": "prod"}, False, "deny:default"),
            (
                ["operator"],
                None,
                {"action": "config:write", "environment": "production"},
                True,
                "allow:role:operator",
            ),
            (
                ["service-account"],
                ["svc"],
                {"action": "config:read", "namespace": "other"},
                False,
                "deny:namespace-scope",
            ),
            (
                ["service-account"],
                ["svc"],
                {"action": "config:read", "namespace": "svc/x", "environment": "production"},
                True,
                "allow:role:service-account",
            ),
            (
                ["operator"],
                None,
                {"action": "config:read", "classification": "restricted"},
                False,
                "deny:restricted-classification",
            ),
            (
                ["operator", "pii-authorized"],
                None,
                {"action": "config:read", "classification": "restricted"},
                True,
                "allow:role:operator",
            ),
            (["operator"], None, {"action": "token:manage"}, False, "deny:default"),
        ],
        ids=[
            "dev-write-dev",
            "dev-write-prod",
            "dev-read-prod-alias",
            "op-write-prod",
            "svc-out-of-scope",
            "svc-in-scope",
            "restricted",
            "restricted-pii",
            "op-tokens",
        ],
    )
    def test_explain_own_token(
        self,
        make_token: MakeToken,
        roles: list[str],
        namespaces: list[str] | None,
        request_body: dict[str, Any],
        allowed: bool,
        rule: str,
    ) -> None:
        """A token asking about itself gets the decision and the rule that made it."""
        client, _ = make_token(roles, namespaces)
        out = ok(client.post("/v1/policy/explain", request_body))
        assert (out["allowed"], out["rule"]) == (allowed, rule)
        assert out["reason"]

    def test_explain_change_window(self, tadmin: Http) -> None:
        """With a closed window, a production write explains as deny:production-change-window."""
        ok(tadmin.put("/v1/settings", {"change_window": _window_excluding_now()}))
        out = ok(tadmin.post("/v1/policy/explain", {"action": "config:write", "environment": "production"}))
        assert (out["allowed"], out["rule"]) == (False, "deny:production-change-window")

    def test_admin_explains_another_token(self, tadmin: Http, make_token: MakeToken) -> None:
        """A tenant-admin can ask about another token of the tenant by its id."""
        _, record = make_token(["developer"])
        out = ok(
            tadmin.post(
                "/v1/policy/explain",
                {"action": "config:write", "environment": "production", "token_id": record["id"]},
            )
        )
        assert (out["allowed"], out["rule"]) == (False, "deny:default")
        assert out["principal"]["token_id"] == record["id"]

    def test_developer_cannot_explain_another_token(self, make_token: MakeToken) -> None:
        """Asking about someone else's token needs token management rights."""
        client, _ = make_token(["developer"])
        _, other = make_token(["operator"])
        problem(client.post("/v1/policy/explain", {"action": "config:read", "token_id": other["id"]}), 403)

    def test_unknown_action_is_400(self, tadmin: Http) -> None:
        """An action that does not exist is a 400 listing the valid ones."""
        assert "config:read" in problem(tadmin.post("/v1/policy/explain", {"action": "fly"}), 400)["detail"]

    def test_explain_does_not_write_config(self, tadmin: Http) -> None:
        """Explain decides without acting: nothing is stored."""
        ok(tadmin.post("/v1/policy/explain", {"action": "config:write", "namespace": "x"}))
        assert listed(tadmin, "global") == []


class TestTokens:
    """Token management by a tenant-admin."""

    def test_created_token_has_roles_and_scope(self, server: Any, tadmin: Http) -> None:
        """A new token authenticates as a principal with the roles and namespaces asked for."""
        created = token(tadmin, "svc", ["service-account"], ["a", "b/*"])
        me = ok(server.http(created["token"]).get("/v1/whoami"))
        assert (me["roles"], me["namespaces"]) == (["service-account"], ["a", "b/*"])
        assert created["token"].startswith("lcm_")

    def test_token_list_has_no_secrets(self, server: Any, tadmin: Http) -> None:
        """GET /v1/tokens lists ids, names and roles, never a token secret."""
        created = token(tadmin, "svc", ["service-account"], ["svc-ns"])
        reply = tadmin.get("/v1/tokens")
        assert created["id"] in reply.body.decode()
        assert created["token"] not in reply.body.decode()
        assert "lcm_" not in reply.body.decode()

    def test_expiry_is_reported(self, tadmin: Http) -> None:
        """A token with expires_in has an expires_at about that far ahead."""
        created = token(tadmin, "short", ["developer"], expires_in=3600)
        expires = datetime.fromisoformat(created["expires_at"].replace("Z", "+00:00"))
        assert abs(expires - datetime.now(UTC) - timedelta(hours=1)) < timedelta(minutes=1)

    @pytest.mark.parametrize("expires_in", [0, -5, "60", 1.5])
    def test_bad_expiry_is_400(self, tadmin: Http, expires_in: Any) -> None:
        """expires_in must be a positive integer."""
        problem(
            tadmin.post("/v1/tokens", {"name": "x", "roles": ["developer"], "expires_in": expires_in}), 400
        )
