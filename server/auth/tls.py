"""TLS for the server's listeners, and SPIFFE identities from verified client certificates.

``server_context`` builds the one ``ssl.SSLContext`` every listener uses (REST
now, gRPC when it lands): TLS 1.2 or newer, the server's certificate and key,
and, for mTLS, client certificates *requested* (``CERT_OPTIONAL``, so clients
with a bearer token need no certificate) and verified against the client CA
only, never the system store. Files are checked with ``cryptography`` first so
a wrong path, a key that is not a key or a key of another certificate is one
clear sentence instead of OpenSSL's ``[SSL] PEM lib``.

``parse_spiffe_id`` turns the URI SAN of a verified client certificate into
``WorkloadId(tenant, service)``; its shape is
``spiffe://<trust-domain>/tenant/<tenant>/service/<name>``.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import structlog
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from shared.errors import InvalidInput, Unauthenticated

log = structlog.get_logger("llmcm.auth")

SPIFFE_FORMAT = "spiffe://<trust-domain>/tenant/<tenant>/service/<name>"
_SPIFFE_SCHEME = "spiffe://"
_TRUST_DOMAIN = re.compile(r"^[a-z0-9._-]+$")
_SEGMENT = re.compile(r"^[A-Za-z0-9._-]{1,100}$")
# the service name becomes the namespace scope, so it must be a namespace segment
SERVICE_NAME = re.compile(r"^[a-z0-9-]{1,100}$")
_MAX_SPIFFE_ID = 2048


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise InvalidInput(f"{what} file {path} does not exist") from None
    except IsADirectoryError:
        raise InvalidInput(f"{what} file {path} is a directory") from None
    except PermissionError:
        raise InvalidInput(f"{what} file {path} cannot be read: permission denied") from None
    except OSError as exc:
        raise InvalidInput(f"{what} file {path} cannot be read: {exc.strerror or exc}") from None


def _certificates(path: str, what: str) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(_read(path, what))
    except ValueError:
        certs = []
    if not certs:
        raise InvalidInput(f"{what} file {path} holds no PEM certificate")
    return certs


def _check_key_pair(cert_path: str, key_path: str) -> x509.Certificate:
    cert = _certificates(cert_path, "TLS certificate")[0]
    try:
        key = serialization.load_pem_private_key(_read(key_path, "TLS key"), password=None)
    except TypeError:
        raise InvalidInput(f"TLS key file {key_path} is encrypted; give an unencrypted PEM key") from None
    except ValueError:
        raise InvalidInput(f"TLS key file {key_path} holds no PEM private key") from None
    except UnsupportedAlgorithm:
        raise InvalidInput(f"TLS key file {key_path} holds a key type TLS can't use") from None
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != cert.public_key().public_bytes(*spki):
        raise InvalidInput(f"TLS key file {key_path} does not match the certificate in {cert_path}")
    return cert


def server_context(cert: str, key: str, client_ca: str = "") -> ssl.SSLContext:
    """The server-side TLS context; raises ``InvalidInput`` with one clear line on a bad file."""
    leaf = _check_key_pair(cert, key)
    if leaf.not_valid_after_utc < datetime.now(UTC):
        log.warning("tls_certificate_expired", file=cert, not_after=leaf.not_valid_after_utc.isoformat())
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise InvalidInput(f"TLS certificate {cert} and key {key} can't be used: {exc}") from None
    if client_ca:
        _certificates(client_ca, "TLS client CA")
        try:
            context.load_verify_locations(cafile=client_ca)
        except (ssl.SSLError, OSError) as exc:
            raise InvalidInput(f"TLS client CA file {client_ca} can't be used: {exc}") from None
        # requested, not required: bearer-token clients connect without a certificate;
        # a certificate that is sent must verify against client_ca or the handshake fails
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


class _Transport(Protocol):
    def get_extra_info(self, name: str, default: Any = None) -> Any: ...


def peer_uri_sans(transport: _Transport | None) -> list[str] | None:
    """URI SANs of the client certificate verified on this connection; None without one.

    ``getpeercert()`` returns an empty dict unless the certificate was verified, so an
    unverified certificate can never be read here.
    """
    if transport is None:
        return None
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    cert = ssl_object.getpeercert()
    if not cert:
        return None
    return [str(value) for kind, value in cert.get("subjectAltName", ()) if kind == "URI"]


@dataclass(frozen=True, slots=True)
class WorkloadId:
    """Who a client certificate names: a service of a tenant (id or name)."""

    spiffe_id: str
    tenant: str
    service: str


def _malformed(why: str) -> Unauthenticated:
    return Unauthenticated(f"client certificate has a malformed SPIFFE ID: {why}; expected {SPIFFE_FORMAT}")


def parse_spiffe_id(uris: list[str], trust_domain: str) -> WorkloadId:
    """The workload a verified certificate's URI SANs name; ``Unauthenticated`` saying why not."""
    spiffe = [u for u in uris if u[: len(_SPIFFE_SCHEME)].lower() == _SPIFFE_SCHEME]
    if not spiffe:
        raise Unauthenticated(
            f"client certificate carries no SPIFFE ID (URI SAN {SPIFFE_FORMAT}) and no bearer token was sent"
        )
    if len(uris) != 1:
        raise _malformed("a certificate must carry exactly one URI SAN")
    uri = spiffe[0]
    if len(uri) > _MAX_SPIFFE_ID or not uri.startswith(_SPIFFE_SCHEME):
        raise _malformed("the scheme must be 'spiffe://' in lowercase and the ID at most 2048 characters")
    domain, _, path = uri[len(_SPIFFE_SCHEME) :].partition("/")
    if not domain or not _TRUST_DOMAIN.match(domain):
        raise _malformed("the trust domain may hold only lowercase letters, digits, '.', '-' and '_'")
    if domain != trust_domain:
        raise Unauthenticated(
            f"client certificate is of SPIFFE trust domain {domain[:80]!r}; "
            f"this server trusts {trust_domain!r}"
        )
    segments = path.split("/")
    if (
        len(segments) != 4
        or segments[0] != "tenant"
        or segments[2] != "service"
        or not all(_SEGMENT.match(s) and s not in (".", "..") for s in segments)
    ):
        raise _malformed("the path must be /tenant/<tenant>/service/<name>")
    tenant, service = segments[1], segments[3]
    if not SERVICE_NAME.match(service):
        raise _malformed(
            "the service name may hold only lowercase letters, digits and '-' "
            "(it names the namespace it may read)"
        )
    return WorkloadId(uri, tenant, service)
