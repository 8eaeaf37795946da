"""The agent's health, readiness and metrics endpoints (default 127.0.0.1:8081).

``AgentStatus`` is the one object the core loop updates (an apply, a sync with the
server, a reload, a failure); ``HealthServer`` serves it:

    GET /health/live    200 while the process runs
    GET /health/ready   200 after the first successful apply and while the set is no
                        older than --max-stale (time since the server last confirmed it);
                        503 with the reason otherwise. Files keep being served either way.
    GET /metrics        Prometheus text format: llmcm_agent_applied_revision,
                        llmcm_agent_last_apply_timestamp_seconds, llmcm_agent_applies_total,
                        llmcm_agent_reloads_total, llmcm_agent_failures_total{kind},
                        llmcm_agent_staleness_seconds, llmcm_agent_ready

Everything runs on the event loop thread, so the status needs no lock. Extra routes
(the standalone read API) can be mounted on the same server. The server is
``agent.http1``'s and the metrics text is written here, so neither aiohttp nor
prometheus_client is loaded (the agent's memory budget is small).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from agent import http1
from agent.http1 import Reply
from shared.errors import InvalidInput

if TYPE_CHECKING:
    import asyncio

FAILURE_KINDS = ("sync", "render", "apply", "check", "reload", "health", "cache", "report", "other")
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # Prometheus text format


class AgentStatus:
    """What the agent has done so far; the source of /health/ready and /metrics."""

    def __init__(self, *, max_stale: float | None = None, clock: Callable[[], float] = time.time) -> None:
        self.max_stale = max_stale
        self._clock = clock
        self.started_at = clock()
        self.applied_revision: int | None = None
        self.last_apply_at: float | None = None
        self.last_sync_at: float | None = None
        self.applies = 0
        self.reloads = 0
        self.failures: dict[str, int] = dict.fromkeys(FAILURE_KINDS, 0)

    # ---- updates from the core loop

    def record_apply(self, revision: int, *, synced_at: float | None = None) -> None:
        """A set at ``revision`` is in place. ``synced_at``: when the server last confirmed the data
        (now for data fresh from the server; a cache's save time when applied from the cache)."""
        now = self._clock()
        self.applied_revision = revision
        self.last_apply_at = now
        self.applies += 1
        self.mark_synced(now if synced_at is None else synced_at)

    def mark_synced(self, at: float | None = None) -> None:
        """The server confirmed that the applied set is current (e.g. a progress event)."""
        at = self._clock() if at is None else at
        if self.last_sync_at is None or at > self.last_sync_at:
            self.last_sync_at = at

    def record_reload(self) -> None:
        self.reloads += 1

    def record_failure(self, kind: str) -> None:
        self.failures[kind if kind in self.failures else "other"] += 1

    # ---- derived

    def staleness(self) -> float:
        """Seconds since the server last confirmed the applied set (since start when it never has)."""
        since = self.last_sync_at if self.last_sync_at is not None else self.started_at
        return max(0.0, self._clock() - since)

    def readiness(self) -> tuple[bool, str]:
        if self.applied_revision is None:
            return False, "no configuration applied yet"
        stale = self.staleness()
        if self.max_stale is not None and stale > self.max_stale:
            return False, f"configuration is {stale:.0f} s old, more than --max-stale {self.max_stale:g} s"
        return True, "ok"

    # ---- Prometheus

    def metrics_text(self) -> str:
        """The metrics in the Prometheus text format (written here: prometheus_client would
        cost the agent more memory than everything it measures)."""
        ready = float(self.readiness()[0])
        lines: list[str] = []

        def family(name: str, kind: str, text: str, samples: Sequence[tuple[str, float]]) -> None:
            lines.append(f"# HELP {name} {text}")
            lines.append(f"# TYPE {name} {kind}")
            suffix = "_total" if kind == "counter" else ""
            lines.extend(f"{name}{suffix}{labels} {_number(value)}" for labels, value in samples)

        revision = [] if self.applied_revision is None else [("", float(self.applied_revision))]
        family("llmcm_agent_applied_revision", "gauge", "Revision of the applied set", revision)
        last = [] if self.last_apply_at is None else [("", self.last_apply_at)]
        family("llmcm_agent_last_apply_timestamp_seconds", "gauge", "Unix time of the last apply", last)
        family("llmcm_agent_applies", "counter", "Sets applied (written or unchanged)", [("", self.applies)])
        family("llmcm_agent_reloads", "counter", "Reloads of the app", [("", self.reloads)])
        failures = [(f'{{kind="{kind}"}}', float(count)) for kind, count in self.failures.items()]
        family("llmcm_agent_failures", "counter", "Failures by kind", failures)
        stale = [("", self.staleness())]
        family("llmcm_agent_staleness_seconds", "gauge", "Seconds since the server confirmed the set", stale)
        family("llmcm_agent_ready", "gauge", "1 when /health/ready answers 200", [("", ready)])
        return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    return repr(float(value))


@dataclass(frozen=True, slots=True)
class Route:
    """An extra GET route: ``path`` exactly, or every path under it when it ends with '/'.
    ``handler(path, query)`` answers it."""

    path: str
    handler: Callable[[str, Mapping[str, str]], Awaitable[Reply]]

    def matches(self, path: str) -> bool:
        return path == self.path or (self.path.endswith("/") and path.startswith(self.path))


def _problem(status: int, title: str) -> Reply:
    return Reply.json({"title": title, "status": status}, status, content_type="application/problem+json")


class HealthServer:
    """``async with HealthServer(status, host, port) as server:`` serves until the block ends.

    Port 0 picks a free port (``server.port`` tells which). ``stop()`` is safe twice. GET
    (and HEAD) only; one request per connection (``agent.http1``).
    """

    def __init__(
        self,
        status: AgentStatus,
        host: str = "127.0.0.1",
        port: int = 8081,
        *,
        routes: Sequence[Route] = (),
    ) -> None:
        self.status = status
        self.host = host
        self.port = port
        self.routes = tuple(routes)
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        if self._server is not None:
            return
        try:
            server = await http1.serve(self._handle, self.host, self.port)
        except OSError as exc:
            raise InvalidInput(
                f"cannot listen on {self.host}:{self.port} for health and metrics: {exc.strerror}"
            ) from None
        self._server = server
        self.port = int(server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    async def __aenter__(self) -> HealthServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def _handle(self, method: str, path: str, query: dict[str, str]) -> Reply:
        if method not in ("GET", "HEAD"):
            reply = _problem(405, "method not allowed")
            return Reply(reply.status, reply.body, reply.content_type, {"Allow": "GET, HEAD"})
        if path == "/health/live":
            return Reply.json({"status": "ok"})
        if path == "/health/ready":
            return self._ready()
        if path == "/metrics":
            return Reply(200, self.status.metrics_text().encode(), METRICS_CONTENT_TYPE)
        for route in self.routes:
            if route.matches(path):
                return await route.handler(path, query)
        return _problem(404, "not found")

    def _ready(self) -> Reply:
        ready, reason = self.status.readiness()
        body = {
            "status": "ready" if ready else "not_ready",
            "reason": reason,
            "revision": self.status.applied_revision,
            "staleness_seconds": round(self.status.staleness(), 3),
        }
        return Reply.json(body, 200 if ready else 503)
