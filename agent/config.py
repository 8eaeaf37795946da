"""Agent configuration: one frozen object built once from flags and the environment (flags win).

The seed's variables work as written: CONFIG_SERVER, TENANT_ID, NAMESPACES
(comma list), ENVIRONMENT, SYNC_INTERVAL (e.g. ``30s``), RELOAD_SIGNAL,
CONFIG_TOKEN / CONFIG_TOKEN_FILE (``LLMCM_TOKEN`` as a fallback), CONFIG_DIR,
CACHE_PATH, CACHE_KEY_FILE, and CACHE_KEY for an inline cache key. Every other
setting is a flag (the field name) or ``LLMCM_AGENT_<FIELD>`` in the environment.
The token and the cache key are never flags (a command line is visible to
every process) and never appear in ``repr``.

Values are checked here, together, so a bad one stops the agent at start with
an error naming the setting; after start-up nothing reads ``os.environ``.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shlex
import signal
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from agent.render import Format, Template, parse_format
from shared.errors import InvalidInput
from shared.models import Environment, parse_environment, redact_url, validate_namespace

# Setting name -> the environment variable the seed's manifests use.
SEED_ENV = {
    "server": "CONFIG_SERVER",
    "tenant_id": "TENANT_ID",
    "namespaces": "NAMESPACES",
    "environment": "ENVIRONMENT",
    "sync_interval": "SYNC_INTERVAL",
    "reload_signal": "RELOAD_SIGNAL",
    "token_file": "CONFIG_TOKEN_FILE",
    "config_dir": "CONFIG_DIR",
    "cache_path": "CACHE_PATH",
    "cache_key_file": "CACHE_KEY_FILE",
}
ENV_PREFIX = "LLMCM_AGENT_"
SECRET_SETTINGS = frozenset({"token", "cache_key"})  # environment only
SERVER_SCHEMES = ("http", "https", "grpc", "grpcs")
MODES = ("init", "watch", "standalone")

_BOOLS = {"1": True, "true": True, "yes": True, "on": True}
_BOOLS.update({"0": False, "false": False, "no": False, "off": False})
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)", re.ASCII)
_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", re.ASCII)
_UNRELOADABLE = frozenset({signal.SIGKILL, signal.SIGSTOP})


@dataclass(frozen=True, slots=True)
class AgentConfig:
    # what to fetch
    server: str = ""
    tenant_id: str = ""
    namespaces: tuple[str, ...] = ()
    environment: Environment = Environment.GLOBAL
    sync_interval: float = 30.0
    token: str = field(default="", repr=False)
    token_file: Path | None = None
    agent_id: str = ""
    # where and how to write
    config_dir: Path = Path("/config")
    formats: tuple[tuple[str, Format], ...] = ()
    templates: tuple[Template, ...] = field(default=(), compare=False)
    file_mode: int = 0o644
    secret_file_mode: int = 0o600
    file_owner: tuple[int, int] | None = None
    # offline cache
    cache_path: Path | None = None
    cache_key_file: Path | None = None
    cache_key: bytes | None = field(default=None, repr=False)
    # reloading the app
    reload_signal: signal.Signals = signal.SIGHUP
    pid_file: Path | None = None
    process_name: str = ""
    process_cmdline: str = ""
    reload_command: str = ""
    reload_url: str = ""
    reload_timeout: float = 30.0
    wait: tuple[float, float] | None = None
    check_cmd: str = ""
    check_timeout: float = 30.0
    health_url: str = ""
    health_timeout: float = 30.0
    # lifecycle, health endpoint, logs
    init_timeout: float = 60.0
    allow_stale: bool = False
    max_stale: float | None = None
    listen_host: str = "127.0.0.1"
    listen_port: int = 8081
    log_level: str = "info"
    log_format: str = "json"

    def __post_init__(self) -> None:
        finders = [n for n in ("pid_file", "process_name", "process_cmdline") if getattr(self, n)]
        if len(finders) > 1:
            raise InvalidInput(
                f"give one of pid_file, process_name, process_cmdline, not {', '.join(finders)}"
            )
        ways = {"a signal": bool(finders), "reload_command": bool(self.reload_command)}
        ways["reload_url"] = bool(self.reload_url)
        methods = [name for name, on in ways.items() if on]
        if len(methods) > 1:
            raise InvalidInput(f"give one way to reload the app, not {' and '.join(methods)}")
        if self.wait is not None and not 0 <= self.wait[0] <= self.wait[1]:
            raise InvalidInput("wait MIN:MAX needs 0 <= MIN <= MAX")
        outputs = [t.output for t in self.templates]
        if len(set(outputs)) != len(outputs):
            raise InvalidInput("two templates write the same output file")
        unknown = [ns for ns, _ in self.formats if ns not in self.namespaces]
        if unknown:
            raise InvalidInput(f"format given for namespace(s) not in NAMESPACES: {', '.join(unknown)}")

    # ---- derived

    @property
    def cache_key_path(self) -> Path | None:
        """CACHE_KEY_FILE, or ``<CACHE_PATH>.key`` beside the cache when only the cache is given."""
        if self.cache_key_file is not None:
            return self.cache_key_file
        return None if self.cache_path is None else self.cache_path.with_name(self.cache_path.name + ".key")

    def format_for(self, namespace: str) -> Format:
        return dict(self.formats).get(namespace, Format.JSON)

    @property
    def transport(self) -> str:
        """``rest`` for http(s)://, ``grpc`` for grpc(s)://, ``""`` without a server."""
        scheme = urlsplit(self.server).scheme
        return "grpc" if scheme.startswith("grpc") else ("rest" if scheme else "")

    def read_token(self) -> str:
        """The token, read again from CONFIG_TOKEN_FILE when one is given (projected tokens rotate)."""
        if self.token_file is None:
            return self.token
        return _read_token_file(self.token_file)

    def check_for(self, mode: str) -> None:
        """Settings a mode cannot run without; one error listing every missing one."""
        if mode not in MODES:
            raise InvalidInput(f"unknown agent mode {mode!r}; use one of {', '.join(MODES)}")
        missing = []
        if mode in ("init", "watch") and not self.server:
            missing.append("CONFIG_SERVER (--server)")
        if not self.namespaces:
            missing.append("NAMESPACES (--namespaces)")
        if self.server and not self.token and self.token_file is None:
            missing.append("CONFIG_TOKEN or CONFIG_TOKEN_FILE")
        if mode == "standalone" and self.cache_path is None:
            missing.append("CACHE_PATH (--cache-path; standalone mode serves from the cache)")
        if mode == "init" and self.allow_stale and self.cache_path is None:
            missing.append("CACHE_PATH (--allow-stale writes from the cache)")
        if missing:
            raise InvalidInput(f"agent {mode} needs {'; '.join(missing)}")

    # ---- building

    @classmethod
    def load(
        cls, *, flags: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
    ) -> AgentConfig:
        env = dict(os.environ if environ is None else environ)
        known = {f.name for f in fields(cls)}
        raw: dict[str, Any] = {}
        for name in known - SECRET_SETTINGS:
            value = env.get(SEED_ENV.get(name, ENV_PREFIX + name.upper()))
            if value is not None and value != "":
                raw[name] = value
        for name, value in (flags or {}).items():
            if name in SECRET_SETTINGS:
                raise InvalidInput(f"{name} is read from the environment or a file only, never from a flag")
            if name not in known:
                raise InvalidInput(f"unknown agent setting {name!r}")
            if value is not None and value != () and value != "":
                raw[name] = value
        values = {name: _coerce(name, value) for name, value in raw.items()}
        values.update(_secrets(env, values))
        if not values.get("agent_id"):
            values["agent_id"] = env.get("POD_NAME") or env.get("HOSTNAME") or socket.gethostname()
        return cls(**values)


