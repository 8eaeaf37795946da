"""Throwaway key material for the transport-security tests, made with ``cryptography``.

A ``CA`` issues a server certificate for 127.0.0.1 (IP SAN) and client
certificates with SPIFFE URI SANs. ``JwtKeys`` holds an RSA and an EC key pair,
writes their public halves as a JWKS file and signs tokens, including the
broken ones the tests need (``alg: none``, HS256 keyed with the public key).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import ssl
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ISSUER = "https://idp.test.example"
AUDIENCE = "llm-config-manager"


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass
class Leaf:
    cert: Path
    key: Path


class CA:
    """A self-signed CA that writes its certificate and the leaves it issues under ``directory``."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self.name = name
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} test CA")])
        now = datetime.now(UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self.cert_path = directory / f"{name}-ca.pem"
        self.cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(
        self, filename: str, sans: list[x509.GeneralName], *, server: bool, key_for: Leaf | None = None
    ) -> Leaf:
        """A leaf certificate with ``sans``; server (serverAuth) or client (clientAuth)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, filename)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        leaf = Leaf(self.directory / f"{filename}.pem", self.directory / f"{filename}-key.pem")
        leaf.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        leaf.key.write_bytes(_pem_key(key))
        leaf.key.chmod(0o600)
        return leaf

    def server_leaf(self, filename: str = "server") -> Leaf:
        return self.issue(filename, [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))], server=True)

    def client_leaf(self, filename: str, *uris: str) -> Leaf:
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
        if not sans:
            sans = [x509.DNSName(f"{filename}.test.example")]
        return self.issue(filename, sans, server=False)

    def client_context(self, leaf: Leaf | None = None) -> ssl.SSLContext:
        """A client context trusting this CA, presenting ``leaf`` if given."""
        context = ssl.create_default_context(cafile=str(self.cert_path))
        if leaf is not None:
            context.load_cert_chain(str(leaf.cert), str(leaf.key))
        return context


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class JwtKeys:
    """An RSA (kid ``rsa-1``) and an EC P-256 (kid ``ec-1``) key pair and the JWKS of both."""

    def __init__(self) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwks(self) -> dict[str, Any]:
        rsa_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.rsa.public_key()))
        ec_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.ec.public_key()))
        # a symmetric key in the set must never be used, whatever a token's header says
        oct_jwk = {"kty": "oct", "kid": "hmac-1", "k": b64url(b"shared-secret-that-must-be-ignored")}
        return {
            "keys": [
                {**rsa_jwk, "kid": "rsa-1", "use": "sig", "alg": "RS256"},
                {**ec_jwk, "kid": "ec-1", "use": "sig", "alg": "ES256"},
                oct_jwk,
            ]
        }

    def write_jwks(self, path: Path) -> Path:
        path.write_text(json.dumps(self.jwks()))
        return path

    @staticmethod
    def claims(tenant: str, roles: list[str] | None = None, **extra: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "alice@example.org",
            "iat": now,
            "nbf": now,
            "exp": now + 300,
            "tenant": tenant,
            "roles": roles if roles is not None else ["developer"],
        }
        claims.update(extra)
        return {k: v for k, v in claims.items() if v is not None}

    def sign(self, claims: dict[str, Any], alg: str = "RS256", kid: str | None = None) -> str:
        if alg == "RS256":
            return jwt.encode(claims, self.rsa, algorithm="RS256", headers={"kid": kid or "rsa-1"})
        if alg == "ES256":
            return jwt.encode(claims, self.ec, algorithm="ES256", headers={"kid": kid or "ec-1"})
        raise ValueError(alg)

    def sign_with_stranger(self, claims: dict[str, Any]) -> str:
        """Signed by a key the JWKS doesn't hold, under a kid it does hold."""
        return jwt.encode(claims, self.stranger, algorithm="RS256", headers={"kid": "rsa-1"})

    @staticmethod
    def unsigned(claims: dict[str, Any], kid: str = "rsa-1") -> str:
        """``alg: none``: a header, a payload and an empty signature."""
        header = b64url(json.dumps({"alg": "none", "typ": "JWT", "kid": kid}).encode())
        return f"{header}.{b64url(json.dumps(claims).encode())}."

    def hs256_with_public_key(self, claims: dict[str, Any]) -> str:
        """The classic confusion attack: HMAC keyed with the server's own RSA public key (PEM)."""
        public_pem = self.rsa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        header = b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
        payload = b64url(json.dumps(claims).encode())
        signature = hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        return f"{header}.{payload}.{b64url(signature)}"


def tamper(token: str) -> str:
    """The same token with one byte of its signature changed."""
    header, payload, signature = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[len(raw) // 2] ^= 0x01
    return f"{header}.{payload}.{b64url(bytes(raw))}"
