"""The ``vault`` key provider: HashiCorp Vault Transit holds each tenant's KEK.

One transit key per tenant, ``llmcm-<tenant_id>`` under a configurable mount
(default ``transit``), created on first use as an ``aes256-gcm96`` key with
``derived=true``. Vault only ever sees 256-bit data keys, never secret values.

Binding the AAD: every encrypt, decrypt and rewrap sends ``context`` =
base64(SHA-256(aad)); Vault derives the per-context key from it (HKDF), so a
wrapped DEK presented with another AAD (another tenant, namespace, key or
version) fails AES-GCM authentication inside Vault. We use derived-key context
rather than ``associated_data`` because Transit's ``rewrap`` endpoint accepts
``context`` but not ``associated_data``: with AAD a rewrap job could not move
wrapped keys to a new key version without seeing them. Only the hash is sent, so
Vault's audit log does not learn tenant or secret names.

Encryptions are counted per (tenant, transit key version) in the store, in the
``keks`` rows the local provider uses (here holding no key material, only the
count): every wrap and every rewrap adds one inside the caller's transaction.
Once a version has made ``max_encryptions`` (default 2**30, far below the 2**32
random-nonce bound of AES-GCM) the provider asks Transit to rotate, so the next
wraps use the new version; data keys on older versions stay readable and the
rewrap job moves them.

``hvac`` is synchronous: each call runs in a worker thread. Vault's answers are
translated here and never cross this module: anything that stops ``unwrap``
becomes ``DecryptionFailed``; other failures become ``Unavailable``. Messages
carry Vault's error text and the key name, never a token or key material. With
AppRole, a 403 triggers one fresh login and retry (the token may have expired).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import hvac  # type: ignore[import-untyped]
import hvac.exceptions  # type: ignore[import-untyped]
import requests

from server.keys.local import DEFAULT_MAX_ENCRYPTIONS
from server.storage import WriteTx
from shared.crypto import DecryptionFailed, WrappedKey
from shared.errors import InvalidInput, Unavailable
from shared.models import KekRecord

KEY_PREFIX = "llmcm-"
_CIPHERTEXT = re.compile(r"^vault:v(\d+):[A-Za-z0-9+/=]+$")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class VaultSettings:
    addr: str
    token: str = field(default="", repr=False)
    role_id: str = ""
    secret_id: str = field(default="", repr=False)
    mount: str = "transit"
    namespace: str = ""
    timeout: float = 10.0

    def __post_init__(self) -> None:
        if not self.addr:
            raise InvalidInput("the vault key provider needs vault_addr (env LLMCM_VAULT_ADDR or VAULT_ADDR)")
        if not self.token and not (self.role_id and self.secret_id):
            raise InvalidInput("the vault key provider needs vault_token, or vault_role_id + vault_secret_id")


class _VaultFailed(Exception):
    """Internal: one Vault call failed; ``reason`` is safe to show."""

    def __init__(self, reason: str, *, status: int | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


def _context(aad: bytes) -> str:
    return base64.b64encode(hashlib.sha256(aad).digest()).decode("ascii")


def latest_version(info: dict[str, Any]) -> int:
    """The newest version in a read-key answer: ``latest_version``, else the highest of ``keys``."""
    try:
        if "latest_version" in info:
            return int(info["latest_version"])
        return max(int(v) for v in info["keys"])
    except (KeyError, TypeError, ValueError):
        raise _VaultFailed("read key answered without a key version", status=None) from None


def ciphertext_version(blob: str) -> int:
    """N from ``vault:vN:…``; ``DecryptionFailed`` for anything else."""
    match = _CIPHERTEXT.match(blob)
    if match is None:
        raise DecryptionFailed("wrapped data key is not a Vault ciphertext (vault:vN:…)")
    return int(match.group(1))


class VaultKeyProvider:
    name = "vault"

    def __init__(
        self,
        settings: VaultSettings,
        *,
        key_prefix: str = KEY_PREFIX,
        max_encryptions: int = DEFAULT_MAX_ENCRYPTIONS,
    ) -> None:
        if max_encryptions < 1:
            raise InvalidInput("max_encryptions must be at least 1")
        self.settings = settings
        self.key_prefix = key_prefix
        self.max_encryptions = max_encryptions
        self._client = hvac.Client(
            url=settings.addr,
            token=settings.token or None,
            namespace=settings.namespace or None,
            timeout=settings.timeout,
        )
        self._ready: set[str] = set()  # transit keys known to exist (and be derived)
        self._login_lock = asyncio.Lock()
        self._closed = False

    async def __aenter__(self) -> VaultKeyProvider:
        if not self.settings.token:
            await self._login()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP session; safe to call twice."""
        if not self._closed:
            self._closed = True
            await asyncio.to_thread(self._client.adapter.close)

    # -- naming -----------------------------------------------------------------

    def key_name(self, tenant_id: str) -> str:
        return f"{self.key_prefix}{tenant_id}"

    def kek_id(self, tenant_id: str) -> str:
        return f"vault:{self.settings.mount}/{self.key_name(tenant_id)}"

    # -- calls ------------------------------------------------------------------

    async def _login(self) -> None:
        async with self._login_lock:
            try:
                await self._run(
                    lambda: self._client.auth.approle.login(
                        role_id=self.settings.role_id, secret_id=self.settings.secret_id
                    )
                )
            except _VaultFailed as exc:
                raise Unavailable(f"Vault AppRole login failed: {exc.reason}") from None

    async def _run(self, call: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(call)
        except hvac.exceptions.VaultError as exc:
            errors = getattr(exc, "errors", None) or [exc.args[0] if exc.args else type(exc).__name__]
            text = "; ".join(str(e) for e in errors)[:300]
            status = getattr(exc, "status_code", None) or _status_of(exc)
            raise _VaultFailed(f"{status or '?'} {text}", status=status) from None
        except requests.RequestException as exc:
            reason = f"cannot reach Vault at {self.settings.addr}: {type(exc).__name__}"
            raise _VaultFailed(reason, status=None) from None

    async def _call(self, call: Callable[[], T]) -> T:
        """Run one Vault call; with AppRole, log in again once on 403 (expired token)."""
        try:
            return await self._run(call)
        except _VaultFailed as exc:
            if exc.status != 403 or self.settings.token:
                raise
        await self._login()
        return await self._run(call)

    async def _ensure_key(self, tenant_id: str) -> str:
        name = self.key_name(tenant_id)
        if name in self._ready:
            return name
        mount = self.settings.mount
        try:
            await self._call(
                lambda: self._client.secrets.transit.create_key(
                    name, key_type="aes256-gcm96", derived=True, mount_point=mount
                )
            )
            info = await self._read_key(name)
        except _VaultFailed as exc:
            raise Unavailable(f"Vault transit key {mount}/{name} cannot be created: {exc.reason}") from None
        if not info.get("derived"):
            raise Unavailable(
                f"Vault transit key {mount}/{name} exists but is not derived; the AAD cannot be bound to it"
            )
        self._ready.add(name)
        return name

    async def _read_key(self, name: str) -> dict[str, Any]:
        mount = self.settings.mount
        reply = await self._call(lambda: self._client.secrets.transit.read_key(name, mount_point=mount))
        data = reply.get("data") if isinstance(reply, dict) else None
        if not isinstance(data, dict):
            raise _VaultFailed("unexpected answer to read key", status=None)
        return data

    # -- encryption budget --------------------------------------------------------

    async def _count(self, tx: WriteTx, tenant_id: str, version: int) -> None:
        """One more encryption by transit key ``version``; at the budget, rotate the key."""
        known = {k.version for k in await tx.keks(tenant_id)}
        if version in known:
            used = await tx.count_encryption(tenant_id, version)
        else:  # first use of this version here (or rotated outside this server): start counting
            await tx.insert_kek(KekRecord(tenant_id, version, self.kek_id(tenant_id), _now(), 1))
            known.add(version)
            used = 1
        if used >= self.max_encryptions and version == max(known):
            await self._rotate(tx, tenant_id, known)

    async def _rotate(self, tx: WriteTx, tenant_id: str, known: set[int]) -> int:
        """Transit rotate; the new version gets a counter row so ``key status`` shows it at once."""
        name = await self._ensure_key(tenant_id)
        mount = self.settings.mount
        try:
            await self._call(lambda: self._client.secrets.transit.rotate_key(name, mount_point=mount))
            version = latest_version(await self._read_key(name))
        except _VaultFailed as exc:
            raise Unavailable(f"Vault transit rotate of {mount}/{name} failed: {exc.reason}") from None
        if version not in known:
            await tx.insert_kek(KekRecord(tenant_id, version, self.kek_id(tenant_id), _now(), 0))
        return version

    # -- KeyProvider --------------------------------------------------------------

    async def wrap(self, tx: WriteTx, tenant_id: str, dek: bytes, aad: bytes) -> WrappedKey:
        name = await self._ensure_key(tenant_id)
        mount = self.settings.mount
        plaintext = base64.b64encode(dek).decode("ascii")
        try:
            reply = await self._call(
                lambda: self._client.secrets.transit.encrypt_data(
                    name, plaintext=plaintext, context=_context(aad), mount_point=mount
                )
            )
            blob = str(reply["data"]["ciphertext"])
        except _VaultFailed as exc:
            raise Unavailable(f"Vault transit encrypt with {mount}/{name} failed: {exc.reason}") from None
        except (KeyError, TypeError):
            raise Unavailable(f"Vault transit encrypt with {mount}/{name}: no ciphertext") from None
        wrapped = WrappedKey(self.kek_id(tenant_id), ciphertext_version(blob), blob)
        await self._count(tx, tenant_id, wrapped.kek_version)
        return wrapped

    async def unwrap(self, tenant_id: str, wrapped: WrappedKey, aad: bytes) -> bytes:
        if wrapped.kek_id != self.kek_id(tenant_id):
            raise DecryptionFailed("data key was wrapped for another tenant or provider")
        if ciphertext_version(wrapped.blob) != wrapped.kek_version:
            raise DecryptionFailed("wrapped data key: its Vault version does not match the envelope")
        name, mount = self.key_name(tenant_id), self.settings.mount
        try:
            reply = await self._call(
                lambda: self._client.secrets.transit.decrypt_data(
                    name, ciphertext=wrapped.blob, context=_context(aad), mount_point=mount
                )
            )
            dek = base64.b64decode(str(reply["data"]["plaintext"]), validate=True)
        except _VaultFailed as exc:
            if _outage(exc):
                raise Unavailable(f"Vault transit decrypt with {mount}/{name} failed: {exc.reason}") from None
            raise DecryptionFailed(
                f"wrapped data key: Vault transit decrypt with {mount}/{name} v{wrapped.kek_version} "
                f"failed ({exc.reason}); tampered, moved from another record, or Vault refused the request"
            ) from None
        except (KeyError, TypeError, ValueError):
            raise DecryptionFailed("wrapped data key: Vault answered without a valid plaintext") from None
        return dek

    async def rotate(self, tx: WriteTx, tenant_id: str) -> int:
        """Add a transit key version now (``key rotate``); returns it."""
        return await self._rotate(tx, tenant_id, {k.version for k in await tx.keks(tenant_id)})

    async def current_version(self, tenant_id: str) -> int:
        """The transit key's latest version (new wraps use it); 0 before the key exists."""
        name, mount = self.key_name(tenant_id), self.settings.mount
        try:
            return latest_version(await self._read_key(name))
        except _VaultFailed as exc:
            if exc.status == 404:
                return 0
            raise Unavailable(f"Vault transit read of {mount}/{name} failed: {exc.reason}") from None

    async def rewrap(self, tx: WriteTx, tenant_id: str, wrapped: WrappedKey, aad: bytes) -> WrappedKey:
        """The same DEK wrapped with the latest key version, by Vault's rewrap: it never leaves Vault.

        ``aad`` is needed because it is the derivation context the DEK was wrapped under. The
        rewrap is an encryption by the latest version, so it counts against that version's budget.
        """
        if wrapped.kek_id != self.kek_id(tenant_id):
            raise DecryptionFailed("data key was wrapped for another tenant or provider")
        name, mount = self.key_name(tenant_id), self.settings.mount
        try:
            reply = await self._call(
                lambda: self._client.secrets.transit.rewrap_data(
                    name, ciphertext=wrapped.blob, context=_context(aad), mount_point=mount
                )
            )
            blob = str(reply["data"]["ciphertext"])
        except _VaultFailed as exc:
            if _outage(exc):  # the rewrap job pauses and retries; it must not report tampering
                raise Unavailable(f"Vault transit rewrap with {mount}/{name} failed: {exc.reason}") from None
            raise DecryptionFailed(
                f"wrapped data key: Vault transit rewrap with {mount}/{name} failed ({exc.reason})"
            ) from None
        except (KeyError, TypeError):
            raise Unavailable(f"Vault transit rewrap with {mount}/{name}: no ciphertext") from None
        moved = WrappedKey(wrapped.kek_id, ciphertext_version(blob), blob)
        await self._count(tx, tenant_id, moved.kek_version)
        return moved


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _outage(exc: _VaultFailed) -> bool:
    """Unreachable, sealed, overloaded, or our token refused: not evidence of tampering."""
    return exc.status is None or exc.status >= 500 or exc.status in (403, 429)


def _status_of(exc: Exception) -> int | None:
    for status, cls in (
        (400, hvac.exceptions.InvalidRequest),
        (401, hvac.exceptions.Unauthorized),
        (403, hvac.exceptions.Forbidden),
        (404, hvac.exceptions.InvalidPath),
        (500, hvac.exceptions.InternalServerError),
        (503, hvac.exceptions.VaultDown),
    ):
        if isinstance(exc, cls):
            return status
    return None
