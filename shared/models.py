"""Domain values shared by the server, the agent and the CLI.

Names are validated here and only here: a namespace or key that passes
``validate_namespace`` / ``validate_key`` can be used as a path component by
the agent and as a storage key by the server. The patterns are ASCII-only and
matched in full, which is also the path-traversal guard (``..``, encoded
separators, NUL, backslashes and Unicode look-alikes never match).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from shared.errors import InvalidInput

NAMESPACE_RE = re.compile(r"[a-z0-9-]+(?:/[a-z0-9-]+)*", re.ASCII)
KEY_RE = re.compile(r"[a-z0-9_-]+", re.ASCII)
NAMESPACE_MAX = 500
KEY_MAX = 255
# Path segments with a meaning of their own under /v1/configs/{namespace}/{key}/…
RESERVED_KEYS = frozenset({"history", "diff", "rollback", "versions", "revoke"})


class Environment(StrEnum):
    GLOBAL = "global"
    DEVELOPMENT = "development"
    STAGING = "staging"
    PRODUCTION = "production"
    EDGE = "edge"


ENV_ALIASES = {"dev": Environment.DEVELOPMENT, "prod": Environment.PRODUCTION}

DEFAULT_CHAINS: dict[Environment, tuple[Environment, ...]] = {
    Environment.GLOBAL: (Environment.GLOBAL,),
    Environment.DEVELOPMENT: (Environment.GLOBAL, Environment.DEVELOPMENT),
    Environment.STAGING: (Environment.GLOBAL, Environment.DEVELOPMENT, Environment.STAGING),
    Environment.PRODUCTION: (
        Environment.GLOBAL,
        Environment.DEVELOPMENT,
        Environment.STAGING,
        Environment.PRODUCTION,
    ),
    Environment.EDGE: (Environment.GLOBAL, Environment.EDGE),
}


CLASSIFICATIONS = ("public", "internal", "confidential", "restricted")  # least to most sensitive


class ChangeType(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    ROLLBACK = "rollback"


def _describe(text: str) -> str:
    """A printable, bounded rendering of a rejected name for an error message."""
    shown = text[:80].encode("unicode_escape").decode("ascii")
    return repr(shown) + ("…" if len(text) > 80 else "")


def parse_environment(raw: str | None, *, default: Environment = Environment.GLOBAL) -> Environment:
    if raw is None or raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in ENV_ALIASES:
        return ENV_ALIASES[lowered]
    try:
        return Environment(lowered)
    except ValueError:
        allowed = ", ".join(e.value for e in Environment)
        raise InvalidInput(
            f"unknown environment {_describe(raw)}; use one of {allowed} (aliases: dev, prod)"
        ) from None


def validate_namespace(namespace: str) -> str:
    if not namespace:
        raise InvalidInput("namespace is empty")
    if len(namespace) > NAMESPACE_MAX:
        raise InvalidInput(f"namespace is {len(namespace)} characters long; the limit is {NAMESPACE_MAX}")
    if not NAMESPACE_RE.fullmatch(namespace):
        raise InvalidInput(
            f"invalid namespace {_describe(namespace)}: use lowercase a-z, 0-9 and '-' in "
            "segments separated by single '/' (pattern ^[a-z0-9-]+(/[a-z0-9-]+)*$)"
        )
    return namespace


def validate_key(key: str) -> str:
    if not key:
        raise InvalidInput("key is empty")
    if len(key) > KEY_MAX:
        raise InvalidInput(f"key is {len(key)} characters long; the limit is {KEY_MAX}")
    if not KEY_RE.fullmatch(key):
        raise InvalidInput(
            f"invalid key {_describe(key)}: use lowercase a-z, 0-9, '_' and '-' (pattern ^[a-z0-9_-]+$)"
        )
    if key in RESERVED_KEYS:
        raise InvalidInput(f"key {key!r} is reserved; reserved keys: {', '.join(sorted(RESERVED_KEYS))}")
    return key


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(data: str | bytes, source: str) -> Any:
    """Strict JSON (no NaN or Infinity); ``InvalidInput`` naming ``source`` and where it broke."""
    try:
        return json.loads(data, parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise InvalidInput(f"{source} is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"{source} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except ValueError as exc:
        raise InvalidInput(f"{source} is not valid JSON: {exc}") from None


def redact_url(url: str) -> str:
    """A URL safe to print: any user-info (``user:password@``) is replaced by ``***@``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        authority = "***@" + authority.rsplit("@", 1)[1]
    return f"{scheme}{sep}{authority}{slash}{path}"


