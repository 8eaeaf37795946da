"""Helpers of the scale-out tests: replicas on one PostgreSQL database, Redis key prefixes, a Redis
of the test's own, and SSE watchers that follow a stream across replicas.

The machine's Redis (127.0.0.1:6379, or ``LLMCM_TEST_REDIS``) carries the replicas' notices under
a key prefix of the test's own, whose keys are deleted afterwards; without it the tests fail,
never skip. A test that stops and starts Redis runs its own ``redis-server`` on a free loopback
port (``RedisServer``) and stops only that process, by its id.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from tests.support import ServerProcess, free_port, terminate

REDIS_URL = os.environ.get("LLMCM_TEST_REDIS", "redis://127.0.0.1:6379/0")


def redis_client(url: str = REDIS_URL) -> redis.Redis:
    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise RuntimeError(
            f"Redis is not reachable at {url.rsplit('@', 1)[-1]} ({type(exc).__name__}): start it "
            "(.ci/run does) or point LLMCM_TEST_REDIS at one"
        ) from exc
    return client


def delete_prefix(client: redis.Redis, prefix: str) -> int:
    """Delete every key under ``prefix`` (only a prefix a test made is ever passed)."""
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])
    return len(keys)


class RedisServer:
    """A redis-server of the test's own on a free loopback port, nothing kept on disk."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (Debian: apt-get install redis-server)")
        self.work.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                *(binary, "--bind", "127.0.0.1", "--port", str(self.port)),
                *("--save", "", "--appendonly", "no", "--dir", str(self.work)),
                *("--logfile", str(self.work / "redis.log")),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError):
                if redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1).ping():
                    return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            terminate(proc, timeout=10)


class Replicas:
    """Server processes on one PostgreSQL database; the first runs ``init``, the others get a copy
    of its master key. ``env`` is every replica's environment (Redis URL, prefix, poll intervals)."""

    def __init__(self, root: Path, postgres_url: str, env: dict[str, str]) -> None:
        self.root = root
        self.env = {"LLMCM_STORAGE": postgres_url, **env}
        self.servers: list[ServerProcess] = []

    def start(self, count: int) -> list[ServerProcess]:
        for _ in range(count):
            self.add()
        return self.servers

    def add(self) -> ServerProcess:
        data = self.root / f"replica-{len(self.servers)}"
        server = ServerProcess(data, env=self.env)
        if not self.servers:
            data.mkdir(parents=True)
            server.init()
        else:
            data.mkdir(mode=0o700, parents=True)
            first = self.servers[0]
            shutil.copy2(first.data_dir / "master.key", data / "master.key")
            server.token, server.tenant_id = first.token, first.tenant_id
        self.servers.append(server)
        server.start()
        return server

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


def replicas_env(redis_url: str, prefix: str, **extra: str) -> dict[str, str]:
    """Notices through Redis only: the safety poll is an hour, so a test passes only if they arrive."""
    return {
        "LLMCM_REDIS": redis_url,
        "LLMCM_REDIS_PREFIX": prefix,
        "LLMCM_SAFETY_POLL_INTERVAL": "3600",
        "LLMCM_FALLBACK_POLL_INTERVAL": "0.2",
        **extra,
    }


@dataclass
class Watcher:
    """An SSE watcher in a thread: follows ``/v1/watch`` and, when its replica goes away, resumes
    on the next port with ``Last-Event-ID`` (as an agent does). Records every put/delete revision."""

    ports: list[int]
    token: str
    query: str
    revisions: list[int] = field(default_factory=list)
    reconnects: int = 0
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    connected: threading.Event = field(default_factory=threading.Event)
    port_index: int = 0
    _thread: threading.Thread | None = None

    def start(self) -> Watcher:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self.stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    @property
    def port(self) -> int:
        return self.ports[self.port_index % len(self.ports)]

    def _run(self) -> None:
        last_id: int | None = None
        deadline = time.monotonic() + 120
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                last_id = self._follow(last_id)
            except (OSError, http.client.HTTPException, ValueError) as exc:
                if len(self.errors) < 20:
                    self.errors.append(f"{self.port}: {type(exc).__name__}: {exc}")
            if self.stop.is_set():
                return
            self.port_index += 1  # that replica is gone or refused: the next one
            self.reconnects += 1
            time.sleep(0.1)

    def _follow(self, last_id: int | None) -> int | None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            headers = {"Authorization": f"Bearer {self.token}", "Accept": "text/event-stream"}
            if last_id is not None:
                headers["Last-Event-ID"] = str(last_id)
            conn.request("GET", f"/v1/watch?{self.query}", headers=headers)
            resp = conn.getresponse()
            if resp.status != 200:
                raise ValueError(f"HTTP {resp.status}: {resp.read()[:200]!r}")
            kind, event_id, data = "", None, ""
            while not self.stop.is_set():
                line = resp.readline()
                if not line:
                    return last_id
                text = line.decode().rstrip("\r\n")
                if text.startswith("event:"):
                    kind = text[6:].strip()
                elif text.startswith("id:"):
                    event_id = int(text[3:].strip())
                elif text.startswith("data:"):
                    data += text[5:].strip()
                elif text == "":
                    if kind == "progress":
                        self.connected.set()
                    elif kind in ("put", "delete"):
                        self.revisions.append(int(json.loads(data)["revision"]))
                    if event_id is not None:
                        last_id = event_id
                    kind, event_id, data = "", None, ""
            return last_id
        finally:
            conn.close()


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def ok(reply: Any, *statuses: int) -> Any:
    assert reply.status in (statuses or (200,)), (reply.status, reply.body)
    return reply.json
