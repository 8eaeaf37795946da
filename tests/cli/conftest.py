"""Run the real ``llm-config`` CLI as a subprocess against the real test server.

Each run gets a clean environment: HOME and XDG_CONFIG_HOME point into the
test's tmp dir (so a saved login never leaks between tests or from the user),
and LLMCM_SERVER / LLMCM_TOKEN are set only when the test asks for them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from tests.support import REPO, ServerProcess, free_port

CLI_CMD = [sys.executable, "-m", "server.cli.main"]


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def json(self) -> Any:
        return json.loads(self.out)

    @property
    def err_lines(self) -> list[str]:
        return self.err.splitlines()


@dataclass(frozen=True)
class Cli:
    """Runs ``python -m server.cli.main`` with a controlled environment."""

    home: Path
    server: str | None = None
    token: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LLMCM_")}
        env.update(HOME=str(self.home), XDG_CONFIG_HOME=str(self.home / "xdg"), PYTHONPATH=str(REPO))
        if self.server is not None:
            env["LLMCM_SERVER"] = self.server
        if self.token is not None:
            env["LLMCM_TOKEN"] = self.token
        env.update(self.extra_env)
        return env

    def __call__(self, *args: str, stdin: str | None = None, cwd: Path | None = None) -> Run:
        proc = subprocess.run(
            [*CLI_CMD, *args],
            cwd=cwd or REPO,
            env=self.env(),
            input=stdin,
            stdin=subprocess.DEVNULL if stdin is None else None,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return Run(proc.returncode, proc.stdout, proc.stderr)

    def with_token(self, token: str | None) -> Cli:
        return replace(self, token=token)

    def with_server(self, server: str | None) -> Cli:
        return replace(self, server=server)

    @property
    def config_file(self) -> Path:
        return self.home / "xdg" / "llm-config" / "config.json"


def url_of(server: ServerProcess) -> str:
    return f"http://127.0.0.1:{server.port}"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An empty HOME for the CLI (its XDG_CONFIG_HOME is inside)."""
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def cli(server: ServerProcess, tenant: dict[str, str], home: Path) -> Cli:
    """The CLI as the tenant-admin of a fresh tenant, configured through LLMCM_SERVER/LLMCM_TOKEN."""
    return Cli(home, url_of(server), tenant["token"])


@pytest.fixture
def root_cli(server: ServerProcess, home: Path) -> Cli:
    """The CLI as the bootstrap global-admin."""
    return Cli(home, url_of(server), server.token)


@pytest.fixture
def closed_url() -> str:
    """A loopback URL on which nothing listens."""
    return f"http://127.0.0.1:{free_port()}"
