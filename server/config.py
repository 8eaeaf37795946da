"""Server configuration: one frozen object, built once from defaults, a TOML file,
``LLMCM_*`` environment variables and command-line flags (later wins).

Nothing else in the server reads ``os.environ``.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from shared.errors import InvalidInput

DEFAULT_DATA_DIR = "./llmcm-data"


@dataclass(frozen=True, slots=True)
class ServerConfig:
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    storage: str = ""  # "" means SQLite in data_dir
    host: str = "127.0.0.1"
    port: int = 8080
    grpc_port: int = 50051
    redis: str = ""
    max_body_bytes: int = 1 << 20
    log_level: str = "info"
    log_format: str = "json"
    shutdown_timeout: float = 10.0

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
        unknown = set(values) - set(known)
        if unknown:
            raise InvalidInput(f"unknown server settings: {', '.join(sorted(unknown))}")
        return cls(**{name: cls._coerce(name, value) for name, value in values.items()})

    @staticmethod
    def _coerce(name: str, value: Any) -> Any:
        try:
            if name == "data_dir":
                return Path(str(value))
            if name in ("port", "grpc_port", "max_body_bytes"):
                number = int(value)
                if number < 0:
                    raise ValueError
                return number
            if name == "shutdown_timeout":
                return float(value)
        except (TypeError, ValueError):
            raise InvalidInput(f"setting {name} has an invalid value {str(value)[:40]!r}") from None
        if name == "log_level" and str(value).lower() not in ("debug", "info", "warning", "error"):
            raise InvalidInput("log_level must be debug, info, warning or error")
        if name == "log_format" and value not in ("json", "console"):
            raise InvalidInput("log_format must be json or console")
        return str(value)
