"""mTLS: a verified client certificate's SPIFFE ID authenticates as a tenant's service account."""

from __future__ import annotations

import http.client
import time
from typing import Any

import pytest

from tests.server.api.helpers import audit_records, cfg, ok, problem
from tests.server.auth.conftest import Pki
from tests.support import Http, ServerProcess


@pytest.fixture(scope="module")
def seeded(secure_server: ServerProcess) -> dict[str, Any]:
    """Configs in the bootstrap tenant (billing, billing/sub, payments) and a tenant 'acme' with billing."""
    admin = secure_server.admin
    for namespace, value in (("billing", "default"), ("billing/sub", "default-sub"), ("payments", "pay")):
        ok(admin.put(cfg(namespace, "app", "production"), {"value": {"owner": value}}), 201)
    acme = ok(admin.post("/v1/tenants", {"name": "acme", "admin_token": True}), 201)
    acme_admin = secure_server.http(acme["admin_token"]["token"])
    ok(acme_admin.put(cfg("billing", "app", "production"), {"value": {"owner": "acme"}}), 201)
    return {"acme_id": acme["tenant"]["id"]}


def as_workload(server: ServerProcess, pki: Pki, tenant: str, service: str = "billing") -> Http:
    return Http(server.port, tls=pki.spiffe(tenant, service))


class TestServiceAccount:
    def test_whoami_is_the_tenants_service_account(self, secure_server: ServerProcess, pki: Pki) -> None:
        """The SPIFFE ID's tenant and service become a service-account principal scoped to <service>."""
        who = ok(as_workload(secure_server, pki, secure_server.tenant_id).get("/v1/whoami"))
        assert who["tenant_id"] == secure_server.tenant_id
        assert who["roles"] == ["service-account"]
        assert who["namespaces"] == ["billing"]
        assert who["token_id"].startswith("spiffe:billing#")
        assert who["name"] == f"spiffe://test.example/tenant/{secure_server.tenant_id}/service/billing"

    def test_reads_its_namespace(
        self, secure_server: ServerProcess, pki: Pki, seeded: dict[str, Any]
    ) -> None:
        """It reads configs in namespace <service> and below it."""
        client = as_workload(secure_server, pki, secure_server.tenant_id)
        assert ok(client.get(cfg("billing", "app", "production")))["value"] == {"owner": "default"}
        assert ok(client.get(cfg("billing/sub", "app", "production")))["value"] == {"owner": "default-sub"}

    def test_cannot_read_other_namespaces(
        self, secure_server: ServerProcess, pki: Pki, seeded: dict[str, Any]
    ) -> None:
        """A namespace outside <service> is 403 naming the scope rule."""
        client = as_workload(secure_server, pki, secure_server.tenant_id)
        doc = problem(client.get(cfg("payments", "app", "production")), 403)
        assert doc["rule"] == "deny:namespace-scope"

    def test_cannot_write(self, secure_server: ServerProcess, pki: Pki, seeded: dict[str, Any]) -> None:
        """A service account only reads: a write to its own namespace is 403."""
        client = as_workload(secure_server, pki, secure_server.tenant_id)
        problem(client.put(cfg("billing", "app", "production"), {"value": {"owner": "me"}}), 403)

    def test_tenant_by_name(self, secure_server: ServerProcess, pki: Pki, seeded: dict[str, Any]) -> None:
        """The tenant segment may be the tenant's name; it then reads that tenant's configs only."""
        client = as_workload(secure_server, pki, "acme")
        assert ok(client.get("/v1/whoami"))["tenant_id"] == seeded["acme_id"]
        assert ok(client.get(cfg("billing", "app", "production")))["value"] == {"owner": "acme"}

    def test_denials_are_audited_as_the_workload(
        self, secure_server: ServerProcess, pki: Pki, seeded: dict[str, Any]
    ) -> None:
        """A denied read is audited with the spiffe: actor, so the audit log says which workload."""
        client = as_workload(secure_server, pki, secure_server.tenant_id)
        problem(client.get(cfg("payments", "app", "production")), 403)
        records = audit_records(secure_server.admin, result="denied")
        assert any(r["actor"].startswith("token:spiffe:billing#") for r in records), records[-3:]


