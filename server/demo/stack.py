"""Starting the demo's three processes and waiting, with progress, until each is usable.

- server: ``llm-config-server init`` on the work dir's SQLite store, then ``serve`` on free
  loopback ports for REST and gRPC (new ports, up to ``PORT_ATTEMPTS`` times, should another
  process take one between choosing and binding it); ready when ``/v1/whoami`` answers our
  token (so a foreign server on the port is never taken for ours) and gRPC accepts.
- agent: ``llm-config-agent watch`` with a service-account token limited to the namespaces it
  reads, writing ``./demo-config``, signalling the app found by its pid file, and running the
  demo's check on every staged set; ready when the first set is in place.
- app: ``server/demo/sample_app.py``; ready when it has loaded that set.

Every wait is bounded and fails with ``Unavailable`` naming what did not happen; a child
that exits meanwhile fails it at once (``Children.check_alive``).
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from server.demo import check as check_module
from server.demo import sample_app
from server.demo.console import Console
from server.demo.processes import Child, Children, accepts, child_env, free_port
from server.demo.scenario import AGENT_ID, ENVIRONMENT, NAMESPACE
from server.demo.workspace import Workspace
from shared.client import RestClient
from shared.errors import LLMConfigError, Unavailable

T = TypeVar("T")

POLL = 0.02
PORT_ATTEMPTS = 3
START_TIMEOUT = 30.0


@dataclass(frozen=True)
class ServerInfo:
    url: str
    grpc_port: int
    token: str
    tenant_id: str
    child: Child


class Stack:
    def __init__(self, console: Console, children: Children, work: Workspace) -> None:
        self.console = console
        self.children = children
        self.work = work
        self.environ = dict(os.environ)  # read once, for the children's environment
        self.agent_port = 0

    async def until(self, what: str, probe: Callable[[], Awaitable[T | None]], limit: float) -> T:
        """Poll ``probe`` until it returns something; progress shown as ``what``."""
        started = time.monotonic()
        while True:
            result = await probe()
            if result is not None:
                self.console.clear_live()
                return result
            self.children.check_alive()
            if time.monotonic() - started > limit:
                self.console.clear_live()
                raise Unavailable(f"gave up {what}: nothing after {limit:g} s (logs: {self.work.work_dir})")
            self.console.waiting(what, started)
            await asyncio.sleep(POLL)

    # ---- server

    async def start_server(self) -> ServerInfo:
        data = self.work.server_data
        env = child_env(self.environ)
        init = self.children.start(
            "server init",
            [sys.executable, "-m", "server.main", "init", "--data", str(data), "--json"],
            env=env,
            cwd=self.work.work_dir,
            log=self.work.log("server-init"),
            pipe=True,
        )

        async def init_done() -> int | None:
            return init.exited()

        code = await self.until("creating the store", init_done, START_TIMEOUT)
        assert init.proc.stdout is not None
        output = init.proc.stdout.read()
        init.proc.stdout.close()
        self.children.forget(init)
        if code != 0:
            raise Unavailable(f"llm-config-server init failed (status {code}): {init.log_tail()}")
        created = json.loads(output)
        token, tenant_id = str(created["token"]), str(created["tenant_id"])

        for attempt in range(1, PORT_ATTEMPTS + 1):
            port, grpc_port = free_port(), free_port()
            argv = [sys.executable, "-m", "server.main", "serve", "--data", str(data)]
            argv += ["--port", str(port), "--grpc-port", str(grpc_port), "--log-level", "warning"]
            child = self.children.start(
                "server", argv, env=env, cwd=self.work.work_dir, log=self.work.log("server")
            )
            url = f"http://127.0.0.1:{port}"
            try:
                await self._server_ready(child, url, token, grpc_port)
            except Unavailable:
                if child.exited() is None or attempt == PORT_ATTEMPTS:
                    raise
                self.children.forget(child)  # it exited: most likely a port was taken meanwhile
                continue
            return ServerInfo(url, grpc_port, token, tenant_id, child)
        raise AssertionError("not reached")

    async def _server_ready(self, child: Child, url: str, token: str, grpc_port: int) -> None:
        async with RestClient(url, token, timeout=2) as client:

            async def ready() -> bool | None:
                try:
                    await client.whoami()
                except LLMConfigError:
                    return None
                return True if accepts(grpc_port) else None

            await self.until("starting the server", ready, START_TIMEOUT)

    # ---- agent and app

    def check_command(self) -> str:
        words = [sys.executable, check_module.__file__, "{staged}", "--report", str(self.work.check_report)]
        return " ".join(shlex.quote(w) for w in words)

    async def start_agent(self, server: ServerInfo, agent_token: str) -> Child:
        self.agent_port = free_port()
        env = child_env(
            self.environ,
            CONFIG_SERVER=server.url,
            CONFIG_TOKEN=agent_token,
            TENANT_ID=server.tenant_id,
            NAMESPACES=NAMESPACE,
            ENVIRONMENT=ENVIRONMENT,
            CONFIG_DIR=str(self.work.config_dir),
        )
        argv = [sys.executable, "-m", "agent.main", "watch", "--agent-id", AGENT_ID]
        argv += ["--pid-file", str(self.work.app_pid_file), "--check-cmd", self.check_command()]
        argv += ["--listen-port", str(self.agent_port), "--log-format", "json"]
        child = self.children.start(
            "agent", argv, env=env, cwd=self.work.work_dir, log=self.work.log("agent")
        )
        first = self.work.config_dir / "..data" / NAMESPACE / "primary-model.json"

        async def written() -> bool | None:
            return True if first.is_file() else None

        await self.until("waiting for the agent's first set", written, START_TIMEOUT)
        return child

    async def start_app(self, keep: bool) -> tuple[Child, dict[str, Any]]:
        argv = [sys.executable, sample_app.__file__, "--config-dir", str(self.work.config_dir)]
        argv += ["--state", str(self.work.app_state), "--pid-file", str(self.work.app_pid_file)]
        if not keep:
            argv.append("--exit-with-parent")  # a safety net should the demo itself be killed
        child = self.children.start(
            "app", argv, env=child_env(self.environ), cwd=self.work.work_dir, log=self.work.log("app")
        )

        async def loaded() -> dict[str, Any] | None:
            state = self.app_state()
            return state if state and self.work.app_pid_file.is_file() else None

        return child, await self.until("starting the app", loaded, START_TIMEOUT)

    def app_state(self) -> dict[str, Any] | None:
        """What the app last wrote about itself (None before its first load)."""
        try:
            state = json.loads(Path(self.work.app_state).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return state if isinstance(state, dict) else None
