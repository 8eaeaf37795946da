"""Server configuration: one frozen object, built once from defaults, a TOML file,
``LLMCM_*`` environment variables and command-line flags (later wins).

Nothing else in the server reads ``os.environ``. Settings that only make sense
together (a TLS certificate and its key, a client CA and a SPIFFE trust domain,
a JWKS and the issuer and audience its tokens must name) are checked together
when the object is built, so a half-configured server never starts.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from shared.errors import InvalidInput

DEFAULT_DATA_DIR = "./llmcm-data"
# SPIFFE trust domain names: lowercase letters, digits, '.', '-' and '_' (SPIFFE ID standard, 2.1)
_TRUST_DOMAIN = re.compile(r"^[a-z0-9._-]{1,255}$")
_VAULT_MOUNT = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")
_CLAIM_NAME = re.compile(r"^[A-Za-z0-9_.:/-]{1,100}$")
_REDIS_PREFIX = re.compile(r"^[A-Za-z0-9:_.-]{0,64}$")
_BOOLS = {
    "1": True,
    "true": True,
    "yes": True,
    "on": True,
    "0": False,
    "false": False,
    "no": False,
    "off": False,
}


@dataclass(frozen=True, slots=True)
class ServerConfig:
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    storage: str = ""  # "" means SQLite in data_dir
    host: str = "127.0.0.1"
    port: int = 8080
    grpc_port: int = 50051  # env LLMCM_GRPC_PORT; 0 turns the gRPC listener off
    redis: str = ""  # redis:// or rediss:// URL: pub/sub, shared cache and limits across replicas
    redis_prefix: str = "llmcm:"  # every Redis key and channel starts with it (one per deployment)
    fallback_poll_interval: float = 1.0  # seconds: watched tenants polled while notices may be lost
    safety_poll_interval: float = 10.0  # seconds: the same poll while Redis is up, as a safety net
    max_body_bytes: int = 1 << 20
    log_level: str = "info"
    log_format: str = "json"
    shutdown_timeout: float = 10.0
    # transport security (README: Transport security); "" means off
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""  # request client certificates (mTLS) verified against this CA
    spiffe_trust_domain: str = ""
    # JWT bearer tokens from an OIDC provider; "" means off
    jwt_jwks: str = ""  # a file path or an https:// URL
    jwt_issuer: str = ""
    jwt_audience: str = ""
    jwt_tenant_claim: str = "tenant"
    jwt_roles_claim: str = "roles"
    jwt_namespaces_claim: str = "namespaces"
    jwt_allow_global_admin: bool = False
    jwt_leeway: float = 30.0
    # envelope encryption, local key provider: the master key inline (base64; env
    # LLMCM_MASTER_KEY) wins over the file (default <data dir>/master.key, mode 0600)
    master_key: str = field(default="", repr=False)
    master_key_file: str = ""
    kek_max_encryptions: int = 2**30
    rewrap_rate: float = 200.0  # data keys re-wrapped per second after a KEK rotation
    allow_insecure_secrets: bool = False  # serve secret values over plain HTTP to remote peers
    due_scan_interval: float = 60.0  # seconds between scans for secrets due for rotation
    # key provider: "local" (above) or "vault" (HashiCorp Vault Transit, README: Vault);
    # auth by vault_token, or AppRole with vault_role_id + vault_secret_id
    key_provider: str = "local"
    vault_addr: str = ""  # env LLMCM_VAULT_ADDR, else VAULT_ADDR
    vault_token: str = field(default="", repr=False)  # env LLMCM_VAULT_TOKEN, else VAULT_TOKEN
    vault_role_id: str = ""
    vault_secret_id: str = field(default="", repr=False)
    vault_mount: str = "transit"
    vault_namespace: str = ""  # env LLMCM_VAULT_NAMESPACE, else VAULT_NAMESPACE

    @property
    def master_key_path(self) -> Path:
        return Path(self.master_key_file) if self.master_key_file else self.data_dir / "master.key"

    def __post_init__(self) -> None:
        if self.grpc_port and self.grpc_port == self.port:
            raise InvalidInput(
                f"grpc_port and port are both {self.port}: the REST and gRPC listeners need two ports"
            )
        if bool(self.tls_cert) != bool(self.tls_key):
            raise InvalidInput("--tls-cert and --tls-key go together: give both or neither")
        if self.tls_client_ca and not self.tls_cert:
            raise InvalidInput(
                "--tls-client-ca needs --tls-cert and --tls-key: client certificates ride on TLS"
            )
        if bool(self.tls_client_ca) != bool(self.spiffe_trust_domain):
            raise InvalidInput(
                "--tls-client-ca and --spiffe-trust-domain go together: a client certificate "
                "authenticates by the SPIFFE ID of that trust domain"
            )
        if self.spiffe_trust_domain and not _TRUST_DOMAIN.match(self.spiffe_trust_domain):
            raise InvalidInput(
                "spiffe_trust_domain must be a trust domain name such as 'example.org' "
                "(lowercase letters, digits, '.', '-', '_'), without 'spiffe://'"
            )
        jwt_parts = {
            "--jwt-jwks": self.jwt_jwks,
            "--jwt-issuer": self.jwt_issuer,
            "--jwt-audience": self.jwt_audience,
        }
        if any(jwt_parts.values()) and not all(jwt_parts.values()):
            missing = ", ".join(flag for flag, value in jwt_parts.items() if not value)
            raise InvalidInput(
                f"JWT authentication needs --jwt-jwks, --jwt-issuer and --jwt-audience; missing {missing}"
            )
        for name in ("jwt_tenant_claim", "jwt_roles_claim", "jwt_namespaces_claim"):
            if not _CLAIM_NAME.match(getattr(self, name)):
                raise InvalidInput(f"{name} must be a claim name (letters, digits, '_', '.', ':', '/', '-')")
        if not 0 <= self.jwt_leeway <= 300:
            raise InvalidInput("jwt_leeway must be between 0 and 300 seconds")
        if not 0 < self.due_scan_interval <= 86400:
            raise InvalidInput("due_scan_interval must be more than 0 and at most 86400 seconds")
        self._check_cluster()
        self._check_vault()

    def _check_cluster(self) -> None:
        if self.redis:
            if not self.redis.startswith(("redis://", "rediss://", "unix://")):
                raise InvalidInput("redis must be a redis://, rediss:// or unix:// URL (LLMCM_REDIS)")
            if not self.storage.startswith(("postgresql://", "postgres://")):
                raise InvalidInput(
                    "redis connects replicas that share a PostgreSQL store: give --storage postgresql://… "
                    "too (one server on SQLite needs no Redis)"
                )
        if not _REDIS_PREFIX.match(self.redis_prefix):
            raise InvalidInput("redis_prefix must be at most 64 of A-Z, a-z, 0-9, ':', '_', '.', '-'")
        if not 0.05 <= self.fallback_poll_interval <= 60:
            raise InvalidInput("fallback_poll_interval must be between 0.05 and 60 seconds")
        if not 0.05 <= self.safety_poll_interval <= 3600:
            raise InvalidInput("safety_poll_interval must be between 0.05 and 3600 seconds")

    def _check_vault(self) -> None:
        if self.key_provider not in ("local", "vault"):
            raise InvalidInput("key_provider must be local or vault")
        if bool(self.vault_role_id) != bool(self.vault_secret_id):
            raise InvalidInput("vault_role_id and vault_secret_id go together: give both or neither")
        if not _VAULT_MOUNT.match(self.vault_mount):
            raise InvalidInput("vault_mount must be a mount path such as 'transit', without '/' at the ends")
        if self.key_provider != "vault":
            return
        if not self.vault_addr.startswith(("http://", "https://")):
            raise InvalidInput("key_provider vault needs vault_addr, an http(s):// URL (LLMCM_VAULT_ADDR)")
        if self.vault_token and self.vault_role_id:
            raise InvalidInput("give vault_token or vault_role_id + vault_secret_id, not both")
        if not self.vault_token and not self.vault_role_id:
            raise InvalidInput(
                "key_provider vault needs vault_token (LLMCM_VAULT_TOKEN) or "
                "vault_role_id + vault_secret_id (AppRole)"
            )

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert)

    @property
    def jwt(self) -> bool:
        return bool(self.jwt_jwks)

    @property
    def storage_url(self) -> str:
        if self.storage:
            return self.storage
        return f"sqlite:///{(self.data_dir / 'llmcm.db').resolve()}"

    @classmethod
    def load(
        cls,
        *,
        flags: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
        config_file: str | None = None,
    ) -> ServerConfig:
        env = dict(os.environ if environ is None else environ)
        values: dict[str, Any] = {}
        path = config_file or env.get("LLMCM_CONFIG")
        if path:
            try:
                with open(path, "rb") as fh:
                    values.update(tomllib.load(fh).get("server", {}))
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise InvalidInput(f"cannot read config file {path}: {exc}") from None
        known = {f.name: f for f in fields(cls)}
        for name in known:
            raw = env.get(f"LLMCM_{name.upper()}")
            if raw is not None and raw != "":
                values[name] = raw
        for name, value in (flags or {}).items():
            if value is not None:
                values[name] = value
        # Vault's own variables as fallbacks; a VAULT_TOKEN in the shell never overrides AppRole
        for name, std in (("vault_addr", "VAULT_ADDR"), ("vault_namespace", "VAULT_NAMESPACE")):
            if not values.get(name) and env.get(std):
                values[name] = env[std]
        if not values.get("vault_token") and not values.get("vault_role_id") and env.get("VAULT_TOKEN"):
            values["vault_token"] = env["VAULT_TOKEN"]
        unknown = set(values) - set(known)
        if unknown:
            raise InvalidInput(f"unknown server settings: {', '.join(sorted(unknown))}")
        return cls(**{name: cls._coerce(name, value) for name, value in values.items()})

    @staticmethod
    def _coerce(name: str, value: Any) -> Any:
        try:
            if name == "data_dir":
                return Path(str(value))
            if name in ("port", "grpc_port", "max_body_bytes", "kek_max_encryptions"):
                number = int(value)
                if number < 0 or (name in ("port", "grpc_port") and number > 65535):
                    raise ValueError
                return number
            if name in (
                "shutdown_timeout",
                "jwt_leeway",
                "rewrap_rate",
                "due_scan_interval",
                "fallback_poll_interval",
                "safety_poll_interval",
            ):
                return float(value)
            if name in ("jwt_allow_global_admin", "allow_insecure_secrets"):
                return value if isinstance(value, bool) else _BOOLS[str(value).strip().lower()]
        except (TypeError, ValueError, KeyError):
            raise InvalidInput(f"setting {name} has an invalid value {str(value)[:40]!r}") from None
        if name == "log_level" and str(value).lower() not in ("debug", "info", "warning", "error"):
            raise InvalidInput("log_level must be debug, info, warning or error")
        if name == "log_format" and value not in ("json", "console"):
            raise InvalidInput("log_format must be json or console")
        return str(value)
