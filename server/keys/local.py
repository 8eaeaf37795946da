"""The ``local`` key provider: a master key wraps per-tenant KEKs kept in the store.

The master key (32 bytes) comes from a file written by ``llm-config-server init``
(mode 0600) or from ``LLMCM_MASTER_KEY``; it never touches the database. Each
tenant has KEK versions stored sealed by the master key (AAD: tenant and
version). A KEK version is retired after ``max_encryptions`` wraps (default
2**30, far below the 2**32 random-nonce bound of AES-GCM): the next wrap adds a
version. Unsealed KEKs are cached in memory by (tenant, version).
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

from server.storage import Storage, WriteTx
from shared.crypto import (
    KEY_BYTES,
    DecryptionFailed,
    WrappedKey,
    aad_for,
    b64,
    new_key,
    open_sealed,
    seal,
    unb64,
)
from shared.errors import InvalidInput
from shared.models import KekRecord

DEFAULT_MAX_ENCRYPTIONS = 2**30


def parse_master_key(text: str, source: str) -> bytes:
    """32 bytes, base64-encoded (``head -c 32 /dev/urandom | base64``)."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"master key in {source} is not base64") from None
    if len(key) != KEY_BYTES:
        raise InvalidInput(
            f"master key in {source} must be {KEY_BYTES} bytes, base64-encoded; got {len(key)}"
        )
    return key


def create_master_key_file(path: Path) -> bool:
    """Write a new random master key with mode 0600 unless the file exists; True if written."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR | stat.S_IWUSR)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as fh:
        fh.write(b64(new_key()) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return True


def load_master_key(inline: str, path: Path) -> bytes:
    """The key given inline (env) wins; else the file, which must not be readable by others."""
    if inline:
        return parse_master_key(inline, "LLMCM_MASTER_KEY")
    try:
        mode = path.stat().st_mode
        text = path.read_text()
    except OSError as exc:
        raise InvalidInput(
            f"cannot read the master key file {path}: {exc.strerror}; run 'llm-config-server init' "
            "or set LLMCM_MASTER_KEY"
        ) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InvalidInput(f"master key file {path} is readable by others; chmod 600 it")
    return parse_master_key(text, str(path))


class LocalKeyProvider:
    name = "local"

    def __init__(
        self, storage: Storage, master_key: bytes, *, max_encryptions: int = DEFAULT_MAX_ENCRYPTIONS
    ) -> None:
        if max_encryptions < 1:
            raise InvalidInput("max_encryptions must be at least 1")
        self._storage = storage
        self._master = master_key
        self.max_encryptions = max_encryptions
        self._keks: dict[tuple[str, int], bytes] = {}

    @staticmethod
    def kek_id(tenant_id: str) -> str:
        return f"local:{tenant_id}"

    def _kek_aad(self, tenant_id: str, version: int) -> bytes:
        return aad_for(purpose="kek", tenant=tenant_id, version=version)

    def _unseal(self, record: KekRecord) -> bytes:
        cached = self._keks.get((record.tenant_id, record.version))
        if cached is None:
            if record.sealed.startswith("vault:"):  # an encryption counter of the vault provider
                raise DecryptionFailed(
                    f"key-encryption key v{record.version} is held by Vault ({record.sealed}); "
                    "serve with --key-provider vault"
                )
            cached = open_sealed(
                self._master,
                unb64(record.sealed, "key-encryption key"),
                self._kek_aad(record.tenant_id, record.version),
                f"key-encryption key v{record.version} (wrong master key?)",
            )
            self._keks[(record.tenant_id, record.version)] = cached
        return cached

    async def _add_version(self, tx: WriteTx, tenant_id: str, version: int) -> KekRecord:
        kek = new_key()
        sealed = b64(seal(self._master, kek, self._kek_aad(tenant_id, version)))
        now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        record = KekRecord(tenant_id, version, sealed, now, 0)
        await tx.insert_kek(record)
        self._keks[(tenant_id, version)] = kek
        return record

    async def rotate(self, tx: WriteTx, tenant_id: str) -> int:
        versions = await tx.keks(tenant_id)
        record = await self._add_version(tx, tenant_id, (versions[-1].version if versions else 0) + 1)
        return record.version

    async def wrap(self, tx: WriteTx, tenant_id: str, dek: bytes, aad: bytes) -> WrappedKey:
        versions = await tx.keks(tenant_id)
        current = versions[-1] if versions else await self._add_version(tx, tenant_id, 1)
        if current.encryptions >= self.max_encryptions:
            current = await self._add_version(tx, tenant_id, current.version + 1)
        await tx.count_encryption(tenant_id, current.version)
        kek = self._unseal(current)
        blob = seal(kek, dek, aad)
        return WrappedKey(self.kek_id(tenant_id), current.version, b64(blob))

    async def rewrap(self, tx: WriteTx, tenant_id: str, wrapped: WrappedKey, aad: bytes) -> WrappedKey:
        dek = await self.unwrap(tenant_id, wrapped, aad)
        return await self.wrap(tx, tenant_id, dek, aad)

    async def current_version(self, tenant_id: str) -> int:
        versions = await self._storage.keks(tenant_id)
        return versions[-1].version if versions else 0

    async def unwrap(self, tenant_id: str, wrapped: WrappedKey, aad: bytes) -> bytes:
        if wrapped.kek_id != self.kek_id(tenant_id):
            raise DecryptionFailed("data key was wrapped for another tenant or provider")
        blob = unb64(wrapped.blob, "wrapped data key")
        kek = self._keks.get((tenant_id, wrapped.kek_version))  # versions never change once made
        if kek is None:
            versions = await self._storage.keks(tenant_id)
            record = next((k for k in versions if k.version == wrapped.kek_version), None)
            if record is None:
                raise DecryptionFailed(f"key-encryption key v{wrapped.kek_version} does not exist")
            kek = self._unseal(record)
        return open_sealed(kek, blob, aad, "wrapped data key")
