"""Where the CLI finds its server and token, and how a command talks to it.

The environment is read once, at start, into the frozen ``CliEnv``; nothing
else in the CLI reads ``os.environ``. The saved login is a small JSON file
(``$XDG_CONFIG_HOME/llm-config/config.json``, else ``~/.config/llm-config/config.json``)
written atomically with mode 0600 in a 0700 directory. ``LLMCM_SERVER`` and
``LLMCM_TOKEN`` win over it; the saved token is only ever sent to the saved
server, so pointing ``LLMCM_SERVER`` elsewhere never leaks it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from shared.client import RestClient, check_server_url
from shared.errors import InvalidInput, Unauthenticated
from shared.models import parse_json

T = TypeVar("T")

CONFIG_DIR_NAME = "llm-config"
CONFIG_FILE_NAME = "config.json"


@dataclass(frozen=True, slots=True)
class CliEnv:
    """Everything the CLI takes from the environment, captured once at start."""

    server: str | None
    token: str | None
    config_path: Path
    debug: bool

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> CliEnv:
        xdg = environ.get("XDG_CONFIG_HOME", "").strip()
        if xdg:
            base = Path(xdg)
        else:
            home = environ.get("HOME", "").strip()
            base = (Path(home) if home else Path.home()) / ".config"
        return cls(
            server=environ.get("LLMCM_SERVER", "").strip() or None,
            token=environ.get("LLMCM_TOKEN", "").strip() or None,
            config_path=base / CONFIG_DIR_NAME / CONFIG_FILE_NAME,
            debug=environ.get("LLMCM_DEBUG", "").strip().lower() in ("1", "true", "yes"),
        )


@dataclass(frozen=True, slots=True)
class SavedLogin:
    server: str
    token: str


@dataclass(frozen=True, slots=True)
class Target:
    """The server one command talks to and the token it presents."""

    server: str
    token: str


def load_login(path: Path) -> SavedLogin | None:
    """The saved login, or None if there is none; ``InvalidInput`` if the file is unreadable."""
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InvalidInput(f"cannot read saved login {path}: {exc.strerror}") from None
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:
        raise InvalidInput(f"saved login {path} is not valid JSON; run llm-config login again") from None
    if not isinstance(data, dict) or not isinstance(data.get("server"), str) or not data.get("token"):
        raise InvalidInput(f"saved login {path} lacks server or token; run llm-config login again")
    return SavedLogin(server=data["server"], token=str(data["token"]))


def save_login(path: Path, login: SavedLogin) -> None:
    """Write the login atomically: 0700 directory, 0600 file, fsync, rename."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    body = json.dumps({"server": login.server, "token": login.token}, indent=2).encode() + b"\n"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, body)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def remove_login(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


class App:
    """The click context object: the captured environment and the way to reach the server."""

    def __init__(self, env: CliEnv) -> None:
        self.env = env

    def target(self) -> Target:
        saved = load_login(self.env.config_path)
        server = self.env.server or (saved.server if saved else None)
        if server is None:
            raise InvalidInput(
                "no server configured: run 'llm-config login --server URL' or set LLMCM_SERVER"
            )
        server = check_server_url(server)
        token = self.env.token
        if token is None and saved is not None and check_server_url(saved.server) == server:
            token = saved.token
        if not token:
            raise Unauthenticated(
                f"no token for {server}: run 'llm-config login --server {server}' or set LLMCM_TOKEN"
            )
        return Target(server, token)

    def run(
        self,
        work: Callable[[RestClient], Awaitable[T]],
        target: Target | None = None,
        *,
        timeout: float | None = None,
    ) -> T:
        """Open a client on the target, run ``work`` with it, always close it."""
        where = target or self.target()

        async def go() -> T:
            extra = {"timeout": timeout} if timeout is not None else {}
            async with RestClient(where.server, where.token, **extra) as client:
                return await work(client)

        return asyncio.run(go())


pass_app = click.make_pass_decorator(App)


def read_json_text(text: str, source: str) -> Any:
    """Parse JSON read from ``source`` (a file name, 'stdin' or '--value'); ``InvalidInput`` if bad."""

    if not text.strip():
        raise InvalidInput(f"{source} is empty; expected JSON")
    return parse_json(text, source)


def read_json_object(text: str, source: str) -> dict[str, Any]:
    if not text.strip():
        raise InvalidInput(f"{source} is empty; expected a JSON object")
    value = read_json_text(text, source)
    if not isinstance(value, dict):
        raise InvalidInput(f"{source} must hold a JSON object, not {json_type(value)}")
    return value


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
