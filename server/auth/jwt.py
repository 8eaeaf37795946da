"""JWT bearer tokens from an OIDC provider, verified against its JWKS (a file or a URL).

Only RS256 and ES256 are accepted. The algorithm is decided by the key, never by
the token: a JWKS entry is RSA (RS256) or EC P-256 (ES256), symmetric (``oct``)
and other keys are ignored, and a token whose header names another algorithm
(``none``, ``HS256`` "signed" with the public key, ...) is refused before any key
is touched. Issuer, audience, ``exp`` and ``nbf`` are checked with a small leeway;
``exp``, ``iss``, ``aud`` and ``sub`` must be present.

The key set is read at start-up and re-read when a token names a key id it does
not hold (the provider rotated its keys), at most once per ``refresh_interval``,
and after ``max_age`` in any case. A URL is fetched with aiohttp; plain ``http://``
is accepted only on loopback. Failures raise ``Unauthenticated`` with a reason that
never quotes the token; a key set that can't be fetched is ``Unavailable``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import jwt
import structlog

from shared.errors import InvalidInput, Unauthenticated, Unavailable
from shared.models import redact_url

log = structlog.get_logger("llmcm.auth")

ALGORITHMS = ("RS256", "ES256")
_MAX_JWKS_BYTES = 1 << 20
_MAX_SUBJECT = 255
_RETRY_EMPTY = 5.0  # seconds between fetches while no key set was ever loaded


@dataclass(frozen=True, slots=True)
class JwtSettings:
    jwks: str  # a file path or an http(s) URL
    issuer: str
    audience: str
    tenant_claim: str = "tenant"
    roles_claim: str = "roles"
    namespaces_claim: str = "namespaces"
    leeway: float = 30.0


@dataclass(frozen=True, slots=True)
class JwtIdentity:
    """What a verified token says: who, in which tenant, with which roles and scopes."""

    subject: str
    tenant: str
    roles: tuple[str, ...]
    namespaces: tuple[str, ...] | None  # None: the token has no namespaces claim


def _is_url(source: str) -> bool:
    return source.startswith(("https://", "http://"))


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if not parts.hostname:
        raise InvalidInput(f"JWKS URL {url} has no host")
    if parts.scheme == "http":
        try:
            loopback = ipaddress.ip_address(parts.hostname).is_loopback
        except ValueError:
            loopback = parts.hostname == "localhost"
        if not loopback:
            raise InvalidInput(f"JWKS URL {url} must use https:// (http:// only on loopback)")


def parse_jwks(raw: bytes, where: str) -> dict[str | None, list[jwt.PyJWK]]:
    """Key id -> usable verification keys (RS256 from RSA, ES256 from EC P-256); others dropped."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput(f"JWKS at {where} is not JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise InvalidInput(f"JWKS at {where} is not a JWK set: it needs a 'keys' list")
    keys: dict[str | None, list[jwt.PyJWK]] = {}
    for entry in doc["keys"]:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        kty, crv, alg = entry.get("kty"), entry.get("crv"), entry.get("alg")
        if kty == "RSA" and alg in (None, "RS256"):
            algorithm = "RS256"
        elif kty == "EC" and crv == "P-256" and alg in (None, "ES256"):
            algorithm = "ES256"
        else:
            continue  # oct (HS*), OKP, other curves and algorithms are never used
        try:
            key = jwt.PyJWK(entry, algorithm)
        except jwt.PyJWTError:
            continue
        kid = entry.get("kid")
        keys.setdefault(kid if isinstance(kid, str) else None, []).append(key)
    if not keys:
        raise InvalidInput(f"JWKS at {where} holds no usable RS256 (RSA) or ES256 (EC P-256) key")
    return keys


def _claim(claims: dict[str, Any], name: str) -> Any:
    """A claim by name; a dotted name reaches into nested objects (``realm_access.roles``)."""
    if name in claims:
        return claims[name]
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _strings(value: Any) -> tuple[str, ...] | None:
    """A list of strings, or one space-separated string (as OAuth scopes are); None otherwise."""
    if isinstance(value, str):
        return tuple(value.split())
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    return None