# ---- coercion of single settings


def _coerce(name: str, value: Any) -> Any:
    try:
        coerce = _COERCE.get(name, _text)
        return coerce(value)
    except InvalidInput as exc:
        raise InvalidInput(f"setting {_label(name)}: {exc.detail}") from None


def _label(name: str) -> str:
    env = SEED_ENV.get(name, ENV_PREFIX + name.upper())
    return f"{name} ({env})"


def _text(value: Any) -> str:
    return str(value).strip()


def parse_duration(value: Any) -> float:
    """Seconds from ``30``, ``30s``, ``500ms``, ``5m``, ``1h``, ``1m30s``; must be positive."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        text = str(value).strip().lower()
        try:
            seconds = float(text)
        except ValueError:
            parts = _DURATION_PART.findall(text)
            if not parts or "".join(n + u for n, u in parts) != text:
                raise InvalidInput(
                    f"{text[:40]!r} is not a duration (like 30s, 500ms, 5m, 1h, 1m30s)"
                ) from None
            unit = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
            seconds = sum(float(n) * unit[u] for n, u in parts)
    if not 0 < seconds <= 7 * 86400:
        raise InvalidInput(f"duration {seconds:g} s is out of range (more than 0, at most 7 days)")
    return seconds


def parse_wait(value: Any) -> tuple[float, float]:
    """``MIN:MAX`` (durations); ``MIN`` alone means MAX = 4 x MIN, as consul-template does."""
    if isinstance(value, tuple) and len(value) == 2:
        low, high = parse_duration(value[0]), parse_duration(value[1])
    else:
        text = str(value).strip()
        low_text, sep, high_text = text.partition(":")
        low = parse_duration(low_text)
        high = parse_duration(high_text) if sep else 4 * low
    if low > high:
        raise InvalidInput(f"wait MIN ({low:g} s) is larger than MAX ({high:g} s)")
    return (low, high)


def parse_signal(value: Any) -> signal.Signals:
    """A signal by name (``SIGHUP``, ``hup``) or number (``1``); SIGKILL and SIGSTOP are refused."""
    text = value.name if isinstance(value, signal.Signals) else str(value).strip()
    try:
        sig = signal.Signals(int(text)) if text.isdigit() else signal.Signals[_sig_name(text)]
    except (KeyError, ValueError):
        raise InvalidInput(f"{text[:20]!r} is not a signal name or number (e.g. SIGHUP, USR1, 1)") from None
    if sig in _UNRELOADABLE:
        raise InvalidInput(f"{sig.name} cannot be handled by the app, so it cannot ask for a reload")
    return sig


def _sig_name(text: str) -> str:
    upper = text.upper()
    return upper if upper.startswith("SIG") else "SIG" + upper


def parse_mode(value: Any) -> int:
    """An octal text (``0644``, ``644``, ``0o644``) or an int that already is the mode."""
    if isinstance(value, int) and not isinstance(value, bool):
        mode = value
    else:
        text = str(value).strip().lower().removeprefix("0o")
        if not re.fullmatch(r"[0-7]{3,4}", text):
            raise InvalidInput(f"{text[:10]!r} is not an octal file mode like 0644")
        mode = int(text, 8)
    if mode < 0:
        raise InvalidInput("a file mode cannot be negative")
    if mode > 0o777:
        raise InvalidInput(f"mode {mode:04o} has special bits (setuid, setgid, sticky); use 0000-0777")
    if not mode & 0o400:
        raise InvalidInput(f"mode {mode:04o} does not let the owner read the file")
    return mode


def parse_owner(value: Any) -> tuple[int, int]:
    """``USER[:GROUP]`` by name or number; without GROUP the user's primary group."""
    if isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, int) and v >= 0 for v in value):
        return (value[0], value[1])
    text = str(value).strip()
    user, sep, group = text.partition(":")
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        uid: int = entry.pw_uid
        default_gid: int | None = entry.pw_gid
    except KeyError:
        if not user.isdigit():
            raise InvalidInput(f"no user named {user[:40]!r}") from None
        uid, default_gid = int(user), None
    if sep and group:
        if group.isdigit():
            return uid, int(group)
        try:
            return uid, grp.getgrnam(group).gr_gid
        except KeyError:
            raise InvalidInput(f"no group named {group[:40]!r}") from None
    if default_gid is None:
        raise InvalidInput(f"uid {uid} has no user entry; give the group too, as UID:GID")
    return uid, default_gid


