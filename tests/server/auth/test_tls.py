"""HTTPS on the REST port: the server's certificate, TLS versions, bearer tokens over TLS."""

from __future__ import annotations

import http.client
import socket
import ssl

import pytest

from tests.server.auth.conftest import Pki
from tests.support import Http, ServerProcess


class TestHttps:
    def test_https_works_with_the_ca(self, secure_server: ServerProcess, pki: Pki) -> None:
        """A client trusting the test CA gets a 200 from /health/ready over HTTPS."""
        reply = Http(secure_server.port, tls=pki.trusting).get("/health/ready")
        assert reply.status == 200
        assert reply.json["status"] == "ok"

    def test_https_fails_without_the_ca(self, secure_server: ServerProcess) -> None:
        """A client trusting only the system CAs refuses the server's certificate."""
        with pytest.raises(ssl.SSLCertVerificationError):
            Http(secure_server.port, tls=ssl.create_default_context()).get("/health/ready")

    def test_plain_http_to_the_tls_port_fails(self, secure_server: ServerProcess) -> None:
        """Plain HTTP to the TLS port gets no HTTP answer: the connection is dropped."""
        with pytest.raises((OSError, http.client.HTTPException)):
            Http(secure_server.port).get("/health/ready", timeout=5)

    @pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
    def test_tls_1_1_is_refused(self, secure_server: ServerProcess, pki: Pki) -> None:
        """A client limited to TLS 1.1 can't complete a handshake (TLS 1.2 is the minimum)."""
        context = pki.ca.client_context()
        context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        context.maximum_version = ssl.TLSVersion.TLSv1_1
        with (
            socket.create_connection(("127.0.0.1", secure_server.port), timeout=5) as raw,
            pytest.raises(ssl.SSLError),
        ):
            context.wrap_socket(raw, server_hostname="127.0.0.1")

    def test_negotiates_tls_1_2_or_newer(self, secure_server: ServerProcess, pki: Pki) -> None:
        """A default client negotiates TLS 1.2 or 1.3."""
        with (
            socket.create_connection(("127.0.0.1", secure_server.port), timeout=5) as raw,
            pki.trusting.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            assert tls.version() in ("TLSv1.2", "TLSv1.3")


class TestBearerOverTls:
    def test_lcm_token_works_over_tls(self, secure_admin: Http, secure_server: ServerProcess) -> None:
        """The bootstrap lcm_ token authenticates over HTTPS as before."""
        reply = secure_admin.get("/v1/whoami")
        assert reply.status == 200, reply.body
        assert reply.json["tenant_id"] == secure_server.tenant_id
        assert reply.json["roles"] == ["global-admin"]

    def test_no_credentials_is_401(self, secure_server: ServerProcess, pki: Pki) -> None:
        """Over TLS without a token or client certificate a /v1 route answers 401."""
        reply = Http(secure_server.port, tls=pki.trusting).get("/v1/whoami")
        assert reply.status == 401
        assert "missing bearer token" in reply.json["detail"]

    def test_token_wins_over_a_client_certificate(
        self, secure_admin: Http, secure_server: ServerProcess, pki: Pki
    ) -> None:
        """With both an Authorization header and a SPIFFE certificate, the token decides who it is."""
        with_cert = Http(
            secure_server.port, secure_server.token, tls=pki.spiffe(secure_server.tenant_id, "billing")
        )
        reply = with_cert.get("/v1/whoami")
        assert reply.status == 200
        assert reply.json["roles"] == ["global-admin"]


async def test_the_client_names_an_untrusted_certificate_and_does_not_retry(
    secure_server: ServerProcess,
) -> None:
    """A server certificate the client doesn't trust is a clear, final error, not an outage to retry."""
    from shared.client import RestClient
    from shared.errors import ProtocolError

    async with RestClient(f"https://127.0.0.1:{secure_server.port}", secure_server.token) as client:
        with pytest.raises(ProtocolError, match="does not trust") as caught:
            await client.request("GET", "/v1/whoami")
    assert not caught.value.retriable
    assert secure_server.token not in str(caught.value)
