"""A server with TLS but no client CA, its JWKS from a loopback URL, custom claim names and
global-admin allowed from JWTs."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.server.api.helpers import ok, problem
from tests.server.auth.conftest import Pki
from tests.server.auth.pki import AUDIENCE, ISSUER, JwtKeys
from tests.support import Http, ServerProcess


class JwksServer:
    """A loopback HTTP server answering GET /jwks with a JWKS, counting the fetches."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        body = json.dumps(jwks).encode()
        self.fetches = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.fetches += 1
                self.send_response(200 if self.path == "/jwks" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def jwks_server(jwt_keys: JwtKeys) -> Iterator[JwksServer]:
    server = JwksServer(jwt_keys.jwks())
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def tls_server(
    tmp_path_factory: pytest.TempPathFactory, pki: Pki, jwks_server: JwksServer
) -> Iterator[ServerProcess]:
    serve_args = (
        "--tls-cert", str(pki.server.cert),
        "--tls-key", str(pki.server.key),
        "--jwt-jwks", jwks_server.url,
        "--jwt-issuer", ISSUER,
        "--jwt-audience", AUDIENCE,
        "--jwt-tenant-claim", "org",
        "--jwt-roles-claim", "realm_access.roles",
        "--jwt-allow-global-admin",
    )  # fmt: skip
    with ServerProcess(tmp_path_factory.mktemp("options"), tls=pki.trusting).running(*serve_args) as srv:
        yield srv


def claims(tenant: str, roles: list[str]) -> dict[str, Any]:
    """Claims with the tenant in 'org' and the roles in 'realm_access.roles' (as Keycloak puts them)."""
    out = JwtKeys.claims(tenant, roles)
    out["org"], out["realm_access"] = out.pop("tenant"), {"roles": out.pop("roles")}
    return out


class TestOptions:
    def test_client_certificates_are_not_requested_without_a_client_ca(
        self, tls_server: ServerProcess, pki: Pki
    ) -> None:
        """Without --tls-client-ca a SPIFFE certificate authenticates nothing: no token is 401."""
        client = Http(tls_server.port, tls=pki.spiffe(tls_server.tenant_id, "billing"))
        assert "missing bearer token" in problem(client.get("/v1/whoami"), 401)["detail"]

    def test_custom_claim_names(self, tls_server: ServerProcess, jwt_keys: JwtKeys) -> None:
        """--jwt-tenant-claim and a dotted --jwt-roles-claim are read from where they point."""
        token = jwt_keys.sign(claims(tls_server.tenant_id, ["operator"]), "ES256")
        who = ok(tls_server.http(token).get("/v1/whoami"))
        assert (who["tenant_id"], who["roles"]) == (tls_server.tenant_id, ["operator"])

    def test_default_claim_names_no_longer_apply(self, tls_server: ServerProcess, jwt_keys: JwtKeys) -> None:
        """With the tenant in 'org', a token carrying only 'tenant' is 401 naming the 'org' claim."""
        token = jwt_keys.sign(JwtKeys.claims(tls_server.tenant_id))
        assert "'org'" in problem(tls_server.http(token).get("/v1/whoami"), 401)["detail"]

    def test_global_admin_allowed_by_flag(self, tls_server: ServerProcess, jwt_keys: JwtKeys) -> None:
        """With --jwt-allow-global-admin a global-admin JWT is accepted and may list tenants."""
        token = jwt_keys.sign(claims(tls_server.tenant_id, ["global-admin"]))
        assert ok(tls_server.http(token).get("/v1/whoami"))["roles"] == ["global-admin"]
        ok(tls_server.http(token).get("/v1/tenants"))

    def test_jwks_fetched_once_from_the_url(
        self, tls_server: ServerProcess, jwt_keys: JwtKeys, jwks_server: JwksServer
    ) -> None:
        """The key set is fetched at start-up and cached: more tokens cause no more fetches."""
        before = jwks_server.fetches
        assert before >= 1
        for alg in ("RS256", "ES256", "RS256"):
            ok(
                tls_server.http(jwt_keys.sign(claims(tls_server.tenant_id, ["developer"]), alg)).get(
                    "/v1/whoami"
                )
            )
        assert jwks_server.fetches == before
