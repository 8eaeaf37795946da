"""Key providers for envelope encryption: local (master key + stored KEKs) or Vault Transit."""

from __future__ import annotations

from server.keys.base import KeyProvider
from server.keys.local import LocalKeyProvider
from server.keys.vault import VaultKeyProvider, VaultSettings

__all__ = ["KeyProvider", "LocalKeyProvider", "VaultKeyProvider", "VaultSettings"]
