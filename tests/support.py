"""Test support: start a real ``llm-config-server`` process and talk to it over HTTP.

``ServerProcess`` runs ``init`` and ``serve`` as subprocesses on a free
loopback port with a temporary SQLite store, exactly as a user would.
``Http`` is a tiny client on ``http.client`` that sends the path exactly as
given (no normalisation), which the path-traversal tests need; given an
``ssl.SSLContext`` it speaks HTTPS (and presents the context's client
certificate, if it has one). ``postgres_database`` gives a test a PostgreSQL database of
its own, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

REPO = Path(__file__).resolve().parent.parent
SERVER_CMD = [sys.executable, "-m", "server.main"]


# the machine's PostgreSQL (.ci/run starts it); tests that need it fail, never skip, without it
POSTGRES_ADMIN_URL = os.environ.get("LLMCM_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


async def _admin(sql: str) -> None:
    try:
        conn = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        raise RuntimeError(
            f"PostgreSQL is not reachable at {urlsplit(POSTGRES_ADMIN_URL).netloc.rsplit('@', 1)[-1]} "
            f"({type(exc).__name__}): start it (.ci/run does) or point LLMCM_TEST_POSTGRES at one"
        ) from exc
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _run_admin(sql: str) -> None:
    """Run one statement on the admin database, from any thread or event loop."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _admin(sql)).result(timeout=60)


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """The URL of a new, empty database ``llmcm_test_<random>``, dropped (with its sessions) afterwards.

    Only databases made here are ever dropped.
    """
    name = f"llmcm_test_{os.getpid()}_{secrets.token_hex(4)}"
    _run_admin(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(urlsplit(POSTGRES_ADMIN_URL)._replace(path=f"/{name}"))
    finally:
        _run_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def terminate(proc: subprocess.Popen[Any], timeout: float) -> None:
    """SIGTERM a process still running and wait up to ``timeout`` s; SIGKILL it if that runs out."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _accepts(port: int) -> bool:
    """Something accepts TCP connections on 127.0.0.1:port (the gRPC listener is up)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0]


class Http:
    """A small HTTP client bound to one server and (optionally) one token."""

    def __init__(self, port: int, token: str | None = None, *, tls: ssl.SSLContext | None = None) -> None:
        self.port = port
        self.token = token
        self.tls = tls

    def as_token(self, token: str | None) -> Http:
        return Http(self.port, token, tls=self.tls)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 30.0,
    ) -> Reply:
        conn = (
            http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout, context=self.tls)
            if self.tls is not None
            else http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        )
        try:
            hdrs = dict(headers or {})
            if self.token is not None:
                hdrs.setdefault("Authorization", f"Bearer {self.token}")
            data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
            if data is not None:
                hdrs.setdefault("Content-Type", "application/json")
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            headers = {k.lower(): v for k, v in resp.getheaders()}
            if headers.get("content-type", "").startswith("text/event-stream"):
                return Reply(resp.status, headers, _read_until_progress(resp))
            return Reply(resp.status, headers, resp.read())
        finally:
            conn.close()

    def get(self, path: str, **kw: Any) -> Reply:
        return self.request("GET", path, **kw)

    def put(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return self.request("PUT", path, body, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return self.request("POST", path, body, **kw)

    def delete(self, path: str, **kw: Any) -> Reply:
        return self.request("DELETE", path, **kw)


def _read_until_progress(resp: http.client.HTTPResponse, limit: int = 1 << 20) -> bytes:
    """An event stream never ends: read it up to its first progress mark (the caught-up point)."""
    body = b""
    seen_progress = False
    while len(body) < limit:
        line = resp.readline()
        if not line:
            break
        body += line
        if line.startswith(b"event: progress"):
            seen_progress = True
        elif seen_progress and line in (b"\n", b"\r\n"):
            break
    return body


class ServerProcess:
    """``llm-config-server init`` + ``serve`` on a temp dir; stop() is safe twice.

    ``tls``: the client context to reach a server started with ``--tls-cert`` (its CA
    trusted); readiness is then checked over HTTPS and ``http()`` speaks HTTPS.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        env: dict[str, str] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.tls = tls
        self.port = port or free_port()
        self.grpc_port = free_port()  # never the default 50051: test servers run side by side
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.token = ""
        self.tenant_id = ""
        self.log_path = data_dir / "server.log"

    def init(self) -> None:
        out = subprocess.run(
            [*SERVER_CMD, "init", "--data", str(self.data_dir), "--json"],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            check=True,
            timeout=60,
        )
        info = json.loads(out.stdout)
        self.token, self.tenant_id = info["token"], info["tenant_id"]

    def start(self, *extra: str) -> None:
        if "--grpc-port" in extra:
            self.grpc_port = int(extra[extra.index("--grpc-port") + 1])
        else:
            extra = (*extra, "--grpc-port", str(self.grpc_port))
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [*SERVER_CMD, "serve", "--data", str(self.data_dir), "--port", str(self.port), *extra],
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log_path.read_text()}")
            try:
                if Http(self.port, tls=self.tls).get("/health/ready", timeout=2).status == 200 and (
                    self.grpc_port == 0 or _accepts(self.grpc_port)
                ):
                    return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server did not become ready:\n{self.log_path.read_text()}")

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    @contextlib.contextmanager
    def running(self, *serve_args: str) -> Iterator[ServerProcess]:
        """init (into a fresh data dir) and serve; stopped however the block ends."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.init()
        self.start(*serve_args)
        try:
            yield self
        finally:
            self.stop()

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            terminate(proc, timeout=15)

    def http(self, token: str | None = None, *, tls: ssl.SSLContext | None = None) -> Http:
        return Http(self.port, token, tls=tls or self.tls)

    @property
    def admin(self) -> Http:
        return Http(self.port, self.token, tls=self.tls)
