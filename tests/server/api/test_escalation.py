"""Attempts to get more than a token was given: minting tokens, reading through errors,
chains and tenant views, and flooding the audit log with bad tokens."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from tests.server.api.conftest import MakeToken
from tests.server.api.helpers import audit_records, cfg, ok, problem, token
from tests.support import Http, ServerProcess


class TestTokenEscalation:
    def test_scoped_admin_cannot_mint_an_unscoped_token(self, make_token: MakeToken) -> None:
        """A tenant-admin limited to a namespace can't create tokens at all."""
        scoped, _ = make_token(["tenant-admin"], ["team-a"])
        reply = scoped.post("/v1/tokens", {"name": "esc", "roles": ["tenant-admin"]})
        assert problem(reply, 403)["rule"] == "deny:namespace-scope"

    def test_scoped_admin_cannot_change_settings_or_schemas(self, make_token: MakeToken) -> None:
        """Tenant-wide settings and schema bindings are out of reach of a scoped token."""
        scoped, _ = make_token(["tenant-admin"], ["team-a"])
        assert (
            problem(scoped.put("/v1/settings", {"audit_reads": True}), 403)["rule"] == "deny:namespace-scope"
        )
        bind = {"schema": "model-endpoint", "namespace": "team-b/*"}
        assert problem(scoped.post("/v1/schema-bindings", bind), 403)["rule"] == "deny:namespace-scope"

    def test_tenant_admin_cannot_grant_pii(self, tadmin: Http) -> None:
        """A tenant-admin without pii-authorized can't hand that role out (or take it)."""
        reply = tadmin.post("/v1/tokens", {"name": "x", "roles": ["tenant-admin", "pii-authorized"]})
        assert problem(reply, 403)["rule"] == "deny:role-escalation"

    def test_tenant_admin_grants_lower_roles(self, tadmin: Http) -> None:
        """Admins may still create operator, developer and (scoped) service-account tokens."""
        token(tadmin, "op", ["operator", "developer"])
        token(tadmin, "svc", ["service-account"], ["llm-gateway"])

    def test_service_account_needs_namespaces(self, tadmin: Http) -> None:
        """A service-account token without namespaces is refused: it would read everything."""
        reply = tadmin.post("/v1/tokens", {"name": "svc", "roles": ["service-account"]})
        assert "namespaces" in problem(reply, 400)["detail"]


class TestReadingAround:
    def test_schema_errors_do_not_quote_other_layers(self, tadmin: Http, make_token: MakeToken) -> None:
        """A developer's 422 names pointers and rules, never values from production layers."""
        ok(tadmin.put("/v1/schemas/tight", {"schema": {"type": "object", "maxProperties": 2}}))
        ok(tadmin.post("/v1/schema-bindings", {"schema": "tight", "namespace": "leak"}), 201)
        secret_layer = {"value": {"hint": "PROD-ONLY-VALUE"}, "metadata": {"classification": "restricted"}}
        pii, _ = make_token(["tenant-admin", "pii-authorized"])
        ok(pii.put(cfg("leak", "k", "production"), secret_layer), 201)
        dev, _ = make_token(["developer"])
        reply = dev.put(cfg("leak", "k", "development"), {"value": {"a": 1, "b": 2}})
        body = problem(reply, 422)
        assert "PROD-ONLY-VALUE" not in reply.body.decode()
        assert body["violations"][0]["environments"] == ["production"]

    def test_chain_cannot_pull_in_an_unreadable_environment(
        self, tadmin: Http, make_token: MakeToken
    ) -> None:
        """With development resolving through production, a developer's resolve is denied."""
        ok(tadmin.put(cfg("chained", "k", "production"), {"value": {"p": "PROD"}}), 201)
        ok(tadmin.put(cfg("chained", "k", "development"), {"value": {"d": 1}}), 201)
        ok(tadmin.put("/v1/settings", {"chains": {"development": ["production", "development"]}}))
        dev, _ = make_token(["developer"])
        reply = dev.get(cfg("chained", "k", "development", "&resolve=true"))
        assert problem(reply, 403)["rule"] == "deny:default"
        listed = dev.get("/v1/configs?prefix=chained&env=development&resolve=true")
        assert listed.status == 403
        assert "PROD" not in reply.body.decode() + listed.body.decode()
        assert ok(dev.get(cfg("chained", "k", "development")))["value"] == {"d": 1}

    def test_own_tenant_view_hides_settings_from_developers(
        self, make_token: MakeToken, tenant: dict[str, str]
    ) -> None:
        """GET /v1/tenants/{own id} works for anyone, with settings only for settings:read."""
        dev, _ = make_token(["developer"])
        assert ok(dev.get(f"/v1/tenants/{tenant['id']}"))["settings"] == {}
        op, _ = make_token(["operator"])
        assert "chains" in ok(op.get(f"/v1/tenants/{tenant['id']}"))["settings"]


class TestSchemaRefs:
    def test_unresolvable_ref_is_refused_when_stored(self, tadmin: Http) -> None:
        """A schema whose $ref points nowhere (or off-site) is a 400, not a 500 on later writes."""
        for ref in ("#/$defs/missing", "https://example.invalid/s.json"):
            reply = tadmin.put("/v1/schemas/broken", {"schema": {"properties": {"a": {"$ref": ref}}}})
            assert "$ref" in problem(reply, 400)["detail"]
        good = {"$defs": {"n": {"type": "integer"}}, "properties": {"a": {"$ref": "#/$defs/n"}}}
        ok(tadmin.put("/v1/schemas/fine", {"schema": good}))


class TestAuthFailureFlood:
    def test_bad_token_flood_is_aggregated(self, server: ServerProcess, admin: Http) -> None:
        """300 bad-token requests in a burst leave far fewer records, counting what they skipped."""
        before = audit_records(admin, chain="_system")
        last = before[-1]["seq"] if before else 0
        bad = server.http("lcm_not-a-real-token")
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda _: bad.get("/v1/whoami").status, range(300)))
        assert set(statuses) == {401}
        time.sleep(1.1)
        bad.get("/v1/whoami")  # the next window's first record carries the count
        new = audit_records(admin, chain="_system", after=last)
        assert 0 < len(new) < 100
        recorded = len(new) + sum(r["metadata"].get("suppressed_before", 0) for r in new)
        assert recorded == 301
