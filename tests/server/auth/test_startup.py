"""Transport-security settings: read once into ServerConfig, and bad files refused in one clear line."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from server.config import ServerConfig
from shared.errors import InvalidInput
from tests.server.auth.conftest import Pki
from tests.support import REPO, SERVER_CMD, free_port

TLS_ENV = {
    "LLMCM_TLS_CERT": "/pki/server.pem",
    "LLMCM_TLS_KEY": "/pki/server-key.pem",
    "LLMCM_TLS_CLIENT_CA": "/pki/ca.pem",
    "LLMCM_SPIFFE_TRUST_DOMAIN": "example.org",
    "LLMCM_JWT_JWKS": "https://idp.example/jwks.json",
    "LLMCM_JWT_ISSUER": "https://idp.example",
    "LLMCM_JWT_AUDIENCE": "llmcm",
    "LLMCM_JWT_ALLOW_GLOBAL_ADMIN": "true",
    "LLMCM_JWT_LEEWAY": "5",
}


class TestConfig:
    def test_env_vars_are_read(self) -> None:
        """Every transport-security setting comes from its LLMCM_* variable."""
        config = ServerConfig.load(environ=TLS_ENV)
        assert (config.tls_cert, config.tls_key, config.tls_client_ca) == (
            "/pki/server.pem",
            "/pki/server-key.pem",
            "/pki/ca.pem",
        )
        assert config.spiffe_trust_domain == "example.org"
        assert (config.jwt_jwks, config.jwt_issuer, config.jwt_audience) == (
            "https://idp.example/jwks.json",
            "https://idp.example",
            "llmcm",
        )
        assert config.jwt_allow_global_admin is True
        assert config.jwt_leeway == 5.0

    def test_flags_beat_env(self) -> None:
        """A flag overrides the variable of the same setting."""
        config = ServerConfig.load(flags={"jwt_audience": "other", "tls_cert": "/x.pem"}, environ=TLS_ENV)
        assert (config.jwt_audience, config.tls_cert) == ("other", "/x.pem")

    def test_off_by_default(self) -> None:
        """Without settings the server speaks plain HTTP and accepts only lcm_ tokens."""
        config = ServerConfig.load(environ={})
        assert not config.tls and not config.jwt and not config.spiffe_trust_domain
        assert config.jwt_allow_global_admin is False
        assert (config.jwt_tenant_claim, config.jwt_roles_claim) == ("tenant", "roles")

    @pytest.mark.parametrize(
        ("env", "message"),
        [
            ({"LLMCM_TLS_CERT": "/c.pem"}, "--tls-cert and --tls-key go together"),
            ({"LLMCM_TLS_CLIENT_CA": "/ca.pem"}, "--tls-client-ca needs --tls-cert"),
            (
                {"LLMCM_TLS_CERT": "/c", "LLMCM_TLS_KEY": "/k", "LLMCM_TLS_CLIENT_CA": "/ca"},
                "--spiffe-trust-domain go together",
            ),
            (
                {
                    "LLMCM_TLS_CERT": "/c",
                    "LLMCM_TLS_KEY": "/k",
                    "LLMCM_TLS_CLIENT_CA": "/ca",
                    "LLMCM_SPIFFE_TRUST_DOMAIN": "spiffe://example.org",
                },
                "without 'spiffe://'",
            ),
            ({"LLMCM_JWT_JWKS": "/jwks.json"}, "missing --jwt-issuer, --jwt-audience"),
            ({"LLMCM_JWT_ALLOW_GLOBAL_ADMIN": "maybe"}, "jwt_allow_global_admin"),
            ({"LLMCM_JWT_LEEWAY": "3600"}, "jwt_leeway"),
            ({"LLMCM_JWT_ROLES_CLAIM": "roles claim"}, "jwt_roles_claim"),
        ],
    )
    def test_incomplete_or_bad_settings_are_refused(self, env: dict[str, str], message: str) -> None:
        """A half-configured or malformed setting is refused with a message saying what is missing."""
        with pytest.raises(InvalidInput, match=message):
            ServerConfig.load(environ=env)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An initialized store, so that serve gets past the store check to the JWKS."""
    data = tmp_path_factory.mktemp("startup")
    out = subprocess.run(
        [*SERVER_CMD, "init", "--data", str(data), "--json"], cwd=REPO, capture_output=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return data


def serve(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SERVER_CMD, "serve", "--data", str(data), "--port", str(free_port()), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_one_line_error(out: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert out.returncode == 1, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr
    lines = [line for line in out.stderr.strip().splitlines() if not line.startswith("{")]  # JSON log events
    assert len(lines) == 1, out.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


class TestBadFiles:
    def test_missing_certificate(self, data_dir: Path, pki: Pki, tmp_path: Path) -> None:
        """A certificate path that does not exist is one line naming the file."""
        missing = tmp_path / "nope.pem"
        out = serve(data_dir, "--tls-cert", str(missing), "--tls-key", str(pki.server.key))
        assert_one_line_error(out, f"TLS certificate file {missing} does not exist")

    def test_unreadable_key(self, data_dir: Path, pki: Pki, tmp_path: Path) -> None:
        """A key path that can't be read (here: a directory) is one line naming the file."""
        out = serve(data_dir, "--tls-cert", str(pki.server.cert), "--tls-key", str(tmp_path))
        assert_one_line_error(out, f"TLS key file {tmp_path} is a directory")

    def test_mismatched_key(self, data_dir: Path, pki: Pki, tmp_path: Path) -> None:
        """A key that belongs to another certificate is refused naming both files."""
        other = tmp_path / "other-key.pem"
        other.write_bytes(
            ec.generate_private_key(ec.SECP256R1()).private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        out = serve(data_dir, "--tls-cert", str(pki.server.cert), "--tls-key", str(other))
        assert_one_line_error(
            out, f"TLS key file {other} does not match the certificate in {pki.server.cert}"
        )

    def test_certificate_given_as_key(self, data_dir: Path, pki: Pki) -> None:
        """A key file holding no private key says so."""
        out = serve(data_dir, "--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.cert))
        assert_one_line_error(out, "holds no PEM private key")

    def test_encrypted_key(self, data_dir: Path, pki: Pki, tmp_path: Path) -> None:
        """A passphrase-protected key is refused with a hint to give an unencrypted one."""
        key = serialization.load_pem_private_key(pki.server.key.read_bytes(), password=None)
        locked = tmp_path / "locked.pem"
        locked.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"passphrase"),
            )
        )
        out = serve(data_dir, "--tls-cert", str(pki.server.cert), "--tls-key", str(locked))
        assert_one_line_error(out, "is encrypted")

    def test_client_ca_without_certificate(self, data_dir: Path, pki: Pki, tmp_path: Path) -> None:
        """A client CA file holding no certificate is refused."""
        junk = tmp_path / "ca.pem"
        junk.write_text("not a certificate\n")
        out = serve(
            data_dir,
            "--tls-cert", str(pki.server.cert),
            "--tls-key", str(pki.server.key),
            "--tls-client-ca", str(junk),
            "--spiffe-trust-domain", "test.example",
        )  # fmt: skip
        assert_one_line_error(out, f"TLS client CA file {junk} holds no PEM certificate")

    def test_missing_jwks_file(self, data_dir: Path, tmp_path: Path) -> None:
        """A JWKS file that does not exist stops start-up in one line."""
        missing = tmp_path / "jwks.json"
        out = serve(data_dir, "--jwt-jwks", str(missing), "--jwt-issuer", "i", "--jwt-audience", "a")
        assert_one_line_error(out, f"JWKS file {missing} does not exist")

    def test_jwks_with_only_symmetric_keys(self, data_dir: Path, tmp_path: Path) -> None:
        """A JWKS holding no RSA or EC P-256 key is refused: HS* keys are never used."""
        jwks = tmp_path / "jwks.json"
        jwks.write_text(json.dumps({"keys": [{"kty": "oct", "kid": "h", "k": "c2VjcmV0"}]}))
        out = serve(data_dir, "--jwt-jwks", str(jwks), "--jwt-issuer", "i", "--jwt-audience", "a")
        assert_one_line_error(out, "holds no usable RS256 (RSA) or ES256 (EC P-256) key")

    def test_half_configured_tls(self, data_dir: Path, pki: Pki) -> None:
        """--tls-cert without --tls-key is one line before anything starts."""
        out = serve(data_dir, "--tls-cert", str(pki.server.cert))
        assert_one_line_error(out, "--tls-cert and --tls-key go together")

    def test_plain_http_jwks_url_off_loopback(self, data_dir: Path) -> None:
        """A JWKS URL over plain http:// to a non-loopback host is refused."""
        out = serve(
            data_dir, "--jwt-jwks", "http://idp.example/jwks", "--jwt-issuer", "i", "--jwt-audience", "a"
        )
        assert_one_line_error(out, "must use https://")
