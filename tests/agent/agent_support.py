"""Running the agent as a real process for the mode tests: ``python -m agent.main ...``.

``AgentProcess`` starts ``watch`` or ``run --standalone`` with its settings in the
environment (as a pod would), captures its JSON log lines, and waits for log events;
``run_init`` runs ``init`` to completion. ``Writer`` writes configs over one keep-alive
HTTP connection, fast enough to drive thousands of changes. Every process started here
is stopped by its pid.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support import REPO, Http, ServerProcess, free_port, terminate

AGENT_CMD = [sys.executable, "-m", "agent.main"]
SAMPLE_APP = Path(__file__).with_name("sample_app.py")
CONFIG_APP = Path(__file__).with_name("config_app.py")
_SCRUBBED = ("CONFIG_", "CACHE_", "LLMCM_", "NAMESPACES", "ENVIRONMENT", "TENANT_ID", "SYNC_INTERVAL")


def agent_env(**settings: str) -> dict[str, str]:
    """The test process's environment without agent settings, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED) and k != "RELOAD_SIGNAL"}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(settings)
    return env


@dataclass
class Setup:
    """What an agent needs to reach a server as one tenant, and where it writes."""

    server: ServerProcess
    token: str
    tenant_id: str
    tmp: Path

    def url(self, transport: str = "rest") -> str:
        if transport == "grpc":
            return f"grpc://127.0.0.1:{self.server.grpc_port}"
        return f"http://127.0.0.1:{self.server.port}"

    def env(self, namespaces: str, *, transport: str = "rest", **extra: str) -> dict[str, str]:
        settings = {
            "CONFIG_SERVER": self.url(transport),
            "CONFIG_TOKEN": self.token,
            "TENANT_ID": self.tenant_id,
            "NAMESPACES": namespaces,
            "ENVIRONMENT": "production",
            "CONFIG_DIR": str(self.tmp / "config"),
            "CACHE_PATH": str(self.tmp / "cache" / "agent.db"),
            "SYNC_INTERVAL": "30s",
        }
        settings.update(extra)
        return agent_env(**settings)

    @property
    def http(self) -> Http:
        return self.server.http(self.token)

    def put(self, namespace: str, key: str, value: dict[str, Any], env: str = "production") -> int:
        reply = self.http.put(f"/v1/configs/{namespace}/{key}?env={env}", {"value": value})
        assert reply.status in (200, 201), reply.body
        return int(reply.json["revision"])

    def delete(self, namespace: str, key: str, env: str = "production") -> None:
        reply = self.http.delete(f"/v1/configs/{namespace}/{key}?env={env}")
        assert reply.status == 200, reply.body

    def agents(self) -> dict[str, dict[str, Any]]:
        reply = self.http.get("/v1/agents")
        assert reply.status == 200, reply.body
        return {a["agent_id"]: a for a in reply.json["agents"]}


def run_init(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AGENT_CMD, "init", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def log_events(text: str) -> list[dict[str, Any]]:
    events = []
    for line in text.splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                events.append(json.loads(line))
    return events


class AgentProcess:
    """One agent process (``watch`` or ``run --standalone``); ``stop()`` is safe twice."""

    def __init__(self, env: dict[str, str], *args: str, log_path: Path) -> None:
        self.env = env
        self.args = args
        self.log_path = log_path
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> AgentProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*AGENT_CMD, *self.args, "--listen-port", str(self.port)],
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """Log events of this run (since the last start), optionally only those named ``name``."""
        text = self.log_path.read_bytes()[self._offset :].decode(errors="replace")
        found = log_events(text)
        return [e for e in found if name is None or e.get("event") == name]

    def wait_for(
        self, name: str, predicate: Callable[[dict[str, Any]], bool] = lambda e: True, timeout: float = 20
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events(name):
                if predicate(event):
                    return event
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"agent exited ({self.proc.returncode}):\n{self.log_text()[-4000:]}")
            time.sleep(0.05)
        raise AssertionError(f"no {name!r} log event within {timeout} s:\n{self.log_text()[-4000:]}")

    def health(self, path: str = "/health/ready") -> tuple[int, Any]:
        reply = Http(self.port).get(path, timeout=5)
        body = reply.json if reply.content_type.endswith("json") else reply.body
        return reply.status, body

    def stop(self) -> int | None:
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        terminate(proc, timeout=15)
        return proc.returncode

    def kill9(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@contextlib.contextmanager
def running(env: dict[str, str], *args: str, log_path: Path) -> Iterator[AgentProcess]:
    agent = AgentProcess(env, *args, log_path=log_path).start()
    try:
        yield agent
    finally:
        agent.stop()


def wait_until(check: Callable[[], Any], timeout: float = 20, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy (returned), for at most ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (OSError, ValueError) as exc:  # a file not there yet, or being replaced
            last = exc
        else:
            if last:
                return last
        time.sleep(0.05)
    raise AssertionError(f"{what} not reached within {timeout} s (last: {last!r})")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


class Writer:
    """PUTs over one keep-alive connection (a new one if the server closed it)."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.conn: http.client.HTTPConnection | None = None

    def put(self, namespace: str, key: str, value: dict[str, Any], env: str = "production") -> int:
        body = json.dumps({"value": value}).encode()
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                self.conn.request("PUT", f"/v1/configs/{namespace}/{key}?env={env}", body, self.headers)
                reply = self.conn.getresponse()
                data = reply.read()
            except (http.client.HTTPException, OSError):
                self.close()
                if attempt:
                    raise
                continue
            assert reply.status in (200, 201), data
            return int(json.loads(data)["revision"])
        raise AssertionError("not reached")

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()


@dataclass
class SampleApp:
    """tests/agent/sample_app.py as a real process: records the signals it gets."""

    proc: subprocess.Popen[str]
    record: Path
    pid_file: Path

    def signals(self) -> list[str]:
        return self.record.read_text().splitlines() if self.record.exists() else []


@contextlib.contextmanager
def sample_app(tmp: Path, *extra: str, lifetime: float = 120) -> Iterator[SampleApp]:
    record, pid_file = tmp / "app-signals.log", tmp / "app.pid"
    proc = subprocess.Popen(
        [sys.executable, str(SAMPLE_APP), "--record", str(record), "--pid-file", str(pid_file),
         "--lifetime", str(lifetime), *extra],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().split()[:1] == ["ready"]
        yield SampleApp(proc, record, pid_file)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


class Supervisor:
    """Keeps restarting a process that exits, as a container runtime would (bounded)."""

    def __init__(self, argv: list[str], *, restarts: int = 40, delay: float = 0.2) -> None:
        import threading

        self.argv = argv
        self.restarts = restarts
        self.delay = delay
        self.exits: list[int] = []
        self._lock = threading.Lock()
        self._stopping = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Supervisor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._stopping = True
            if self._proc is not None and self._proc.poll() is None:
                self._proc.kill()
        self._thread.join(timeout=15)

    def _loop(self) -> None:
        for _ in range(self.restarts + 1):
            with self._lock:
                if self._stopping:
                    return
                self._proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL)
                proc = self._proc
            code = proc.wait()
            with self._lock:
                if self._stopping:
                    return
                self.exits.append(code)
            time.sleep(self.delay)