def _url(value: Any, schemes: Sequence[str]) -> str:
    text = str(value).strip()
    parts = urlsplit(text)
    if parts.scheme not in schemes or not parts.hostname:
        shown = redact_url(text)[:100]
        raise InvalidInput(f"{shown!r} is not a URL with scheme {' or '.join(schemes)} and a host")
    return text


def _namespaces(value: Any) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else list(value)
    out: list[str] = []
    for item in (str(i).strip() for i in items):
        if item and item not in out:
            out.append(validate_namespace(item))
    return tuple(out)


def _pairs(value: Any) -> list[tuple[str, str]]:
    items = value.split(",") if isinstance(value, str) else list(value)
    pairs = []
    for item in (str(i).strip() for i in items):
        if not item:
            continue
        left, sep, right = item.partition("=")
        if not sep or not left.strip() or not right.strip():
            raise InvalidInput(f"{item[:60]!r} is not NAME=VALUE")
        pairs.append((left.strip(), right.strip()))
    return pairs


def _formats(value: Any) -> tuple[tuple[str, Format], ...]:
    return tuple((validate_namespace(ns), parse_format(fmt)) for ns, fmt in _pairs(value))


def _templates(value: Any) -> tuple[Template, ...]:
    out = []
    for output, path in _pairs(value):
        try:
            source = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
            raise InvalidInput(f"cannot read template {path} for {output}: {reason}") from None
        out.append(Template(output, source))
    return tuple(out)


