"""Transport security and the ways a caller proves who it is.

    tls.py            the listeners' SSLContext (TLS 1.2+, optional client certificates)
                      and SPIFFE IDs read from verified client certificates
    jwt.py            JWT bearer tokens from an OIDC provider, checked against its JWKS
    authenticator.py  one decision per request: lcm_ token, JWT, or client certificate

Only ``server.main`` builds these (from ``ServerConfig``) and only the API edges use
``Authenticator``; the service layer sees nothing but the resulting ``Principal``.
"""

from __future__ import annotations

from server.auth.authenticator import Authenticator
from server.auth.jwt import ALGORITHMS, JwtIdentity, JwtSettings, JwtVerifier, parse_jwks
from server.auth.tls import SPIFFE_FORMAT, WorkloadId, parse_spiffe_id, peer_uri_sans, server_context

__all__ = [
    "ALGORITHMS",
    "SPIFFE_FORMAT",
    "Authenticator",
    "JwtIdentity",
    "JwtSettings",
    "JwtVerifier",
    "WorkloadId",
    "parse_jwks",
    "parse_spiffe_id",
    "peer_uri_sans",
    "server_context",
]