class JwtVerifier:
    """Verifies JWTs against a JWKS; an async context manager whose close is safe twice."""

    def __init__(
        self,
        settings: JwtSettings,
        *,
        refresh_interval: float = 60.0,
        max_age: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.refresh_interval = refresh_interval
        self.max_age = max_age
        self._clock = clock
        self._is_url = _is_url(settings.jwks)
        if self._is_url:
            _check_url(settings.jwks)
        self._keys: dict[str | None, list[jwt.PyJWK]] | None = None
        self._loaded_at = -float("inf")
        self._attempted_at = -float("inf")
        self._lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> JwtVerifier:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    # -- the key set -------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the key set once: a bad file stops start-up; a URL that fails is retried on use."""
        try:
            await self._load()
        except (InvalidInput, Unavailable) as exc:
            if not self._is_url:
                raise
            log.warning("jwks_unavailable", source=redact_url(self.settings.jwks), error=exc.detail)

    async def _read(self) -> bytes:
        source = self.settings.jwks
        if not self._is_url:
            try:
                return await asyncio.to_thread(Path(source).read_bytes)
            except FileNotFoundError:
                raise InvalidInput(f"JWKS file {source} does not exist") from None
            except OSError as exc:
                raise InvalidInput(f"JWKS file {source} cannot be read: {exc.strerror or exc}") from None
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        try:
            async with self._session.get(source, allow_redirects=False) as response:
                if response.status != 200:
                    raise Unavailable(f"JWKS at {source} answered HTTP {response.status}")
                body = await response.content.read(_MAX_JWKS_BYTES + 1)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unavailable(f"JWKS at {source} could not be fetched ({type(exc).__name__})") from None
        if len(body) > _MAX_JWKS_BYTES:
            raise Unavailable(f"JWKS at {source} is larger than {_MAX_JWKS_BYTES} bytes")
        return body

    async def _load(self) -> None:
        self._attempted_at = self._clock()
        keys = parse_jwks(await self._read(), self.settings.jwks)
        self._keys, self._loaded_at = keys, self._clock()
        log.info("jwks_loaded", source=redact_url(self.settings.jwks), kids=sorted(k or "" for k in keys))

    async def _refresh(self) -> None:
        """Re-read the key set unless that was tried within ``refresh_interval``.

        Without a key set yet, retries come sooner (``_RETRY_EMPTY``) and a failure is the
        caller's; with one, a failed refresh keeps the keys we have and is only logged.
        """
        async with self._lock:
            interval = self.refresh_interval if self._keys is not None else _RETRY_EMPTY
            if self._clock() - self._attempted_at >= interval:
                try:
                    await self._load()
                except (InvalidInput, Unavailable) as exc:
                    log.warning(
                        "jwks_refresh_failed", source=redact_url(self.settings.jwks), error=exc.detail
                    )
        if self._keys is None:
            raise Unavailable(
                "cannot verify the JWT: the key set (JWKS) could not be loaded; see server logs"
            )

    async def _keys_for(self, kid: str | None) -> dict[str | None, list[jwt.PyJWK]]:
        """The key set, refreshed when it is missing, old, or lacks ``kid``."""
        keys = self._keys
        if keys is None or self._clock() - self._loaded_at >= self.max_age:
            await self._refresh()
        elif kid is not None and kid not in keys:
            await self._refresh()  # the provider may have rotated its keys
        assert self._keys is not None
        return self._keys

    # -- tokens ------------------------------------------------------------------------------

    async def verify(self, token: str) -> JwtIdentity:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthenticated("invalid token: neither an lcm_ token nor a well-formed JWT") from None
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            shown = alg[:20] if isinstance(alg, str) else type(alg).__name__
            raise Unauthenticated(f"JWT algorithm {shown!r} is refused; only RS256 and ES256 are accepted")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise Unauthenticated("JWT header 'kid' must be a string")
        found = (await self._keys_for(kid)).get(kid)
        if found is None:
            if kid is None:
                raise Unauthenticated("JWT header has no 'kid' and the key set has no key without one")
            raise Unauthenticated(f"JWT key id {kid[:64]!r} is not in the key set (unknown kid)")
        keys = [k for k in found if k.algorithm_name == alg]
        if not keys:
            raise Unauthenticated(f"JWT says {alg} but its key {str(kid)[:64]!r} is not an {alg} key")
        claims = self._decode(token, keys, alg)
        return self._identity(claims)

    def _decode(self, token: str, keys: list[jwt.PyJWK], alg: str) -> dict[str, Any]:
        s = self.settings
        for i, key in enumerate(keys):
            try:
                return jwt.decode(
                    token,
                    key.key,  # the public key itself: the algorithm is pinned below, not read from it
                    algorithms=[alg],
                    audience=s.audience,
                    issuer=s.issuer,
                    leeway=s.leeway,
                    options={"require": ["exp", "iss", "aud", "sub"]},
                )
            except jwt.InvalidSignatureError:
                if i == len(keys) - 1:
                    raise Unauthenticated("JWT signature does not verify (bad signature)") from None
            except jwt.ExpiredSignatureError:
                raise Unauthenticated("JWT has expired") from None
            except jwt.ImmatureSignatureError:
                raise Unauthenticated("JWT is not valid yet (nbf or iat is in the future)") from None
            except jwt.InvalidAudienceError:
                raise Unauthenticated(f"JWT audience is not {s.audience!r} (wrong audience)") from None
            except jwt.InvalidIssuerError:
                raise Unauthenticated(f"JWT issuer is not {s.issuer!r} (wrong issuer)") from None
            except jwt.MissingRequiredClaimError as exc:
                raise Unauthenticated(f"JWT lacks the required claim {exc.claim!r}") from None
            except jwt.PyJWTError as exc:
                # the library's messages name claims, never the token; keep only the class
                raise Unauthenticated(f"invalid JWT ({type(exc).__name__})") from None
        raise Unauthenticated("JWT signature does not verify (bad signature)")  # pragma: no cover

    def _identity(self, claims: dict[str, Any]) -> JwtIdentity:
        s = self.settings
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject or len(subject) > _MAX_SUBJECT:
            raise Unauthenticated(f"JWT 'sub' must be a string of 1-{_MAX_SUBJECT} characters")
        if not subject.isprintable():
            raise Unauthenticated("JWT 'sub' must be printable text")
        tenant = _claim(claims, s.tenant_claim)
        if not isinstance(tenant, str) or not tenant:
            raise Unauthenticated(f"JWT lacks the tenant claim {s.tenant_claim!r} (a tenant id or name)")
        roles = _strings(_claim(claims, s.roles_claim))
        if not roles:
            raise Unauthenticated(f"JWT carries no roles in claim {s.roles_claim!r} (a list of role names)")
        raw_scopes = _claim(claims, s.namespaces_claim)
        namespaces = None if raw_scopes is None else _strings(raw_scopes)
        if raw_scopes is not None and namespaces is None:
            raise Unauthenticated(f"JWT claim {s.namespaces_claim!r} must be a list of namespaces")
        return JwtIdentity(subject, tenant[:200], roles, namespaces)
