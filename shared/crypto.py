"""Envelope encryption primitives on ``cryptography``: AES-256-GCM with bound context.

A secret value is sealed with its own random 256-bit data key (DEK); the DEK is
wrapped by a key-encryption key (KEK) that a ``KeyProvider`` holds. Every seal
takes an AAD built from the context (tenant, namespace, key, version …), so a
ciphertext copied to another row, tenant or version fails to open. Nonces are
96 random bits; callers keep each key well below 2**32 seals.

Failures never say anything about the plaintext: ``open_sealed`` raises
``DecryptionFailed`` with the context that failed, nothing more.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.errors import LLMConfigError
from shared.models import canonical_json

KEY_BYTES = 32
NONCE_BYTES = 12
FORMAT_VERSION = 1


class DecryptionFailed(LLMConfigError):
    status = 500
    code = "decryption_failed"
    title = "Ciphertext could not be opened"


def new_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def aad_for(**context: Any) -> bytes:
    """The associated data for a context; field order does not matter."""
    return canonical_json({"format": FORMAT_VERSION, **context})


def seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """nonce || ciphertext+tag."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def open_sealed(key: bytes, sealed: bytes, aad: bytes, what: str) -> bytes:
    if len(sealed) < NONCE_BYTES + 16:
        raise DecryptionFailed(f"{what}: ciphertext is truncated")
    try:
        return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], aad)
    except InvalidTag:
        raise DecryptionFailed(
            f"{what}: authentication failed (tampered, truncated, or moved from another record)"
        ) from None


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        raise DecryptionFailed(f"{what}: not valid base64") from None


@dataclass(frozen=True, slots=True)
class WrappedKey:
    """A DEK wrapped by one version of a tenant's KEK."""

    kek_id: str
    kek_version: int
    blob: str  # provider-specific text (base64 for local, vault:vN:… for Vault)


@dataclass(frozen=True, slots=True)
class Envelope:
    """Everything stored for one sealed value; the format version travels with it."""

    format: int
    wrapped_dek: WrappedKey
    ciphertext: str  # base64(nonce || ciphertext+tag)
