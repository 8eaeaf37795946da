"""Fixtures of the transport-security tests: throwaway PKI and JWT keys, and a server using them.

``secure_server`` runs a real ``llm-config-server serve`` over TLS with client
certificates requested (trust domain ``test.example``) and JWTs accepted from the
test issuer. TLS comes from flags and JWT settings from ``LLMCM_*`` variables, so
both ways in are exercised. It logs at DEBUG so the log can be searched for tokens.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.server.auth.pki import AUDIENCE, CA, ISSUER, JwtKeys, Leaf
from tests.support import Http, ServerProcess

TRUST_DOMAIN = "test.example"


@dataclass
class Pki:
    directory: Path
    ca: CA
    other_ca: CA
    server: Leaf
    _clients: dict[tuple[str, ...], Leaf] = field(default_factory=dict)

    def client(self, *uris: str, ca: CA | None = None) -> ssl.SSLContext:
        """A client context trusting the server, presenting a certificate with ``uris`` as URI SANs."""
        issuer = ca or self.ca
        key = (issuer.name, *uris)
        if key not in self._clients:
            self._clients[key] = issuer.client_leaf(f"client-{len(self._clients)}", *uris)
        context = self.ca.client_context()
        context.load_cert_chain(str(self._clients[key].cert), str(self._clients[key].key))
        return context

    def spiffe(self, tenant: str, service: str, domain: str = TRUST_DOMAIN) -> ssl.SSLContext:
        return self.client(f"spiffe://{domain}/tenant/{tenant}/service/{service}")

    @property
    def trusting(self) -> ssl.SSLContext:
        """A client context that trusts the server's CA and presents no certificate."""
        return self.ca.client_context()


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca = CA(directory, "trusted")
    return Pki(directory, ca, CA(directory, "other"), ca.server_leaf())


@pytest.fixture(scope="session")
def jwt_keys() -> JwtKeys:
    return JwtKeys()


@pytest.fixture(scope="session")
def jwks_file(jwt_keys: JwtKeys, pki: Pki) -> Path:
    return jwt_keys.write_jwks(pki.directory / "jwks.json")


def secure_args(pki: Pki) -> list[str]:
    return [
        "--tls-cert", str(pki.server.cert),
        "--tls-key", str(pki.server.key),
        "--tls-client-ca", str(pki.ca.cert_path),
        "--spiffe-trust-domain", TRUST_DOMAIN,
        "--log-level", "debug",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def secure_server(
    tmp_path_factory: pytest.TempPathFactory, pki: Pki, jwks_file: Path
) -> Iterator[ServerProcess]:
    """A server over TLS + optional client certificates + JWTs, shared by one module's tests."""
    env = {
        "LLMCM_JWT_JWKS": str(jwks_file),
        "LLMCM_JWT_ISSUER": ISSUER,
        "LLMCM_JWT_AUDIENCE": AUDIENCE,
    }
    with ServerProcess(tmp_path_factory.mktemp("secure"), env=env, tls=pki.trusting).running(
        *secure_args(pki)
    ) as srv:
        yield srv


@pytest.fixture
def secure_admin(secure_server: ServerProcess) -> Http:
    """The bootstrap global-admin token, over HTTPS."""
    return secure_server.admin
