"""parse_spiffe_id: the URI SAN of a verified client certificate to (tenant, service), strictly."""

from __future__ import annotations

import pytest

from server.auth import WorkloadId, parse_spiffe_id
from shared.errors import Unauthenticated

TD = "example.org"


class TestParseSpiffeId:
    def test_tenant_and_service(self) -> None:
        """spiffe://<td>/tenant/<tenant>/service/<name> yields the tenant and the service."""
        uri = "spiffe://example.org/tenant/acme/service/llm-gateway"
        assert parse_spiffe_id([uri], TD) == WorkloadId(uri, "acme", "llm-gateway")

    @pytest.mark.parametrize(
        "uri",
        [
            "spiffe://example.org:8443/tenant/acme/service/app",  # port
            "spiffe://user@example.org/tenant/acme/service/app",  # userinfo
            "spiffe://example.org/tenant/acme/service/app?x=1",  # query
            "spiffe://example.org/tenant/acme/service/app#frag",  # fragment
            "spiffe://example.org/tenant/ac%2Fme/service/app",  # percent-encoding
            "spiffe://example.org/tenant//service/app",  # empty segment
            "spiffe://example.org/tenant/acme/service/app/",  # trailing slash
            "spiffe://example.org/tenant/./service/app",  # dot segment
            "spiffe://example.org/tenant/acme/service/my_app",  # not a namespace name
            "spiffe://example.org",  # no path
        ],
    )
    def test_malformed(self, uri: str) -> None:
        """IDs outside the SPIFFE grammar or the tenant/service shape are refused as malformed."""
        with pytest.raises(Unauthenticated, match="malformed SPIFFE ID"):
            parse_spiffe_id([uri], TD)

    def test_other_trust_domain(self) -> None:
        """A well-formed ID of another trust domain is refused naming the domain."""
        with pytest.raises(Unauthenticated, match=r"'other\.org'; this server trusts 'example\.org'"):
            parse_spiffe_id(["spiffe://other.org/tenant/acme/service/app"], TD)

    def test_no_uri_san(self) -> None:
        """A certificate without a spiffe:// URI SAN is refused."""
        with pytest.raises(Unauthenticated, match="no SPIFFE ID"):
            parse_spiffe_id(["https://example.org/app"], TD)
        with pytest.raises(Unauthenticated, match="no SPIFFE ID"):
            parse_spiffe_id([], TD)

    def test_overlong(self) -> None:
        """An ID longer than 2048 characters is refused."""
        with pytest.raises(Unauthenticated, match="malformed"):
            parse_spiffe_id([f"spiffe://example.org/tenant/acme/service/{'a' * 2100}"], TD)