def canonical_json(value: Any) -> bytes:
    """The byte form hashed and compared everywhere: sorted keys, no spaces, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_of(value: Any) -> str:
    return hashlib.sha256(canonical_json(value)).hexdigest()


@dataclass(frozen=True, slots=True)
class ConfigRef:
    """Where a config entry lives inside one tenant."""

    namespace: str
    key: str
    environment: Environment

    @classmethod
    def parse(cls, namespace: str, key: str, environment: str | None) -> ConfigRef:
        return cls(validate_namespace(namespace), validate_key(key), parse_environment(environment))

    def __str__(self) -> str:
        return f"{self.namespace}/{self.key}@{self.environment.value}"


@dataclass(frozen=True, slots=True)
class ConfigVersion:
    """One immutable version of a config entry."""

    namespace: str
    key: str
    environment: Environment
    version: int
    revision: int
    value: dict[str, Any]
    sha256: str
    change_type: ChangeType
    author: str
    message: str
    created_at: str
    patch: list[dict[str, Any]]
    tombstone: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def ref(self) -> ConfigRef:
        return ConfigRef(self.namespace, self.key, self.environment)

    def to_dict(self, *, with_patch: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "namespace": self.namespace,
            "key": self.key,
            "environment": self.environment.value,
            "version": self.version,
            "revision": self.revision,
            "value": self.value,
            "sha256": self.sha256,
            "change_type": self.change_type.value,
            "author": self.author,
            "message": self.message,
            "created_at": self.created_at,
            "deleted": self.tombstone,
            "metadata": self.metadata,
        }
        if with_patch:
            out["patch"] = self.patch
        return out


class SecretStatus(StrEnum):
    ACTIVE = "active"  # the current version
    GRACE = "grace"  # replaced, still valid until valid_until
    DEPRECATED = "deprecated"  # replaced and past its grace period: no longer served
    REVOKED = "revoked"


@dataclass(frozen=True, slots=True)
class SecretVersion:
    """One sealed version of a secret; never carries the plaintext."""

    namespace: str
    key: str
    version: int
    revision: int
    status: SecretStatus
    format: int
    kek_id: str
    kek_version: int
    wrapped_dek: str
    ciphertext: str
    created_at: str
    author: str
    message: str
    valid_until: str | None = None
    expires_at: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Metadata only: the sealed value and wrapped key stay in the store."""
        return {
            "namespace": self.namespace,
            "key": self.key,
            "version": self.version,
            "revision": self.revision,
            "status": self.status.value,
            "kek_id": self.kek_id,
            "kek_version": self.kek_version,
            "created_at": self.created_at,
            "author": self.author,
            "message": self.message,
            "valid_until": self.valid_until,
            "expires_at": self.expires_at,
            "metadata": self.metadata,
        }


@dataclass(frozen=True, slots=True)
class KekRecord:
    tenant_id: str
    version: int
    sealed: str
    created_at: str
    encryptions: int


@dataclass(frozen=True, slots=True)
class Tenant:
    id: str
    name: str
    status: str
    created_at: str
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "created_at": self.created_at,
            "settings": self.settings,
        }


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """A bearer token as stored: only the hash of the secret part is kept."""

    id: str
    tenant_id: str
    name: str
    token_hash: str
    roles: tuple[str, ...]
    namespaces: tuple[str, ...]
    created_at: str
    expires_at: str | None
    revoked: bool
    created_by: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tenant_id": self.tenant_id,
            "name": self.name,
            "roles": list(self.roles),
            "namespaces": list(self.namespaces),
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "revoked": self.revoked,
            "created_by": self.created_by,
        }


@dataclass(frozen=True, slots=True)
class AuditRecord:
    seq: int
    chain: str
    time: str
    tenant_id: str
    actor: str
    action: str
    resource: str
    result: str
    request_id: str
    metadata: dict[str, Any]
    prev_hash: str
    hash: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "chain": self.chain,
            "time": self.time,
            "tenant_id": self.tenant_id,
            "actor": self.actor,
            "action": self.action,
            "resource": self.resource,
            "result": self.result,
            "request_id": self.request_id,
            "metadata": self.metadata,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


@dataclass(frozen=True, slots=True)
class SchemaRecord:
    name: str
    schema: dict[str, Any]
    builtin: bool
    created_at: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "schema": self.schema,
            "builtin": self.builtin,
            "created_at": self.created_at,
        }


@dataclass(frozen=True, slots=True)
class SchemaBinding:
    id: str
    schema_name: str
    namespace_glob: str
    key_glob: str
    created_at: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "schema": self.schema_name,
            "namespace": self.namespace_glob,
            "key": self.key_glob,
            "created_at": self.created_at,
        }