def _regex(value: Any) -> str:
    text = str(value)
    try:
        re.compile(text)
    except re.error as exc:
        raise InvalidInput(f"not a valid regular expression: {exc}") from None
    return text


def _argv(value: Any) -> str:
    text = str(value).strip()
    try:
        if not shlex.split(text):
            raise InvalidInput("the command is empty")
    except ValueError as exc:
        raise InvalidInput(f"cannot split the command into arguments: {exc}") from None
    return text


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    try:
        return _BOOLS[str(value).strip().lower()]
    except KeyError:
        raise InvalidInput(f"{str(value)[:20]!r} is not a boolean (true/false, 1/0, yes/no)") from None


def _port(value: Any) -> int:
    text = str(value).strip()
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise InvalidInput(f"{text[:20]!r} is not a port 0-65535")
    return int(text)


def _choice(*allowed: str) -> Any:
    def check(value: Any) -> str:
        text = str(value).strip().lower()
        if text not in allowed:
            raise InvalidInput(f"{text[:20]!r} is not one of {', '.join(allowed)}")
        return text

    return check


def _path(value: Any) -> Path:
    text = str(value).strip()
    if "\x00" in text:
        raise InvalidInput("a path cannot hold a NUL character")
    return Path(text)


def _tenant(value: Any) -> str:
    text = str(value).strip()
    if not _TENANT.fullmatch(text):
        raise InvalidInput(f"{text[:40]!r} is not a tenant id (letters, digits, '.', '_', '-')")
    return text


def _environment(value: Any) -> Environment:
    return value if isinstance(value, Environment) else parse_environment(str(value))


_COERCE: dict[str, Any] = {
    "server": lambda v: _url(v, SERVER_SCHEMES),
    "tenant_id": _tenant,
    "namespaces": _namespaces,
    "environment": _environment,
    "sync_interval": parse_duration,
    "token_file": _path,
    "config_dir": _path,
    "formats": _formats,
    "templates": _templates,
    "file_mode": parse_mode,
    "secret_file_mode": parse_mode,
    "file_owner": parse_owner,
    "cache_path": _path,
    "cache_key_file": _path,
    "reload_signal": parse_signal,
    "pid_file": _path,
    "process_cmdline": _regex,
    "reload_command": _argv,
    "reload_url": lambda v: _url(v, ("http", "https")),
    "reload_timeout": parse_duration,
    "wait": parse_wait,
    "check_cmd": _argv,
    "check_timeout": parse_duration,
    "health_url": lambda v: _url(v, ("http", "https")),
    "health_timeout": parse_duration,
    "init_timeout": parse_duration,
    "allow_stale": _bool,
    "max_stale": parse_duration,
    "listen_host": _text,
    "listen_port": _port,
    "log_level": _choice("debug", "info", "warning", "error"),
    "log_format": _choice("json", "console"),
}


# ---- secrets: environment and files only


def _secrets(env: Mapping[str, str], values: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    token = env.get("CONFIG_TOKEN", "").strip()
    if token and values.get("token_file") is not None:
        raise InvalidInput("give CONFIG_TOKEN or CONFIG_TOKEN_FILE, not both")
    if values.get("token_file") is not None:
        _read_token_file(values["token_file"])  # fail now, not at the first request
    elif token:
        out["token"] = _check_token(token, "CONFIG_TOKEN")
    elif env.get("LLMCM_TOKEN", "").strip():
        out["token"] = _check_token(env["LLMCM_TOKEN"].strip(), "LLMCM_TOKEN")
    if env.get("CACHE_KEY", "").strip():
        from agent.cache import parse_key  # cryptography is loaded only when a cache is used

        out["cache_key"] = parse_key(env["CACHE_KEY"], "CACHE_KEY")
    return out


def _check_token(token: str, source: str) -> str:
    if len(token) > 8192 or any(c.isspace() or not c.isprintable() for c in token):
        raise InvalidInput(f"{source} is not a token: it has spaces or control characters, or is too long")
    return token


def _read_token_file(path: Path) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            token = fh.read(16384).strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
        raise InvalidInput(f"cannot read CONFIG_TOKEN_FILE {path}: {reason}") from None
    if not token:
        raise InvalidInput(f"CONFIG_TOKEN_FILE {path} is empty")
    return _check_token(token, f"CONFIG_TOKEN_FILE {path}")