class TestRefused:
    def test_wrong_trust_domain(self, secure_server: ServerProcess, pki: Pki) -> None:
        """A SPIFFE ID of another trust domain is 401 naming both domains."""
        client = Http(secure_server.port, tls=pki.spiffe(secure_server.tenant_id, "billing", "evil.example"))
        doc = problem(client.get("/v1/whoami"), 401)
        assert "evil.example" in doc["detail"]
        assert "test.example" in doc["detail"]

    def test_certificate_from_another_ca(self, secure_server: ServerProcess, pki: Pki) -> None:
        """A certificate the client CA did not issue fails the TLS handshake: no HTTP answer at all."""
        uri = f"spiffe://test.example/tenant/{secure_server.tenant_id}/service/billing"
        client = Http(secure_server.port, tls=pki.client(uri, ca=pki.other_ca))
        with pytest.raises((OSError, http.client.HTTPException)):
            client.get("/v1/whoami", timeout=5)

    @pytest.mark.parametrize(
        "uri",
        [
            "spiffe://test.example/workload/billing",
            "spiffe://test.example/tenant/{tenant}/service/billing/extra",
            "spiffe://test.example/tenant/{tenant}/service/Billing",
            "spiffe://test.example/tenant/{tenant}/service/..",
            "SPIFFE://test.example/tenant/{tenant}/service/billing",
            "spiffe://Test.Example/tenant/{tenant}/service/billing",
        ],
    )
    def test_malformed_spiffe_id(self, secure_server: ServerProcess, pki: Pki, uri: str) -> None:
        """A SPIFFE ID not of the form spiffe://<td>/tenant/<tenant>/service/<name> is 401 saying so."""
        client = Http(secure_server.port, tls=pki.client(uri.format(tenant=secure_server.tenant_id)))
        doc = problem(client.get("/v1/whoami"), 401)
        assert "malformed SPIFFE ID" in doc["detail"]

    def test_two_uri_sans(self, secure_server: ServerProcess, pki: Pki) -> None:
        """A certificate with a SPIFFE ID and a second URI SAN is refused (an SVID has exactly one)."""
        uri = f"spiffe://test.example/tenant/{secure_server.tenant_id}/service/billing"
        client = Http(secure_server.port, tls=pki.client(uri, "https://billing.example"))
        assert "exactly one URI SAN" in problem(client.get("/v1/whoami"), 401)["detail"]

    def test_certificate_without_spiffe_id(self, secure_server: ServerProcess, pki: Pki) -> None:
        """A valid client certificate without a SPIFFE URI SAN, and no token, is 401."""
        client = Http(secure_server.port, tls=pki.client())
        assert "no SPIFFE ID" in problem(client.get("/v1/whoami"), 401)["detail"]

    def test_unknown_tenant(self, secure_server: ServerProcess, pki: Pki) -> None:
        """A SPIFFE ID naming a tenant that does not exist is 401."""
        client = as_workload(secure_server, pki, "no-such-tenant")
        assert "does not exist" in problem(client.get("/v1/whoami"), 401)["detail"]

    def test_refusals_are_audited(self, secure_server: ServerProcess, pki: Pki) -> None:
        """A refused certificate leaves an auth record on the system chain with the reason."""
        time.sleep(1.1)  # failures are audited at most 10 a second; start a fresh window
        client = Http(secure_server.port, tls=pki.spiffe("x", "billing", "elsewhere.example"))
        problem(client.get("/v1/whoami"), 401)
        records = audit_records(secure_server.admin, chain="_system", action="auth")
        assert any("elsewhere.example" in r["metadata"].get("reason", "") for r in records), records[-3:]
