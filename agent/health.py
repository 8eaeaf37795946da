"""The agent's health, readiness and metrics endpoints (default 127.0.0.1:8081).

``AgentStatus`` is the one object the core loop updates (an apply, a sync with the
server, a reload, a failure); ``HealthServer`` serves it:

    GET /health/live    200 while the process runs
    GET /health/ready   200 after the first successful apply and while the set is no
                        older than --max-stale (time since the server last confirmed it);
                        503 with the reason otherwise. Files keep being served either way.
    GET /metrics        Prometheus text: llmcm_agent_applied_revision,
                        llmcm_agent_last_apply_timestamp_seconds, llmcm_agent_applies_total,
                        llmcm_agent_reloads_total, llmcm_agent_failures_total{kind},
                        llmcm_agent_staleness_seconds, llmcm_agent_ready

Everything runs on the event loop thread, so the status needs no lock. Extra routes
(the standalone read API) can be mounted on the same server.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from shared.errors import InvalidInput

FAILURE_KINDS = ("sync", "render", "apply", "check", "reload", "health", "cache", "report", "other")


class AgentStatus(Collector):
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
        self.registry = CollectorRegistry()
        self.registry.register(self)

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

    def collect(self) -> Iterator[Metric]:
        revision = GaugeMetricFamily("llmcm_agent_applied_revision", "Revision of the applied set")
        if self.applied_revision is not None:
            revision.add_metric([], self.applied_revision)
        yield revision
        last = GaugeMetricFamily(
            "llmcm_agent_last_apply_timestamp_seconds", "Unix time of the last successful apply"
        )
        if self.last_apply_at is not None:
            last.add_metric([], self.last_apply_at)
        yield last
        yield CounterMetricFamily("llmcm_agent_applies", "Sets applied (written or unchanged)", self.applies)
        yield CounterMetricFamily("llmcm_agent_reloads", "Reloads of the app", self.reloads)
        failures = CounterMetricFamily("llmcm_agent_failures", "Failures by kind", labels=["kind"])
        for kind, count in self.failures.items():
            failures.add_metric([kind], count)
        yield failures
        yield GaugeMetricFamily(
            "llmcm_agent_staleness_seconds", "Seconds since the server confirmed the set", self.staleness()
        )
        ready = float(self.readiness()[0])
        yield GaugeMetricFamily("llmcm_agent_ready", "1 when /health/ready answers 200", ready)


class HealthServer:
    """``async with HealthServer(status, host, port) as server:`` serves until the block ends.

    Port 0 picks a free port (``server.port`` tells which). ``stop()`` is safe twice.
    """

    def __init__(
        self,
        status: AgentStatus,
        host: str = "127.0.0.1",
        port: int = 8081,
        *,
        routes: Sequence[web.RouteDef] = (),
    ) -> None:
        self.status = status
        self.host = host
        self.port = port
        self._app = web.Application()
        self._app.router.add_get("/health/live", self._live)
        self._app.router.add_get("/health/ready", self._ready)
        self._app.router.add_get("/metrics", self._metrics)
        self._app.router.add_routes(routes)
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        if self._runner is not None:
            return
        runner = web.AppRunner(self._app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except OSError as exc:
            await runner.cleanup()
            raise InvalidInput(
                f"cannot listen on {self.host}:{self.port} for health and metrics: {exc.strerror}"
            ) from None
        self._runner = runner
        address = runner.addresses[0]
        self.port = int(address[1])

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> HealthServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def _live(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _ready(self, request: web.Request) -> web.Response:
        ready, reason = self.status.readiness()
        body = {
            "status": "ready" if ready else "not_ready",
            "reason": reason,
            "revision": self.status.applied_revision,
            "staleness_seconds": round(self.status.staleness(), 3),
        }
        return web.json_response(body, status=200 if ready else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(self.status.registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response
