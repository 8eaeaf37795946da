"""The key-provider interface: wrap and unwrap data keys with a tenant's KEK.

Providers never see plaintext secret values, only 256-bit data keys. ``wrap``
runs inside the secret's write transaction so a provider that keeps state in
the store (the local one: KEK versions and their encryption counters) commits
it atomically with the secret; a provider with its own service (Vault Transit)
ignores the transaction.
"""

from __future__ import annotations

from typing import Protocol

from server.storage import WriteTx
from shared.crypto import WrappedKey


class KeyProvider(Protocol):
    name: str

    async def wrap(self, tx: WriteTx, tenant_id: str, dek: bytes, aad: bytes) -> WrappedKey:
        """Wrap ``dek`` with the tenant's current KEK version (creating or rotating it as needed)."""
        ...

    async def unwrap(self, tenant_id: str, wrapped: WrappedKey, aad: bytes) -> bytes:
        """The data key; ``DecryptionFailed`` if the wrapped key was tampered with or moved."""
        ...

    async def rewrap(self, tx: WriteTx, tenant_id: str, wrapped: WrappedKey, aad: bytes) -> WrappedKey:
        """The same data key wrapped by the current KEK version (the value stays sealed as it is)."""
        ...

    async def current_version(self, tenant_id: str) -> int:
        """The KEK version new wraps use (0 before the first)."""
        ...

    async def rotate(self, tx: WriteTx, tenant_id: str) -> int:
        """Add a KEK version; new wraps use it. Returns the new version."""
        ...
