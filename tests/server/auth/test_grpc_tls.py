"""gRPC over the REST listener's TLS settings: the same certificate, and with mTLS the same SPIFFE
identities (grpcio can only require a client certificate, so every mTLS gRPC client shows one)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from shared.proto.llmconfig.v1 import config_pb2 as pb
from shared.proto.llmconfig.v1 import config_pb2_grpc as pb_grpc
from tests.server.api.helpers import cfg, ok
from tests.server.auth.conftest import TRUST_DOMAIN, Pki
from tests.server.auth.pki import CA, Leaf
from tests.support import ServerProcess

TIMEOUT = 20.0


def channel(server: ServerProcess, pki: Pki, leaf: Leaf | None = None, ca: CA | None = None) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(ca or pki.ca).cert_path.read_bytes(),
        private_key=leaf.key.read_bytes() if leaf else None,
        certificate_chain=leaf.cert.read_bytes() if leaf else None,
    )
    return grpc.secure_channel(f"127.0.0.1:{server.grpc_port}", credentials)


def spiffe_leaf(pki: Pki, tenant: str, service: str, ca: CA | None = None) -> Leaf:
    issuer = ca or pki.ca
    return issuer.client_leaf(
        f"grpc-{issuer.name}-{service}", f"spiffe://{TRUST_DOMAIN}/tenant/{tenant}/service/{service}"
    )


def auth(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


@pytest.fixture(scope="module")
def seeded(secure_server: ServerProcess) -> None:
    for namespace in ("billing", "payments"):
        ok(secure_server.admin.put(cfg(namespace, "app", "production"), {"value": {"owner": namespace}}), 201)


class TestMutualTls:
    def test_spiffe_certificate_authenticates(
        self, secure_server: ServerProcess, pki: Pki, seeded: None
    ) -> None:
        """A SPIFFE certificate alone is the tenant's service account for its namespace."""
        with channel(secure_server, pki, spiffe_leaf(pki, secure_server.tenant_id, "billing")) as ch:
            stub = pb_grpc.ConfigServiceStub(ch)
            got = stub.Get(
                pb.GetRequest(namespace="billing", key="app", environment="production"), timeout=TIMEOUT
            )
            assert json.loads(got.value_json) == {"owner": "billing"}
            for call, request in (
                (stub.Get, pb.GetRequest(namespace="payments", key="app", environment="production")),
                (stub.Put, pb.PutRequest(namespace="billing", key="app", value_json="{}")),
            ):
                with pytest.raises(grpc.RpcError) as caught:
                    call(request, timeout=TIMEOUT)
                assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED

    def test_token_wins_over_the_certificate(
        self, secure_server: ServerProcess, pki: Pki, seeded: None
    ) -> None:
        """With a certificate and a bearer token the token decides (here: the global admin writes)."""
        with channel(secure_server, pki, spiffe_leaf(pki, secure_server.tenant_id, "billing")) as ch:
            stub = pb_grpc.ConfigServiceStub(ch)
            written = stub.Put(
                pb.PutRequest(namespace="payments", key="grpc", value_json='{"by":"admin"}'),
                metadata=auth(secure_server.token),
                timeout=TIMEOUT,
            )
            assert written.author == "bootstrap-admin"

    def test_without_a_trusted_certificate_no_connection(
        self, secure_server: ServerProcess, pki: Pki
    ) -> None:
        """No client certificate, or one of another CA, fails the handshake: UNAVAILABLE."""
        other = spiffe_leaf(pki, secure_server.tenant_id, "billing", ca=pki.other_ca)
        for leaf in (None, other):
            with channel(secure_server, pki, leaf) as ch:
                with pytest.raises(grpc.RpcError) as caught:
                    pb_grpc.ConfigServiceStub(ch).List(
                        pb.ListRequest(), metadata=auth(secure_server.token), timeout=TIMEOUT
                    )
                assert caught.value.code() is grpc.StatusCode.UNAVAILABLE

    def test_plaintext_client_is_refused(self, secure_server: ServerProcess) -> None:
        """A plaintext gRPC client gets no answer from the TLS listener."""
        with grpc.insecure_channel(f"127.0.0.1:{secure_server.grpc_port}") as ch:
            with pytest.raises(grpc.RpcError) as caught:
                pb_grpc.ConfigServiceStub(ch).List(
                    pb.ListRequest(), metadata=auth(secure_server.token), timeout=TIMEOUT
                )
            assert caught.value.code() is grpc.StatusCode.UNAVAILABLE


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[ServerProcess]:
    """A server with TLS but no client certificates."""
    data: Path = tmp_path_factory.mktemp("grpc-tls")
    args = ("--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key))
    with ServerProcess(data, tls=pki.trusting).running(*args) as srv:
        yield srv


class TestServerTlsOnly:
    def test_bearer_token_over_tls(self, tls_server: ServerProcess, pki: Pki) -> None:
        """Without mTLS a client needs only to trust the server's CA and send its token."""
        with channel(tls_server, pki) as ch:
            stub = pb_grpc.ConfigServiceStub(ch)
            stub.Put(
                pb.PutRequest(namespace="tls", key="k", value_json='{"a":1}'), metadata=auth(tls_server.token)
            )
            listed = stub.List(pb.ListRequest(prefix="tls"), metadata=auth(tls_server.token), timeout=TIMEOUT)
            assert [item.key for item in listed.items] == ["k"]
            with pytest.raises(grpc.RpcError) as caught:
                stub.List(pb.ListRequest(), timeout=TIMEOUT)
            assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
