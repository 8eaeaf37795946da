"""Key providers for envelope encryption: local (master key + stored KEKs); Vault later."""

from __future__ import annotations

from server.keys.base import KeyProvider
from server.keys.local import LocalKeyProvider

__all__ = ["KeyProvider", "LocalKeyProvider"]
